"""The policy's distributions and actions, from the network's distribution parameters.

The rollout stores only distribution parameters (logits, or mean and log_std) and the
sampled action's log-probability; everything here rebuilds what it needs from those, so the
loss, the rollout, evaluation and exported policies agree on one definition.
"""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp

from jppo.types import EnvSpec


def make_dist(dist_params: dict) -> distrax.Distribution:
    """The policy distribution: Categorical from logits, or a diagonal Gaussian."""
    if "logits" in dist_params:
        return distrax.Categorical(logits=dist_params["logits"])
    return distrax.MultivariateNormalDiag(dist_params["mean"], jnp.exp(dist_params["log_std"]))


def action_noise(key: jax.Array, spec: EnvSpec, shape: tuple[int, ...]) -> jax.Array:
    """The noise that `sample_with_noise` turns into actions, for `shape` draws at once.

    `spec`: an `EnvSpec`, or anything with its `discrete` and `action_dim` (a `MarlEnv`).

    Returns `shape + (spec.action_dim,)` float32: standard Gumbel noise (discrete: the
    sample is the argmax of logits + noise) or standard normal noise (continuous: the sample
    is mean + std * noise). A rollout draws its whole `[T, B]` block in one call before its
    scan: on XLA:CPU every threefry call is a rolled loop of small kernels, and at a few
    envs those per-step calls were a large part of a rollout step's cost.
    """
    shape = tuple(shape) + (spec.action_dim,)
    if spec.discrete:
        return jax.random.gumbel(key, shape, jnp.float32)
    return jax.random.normal(key, shape, jnp.float32)


def sample_with_noise(dist_params: dict, noise: jax.Array) -> jax.Array:
    """The policy's action for `noise` from `action_noise`.

    The same distribution as `make_dist(dist_params).sample(seed=...)`: Gumbel-max for
    logits (`[..., A]` noise -> `[...]` int actions), mean + std * noise for the Gaussian
    (`[..., A]` -> `[..., A]`). Its log-probability is `make_dist(dist_params).log_prob`,
    which the rollouts compute for all steps at once after their loop.
    """
    if "logits" in dist_params:
        logits = dist_params["logits"]
        return jnp.argmax(logits + noise.astype(logits.dtype), axis=-1)
    mean = dist_params["mean"]
    std = jnp.exp(dist_params["log_std"])
    return mean + std * noise.astype(mean.dtype)


def log_prob(dist_params: dict, action: jax.Array) -> jax.Array:
    """log π(action) under the distribution of `dist_params` (any leading shape)."""
    return make_dist(dist_params).log_prob(action)


def deterministic_action(dist_params: dict) -> jax.Array:
    """The distribution's mode: argmax of the logits, or the Gaussian mean."""
    if "logits" in dist_params:
        return jnp.argmax(dist_params["logits"], axis=-1)
    return dist_params["mean"]


def env_action(action: jax.Array, spec: EnvSpec) -> jax.Array:
    """The action sent to the environment: continuous samples clipped to the space's bounds.

    `action` is [..., action_dim] (continuous) or [...] (discrete); the result has the
    space's own shape in place of the last axis (e.g. [...] for a scalar space). The
    unclipped flat sample is what the log-probability is computed for.

    Continuous actions are sent in JAX's default float type (float64 under
    `jax_enable_x64`): gymnax environments compute their states in that type, and an action
    of another type makes a state leaf's type differ between a step and a reset, which their
    auto-reset `select` refuses.
    """
    if spec.discrete:
        return action
    action = jnp.clip(action, spec.action_low, spec.action_high)
    shape = spec.action_shape if spec.action_shape is not None else (spec.action_dim,)
    action = jnp.reshape(action, action.shape[:-1] + shape)
    return action.astype(jax.dtypes.canonicalize_dtype(jnp.float64))
