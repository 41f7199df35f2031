"""Throughput of compiled training runs: what `jppo bench` prints and the benchmark scripts use.

Steps per second = env steps / wall time of one compiled call of the whole run (all seeds),
after a warm-up call, median of `repeats`, `block_until_ready`; compile time is measured
separately (ahead-of-time `lower().compile()`) and never enters steps/s.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import jax

from jppo.compile import jit
from jppo.config import PPOConfig
from jppo.rollout import rollout
from jppo.trainer import make_train, make_trainer
from jppo.types import Hyperparams


def device_description() -> str:
    """The first device in words, e.g. `CPU (2 cores, x86_64)` or `GPU NVIDIA H200`."""
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    return f"{dev.platform.upper()} {getattr(dev, 'device_kind', dev.platform)}"


def versions() -> str:
    """Versions of the packages that decide the speed, and Python's."""
    parts = []
    for name in ("jax", "jaxlib", "flax", "optax", "distrax", "gymnax"):
        try:
            parts.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(parts) + f", Python {platform.python_version()}"


def header() -> str:
    """`Device: ...; versions; date.` for the top of a results table."""
    return f"Device: {device_description()}; {versions()}; {datetime.date.today().isoformat()}."


def time_compiled(fn: Callable, *args, repeats: int = 3) -> tuple[float, float]:
    """(compile seconds, median run seconds) of `fn(*args)` compiled as jppo compiles its
    programs (`jppo.compile.jit`), compile excluded."""
    start = time.perf_counter()
    compiled = jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))  # warm-up run
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        runs.append(time.perf_counter() - start)
    return compile_s, statistics.median(runs)


def default_updates(num_envs: int) -> int:
    """Updates per timed run: 32 on accelerators; on CPU fewer at large sizes (seconds each)."""
    if jax.default_backend() == "cpu":
        return max(2, min(32, 16384 // num_envs))
    return 32


def measure(cfg: PPOConfig, *, seeds: int = 1, updates: int | None = None, repeats: int = 3):
    """Time `cfg`'s whole run for `updates` updates: a dict of steps/s, run and compile time.

    `total_timesteps` is replaced so the run has `updates` updates; with `seeds > 1` the run is
    vmapped over seeds (as `train_seeds`) and steps/s counts all seeds' steps.
    """
    updates = updates or default_updates(cfg.num_envs)
    cfg = cfg.replace(total_timesteps=updates * cfg.batch_size)
    hp = Hyperparams.from_config(cfg)
    if seeds == 1:
        fn, args = make_train(cfg), (jax.random.key(0), hp)
    else:
        fn = jax.vmap(make_train(cfg), in_axes=(0, None))
        args = (jax.random.split(jax.random.key(0), seeds), hp)
    return _row(cfg, seeds, *time_compiled(fn, *args, repeats=repeats))


def _row(cfg: PPOConfig, seeds: int, compile_s: float, run_s: float) -> dict:
    """A timed run of `cfg` (its `num_updates` updates, for `seeds` seeds) as a table row."""
    steps = cfg.num_updates * cfg.batch_size * seeds
    return {
        "num_envs": cfg.num_envs,
        "seeds": seeds,
        "updates": cfg.num_updates,
        "steps_per_second": steps / run_s,
        "run_seconds": run_s,
        "compile_seconds": compile_s,
    }


def table(cfg: PPOConfig, rows: Sequence[dict], repeats: int) -> str:
    """A markdown table of `measure` rows with the device, versions and settings on top."""
    lines = [
        header(),
        f"{cfg.env_name}, {cfg.num_steps} steps, {cfg.update_epochs} epochs x "
        f"{cfg.num_minibatches} minibatches, network {cfg.network} {cfg.hidden_sizes}, "
        f"critic {cfg.critic}; median of {repeats} after a warm-up; compile excluded.",
        "",
        "| num_envs | seeds | updates | steps/s | run s | compile s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['num_envs']} | {r['seeds']} | {r['updates']} | {r['steps_per_second']:,.0f} "
            f"| {r['run_seconds']:.4g} | {r['compile_seconds']:.2f} |"
        )
    return "\n".join(lines)


def measure_rollout(cfg: PPOConfig, *, updates: int | None = None, repeats: int = 3):
    """The rollout-only ceiling of `cfg`: `updates` rollouts (env step + policy forward,
    sampling and the rollout's statistics, under the training run's scan and vmap) with the
    initial parameters and no learning. Same dict as `measure`."""
    updates = updates or default_updates(cfg.num_envs)
    cfg = cfg.replace(total_timesteps=updates * cfg.batch_size)
    trainer = make_trainer(cfg)

    def collect(key):
        state = trainer.init(key)

        def one(actors, k):
            out = rollout(cfg, trainer.setup, state.learner, actors, k)
            return out.actors, out.stats.episodes

        return jax.lax.scan(one, state.actors, jax.random.split(state.rng, updates))

    return _row(cfg, 1, *time_compiled(collect, jax.random.key(0), repeats=repeats))
