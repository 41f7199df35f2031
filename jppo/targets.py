"""From a rollout to the learner's batch: GAE, value targets, advantage normalization.

The stage between the rollout and the losses. Values enter GAE in the environment's reward
units (denormalized with the statistics the rollout used); the critic's targets leave in its
own units (normalized with statistics that already include this batch, so the critic never
learns against last update's scale). The quantile critic adds a risk-sensitive baseline.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jppo import advantages as adv_lib
from jppo import losses
from jppo.config import PPOConfig
from jppo.types import Batch, Hyperparams, Transition


def risk_baseline(value_pred, hp: Hyperparams, cfg: PPOConfig, cvar=None):
    """(value used by the policy's GAE, mean value used for the critic's targets).

    Quantile critic [..., N]: (1 − w)·mean + w·CVaR_α, w = risk_weight, so a positive weight
    makes the policy prefer outcomes with a better lower tail while the critic keeps
    learning the mean. CVaR is the quantile critic's main cost, so it is skipped at run time
    when w = 0, unless already computed (`cvar` [...]). Scalar critic: the value itself.
    """
    if cfg.critic != "quantile":
        return value_pred, value_pred
    mean = jnp.mean(value_pred, axis=-1)
    w = hp.risk_weight
    if cvar is not None:
        return (1.0 - w) * mean + w * cvar, mean
    risky = jax.lax.cond(
        w == 0, lambda: mean, lambda: (1.0 - w) * mean + w * losses.cvar(value_pred, hp.cvar_alpha)
    )
    return risky, mean


def explained_variance(pred: jax.Array, target: jax.Array) -> jax.Array:
    """1 − Var(target − pred) / Var(target); 0 when the targets are constant."""
    var = jnp.var(target)
    return jnp.where(var > 0, 1.0 - jnp.var(target - pred) / jnp.maximum(var, 1e-12), 0.0)


def normalize_advantages(cfg: PPOConfig, raw_adv: jax.Array, hp: Hyperparams) -> jax.Array:
    """Batch-level advantage normalization [T, B] ("minibatch" is done per minibatch)."""
    if cfg.adv_norm in ("minibatch", "none"):
        return raw_adv
    groups, num_groups = None, None
    if cfg.adv_norm == "group":  # contiguous blocks of env indices
        num_groups = cfg.num_adv_groups
        groups = (jnp.arange(cfg.num_envs) // (cfg.num_envs // num_groups))[None]
    return adv_lib.normalize(
        raw_adv,
        cfg.adv_norm,
        groups=groups,
        num_groups=num_groups,
        std_floor=hp.adv_std_floor,
        clip=hp.adv_clip,
    )


def make_batch(cfg: PPOConfig, traj: Transition, hp: Hyperparams, value_stats):
    """GAE, value targets (and their statistics) and batch-level advantage normalization.

    Args:
      traj: the rollout [T, B, ...]; value predictions in the critic's (normalized) units.
      value_stats: RunningMeanStd of value targets, or None (normalize_value_targets off).
    Returns:
      (Batch, updated value statistics, metrics dict of scalars).
    """
    denorm = (lambda x: x) if value_stats is None else value_stats.denormalize
    cvar = None  # CVaR_α of the quantiles [T, B]: the value_cvar metric and the baseline
    if cfg.critic == "quantile":
        cvar = losses.cvar(denorm(traj.value_pred), hp.cvar_alpha)
    baseline, mean_value = risk_baseline(denorm(traj.value_pred), hp, cfg, cvar)
    next_baseline, next_mean = risk_baseline(denorm(traj.next_value_pred), hp, cfg)

    def gae(v, next_v):
        return adv_lib.gae(
            traj.reward, v, next_v, traj.terminated, traj.done, hp.gamma, hp.gae_lambda
        )

    raw_adv, targets = gae(baseline, next_baseline)
    if cfg.critic == "quantile":  # the critic learns the λ-returns of its mean value
        _, targets = gae(mean_value, next_mean)
    old_pred, critic_targets = traj.value_pred, targets
    if value_stats is not None:  # statistics include this batch BEFORE its loss: no lag
        value_stats = value_stats.update(targets)
        old_pred = value_stats.normalize(denorm(traj.value_pred))
        critic_targets = value_stats.normalize(targets)

    batch = Batch(
        obs=traj.obs,
        episode_start=traj.episode_start,
        action=traj.action,
        log_prob=traj.log_prob,
        dist_params=traj.dist_params,
        value_pred=old_pred,
        advantages=normalize_advantages(cfg, raw_adv, hp),
        raw_advantages=raw_adv,
        targets=critic_targets,
    )
    metrics = {
        "adv_mean": jnp.mean(raw_adv),
        "adv_std": jnp.std(raw_adv),
        "value_mean": jnp.mean(mean_value),
        "return_mean": jnp.mean(targets),
        "explained_variance": explained_variance(mean_value, targets),
    }
    if cfg.critic == "quantile":
        metrics["value_cvar"] = jnp.mean(cvar)
    return batch, value_stats, metrics
