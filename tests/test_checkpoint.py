"""`jppo.save` / `jppo.load`: exact round trips, atomic writes, clear errors, nothing executed."""

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import jppo
from jppo.checkpoint import CheckpointError
from tests.helpers import SMALL, as_numpy, assert_trees_equal

# Every normalizer on, so the statistics' round trip is covered too.
CFG = SMALL.replace(normalize_obs=True, normalize_reward=True, target_kl=0.05)


@pytest.fixture(scope="module")
def trained():
    trainer = jppo.make_trainer(CFG)
    run = jax.jit(trainer.run, static_argnums=1)
    state = trainer.init(jax.random.key(3))
    state, metrics = run(state, 2)
    return trainer, run, state, metrics


@pytest.fixture()
def saved(tmp_path, trained):
    _, _, state, metrics = trained
    path = tmp_path / "ckpt"
    jppo.save(str(path), state, CFG, metrics)
    return path


def _entry_files(path: Path) -> list[Path]:
    """The array data files of the newest entry (what a crash or bit rot would damage)."""
    newest = max((p for p in path.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    files = [p for p in (newest / "state").rglob("*") if p.is_file() and "d" in p.parts]
    assert files
    return files


def test_round_trip_is_exact_and_continues_identically(saved, trained):
    trainer, run, state, metrics = trained
    loaded, cfg, history = jppo.load(str(saved))
    assert cfg == CFG
    assert jax.tree.structure(loaded) == jax.tree.structure(state)
    assert_trees_equal(as_numpy(loaded), as_numpy(state))
    assert jax.dtypes.issubdtype(loaded.rng.dtype, jax.dtypes.prng_key)
    assert_trees_equal(history, jax.device_get(metrics))
    # The loaded state runs on exactly as the original does.
    assert_trees_equal(as_numpy(run(loaded, 2)), as_numpy(run(state, 2)))


def test_a_seed_batch_round_trips(tmp_path):
    out = jppo.train_seeds(SMALL, jax.random.split(jax.random.key(0), 3))
    jppo.save(str(tmp_path), out.state, SMALL)
    loaded, _, history = jppo.load(str(tmp_path))
    assert history is None
    assert np.shape(loaded.step) == (3,)
    assert_trees_equal(as_numpy(loaded), as_numpy(out.state))


def test_keeps_two_entries_and_loads_the_newest(tmp_path, trained):
    _, run, state, _ = trained
    states = [state]
    for _ in range(3):
        states.append(run(states[-1], 1)[0])
    for s in states:
        jppo.save(str(tmp_path), s, CFG)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3", "4"]
    loaded, _, _ = jppo.load(str(tmp_path))
    assert int(loaded.step) == int(states[-1].step)


def test_mismatched_config_is_a_clear_error(saved):
    with pytest.raises(CheckpointError, match=r"num_envs: saved 4, given 8.*hidden_sizes"):
        jppo.load(str(saved), CFG.replace(num_envs=8, num_steps=16, hidden_sizes=(32,)))
    with pytest.raises(CheckpointError, match="normalize_obs: saved True, given False"):
        jppo.load(str(saved), CFG.replace(normalize_obs=False))
    # Traced numbers may differ: the state keeps the hyperparameters it was saved with.
    state, cfg, _ = jppo.load(str(saved), CFG.replace(ent_coef=0.5))
    assert cfg.ent_coef == 0.5
    assert float(state.learner.hyperparams.ent_coef) == pytest.approx(CFG.ent_coef)


def test_corrupted_data_is_a_clear_error(saved):
    for path in _entry_files(saved):
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        jppo.load(str(saved))


def test_truncated_data_is_a_clear_error(saved):
    for path in _entry_files(saved):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(CheckpointError, match="corrupt"):
        jppo.load(str(saved))


def test_damaged_metadata_and_missing_checkpoints_are_clear_errors(saved, tmp_path):
    (meta,) = [p for p in saved.rglob("*") if p.name == "metadata" and p.parent.name == "meta"]
    meta.write_text(meta.read_text()[:40])
    with pytest.raises(CheckpointError, match="corrupt or incomplete"):
        jppo.load(str(saved))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        jppo.load(str(tmp_path / "nothing-here"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        jppo.load(str(tmp_path / "empty"))


def test_loading_executes_nothing_from_the_file(saved, monkeypatch):
    # A config that names code is rejected by validation, not run.
    (config,) = [p for p in saved.rglob("*") if p.name == "metadata" and p.parent.name == "config"]
    data = json.loads(config.read_text())
    marker = saved.parent / "executed"
    data["env"] = f"__import__('os').system('touch {marker}')"
    config.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="PPOConfig.env"):
        jppo.load(str(saved))
    assert not marker.exists()
    # And nothing is unpickled on the way.
    data["env"] = "CartPole-v1"
    config.write_text(json.dumps(data))

    def refuse(*args, **kwargs):
        raise AssertionError("load unpickled something")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    state, _, _ = jppo.load(str(saved))
    assert int(state.step) == 2


def test_env_object_is_saved_by_name_and_must_be_passed_again(tmp_path):
    from gymnax.environments.classic_control import CartPole

    env = CartPole()
    cfg = SMALL.replace(env=env, env_params=env.default_params.replace(max_steps_in_episode=50))
    state = jppo.make_trainer(cfg).init(jax.random.key(0))
    jppo.save(str(tmp_path), state, cfg)
    with pytest.raises(CheckpointError, match=r"environment object \(.*CartPole.*env=YourEnv"):
        jppo.load(str(tmp_path))
    loaded, loaded_cfg, _ = jppo.load(str(tmp_path), env=CartPole())
    assert int(loaded_cfg.env_params.max_steps_in_episode) == 50  # saved with the state
    assert_trees_equal(as_numpy(loaded), as_numpy(state))


WRITER = textwrap.dedent(
    """
    import sys, jax, jppo
    from tests.helpers import SMALL
    state = jppo.make_trainer(SMALL).init(jax.random.key(0))
    i = 0
    while True:
        state = state._replace(step=state.step + 1)
        jppo.save(sys.argv[1], state, SMALL)
        i += 1
        print(i, flush=True)
    """
)


@pytest.mark.slow
def test_killed_mid_write_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "ckpt"
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    for delay in (0.0, 0.05, 0.13, 0.21):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env
        )
        first = int(child.stdout.readline())  # one save has completed
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)  # somewhere inside a later save
        child.wait()
        state, _, _ = jppo.load(str(path))
        assert int(state.step) >= first


def test_data_that_disagrees_with_its_record_is_refused(saved):
    # orbax catches damaged files itself (above); the digests catch data that reads back
    # cleanly but is not what was saved (e.g. an entry assembled from two saves).
    (meta,) = [p for p in saved.rglob("metadata") if p.parent.name == "meta"]
    data = json.loads(meta.read_text())
    data["leaves"][0]["sha256"] = "0" * 64
    meta.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        jppo.load(str(saved))
