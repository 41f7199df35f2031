"""Advantage estimation and advantage normalization.

Pure functions on time-major arrays `[T, ...]` (typically `[T, B]`, B the number
of environments). They take arrays and numbers only: never the config or a
network, so each can be tested alone (STYLE.md, convention 1).

- `gae`: generalized advantage estimation with explicit termination and
  episode-end flags (truncation bootstraps, termination does not).
- `normalize`: the advantage normalization variants.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

Array = chex.Array
Numeric = chex.Numeric

NORMALIZE_MODES = ("batch", "minibatch", "group", "robust", "scale", "none")


def _float_dtype(*arrays: Array) -> jnp.dtype:
    """The computation dtype: the inputs' common float type, at least float32."""
    return jnp.result_type(*arrays, jnp.float32)


def gae(
    rewards: Array,
    values: Array,
    next_values: Array,
    terminated: Array,
    done: Array,
    gamma: Numeric,
    gae_lambda: Numeric,
) -> tuple[Array, Array]:
    """Generalized advantage estimation with explicit termination and done flags.

    For each step t of a time-major rollout (Schulman et al. 2016,
    "High-Dimensional Continuous Control Using Generalized Advantage
    Estimation", https://arxiv.org/abs/1506.02438):

      δ_t = r_t + γ·(1 − terminated_t)·V(s_{t+1}) − V(s_t)
      A_t = δ_t + γλ·(1 − done_t)·A_{t+1},      A_T = 0,
      returns_t = A_t + V(s_t)                   (the λ-return targets).

    Following rlax, the discounting decisions are explicit inputs rather than
    guessed from a single "done" flag, and truncation is made explicit:

    - `terminated_t` cuts the bootstrap: a true terminal state has value 0.
    - `done_t` (= terminated_t OR truncated_t) cuts the recursion, so advantages
      never leak across an episode boundary (the next row belongs to a new
      episode after the auto-reset).
    - A truncated step (time limit, not terminal) is done but not terminated:
      it still bootstraps from `next_values_t` = V(final observation), the value
      of the true next observation *before* the auto-reset. Treating truncation
      as termination would bias the value of every state near the time limit
      towards 0.

    With `done == terminated` this is exactly rlax's
    `truncated_generalized_advantage_estimation` with
    `discount_t = γ·(1 − terminated_t)`.

    Example:
      >>> import jax.numpy as jnp
      >>> r = jnp.array([[1.0], [2.0]]); v = jnp.array([[0.5], [1.0]])
      >>> nv = jnp.array([[1.0], [3.0]]); f = jnp.zeros((2, 1), bool)
      >>> adv, ret = gae(r, v, nv, f, f, gamma=0.9, gae_lambda=0.8)
      >>> adv.shape
      (2, 1)

    Args:
      rewards: r_t, reward received after acting at step t, shape `[T, ...]`.
      values: V(s_t), value of the observation acted on at step t, `[T, ...]`.
      next_values: V(s_{t+1}), value of the true next observation (at a
        truncated step, of the final observation before the reset), `[T, ...]`.
      terminated: bool or float flags, 1 where s_{t+1} is terminal, `[T, ...]`.
      done: bool or float flags, terminated OR truncated, `[T, ...]`.
      gamma: scalar discount γ; may be a traced value.
      gae_lambda: scalar GAE mixing parameter λ; may be a traced value.

    Returns:
      `(advantages, returns)`, each of shape `[T, ...]` in the inputs' float
      dtype (at least float32).
    """
    if jnp.ndim(rewards) < 1:
        raise ValueError("gae needs time-major arrays [T, ...], got a scalar.")
    chex.assert_equal_shape([rewards, values, next_values, terminated, done])
    chex.assert_rank([gamma, gae_lambda], 0)
    dtype = _float_dtype(rewards, values, next_values)
    rewards, values, next_values = (jnp.asarray(x, dtype) for x in (rewards, values, next_values))
    gamma = jnp.asarray(gamma, dtype)
    gae_lambda = jnp.asarray(gae_lambda, dtype)

    bootstrap_t = gamma * (1.0 - jnp.asarray(terminated, dtype))
    continue_t = gamma * gae_lambda * (1.0 - jnp.asarray(done, dtype))
    delta_t = rewards + bootstrap_t * next_values - values

    def step(adv_tp1, inputs):
        delta, cont = inputs
        adv_t = delta + cont * adv_tp1
        return adv_t, adv_t

    _, advantages = jax.lax.scan(
        step, jnp.zeros_like(delta_t[0]), (delta_t, continue_t), reverse=True
    )
    return advantages, advantages + values


def _standardize(centered: Array, scale: Array, std_floor: Numeric) -> Array:
    """centered / scale where scale ≥ std_floor, else centered unchanged.

    The division uses a safe denominator, so the unselected branch never makes
    inf/NaN (neither in the value nor in its gradient).
    """
    small = scale < std_floor
    return jnp.where(small, centered, centered / jnp.where(small, 1.0, scale))


def _batch_normalize(x: Array, std_floor: Numeric) -> Array:
    """(x − mean(x)) / std(x) over all elements (ddof 0); only centers when
    std < std_floor."""
    return _standardize(x - jnp.mean(x), jnp.std(x), std_floor)


def _robust_normalize(x: Array, std_floor: Numeric) -> Array:
    """(x − median(x)) / IQR(x), IQR = q75 − q25 (linear interpolation); only
    centers on the median when IQR < std_floor."""
    q25, median, q75 = jnp.quantile(x, jnp.array([0.25, 0.5, 0.75], x.dtype))
    return _standardize(x - median, q75 - q25, std_floor)


def _scale_normalize(x: Array, std_floor: Numeric) -> Array:
    """x / max(std(x), std_floor): no centering, signs are preserved."""
    return x / jnp.maximum(jnp.std(x), std_floor)


def _resolve_num_groups(groups: Array, num_groups: int | None) -> int:
    """The static number of groups: given, or max(groups) + 1 of a concrete
    array."""
    if num_groups is not None:
        if not isinstance(num_groups, (int, np.integer)) or num_groups < 1:
            raise ValueError(f"num_groups must be a positive Python int, got {num_groups!r}.")
        return int(num_groups)
    try:
        concrete = np.asarray(groups)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError) as err:
        raise ValueError(
            "normalize(mode='group') under jit needs a static `num_groups`; "
            "`groups` is traced, so max(groups) + 1 cannot be computed."
        ) from err
    return int(concrete.max()) + 1


def _group_normalize(x: Array, groups: Array, num_groups: int, std_floor: Numeric) -> Array:
    """Batch normalization applied separately within each group id.

    For group g with elements x_g: (x_g − mean(x_g)) / std(x_g), ddof 0, with the
    floor rule per group. `groups` holds integer ids in [0, num_groups),
    broadcastable to `x`; computed with segment sums over a static number of
    segments, so it is jit-able.
    """
    ids = jnp.broadcast_to(jnp.asarray(groups), x.shape).reshape(-1)
    flat = x.reshape(-1)
    counts = jax.ops.segment_sum(jnp.ones_like(flat), ids, num_groups)
    counts = jnp.maximum(counts, 1.0)  # Empty groups: avoid 0 / 0.
    means = jax.ops.segment_sum(flat, ids, num_groups) / counts
    centered = flat - means[ids]
    stds = jnp.sqrt(jax.ops.segment_sum(centered**2, ids, num_groups) / counts)
    return _standardize(centered, stds[ids], std_floor).reshape(x.shape)


def normalize(
    adv: Array,
    mode: str,
    *,
    groups: Array | None = None,
    num_groups: int | None = None,
    std_floor: Numeric = 1e-2,
    clip: Numeric | None = 10.0,
) -> Array:
    """Normalizes advantages.

    Modes (`mode` is a static Python string):

    - "batch", "minibatch": (A − mean A) / std A over all elements of `adv`
      (std with ddof 0). Both compute the same thing; the caller decides whether
      `adv` is the whole rollout batch or one minibatch.
    - "group": the same, separately within each group id of `groups` (e.g.
      contiguous blocks of environment indices), each group by its own stats.
    - "robust": (A − median A) / IQR A, IQR = q75 − q25.
    - "scale": A / std A, no centering, so signs are preserved.
    - "none": `adv` returned unchanged (and not clipped).

    Std floor: where the std (the IQR for "robust") is below `std_floor`, the
    mode only centers instead of dividing (a near-constant batch is not blown
    up); "scale" divides by `std_floor` instead. Then, for every mode except
    "none", the result is clipped to [−clip, clip] unless `clip` is None.

    Example:
      >>> import jax.numpy as jnp
      >>> adv = jnp.array([[1.0, 10.0], [3.0, 30.0]])
      >>> out = normalize(adv, "group", groups=jnp.array([[0, 1]]))
      >>> out.tolist()
      [[-1.0, -1.0], [1.0, 1.0]]

    Args:
      adv: advantages of any shape, e.g. `[T, B]` or a flat minibatch `[M]`.
      mode: one of "batch", "minibatch", "group", "robust", "scale", "none".
      groups: integer group ids in [0, num_groups), broadcastable to `adv`
        (e.g. `[1, B]` or `[T, B]`); required for "group", ignored otherwise.
      num_groups: static number of groups for "group"; needed under jit. If None,
        `groups` must be concrete and max(groups) + 1 is used.
      std_floor: below this std (IQR for "robust") only center; may be traced.
      clip: symmetric clip of the result; None disables it; may be traced.

    Returns:
      The normalized advantages, same shape and dtype as `adv`.

    Raises:
      ValueError: unknown `mode`, or "group" without usable `groups` /
        `num_groups`.
    """
    if mode not in NORMALIZE_MODES:
        raise ValueError(
            f"Unknown advantage normalization mode {mode!r}; allowed modes are "
            f"{', '.join(repr(m) for m in NORMALIZE_MODES)}."
        )
    if mode == "none":
        return adv

    x = jnp.asarray(adv, _float_dtype(adv))
    if mode in ("batch", "minibatch"):
        out = _batch_normalize(x, std_floor)
    elif mode == "group":
        if groups is None:
            raise ValueError("normalize(mode='group') requires `groups`.")
        chex.assert_type(groups, int)
        out = _group_normalize(x, groups, _resolve_num_groups(groups, num_groups), std_floor)
    elif mode == "robust":
        out = _robust_normalize(x, std_floor)
    else:  # "scale"
        out = _scale_normalize(x, std_floor)

    if clip is not None:
        out = jnp.clip(out, -clip, clip)
    chex.assert_equal_shape([out, x])
    return out.astype(jnp.asarray(adv).dtype)
