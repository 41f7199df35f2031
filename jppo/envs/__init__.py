"""Environments: name lookup, the static description the learner needs, and a sanitizing step.

Any gymnax environment works by name (`"CartPole-v1"`, MinAtar, bsuite, misc), as does any
instance following gymnax's `Environment` interface. Built-ins registered here:
`"CartPole-masked"` (velocities hidden: a POMDP for the LSTM) and `"RiskyChoice"` (a risky
branch with the higher mean and the lower CVaR: the test bed for the quantile critic).

This module knows nothing of the learner: it turns an environment into flat float
observations, finite rewards and explicit `terminated` / `truncated` flags.
"""

from __future__ import annotations

import difflib
from typing import Any

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments import environment, spaces

from jppo import prng
from jppo.envs.wrappers import ScaledReward as ScaledReward
from jppo.types import EnvSpec, EnvStep

BUILTIN_ENV_NAMES = ("CartPole-masked", "RiskyChoice")


def _builtin_factory(name: str):
    if name == "CartPole-masked":
        from jppo.envs.cartpole_masked import MaskedCartPole

        return MaskedCartPole
    from jppo.envs.risky_choice import RiskyChoice

    return RiskyChoice


def available_envs() -> tuple[str, ...]:
    """Every environment name `make_env` accepts."""
    return tuple(gymnax.registered_envs) + BUILTIN_ENV_NAMES


def check_env(env: Any) -> None:
    """Raise `ValueError` (with close-match suggestions) unless `env` names or is an env."""
    if isinstance(env, str):
        if env in available_envs():
            return
        close = difflib.get_close_matches(env, available_envs(), n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"PPOConfig.env={env!r} is invalid: not a gymnax or jppo environment name.{hint} "
            f"Known names: {', '.join(available_envs())}."
        )
    if not all(
        hasattr(env, a)
        for a in ("step", "reset", "default_params", "action_space", "observation_space")
    ):
        raise ValueError(
            f"PPOConfig.env={env!r} is invalid: expected a name or an object with gymnax's "
            "Environment interface (step, reset, default_params, action_space, "
            "observation_space)"
        )


def check_env_params(env: Any, env_params: Any) -> None:
    """Raise `ValueError` unless `env_params` is None or of the type of `env`'s own params.

    Params of another environment often have fields of the same names (e.g.
    `max_steps_in_episode`), so they would be accepted and silently misread.
    """
    if env_params is None:
        return
    instance, default = make_env(env)
    if not isinstance(env_params, type(default)):
        name = env if isinstance(env, str) else type(instance).__name__
        qualified = lambda t: f"{t.__module__}.{t.__qualname__}"
        raise ValueError(
            f"PPOConfig.env_params={qualified(type(env_params))}(...) is invalid: expected "
            f"the params of {name}, a {qualified(type(default))} (e.g. "
            "env.default_params.replace(...)), or None for the defaults"
        )


def make_env(env: Any, env_params: Any = None) -> tuple[environment.Environment, Any]:
    """The environment instance and its params for a name or instance."""
    check_env(env)
    if isinstance(env, str):
        if env in BUILTIN_ENV_NAMES:
            env = _builtin_factory(env)()
        else:
            env, _ = gymnax.make(env)
    return env, env.default_params if env_params is None else env_params


def env_spec(env: environment.Environment, env_params: Any) -> EnvSpec:
    """The static description of `env`: flat observation size and action space."""
    obs_shape = env.observation_space(env_params).shape
    space = env.action_space(env_params)
    max_steps = getattr(env_params, "max_steps_in_episode", None)
    max_steps = int(max_steps) if max_steps is not None else None
    if isinstance(space, spaces.Discrete):
        return EnvSpec(
            obs_dim=int(np.prod(obs_shape)),
            discrete=True,
            action_dim=int(space.n),
            action_low=None,
            action_high=None,
            max_episode_steps=max_steps,
        )
    if isinstance(space, spaces.Box):
        shape = tuple(int(n) for n in space.shape)
        action_dim = int(np.prod(shape))  # 1 for a scalar space
        # Bounds may be scalars or arrays of the space's shape: one pair per flat element.
        flat_bounds = lambda b: np.broadcast_to(np.asarray(b, np.float32), shape).reshape(-1)
        return EnvSpec(
            obs_dim=int(np.prod(obs_shape)),
            discrete=False,
            action_dim=action_dim,
            action_low=flat_bounds(space.low),
            action_high=flat_bounds(space.high),
            max_episode_steps=max_steps,
            action_shape=shape,
        )
    raise ValueError(
        f"PPOConfig.env: unsupported action space {space!r} (expected gymnax Discrete or Box)"
    )


def _flat_obs(obs: jax.Array, batch_ndim: int) -> tuple[jax.Array, jax.Array]:
    obs = jnp.reshape(obs, obs.shape[:batch_ndim] + (-1,)).astype(jnp.float32)
    bad = jnp.sum(~jnp.isfinite(obs), axis=-1)
    return jnp.nan_to_num(obs, nan=0.0, posinf=0.0, neginf=0.0), bad


def reset(env, env_params, keys: jax.Array) -> tuple[jax.Array, Any]:
    """Reset a batch of environments. keys: [B] -> (obs [B, obs_dim], states)."""
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(keys, env_params)
    return _flat_obs(obs, 1)[0], state


def step(env, env_params, keys: jax.Array, state: Any, action: jax.Array) -> EnvStep:
    """Step a batch of environments with gymnax auto-reset, sanitizing non-finite values.

    Args:
      keys: [B] PRNG keys. state: batched env state. action: [B] or [B, A] (already within
        the action space's bounds).
    """
    # The env's own randomness (its key split and the auto-reset's draw) runs every step:
    # with `prng.straight_line` keys it is fused integer code instead of two small loops.
    obs, state, reward, terminated, truncated, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
        *prng.straight_line((keys, state)), action, env_params
    )
    state = prng.standard(state)
    obs, bad_obs = _flat_obs(obs, 1)
    final_obs, _ = _flat_obs(info["final_observation"], 1)
    reward = jnp.reshape(reward, (-1,)).astype(jnp.float32)
    bad_reward = ~jnp.isfinite(reward)
    reward = jnp.where(bad_reward, 0.0, reward)
    terminated = jnp.asarray(terminated, bool)
    truncated = jnp.logical_and(jnp.asarray(truncated, bool), ~terminated)
    return EnvStep(
        obs=obs,
        state=state,
        reward=reward,
        terminated=terminated,
        truncated=truncated,
        final_obs=final_obs,
        nonfinite=bad_obs + bad_reward.astype(jnp.int32),
    )
