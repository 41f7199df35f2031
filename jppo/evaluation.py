"""Evaluation: undiscounted returns of a trained policy's deterministic actions."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jppo import envs, policy
from jppo.compile import as_key, cached_program, jit
from jppo.config import PPOConfig
from jppo.envs.marl import is_marl_env
from jppo.trainer import build
from jppo.types import Hyperparams, Setup, TrainState

# Episodes of an environment without a step limit are cut here.
DEFAULT_MAX_EPISODE_STEPS = 10_000


class _EvalCarry(NamedTuple):
    t: jax.Array  # [] int32, steps taken
    obs: jax.Array  # [E, D] raw observations
    env_state: Any
    carry: Any  # actor's recurrent carry, [E, H] leaves (MLP: {})
    start: jax.Array  # [E] bool, obs begins an episode
    active: jax.Array  # [E] bool, episode still running
    returns: jax.Array  # [E] float32, undiscounted return so far
    key: jax.Array


def make_evaluate(cfg: PPOConfig, num_episodes: int, setup: Setup | None = None):
    """The pure function `(params, obs_stats, hyperparams, key) -> returns [num_episodes]`.

    One episode per environment, all run side by side in a `while_loop` until every episode
    has ended or the env's step limit is reached; finished envs stop accumulating reward.
    """
    if is_marl_env(cfg.env):
        from jppo import marl  # team returns of a multi-agent run, same signature

        return marl.make_evaluate(cfg, num_episodes, setup)
    env, env_params, spec, network = setup or build(cfg)
    max_steps = spec.max_episode_steps or DEFAULT_MAX_EPISODE_STEPS

    def body(c: _EvalCarry, params, obs_stats, hp: Hyperparams) -> _EvalCarry:
        key, k_env = jax.random.split(c.key)
        obs_in = c.obs if obs_stats is None else obs_stats.normalize(c.obs, clip=hp.obs_clip)
        dist_params, actor_carry = network.actor(
            params["actor"], obs_in[None], c.start[None], c.carry["actor"]
        )
        action = policy.deterministic_action(jax.tree.map(lambda x: x[0], dist_params))
        out = envs.step(
            env,
            env_params,
            jax.random.split(k_env, num_episodes),
            c.env_state,
            policy.env_action(action, spec),
        )
        return _EvalCarry(
            t=c.t + 1,
            obs=out.obs,
            env_state=out.state,
            carry={**c.carry, "actor": actor_carry},
            start=jnp.zeros_like(c.start),
            active=c.active & ~(out.terminated | out.truncated),
            returns=c.returns + jnp.where(c.active, out.reward, 0.0),
            key=key,
        )

    def evaluate_fn(params, obs_stats, hp: Hyperparams, key: jax.Array) -> jax.Array:
        k_reset, k_loop = jax.random.split(key)
        obs, env_state = envs.reset(env, env_params, jax.random.split(k_reset, num_episodes))
        init = _EvalCarry(
            t=jnp.zeros((), jnp.int32),
            obs=obs,
            env_state=env_state,
            carry=network.initial_carry(num_episodes),
            start=jnp.ones(num_episodes, bool),
            active=jnp.ones(num_episodes, bool),
            returns=jnp.zeros(num_episodes, jnp.float32),
            key=k_loop,
        )
        final = jax.lax.while_loop(
            lambda c: (c.t < max_steps) & jnp.any(c.active),
            lambda c: body(c, params, obs_stats, hp),
            init,
        )
        return final.returns

    return evaluate_fn


def evaluate(
    cfg: PPOConfig, state: TrainState, key: jax.Array, num_episodes: int = 64
) -> jax.Array:
    """Undiscounted returns [num_episodes] of the deterministic policy of one `state`.

    Uses the state's observation statistics; recurrent carries start fresh per episode;
    each episode runs to its end or the environment's step limit. Compiled once per config
    structure and `num_episodes`.

    Example:
        >>> out = jppo.train(cfg, jax.random.key(0))
        >>> jppo.evaluate(cfg, out.state, jax.random.key(1), num_episodes=8).shape
        (8,)
    """
    program = cached_program(
        ("evaluate", num_episodes), cfg, lambda: jit(make_evaluate(cfg, num_episodes))
    )
    learner = state.learner
    return program(learner.params, learner.norm.obs, learner.hyperparams, as_key(key))
