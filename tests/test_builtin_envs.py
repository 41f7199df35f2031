"""Tests of the built-in environments: masked-velocity CartPole and RiskyChoice.

Every environment is driven through the public gymnax interface (``env.reset`` /
``env.step``, auto-reset included) under ``jax.jit`` with a ``vmap`` over keys and a
``lax.scan`` over time, the way the rollout uses it.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments.classic_control.cartpole import CartPole

from jppo.envs.cartpole_masked import MaskedCartPole
from jppo.envs.risky_choice import (
    EnvParams as RiskyParams,
)
from jppo.envs.risky_choice import (
    RiskyChoice,
    branch_statistics,
)

# Stabilizing linear controller on CartPole's full state: keeps the pole up past 500 steps.
_BALANCE_WEIGHTS = jnp.array([0.1, 0.5, 3.0, 1.0])


class Transitions(NamedTuple):
    obs: jax.Array  # [T, B, obs_dim], observation after the step (reset one at episode ends)
    final_obs: jax.Array  # [T, B, obs_dim], info["final_observation"]
    reward: jax.Array  # [T, B]
    terminated: jax.Array  # [T, B] bool
    truncated: jax.Array  # [T, B] bool


def _step(env, params, key, state, action):
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)
    step = Transitions(obs, info["final_observation"], reward, terminated, truncated)
    return state, step


# --- masked CartPole ------------------------------------------------------------------


@jax.jit
def _cartpole_pair(keys, balance):
    """Steps CartPole-v1 and CartPole-masked side by side with identical keys and actions.

    Args:
        keys: ``[B]`` PRNG keys.
        balance: ``[B]`` bool, controller actions (episodes truncated at 500) where True,
            uniformly random actions (early terminations) where False.

    Returns:
        Time-major ``Transitions`` of both environments and the actions ``[T, B]``.
    """
    full_env, masked_env = CartPole(), MaskedCartPole()
    params = full_env.default_params

    def one_env(key, balance_i):
        reset_key, scan_key = jax.random.split(key)
        full_obs, full_state = full_env.reset(reset_key, params)
        _, masked_state = masked_env.reset(reset_key, params)

        def body(carry, step_key):
            full_obs, full_state, masked_state = carry
            action_key, env_key = jax.random.split(step_key)
            controller = (full_obs @ _BALANCE_WEIGHTS > 0).astype(jnp.int32)
            random_action = jax.random.bernoulli(action_key).astype(jnp.int32)
            action = jnp.where(balance_i, controller, random_action)
            full_state, full = _step(full_env, params, env_key, full_state, action)
            masked_state, masked = _step(masked_env, params, env_key, masked_state, action)
            return (full.obs, full_state, masked_state), (full, masked, action)

        carry = (full_obs, full_state, masked_state)
        _, out = jax.lax.scan(body, carry, jax.random.split(scan_key, 520))
        return out

    out = jax.vmap(one_env)(keys, balance)
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), out)


def test_masked_cartpole_interface():
    env, full = MaskedCartPole(), CartPole()
    params = env.default_params
    assert env.name == "CartPole-masked"
    assert env.num_actions == 2
    assert env.action_space(params).n == 2
    assert env.observation_space(params).shape == (2,)
    assert env.obs_shape == (2,)
    assert params == full.default_params
    assert params.max_steps_in_episode == 500
    obs, _ = env.reset(jax.random.key(0), params)
    assert obs.shape == (2,)
    assert obs.dtype == jnp.float32
    assert bool(env.observation_space(params).contains(obs))


def test_masked_cartpole_matches_cartpole_at_position_and_angle():
    num_envs = 8
    keys = jax.random.split(jax.random.key(0), num_envs)
    balance = jnp.arange(num_envs) < num_envs // 2
    full, masked, _ = _cartpole_pair(keys, balance)

    assert masked.obs.shape == (520, num_envs, 2)
    np.testing.assert_array_equal(masked.obs, full.obs[..., jnp.array([0, 2])])
    np.testing.assert_array_equal(masked.final_obs, full.final_obs[..., jnp.array([0, 2])])
    np.testing.assert_array_equal(masked.reward, full.reward)
    np.testing.assert_array_equal(masked.terminated, full.terminated)
    np.testing.assert_array_equal(masked.truncated, full.truncated)

    # Both endings are exercised: the controller reaches the 500-step limit, the random
    # policy falls early.
    balanced = np.asarray(balance)
    assert np.all(masked.truncated[499, balanced])
    assert not np.any(masked.terminated[:, balanced])
    assert np.all(masked.terminated[:, ~balanced].sum(axis=0) >= 2)
    assert not np.any(masked.truncated[:, ~balanced])


# --- RiskyChoice ----------------------------------------------------------------------


def _risky_rollout(env, params, keys, first_action, later_actions):
    """Runs RiskyChoice from reset; the first action is ``first_action``, then the rest.

    Args:
        keys: ``[B]`` PRNG keys.
        first_action: ``[B]`` int, the branch choice.
        later_actions: ``[T - 1, B]`` int, actions of every later step.

    Returns:
        Reset observations ``[B, 4]``, ``Transitions`` ``[T, B, ...]`` and the states
        after each step ``[T, B]``.
    """
    actions = jnp.concatenate([first_action[None], later_actions])

    def one_env(key, actions_i):
        reset_key, scan_key = jax.random.split(key)
        obs0, state = env.reset(reset_key, params)

        def body(state, inputs):
            step_key, action = inputs
            state, step = _step(env, params, step_key, state, action)
            return state, (step, state)

        step_keys = jax.random.split(scan_key, actions_i.shape[0])
        _, (steps, states) = jax.lax.scan(body, state, (step_keys, actions_i))
        return obs0, steps, states

    obs0, steps, states = jax.vmap(one_env, in_axes=(0, 1))(keys, actions)
    time_major = lambda x: jnp.swapaxes(x, 0, 1)
    return obs0, jax.tree.map(time_major, steps), jax.tree.map(time_major, states)


@jax.jit
def _constant_policy_returns(keys, action):
    """Episode returns ``[B]`` of always playing ``action`` for one default episode."""
    env = RiskyChoice()
    params = env.default_params
    episode_length = params.delay + 1
    first = jnp.full(keys.shape, action)
    later = jnp.full((episode_length - 1,) + keys.shape, action)
    _, steps, _ = _risky_rollout(env, params, keys, first, later)
    return steps.reward.sum(axis=0)


_jit_risky_rollout = jax.jit(_risky_rollout, static_argnums=0)
_RISKY_CHOICE = RiskyChoice()  # one instance, so the jitted rollout is reused across tests


def _empirical_cvar(returns, alpha):
    """Mean of the lowest ``alpha`` fraction of the samples."""
    sorted_returns = np.sort(np.asarray(returns))
    return sorted_returns[: int(round(alpha * sorted_returns.size))].mean()


def test_risky_choice_documented_statistics():
    stats = branch_statistics(RiskyParams(), alpha=0.1)
    assert stats == (1.0, 1.0, pytest.approx(1.4), pytest.approx(-4.0))
    assert stats.risky_mean > stats.safe_mean
    assert stats.risky_cvar < stats.safe_cvar
    # CVaR below the bad-outcome probability is the bad outcome itself.
    assert branch_statistics(RiskyParams(), alpha=0.05).risky_cvar == pytest.approx(-10.0)


def test_risky_choice_monte_carlo_mean_and_cvar():
    keys = jax.random.split(jax.random.key(1), 20_000)
    safe = np.asarray(_constant_policy_returns(keys, 0))
    risky = np.asarray(_constant_policy_returns(keys, 1))
    stats = branch_statistics(RiskyParams(), alpha=0.1)

    np.testing.assert_array_equal(safe, 1.0)
    assert set(np.unique(risky)) == {-10.0, 2.0}
    assert np.mean(risky == -10.0) == pytest.approx(0.05, abs=0.006)  # 4 std errors
    assert risky.mean() == pytest.approx(stats.risky_mean, abs=0.08)  # ~4 std errors
    assert _empirical_cvar(risky, 0.1) == pytest.approx(stats.risky_cvar, abs=0.8)
    assert _empirical_cvar(safe, 0.1) == pytest.approx(stats.safe_cvar)
    assert risky.mean() > safe.mean() + 0.2
    assert _empirical_cvar(risky, 0.1) < _empirical_cvar(safe, 0.1) - 3.0


@pytest.mark.parametrize("delay", [4, 1])
def test_risky_choice_episode_structure(delay):
    env = _RISKY_CHOICE
    params = RiskyParams(delay=delay, max_steps_in_episode=delay + 1)
    episode_length = delay + 1
    num_envs, num_steps = 64, 3 * episode_length
    choice_obs = np.array([1.0, 0.0, 0.0, 0.0])
    first_key, later_key = jax.random.split(jax.random.key(3))
    first = jax.random.bernoulli(first_key, shape=(num_envs,)).astype(jnp.int32)
    later = jax.random.bernoulli(later_key, shape=(num_steps - 1, num_envs)).astype(jnp.int32)
    keys = jax.random.split(jax.random.key(2), num_envs)
    obs0, steps, _ = _jit_risky_rollout(env, params, keys, first, later)

    assert env.name == "RiskyChoice"
    assert env.num_actions == 2
    assert env.action_space(params).n == 2
    assert env.observation_space(params).shape == (4,)
    assert steps.obs.shape == (num_steps, num_envs, 4)
    np.testing.assert_array_equal(obs0, np.broadcast_to(choice_obs, (num_envs, 4)))
    # Terminated exactly every L steps, never truncated.
    ends = np.arange(num_steps) % episode_length == delay
    np.testing.assert_array_equal(steps.terminated, np.repeat(ends[:, None], num_envs, axis=1))
    assert not np.any(steps.truncated)
    # Reward only at the last step of each episode, always one of the possible payoffs.
    assert np.all(np.asarray(steps.reward)[~ends] == 0.0)
    assert set(np.unique(np.asarray(steps.reward)[ends])) <= {1.0, 2.0, -10.0}
    # After the auto-reset the next observation is the choice step again.
    np.testing.assert_array_equal(
        np.asarray(steps.obs)[ends], np.broadcast_to(choice_obs, (ends.sum(), num_envs, 4))
    )
    # The first episode pays according to the branch chosen by the first action.
    first_payoff = np.asarray(steps.reward[delay])
    chose_risky = np.asarray(first) == 1
    np.testing.assert_array_equal(first_payoff[~chose_risky], 1.0)
    assert np.all(np.isin(first_payoff[chose_risky], [2.0, -10.0]))


def test_risky_choice_observations_never_reveal_the_outcome():
    env = _RISKY_CHOICE
    params = env.default_params
    episode_length = params.delay + 1
    num_envs = 256
    keys = jax.random.split(jax.random.key(4), num_envs)
    first = jnp.ones((num_envs,), jnp.int32)
    later = jnp.zeros((episode_length - 1, num_envs), jnp.int32)
    obs0, steps, states = _jit_risky_rollout(env, params, keys, first, later)

    bad = np.asarray(states.bad_outcome[0])
    assert 0 < bad.sum() < num_envs  # both outcomes occur
    np.testing.assert_array_equal(steps.reward[-1], np.where(bad, -10.0, 2.0))
    # The outcome is drawn at the choice and carried unchanged until the payoff.
    np.testing.assert_array_equal(
        states.bad_outcome[:-1], np.broadcast_to(bad, (episode_length - 1, num_envs))
    )
    # Every observation, the terminal one included, depends on time and branch only:
    # [is_choice_step, branch_is_safe, branch_is_risky, time / L].
    np.testing.assert_array_equal(obs0, np.broadcast_to([1.0, 0.0, 0.0, 0.0], (num_envs, 4)))
    times = np.arange(1, episode_length + 1) / episode_length
    expected = np.stack([0 * times, 0 * times, 1 + 0 * times, times], axis=-1)
    np.testing.assert_allclose(
        steps.final_obs, np.broadcast_to(expected[:, None], (episode_length, num_envs, 4))
    )


def test_risky_choice_later_actions_have_no_effect():
    env = _RISKY_CHOICE
    params = env.default_params
    num_later = params.delay  # the rest of one episode
    num_envs = 256
    keys = jax.random.split(jax.random.key(5), num_envs)
    first = jax.random.bernoulli(jax.random.key(6), shape=(num_envs,)).astype(jnp.int32)
    copied = jnp.broadcast_to(first, (num_later, num_envs))
    random = jax.random.bernoulli(jax.random.key(7), shape=(num_later, num_envs))

    reference = _jit_risky_rollout(env, params, keys, first, copied)
    for later in (1 - copied, random.astype(jnp.int32)):
        out = _jit_risky_rollout(env, params, keys, first, later)
        jax.tree.map(np.testing.assert_array_equal, reference, out)
