"""Running normalization statistics as pure functions.

Two building blocks:

* `RunningMeanStd`: a running per-feature mean and variance, merged batch by batch with the
  parallel algorithm of Chan, Golub & LeVeque (1979), "Updating formulae and a pairwise algorithm
  for computing sample variances". Used for observation normalization and value-target
  normalization.
* `RewardNormState` / `normalize_reward`: reward scaling with the semantics of Stable-Baselines3's
  `VecNormalize`: each environment keeps a discounted-return accumulator, one shared running
  variance of those accumulators scales the rewards (no mean subtraction), and accumulators reset
  at episode ends.

Everything here is a pure function of arrays: states are `NamedTuple` pytrees, so they pass
through `jax.jit`, `jax.vmap` (e.g. over a population) and checkpoints like any other leaf.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import chex
import jax.numpy as jnp

Array = chex.Array

# VecNormalize's prior: the statistics start as if one pseudo-sample of weight 1e-4 with mean 0
# and variance 1 had been seen, so the first update is well defined and dominates at once.
_PRIOR_COUNT = 1e-4


class RunningMeanStd(NamedTuple):
    """Running mean and (population) variance of a stream of samples.

    Attributes:
      mean: float32 `[*shape]`, the running mean.
      var: float32 `[*shape]`, the running variance (ddof 0).
      count: float32 `[]`, the number of samples seen, plus the prior's 1e-4.
    """

    mean: Array  # float32 [*shape]
    var: Array  # float32 [*shape]
    count: Array  # float32 []

    @staticmethod
    def init(shape: Sequence[int] = ()) -> RunningMeanStd:
        """The prior of `VecNormalize`: mean 0, variance 1, count 1e-4.

        Args:
          shape: the shape of one sample, e.g. `(obs_dim,)`; `()` for scalars.

        Returns:
          A `RunningMeanStd` with `mean`, `var` of shape `shape` and a scalar `count`.

        Example:
          >>> rms = RunningMeanStd.init((3,))
          >>> rms.mean.shape, round(float(rms.count), 6)
          ((3,), 0.0001)
        """
        shape = tuple(shape)
        return RunningMeanStd(
            mean=jnp.zeros(shape, jnp.float32),
            var=jnp.ones(shape, jnp.float32),
            count=jnp.asarray(_PRIOR_COUNT, jnp.float32),
        )

    @property
    def std(self) -> Array:
        """The running standard deviation, `sqrt(var)`, shape `[*shape]`."""
        return jnp.sqrt(self.var)

    def update(self, batch: Array, mask: Array | None = None) -> RunningMeanStd:
        """Merges a batch of samples into the statistics (parallel Welford / Chan et al.).

        With the batch's count n_b, mean μ_b and variance σ²_b (ddof 0), δ = μ_b − μ and
        N = n + n_b:

          μ' = μ + δ·n_b/N
          σ²' = σ²·n/N + σ²_b·n_b/N + δ²·(n/N)·(n_b/N)

        which is M2/N with M2 = σ²·n + σ²_b·n_b + δ²·n·n_b/N. The arithmetic uses only the weights
        n/N and n_b/N, never differences of large sums, so it stays accurate in float32 at large
        counts. The batch moments are taken two-pass on `x − μ`, so δ is computed directly rather
        than as the difference of two rounded means (which loses digits when |μ| ≫ std).

        Args:
          batch: `[*batch_dims, *shape]`; every leading dim not in `self.mean.shape` is reduced.
            A batch of exactly `shape` is one sample.
          mask: optional `[*batch_dims]`, bool or numeric; only samples where it is nonzero count.
            An all-false mask leaves the statistics unchanged.

        Returns:
          The merged `RunningMeanStd` (same shapes, float32).

        Raises:
          ValueError: at trace time, if the trailing dims of `batch` are not `self.mean.shape` or
            `mask` is not `[*batch_dims]`.

        Example:
          >>> rms = RunningMeanStd.init((2,)).update(jnp.ones((8, 4, 2)))
          >>> rms.mean.shape
          (2,)
        """
        b_count, delta, b_var = _centered_moments(batch, mask, self.mean)
        count = self.count.astype(jnp.float32)
        total = count + b_count
        w_new = b_count / total  # in [0, 1]; 0 for an empty batch
        w_old = count / total
        mean = self.mean + delta * w_new
        var = self.var * w_old + b_var * w_new + jnp.square(delta) * (w_old * w_new)
        return RunningMeanStd(mean=mean, var=var, count=total)

    def normalize(self, x: Array, clip: float | None = None, eps: float = 1e-8) -> Array:
        """Standardizes `x`: `(x − mean) / sqrt(var + eps)`, then clips to `[−clip, clip]`.

        Args:
          x: `[..., *shape]`, broadcast against the statistics.
          clip: bound of the result, or None for no clipping.
          eps: added to the variance.

        Returns:
          float32 array of the shape of `x`.

        Example:
          >>> RunningMeanStd.init().normalize(jnp.array([0.0, 100.0]), clip=10.0)
          Array([ 0., 10.], dtype=float32)
        """
        y = (jnp.asarray(x, jnp.float32) - self.mean) / jnp.sqrt(self.var + eps)
        if clip is not None:  # static: clip is a Python number or None
            y = jnp.clip(y, -clip, clip)
        return y

    def denormalize(self, x: Array, eps: float = 1e-8) -> Array:
        """Inverts `normalize` (without clipping): `x·sqrt(var + eps) + mean`.

        Args:
          x: `[..., *shape]`, normalized values.
          eps: added to the variance; use the same as in `normalize`.

        Returns:
          float32 array of the shape of `x`.
        """
        return jnp.asarray(x, jnp.float32) * jnp.sqrt(self.var + eps) + self.mean


def _centered_moments(
    batch: Array, mask: Array | None, center: Array
) -> tuple[Array, Array, Array]:
    """Count `[]`, mean of `batch − center` `[*shape]` and ddof-0 variance `[*shape]`.

    Only samples where `mask` is nonzero count; `center` has the sample shape `[*shape]`.
    """
    shape = center.shape
    batch = jnp.asarray(batch, jnp.float32)
    num_batch_dims = batch.ndim - len(shape)
    if num_batch_dims < 0 or batch.shape[num_batch_dims:] != shape:
        raise ValueError(f"batch shape {batch.shape} must end with the statistics' shape {shape}")
    batch_dims = batch.shape[:num_batch_dims]
    axes = tuple(range(num_batch_dims))
    centered = batch - center
    if mask is None:
        b_count = jnp.asarray(float(math.prod(batch_dims)), jnp.float32)
        b_mean = jnp.mean(centered, axis=axes)
        b_var = jnp.mean(jnp.square(centered - b_mean), axis=axes)
        return b_count, b_mean, b_var
    mask = jnp.asarray(mask)
    if mask.shape != batch_dims:
        raise ValueError(f"mask shape {mask.shape} must be the batch dims {batch_dims}")
    weights = (mask != 0).astype(jnp.float32).reshape(batch_dims + (1,) * len(shape))
    b_count = jnp.sum(weights)
    safe_count = jnp.maximum(b_count, 1.0)  # an empty batch: finite moments, weight 0 below
    b_mean = jnp.sum(weights * centered, axis=axes) / safe_count
    b_var = jnp.sum(weights * jnp.square(centered - b_mean), axis=axes) / safe_count
    return b_count, b_mean, b_var


class RewardNormState(NamedTuple):
    """State of `VecNormalize`-style reward scaling.

    Attributes:
      returns: float32 `[B]`, each environment's running discounted return
        R_t = γ·R_{t−1} + r_t, reset to 0 after an episode ends.
      rms: `RunningMeanStd` over scalars (shape `()`) of all the `returns` seen.
    """

    returns: Array  # float32 [B]
    rms: RunningMeanStd  # mean, var: float32 []; count: float32 []

    @staticmethod
    def init(num_envs: int) -> RewardNormState:
        """Zero accumulators for `num_envs` environments and the `RunningMeanStd` prior.

        Example:
          >>> RewardNormState.init(4).returns.shape
          (4,)
        """
        return RewardNormState(
            returns=jnp.zeros((num_envs,), jnp.float32), rms=RunningMeanStd.init(())
        )


def normalize_reward(
    state: RewardNormState,
    reward: Array,
    done: Array,
    gamma: chex.Numeric,
    clip: float | None = 10.0,
    eps: float = 1e-8,
) -> tuple[RewardNormState, Array]:
    """Scales one step of rewards by the running std of discounted returns (VecNormalize).

    In the order of Stable-Baselines3's `VecNormalize.step_wait`:

      R ← γ·R + r                     (per environment)
      rms ← rms.update(R)             (all B accumulators as one batch)
      r̃ = clip(r / sqrt(rms.var + eps), −clip, clip)     (no mean subtraction)
      R ← 0 where done

    Args:
      state: the current `RewardNormState`, `returns` `[B]`.
      reward: `[B]`, this step's raw rewards.
      done: `[B]`, bool or 0/1: the episode ended at this step (terminated or truncated).
      gamma: discount, a Python float or a traced scalar (e.g. a per-member hyperparameter).
      clip: bound of the scaled reward, or None for no clipping.
      eps: added to the variance.

    Returns:
      `(new_state, normalized_reward)`, the latter float32 `[B]`.

    Example:
      >>> state = RewardNormState.init(2)
      >>> state, r = normalize_reward(state, jnp.array([1.0, -1.0]), jnp.array([False, True]), 0.99)
      >>> r.shape
      (2,)
    """
    reward = jnp.asarray(reward, jnp.float32)
    done = jnp.asarray(done)
    if reward.shape != state.returns.shape or done.shape != state.returns.shape:
        raise ValueError(
            f"reward {reward.shape} and done {done.shape} must have the shape of the "
            f"accumulators {state.returns.shape}"
        )
    returns = state.returns * jnp.asarray(gamma, jnp.float32) + reward
    rms = state.rms.update(returns)
    scaled = reward / jnp.sqrt(rms.var + eps)
    if clip is not None:
        scaled = jnp.clip(scaled, -clip, clip)
    returns = jnp.where(done != 0, jnp.zeros_like(returns), returns)
    return RewardNormState(returns=returns, rms=rms), scaled
