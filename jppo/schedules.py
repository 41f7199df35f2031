"""What changes over a run besides the parameters: scheduled coefficients and adaptive rules.

Schedules are functions of the update counter `step` and the run length `num_updates`, both
known to any chunk of a run, so a run split into chunks follows the same schedule as one
uninterrupted run. The adaptive rules change traced hyperparameters after each update and
carry them in `Learner.hyperparams`, so they travel with the learner (a population exploit
copies them, a checkpoint keeps them).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jppo.config import PPOConfig
from jppo.types import Coefs, Hyperparams

# Adaptive clip range: widen when many samples are clipped (the policy wants to move more
# than the range allows), narrow when few are (the range no longer constrains anything).
CLIP_WIDEN_ABOVE = 0.3  # clip fraction above which clip_eps grows
CLIP_NARROW_BELOW = 0.1  # clip fraction below which clip_eps shrinks
CLIP_WIDEN_FACTOR = 1.1
CLIP_NARROW_FACTOR = 0.9
CLIP_EPS_BOUNDS = (0.05, 0.5)

# Adaptive behaviour cloning: shrink bc_coef while the cloning term outweighs the PPO term
# by more than max_bc_ratio. The floor keeps cloning from being switched off entirely by the
# rule; it bounds only the shrinking, never raises a coefficient the user set below it.
BC_SHRINK_FACTOR = 0.9
BC_COEF_FLOOR = 0.01


def coefficients(cfg: PPOConfig, hp: Hyperparams, step: jax.Array) -> Coefs:
    """This update's learning rates and loss coefficients (optax schedules over updates).

    Learning rates anneal linearly to 0 over `num_updates` (`anneal_lr`); the entropy
    coefficient moves linearly to `ent_coef_final` when set and never drops below
    `ent_coef_min`; `vf_coef` warms down from `vf_coef_init` over the first
    `vf_warmup_fraction` of the run when set.
    """
    n = cfg.num_updates
    lr_frac = optax.linear_schedule(1.0, 0.0, n)(step) if cfg.anneal_lr else 1.0
    critic_lr = hp.learning_rate if hp.critic_learning_rate is None else hp.critic_learning_rate
    ent = hp.ent_coef
    if hp.ent_coef_final is not None:
        ent = optax.linear_schedule(hp.ent_coef, hp.ent_coef_final, n)(step)
    vf = hp.vf_coef
    if hp.vf_coef_init is not None:
        warm = max(1, round(cfg.vf_warmup_fraction * n))
        vf = optax.linear_schedule(hp.vf_coef_init, hp.vf_coef, warm)(step)
    bc = jnp.zeros(()) if hp.bc_coef is None else hp.bc_coef
    return Coefs(
        learning_rate=hp.learning_rate * lr_frac,
        critic_learning_rate=critic_lr * lr_frac,
        ent_coef=jnp.maximum(ent, hp.ent_coef_min),
        vf_coef=vf,
        bc_coef=bc,
    )


def adapt_clip_eps(clip_eps: jax.Array, clip_fraction: jax.Array) -> jax.Array:
    """The adaptive clip range's next value, within `CLIP_EPS_BOUNDS`."""
    factor = jnp.where(
        clip_fraction > CLIP_WIDEN_ABOVE,
        CLIP_WIDEN_FACTOR,
        jnp.where(clip_fraction < CLIP_NARROW_BELOW, CLIP_NARROW_FACTOR, 1.0),
    )
    return jnp.clip(clip_eps * factor, *CLIP_EPS_BOUNDS)


def adapt_bc_coef(
    bc_coef: jax.Array, bc_ppo_ratio: jax.Array, max_bc_ratio: jax.Array
) -> jax.Array:
    """The adaptive BC coefficient's next value: ×`BC_SHRINK_FACTOR` while the ratio exceeds
    `max_bc_ratio`, not below `BC_COEF_FLOOR` (or below itself, if it already is)."""
    floor = jnp.minimum(bc_coef, BC_COEF_FLOOR)
    shrunk = jnp.maximum(bc_coef * BC_SHRINK_FACTOR, floor)
    return jnp.where(bc_ppo_ratio > max_bc_ratio, shrunk, bc_coef)


def adapt(cfg: PPOConfig, hp: Hyperparams, metrics: dict) -> Hyperparams:
    """The hyperparameters after one update's adaptive rules (unchanged when they are off)."""
    if cfg.adaptive_clip:
        hp = hp._replace(clip_eps=adapt_clip_eps(hp.clip_eps, metrics["clip_fraction"]))
    if cfg.adaptive_bc and cfg.bc_coef is not None:
        hp = hp._replace(
            bc_coef=adapt_bc_coef(hp.bc_coef, metrics["bc_ppo_ratio"], hp.max_bc_ratio)
        )
    return hp
