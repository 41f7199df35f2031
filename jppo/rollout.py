"""Rollout: `lax.scan` over `num_steps` of a batch of `num_envs` environments.

The policy acts on observations normalized with the statistics frozen at the rollout's
start; the same normalized observations are stored, so the update re-evaluates exactly what
the rollout saw (the first minibatch's ratio is 1). Fresh observation statistics are merged
from the raw observations as the rollout goes and take effect from the next rollout: over a
run they hold the prior plus exactly the raw observations the policy acted on (the episodes'
first observations included; the pre-reset final observations, used only to bootstrap, not),
as VecNormalize counts its reset and step observations.

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
    lstm: dict  # recurrent: lstm_{actor,critic}_{norm,mean,std} (`_hidden_stats`); MLP: {}


class _Carry(NamedTuple):
    env_state: Any
    obs: jax.Array  # [B, D] raw
    episode_start: jax.Array  # [B]
    net_carry: Any
    reward_norm: Any
    obs_stats_next: Any  # observation statistics accumulating the new raw observations
    episodes: EpisodeStats
    stats: RolloutStats
    hidden_sums: Any  # recurrent: per network (Σ_t h_t, Σ_t h_t²), each [B, H]; MLP: {}
    final_in: Any  # recurrent: previous step's final obs as the policy sees it [B, D]; MLP: None
    key: jax.Array


def _policy_obs(obs, obs_stats, hp: Hyperparams):
    return obs if obs_stats is None else obs_stats.normalize(obs, clip=hp.obs_clip)


def _add_hidden(sums, net_carry):
    """Accumulate Σh and Σh² of each LSTM's new hidden state (elementwise: no reductions)."""
    return {k: (s + net_carry[k][1], s2 + jnp.square(net_carry[k][1]))
            for k, (s, s2) in sums.items()}


def _hidden_stats(sums, num_steps: int) -> dict:
    """LSTM hidden-state metrics over the rollout's steps and envs (critical_fixes #6).

    lstm_{net}_norm = sqrt(mean_{t,b} ||h_tb||²) (the RMS of the L2 norms), lstm_{net}_mean
    and lstm_{net}_std over all entries of h. A shared LSTM reports the same numbers as
    both actor and critic.
    """
    if not sums:  # MLP
        return {}
    out = {}
    for net in ("actor", "critic"):
        s, s2 = sums.get(net, sums["actor"])  # [B, H] each; shared: the actor's LSTM
        count = num_steps * s.shape[0]
        mean = jnp.sum(s) / (count * s.shape[1])
        out[f"lstm_{net}_norm"] = jnp.sqrt(jnp.sum(s2) / count)
        out[f"lstm_{net}_mean"] = mean
        out[f"lstm_{net}_std"] = jnp.sqrt(jnp.maximum(jnp.sum(s2) / (count * s.shape[1])
                                                      - jnp.square(mean), 0.0))
    return out


def _chunk_len(cfg: PPOConfig, network: networks.Network) -> int:
    """Steps between stored carries: `lstm_chunk_len` (recurrent), else the whole rollout."""
    if network.recurrent and cfg.lstm_chunk_len is not None:
        return cfg.lstm_chunk_len
    return cfg.num_steps


def rollout(cfg: PPOConfig, env, env_params, spec: envs.EnvSpec, network: networks.Network,
            state: TrainState, key: jax.Array):
    """Collect `num_steps` transitions from every env with the current policy.

    Recurrent policies bootstrap truncated episodes with V(final observation) from the
    pre-reset carry: step t+1's fused network call evaluates step t's final observation
    continuing the carry without reset (`Network.bootstrap_step`; no extra sequential
    network call per step), the last step's after the scan. They keep the carry (before its
    reset) at the start of every chunk of `lstm_chunk_len` steps (one chunk, the rollout's
    start, by default) for the update to re-evaluate from.

    Returns:
      (state with env state / observations / carries / episode and normalizer statistics
      advanced, Transition [T, B, ...], carries at the chunk starts (leaves [C, B, H],
      C = num_steps // chunk length; {} entries for an MLP), RolloutStats).
    """
    params, hp = state.params, state.hyperparams
    obs_stats = state.norm.obs

    def step(c: _Carry, _):
        key, k_act, k_env = jax.random.split(c.key, 3)
        obs_in = _policy_obs(c.obs, obs_stats, hp)
        start = c.episode_start
        if network.recurrent:  # also V(previous final obs) from the pre-reset carry
            dist_params, value_pred, net_carry, prev_boot = network.bootstrap_step(
                params, obs_in, start, c.net_carry, c.final_in)
        else:
            dist_params, value_pred, net_carry = network.actor_critic(
                params, obs_in[None], start[None], c.net_carry)
            dist_params = jax.tree.map(lambda x: x[0], dist_params)
            value_pred = value_pred[0]
        action, log_prob = networks.make_dist(dist_params).sample_and_log_prob(seed=k_act)
        out = envs.step(env, env_params, jax.random.split(k_env, cfg.num_envs), c.env_state,
                        networks.env_action(action, spec))
        done = out.terminated | out.truncated
        final_in = _policy_obs(out.final_obs, obs_stats, hp)
        next_value_pred = jnp.zeros_like(value_pred)  # filled in after the scan

        reward, reward_norm = out.reward, c.reward_norm
        if reward_norm is not None:
            reward_norm, reward = normalize_reward(reward_norm, out.reward, done, hp.gamma,
                                                   clip=hp.reward_clip)
        obs_stats_next = c.obs_stats_next
        if obs_stats_next is not None:
            obs_stats_next = obs_stats_next.update(c.obs)  # the raw obs acted on

        ep = c.episodes
        ep_returns = ep.returns + out.reward
        ep_lengths = ep.lengths + 1
        stats = RolloutStats(
            c.stats.returns_sum + jnp.sum(jnp.where(done, ep_returns, 0.0)),
            c.stats.lengths_sum + jnp.sum(jnp.where(done, ep_lengths, 0)).astype(jnp.float32),
            c.stats.episodes + jnp.sum(done).astype(jnp.float32),
            c.stats.nonfinite_env + jnp.sum(out.nonfinite).astype(jnp.float32),
            c.stats.lstm,
        )
        episodes = ep._replace(returns=jnp.where(done, 0.0, ep_returns),
                               lengths=jnp.where(done, 0, ep_lengths))
        transition = Transition(obs_in, start, action, log_prob, dist_params, value_pred,
                                reward, out.terminated, done, next_value_pred)
        new_c = _Carry(out.state, out.obs, done, net_carry, reward_norm, obs_stats_next,
                       episodes, stats, _add_hidden(c.hidden_sums, net_carry),
                       final_in if network.recurrent else None, key)
        return new_c, (transition, prev_boot if network.recurrent else final_in)

    def chunk(c: _Carry, _):  # recurrent: keep the (pre-reset) carry at each chunk's start
        start_carry = c.net_carry
        c, out = jax.lax.scan(step, c, None, chunk_len)
        return c, (out, start_carry)

    zero = jnp.zeros((), jnp.float32)
    hidden_sums = {k: (jnp.zeros_like(v[1]), jnp.zeros_like(v[1]))
                   for k, v in state.carry.items() if network.recurrent and len(v)}
    # Step 0's V(previous final obs) is discarded: any finite placeholder will do.
    placeholder = _policy_obs(state.obs, obs_stats, hp) if network.recurrent else None
    init = _Carry(state.env_state, state.obs, state.episode_start, state.carry,
                  state.norm.reward, obs_stats, state.episodes,
                  RolloutStats(zero, zero, zero, zero, {}), hidden_sums, placeholder, key)
    chunk_len = _chunk_len(cfg, network)
    if chunk_len == cfg.num_steps:
        c, (traj, extra) = jax.lax.scan(step, init, None, cfg.num_steps)
        chunk_carries = jax.tree.map(lambda x: x[None], state.carry)
    else:
        c, (out, chunk_carries) = jax.lax.scan(chunk, init, None, cfg.num_steps // chunk_len)
        traj, extra = jax.tree.map(lambda x: x.reshape((cfg.num_steps,) + x.shape[2:]), out)
    if network.recurrent:  # step t+1 computed V(final obs of step t); the last one here
        last, _ = network.value(params, c.final_in[None], jnp.zeros((1, cfg.num_envs), bool),
                                c.net_carry)
        traj = traj._replace(next_value_pred=jnp.concatenate([extra[1:], last]))
    else:  # extra = final observations [T, B, D]
        next_value_pred, _ = network.critic(params["critic"], extra,
                                            jnp.zeros(extra.shape[:2], bool), {})
        traj = traj._replace(next_value_pred=next_value_pred)

    s = c.stats._replace(lstm=_hidden_stats(c.hidden_sums, cfg.num_steps))
    ended = s.episodes > 0
    episodes = c.episodes._replace(
        last_return=jnp.where(ended, s.returns_sum / jnp.maximum(s.episodes, 1.0),
                              c.episodes.last_return),
        last_length=jnp.where(ended, s.lengths_sum / jnp.maximum(s.episodes, 1.0),
                              c.episodes.last_length))
    new_state = state._replace(
        env_state=c.env_state, obs=c.obs, episode_start=c.episode_start, carry=c.net_carry,
        episodes=episodes,
        norm=NormState(c.obs_stats_next, c.reward_norm, state.norm.value))
    return new_state, traj, chunk_carries, s
