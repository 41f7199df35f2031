"""Hyperparameter sweeps as one compiled program: a vmap over members (and seeds).

`sweep(cfg, key, learning_rate=[...], ent_coef=[...])` trains one member per position of the
zipped value arrays; every member shares the config's structure, so the traced numbers are
the program's arguments and a second sweep of the same size compiles nothing. The values are
checked before anything is traced, with the config's own validation, so a bad value fails
with the same message `PPOConfig` would give.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jppo.compile import as_key, cached_program, jit
from jppo.config import TRACED_FIELDS, PPOConfig
from jppo.trainer import make_train
from jppo.types import Hyperparams, TrainResult


def check_traced_field(cfg: PPOConfig, name: str, caller: str) -> None:
    """Raise unless `name` is a traced field whose feature is on in `cfg`."""
    fields = PPOConfig.__dataclass_fields__
    if name not in fields:
        close = difflib.get_close_matches(name, TRACED_FIELDS, n=3)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"{caller}: {name!r} is not a PPOConfig field{hint}")
    if not fields[name].metadata["traced"]:
        raise ValueError(
            f"{caller}: PPOConfig.{name} is static (it fixes the program's structure), so it "
            f"cannot vary between members; traced fields: {', '.join(TRACED_FIELDS)}"
        )
    if getattr(cfg, name) is None:
        raise ValueError(
            f"{caller}: PPOConfig.{name} is None, which switches its feature off for the "
            f"whole program; set PPOConfig.{name} to a number to enable it"
        )


def _as_column(name: str, value, caller: str) -> np.ndarray:
    """`value` as a float64 1-D numpy array, or a ValueError naming the field."""
    try:
        array = np.asarray(value, np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{caller}: {name} must be numbers, got {value!r}") from err
    if array.ndim != 1:
        raise ValueError(f"{caller}: {name} must be 1-D (one value per member), got {array.shape}")
    if array.size == 0:
        raise ValueError(f"{caller}: {name} is empty; give at least one value")
    return array


def check_values(cfg: PPOConfig, values: Mapping, caller: str = "sweep") -> int:
    """Validate zipped per-member values of traced fields; returns the member count.

    Raises a ValueError naming the field for an unknown, static or switched-off field, a
    value that is not 1-D or is empty, lengths that differ, or a value `PPOConfig` rejects.
    """
    if not values:
        raise ValueError(f"{caller}: give at least one traced field to vary, e.g. ent_coef=[...]")
    columns = {}
    for name, value in values.items():
        check_traced_field(cfg, name, caller)
        columns[name] = _as_column(name, value, caller)
    lengths = {name: col.size for name, col in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(
            f"{caller}: the value arrays are zipped, so their lengths must agree: {lengths}"
        )
    for name, col in columns.items():
        for i, v in enumerate(col):
            try:
                cfg.replace(**{name: float(v)})
            except ValueError as err:
                raise ValueError(f"{caller}: {name}[{i}]: {err}") from err
    return next(iter(lengths.values()))


def stack_hyperparams(cfg: PPOConfig, num_members: int, **values) -> Hyperparams:
    """`Hyperparams` with leaves [num_members]: the config's values, or the given columns.

    `values` are not checked here (see `check_values`); a None feature stays None.
    """
    base = cfg.hyperparams()
    leaves = {}
    for name in TRACED_FIELDS:
        if base[name] is None:
            leaves[name] = None
        elif name in values:
            leaves[name] = jnp.asarray(np.asarray(values[name], np.float32))
        else:
            leaves[name] = jnp.asarray(np.full(num_members, base[name], np.float32))
    return Hyperparams(**leaves)


def _make_sweep_program(cfg: PPOConfig, num_seeds: int):
    train_fn = make_train(cfg)
    if num_seeds > 1:
        train_fn = jax.vmap(train_fn, in_axes=(0, None))  # seeds inside each member
    return jit(jax.vmap(train_fn, in_axes=(None, 0)))


def sweep(cfg: PPOConfig, key: jax.Array, *, num_seeds: int = 1, **values) -> TrainResult:
    """Train one member per position of the zipped value arrays, in one compiled program.

    Member i runs `cfg.replace(name=values[name][i] for every name)`. With `num_seeds == 1`
    every member uses `key` itself, so member i equals `jppo.train(cfg_i, key)` within float
    tolerance (XLA batches reductions differently under vmap); with `num_seeds > 1` every
    member runs the seeds `jax.random.split(key, num_seeds)`. One program is compiled per
    config structure, member count and `num_seeds`; which fields vary does not matter.

    Args:
      cfg: the base config; fields not in `values` keep its values.
      key: a PRNG key.
      num_seeds: seeds per member (an int >= 1).
      **values: traced config fields, each a 1-D array or list, all of one length n.

    Returns:
      A `TrainResult` whose leaves have a leading [n] axis (state) and metrics [n,
      num_updates]; with `num_seeds > 1`, [n, num_seeds, ...] and [n, num_seeds, num_updates].

    Raises:
      ValueError: naming the field, for an unknown field (with close matches), a static
        field, a field whose feature is off (None), lengths that differ, a value that is not
        1-D or is empty, or a value `PPOConfig` would reject.

    Example:
        >>> cfg = jppo.PPOConfig(total_timesteps=4096)
        >>> out = sweep(cfg, jax.random.key(0), learning_rate=[1e-4, 3e-4], ent_coef=[0.0, 0.01])
        >>> out.metrics["episode_return"].shape
        (2, 8)
        >>> sweep(cfg, jax.random.key(0), num_seeds=3, gamma=[0.9, 0.99]).metrics[
        ...     "episode_return"].shape
        (2, 3, 8)
    """
    if isinstance(num_seeds, bool) or not isinstance(num_seeds, int) or num_seeds < 1:
        raise ValueError(f"sweep: num_seeds={num_seeds!r} must be an integer >= 1")
    num_members = check_values(cfg, values)
    hps = stack_hyperparams(cfg, num_members, **values)
    program = cached_program(
        ("sweep", num_members, num_seeds), cfg, lambda: _make_sweep_program(cfg, num_seeds)
    )
    key = as_key(key)
    keys = jax.random.split(key, num_seeds) if num_seeds > 1 else key
    return program(keys, hps)
