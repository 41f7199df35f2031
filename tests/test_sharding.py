"""Sharding the env axis (and the seed axis) across devices, and across processes.

The sharded runs need more devices than this process has, so they run in subprocesses
(tests/sharded_runs.py): 8 host devices in one process, and two processes of 2 devices each
joined by `jax.distributed` on localhost (CPU collectives). Each sharded run is compared with
the same config computed with no placement at all (`make_train(cfg, mesh=None)`).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jppo
from jppo import sharding
from jppo import update as update_lib
from jppo.permutation import keyed_permutation
from jppo.types import Batch
from tests.helpers import epoch_keys, jax_cache_env

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "sharded_runs.py"
TOLERANCE = 1e-4  # the all-reduces sum in another order than one device's reductions


def _env():
    env = {**os.environ, **jax_cache_env(), "PYTHONPATH": str(ROOT)}
    env.pop("XLA_FLAGS", None)
    return env


def _last_json(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def _fake_batch(cfg):
    """A batch whose `action` holds each sample's flat index t * B + b."""
    T, B = cfg.num_steps, cfg.num_envs
    idx = jnp.arange(T * B).reshape(T, B)
    f = lambda *s: jnp.broadcast_to(idx.reshape(T, B, *[1] * len(s)), (T, B, *s)) * 1.0
    return Batch(
        obs=f(3),
        episode_start=idx % 2 == 0,
        action=idx,
        log_prob=f(),
        dist_params={"logits": f(2)},
        value_pred=f(),
        advantages=f(),
        raw_advantages=f(),
        targets=f(),
    )


@pytest.mark.parametrize("network", ["mlp", "lstm"])
def test_each_minibatch_takes_an_equal_share_of_every_device_block(network):
    """With num_devices=4, minibatch slot j holds only envs of block j // (size / 4), every
    sample appears once per epoch, leaves stay aligned, and LSTM sequences keep their time
    order and their own stored carry."""
    extra = dict(network="lstm", lstm_chunk_len=4) if network == "lstm" else {}
    cfg = jppo.PPOConfig(
        num_envs=16, num_steps=16, num_minibatches=2, num_devices=4, total_timesteps=256, **extra
    )
    batch = _fake_batch(cfg)
    recurrent = network == "lstm"
    carry = {"actor": jnp.broadcast_to(jnp.arange(64.0).reshape(4, 16, 1), (4, 16, 5))}
    if recurrent:
        batch, carry = update_lib._sequences(batch, carry, cfg)
    mbs, carries = update_lib._minibatches(batch, carry, epoch_keys(5, cfg), cfg, recurrent)
    index = np.asarray(mbs.action)  # [M, T', size]
    assert index.shape[0] == 2
    np.testing.assert_array_equal(np.sort(index.ravel()), np.arange(cfg.batch_size))
    np.testing.assert_array_equal(np.asarray(mbs.obs)[..., 0], index)
    size = index.shape[-1]
    block = (index % 16) // 4
    np.testing.assert_array_equal(
        block, np.broadcast_to(np.arange(size) // (size // 4), block.shape)
    )
    if recurrent:
        assert (np.diff(index, axis=1) == 16).all()  # whole sequences, in time order
        first = index[:, 0, :]  # chunk c = (t // 4) of env b stored carry value c * 16 + b
        np.testing.assert_array_equal(
            np.asarray(carries["actor"])[..., 0], (first // 64) * 16 + first % 16
        )


def test_one_device_shuffle_is_the_plain_shuffle():
    """num_devices=1 draws one permutation of the whole batch from the epoch's keys."""
    cfg = jppo.PPOConfig(num_envs=8, num_steps=16, num_minibatches=4, total_timesteps=128)
    keys = epoch_keys(3, cfg)
    mbs, _ = update_lib._minibatches(_fake_batch(cfg), {}, keys, cfg, False)
    perm = np.asarray(keyed_permutation(keys[0], cfg.batch_size))
    np.testing.assert_array_equal(np.asarray(mbs.action).reshape(4, -1), perm.reshape(4, -1))


def test_more_devices_than_jax_sees_is_a_clear_error():
    cfg = jppo.PPOConfig(num_envs=64, num_devices=64)
    with pytest.raises(ValueError, match="num_devices=64 .*xla_force_host_platform_device_count"):
        jppo.train(cfg, jax.random.key(0))
    assert sharding.env_mesh(1) is None


def _check(case: dict, devices: int, spec: str):
    assert case["metrics"] < TOLERANCE and case["params"] < TOLERANCE, case
    assert case["obs"]["devices"] == devices and case["obs"]["spec"] == spec, case
    assert case["params_placement"]["devices"] == devices


def test_sharded_runs_equal_the_unsharded_run_on_8_devices():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "devices"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = _last_json(out.stdout)
    _check(result["lstm"], 8, "P('env',)")
    assert result["lstm"]["obs"]["shard_shape"] == [2, 4]  # 16 envs, 2 on each device
    assert result["lstm"]["params_placement"]["spec"] == "P()"  # parameters replicated
    _check(result["seeds_on_seed_axis"], 8, "P('seed',)")  # 8 seeds: one run per device
    assert result["seeds_on_seed_axis"]["obs"]["shard_shape"] == [1, 16, 4]
    _check(result["seeds_on_env_axis"], 8, "P(None, 'env')")  # 3 seeds: envs split
    assert result["seeds_on_env_axis"]["obs"]["shard_shape"] == [3, 2, 4]
    # The env-sharded MLP program combines gradients and statistics by all-reduces and moves
    # no data: no gathers (e.g. from valuing [T, B] observations as time-major rows).
    ops = result["mlp_collectives"]
    assert ops["all-reduce"] > 0 and ops["all-gather"] == 0 and ops["all-to-all"] == 0, ops


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_through_jax_distributed_agree_with_one():
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), "process", str(k), "2", port],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, stderr) in zip(procs, outs):
        assert p.returncode == 0, stderr[-3000:]
    results = [_last_json(stdout) for stdout, _ in outs]
    for k, r in enumerate(results):
        assert r["process"] == k and r["global_devices"] == 4 and r["local_devices"] == 2
        _check(r["mlp"], 4, "P('env',)")
        assert r["mlp"]["obs"]["shard_shape"] == [4, 4]
    assert results[0]["mlp"]["return"] == results[1]["mlp"]["return"]
