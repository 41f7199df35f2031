"""What the CLI's chunked loop costs: steps/s of `jppo train`'s loop vs one compiled call.

The same config is trained (a) as one compiled call of the whole run (`make_train`, vmapped
over one seed, as `train_seeds` does) and (b) by `jppo.runs.Run`, the loop `jppo train`
runs: compiled chunks, metrics to the host after each, the progress display (plain lines,
and a rich bar rendering into a terminal-like buffer), files and the summary. Compile time
is excluded from both (each program is compiled once, before the rounds); (b)'s time is its
loop's, as `jppo train` reports it. Each round times all three, in an order that rotates from
round to round (load drift on a shared machine hits each alike); the overhead is the median
over rounds of 1 - loop steps/s / one-call steps/s within the round.

    python benchmarks/progress_overhead.py                 # 4 and 2048 envs
    python benchmarks/progress_overhead.py --num-envs 4 --rounds 5 --no-write
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jppo  # noqa: E402
from benchmarks.common import header, write_section  # noqa: E402
from jppo import runs  # noqa: E402
from jppo.progress import PlainDisplay, RichDisplay  # noqa: E402
from jppo.types import Hyperparams  # noqa: E402

# Env steps per measured run, per num_envs: enough for a few seconds on a 2-core CPU.
TOTAL = {4: 500_000, 64: 1_000_000, 512: 1_048_576, 2048: 1_048_576}


def one_call(cfg):
    train = jax.jit(jax.vmap(jppo.make_train(cfg), in_axes=(0, None)))
    keys = jax.random.split(jax.random.key(0), 1)
    hp = Hyperparams.from_config(cfg)
    compiled = train.lower(keys, hp).compile()
    jax.block_until_ready(compiled(keys, hp))

    def measure():
        start = time.perf_counter()
        jax.block_until_ready(compiled(keys, hp))
        return time.perf_counter() - start

    return measure


def chunked(cfg, rich: bool):
    opts = runs.RunOptions(seeds=1)
    programs = runs.ChunkPrograms(cfg, opts, runs.choose_chunk(cfg, opts))

    def display():
        if not rich:
            return PlainDisplay(file=io.StringIO())
        from rich.console import Console

        return RichDisplay(Console(file=io.StringIO(), force_terminal=True, width=160))

    def measure():
        with tempfile.TemporaryDirectory() as out:
            run = runs.Run(cfg, opts, out, display(), programs=programs)
            run.train()
            return run.train_s

    measure()  # compiles, and warms the loop up
    return measure, programs.chunk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", default="4,2048")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows = []
    for num_envs in (int(n) for n in args.num_envs.split(",")):
        cfg = jppo.PPOConfig(num_envs=num_envs, total_timesteps=TOTAL.get(num_envs, 2_097_152))
        steps = cfg.num_updates * cfg.batch_size
        measure_a = one_call(cfg)
        measure_plain, chunk = chunked(cfg, rich=False)
        measure_rich, _ = chunked(cfg, rich=True)
        measures = {"one": measure_a, "plain": measure_plain, "rich": measure_rich}
        times = {k: [] for k in measures}
        order = list(measures)
        for r in range(args.rounds):
            for name in order[r % 3 :] + order[: r % 3]:
                times[name].append(measures[name]())
        sps = {k: steps / statistics.median(v) for k, v in times.items()}
        over = {
            k: statistics.median(1 - a / b for a, b in zip(times["one"], times[k]))
            for k in ("plain", "rich")
        }
        row = (
            f"| {num_envs} | {cfg.num_updates} | {chunk} | {sps['one']:,.0f} | "
            f"{sps['plain']:,.0f} | {over['plain']:+.1%} | "
            f"{sps['rich']:,.0f} | {over['rich']:+.1%} |"
        )
        print(row, flush=True)
        rows.append(row)
    text = "\n".join(
        [
            f"### progress-overhead on {jax.default_backend()}: `jppo train`'s chunked loop vs "
            "one compiled call",
            "",
            header(),
            f"CartPole-v1 defaults, 1 seed; compile excluded; {args.rounds} rounds in rotating "
            "order (`benchmarks/progress_overhead.py`); steps/s are medians; overhead = median "
            "over rounds of 1 − loop steps/s ÷ one-call steps/s (negative: the loop was "
            "faster).",
            "",
            "| num_envs | updates | updates/chunk | one call steps/s | loop, plain lines "
            "| overhead | loop, rich bar | overhead |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    if not args.no_write:
        write_section(f"progress-overhead-{jax.default_backend()}", text)
    print(text)


if __name__ == "__main__":
    main()
