"""A trained policy as a plain function, for use outside training: `make_policy(cfg, state)`.

The returned `act` closes over the actor's parameters and the observation statistics, so it
needs nothing else from jppo at call time; it is pure and jittable.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jppo import policy
from jppo.config import PPOConfig
from jppo.envs.marl import is_marl_env
from jppo.trainer import build
from jppo.types import TrainState


def make_policy(cfg: PPOConfig, state: TrainState) -> Callable:
    """The policy of one run's `state` as `act(obs, key, deterministic=False) -> action`.

    `obs` is one raw environment observation (the env's observation shape) or a batch of
    them (`[B, *obs_shape]`); the stored observation statistics are applied, and the action
    is what the environment takes (a discrete index, or a continuous vector clipped to the
    action space). `deterministic=True` takes the distribution's mode (as `jppo.evaluate`
    does); `deterministic` is static under `jax.jit`.

    Recurrent policies (`network="lstm"`) carry their state explicitly:
    `act(obs, carry, key, deterministic=False) -> (action, carry)`, starting each episode
    from `act.initial_carry(batch_size=None)`. `act.recurrent` says which form it is.

    Example:
        >>> act = jppo.make_policy(cfg, out.state)
        >>> action = jax.jit(act, static_argnames="deterministic")(obs, key)
    """
    if np.shape(state.step) != ():
        raise ValueError(
            f"make_policy: the state holds a batch of runs (batch shape {np.shape(state.step)}); "
            "select one, e.g. jax.tree.map(lambda x: x[i], state)"
        )
    if is_marl_env(cfg.env):
        from jppo import marl  # one action per agent (dict or [.., N] array)

        return marl.make_policy(cfg, state)
    setup = build(cfg)
    spec, network = setup.spec, setup.network
    obs_shape = tuple(setup.env.observation_space(setup.env_params).shape)
    params = state.learner.params["actor"]
    obs_stats = state.learner.norm.obs
    obs_clip = state.learner.hyperparams.obs_clip

    def features(obs: jax.Array) -> tuple[jax.Array, bool]:
        """Flat, normalized observations [B, D] and whether the input was unbatched."""
        obs = jnp.asarray(obs, jnp.float32)
        single = obs.shape == obs_shape
        if not single and obs.shape[1:] != obs_shape:
            raise ValueError(
                f"act: expected an observation of shape {obs_shape} or a batch "
                f"[B, *{obs_shape}], got {obs.shape}"
            )
        flat = obs.reshape((1 if single else obs.shape[0], spec.obs_dim))
        if obs_stats is not None:
            flat = obs_stats.normalize(flat, clip=obs_clip)
        return flat, single

    def choose(dist_params, key, deterministic: bool):
        if deterministic:
            action = policy.deterministic_action(dist_params)
        else:
            action = policy.make_dist(dist_params).sample(seed=key)
        return policy.env_action(action, spec)

    def unbatch(action, single):
        return action[0] if single else action

    if cfg.network == "lstm":

        def initial_carry(batch_size: int | None = None):
            carry = network.initial_carry(1 if batch_size is None else batch_size)["actor"]
            return carry if batch_size is not None else jax.tree.map(lambda x: x[0], carry)

        def act_recurrent(obs, carry, key, deterministic: bool = False):
            flat, single = features(obs)
            batched = jax.tree.map(lambda x: x[None], carry) if single else carry
            reset = jnp.zeros((1, flat.shape[0]), bool)
            dist_params, batched = network.actor(params, flat[None], reset, batched)
            dist_params = jax.tree.map(lambda x: x[0], dist_params)
            action = choose(dist_params, key, deterministic)
            new_carry = jax.tree.map(lambda x: x[0], batched) if single else batched
            return unbatch(action, single), new_carry

        act_recurrent.initial_carry = initial_carry
        act_recurrent.recurrent = True
        return act_recurrent

    def act(obs, key, deterministic: bool = False):
        flat, single = features(obs)
        empty = network.initial_carry(flat.shape[0])["actor"]
        reset = jnp.zeros((1, flat.shape[0]), bool)
        dist_params, _ = network.actor(params, flat[None], reset, empty)
        dist_params = jax.tree.map(lambda x: x[0], dist_params)
        return unbatch(choose(dist_params, key, deterministic), single)

    act.recurrent = False
    return act
