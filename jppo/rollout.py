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

from jppo import envs, policy, sharding
from jppo.config import PPOConfig
from jppo.normalize import RewardNormState, normalize_reward
from jppo.types import (
    Actors,
    EpisodeStats,
    Hyperparams,
    Learner,
    RolloutOutput,
    RolloutStats,
    Setup,
    Transition,
)


class _Carry(NamedTuple):
    """The rollout scan's carry."""

    actors: Actors
    reward_stats: Any  # RunningMeanStd of discounted returns, or None
    obs_stats_next: Any  # observation statistics accumulating the new raw observations
    stats: RolloutStats
    hidden_sums: Any  # recurrent: per network (Σ_t h_t, Σ_t h_t²), each [B, H]; MLP: {}
    final_in: jax.Array  # [B, D] previous step's final obs as the policy sees it


def _policy_obs(obs, obs_stats, hp: Hyperparams):
    return obs if obs_stats is None else obs_stats.normalize(obs, clip=hp.obs_clip)


def _add_hidden(sums, net_carry):
    """Accumulate Σh and Σh² of each LSTM's new hidden state (elementwise: no reductions)."""
    return {
        k: (s + net_carry[k][1], s2 + jnp.square(net_carry[k][1])) for k, (s, s2) in sums.items()
    }


def _hidden_stats(sums, num_steps: int) -> dict:
    """LSTM hidden-state metrics over the rollout's steps and envs.

    lstm_{net}_norm = sqrt(mean_{t,b} ||h_tb||²) (the RMS of the L2 norms), lstm_{net}_mean
    and lstm_{net}_std over all entries of h: a saturating or dying LSTM shows here first.
    A shared LSTM reports the same numbers as both actor and critic. MLP: {}.
    """
    out = {}
    for net in ("actor", "critic") if sums else ():
        s, s2 = sums.get(net, sums["actor"])  # [B, H] each; shared: the actor's LSTM
        count = num_steps * s.shape[0]
        mean = jnp.sum(s) / (count * s.shape[1])
        out[f"lstm_{net}_norm"] = jnp.sqrt(jnp.sum(s2) / count)
        out[f"lstm_{net}_mean"] = mean
        out[f"lstm_{net}_std"] = jnp.sqrt(
            jnp.maximum(jnp.sum(s2) / (count * s.shape[1]) - jnp.square(mean), 0.0)
        )
    return out


def chunk_len(cfg: PPOConfig, recurrent: bool) -> int:
    """Steps between stored carries: `lstm_chunk_len` (recurrent), else the whole rollout."""
    if recurrent and cfg.lstm_chunk_len is not None:
        return cfg.lstm_chunk_len
    return cfg.num_steps


def step_stats(stats: RolloutStats, episodes: EpisodeStats, out, done):
    """Fold one env step into the rollout summaries and the running episode statistics.

    done [B]; rewards and running returns [B] or [B, N] (one return per agent, summed over
    the env axis only, so a multi-agent rollout keeps [N] return sums); lengths [B].
    """
    ep_returns = episodes.returns + out.reward
    ep_lengths = episodes.lengths + 1
    done_r = jnp.reshape(done, done.shape + (1,) * (ep_returns.ndim - done.ndim))
    stats = RolloutStats(
        returns_sum=stats.returns_sum + jnp.sum(jnp.where(done_r, ep_returns, 0.0), axis=0),
        lengths_sum=stats.lengths_sum + jnp.sum(jnp.where(done, ep_lengths, 0)).astype(jnp.float32),
        episodes=stats.episodes + jnp.sum(done).astype(jnp.float32),
        nonfinite_env=stats.nonfinite_env + jnp.sum(out.nonfinite).astype(jnp.float32),
    )
    episodes = episodes._replace(
        returns=jnp.where(done_r, 0.0, ep_returns), lengths=jnp.where(done, 0, ep_lengths)
    )
    return stats, episodes


def fill_after_loop(traj: Transition, first: jax.Array) -> Transition:
    """`traj` [T, B, ...] with the two fields the rollout loop leaves empty, each computed for
    all steps at once: `log_prob` of the stored actions under the stored `dist_params`, and
    `episode_start`, step 0's from the carry (`first`, [B, ...]) and every later one where
    the step before it ended (`done`).

    Per-step outputs cost a write into the stacked arrays each (and the log-probability its
    own small kernels) in every step of the loop; here they are one batched op each.
    """
    return traj._replace(
        episode_start=jnp.concatenate([first[None], traj.done[:-1]]),
        log_prob=policy.log_prob(traj.dist_params, traj.action),
    )


def finish_episodes(episodes: EpisodeStats, s: RolloutStats) -> EpisodeStats:
    """Mean return and length of the episodes that ended; carried forward when none did."""
    ended = s.episodes > 0
    count = jnp.maximum(s.episodes, 1.0)
    return episodes._replace(
        last_return=jnp.where(ended, s.returns_sum / count, episodes.last_return),
        last_length=jnp.where(ended, s.lengths_sum / count, episodes.last_length),
    )


def rollout(
    cfg: PPOConfig, setup: Setup, learner: Learner, actors: Actors, key: jax.Array, mesh=None
) -> RolloutOutput:
    """Collect `num_steps` transitions from every env with the learner's current policy.

    Truncated episodes are bootstrapped with V(final observation) (`Network.step` /
    `Network.bootstrap`: recurrent networks value it from the pre-reset carry). Recurrent
    policies keep the carry (before its reset) at the start of every chunk of
    `lstm_chunk_len` steps (one chunk, the rollout's start, by default) for the update to
    re-evaluate from. `mesh`: the env-axis mesh of a sharded run (`jppo.sharding`), or None.
    """
    env, env_params, spec, network = setup
    actors = sharding.constrain(actors, mesh, 0)
    params, hp = learner.params, learner.hyperparams
    obs_stats = learner.norm.obs

    def step(c: _Carry, xs):
        noise, env_keys = xs  # [B, A] action noise, [B] env keys of this step
        a = c.actors
        obs_in = _policy_obs(a.obs, obs_stats, hp)
        dist_params, value_pred, net_carry, pending = network.step(
            params, obs_in, a.episode_start, a.carry, c.final_in
        )
        action = policy.sample_with_noise(dist_params, noise)
        out = envs.step(env, env_params, env_keys, a.env_state, policy.env_action(action, spec))
        done = out.terminated | out.truncated

        reward, reward_stats, returns = out.reward, c.reward_stats, a.discounted_returns
        if reward_stats is not None:
            norm, reward = normalize_reward(
                RewardNormState(returns=returns, rms=reward_stats),
                out.reward,
                done,
                hp.gamma,
                clip=hp.reward_clip,
            )
            reward_stats, returns = norm.rms, norm.returns
        obs_stats_next = c.obs_stats_next
        if obs_stats_next is not None:
            obs_stats_next = obs_stats_next.update(a.obs)  # the raw obs acted on

        stats, episodes = step_stats(c.stats, a.episodes, out, done)
        transition = Transition(
            obs=obs_in,
            episode_start=None,  # `fill_after_loop`: the previous step's `done`
            action=action,
            log_prob=None,  # from dist_params and action, after the scan
            dist_params=dist_params,
            value_pred=value_pred,
            reward=reward,
            terminated=out.terminated,
            done=done,
            next_value_pred=None,
        )  # filled in after the scan (and value_pred too where the step returned None)
        actors = Actors(
            env_state=out.state,
            obs=out.obs,
            episode_start=done,
            carry=net_carry,
            episodes=episodes,
            discounted_returns=returns,
        )
        actors = sharding.constrain(actors, mesh, 0)
        new_c = _Carry(
            actors=actors,
            reward_stats=reward_stats,
            obs_stats_next=obs_stats_next,
            stats=stats,
            hidden_sums=_add_hidden(c.hidden_sums, net_carry),
            final_in=_policy_obs(out.final_obs, obs_stats, hp),
        )
        return new_c, (transition, pending)

    def chunk(c: _Carry, xs):  # keep the (pre-reset) carry at each chunk's start
        start_carry = c.actors.carry
        c, out = jax.lax.scan(step, c, xs, length)
        return c, (out, start_carry)

    zero = jnp.zeros((), jnp.float32)
    hidden_sums = {
        k: (jnp.zeros_like(v[1]), jnp.zeros_like(v[1]))
        for k, v in actors.carry.items()
        if network.recurrent and len(v)
    }
    init = _Carry(
        actors=actors,
        reward_stats=learner.norm.reward,
        obs_stats_next=obs_stats,
        stats=RolloutStats(returns_sum=zero, lengths_sum=zero, episodes=zero, nonfinite_env=zero),
        hidden_sums=hidden_sums,
        # Step 0's pending record (for the step before the rollout) is discarded: any
        # finite observation will do.
        final_in=_policy_obs(actors.obs, obs_stats, hp),
    )
    # All of the rollout's randomness in two calls, before the scan: per-step key splits and
    # samples would each be a threefry loop inside every step (see `policy.action_noise`).
    # One split gives the env keys and the noise's key (a split of its own would be a third
    # threefry loop).
    shape = (cfg.num_steps, cfg.num_envs)
    keys = jax.random.split(key, cfg.num_steps * cfg.num_envs + 1)
    xs = (policy.action_noise(keys[0], spec, shape), keys[1:].reshape(shape))
    xs = sharding.constrain(xs, mesh, 1)
    length = chunk_len(cfg, network.recurrent)
    if length == cfg.num_steps:
        c, (traj, pending) = jax.lax.scan(step, init, xs)
        chunk_carries = jax.tree.map(lambda x: x[None], actors.carry)
    else:
        xs = jax.tree.map(lambda x: x.reshape((cfg.num_steps // length, length) + x.shape[1:]), xs)
        c, (out, chunk_carries) = jax.lax.scan(chunk, init, xs)
        traj, pending = jax.tree.map(lambda x: x.reshape((cfg.num_steps,) + x.shape[2:]), out)
    traj = fill_after_loop(traj, actors.episode_start)
    traj, pending = sharding.constrain((traj, pending), mesh, 1)
    if traj.value_pred is None:  # feed-forward critic: every step's value in one pass
        # A sharded run values env-major ([B, T] rows, as `bootstrap` does), so that each
        # device's rows are one contiguous block and nothing is gathered; on one device the
        # two transposes would only cost time (~2 % at 4 envs).
        order = (lambda x: x) if mesh is None else (lambda x: jnp.swapaxes(x, 0, 1))
        values, _ = network.value(params, order(traj.obs), order(traj.episode_start), actors.carry)
        traj = traj._replace(value_pred=sharding.constrain(order(values), mesh, 1))
    final_in = sharding.constrain(c.final_in, mesh, 0)
    next_values = network.bootstrap(params, pending, final_in, c.actors.carry)
    next_values = sharding.constrain(next_values, mesh, 1)
    return RolloutOutput(
        actors=c.actors._replace(episodes=finish_episodes(c.actors.episodes, c.stats)),
        norm=learner.norm._replace(obs=c.obs_stats_next, reward=c.reward_stats),
        traj=traj._replace(next_value_pred=next_values),
        chunk_carries=chunk_carries,
        stats=c.stats,
        metrics=_hidden_stats(c.hidden_sums, cfg.num_steps),
    )
