"""Throughput cost of the quantile critic: steps/s of `critic="quantile"` vs `"scalar"`.

Both programs are compiled first (compile time reported, never part of steps/s); then their
timed runs alternate (scalar, quantile, scalar, ...) so that a load change on a shared machine
hits both alike, and each side's median is taken. Settings are the default CartPole ones
(128 steps, 4 epochs x 4 minibatches, 64x64 tanh, 32 quantiles). The target: at 2048
envs the quantile critic may cost at most 15 % of the scalar critic's steps/s on the H100.

    python benchmarks/quantile_throughput.py                    # 2048 envs, writes RESULTS.md
    python benchmarks/quantile_throughput.py --sizes 512 2048 --updates 8 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
from common import header, markdown_table, write_section  # noqa: E402

import jppo  # noqa: E402

CRITICS = ("scalar", "quantile")


def compiled_runs(num_envs: int, updates: int, **overrides):
    """{critic: (compiled train, steps per call, compile seconds)} for both critics."""
    out = {}
    key = jax.random.key(0)
    for critic in CRITICS:
        cfg = jppo.PPOConfig(
            num_envs=num_envs, total_timesteps=updates * num_envs * 128, critic=critic, **overrides
        )
        start = time.perf_counter()
        compiled = jax.jit(jppo.make_train(cfg)).lower(key).compile()
        compile_s = time.perf_counter() - start
        jax.block_until_ready(compiled(key))  # warm-up run
        out[critic] = (compiled, cfg.num_updates * cfg.batch_size, compile_s)
    return out


def measure(num_envs: int, updates: int, repeats: int, **overrides):
    """{critic: (steps/s from the median run, median run s, compile s)}, runs alternating."""
    runs = compiled_runs(num_envs, updates, **overrides)
    times = {critic: [] for critic in CRITICS}
    key = jax.random.key(0)
    for _ in range(repeats):
        for critic in CRITICS:
            start = time.perf_counter()
            jax.block_until_ready(runs[critic][0](key))
            times[critic].append(time.perf_counter() - start)
    result = {}
    for critic in CRITICS:
        median = statistics.median(times[critic])
        result[critic] = (runs[critic][1] / median, median, runs[critic][2])
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048])
    parser.add_argument(
        "--updates",
        type=int,
        default=None,
        help="updates per timed run (default: 32 on GPU, 4 on CPU)",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    backend = jax.default_backend()
    updates = args.updates or (4 if backend == "cpu" else 32)
    rows = []
    for n in args.sizes:
        res = measure(n, updates, args.repeats, env=args.env)
        (s_sps, s_run, s_comp), (q_sps, q_run, q_comp) = res["scalar"], res["quantile"]
        cost = 100.0 * (1.0 - q_sps / s_sps)
        rows.append(
            (
                n,
                updates,
                f"{s_sps:,.0f}",
                f"{q_sps:,.0f}",
                f"{cost:.1f} %",
                f"{s_comp:.1f} / {q_comp:.1f}",
            )
        )
        print(
            f"num_envs={n} scalar={s_sps:,.0f} quantile={q_sps:,.0f} steps/s "
            f"cost={cost:.1f}% (runs {s_run:.3f}s / {q_run:.3f}s)",
            flush=True,
        )
    table = markdown_table(
        (
            "num_envs",
            "updates",
            "scalar steps/s",
            "quantile steps/s",
            "quantile cost",
            "compile s (scalar / quantile)",
        ),
        rows,
    )
    text = (
        f"### Quantile critic throughput cost on {backend}: {args.env}\n\n"
        f"{header()} 128 steps, 4 epochs x 4 minibatches, 64x64 tanh, 32 quantiles; "
        f"median of {args.repeats} alternating runs after a warm-up; compile excluded. "
        f"Cost = 1 − quantile/scalar steps/s (target on the H100 at 2048 envs: ≤ 15 %).\n\n"
        f"{table}\n"
    )
    print(text)
    if not args.no_write:
        write_section(f"quantile-throughput-{backend}", text)


if __name__ == "__main__":
    main()
