"""Environments in the pipeline: custom instances, truncation vs termination, bad values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import environment, spaces

import jppo
from jppo import envs
from jppo import targets as targets_lib
from jppo.rollout import rollout
from tests.helpers import fresh_rollout


@struct.dataclass
class CounterState(environment.EnvState):
    time: int


@struct.dataclass
class CounterParams(environment.EnvParams):
    max_steps_in_episode: int = 3
    terminate_at: int = 100  # terminate when time reaches this (natural end)
    nan_every: int = 0  # emit NaN reward and inf observation every k-th step (0: never)


class Counter(environment.Environment):
    """Observation [time, 1]; reward 1 per step; a time limit and an optional terminal."""

    @property
    def default_params(self):
        return CounterParams()

    def step_env(self, key, state, action, params):
        state = CounterState(time=state.time + 1)
        bad = (params.nan_every > 0) & (state.time % jnp.maximum(params.nan_every, 1) == 0)
        reward = jnp.where(bad, jnp.nan, 1.0)
        obs = self.get_obs(state)
        obs = jnp.where(bad, jnp.array([jnp.inf, 1.0]), obs)
        return obs, state, reward, self.is_terminated(state, params), {}

    def reset_env(self, key, params):
        state = CounterState(time=0)
        return self.get_obs(state), state

    def get_obs(self, state, params=None, key=None):
        return jnp.array([state.time, 1.0], jnp.float32)

    def is_terminated(self, state, params):
        return state.time >= params.terminate_at

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params):
        return spaces.Box(-jnp.inf, jnp.inf, (2,), jnp.float32)


def _rollout_batch(params):
    env = Counter()
    cfg = jppo.PPOConfig(
        env=env,
        env_params=params,
        num_envs=2,
        num_steps=8,
        total_timesteps=16,
        num_minibatches=2,
        gamma=0.9,
        gae_lambda=0.8,
    )
    network, state, traj, _ = fresh_rollout(cfg)
    batch, _, _ = targets_lib.make_batch(
        cfg.replace(adv_norm="none"), traj, state.learner.hyperparams, None
    )
    critic = lambda obs: network.critic(
        state.learner.params["critic"], obs[None, None], jnp.zeros((1, 1), bool), {}
    )[0][0, 0]
    return traj, batch, critic


def test_truncated_steps_bootstrap_from_the_final_observation():
    traj, batch, critic = _rollout_batch(CounterParams(max_steps_in_episode=3))
    done = np.asarray(traj.done)
    assert done[2].all() and not np.asarray(traj.terminated).any()
    # At the truncated step the next value is V(final obs = [3, 1]), not V(reset obs = [0, 1]).
    v_final, v_reset = float(critic(jnp.array([3.0, 1.0]))), float(critic(jnp.array([0.0, 1.0])))
    assert abs(v_final - v_reset) > 1e-4
    np.testing.assert_allclose(traj.next_value_pred[2], v_final, rtol=1e-5)
    # The recursion is cut there, so the target is r + gamma * V(final obs).
    np.testing.assert_allclose(batch.targets[2], 1.0 + 0.9 * v_final, rtol=1e-5)


def test_terminated_steps_do_not_bootstrap():
    traj, batch, _ = _rollout_batch(CounterParams(max_steps_in_episode=50, terminate_at=3))
    assert np.asarray(traj.terminated)[2].all()
    np.testing.assert_allclose(batch.targets[2], 1.0, rtol=1e-6)


class RandomEpisodes(Counter):
    """Counter with a random reward in [-0.5, 1.5) per step and termination with
    probability 0.2 per step (the time limit truncates the rest)."""

    def step_env(self, key, state, action, params):
        k_reward, k_end = jax.random.split(key)
        state = CounterState(time=state.time + 1)
        reward = jax.random.uniform(k_reward, minval=-0.5, maxval=1.5)
        return self.get_obs(state), state, reward, jax.random.uniform(k_end) < 0.2, {}


def _np_episode_stats(rewards, dones):
    """Per update: mean return and length of the episodes that ended in its rollout (carried
    forward when none did, 0 before the first) and their count; float64 over [U, T, B].
    Also the longest episode that ended."""
    running_return, running_length = np.zeros(rewards.shape[2]), np.zeros(rewards.shape[2])
    last, out, longest = (0.0, 0.0), [], 0
    for rollout_rewards, rollout_dones in zip(rewards, dones):
        ended = []
        for r, d in zip(rollout_rewards, rollout_dones):
            running_return, running_length = running_return + r, running_length + 1
            ended += [(running_return[b], running_length[b]) for b in np.flatnonzero(d)]
            running_return, running_length = (
                np.where(d, 0, running_return),
                np.where(d, 0, running_length),
            )
        if ended:
            last = tuple(np.mean(ended, axis=0))
            longest = max(longest, max(length for _, length in ended))
        out.append((*last, len(ended)))
    return np.array(out), longest


def test_episode_statistics_match_an_independent_count():
    """Random rewards and terminations, episodes straddling rollouts (12-step limit, 10-step
    rollouts): the trainer's episode_return, episode_length and episodes_completed equal a
    float64 re-count over the rollouts' rewards and done flags."""
    cfg = jppo.PPOConfig(
        env=RandomEpisodes(),
        env_params=CounterParams(max_steps_in_episode=12),
        num_envs=3,
        num_steps=10,
        total_timesteps=3 * 10 * 6,
        num_minibatches=2,
    )
    trainer = jppo.make_trainer(cfg)
    state = trainer.init(jax.random.key(0))
    step = jax.jit(trainer.step)
    roll = jax.jit(lambda s, k: rollout(cfg, trainer.setup, s.learner, s.actors, k).traj)
    rewards, dones, metrics = [], [], []
    for _ in range(cfg.num_updates):
        _, k_roll, _ = jax.random.split(state.rng, 3)  # the key the step's rollout uses
        traj = roll(state, k_roll)
        rewards.append(np.asarray(traj.reward, np.float64))
        dones.append(np.asarray(traj.done))
        state, m = step(state)
        metrics.append(
            [float(m[k]) for k in ("episode_return", "episode_length", "episodes_completed")]
        )
    rewards, dones = np.array(rewards), np.array(dones)
    assert dones.sum() > 10 and np.std(rewards) > 0.3  # many, different episodes
    expected, longest = _np_episode_stats(rewards, dones)
    assert longest > cfg.num_steps  # some episode began in an earlier rollout
    np.testing.assert_allclose(np.array(metrics), expected, rtol=1e-5)


def test_nonfinite_observations_and_rewards_are_sanitized_and_counted():
    env = Counter()
    cfg = jppo.PPOConfig(
        env=env,
        env_params=CounterParams(max_steps_in_episode=7, nan_every=2),
        num_envs=2,
        num_steps=12,
        total_timesteps=48,
        num_minibatches=2,
    )
    out = jppo.train(cfg, jax.random.key(0))
    assert float(out.metrics["nonfinite_env_count"].sum()) > 0
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(out.state.learner.params))
    assert np.all(np.isfinite(out.metrics["value_loss"]))


def test_env_names_and_builtins():
    assert "CartPole-masked" in envs.available_envs()
    env, params = envs.make_env("RiskyChoice")
    assert envs.env_spec(env, params).discrete
    with pytest.raises(ValueError, match="Did you mean"):
        envs.make_env("Pendulum-v2")
    with pytest.raises(ValueError, match="gymnax"):
        jppo.PPOConfig(env=object())
