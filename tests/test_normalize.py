"""Tests for `jppo.normalize`: running statistics and VecNormalize-style reward scaling.

The oracles are independent float64 numpy computations:

* running statistics are checked against the mean and variance of the concatenated data with
  the prior (count 1e-4, mean 0, var 1) treated as one weighted pseudo-sample, combined by the
  law of total variance (not by the merge formula under test);
* reward normalization is checked against a small numpy re-derivation of Stable-Baselines3's
  `VecNormalize` (`_NumpyVecNormalizeReward` below).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jppo.normalize import RewardNormState, RunningMeanStd, normalize_reward

PRIOR_COUNT = 1e-4
RTOL = 1e-5


# ----------------------------------------------------------------------------------------------
# float64 oracle


def _reference_stats(rows: np.ndarray, mean0=0.0, var0=1.0, count0=PRIOR_COUNT):
    """Mean, variance and count of `rows` `[N, *shape]` plus a pseudo-sample, in float64.

    The pseudo-sample has weight `count0`, mean `mean0` and variance `var0`; by the law of total
    variance, M2 = count0·(var0 + (mean0 − μ)²) + Σ (x − μ)².
    """
    x = np.asarray(rows, np.float64)
    mean0 = np.asarray(mean0, np.float64)
    var0 = np.asarray(var0, np.float64)
    count0 = float(count0)
    total = count0 + x.shape[0]
    mean = (count0 * mean0 + x.sum(axis=0)) / total
    m2 = count0 * (var0 + (mean0 - mean) ** 2) + ((x - mean) ** 2).sum(axis=0)
    return mean, m2 / total, total


def _assert_stats_close(rms: RunningMeanStd, mean, var, count, rtol, var_atol=0.0):
    """Relative closeness; the mean is compared in units of |mean| + std (it may be ~0)."""
    got_mean, got_var = np.asarray(rms.mean, np.float64), np.asarray(rms.var, np.float64)
    var_error = np.abs(got_var - var)
    assert np.all(var_error <= rtol * var + var_atol), (
        f"var {got_var} vs float64 {var}: relative error {var_error / var}"
    )
    np.testing.assert_array_less(np.abs(got_mean - mean), rtol * (np.abs(mean) + np.sqrt(var)))
    np.testing.assert_allclose(float(rms.count), count, rtol=max(rtol, 1e-6))
    assert rms.mean.dtype == rms.var.dtype == rms.count.dtype == jnp.float32


# ----------------------------------------------------------------------------------------------
# random split cases


@dataclasses.dataclass(frozen=True)
class _BatchSpec:
    batch_dims: tuple[int, ...]  # () is one bare sample, (1,) a batch of one element
    mask: str  # "none", "random", "all_false", "all_true", "float"


@dataclasses.dataclass(frozen=True)
class _Case:
    shape: tuple[int, ...]
    offset: float
    scale: float
    batches: tuple[_BatchSpec, ...]
    seed: int


SHAPES = [(), (1,), (3,), (2, 2)]
OFFSETS = [0.0, 1e3, -1e3, 50.0]
# float32 stores the running mean to ~eps·|mean|; that rounding perturbs the variance by up to
# ~eps·|mean|·std (see `test_merge_far_offset_within_float32_rounding`). Keeping |offset|/std
# <= MAX_OFFSET_OVER_SCALE keeps that below the 1e-5 tolerance of the property test.
MAX_OFFSET_OVER_SCALE = 100.0
MAX_SCALE = 100.0
BATCH_DIMS = [(), (1,), (2,), (7,), (33,), (1, 1), (4, 3), (5, 1)]
MASKS = ["none", "none", "random", "all_false", "all_true", "float"]


def _materialize(case: _Case) -> tuple[list[tuple[np.ndarray, np.ndarray | None]], np.ndarray]:
    """The batches `(data, mask)` of a case and the float32 rows that they count, `[N, *shape]`."""
    rng = np.random.default_rng(case.seed)
    batches, rows = [], []
    for spec in case.batches:
        # Each batch gets its own mean shift, so the stream is not stationary.
        shift = case.scale * rng.normal()
        data = case.offset + shift + case.scale * rng.standard_normal(spec.batch_dims + case.shape)
        data = data.astype(np.float32)
        keep = np.ones(spec.batch_dims, bool)
        mask = None
        if spec.mask == "random":
            keep = rng.random(spec.batch_dims) < 0.6
            mask = keep
        elif spec.mask == "all_false":
            keep = np.zeros(spec.batch_dims, bool)
            mask = keep
        elif spec.mask == "all_true":
            mask = keep
        elif spec.mask == "float":
            keep = rng.random(spec.batch_dims) < 0.5
            mask = keep.astype(np.float32)
        batches.append((data, mask))
        rows.append(data[keep].reshape((-1,) + case.shape))  # data[keep] of a 0-d keep adds an axis
    return batches, np.concatenate(rows, axis=0)


def _min_scale(offset: float) -> float:
    return max(0.1, abs(offset) / MAX_OFFSET_OVER_SCALE)


def _random_case(rng: np.random.Generator) -> _Case:
    num_batches = int(rng.integers(1, 6))
    batches = tuple(
        _BatchSpec(BATCH_DIMS[rng.integers(len(BATCH_DIMS))], MASKS[rng.integers(len(MASKS))])
        for _ in range(num_batches)
    )
    offset = OFFSETS[rng.integers(len(OFFSETS))]
    return _Case(
        shape=SHAPES[rng.integers(len(SHAPES))],
        offset=offset,
        scale=float(10 ** rng.uniform(np.log10(_min_scale(offset)), np.log10(MAX_SCALE))),
        batches=batches,
        seed=int(rng.integers(2**31)),
    )


def _check_case(case: _Case):
    batches, rows = _materialize(case)
    rms = RunningMeanStd.init(case.shape)
    for data, mask in batches:
        rms = rms.update(data, mask)
    _assert_stats_close(rms, *_reference_stats(rows), rtol=RTOL)


@st.composite
def _case_strategy(draw):
    offset = draw(st.sampled_from(OFFSETS))
    return _Case(
        shape=draw(st.sampled_from(SHAPES)),
        offset=offset,
        scale=draw(st.floats(_min_scale(offset), MAX_SCALE)),
        batches=tuple(
            draw(
                st.lists(
                    st.builds(_BatchSpec, st.sampled_from(BATCH_DIMS), st.sampled_from(MASKS)),
                    min_size=1,
                    max_size=5,
                )
            )
        ),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


@settings(
    max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(_case_strategy())
def test_merge_matches_float64_concatenation(case):
    """Merging batch by batch equals float64 stats of prior + concatenated (masked) data."""
    _check_case(case)


@pytest.mark.parametrize(
    "case",
    [
        # One bare sample, then a batch of one element, on a large offset.
        _Case((3,), 1e3, 10.0, (_BatchSpec((), "none"), _BatchSpec((1,), "none")), 0),
        # A single element only: the prior's variance 1 still weighs 1e-4.
        _Case((), 0.0, 1.0, (_BatchSpec((1,), "none"),), 1),
        # Masked batches, one of them empty.
        _Case(
            (2, 2),
            -1e3,
            3.0,
            (
                _BatchSpec((4, 3), "random"),
                _BatchSpec((7,), "all_false"),
                _BatchSpec((33,), "float"),
            ),
            2,
        ),
    ],
)
def test_merge_edge_cases(case):
    """Hand-picked cases the random search must not miss."""
    _check_case(case)


def test_merge_far_offset_within_float32_rounding():
    """|mean|/std up to 1e4: the error stays within the float32 rounding of the stored mean.

    The running mean is stored to ~eps·|mean| absolute; each merge's between-batch term
    δ²·w_old·w_new then moves by ~2·|δ|·eps·|mean|·w_old·w_new <= eps·|mean|·std, which no
    float32 implementation of these three fields avoids. Allow 4x that on top of rtol 1e-5.
    """
    eps32 = float(np.finfo(np.float32).eps)
    rng = np.random.default_rng(11)
    for _ in range(15):
        case = dataclasses.replace(
            _random_case(rng),
            offset=float(rng.choice([1e3, -1e3])),
            scale=float(10 ** rng.uniform(-1, 0)),
        )
        batches, rows = _materialize(case)
        rms = RunningMeanStd.init(case.shape)
        for data, mask in batches:
            rms = rms.update(data, mask)
        mean, var, count = _reference_stats(rows)
        allowance = 4 * eps32 * np.abs(mean) * np.sqrt(var)
        _assert_stats_close(rms, mean, var, count, rtol=RTOL, var_atol=allowance)


def test_all_false_mask_leaves_stats_unchanged():
    rms = RunningMeanStd.init((2,)).update(np.random.default_rng(0).normal(size=(10, 2)))
    after = rms.update(np.full((5, 2), 1e6, np.float32), np.zeros((5,), bool))
    for a, b in zip(rms, after):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_split_and_order_independence():
    """The same data in different splits and orders gives the same statistics."""
    rng = np.random.default_rng(7)
    data = (1e3 + 5.0 * rng.standard_normal((96, 3))).astype(np.float32)
    update = jax.jit(lambda rms, x: rms.update(x))

    def stream(chunks):
        rms = RunningMeanStd.init((3,))
        for chunk in chunks:
            rms = update(rms, chunk)
        return rms

    perm = rng.permutation(96)
    results = [
        stream([data]),
        stream(np.split(data, [1, 2, 40, 41, 80])),
        stream(np.split(data, 12)),
        stream([data[perm]]),
        stream(np.split(data[perm], [5, 50, 95])),
    ]
    for other in results[1:]:
        np.testing.assert_allclose(np.asarray(other.mean), np.asarray(results[0].mean), rtol=RTOL)
        np.testing.assert_allclose(np.asarray(other.var), np.asarray(results[0].var), rtol=RTOL)
        np.testing.assert_allclose(float(other.count), float(results[0].count), rtol=1e-7)


# ----------------------------------------------------------------------------------------------
# large counts


def test_large_count_stream():
    """2^25 samples (128 batches of 2^18, drifting mean near 1e3) stay within 1e-3 of float64."""
    rng = np.random.default_rng(3)
    num_batches, batch_size = 128, 2**18
    update = jax.jit(lambda rms, x: rms.update(x))
    rms = RunningMeanStd.init(())
    # float64 reference by chunks: per-chunk sums, then the exact two-level total variance.
    counts, means, m2s = [], [], []
    for i in range(num_batches):
        x = rng.standard_normal(batch_size, dtype=np.float32)
        x = (3.0 * x + (1e3 + 0.05 * i)).astype(np.float32)
        rms = update(rms, x)
        x64 = x.astype(np.float64)
        counts.append(batch_size)
        means.append(x64.mean())
        m2s.append(((x64 - means[-1]) ** 2).sum())
    counts, means, m2s = map(np.asarray, (counts, means, m2s))
    total = PRIOR_COUNT + counts.sum()
    mean = (counts * means).sum() / total
    m2 = PRIOR_COUNT * (1.0 + mean**2) + m2s.sum() + (counts * (means - mean) ** 2).sum()
    assert total > 2**25
    _assert_stats_close(rms, mean, m2 / total, total, rtol=1e-3)


def test_large_count_state_merges_small_batches():
    """From count 3e7, many small batches (single samples included) still merge accurately."""
    rng = np.random.default_rng(4)
    start = RunningMeanStd(
        mean=jnp.array([1e3, -2.0, 0.0], jnp.float32),
        var=jnp.array([4.0, 0.25, 1e4], jnp.float32),
        count=jnp.asarray(3e7, jnp.float32),
    )
    update = jax.jit(lambda rms, x: rms.update(x))
    rms, rows = start, []
    for size in [1, 1, 1, 64, 1000, 1, 4096] * 20:
        x = (
            np.array([1e3 + 5.0, 3.0, -50.0])
            + np.array([3.0, 1.0, 200.0]) * rng.standard_normal((size, 3))
        ).astype(np.float32)
        rms = update(rms, x)
        rows.append(x)
    reference = _reference_stats(
        np.concatenate(rows), np.asarray(start.mean), np.asarray(start.var), float(start.count)
    )
    _assert_stats_close(rms, *reference, rtol=1e-3)


# ----------------------------------------------------------------------------------------------
# normalize / denormalize / jit / vmap


def test_normalize_denormalize_round_trip():
    rng = np.random.default_rng(5)
    rms = RunningMeanStd.init((4,)).update(
        (rng.standard_normal((50, 4)) * [1.0, 10.0, 0.1, 100.0] + [0.0, 1e3, -5.0, 3.0]).astype(
            np.float32
        )
    )
    x = rng.standard_normal((6, 4)) * np.sqrt(np.asarray(rms.var)) + np.asarray(rms.mean)
    x = x.astype(np.float32)
    z = rms.normalize(x)
    expected = (x - np.asarray(rms.mean, np.float64)) / np.sqrt(
        np.asarray(rms.var, np.float64) + 1e-8
    )
    np.testing.assert_allclose(np.asarray(z), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(rms.denormalize(z)), x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(rms.std), np.sqrt(np.asarray(rms.var)), rtol=1e-6)


def test_normalize_clip():
    rms = RunningMeanStd(mean=jnp.zeros(()), var=jnp.ones(()), count=jnp.asarray(10.0))
    x = jnp.array([-100.0, -3.0, 0.5, 3.0, 100.0])
    np.testing.assert_allclose(
        np.asarray(rms.normalize(x, clip=5.0)), [-5.0, -3.0, 0.5, 3.0, 5.0], rtol=1e-6
    )
    np.testing.assert_allclose(np.asarray(rms.normalize(x)), np.asarray(x), rtol=1e-6)


def test_jit_and_vmap_over_population():
    """A population of states updates under vmap exactly like a loop over its members."""
    rng = np.random.default_rng(6)
    num_members = 4
    data = (rng.standard_normal((num_members, 3, 16, 2)) * 2.0 + 7.0).astype(np.float32)
    masks = rng.random((num_members, 3, 16)) < 0.7
    states = jax.vmap(lambda _: RunningMeanStd.init((2,)))(jnp.arange(num_members))

    @jax.jit
    def run(states, data, masks):
        def step(s, xm):
            x, m = xm
            return jax.vmap(lambda si, xi, mi: si.update(xi, mi))(s, x, m), None

        s, _ = jax.lax.scan(step, states, (jnp.swapaxes(data, 0, 1), jnp.swapaxes(masks, 0, 1)))
        return s, jax.vmap(lambda si, xi: si.normalize(xi, clip=3.0))(s, data[:, 0])

    states_out, normalized = run(states, data, masks)
    assert states_out.mean.shape == (num_members, 2) and states_out.count.shape == (num_members,)
    assert normalized.shape == (num_members, 16, 2)
    for k in range(num_members):
        single = RunningMeanStd.init((2,))
        for t in range(3):
            single = single.update(data[k, t], masks[k, t])
        np.testing.assert_allclose(
            np.asarray(states_out.mean[k]), np.asarray(single.mean), rtol=1e-6
        )
        np.testing.assert_allclose(np.asarray(states_out.var[k]), np.asarray(single.var), rtol=1e-5)
        _assert_stats_close(
            jax.tree.map(lambda a: a[k], states_out),
            *_reference_stats(data[k][masks[k]]),
            rtol=RTOL,
        )


def test_shape_errors():
    rms = RunningMeanStd.init((3,))
    with pytest.raises(ValueError):
        rms.update(jnp.zeros((5, 2)))
    with pytest.raises(ValueError):
        rms.update(jnp.zeros((5, 3)), mask=jnp.ones((4,), bool))


# ----------------------------------------------------------------------------------------------
# reward normalization (VecNormalize semantics)


class _NumpyRunningMeanStd:
    """float64 running mean/var with VecNormalize's prior."""

    def __init__(self):
        self.mean, self.var, self.count = 0.0, 1.0, PRIOR_COUNT

    def update(self, x: np.ndarray):
        x = np.asarray(x, np.float64)
        total = self.count + x.size
        mean = (self.count * self.mean + x.sum()) / total
        m2 = self.count * (self.var + (self.mean - mean) ** 2) + ((x - mean) ** 2).sum()
        self.mean, self.var, self.count = mean, m2 / total, total


class _NumpyVecNormalizeReward:
    """The reward path of SB3's `VecNormalize.step_wait`, re-derived in float64 numpy."""

    def __init__(self, num_envs: int, gamma: float, clip: float, eps: float = 1e-8):
        self.returns = np.zeros(num_envs)
        self.rms = _NumpyRunningMeanStd()
        self.gamma, self.clip, self.eps = gamma, clip, eps

    def step(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        self.returns = self.returns * self.gamma + reward
        self.rms.update(self.returns)
        scaled = np.clip(reward / np.sqrt(self.rms.var + self.eps), -self.clip, self.clip)
        self.returns[done] = 0.0
        return scaled


def _reward_stream(num_steps=200, num_envs=3, seed=8):
    rng = np.random.default_rng(seed)
    big = rng.uniform(-1000.0, 1000.0, (num_steps, num_envs))
    small = rng.normal(0.0, 1.0, (num_steps, num_envs))
    rewards = np.where(rng.random((num_steps, num_envs)) < 0.3, big, small).astype(np.float32)
    dones = rng.random((num_steps, num_envs)) < 0.05
    return rewards, dones


@jax.jit
def _run_reward_norm(rewards, dones, gamma):
    """Scans `normalize_reward` over a `[T, B]` stream from a fresh state; gamma is traced."""

    def step(state, rd):
        return normalize_reward(state, rd[0], rd[1], gamma, clip=10.0)

    return jax.lax.scan(step, RewardNormState.init(rewards.shape[1]), (rewards, dones))


def test_reward_normalization_matches_vecnormalize_reference():
    rewards, dones = _reward_stream()
    gamma = 0.99
    assert dones.any(axis=0).all(), "every env should see at least one episode end"
    state, normalized = _run_reward_norm(rewards, dones, jnp.float32(gamma))
    reference = _NumpyVecNormalizeReward(rewards.shape[1], gamma, clip=10.0)
    expected = np.stack([reference.step(r.astype(np.float64), d) for r, d in zip(rewards, dones)])
    np.testing.assert_allclose(np.asarray(normalized), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(state.returns), reference.returns, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(float(state.rms.var), reference.rms.var, rtol=1e-4)
    np.testing.assert_allclose(float(state.rms.mean), reference.rms.mean, rtol=1e-4)
    np.testing.assert_allclose(float(state.rms.count), reference.rms.count, rtol=1e-6)


def test_reward_accumulator_resets_at_done():
    state = RewardNormState.init(3)
    reward = jnp.array([1.0, 2.0, 3.0])
    state, _ = normalize_reward(state, reward, jnp.array([False, True, False]), 0.5)
    # The statistics saw the accumulated returns before the reset ...
    np.testing.assert_allclose(float(state.rms.mean), 2.0, rtol=1e-4)
    # ... and then the finished episode's accumulator went back to 0.
    np.testing.assert_allclose(np.asarray(state.returns), [1.0, 0.0, 3.0])
    state, _ = normalize_reward(state, reward, jnp.array([1.0, 0.0, 1.0]), 0.5)  # float dones
    np.testing.assert_allclose(np.asarray(state.returns), [0.0, 2.0, 0.0])
    state, _ = normalize_reward(state, reward, jnp.zeros(3, bool), 0.5)
    np.testing.assert_allclose(np.asarray(state.returns), [1.0, 3.0, 3.0])


def test_reward_clip():
    # Long-run statistics with a tiny variance: a large reward barely moves them and is far
    # beyond the clip after the update.
    rms = RunningMeanStd(mean=jnp.asarray(1.0), var=jnp.asarray(1e-4), count=jnp.asarray(1e6))
    state = RewardNormState(returns=jnp.zeros(2), rms=rms)
    reward = jnp.array([50.0, -50.0])
    _, clipped = normalize_reward(state, reward, jnp.zeros(2, bool), 0.9, clip=10.0)
    np.testing.assert_allclose(np.asarray(clipped), [10.0, -10.0])
    _, unclipped = normalize_reward(state, reward, jnp.zeros(2, bool), 0.9, clip=None)
    assert np.all(np.abs(np.asarray(unclipped)) > 10.0)
    # No mean subtraction: the sign of the reward is kept.
    np.testing.assert_array_equal(np.sign(np.asarray(unclipped)), [1.0, -1.0])


def test_reward_normalization_vmaps_over_gammas():
    """A population with per-member (traced) gammas matches member-by-member runs."""
    rewards, dones = _reward_stream(num_steps=30, num_envs=2, seed=9)
    gammas = jnp.array([0.9, 0.99, 0.999], jnp.float32)
    states, normalized = jax.vmap(_run_reward_norm, in_axes=(None, None, 0))(rewards, dones, gammas)
    assert normalized.shape == (3, 30, 2)
    for k, gamma in enumerate(np.asarray(gammas)):
        reference = _NumpyVecNormalizeReward(2, float(gamma), clip=10.0)
        expected = np.stack(
            [reference.step(r.astype(np.float64), d) for r, d in zip(rewards, dones)]
        )
        np.testing.assert_allclose(np.asarray(normalized[k]), expected, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(float(states.rms.var[k]), reference.rms.var, rtol=1e-4)
