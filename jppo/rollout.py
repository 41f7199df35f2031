"""Rollout: `lax.scan` over `num_steps` of a batch of `num_envs` environments.

The policy acts on observations normalized with the statistics frozen at the rollout's
start; the same normalized observations are stored, so the update re-evaluates exactly what
the rollout saw (the first minibatch's ratio is 1). Fresh observation statistics are merged
from the raw observations as the rollout goes and take effect from the next rollout.

Episode statistics are summarized inside the scan (sums and counts), never kept per step.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jppo import envs, networks
from jppo.config import PPOConfig
from jppo.normalize import normalize_reward
from jppo.types import EpisodeStats, Hyperparams, NormState, TrainState, Transition


class RolloutStats(NamedTuple):
    """Per-rollout summaries (scalars)."""

    returns_sum: jax.Array  # sum of undiscounted returns of episodes that ended
    lengths_sum: jax.Array  # sum of their lengths
    episodes: jax.Array  # number of episodes that ended
    nonfinite_env: jax.Array  # non-finite observation/reward entries replaced
    lstm_actor_norm: jax.Array  # mean L2 norm of the actor LSTM hidden state (0 for MLP)
    lstm_critic_norm: jax.Array


class _Carry(NamedTuple):
    env_state: Any
    obs: jax.Array  # [B, D] raw
    episode_start: jax.Array  # [B]
    net_carry: Any
    reward_norm: Any
    obs_stats_next: Any  # observation statistics accumulating the new raw observations
    episodes: EpisodeStats
    stats: RolloutStats
    key: jax.Array


def _policy_obs(obs, obs_stats, hp: Hyperparams):
    return obs if obs_stats is None else obs_stats.normalize(obs, clip=hp.obs_clip)


def _hidden_norm(carry) -> jax.Array:
    if not carry:
        return jnp.zeros((), jnp.float32)
    return jnp.mean(jnp.linalg.norm(carry[1], axis=-1))


def rollout(cfg: PPOConfig, env, env_params, spec: envs.EnvSpec, network: networks.Network,
            state: TrainState, key: jax.Array):
    """Collect `num_steps` transitions from every env with the current policy.

    Returns:
      (state with env state / observations / carries / episode and normalizer statistics
      advanced, Transition [T, B, ...], carry at the rollout's start, RolloutStats).
    """
    params, hp = state.params, state.hyperparams
    obs_stats = state.norm.obs

    def step(c: _Carry, _):
        key, k_act, k_env = jax.random.split(c.key, 3)
        obs_in = _policy_obs(c.obs, obs_stats, hp)
        start = c.episode_start
        dist_params, actor_carry = network.actor(params["actor"], obs_in[None], start[None],
                                                 c.net_carry["actor"])
        value_pred, critic_carry = network.critic(params["critic"], obs_in[None],
                                                  start[None], c.net_carry["critic"])
        dist_params = jax.tree.map(lambda x: x[0], dist_params)
        value_pred = value_pred[0]
        action, log_prob = networks.make_dist(dist_params).sample_and_log_prob(seed=k_act)
        out = envs.step(env, env_params, jax.random.split(k_env, cfg.num_envs), c.env_state,
                        networks.env_action(action, spec))
        done = out.terminated | out.truncated
        final_in = _policy_obs(out.final_obs, obs_stats, hp)
        if network.recurrent:  # bootstrap from the pre-reset hidden state
            next_value_pred, _ = network.critic(params["critic"], final_in[None],
                                                jnp.zeros_like(start)[None], critic_carry)
            next_value_pred = next_value_pred[0]
        else:  # computed for the whole batch after the scan
            next_value_pred = jnp.zeros_like(value_pred)

        reward, reward_norm = out.reward, c.reward_norm
        if reward_norm is not None:
            reward_norm, reward = normalize_reward(reward_norm, out.reward, done, hp.gamma,
                                                   clip=hp.reward_clip)
        obs_stats_next = c.obs_stats_next
        if obs_stats_next is not None:
            obs_stats_next = obs_stats_next.update(out.obs)

        ep = c.episodes
        ep_returns = ep.returns + out.reward
        ep_lengths = ep.lengths + 1
        stats = RolloutStats(
            c.stats.returns_sum + jnp.sum(jnp.where(done, ep_returns, 0.0)),
            c.stats.lengths_sum + jnp.sum(jnp.where(done, ep_lengths, 0)).astype(jnp.float32),
            c.stats.episodes + jnp.sum(done).astype(jnp.float32),
            c.stats.nonfinite_env + jnp.sum(out.nonfinite).astype(jnp.float32),
            c.stats.lstm_actor_norm + _hidden_norm(actor_carry) / cfg.num_steps,
            c.stats.lstm_critic_norm + _hidden_norm(critic_carry) / cfg.num_steps,
        )
        episodes = ep._replace(returns=jnp.where(done, 0.0, ep_returns),
                               lengths=jnp.where(done, 0, ep_lengths))
        transition = Transition(obs_in, start, action, log_prob, dist_params, value_pred,
                                reward, out.terminated, done, next_value_pred)
        new_c = _Carry(out.state, out.obs, done, {"actor": actor_carry, "critic": critic_carry},
                       reward_norm, obs_stats_next, episodes, stats, key)
        return new_c, (transition, final_in)

    zero = jnp.zeros((), jnp.float32)
    init = _Carry(state.env_state, state.obs, state.episode_start, state.carry,
                  state.norm.reward, obs_stats, state.episodes,
                  RolloutStats(zero, zero, zero, zero, zero, zero), key)
    c, (traj, final_obs) = jax.lax.scan(step, init, None, cfg.num_steps)
    if obs_stats is not None:
        obs_stats_next = c.obs_stats_next
    else:
        obs_stats_next = None
    if not network.recurrent:
        next_value_pred, _ = network.critic(params["critic"], final_obs,
                                            jnp.zeros(final_obs.shape[:2], bool), {})
        traj = traj._replace(next_value_pred=next_value_pred)

    s = c.stats
    ended = s.episodes > 0
    episodes = c.episodes._replace(
        last_return=jnp.where(ended, s.returns_sum / jnp.maximum(s.episodes, 1.0),
                              c.episodes.last_return),
        last_length=jnp.where(ended, s.lengths_sum / jnp.maximum(s.episodes, 1.0),
                              c.episodes.last_length))
    new_state = state._replace(
        env_state=c.env_state, obs=c.obs, episode_start=c.episode_start, carry=c.net_carry,
        episodes=episodes,
        norm=NormState(obs_stats_next, c.reward_norm, state.norm.value))
    return new_state, traj, state.carry, s
