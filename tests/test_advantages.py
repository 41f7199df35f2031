"""Tests for jppo.advantages: GAE and advantage normalization."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax

from jppo import advantages
from tests.helpers import np_gae

T, B = 37, 5


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    # Catches [T, B] vs [T, B, 1] broadcasting bugs.
    with jax.numpy_rank_promotion("raise"):
        yield


# ----------------------------------------------------------------------------
# Helpers.


def _random_rollout(seed, t=T, b=B, p_term=0.08, p_trunc=0.08):
    """Random rewards/values and flags with done ⊇ terminated (float64 numpy)."""
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(t, b))
    values = rng.normal(size=(t, b))
    next_values = rng.normal(size=(t, b))
    terminated = rng.random((t, b)) < p_term
    truncated = (rng.random((t, b)) < p_trunc) & ~terminated
    done = terminated | truncated
    return rewards, values, next_values, terminated, done


def _f32(*arrays):
    return tuple(jnp.asarray(a, jnp.float32) for a in arrays)


def _run_gae(rewards, values, next_values, terminated, done, gamma, lam):
    r, v, nv = _f32(rewards, values, next_values)
    adv, ret = advantages.gae(r, v, nv, jnp.asarray(terminated), jnp.asarray(done), gamma, lam)
    chex.assert_shape([adv, ret], r.shape)
    chex.assert_type([adv, ret], jnp.float32)
    return np.asarray(adv, np.float64), np.asarray(ret, np.float64)


# ----------------------------------------------------------------------------
# GAE.


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_matches_numpy_reference(seed):
    rollout = _random_rollout(seed)
    rng = np.random.default_rng(100 + seed)
    gamma, lam = rng.uniform(0.8, 0.999), rng.uniform(0.5, 1.0)
    assert rollout[3].any() and (rollout[4] & ~rollout[3]).any()
    adv, ret = _run_gae(*rollout, gamma, lam)
    ref_adv, ref_ret = np_gae(*rollout, gamma, lam)
    np.testing.assert_allclose(adv, ref_adv, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(ret, ref_ret, atol=1e-5, rtol=1e-5)


def test_gae_accepts_float_flags():
    rollout = _random_rollout(3)
    as_float = rollout[:3] + tuple(f.astype(np.float32) for f in rollout[3:])
    np.testing.assert_allclose(
        _run_gae(*as_float, 0.97, 0.9)[0], _run_gae(*rollout, 0.97, 0.9)[0], atol=1e-6
    )


def test_gae_matches_rlax_without_truncation():
    """Same problem in rlax's convention: values of length T+1, discount_t."""
    rng = np.random.default_rng(7)
    gamma, lam = 0.97, 0.9
    rewards = rng.normal(size=(T, B))
    values_ext = rng.normal(size=(T + 1, B))  # V(s_0) .. V(s_T).
    terminated = rng.random((T, B)) < 0.1
    assert terminated.any()
    done = terminated  # No truncation.
    values = values_ext[:-1]
    # next_values_t = V(s_{t+1}) = values_{t+1} where the episode continues
    # (values[T] = next_values[T-1] at the end). At a terminated step rlax's
    # values[t+1] is the value of the reset observation, which both
    # implementations must ignore: put garbage in ours to prove it.
    next_values = np.where(terminated, rng.normal(size=(T, B)) * 100.0, values_ext[1:])

    discount_t = jnp.asarray(gamma * (1.0 - terminated), jnp.float32)
    rlax_gae = jax.vmap(
        rlax.truncated_generalized_advantage_estimation, in_axes=(1, 1, None, 1), out_axes=1
    )
    expected = rlax_gae(*_f32(rewards), discount_t, lam, *_f32(values_ext))
    adv, ret = _run_gae(rewards, values, next_values, terminated, done, gamma, lam)
    np.testing.assert_allclose(adv, np.asarray(expected), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(ret, np.asarray(expected) + values, atol=1e-5, rtol=1e-5)


def test_gae_hand_worked_example():
    # γ = 0.9, λ = 0.8, one env, three steps; step 1 is truncated (time limit,
    # final observation value 4.0), step 2 is terminated.
    #   δ_0 = 1 + 0.9·1.0 − 0.5 = 1.4
    #   δ_1 = 2 + 0.9·4.0 − 1.0 = 4.6     (truncated: still bootstraps)
    #   δ_2 = 3 + 0         − 1.5 = 1.5   (terminated: no bootstrap from 9.0)
    #   A_2 = 1.5
    #   A_1 = 4.6                           (done_1 cuts the recursion)
    #   A_0 = 1.4 + 0.9·0.8·4.6 = 4.712
    #   returns = A + V = [5.212, 5.6, 3.0]
    rewards = np.array([[1.0], [2.0], [3.0]])
    values = np.array([[0.5], [1.0], [1.5]])
    next_values = np.array([[1.0], [4.0], [9.0]])
    terminated = np.array([[False], [False], [True]])
    done = np.array([[False], [True], [True]])
    adv, ret = _run_gae(rewards, values, next_values, terminated, done, 0.9, 0.8)
    np.testing.assert_allclose(adv, [[4.712], [4.6], [1.5]], atol=1e-5)
    np.testing.assert_allclose(ret, [[5.212], [5.6], [3.0]], atol=1e-5)


def _single_env_episode_edges():
    """T=6, one env: truncated at t=1, terminated at t=3."""
    rng = np.random.default_rng(11)
    rewards, values, next_values = (rng.normal(size=(6, 1)) for _ in range(3))
    terminated = np.zeros((6, 1), bool)
    terminated[3] = True
    done = terminated.copy()
    done[1] = True
    return rewards, values, next_values, terminated, done


def test_gae_truncation_bootstraps_and_termination_does_not():
    gamma, lam = 0.9, 0.8
    rewards, values, next_values, terminated, done = _single_env_episode_edges()
    base, _ = _run_gae(rewards, values, next_values, terminated, done, gamma, lam)

    # Truncated step t=1: its advantage moves by γ·Δ (V(final obs) is used).
    bumped = next_values.copy()
    bumped[1] += 5.0
    adv, _ = _run_gae(rewards, values, bumped, terminated, done, gamma, lam)
    np.testing.assert_allclose(adv[1] - base[1], gamma * 5.0, atol=1e-5)

    # Terminated step t=3: its next value is never used anywhere.
    bumped = next_values.copy()
    bumped[3] += 5.0
    adv, _ = _run_gae(rewards, values, bumped, terminated, done, gamma, lam)
    np.testing.assert_allclose(adv, base, atol=1e-6)


def test_gae_does_not_leak_across_done_boundaries():
    gamma, lam = 0.9, 0.8
    rewards, values, next_values, terminated, done = _single_env_episode_edges()
    base, _ = _run_gae(rewards, values, next_values, terminated, done, gamma, lam)
    # Episode boundary after the truncated step t=1: rewards from t=2 on belong
    # to the next episode and must not reach A_0, A_1.
    changed = rewards.copy()
    changed[2:] += 10.0
    adv, _ = _run_gae(changed, values, next_values, terminated, done, gamma, lam)
    np.testing.assert_allclose(adv[:2], base[:2], atol=1e-6)
    assert np.all(np.abs(adv[2:] - base[2:]) > 1.0)  # Sanity: they do change.
    # Same after the terminated step t=3.
    changed = rewards.copy()
    changed[4:] += 10.0
    adv, _ = _run_gae(changed, values, next_values, terminated, done, gamma, lam)
    np.testing.assert_allclose(adv[:4], base[:4], atol=1e-6)


def test_gae_lambda_one_is_monte_carlo_return_minus_value():
    rng = np.random.default_rng(5)
    gamma = 0.95
    rewards = rng.normal(size=(T, B))
    values_ext = rng.normal(size=(T + 1, B))
    terminated = rng.random((T, B)) < 0.1
    terminated[-1] = True  # Every sequence ends in a termination.
    next_values = np.where(terminated, 123.0, values_ext[1:])  # 123: unused.
    mc = np.zeros((T, B))  # Discounted return to the end of each episode.
    running = np.zeros(B)
    for t in reversed(range(T)):
        running = rewards[t] + gamma * np.where(terminated[t], 0.0, running)
        mc[t] = running
    adv, ret = _run_gae(rewards, values_ext[:-1], next_values, terminated, terminated, gamma, 1.0)
    np.testing.assert_allclose(adv, mc - values_ext[:-1], atol=1e-4)
    np.testing.assert_allclose(ret, mc, atol=1e-4)


def test_gae_lambda_zero_is_one_step_td_error():
    rewards, values, next_values, terminated, done = _random_rollout(6)
    gamma = 0.93
    td = rewards + gamma * (1.0 - terminated) * next_values - values
    adv, ret = _run_gae(rewards, values, next_values, terminated, done, gamma, 0.0)
    np.testing.assert_allclose(adv, td, atol=1e-5)
    np.testing.assert_allclose(ret, td + values, atol=1e-5)


def test_gae_under_jit_with_traced_gamma_and_lambda():
    rollout = _random_rollout(8)
    r, v, nv = _f32(*rollout[:3])
    jitted = jax.jit(advantages.gae)
    for gamma, lam in [(0.99, 0.95), (0.9, 0.5)]:
        adv, _ = jitted(r, v, nv, rollout[3], rollout[4], jnp.float32(gamma), jnp.float32(lam))
        chex.assert_shape(adv, (T, B))
        np.testing.assert_allclose(adv, np_gae(*rollout, gamma, lam)[0], atol=1e-5, rtol=1e-5)
    assert jitted._cache_size() == 1  # Traced: no recompilation per value.


def test_gae_vmaps_over_gammas():
    rollout = _random_rollout(9)
    r, v, nv = _f32(*rollout[:3])
    gammas = jnp.array([0.5, 0.9, 0.99], jnp.float32)
    adv, ret = jax.vmap(lambda g: advantages.gae(r, v, nv, rollout[3], rollout[4], g, 0.9))(gammas)
    chex.assert_shape([adv, ret], (3, T, B))
    for i, gamma in enumerate(np.asarray(gammas, np.float64)):
        np.testing.assert_allclose(adv[i], np_gae(*rollout, gamma, 0.9)[0], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------
# Normalization.


def _adv(seed=0, shape=(64, 8), loc=3.0, scale=2.0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(loc, scale, size=shape), jnp.float32)


def _normalize(adv, mode, **kwargs):
    out = advantages.normalize(adv, mode, **kwargs)
    chex.assert_shape(out, adv.shape)
    chex.assert_type(out, adv.dtype)
    return np.asarray(out, np.float64)


@pytest.mark.parametrize("mode", ["batch", "minibatch"])
def test_normalize_batch_mean_zero_std_one(mode):
    adv = _adv()
    out = _normalize(adv, mode, clip=None)
    np.testing.assert_allclose(out.mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(), 1.0, atol=1e-5)
    expected = (np.asarray(adv, np.float64) - np.mean(adv)) / np.std(adv)
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("groups_shape", ["env_row", "full"])
def test_normalize_group_each_group_mean_zero_std_one(groups_shape):
    num_steps, num_envs = 64, 6
    env_group = np.array([0, 0, 1, 1, 2, 2])  # Contiguous blocks of envs.
    scales = np.array([0.1, 1.0, 100.0])[env_group]
    locs = np.array([-5.0, 0.0, 50.0])[env_group]
    rng = np.random.default_rng(1)
    adv = jnp.asarray(locs + scales * rng.normal(size=(num_steps, num_envs)), jnp.float32)
    groups = env_group[None, :]
    if groups_shape == "full":
        groups = np.broadcast_to(groups, (num_steps, num_envs))
    out = _normalize(adv, "group", groups=jnp.asarray(groups), clip=None)
    for g in range(3):
        member = out[:, env_group == g]
        np.testing.assert_allclose(member.mean(), 0.0, atol=1e-4)
        np.testing.assert_allclose(member.std(), 1.0, atol=1e-4)


def test_normalize_group_floor_applies_per_group():
    # Group 0 is near-constant (std 1e-4): only centered; group 1 is scaled.
    rng = np.random.default_rng(2)
    adv = np.stack([7.0 + 1e-4 * rng.normal(size=32), 5.0 * rng.normal(size=32)], axis=1)
    out = _normalize(jnp.asarray(adv, jnp.float32), "group", groups=jnp.array([[0, 1]]), clip=None)
    np.testing.assert_allclose(out[:, 0], adv[:, 0] - adv[:, 0].mean(), atol=1e-5)
    np.testing.assert_allclose(out[:, 1].std(), 1.0, atol=1e-4)


def test_normalize_group_is_jittable_with_num_groups():
    adv = _adv(shape=(16, 4))
    groups = jnp.array([[0, 0, 1, 1]])
    fn = jax.jit(lambda a, g: advantages.normalize(a, "group", groups=g, num_groups=2, clip=None))
    out = fn(adv, groups)
    chex.assert_shape(out, adv.shape)
    np.testing.assert_allclose(out, _normalize(adv, "group", groups=groups, clip=None), atol=1e-5)
    # Without a static num_groups, traced groups cannot be counted.
    with pytest.raises(ValueError, match="num_groups"):
        jax.jit(lambda a, g: advantages.normalize(a, "group", groups=g))(adv, groups)


def test_normalize_robust_median_zero_iqr_one():
    rng = np.random.default_rng(3)
    adv = jnp.asarray(rng.standard_t(df=2, size=(50, 9)) * 4.0 + 2.0, jnp.float32)
    out = _normalize(adv, "robust", clip=None)
    q25, median, q75 = np.quantile(out, [0.25, 0.5, 0.75])
    np.testing.assert_allclose(median, 0.0, atol=1e-5)
    np.testing.assert_allclose(q75 - q25, 1.0, atol=1e-5)


def test_normalize_scale_preserves_signs_std_one_not_centered():
    adv = _adv(loc=3.0, scale=2.0)
    out = _normalize(adv, "scale", clip=None)
    np.testing.assert_array_equal(np.sign(out), np.sign(np.asarray(adv)))
    np.testing.assert_allclose(out.std(), 1.0, atol=1e-5)
    assert out.mean() > 1.0  # ≈ 1.5: the mean is not removed.
    np.testing.assert_allclose(out, np.asarray(adv) / np.std(adv), atol=1e-5)


def test_normalize_scale_divides_by_floor_when_std_small():
    rng = np.random.default_rng(4)
    adv = jnp.asarray(2.0 + 1e-4 * rng.normal(size=(100,)), jnp.float32)
    out = _normalize(adv, "scale", std_floor=1e-2, clip=None)
    np.testing.assert_allclose(out, np.asarray(adv) / 1e-2, rtol=1e-5)


def test_normalize_none_is_identity_and_not_clipped():
    adv = _adv() * 1e6
    out = advantages.normalize(adv, "none")
    chex.assert_shape(out, adv.shape)
    np.testing.assert_array_equal(out, adv)
    assert np.abs(np.asarray(out)).max() > 1e6


@pytest.mark.parametrize("mode", ["batch", "robust"])
def test_normalize_std_floor_only_centers_near_constant(mode):
    rng = np.random.default_rng(5)
    raw = 4.0 + 1e-4 * rng.normal(size=(200,))
    adv = jnp.asarray(raw, jnp.float32)
    out = _normalize(adv, mode)
    center = np.mean(adv) if mode == "batch" else np.median(adv)
    np.testing.assert_allclose(out, np.asarray(adv, np.float64) - center, atol=1e-5)
    assert np.abs(out).max() < 1e-3  # Not blown up to unit scale.


def test_normalize_clips_outliers_and_clip_none_disables():
    adv = np.asarray(_adv(shape=(1000,), loc=0.0, scale=1.0)).copy()
    adv[0] = 1e4
    adv = jnp.asarray(adv)
    clipped = _normalize(adv, "batch")  # Default clip 10.
    np.testing.assert_allclose(clipped[0], 10.0)
    assert np.abs(clipped).max() <= 10.0
    unclipped = _normalize(adv, "batch", clip=None)
    assert unclipped[0] > 30.0  # ≈ sqrt(N − 1) ≈ 31.6.
    small = _normalize(adv, "scale", clip=2.0)
    assert np.abs(small).max() == pytest.approx(2.0)


def test_normalize_preserves_low_precision_dtype():
    adv = _adv().astype(jnp.bfloat16)
    out = advantages.normalize(adv, "batch")
    chex.assert_type(out, jnp.bfloat16)
    chex.assert_shape(out, adv.shape)


def test_normalize_unknown_mode_raises():
    with pytest.raises(ValueError, match="batch.*minibatch.*group.*robust"):
        advantages.normalize(_adv(), "per_env")


def test_gae_rejects_mismatched_value_shape():
    # The classic PPO bug: values [T, B, 1] against rewards [T, B].
    rewards, values, next_values, terminated, done = _random_rollout(10)
    with pytest.raises(AssertionError):
        advantages.gae(*_f32(rewards, values[..., None], next_values), terminated, done, 0.99, 0.95)
