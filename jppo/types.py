"""Every state type of jppo, declared once (NamedTuples: pytrees that jit, vmap and save).

Shapes: B = num_envs, T = num_steps, D = flat observation size, A = action size, N = number
of quantiles, H = lstm_size. A population or seed axis appears only through vmap.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jppo.config import TRACED_FIELDS, PPOConfig


class Hyperparams(NamedTuple):
    """Traced numeric hyperparameters (float32 scalars; None = feature statically off).

    Field names and meanings are those of `PPOConfig`. Vmapping over a `Hyperparams` whose
    leaves have a leading axis runs a sweep without recompiling. `clip_eps` and `bc_coef`
    are also adapted during training when `adaptive_clip` / `adaptive_bc` are on.
    """

    learning_rate: Any
    critic_learning_rate: Any
    gamma: Any
    gae_lambda: Any
    clip_eps: Any
    log_ratio_clip: Any
    ent_coef: Any
    ent_coef_final: Any
    ent_coef_min: Any
    vf_coef: Any
    vf_coef_init: Any
    huber_delta: Any
    vf_clip: Any
    max_grad_norm: Any
    target_kl: Any
    adv_std_floor: Any
    adv_clip: Any
    quantile_kappa: Any
    cvar_alpha: Any
    risk_weight: Any
    obs_clip: Any
    reward_clip: Any
    bc_coef: Any
    awr_beta: Any
    awr_max_weight: Any
    max_bc_ratio: Any

    @classmethod
    def from_config(cls, cfg: PPOConfig, **overrides) -> "Hyperparams":
        """The config's values (or `overrides`, e.g. arrays for a sweep) as float32 leaves."""
        values = {**cfg.hyperparams(), **overrides}
        return cls(**{k: None if values[k] is None else jnp.asarray(values[k], jnp.float32)
                      for k in TRACED_FIELDS})


assert Hyperparams._fields == TRACED_FIELDS


class EpisodeStats(NamedTuple):
    """Undiscounted episode statistics kept inside the compiled loop (LogWrapper-style)."""

    returns: jax.Array  # [B] float32, return of each env's running episode so far
    lengths: jax.Array  # [B] int32, steps of each env's running episode so far
    last_return: jax.Array  # [] mean return of the episodes that ended most recently
    last_length: jax.Array  # [] their mean length


class NormState(NamedTuple):
    """Normalization statistics; each None when its feature is off (see jppo.normalize)."""

    obs: Any  # RunningMeanStd over [D] or None
    reward: Any  # RewardNormState (per-env return accumulators [B] + scalar stats) or None
    value: Any  # RunningMeanStd over scalars (value targets) or None


class TrainState(NamedTuple):
    """Everything needed to continue a run; a checkpoint of it resumes exactly."""

    params: Any  # {"actor": ..., "critic": ...}
    opt_state: Any  # optax state of jppo.optim.make_optimizer
    norm: NormState
    hyperparams: Hyperparams
    env_state: Any  # batched gymnax state [B, ...]
    obs: jax.Array  # [B, D] float32, last raw observation of each env
    episode_start: jax.Array  # [B] bool, True where obs begins a new episode
    carry: Any  # recurrent carries {"actor": (c, h), "critic": (c, h)}, each [B, H]; {} for MLP
    episodes: EpisodeStats
    rng: jax.Array  # PRNG key
    step: jax.Array  # [] int32, updates done so far


class Transition(NamedTuple):
    """One rollout, time-major [T, B, ...]."""

    obs: jax.Array  # [T, B, D] observation as the policy saw it (normalized if enabled)
    episode_start: jax.Array  # [T, B] bool, obs_t begins an episode (recurrent reset flag)
    action: jax.Array  # [T, B] int32 or [T, B, A] float32 (unclipped sample)
    log_prob: jax.Array  # [T, B]
    dist_params: Any  # {"logits": [T, B, A]} or {"mean", "log_std": [T, B, A]}
    value_pred: jax.Array  # [T, B] or [T, B, N]: critic output (normalized units if enabled)
    reward: jax.Array  # [T, B] reward used for learning (normalized if enabled)
    terminated: jax.Array  # [T, B] bool
    done: jax.Array  # [T, B] bool, terminated or truncated
    next_value_pred: jax.Array  # [T, B] or [T, B, N]: critic output at the true next obs


class TrainResult(NamedTuple):
    """What `train` returns: the final state and per-update metrics ([num_updates] each)."""

    state: TrainState
    metrics: dict[str, jax.Array]
