"""Sharded runs against the same configs on one device; run by tests/test_sharding.py.

Device counts are fixed when jax starts, so each check is its own process:

    python tests/sharded_runs.py devices          # 8 host devices in one process
    python tests/sharded_runs.py process K N PORT # process K of N (2 CPU devices each)

Each prints one JSON line: per case, the largest metric and parameter differences from the
unsharded run and where the arrays live.
"""

from __future__ import annotations

import json
import sys

import jax
import numpy as np

NORMALIZED = dict(normalize_obs=True, normalize_reward=True)
CASES = {  # name -> (config overrides, seeds: None for jppo.train)
    "mlp": (NORMALIZED, None),
    "lstm": (dict(network="lstm", lstm_size=16, hidden_sizes=(16,), lstm_chunk_len=8), None),
    "seeds_on_seed_axis": ({}, 8),
    "seeds_on_env_axis": (NORMALIZED, 3),
}
# On 8 devices: the env axis of one run (LSTM) and of a batch of runs (MLP, normalizers
# combined across devices), and the seed axis. The plain MLP run is the two-process case.
ON_DEVICES = ("lstm", "seeds_on_seed_axis", "seeds_on_env_axis")


def _config(num_devices: int, **overrides):
    import jppo

    base = dict(num_envs=16, num_steps=16, num_minibatches=2, total_timesteps=16 * 16 * 3)
    return jppo.PPOConfig(num_devices=num_devices, **{**base, **overrides})


def _max_diff(a, b, local):
    diffs = [
        float(np.max(np.abs(local(x).astype(np.float64) - np.asarray(y, np.float64)), initial=0))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        if np.issubdtype(np.asarray(y).dtype, np.floating)
    ]
    return max(diffs)


def _placement(x) -> dict:
    return {
        "devices": len(x.sharding.device_set),
        "spec": str(getattr(x.sharding, "spec", None)),
        "shard_shape": list(x.addressable_shards[0].data.shape),
        "shape": list(x.shape),
    }


def compare(name: str, num_devices: int) -> dict:
    import jppo
    from jppo import sharding
    from jppo.trainer import make_train

    overrides, seeds = CASES[name]
    cfg = _config(num_devices, **overrides)
    hp = jppo.Hyperparams.from_config(cfg)
    local = sharding.local_value
    if seeds is None:
        out = jppo.train(cfg, jax.random.key(0))
        ref = jax.jit(make_train(cfg, mesh=None))(jax.random.key(0), hp)
    else:
        keys = jax.random.split(jax.random.key(0), seeds)
        out = jppo.train_seeds(cfg, keys)
        ref = jax.jit(jax.vmap(make_train(cfg, mesh=None), in_axes=(0, None)))(keys, hp)
    return {
        "metrics": _max_diff(out.metrics, ref.metrics, local),
        "params": _max_diff(out.state.learner.params, ref.state.learner.params, local),
        "return": float(np.mean(local(out.metrics["episode_return"]))),
        "obs": _placement(out.state.actors.obs),
        "params_placement": _placement(jax.tree.leaves(out.state.learner.params)[0]),
    }


def collectives(num_devices: int) -> dict:
    """Cross-device ops in the compiled env-sharded MLP program, by kind: its epochs should
    move no data (all-reduces of gradients and statistics only, no gathers)."""
    import re

    import jppo
    from jppo.compile import jit

    cfg = _config(num_devices, **NORMALIZED)
    hp = jppo.Hyperparams.from_config(cfg)
    text = jit(jppo.make_train(cfg)).lower(jax.random.key(0), hp).compile().as_text()
    kinds = ("all-reduce", "all-gather", "all-to-all", "collective-permute")
    return {k: len(re.findall(rf"= \S+ {k}(-start)?\(", text)) for k in kinds}


def main(argv):
    if argv[0] == "devices":
        jax.config.update("jax_num_cpu_devices", 8)
        result = {name: compare(name, 8) for name in ON_DEVICES}
        result["mlp_collectives"] = collectives(8)
    else:
        process, count, port = (int(a) for a in argv[1:4])
        jax.config.update("jax_num_cpu_devices", 2)
        jax.distributed.initialize(f"localhost:{port}", num_processes=count, process_id=process)
        result = {
            "process": process,
            "global_devices": jax.device_count(),
            "local_devices": jax.local_device_count(),
            "mlp": compare("mlp", jax.device_count()),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
