"""Wall time of a vmapped population against one run, at the same per-member settings.

A population of P members (`jax.vmap` of `jppo.make_train` over keys: what `train_seeds`,
`sweep` and PBT compile) against a single run, CartPole-v1 with PureJaxRL's settings at
`--num-envs` envs, compile excluded, median of `--repeats` after a warm-up, the two programs
alternating so a change of load hits both. The ratio P-member time / 1-member time is the
cost of the population: P on a device the single run leaves idle, about 1 where the device
has room for all members at once.

    python benchmarks/population_throughput.py                 # 64 members at 4 envs
    python benchmarks/population_throughput.py --population 16 --updates 8
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
from common import header, markdown_table, write_section

import jppo


def _compiled(cfg: jppo.PPOConfig, population: int):
    keys = jax.random.split(jax.random.key(0), population)
    fn = jax.jit(jax.vmap(jppo.make_train(cfg)))
    start = time.perf_counter()
    compiled = fn.lower(keys).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(keys))  # warm-up
    return compiled, keys, compile_s


def _time(compiled, keys) -> float:
    start = time.perf_counter()
    jax.block_until_ready(compiled(keys))
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=64)
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--updates", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    cfg = jppo.PPOConfig(num_envs=args.num_envs, total_timesteps=args.updates * args.num_envs * 128)
    programs = {p: _compiled(cfg, p) for p in (1, args.population)}
    times = {p: [] for p in programs}
    for _ in range(args.repeats):
        for p, (compiled, keys, _) in programs.items():
            times[p].append(_time(compiled, keys))
    one, many = (statistics.median(times[p]) for p in (1, args.population))
    steps = cfg.num_updates * cfg.batch_size
    rows = [
        (
            p,
            f"{statistics.median(times[p]):.3f}",
            f"{p * steps / statistics.median(times[p]):,.0f}",
            f"{programs[p][2]:.1f}",
        )
        for p in programs
    ]
    table = markdown_table(
        ("members", "run s (median)", "env steps/s (all members)", "compile s"), rows
    )
    text = (
        f"### population-throughput on {jax.default_backend()}: {args.population} members vs "
        f"one, {args.num_envs} envs each\n\n{header()} CartPole-v1, {cfg.num_updates} updates "
        f"of {args.num_envs}x128 steps, 4 epochs x 4 minibatches, 64x64 tanh; median of "
        f"{args.repeats}, alternating, compile excluded.\n\n{table}\n\n"
        f"Time ratio {args.population} members / 1 member: **{many / one:.2f}** "
        f"(target on an accelerator: <= 1.1).\n"
    )
    print(text)
    if not args.no_write:
        write_section(f"population-throughput-{jax.default_backend()}", text)


if __name__ == "__main__":
    main()
