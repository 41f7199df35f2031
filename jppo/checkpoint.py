"""Checkpoints: `save(path, state, cfg, metrics=None)` and `load(path) -> (state, cfg, metrics)`.

A checkpoint directory is managed by orbax-checkpoint: each save is a new numbered entry that
orbax writes under a temporary name and renames only once complete, so a crash mid-save
leaves the previous entry as the latest one. The two newest entries are kept. Each entry
holds three items:

- `state`: the `TrainState` leaves as plain arrays, in `jax.tree` order (typed PRNG keys as
  their raw key data);
- `meta` (JSON): format version, jppo and jax versions, the update step, the leaves' tree
  paths, shapes, dtypes and SHA-256 digests, and the batch shape (`[]` for one run, `[S]` for
  `train_seeds`, `[P]` for a population);
- `config` (JSON): every `PPOConfig` field (an environment given as an object is saved by
  name; loading it needs `load(path, env=...)`);
- optionally `history`: the metric history, one array per name (orbax reserves the name
  `metrics` for its own use).

Loading rebuilds the tree structure from the saved config (the same code that builds a fresh
state), checks each leaf's path, shape, dtype and digest against the file, and only then
assembles the state. Nothing in the file is executed: it holds JSON and numeric arrays only,
and the config is rebuilt through `PPOConfig`'s own validation.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import logging
import os
from typing import Any

import jax
import numpy as np

from jppo.config import PPOConfig
from jppo.types import TrainState

FORMAT = "jppo-checkpoint"
FORMAT_VERSION = 1
KEEP = 2


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: missing, incomplete, corrupt or mismatched."""


# -- config <-> JSON --------------------------------------------------------------------------


def config_to_json(cfg: PPOConfig) -> dict:
    """The config as JSON-ready fields. An env object is replaced by its name and class."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if field.name == "env" and not isinstance(value, str):
            out["env"] = None
            out["env_object"] = {
                "name": cfg.env_name,
                "class": f"{type(value).__module__}.{type(value).__qualname__}",
            }
        elif field.name == "env_params":
            # Saved as arrays with the state (they are a pytree, not JSON).
            out["env_params"] = None if value is None else "saved-with-state"
        elif isinstance(value, tuple):
            out[field.name] = list(value)
        elif isinstance(value, np.generic):
            out[field.name] = value.item()
        else:
            out[field.name] = value
    return out


def config_from_json(data: dict, **overrides) -> PPOConfig:
    """Rebuild a validated `PPOConfig` from `config_to_json` output (plus `overrides`)."""
    if not isinstance(data, dict):
        raise CheckpointError("checkpoint config is not a JSON object")
    data = dict(data)
    env_object = data.pop("env_object", None)
    data.pop("env_params", None)
    known = {f.name for f in dataclasses.fields(PPOConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise CheckpointError(
            f"checkpoint config has fields this jppo does not know: {unknown} "
            "(written by a newer jppo?)"
        )
    if env_object is not None and "env" not in overrides:
        raise CheckpointError(
            f"this checkpoint was trained on an environment object "
            f"({env_object.get('class')}, name {env_object.get('name')!r}), which a file "
            "cannot hold; pass it again: jppo.load(path, env=YourEnv())"
        )
    if isinstance(data.get("hidden_sizes"), list):
        data["hidden_sizes"] = tuple(data["hidden_sizes"])
    data.update(overrides)
    try:
        return PPOConfig(**data)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint config is not valid: {err}") from err


# -- state <-> leaves -------------------------------------------------------------------------


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _batch_shape(state: TrainState) -> tuple[int, ...]:
    return tuple(np.shape(state.step))


def _saveable(tree) -> tuple[list, list, list]:
    """Leaves as host numpy arrays (keys as key data), their records (tree path, shape,
    dtype, SHA-256) and each leaf's PRNG key implementation (None for other leaves)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    arrays, records, impls = [], [], []
    for path, leaf in flat:
        key = _is_key(leaf)
        x = np.asarray(jax.random.key_data(leaf) if key else leaf)
        arrays.append(x)
        records.append(
            {
                "path": jax.tree_util.keystr(path),
                "shape": list(x.shape),
                "dtype": str(x.dtype),
                "sha256": _digest(x),
            }
        )
        impls.append(str(jax.random.key_impl(leaf)) if key else None)
    return arrays, records, impls


def _template(cfg: PPOConfig, batch_shape: tuple[int, ...]):
    """Abstract `TrainState` (and env params) of `cfg` with `batch_shape` leading axes."""
    # Imported here: the trainer pulls in the whole core; the format helpers above do not.
    from jppo.trainer import make_trainer

    trainer = make_trainer(cfg)
    init = trainer.init
    for _ in batch_shape:
        init = jax.vmap(init)
    keys = jax.random.split(jax.random.key(0), int(np.prod(batch_shape, dtype=int)))
    keys = keys.reshape(batch_shape) if batch_shape else keys[0]
    state = jax.eval_shape(init, keys)
    return state, trainer.setup.env_params


def _manager(path: str, *, read_only: bool):
    import orbax.checkpoint as ocp

    # orbax reports routine progress at WARNING level through absl; keep the console clean.
    logging.getLogger("absl").setLevel(logging.ERROR)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=KEEP,
        enable_async_checkpointing=False,
        read_only=read_only,
        create=not read_only,
    )
    return ocp.CheckpointManager(os.path.abspath(path), options=options)


def checkpoint_dir(path: str) -> str:
    """`path` itself, or `path/checkpoint` when `path` is a run directory."""
    inner = os.path.join(path, "checkpoint")
    return inner if os.path.isdir(inner) else path


# -- public ---------------------------------------------------------------------------------


def save(path: str, state: TrainState, cfg: PPOConfig, metrics: dict | None = None) -> str:
    """Write `state` (one run or a batch of runs), `cfg` and optional `metrics` to `path`.

    Atomic: the new entry becomes visible only once complete; the previous one stays until
    the next save succeeds. Returns the entry's directory.

    Example:
        >>> out = jppo.train(cfg, jax.random.key(0))
        >>> jppo.save("runs/cartpole", out.state, cfg, out.metrics)
    """
    import orbax.checkpoint as ocp

    if not isinstance(state, TrainState):
        raise TypeError(f"save: expected a jppo.TrainState, got {type(state).__name__}")
    leaves, records, key_impl = _saveable(state)
    env_leaves, env_records, _ = (
        ([], [], []) if cfg.env_params is None else _saveable(cfg.env_params)
    )
    step = np.asarray(state.step)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "jppo_version": _version(),
        "jax_version": jax.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "step": int(step.max()) if step.size else 0,
        "batch_shape": list(_batch_shape(state)),
        "leaves": records,
        "key_impl": key_impl,
        "env_params": env_records,
        "metrics": None if metrics is None else sorted(metrics),
    }
    items = {
        "state": ocp.args.StandardSave(leaves + env_leaves),
        "meta": ocp.args.JsonSave(meta),
        "config": ocp.args.JsonSave(config_to_json(cfg)),
    }
    if metrics:
        items["history"] = ocp.args.StandardSave({k: np.asarray(v) for k, v in metrics.items()})
    mngr = _manager(path, read_only=False)
    entry = (mngr.latest_step() or 0) + 1
    mngr.save(entry, args=ocp.args.Composite(**items))
    mngr.wait_until_finished()
    mngr.close()
    return os.path.join(os.path.abspath(path), str(entry))


def load(
    path: str, cfg: PPOConfig | None = None, **overrides
) -> tuple[TrainState, PPOConfig, dict | None]:
    """Read the newest complete checkpoint under `path` (a checkpoint or run directory).

    Returns `(state, cfg, metrics)`; `metrics` is None when none were saved. With `cfg`,
    the checkpoint must have been written by a config of the same structure (its static
    fields), else `CheckpointError` names the fields that differ; the state then keeps its
    saved hyperparameters. `overrides` replace saved config fields before the structure is
    rebuilt (needed for an environment object: `load(path, env=MyEnv())`).

    Raises `CheckpointError` for a missing, incomplete, corrupt or mismatched checkpoint.
    """

    ckpt = checkpoint_dir(path)
    if not os.path.isdir(ckpt):
        raise CheckpointError(f"no checkpoint at {path!r}: not a directory")
    try:
        mngr = _manager(ckpt, read_only=True)
    except Exception as err:  # orbax raises several types for unreadable directories
        raise CheckpointError(f"cannot read checkpoint directory {path!r}: {err}") from err
    try:  # closed on every path, the errors included
        return _restore(mngr, ckpt, path, cfg, overrides)
    finally:
        mngr.close()


def _restore(mngr, ckpt: str, path: str, cfg: PPOConfig | None, overrides: dict):
    """`load`'s work on an open manager."""
    import orbax.checkpoint as ocp

    try:
        entry = mngr.latest_step()
    except Exception as err:  # orbax raises several types for unreadable directories
        raise CheckpointError(f"cannot read checkpoint directory {path!r}: {err}") from err
    if entry is None:
        raise CheckpointError(f"no complete checkpoint under {path!r}")
    where = os.path.join(ckpt, str(entry))
    try:
        head = mngr.restore(
            entry,
            args=ocp.args.Composite(meta=ocp.args.JsonRestore(), config=ocp.args.JsonRestore()),
        )
        meta, saved_cfg = head.meta, head.config
    except Exception as err:
        raise CheckpointError(f"checkpoint {where} is corrupt or incomplete: {err}") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{where} is not a jppo checkpoint")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{where} has checkpoint format {meta.get('format_version')}; this jppo reads "
            f"format {FORMAT_VERSION}"
        )
    saved = config_from_json(saved_cfg, **overrides)
    if cfg is not None:
        _check_same_structure(saved, cfg, where)
        saved = cfg
    batch_shape = tuple(meta["batch_shape"])
    template, default_env_params = _template(saved, batch_shape)
    try:
        restored = mngr.restore(
            entry,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(),
                **({"history": ocp.args.StandardRestore()} if meta.get("metrics") else {}),
            ),
        )
    except Exception as err:
        raise CheckpointError(f"checkpoint {where} is corrupt or incomplete: {err}") from err
    arrays = [np.asarray(x) for x in restored.state]
    n_state = len(meta["leaves"])
    if len(arrays) != n_state + len(meta["env_params"]):
        raise CheckpointError(f"checkpoint {where} is corrupt: wrong number of arrays")
    _verify(arrays[:n_state], meta["leaves"], where)
    _verify(arrays[n_state:], meta["env_params"], where)
    state = _assemble(template, arrays[:n_state], meta, batch_shape, where)
    if meta["env_params"]:
        leaves, treedef = jax.tree.flatten(default_env_params)
        if len(leaves) != len(meta["env_params"]):
            raise CheckpointError(f"{where}: saved env_params do not match the environment")
        env_params = jax.tree.unflatten(treedef, arrays[n_state:])
        if cfg is None:
            saved = saved.replace(env_params=env_params)
    metrics = None
    if meta.get("metrics"):
        metrics = {k: np.asarray(v) for k, v in restored.history.items()}
    return state, saved, metrics


def _version() -> str:
    from jppo import __version__

    return __version__


def _check_same_structure(saved: PPOConfig, cfg: PPOConfig, where: str) -> None:
    a, b = dict(saved.static_key()), dict(cfg.static_key())
    differ = [k for k in a if k != "env_params" and a[k] != b.get(k)]
    if differ:
        detail = ", ".join(f"{k}: saved {a[k]!r}, given {b[k]!r}" for k in differ)
        raise CheckpointError(
            f"checkpoint {where} was written by a config of another structure ({detail}); "
            "static fields must match to load a state into a config"
        )


def _verify(arrays: list, records: list, where: str) -> None:
    for x, rec in zip(arrays, records):
        if list(x.shape) != rec["shape"] or str(x.dtype) != rec["dtype"]:
            raise CheckpointError(
                f"checkpoint {where} is corrupt: {rec['path']} has shape {x.shape} "
                f"{x.dtype}, its record says {tuple(rec['shape'])} {rec['dtype']}"
            )
        if _digest(x) != rec["sha256"]:
            raise CheckpointError(
                f"checkpoint {where} is corrupt: the data of {rec['path']} does not match "
                "its checksum"
            )


def _assemble(template, arrays, meta, batch_shape, where) -> TrainState:
    """Put the verified arrays into the config's tree, checking paths and shapes."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    records = meta["leaves"]
    if len(flat) != len(records):
        raise CheckpointError(
            f"checkpoint {where} does not match its config: {len(records)} saved arrays, "
            f"the config's state has {len(flat)}"
        )
    leaves = []
    for (path, spec), array, rec, impl in zip(flat, arrays, records, meta["key_impl"]):
        name = jax.tree_util.keystr(path)
        if name != rec["path"]:
            raise CheckpointError(
                f"checkpoint {where} does not match its config: saved leaf {rec['path']} "
                f"where the config's state has {name}"
            )
        if _is_key(spec):
            if impl is None:
                raise CheckpointError(f"checkpoint {where}: {name} should be a PRNG key")
            leaf = jax.random.wrap_key_data(array, impl=impl)
        else:
            leaf = array
        if tuple(leaf.shape) != tuple(spec.shape) or leaf.dtype != spec.dtype:
            raise CheckpointError(
                f"checkpoint {where} does not match its config: {name} is "
                f"{tuple(leaf.shape)} {leaf.dtype}, the config's state needs "
                f"{tuple(spec.shape)} {spec.dtype}"
            )
        leaves.append(jax.device_put(leaf))
    return jax.tree.unflatten(treedef, leaves)
