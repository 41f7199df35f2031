"""The optimizer: per-network gradient clipping and Adam, with traced hyperparameters.

Actor and critic are separate networks with separate optimizer chains (`optax.multi_transform`),
each clipped to `max_grad_norm` by its own global norm. So a huge value loss (rewards in the
thousands) cannot shrink the policy's step, and `critic_learning_rate` gives the critic its
own step size. The whole update is skipped, and counted, when any gradient is non-finite
(`optax.apply_if_finite`).

With `vgs` on, each chain is clip → Adam → variance gradient scaler → learning rate:

- after Adam, because Adam divides by its running RMS and so undoes any scale applied to
  its input that stays constant over its horizon; placed after it, the scale shrinks the
  step itself;
- before the learning rate, because the learning rate is annealed: scaled by it first, the
  updates the scaler averages would shrink from one update to the next, and that drift
  would read as variance, while near the end of the run the tiny squared means would fall
  below `vgs_eps` and switch the scaling off; the scale would follow the schedule rather
  than the gradients' noise;
- inside `apply_if_finite` (it wraps the whole chain), because a non-finite gradient would
  otherwise enter the scaler's moving averages and leave them NaN for good; a skipped step
  keeps the previous statistics, as it keeps Adam's moments.

The transformation is rebuilt inside the traced update from the current hyperparameters
(learning rates, clip norm and the scaler's numbers may be traced values of a sweep or a PBT
population); its state's structure depends only on the static `vgs` and `vgs_per_element`,
so `init_opt_state` builds it with the config's values as placeholders.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from jppo.config import PPOConfig
from jppo.types import Hyperparams

# apply_if_finite gives up after this many consecutive non-finite steps; we never want that.
_NEVER_GIVE_UP = 2**30


def make_optimizer(
    hp, actor_lr, critic_lr, *, vgs: bool, vgs_per_element: bool
) -> optax.GradientTransformation:
    """Clip-by-global-norm + Adam(eps=1e-5) [+ VGS] + learning rate, one chain per network.

    Args:
      hp: the traced hyperparameters (a `Hyperparams`); reads `max_grad_norm` (the
        global-norm bound applied to each network's gradients separately) and, with `vgs`,
        `vgs_alpha`, `vgs_beta`, `vgs_eps`, `vgs_min_scale`.
      actor_lr, critic_lr: this update's learning rates (scalars; may be traced).
      vgs: static; chain `variance_gradient_scaler` between Adam and the learning rate.
      vgs_per_element: static; the scaler's element-wise statistics.
    Returns:
      a transformation over params {"actor": ..., "critic": ...}.

    Example:
      >>> import jppo
      >>> cfg = jppo.PPOConfig(vgs=True)
      >>> hp = jppo.Hyperparams.from_config(cfg)
      >>> tx = make_optimizer(hp, 1e-3, 1e-3, vgs=cfg.vgs, vgs_per_element=cfg.vgs_per_element)
    """

    def chain(lr):
        scaler = []
        if vgs:
            scaler = [
                variance_gradient_scaler(
                    hp.vgs_alpha, hp.vgs_beta, hp.vgs_eps, hp.vgs_min_scale, vgs_per_element
                )
            ]
        return optax.chain(
            optax.clip_by_global_norm(hp.max_grad_norm),
            optax.scale_by_adam(eps=1e-5),
            *scaler,
            optax.scale_by_learning_rate(lr),
        )

    labels = {"actor": "actor", "critic": "critic"}
    tx = optax.multi_transform(
        {"actor": chain(actor_lr), "critic": chain(critic_lr)},
        lambda params: {k: labels[k] for k in params},
    )
    tx = optax.apply_if_finite(tx, _NEVER_GIVE_UP)
    # Without the scaler (whose statistics are per tensor) every step of the chain is
    # elementwise or a norm over a whole network, so the chain, and the finiteness check
    # around it, run on each network's parameters raveled into one vector: the same numbers
    # in a few large kernels instead of a few small ones per tensor. On CPU at small
    # minibatches each kernel costs about the same whatever its size, and the per-tensor
    # check alone was three kernels per tensor (benchmarks/NOTES.md).
    return tx if vgs else per_network_vectors(tx)


def ravel_networks(tree: dict) -> dict:
    """{network: pytree} -> {network: [n] vector}: each network's leaves raveled and
    concatenated in `jax.tree.leaves` order (float32 parameters and gradients)."""
    return {k: ravel_pytree(v)[0] for k, v in tree.items()}


def _unravel_networks(flat: dict, like: dict) -> dict:
    """Inverse of `ravel_networks`: vectors back into the shapes and structure of `like`."""
    return {k: ravel_pytree(v)[1](flat[k]) for k, v in like.items()}


def per_network_vectors(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """`inner` applied to `ravel_networks` of params, gradients and updates.

    Like `optax.flatten`, but one vector per network (so `multi_transform` still tells actor
    from critic, and per-network norms stay per network); the state is `inner`'s own.
    """

    def init(params):
        return inner.init(ravel_networks(params))

    def update(updates, state, params=None):
        flat_params = None if params is None else ravel_networks(params)
        flat, state = inner.update(ravel_networks(updates), state, flat_params)
        return _unravel_networks(flat, updates), state

    return optax.GradientTransformation(init, update)


def global_norm(grads: dict) -> jax.Array:
    """L2 norm of all gradients, computed on `ravel_networks` (the vectors the optimizer
    ravels too, so the compiler shares them): two reductions instead of one per tensor."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(v)) for v in ravel_networks(grads).values()))


def make_optimizer_for(
    cfg: PPOConfig, hp: Hyperparams, actor_lr, critic_lr
) -> optax.GradientTransformation:
    """`make_optimizer` with the static switches read from the config `cfg`."""
    return make_optimizer(hp, actor_lr, critic_lr, vgs=cfg.vgs, vgs_per_element=cfg.vgs_per_element)


def init_opt_state(params, cfg: PPOConfig | None = None):
    """Optimizer state for `params` under the config `cfg` (None: the default config, which
    has no scaler).

    The structure depends only on `cfg.vgs` and `cfg.vgs_per_element`; the config's numbers
    are placeholders (the update rebuilds the transformation from the traced ones).
    """
    cfg = PPOConfig() if cfg is None else cfg
    return make_optimizer_for(cfg, Hyperparams.from_config(cfg), 1.0, 1.0).init(params)


def check_opt_state(tx: optax.GradientTransformation, params, opt_state) -> None:
    """Raise unless `opt_state` has the structure and leaf shapes `tx.init(params)` gives.

    Without this, a state built for another config (without the scaler's statistics, or
    with per-tensor ones where per-element ones are expected) fails deep inside optax or
    `lax.scan` with an unrelated-looking tree or shape mismatch.
    """
    abstract = lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))
    want = jax.eval_shape(tx.init, jax.tree.map(abstract, params))
    same = jax.tree.structure(opt_state) == jax.tree.structure(want) and all(
        jnp.shape(a) == b.shape
        for a, b in zip(jax.tree.leaves(opt_state), jax.tree.leaves(want), strict=True)
    )
    if not same:
        raise ValueError(
            "the optimizer state does not match the optimizer; build it with "
            "init_opt_state(params, cfg) for the same config (vgs and vgs_per_element fix "
            "its structure)"
        )


def nonfinite_grad_count(opt_state) -> jax.Array:
    """Total number of skipped non-finite gradient steps so far."""
    return opt_state.total_notfinite


# -- variance gradient scaler -------------------------------------------------------------


class VarianceGradientScalerState(NamedTuple):
    """Running statistics of `variance_gradient_scaler`, one entry per parameter tensor."""

    count: jax.Array  # [] int32, updates seen; the EMAs start at 0 and are bias-corrected by it
    mean: Any  # params-shaped pytree, float32 leaves: [] EMA of the tensor-mean gradient
    # (per_element=True: leaves of the tensor's shape, EMA of each element's gradient)
    mean_sq: Any  # same structure, EMA of the square of the same quantity


def variance_gradient_scaler(
    alpha=1.0, beta=0.99, eps=1e-8, min_scale=0.1, per_element=False
) -> optax.GradientTransformation:
    """Shrink the gradient of tensors whose mean gradient is noisy over time.

    For each parameter tensor with gradient g_t at update t, let ḡ_t = mean(g_t) over the
    tensor's elements. With bias-corrected exponential moving averages (decay β, started at 0)

        m_t = EMA_β(ḡ)_t / (1 − β^t),    s_t = EMA_β(ḡ²)_t / (1 − β^t),
        v_t = max(s_t − m_t², 0) / (m_t² + ε),
        g_t ← g_t · clip(1 / (1 + α·v_t), min_scale, 1).

    v_t is the temporal variance of the tensor's mean gradient relative to its squared mean
    (an inverse signal-to-noise ratio). The current gradient enters the averages before the
    scale is computed, and the bias correction makes the first update's v exactly 0 (scale 1)
    instead of letting the zero start look like a huge variance.

    What it cannot see: noise that cancels inside a tensor. If elements fluctuate in opposite
    directions (anticorrelated noise, e.g. symmetric filters or normalization layers), ḡ stays
    steady and v stays small however noisy each element is. `per_element=True` tracks the
    same statistics for every element (m, s and the scale are element-wise), which sees that
    noise at the cost of two float32 arrays the size of the parameters (O(params) memory, the
    same as Adam's moments) instead of two scalars per tensor.

    Placement: before Adam, a scale that stays constant is undone by Adam's normalization
    (m/√v is invariant to rescaling its input), so only changes of the scale within Adam's
    second-moment horizon act; after `optax.scale_by_adam` it scales the step directly (and
    then measures Adam's updates rather than the raw gradients).

    Defaults: α = 1 halves the step of a tensor whose mean gradient's temporal std equals its
    mean; β = 0.99 averages over about 100 updates (a few PPO iterations of minibatch steps);
    ε = 1e-8 only matters for mean gradients below √ε = 1e-4, where v becomes an absolute
    variance and the scaler backs off instead of dividing by ~0; min_scale = 0.1 keeps even
    the noisiest tensor learning at a tenth of its step.

    Args:
      alpha: strength α ≥ 0 (0 disables the scaling).
      beta: EMA decay β in [0, 1).
      eps: ε > 0 added to m² in the denominator.
      min_scale: lower bound of the scale, in (0, 1].
      per_element: static flag; element-wise statistics instead of per-tensor means.
        alpha, beta, eps and min_scale may be traced scalars (a sweep can vmap over them).

    Returns:
      an `optax.GradientTransformation` with state `VarianceGradientScalerState`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = optax.chain(variance_gradient_scaler(alpha=1.0), optax.adam(1e-3))
      >>> state = tx.init({"w": jnp.zeros(3)})
    """
    reduce = (lambda g: g) if per_element else jnp.mean

    def init_fn(params):
        def zeros(p):
            return jnp.zeros(jnp.shape(p) if per_element else (), jnp.float32)

        stats = jax.tree.map(zeros, params)
        return VarianceGradientScalerState(jnp.zeros([], jnp.int32), stats, stats)

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_int32_increment(state.count)
        g_bar = jax.tree.map(lambda g: reduce(g.astype(jnp.float32)), updates)
        mean = jax.tree.map(lambda m, x: beta * m + (1 - beta) * x, state.mean, g_bar)
        mean_sq = jax.tree.map(lambda s, x: beta * s + (1 - beta) * x * x, state.mean_sq, g_bar)
        debias = 1.0 - jnp.power(beta, count.astype(jnp.float32))

        def scale(g, m, s):
            c = _variance_scale(m / debias, s / debias, alpha, eps, min_scale)
            return (g * c).astype(g.dtype)

        updates = jax.tree.map(scale, updates, mean, mean_sq)
        return updates, VarianceGradientScalerState(count, mean, mean_sq)

    return optax.GradientTransformation(init_fn, update_fn)


def _variance_scale(mean, mean_sq, alpha, eps, min_scale):
    """clip(1 / (1 + α·v), min_scale, 1) with v = max(s − m², 0) / (m² + ε)."""
    v = jnp.maximum(mean_sq - jnp.square(mean), 0.0) / (jnp.square(mean) + eps)
    return jnp.clip(1.0 / (1.0 + alpha * v), min_scale, 1.0)
