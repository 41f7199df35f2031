"""The optimizer: per-network gradient clipping and Adam, with traced hyperparameters.

Actor and critic are separate networks with separate optimizer chains (`optax.multi_transform`),
each clipped to `max_grad_norm` by its own global norm. So a huge value loss (rewards in the
thousands, seeds/kl_explosion) cannot shrink the policy's step, and `critic_learning_rate`
gives the critic its own step size. The whole update is skipped, and counted, when any
gradient is non-finite (`optax.apply_if_finite`).

The transformation is rebuilt inside the traced update from the current hyperparameters
(learning rates and clip norm may be traced values of a sweep or a PBT population); its
state's structure does not depend on them, so `init_opt_state` builds it with placeholders.
"""

from __future__ import annotations

import jax
import optax

# apply_if_finite gives up after this many consecutive non-finite steps; we never want that.
_NEVER_GIVE_UP = 2**30


def make_optimizer(max_grad_norm, actor_lr, critic_lr) -> optax.GradientTransformation:
    """Clip-by-global-norm + Adam(eps=1e-5) + learning rate, one chain per network.

    Args:
      max_grad_norm: global-norm bound applied to each network's gradients separately.
      actor_lr, critic_lr: learning rates (scalars; may be traced).
    Returns:
      a transformation over params {"actor": ..., "critic": ...}.
    """

    def chain(lr):
        return optax.chain(optax.clip_by_global_norm(max_grad_norm),
                           optax.scale_by_adam(eps=1e-5),
                           optax.scale_by_learning_rate(lr))

    labels = {"actor": "actor", "critic": "critic"}
    tx = optax.multi_transform({"actor": chain(actor_lr), "critic": chain(critic_lr)},
                               lambda params: {k: labels[k] for k in params})
    return optax.apply_if_finite(tx, _NEVER_GIVE_UP)


def init_opt_state(params):
    """Optimizer state for `params` (structure independent of the hyperparameter values)."""
    return make_optimizer(1.0, 1.0, 1.0).init(params)


def nonfinite_grad_count(opt_state) -> jax.Array:
    """Total number of skipped non-finite gradient steps so far."""
    return opt_state.total_notfinite


def per_network_grad_norms(grads) -> dict[str, jax.Array]:
    return {k: optax.tree.norm(g) for k, g in grads.items()}
