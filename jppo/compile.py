"""Plumbing shared by the compiled entry points: PRNG keys and a bounded program cache.

The convenience entry points (`train`, `train_seeds`, `evaluate`) compile one program per
*structure* of a config: its static fields and which traced features are off
(`PPOConfig.static_key`). The traced numbers are arguments of that program, so
`train(cfg.replace(ent_coef=0.0), key)` after `train(cfg, key)` reuses the compiled program.
The cache is bounded (least recently used programs are dropped), so a loop over many
environment instances does not grow it without end.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jppo.config import PPOConfig

MAX_CACHED_PROGRAMS = 32

_PROGRAMS: collections.OrderedDict = collections.OrderedDict()


def as_key(key: jax.Array) -> jax.Array:
    """Accept new-style typed keys and legacy uint32 `PRNGKey`s alike (any batch shape)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key)


def cached_program(kind, cfg: PPOConfig, factory: Callable[[], Callable]) -> Callable:
    """The jitted program `factory()` for (kind, the config's structure), built once.

    `factory` must build the program from `cfg`'s static fields only (its traced numbers
    arrive as arguments). A config whose structure is unhashable (e.g. array-valued
    `env_params`) is not cached.
    """
    try:
        key = (kind, cfg.static_key())
        hash(key)
    except TypeError:
        return factory()
    if key in _PROGRAMS:
        _PROGRAMS.move_to_end(key)
        return _PROGRAMS[key]
    program = _PROGRAMS[key] = factory()
    while len(_PROGRAMS) > MAX_CACHED_PROGRAMS:
        _PROGRAMS.popitem(last=False)
    return program


# XLA options for jppo's own programs, per backend. CPU: LLVM's optimization level 1 instead of
# the default 2. Most of the run time is in library matmuls and small elementwise loops that
# level 1 already vectorizes, while LLVM's level-2 passes are most of the compile: the default
# CartPole program compiles in ~3.7 s instead of ~4.6 s at the same steps/s (benchmarks/NOTES.md).
# No floating-point semantics change (no fast-math either way).
_COMPILER_OPTIONS = {"cpu": {"xla_backend_optimization_level": 1}}


def compiler_options() -> dict:
    """The XLA options `jit` compiles jppo's programs with on the default backend ({} for
    backends without any)."""
    return dict(_COMPILER_OPTIONS.get(jax.default_backend(), {}))


def jit(fn: Callable, **kwargs) -> Callable:
    """`jax.jit(fn, **kwargs)` with jppo's `compiler_options()`: how jppo's entry points
    (`train`, `train_seeds`, `evaluate`, sweeps, PBT, the CLI, `jppo bench`) compile.

    To compile `make_train(cfg)` yourself the same way: `jppo.compile.jit(make_train(cfg))`.
    """
    options = compiler_options()
    if options:
        kwargs["compiler_options"] = {**options, **kwargs.get("compiler_options", {})}
    return jax.jit(fn, **kwargs)


def clear_cache() -> None:
    """Drop every cached program (their compiled code is freed with them)."""
    _PROGRAMS.clear()
