"""`jppo.sweep.sweep`: zipped hyperparameter values as one compiled program, each member the
same run as a separate `jppo.train` of its config, and clear errors for what cannot be swept.
"""

import jax
import numpy as np
import pytest

import jppo
from jppo.sweep import sweep
from tests.helpers import SMALL, assert_trees_close, count_compilations

KEY = jax.random.key(7)
LRS = [1e-4, 1e-3]
ENTS = [0.0, 0.03]


def _member(tree, *index):
    return jax.tree.map(lambda x: x[index], tree)


@pytest.fixture(scope="module")
def swept():
    """The sweep of LRS x ENTS (zipped), and the compilations its first call made."""
    with count_compilations() as compiles:
        out = sweep(SMALL, KEY, learning_rate=LRS, ent_coef=ENTS)
        jax.block_until_ready(out)
    return out, compiles


def test_members_equal_separate_training_runs(swept):
    """Member i is `jppo.train(cfg.replace(learning_rate=LRS[i], ent_coef=ENTS[i]), key)`:
    every metric and every leaf of the final state. Fails if values are dropped, mixed up
    between members or fields, or the members do not all run from `key`."""
    out, _ = swept
    assert out.metrics["episode_return"].shape == (2, SMALL.num_updates)
    for i in range(2):
        one = jppo.train(SMALL.replace(learning_rate=LRS[i], ent_coef=ENTS[i]), KEY)
        assert_trees_close(_member(out.metrics, i), one.metrics)
        assert_trees_close(_member(out.state, i), one.state)
    np.testing.assert_allclose(out.metrics["ent_coef"][1], ENTS[1], rtol=1e-6)
    assert not np.allclose(out.metrics["policy_loss"][0], out.metrics["policy_loss"][1])


def test_compiles_once_per_structure(swept):
    """New values, a new key and other swept fields of the same member count reuse the
    program; a new member count is a new one."""
    out, first = swept
    assert len(first) >= 1
    with count_compilations() as again:
        other = sweep(SMALL, jax.random.key(8), learning_rate=[3e-4, 2e-3], ent_coef=[0.01, 0.0])
        clips = sweep(SMALL, KEY, clip_eps=[0.1, 0.3])
        jax.block_until_ready((other, clips))
    assert again == [], f"{len(again)} new compilations"
    np.testing.assert_allclose(clips.metrics["clip_eps"], [[0.1] * 4, [0.3] * 4], rtol=1e-6)
    assert not np.allclose(other.metrics["policy_loss"], out.metrics["policy_loss"])


def test_num_seeds_runs_every_member_on_every_seed():
    """Leaves [n, num_seeds, num_updates]; member i, seed j equals
    `jppo.train(cfg_i, jax.random.split(key, num_seeds)[j])`."""
    gammas = [0.9, 0.99]
    out = sweep(SMALL, KEY, num_seeds=2, gamma=gammas)
    assert out.metrics["episode_return"].shape == (2, 2, SMALL.num_updates)
    assert out.state.step.shape == (2, 2)
    seeds = jax.random.split(KEY, 2)
    one = jppo.train(SMALL.replace(gamma=gammas[1]), seeds[1])
    assert_trees_close(_member(out.metrics, 1, 1), one.metrics)
    assert_trees_close(_member(out.state, 1, 1), one.state)
    assert not np.allclose(out.metrics["policy_loss"][0, 0], out.metrics["policy_loss"][0, 1])


# -- what cannot be swept --------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, message",
    [
        (
            dict(learning_rat=[1e-3]),
            "'learning_rat' is not a PPOConfig field; did you mean 'learning_rate'",
        ),
        (dict(num_envs=[4, 8]), "PPOConfig.num_envs is static"),
        (dict(anneal_lr=[0, 1]), "PPOConfig.anneal_lr is static"),
        (dict(learning_rate=[1e-3, 1e-4], ent_coef=[0.0]), "lengths must agree"),
        (dict(learning_rate=[[1e-3, 1e-4]]), "learning_rate must be 1-D"),
        (dict(learning_rate=1e-3), "learning_rate must be 1-D"),
        (dict(learning_rate=[]), "learning_rate is empty"),
        (dict(learning_rate=["fast"]), "learning_rate must be numbers"),
        ({}, "at least one traced field"),
    ],
)
def test_bad_values_raise_naming_the_field(values, message):
    with pytest.raises(ValueError, match=message):
        sweep(SMALL, KEY, **values)


@pytest.mark.parametrize(
    "field",
    ["target_kl", "bc_coef", "critic_learning_rate", "vf_clip", "ent_coef_final", "vf_coef_init"],
)
def test_switched_off_fields_say_how_to_enable_them(field):
    assert getattr(SMALL, field) is None
    with pytest.raises(ValueError, match=f"set PPOConfig.{field} to a number to enable it"):
        sweep(SMALL, KEY, **{field: [0.1, 0.2]})


@pytest.mark.parametrize(
    "field, bad", [("clip_eps", -0.1), ("gamma", 1.5), ("learning_rate", 0.0), ("ent_coef", -1)]
)
def test_values_the_config_rejects_fail_with_its_message(field, bad):
    with pytest.raises(ValueError) as from_config:
        SMALL.replace(**{field: float(bad)})
    with pytest.raises(ValueError) as from_sweep:
        sweep(SMALL, KEY, **{field: [getattr(SMALL, field), bad]})
    assert str(from_config.value) in str(from_sweep.value)
    assert f"{field}[1]" in str(from_sweep.value)


def test_num_seeds_must_be_a_positive_integer():
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="num_seeds"):
            sweep(SMALL, KEY, num_seeds=bad, gamma=[0.9])
