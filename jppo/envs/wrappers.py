"""Small generic wrappers around gymnax-interface environments.

A wrapper keeps gymnax 1.0's step contract untouched — `(obs, state, reward, terminated,
truncated, info)` with the auto-reset done by the inner environment and the pre-reset
observation in `info["final_observation"]` — and changes one thing only. Every attribute a
wrapper does not define (`default_params`, `action_space`, `observation_space`, ...) is the
inner environment's, so a wrapped environment is a drop-in `PPOConfig(env=...)`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


class ScaledReward:
    """Rewards mapped affinely: r' = scale·r + shift; everything else is the inner env's.

    A stress test for reward scale: CartPole-v1 with `scale=1000, shift=-500` pays
    +500 per step, so episode returns reach 250 000 and raw advantages are in the thousands,
    while the task (and `episode_length`, CartPole's original-units return) is unchanged.
    The inverse map `unscale` recovers original-units rewards.

    Example:
        >>> import jax, gymnax
        >>> env = ScaledReward(gymnax.make("CartPole-v1")[0], scale=1000.0, shift=-500.0)
        >>> obs, state = env.reset(jax.random.key(0), env.default_params)
        >>> out = env.step(jax.random.key(1), state, 0, env.default_params)
        >>> float(out[2])
        500.0

    Args:
      env: a gymnax-interface environment (an `Environment` or another wrapper).
      scale: multiplier of the reward (a Python float; non-zero so `unscale` exists).
      shift: added after scaling.
    """

    def __init__(self, env: Any, scale: float = 1.0, shift: float = 0.0):
        if not scale:
            raise ValueError(f"ScaledReward: scale={scale!r} must be non-zero")
        self._env = env
        self.scale = float(scale)
        self.shift = float(shift)

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not found on the wrapper: delegate to the inner env.
        if name == "_env":
            raise AttributeError(name)
        return getattr(self._env, name)

    @property
    def name(self) -> str:
        inner = getattr(self._env, "name", type(self._env).__name__)
        return f"{inner}[r*{self.scale:g}{self.shift:+g}]"

    def reset(self, key: jax.Array, params: Any = None):
        """The inner environment's reset: (obs, state)."""
        return self._env.reset(key, params)

    def step(self, key: jax.Array, state: Any, action: Any, params: Any = None):
        """The inner step with the reward mapped; terminated, truncated, info unchanged.

        Returns:
          (obs, state, scale·reward + shift, terminated, truncated, info).
        """
        obs, state, reward, terminated, truncated, info = self._env.step(key, state, action, params)
        reward = self.scale * jnp.asarray(reward, jnp.float32) + self.shift
        return obs, state, reward, terminated, truncated, info

    def unscale(self, reward: jax.Array) -> jax.Array:
        """Original-units reward(s) of scaled ones: (r' − shift) / scale."""
        return (reward - self.shift) / self.scale
