"""Steps per second of a compiled `jppo` training run at several env counts.

SPS = env steps / wall time of one compiled train call (median of `--repeats`, after a
warm-up run, `block_until_ready`); compile time is measured separately and never enters SPS.
The settings are PureJaxRL's CartPole ones (128 steps, 4 epochs, 4 minibatches, 64x64 tanh)
so the numbers compare with its published ones.

    python benchmarks/throughput.py                       # CPU defaults, writes RESULTS.md
    python benchmarks/throughput.py --sizes 4 64 512 2048 --updates 64
    python benchmarks/throughput.py --network lstm --critic quantile --label lstm
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
from common import header, markdown_table, write_section  # noqa: E402

import jppo  # noqa: E402
from jppo import bench  # noqa: E402


def measure(num_envs: int, updates: int, repeats: int, **overrides):
    """(steps/s, compile s, run s, rollout-only steps/s): the measurement `jppo bench`
    prints, and the rollout-only ceiling (`bench.measure_rollout`) timed right after it."""
    cfg = jppo.PPOConfig(num_envs=num_envs, **overrides)
    row = bench.measure(cfg, updates=updates, repeats=repeats)
    ceiling = bench.measure_rollout(cfg, updates=updates, repeats=repeats)
    return (
        row["steps_per_second"],
        row["compile_seconds"],
        row["run_seconds"],
        ceiling["steps_per_second"],
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 64, 512, 2048])
    parser.add_argument(
        "--updates",
        type=int,
        default=None,
        help="updates per timed run (default: 32 on GPU; on CPU fewer at "
        "large sizes so a run takes seconds)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--network", default="mlp")
    parser.add_argument("--critic", default="scalar")
    parser.add_argument("--lstm-chunk-len", type=int, default=None)
    parser.add_argument("--lstm-unroll", type=int, default=None)
    parser.add_argument("--lstm-shared", action="store_true")
    parser.add_argument(
        "--normalize", action="store_true", help="normalize_obs and normalize_reward on"
    )
    parser.add_argument("--label", default=None, help="RESULTS.md section name")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    overrides = dict(env=args.env, network=args.network, critic=args.critic)
    if args.lstm_chunk_len:
        overrides["lstm_chunk_len"] = args.lstm_chunk_len
    if args.lstm_unroll:
        overrides["lstm_unroll"] = args.lstm_unroll
    if args.lstm_shared:
        overrides["lstm_shared"] = True
    if args.normalize:
        overrides.update(normalize_obs=True, normalize_reward=True)
    rows = []
    for n in args.sizes:
        updates = args.updates or bench.default_updates(n)
        sps, compile_s, run_s, ceiling = measure(n, updates, args.repeats, **overrides)
        rows.append(
            (
                n,
                updates,
                f"{sps:,.0f}",
                f"{run_s:.3f}",
                f"{compile_s:.2f}",
                f"{ceiling:,.0f}",
                f"{sps / ceiling:.0%}",
            )
        )
        print(
            f"num_envs={n:5d} updates={updates:3d} SPS={sps:>13,.0f} "
            f"run={run_s:.3f}s compile={compile_s:.2f}s rollout-only={ceiling:,.0f} "
            f"({sps / ceiling:.0%})",
            flush=True,
        )
    label = args.label or f"throughput-{args.network}-{args.critic}"
    table = markdown_table(
        (
            "num_envs",
            "updates",
            "steps/s",
            "run s (median)",
            "compile s",
            "rollout-only steps/s",
            "training / rollout-only",
        ),
        rows,
    )
    lstm = {k: v for k, v in overrides.items() if k.startswith("lstm_")}
    lstm_desc = "".join(f", {k}={v}" for k, v in lstm.items()) if args.network == "lstm" else ""
    text = (
        f"### {label} on {jax.default_backend()}: {args.env}, network={args.network}, "
        f"critic={args.critic}{lstm_desc}{', normalized' if args.normalize else ''}\n\n"
        f"{header()} 128 steps, 4 epochs x 4 minibatches, 64x64 tanh; median of "
        f"{args.repeats} after a warm-up; compile excluded from steps/s. Rollout-only: the same "
        f"rollouts (env step, policy forward, sampling) under the same scan and vmap, no "
        f"learning: the ceiling training is a fraction of.\n\n{table}\n"
    )
    print(text)
    if not args.no_write:
        write_section(f"{label}-{jax.default_backend()}", text)


if __name__ == "__main__":
    main()
