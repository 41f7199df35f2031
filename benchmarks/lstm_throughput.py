"""Recurrent-policy throughput: the LSTM at exact and chunked re-evaluation, next to the MLP.

Steps per second of a compiled `jppo` training run (CartPole-v1, 128 steps, 4 epochs x 4
minibatches, 64x64 tanh torso, LSTM 128, separate actor and critic LSTMs) at several env
counts; compile time is measured separately and never enters steps/s. Settings:

- `exact`: `lstm_chunk_len=None` — every minibatch re-runs its 128-step sequences from the
  carry saved at the rollout's start (PureJaxRL's semantics: 16 re-evaluations of a 128-step
  sequence per update);
- `chunk=L`: truncated BPTT over chunks — the rollout stores the carry every L steps and the
  update re-evaluates L-step sequences from them (128/L times fewer sequential steps).

The peer is PureJaxRL's recurrent PPO (GRU 128), 487 k steps/s at 512 envs on an H100
(15x slower than its MLP, 7.7 M); our target there is >= 2.4 M (5x the peer).

    python benchmarks/lstm_throughput.py                    # writes RESULTS.md
    python benchmarks/lstm_throughput.py --chunks 8 16 32   # more chunk lengths
    python benchmarks/lstm_throughput.py --sizes 512 --unrolls 1 4 8 16 --no-write
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
from common import header, markdown_table, write_section  # noqa: E402
from throughput import measure  # noqa: E402

PEER_SPS_512_H100 = 487_000
TARGET_SPS_512_H100 = 2_400_000


def _settings(chunks, unrolls, shared):
    out = [("mlp", dict(network="mlp"))]
    for unroll in unrolls or [None]:
        suffix = f", unroll={unroll}" if unroll else ""
        extra = dict(lstm_unroll=unroll) if unroll else {}
        out.append((f"lstm exact{suffix}", dict(network="lstm", **extra)))
        out += [
            (f"lstm chunk={c}{suffix}", dict(network="lstm", lstm_chunk_len=c, **extra))
            for c in chunks
        ]
    if shared:
        out.append(("lstm exact, shared", dict(network="lstm", lstm_shared=True)))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 64, 512, 2048])
    parser.add_argument("--chunks", type=int, nargs="*", default=[16])
    parser.add_argument(
        "--unrolls",
        type=int,
        nargs="*",
        default=[],
        help="lstm_unroll values to sweep (default: the backend's choice)",
    )
    parser.add_argument("--shared", action="store_true", help="also lstm_shared=True")
    parser.add_argument(
        "--updates",
        type=int,
        default=None,
        help="updates per timed run (default: 32 on GPU; fewer on CPU)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    on_cpu = jax.default_backend() == "cpu"
    settings = _settings(args.chunks, args.unrolls, args.shared)
    sps, compile_s = {}, {}
    for n in args.sizes:
        updates = args.updates or (max(1, min(16, 1024 // n)) if on_cpu else 32)
        for name, overrides in settings:
            s, c, run = measure(n, updates, args.repeats, **overrides)
            sps[name, n], compile_s[name, n] = s, c
            print(
                f"{name:28s} num_envs={n:5d} updates={updates:3d} SPS={s:>12,.0f} "
                f"run={run:.3f}s compile={c:.2f}s",
                flush=True,
            )

    names = [name for name, _ in settings]
    rows = [
        [n]
        + [f"{sps[name, n]:,.0f}" for name in names]
        + [f"{sps[names[1], n] / sps['mlp', n]:.2f}"]
        for n in args.sizes
    ]
    table = markdown_table(
        ["num_envs"] + [f"{name} steps/s" for name in names] + ["lstm exact / mlp"], rows
    )
    compile_rows = [[n] + [f"{compile_s[name, n]:.1f}" for name in names] for n in args.sizes]
    compile_table = markdown_table(
        ["num_envs"] + [f"{name} compile s" for name in names], compile_rows
    )
    text = (
        f"### Recurrent throughput on {jax.default_backend()}\n\n{header()} CartPole-v1, "
        f"128 steps, 4 epochs x 4 minibatches, 64x64 tanh torso, LSTM 128 (separate actor "
        f"and critic LSTMs unless marked shared); median of {args.repeats} timed runs "
        f"after a warm-up; steps/s exclude compile, which is listed separately.\n\n"
        f"{table}\n\n{compile_table}\n"
    )
    if not on_cpu and 512 in args.sizes:
        lines = [
            f"- {name}: {sps[name, 512]:,.0f} steps/s at 512 envs = "
            f"{sps[name, 512] / PEER_SPS_512_H100:.1f}x the peer (487 k), "
            f"{sps[name, 512] / TARGET_SPS_512_H100:.0%} of the 2.4 M target"
            for name in names[1:]
        ]
        text += "\n" + "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        write_section(f"lstm-throughput-{jax.default_backend()}", text)


if __name__ == "__main__":
    main()
