"""PPO losses: clipped surrogate, KL estimates, value and quantile losses.

Pure functions of arrays, distrax distributions and numbers: never the config
or a network (STYLE.md, convention 1). Numbers may be traced jax scalars
(a sweep varies them), so no Python branching happens on them; `None` for an
optional feature is static and switches that feature off.

- `clipped_surrogate`: PPO's clipped objective with a clamped log-ratio and
  non-finite ratios replaced and counted.
- `kl`: per-sample KL(old ‖ new) by the k1, k3 or exact estimator.
- `value_loss`: MSE, Huber or their mix, with optional value clipping.
- `quantile_huber_loss`, `quantile_midpoints`, `cvar`, `clip_quantiles`,
  `quantile_value_loss`: the distributional (quantile) critic.
- `awr_bc_loss`: advantage-weighted behaviour cloning.
"""

from __future__ import annotations

import chex
import distrax
import jax
import jax.numpy as jnp

Array = chex.Array
Numeric = chex.Numeric

KL_ESTIMATORS = ("k1", "k3", "exact")
VALUE_LOSS_KINDS = ("mse", "huber", "mse_huber")
QUANTILE_CLIP_MODES = ("mean_shift", "per_quantile")


def _float_dtype(*arrays: Array) -> jnp.dtype:
    """The computation dtype: the inputs' common float type, at least float32."""
    return jnp.result_type(*arrays, jnp.float32)


def _huber(x: Array, delta: Numeric) -> Array:
    """Huber_δ(x) = 0.5·x² for |x| ≤ δ, δ·(|x| − 0.5·δ) beyond.

    Written as 0.5·q² + δ·(|x| − q) with q = min(|x|, δ): no branch, so the
    gradient is finite everywhere (optax.huber_loss / rlax.huber_loss semantics,
    not divided by δ). δ = 0 gives 0; callers wanting |x| at δ = 0 select it.
    """
    abs_x = jnp.abs(x)
    quadratic = jnp.minimum(abs_x, delta)
    return 0.5 * quadratic**2 + delta * (abs_x - quadratic)


# ----------------------------------------------------------------------------
# Policy loss.


def clipped_surrogate(
    log_prob: Array,
    old_log_prob: Array,
    adv: Array,
    clip_eps: Numeric,
    log_ratio_clip: Numeric | None,
) -> tuple[Array, dict[str, Array]]:
    """PPO's clipped surrogate loss with a clamped log-ratio.

    Schulman et al. 2017, "Proximal Policy Optimization Algorithms"
    (https://arxiv.org/abs/1707.06347), eq. 7, as a loss to minimize:

      r = exp(clip(log π(a|s) − log π_old(a|s), −c, c))
      loss = −mean(min(r·A, clip(r, 1 − ε, 1 + ε)·A))

    The clamp c (`log_ratio_clip`) keeps r ≤ e^c:
    without it a log-ratio of ~89 already overflows float32 exp, and then r·A
    and the gradient A·r·∂log π become inf/NaN. Where the log-ratio itself is
    non-finite (NaN/±inf log-probs), or the clamped ratio still overflows (only
    possible for c ≳ 88), the ratio is replaced by 1 (the sample counts as
    unchanged) and counted. The replacement is a "double where": the log-ratio is
    zeroed *before* exp, so the gradient there is exactly 0, not NaN.

    `log_ratio_clip=None` switches the clamp off. That is the unprotected
    reference mode (for tests and comparisons): non-finite log-probs are still
    replaced, but an overflowing exp is left alone and shows up as an infinite
    `ratio_max`, an inf/NaN loss or gradient, and `nonfinite_ratio_count`.

    Example:
      >>> import jax.numpy as jnp
      >>> lp = jnp.array([-1.0, -2.0]); old = jnp.array([-1.1, -1.5])
      >>> adv = jnp.array([1.0, -1.0])
      >>> loss, aux = clipped_surrogate(lp, old, adv, 0.2, 10.0)
      >>> sorted(aux)[:2]
      ['clip_fraction', 'log_ratio_clamped_fraction']

    Args:
      log_prob: log π(a|s) under the current policy, any shape (e.g. `[M]`).
      old_log_prob: log π_old(a|s) stored in the rollout, same shape.
      adv: advantages A, same shape.
      clip_eps: ε, scalar, may be traced.
      log_ratio_clip: c, scalar (may be traced), or None for no clamp.

    Returns:
      `(loss, aux)`: the scalar loss and a dict of scalars: `ratio_mean`,
      `ratio_min`, `ratio_max`, `clip_fraction` (fraction with |r − 1| > ε),
      `log_ratio_clamped_fraction` (fraction of finite log-ratios with
      |log-ratio| > c; 0 without a clamp), `nonfinite_ratio_count` (float count
      of replaced or overflowed ratios).
    """
    chex.assert_equal_shape([log_prob, old_log_prob, adv])
    chex.assert_rank(clip_eps, 0)
    dtype = _float_dtype(log_prob, old_log_prob, adv)
    log_prob, old_log_prob, adv = (jnp.asarray(x, dtype) for x in (log_prob, old_log_prob, adv))

    log_ratio = log_prob - old_log_prob
    bad = ~jnp.isfinite(log_ratio)
    log_ratio = jnp.where(bad, 0.0, log_ratio)  # First where: safe before exp.
    if log_ratio_clip is None:
        clamped_fraction = jnp.zeros((), dtype)
    else:
        chex.assert_rank(log_ratio_clip, 0)
        clamped_fraction = jnp.mean(jnp.abs(log_ratio) > log_ratio_clip, dtype=dtype)
        log_ratio = jnp.clip(log_ratio, -log_ratio_clip, log_ratio_clip)
        overflow = ~jnp.isfinite(jnp.exp(jax.lax.stop_gradient(log_ratio)))
        bad = bad | overflow
        log_ratio = jnp.where(overflow, 0.0, log_ratio)
    ratio = jnp.exp(log_ratio)  # = 1, with zero gradient, at replaced samples.

    surrogate = ratio * adv
    surrogate_clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv
    loss = -jnp.mean(jnp.minimum(surrogate, surrogate_clipped))

    stats = jax.lax.stop_gradient(ratio)
    aux = dict(
        ratio_mean=jnp.mean(stats),
        ratio_min=jnp.min(stats),
        ratio_max=jnp.max(stats),
        clip_fraction=jnp.mean(jnp.abs(stats - 1.0) > clip_eps, dtype=dtype),
        log_ratio_clamped_fraction=clamped_fraction,
        nonfinite_ratio_count=jnp.sum(bad | ~jnp.isfinite(stats), dtype=dtype),
    )
    return loss, aux


def kl(
    old_dist: distrax.Distribution | None,
    new_dist: distrax.Distribution | None,
    old_log_prob: Array | None,
    new_log_prob: Array | None,
    estimator: str = "k3",
) -> Array:
    """Per-sample estimates of KL(π_old ‖ π_new) for actions a ~ π_old.

    With log r = log π_new(a) − log π_old(a) (Schulman 2020, "Approximating KL
    Divergence", http://joschu.net/blog/kl-approx.html):

      "k1":    −log r = log π_old(a) − log π_new(a)  (unbiased, may be < 0)
      "k3":    (r − 1) − log r                       (unbiased, always ≥ 0;
               computed as expm1(log r) − log r for accuracy near r = 1)
      "exact": KL(π_old ‖ π_new), distrax's analytic KL of the distributions;
               e.g. KL(N(0, 1) ‖ N(0, 2)) = log 2 + 1/8 − 1/2 ≈ 0.3181.
               For `distrax.MultivariateNormalDiag` it is
               summed over the action dimensions.

    "k1" and "k3" use only the log-probs, "exact" only the distributions (the
    others may then be None).

    Example:
      >>> import jax.numpy as jnp
      >>> kl(None, None, jnp.array([-1.0]), jnp.array([-1.5]), "k1")
      Array([0.5], dtype=float32)

    Args:
      old_dist: π_old(·|s), batch shape that of the log-probs (for "exact").
      new_dist: π_new(·|s), same batch shape (for "exact").
      old_log_prob: log π_old(a|s), any shape (for "k1", "k3").
      new_log_prob: log π_new(a|s), same shape (for "k1", "k3").
      estimator: "k1", "k3" or "exact" (static).

    Returns:
      Per-sample KL estimates, shape of the log-probs (of the distributions'
      batch shape for "exact").

    Raises:
      ValueError: for an unknown estimator.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"estimator={estimator!r} is not one of {KL_ESTIMATORS}.")
    if estimator == "exact":
        result = old_dist.kl_divergence(new_dist)
        if old_log_prob is not None:
            chex.assert_equal_shape([result, old_log_prob])
        return result
    chex.assert_equal_shape([old_log_prob, new_log_prob])
    log_r = new_log_prob - old_log_prob
    if estimator == "k1":
        return -log_r
    return jnp.expm1(log_r) - log_r


# ----------------------------------------------------------------------------
# Scalar value loss.


def _value_error(pred: Array, target: Array, kind: str, delta: Numeric) -> Array:
    """Per-sample ℓ(pred, target) for the value-loss kinds of `value_loss`."""
    error = pred - target
    if kind == "mse":
        return 0.5 * error**2
    if kind == "huber":
        return _huber(error, delta)
    return 0.5 * (0.5 * error**2) + 0.5 * _huber(error, delta)


def value_loss(
    pred: Array,
    old_pred: Array,
    target: Array,
    kind: str = "mse",
    vf_clip: Numeric | None = None,
    huber_delta: Numeric = 1.0,
) -> Array:
    """Scalar critic loss, optionally with PPO-style value clipping.

    Per sample, with x = pred − target:

      "mse":       ℓ = 0.5·x²
      "huber":     ℓ = Huber_δ(x) = 0.5·x² (|x| ≤ δ), δ·(|x| − 0.5·δ) beyond
      "mse_huber": ℓ = 0.5·mse + 0.5·huber

    With `vf_clip` = c (the clipped value loss of OpenAI baselines'
    PPO2), pred_clipped = old_pred + clip(pred − old_pred, −c, c) and the
    per-sample loss is max(ℓ(pred, target), ℓ(pred_clipped, target)) — both
    against the unclipped target. The result is the mean over samples.

    Example:
      >>> import jax.numpy as jnp
      >>> value_loss(jnp.array([1.0, 3.0]), jnp.zeros(2), jnp.zeros(2))
      Array(2.5, dtype=float32)

    Args:
      pred: V(s) under the current critic, any shape (e.g. `[M]`).
      old_pred: V_old(s) stored in the rollout, same shape.
      target: value targets (λ-returns), same shape.
      kind: "mse", "huber" or "mse_huber" (static).
      vf_clip: c, scalar (may be traced), or None for no clipping.
      huber_delta: δ, scalar, may be traced.

    Returns:
      The scalar loss.

    Raises:
      ValueError: for an unknown kind.
    """
    if kind not in VALUE_LOSS_KINDS:
        raise ValueError(f"kind={kind!r} is not one of {VALUE_LOSS_KINDS}.")
    chex.assert_equal_shape([pred, old_pred, target])
    chex.assert_rank(huber_delta, 0)
    target = jax.lax.stop_gradient(target)
    loss = _value_error(pred, target, kind, huber_delta)
    if vf_clip is not None:
        chex.assert_rank(vf_clip, 0)
        pred_clipped = old_pred + jnp.clip(pred - old_pred, -vf_clip, vf_clip)
        loss = jnp.maximum(loss, _value_error(pred_clipped, target, kind, huber_delta))
    return jnp.mean(loss)


# ----------------------------------------------------------------------------
# Quantile (distributional) critic.


def quantile_midpoints(num_quantiles: int) -> Array:
    """Quantile levels at the midpoints of N equal bins: τ_i = (2i + 1)/(2N).

    Example:
      >>> quantile_midpoints(4)
      Array([0.125, 0.375, 0.625, 0.875], dtype=float32)

    Args:
      num_quantiles: N, a Python int.

    Returns:
      taus, shape `[N]`, float32.
    """
    return (2.0 * jnp.arange(num_quantiles, dtype=jnp.float32) + 1.0) / (2.0 * num_quantiles)


def _quantile_huber_per_example(
    pred_quantiles: Array,
    target_samples: Array,
    kappa: Numeric,
    taus: Array | None,
) -> Array:
    """The quantile Huber loss of `quantile_huber_loss` per example, `[...]`."""
    chex.assert_rank(kappa, 0)
    num_quantiles = pred_quantiles.shape[-1]
    chex.assert_equal_shape_prefix([pred_quantiles, target_samples], pred_quantiles.ndim - 1)
    if taus is None:
        taus = quantile_midpoints(num_quantiles)
    chex.assert_shape(taus, (num_quantiles,))
    target_samples = jax.lax.stop_gradient(target_samples)
    taus = jax.lax.stop_gradient(taus)

    # δ_ij = y_j − θ_i, shape [..., N, M].
    delta = target_samples[..., None, :] - pred_quantiles[..., :, None]
    taus = jnp.reshape(taus, (1,) * (delta.ndim - 2) + (num_quantiles, 1))
    weight = jnp.abs(taus - jax.lax.stop_gradient(delta < 0.0))  # [..., N, M]
    huber = jnp.where(kappa > 0.0, _huber(delta, kappa), jnp.abs(delta))
    return jnp.sum(jnp.mean(weight * huber, axis=-1), axis=-1)


def quantile_huber_loss(
    pred_quantiles: Array,
    target_samples: Array,
    kappa: Numeric,
    taus: Array | None = None,
) -> Array:
    """Quantile Huber (quantile regression) loss, averaged over examples.

    Dabney et al. 2018, "Distributional Reinforcement Learning with Quantile
    Regression" (https://arxiv.org/abs/1710.10044), eq. 10. For one example with
    predicted quantiles θ_i at levels τ_i (i < N) and target samples y_j (j < M):

      δ_ij = y_j − θ_i
      loss = Σ_i mean_j |τ_i − 1{δ_ij < 0}|·Huber_κ(δ_ij)

    with Huber_κ(x) = 0.5·x² for |x| ≤ κ, κ·(|x| − 0.5·κ) beyond (not divided
    by κ) and Huber_0(x) = |x| (the pure quantile loss). This is exactly
    `rlax.quantile_regression_loss(θ, τ, y, huber_param=κ)`, here with leading
    batch dimensions averaged. Targets (and taus) are stop-gradient. Scalar
    λ-return targets enter as `[..., 1]`.

    Example:
      >>> import jax.numpy as jnp
      >>> pred = jnp.zeros((5, 8)); target = jnp.ones((5, 1))
      >>> quantile_huber_loss(pred, target, kappa=1.0).shape
      ()

    Args:
      pred_quantiles: θ, shape `[..., N]`.
      target_samples: y, shape `[..., M]`, same leading dims.
      kappa: κ ≥ 0, scalar, may be traced.
      taus: τ, shape `[N]`; default `quantile_midpoints(N)`.

    Returns:
      The scalar loss, mean over the leading dims.
    """
    return jnp.mean(_quantile_huber_per_example(pred_quantiles, target_samples, kappa, taus))


def cvar(quantiles: Array, alpha: Numeric) -> Array:
    """Lower-tail conditional value at risk from N midpoint quantiles.

    CVaR_α = (1/α)·∫_0^α F⁻¹(u) du, with F⁻¹ the step function through the
    sorted quantiles q_(0) ≤ … ≤ q_(N−1) (quantile i covers u ∈ [i/N, (i+1)/N)):

      w_i = clip(α·N − i, 0, 1),   CVaR_α = Σ_i w_i·q_(i) / (α·N)

    i.e. the lowest ⌊αN⌋ quantiles weighted 1, the next by αN − ⌊αN⌋. α = 1 gives
    the mean, α → 0 the lowest quantile. α may be traced; it must be in (0, 1].

    Computed without a full sort (a sort of [T, B, 32] dominated the quantile
    critic's cost on CPU): with t the (⌊αN⌋ + 1)-th smallest quantile (the
    largest when αN = N), found by ⌊αN⌋ + 1 passes of "remove the row minimum",

      CVaR_α = (Σ_{q_i < t} q_i + (αN − #{q_i < t})·mean_{q_i = t} q_i) / (αN),

    the same value. Gradients are those of the sorted form; among tied quantiles
    the weight is shared equally (an equally valid subgradient). NaN in a row
    gives NaN.

    Example:
      >>> import jax.numpy as jnp
      >>> cvar(jnp.array([3.0, 1.0, 2.0, 4.0]), 0.5)
      Array(1.5, dtype=float32)

    Args:
      quantiles: shape `[..., N]`, any order along the last axis.
      alpha: α ∈ (0, 1], scalar.

    Returns:
      CVaR_α, shape `[...]`.
    """
    chex.assert_rank(alpha, 0)
    num_quantiles = quantiles.shape[-1]
    alpha_n = alpha * num_quantiles
    threshold = _cvar_threshold(quantiles, alpha_n)[..., None]  # t, [..., 1]
    below, at = quantiles < threshold, quantiles == threshold
    num_below = jnp.sum(below, axis=-1, dtype=quantiles.dtype)
    num_at = jnp.maximum(jnp.sum(at, axis=-1, dtype=quantiles.dtype), 1.0)
    mean_at = jnp.sum(jnp.where(at, quantiles, 0.0), axis=-1) / num_at
    result = (
        jnp.sum(jnp.where(below, quantiles, 0.0), axis=-1) + (alpha_n - num_below) * mean_at
    ) / alpha_n
    return jnp.where(jnp.isnan(threshold[..., 0]), jnp.nan, result)


def _cvar_threshold(quantiles: Array, alpha_n: Numeric) -> Array:
    """The (⌊αN⌋ + 1)-th smallest value per row (capped at the N-th), `[...]`.

    A while-loop of ⌊αN⌋ + 1 passes (at most N), each taking the row minimum and
    removing every entry equal to it; no gradient flows through it.
    """
    num_quantiles = quantiles.shape[-1]
    rank = jnp.minimum(jnp.floor(alpha_n) + 1.0, num_quantiles)
    values = jax.lax.stop_gradient(quantiles)
    zeros = jnp.zeros(values.shape[:-1], values.dtype)

    def cond(carry):
        step, _, removed, _ = carry
        return (step < num_quantiles) & jnp.any(removed < rank)

    def body(carry):
        step, remaining, removed, threshold = carry
        low = jnp.min(remaining, axis=-1)
        hit = remaining == low[..., None]
        threshold = jnp.where(removed < rank, low, threshold)
        removed = removed + jnp.sum(hit, axis=-1, dtype=values.dtype)
        return step + 1, jnp.where(hit, jnp.inf, remaining), removed, threshold

    return jax.lax.while_loop(cond, body, (0, values, zeros, zeros))[3]


def clip_quantiles(
    pred_quantiles: Array,
    old_quantiles: Array,
    vf_clip: Numeric,
    mode: str,
) -> Array:
    """Value clipping for a quantile critic.

      "mean_shift":   Δ = mean_i θ_i − mean_i θ_old,i
                      θ_clipped = θ + (clip(Δ, −c, c) − Δ)
                      (every quantile moves by the same amount: the mean
                      changes by at most c and the shape θ − mean(θ) is kept)
      "per_quantile": θ_clipped = θ_old + clip(θ − θ_old, −c, c)
                      (each quantile within ±c of its old value; may change
                      the shape)

    Example:
      >>> import jax.numpy as jnp
      >>> clip_quantiles(jnp.array([6.0, 10.0]), jnp.array([1.0, 5.0]),
      ...                0.5, "mean_shift")
      Array([1.5, 5.5], dtype=float32)

    Args:
      pred_quantiles: θ, shape `[..., N]`.
      old_quantiles: θ_old stored in the rollout, same shape.
      vf_clip: c, scalar, may be traced.
      mode: "mean_shift" or "per_quantile" (static).

    Returns:
      Clipped quantiles, shape `[..., N]`.

    Raises:
      ValueError: for an unknown mode.
    """
    if mode not in QUANTILE_CLIP_MODES:
        raise ValueError(f"mode={mode!r} is not one of {QUANTILE_CLIP_MODES}.")
    chex.assert_equal_shape([pred_quantiles, old_quantiles])
    chex.assert_rank(vf_clip, 0)
    if mode == "per_quantile":
        return old_quantiles + jnp.clip(pred_quantiles - old_quantiles, -vf_clip, vf_clip)
    mean_change = jnp.mean(pred_quantiles, axis=-1, keepdims=True) - jnp.mean(
        old_quantiles, axis=-1, keepdims=True
    )
    return pred_quantiles + (jnp.clip(mean_change, -vf_clip, vf_clip) - mean_change)


def quantile_value_loss(
    pred_quantiles: Array,
    old_quantiles: Array,
    targets: Array,
    kappa: Numeric,
    vf_clip: Numeric | None = None,
    mode: str = "mean_shift",
) -> Array:
    """Quantile Huber critic loss with optional value clipping.

    Per example, L(θ) = `quantile_huber_loss` of θ against the targets; with
    `vf_clip` = c, max(L(θ), L(clip_quantiles(θ, θ_old, c, mode))) — the
    distributional analogue of `value_loss`'s max — then the mean over examples.

    Example:
      >>> import jax.numpy as jnp
      >>> q = jnp.zeros((4, 8)); y = jnp.ones((4, 1))
      >>> quantile_value_loss(q, q, y, kappa=1.0, vf_clip=0.2).shape
      ()

    Args:
      pred_quantiles: θ, shape `[..., N]`.
      old_quantiles: θ_old stored in the rollout, same shape.
      targets: target samples, `[..., M]` (λ-returns as `[..., 1]`).
      kappa: κ, scalar, may be traced.
      vf_clip: c, scalar (may be traced), or None for no clipping.
      mode: "mean_shift" or "per_quantile" (static), used with `vf_clip`.

    Returns:
      The scalar loss.
    """
    chex.assert_equal_shape([pred_quantiles, old_quantiles])
    loss = _quantile_huber_per_example(pred_quantiles, targets, kappa, None)
    if vf_clip is not None:
        clipped = clip_quantiles(pred_quantiles, old_quantiles, vf_clip, mode)
        loss = jnp.maximum(loss, _quantile_huber_per_example(clipped, targets, kappa, None))
    return jnp.mean(loss)


# ----------------------------------------------------------------------------
# Behaviour cloning.


def awr_bc_loss(
    log_prob: Array,
    adv: Array,
    beta: Numeric,
    max_weight: Numeric,
) -> tuple[Array, Array]:
    """Advantage-weighted behaviour cloning on the rollout's own actions.

    Peng et al. 2019, "Advantage-Weighted Regression"
    (https://arxiv.org/abs/1910.00177), with the weight capped so one large advantage
    cannot dominate the batch:

      w = exp(min(A/β, log w_max))     (stop-gradient)
      loss = −mean(w·log π(a|s))

    Example:
      >>> import jax.numpy as jnp
      >>> loss, w = awr_bc_loss(jnp.array([-1.0, -2.0]), jnp.array([0.0, 1e3]),
      ...                       beta=5.0, max_weight=100.0)
      >>> [round(float(x), 3) for x in w]  # exp(0/5) = 1; exp(200) capped at 100
      [1.0, 100.0]

    Args:
      log_prob: log π(a|s) under the current policy, any shape.
      adv: advantages A, same shape.
      beta: temperature β > 0, scalar, may be traced.
      max_weight: w_max > 0, scalar, may be traced.

    Returns:
      `(loss, weights)`: the scalar loss and the weights, shape of `log_prob`.
    """
    chex.assert_equal_shape([log_prob, adv])
    chex.assert_rank([beta, max_weight], 0)
    weights = jax.lax.stop_gradient(jnp.exp(jnp.minimum(adv / beta, jnp.log(max_weight))))
    return -jnp.mean(weights * log_prob), weights
