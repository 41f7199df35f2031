"""`jppo.make_policy`: the exported policy reproduces `jppo.evaluate` when rolled out by hand."""

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jppo
from jppo import envs
from tests.helpers import SMALL, SMALL_PENDULUM

EPISODES = 8

# CartPole's physics is rounded differently in two programs (XLA fuses the env step with
# whatever surrounds it), and over hundreds of steps a balancing pole's state drifts apart
# until an episode ends a few steps earlier or later (seen at 500 steps): shorter episodes
# keep the comparison to what it is about, the policy.
_SHORT = gymnax.make("CartPole-v1")[1].replace(max_steps_in_episode=250)

CONFIGS = {
    "discrete": SMALL.replace(normalize_obs=True, env_params=_SHORT),
    "continuous": SMALL_PENDULUM.replace(normalize_obs=True),
    "lstm": SMALL.replace(env="CartPole-masked", network="lstm", lstm_size=16),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def trained(request):
    cfg = CONFIGS[request.param]
    return cfg, jppo.train(cfg, jax.random.key(1)).state


def _by_hand(cfg, act, key):
    """Episodes rolled out with gymnax directly and `act`, drawing keys as evaluate does."""
    env, params = envs.make_env(cfg.env, cfg.env_params)
    k_reset, key = jax.random.split(key)
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, EPISODES), params)
    carry = act.initial_carry(EPISODES) if act.recurrent else None
    returns = np.zeros(EPISODES)
    active = np.ones(EPISODES, bool)
    step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    policy = jax.jit(act, static_argnames="deterministic")
    for _ in range(params.max_steps_in_episode):
        key, k_env = jax.random.split(key)
        if act.recurrent:
            action, carry = policy(obs, carry, None, deterministic=True)
        else:
            action = policy(obs, None, deterministic=True)
        obs, state, reward, terminated, truncated, _ = step(
            jax.random.split(k_env, EPISODES), state, action, params
        )
        returns += np.where(active, np.asarray(reward), 0.0)
        active &= ~np.asarray(terminated | truncated)
        if not active.any():
            break
    return returns


def test_rolled_out_by_hand_it_reproduces_evaluate(trained):
    cfg, state = trained
    act = jppo.make_policy(cfg, state)
    assert act.recurrent == (cfg.network == "lstm")
    key = jax.random.key(7)
    expected = np.asarray(jppo.evaluate(cfg, state, key, num_episodes=EPISODES))
    got = _by_hand(cfg, act, key)
    assert np.std(expected) > 0 or cfg.env == "Pendulum-v1"  # episodes differ: not vacuous
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)


def test_single_observations_sampling_and_bounds(trained):
    cfg, state = trained
    act = jppo.make_policy(cfg, state)
    env, params = envs.make_env(cfg.env, cfg.env_params)
    obs, _ = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(jax.random.key(0), 64), params)
    keys = jax.random.split(jax.random.key(1), 2)
    if act.recurrent:
        carry = act.initial_carry(64)
        batch, _ = act(obs, carry, keys[0], deterministic=True)
        one, one_carry = act(obs[3], act.initial_carry(), keys[0], deterministic=True)
        assert jax.tree.map(jnp.shape, one_carry) == jax.tree.map(lambda x: x.shape[1:], carry)
        samples = [act(obs, carry, k)[0] for k in keys]
    else:
        batch = act(obs, keys[0], deterministic=True)
        one = act(obs[3], keys[0], deterministic=True)
        samples = [act(obs, k) for k in keys]
    np.testing.assert_allclose(one, batch[3], rtol=1e-6)  # an unbatched obs is one row
    assert not np.array_equal(samples[0], samples[1])  # sampling follows the key
    space = env.action_space(params)
    if cfg.env == "Pendulum-v1":
        assert batch.shape == (64, 1)
        assert np.all(np.abs(np.asarray(samples[0])) <= float(space.high))
    else:
        assert batch.shape == (64,) and set(np.unique(samples[0])) <= {0, 1}


def test_a_batch_of_runs_is_refused():
    state = jax.vmap(jppo.make_trainer(SMALL).init)(jax.random.split(jax.random.key(0), 2))
    with pytest.raises(ValueError, match=r"batch of runs .*jax.tree.map\(lambda x: x\[i\]"):
        jppo.make_policy(SMALL, state)
