"""Tests for jppo.losses against float64 numpy references, rlax and distrax.

The library computes in float32; references are float64 numpy. Every test runs
under `jax.numpy_rank_promotion("raise")`, so an implicit `[N]` vs `[..., N]`
broadcast in the library is an error, not a silent bug.
"""

import functools

import chex
import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import rlax

from jppo import losses
from tests.helpers import np_cvar, np_log_softmax

RTOL = 1e-5
ATOL = 1e-6


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    with jax.numpy_rank_promotion("raise"):
        yield


def _f32(x):
    return jnp.asarray(np.asarray(x, np.float64), jnp.float32)


def _all_finite(tree):
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree))


# ----------------------------------------------------------------------------
# clipped_surrogate


def _np_surrogate(lp, old, adv, eps, c):
    """float64 reference of the clipped surrogate for finite inputs."""
    lp, old, adv = (np.asarray(x, np.float64) for x in (lp, old, adv))
    log_ratio = lp - old
    if c is not None:
        log_ratio = np.clip(log_ratio, -c, c)
    ratio = np.exp(log_ratio)
    surrogate = np.minimum(ratio * adv, np.clip(ratio, 1 - eps, 1 + eps) * adv)
    return -surrogate.mean(), ratio


@functools.partial(jax.jit, static_argnames="log_ratio_clip")
def _surrogate_and_grad(log_prob, old_log_prob, adv, clip_eps, log_ratio_clip):
    """(loss, aux, ∂loss/∂log_prob) of clipped_surrogate, compiled once."""

    def loss_fn(lp):
        return losses.clipped_surrogate(lp, old_log_prob, adv, clip_eps, log_ratio_clip)

    (loss, aux), grad = jax.value_and_grad(loss_fn, has_aux=True)(log_prob)
    return loss, aux, grad


@pytest.mark.parametrize("log_ratio_clip", [None, 0.3, 10.0])
def test_surrogate_matches_numpy_reference(log_ratio_clip):
    rng = np.random.default_rng(0)
    lp = rng.normal(-1.0, 0.5, 256)
    old = lp + rng.normal(0.0, 0.4, 256)  # |log-ratio| > 0.3 for a fair share.
    adv = rng.normal(0.0, 2.0, 256)
    loss, aux, _ = _surrogate_and_grad(_f32(lp), _f32(old), _f32(adv), 0.2, log_ratio_clip)
    ref_loss, ref_ratio = _np_surrogate(lp, old, adv, 0.2, log_ratio_clip)

    chex.assert_shape(loss, ())
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(aux["ratio_mean"], ref_ratio.mean(), rtol=1e-5)
    np.testing.assert_allclose(aux["ratio_min"], ref_ratio.min(), rtol=1e-5)
    np.testing.assert_allclose(aux["ratio_max"], ref_ratio.max(), rtol=1e-5)
    np.testing.assert_allclose(
        aux["clip_fraction"], np.mean(np.abs(ref_ratio - 1) > 0.2), atol=1e-6
    )
    expected_clamped = 0.0 if log_ratio_clip is None else np.mean(np.abs(lp - old) > log_ratio_clip)
    np.testing.assert_allclose(aux["log_ratio_clamped_fraction"], expected_clamped, atol=1e-6)
    assert float(aux["nonfinite_ratio_count"]) == 0.0
    if log_ratio_clip == 0.3:
        assert 0.1 < expected_clamped < 0.9  # The clamp really is exercised.


def test_surrogate_traced_hyperparameters_under_jit():
    rng = np.random.default_rng(1)
    lp, old, adv = (_f32(rng.normal(size=32)) for _ in range(3))
    fn = jax.jit(losses.clipped_surrogate)
    loss, aux = fn(lp, old, adv, jnp.float32(0.1), jnp.float32(0.5))
    ref_loss, _ = _np_surrogate(lp, old, adv, 0.1, 0.5)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert set(aux) == {
        "ratio_mean",
        "ratio_min",
        "ratio_max",
        "clip_fraction",
        "log_ratio_clamped_fraction",
        "nonfinite_ratio_count",
    }
    for value in aux.values():
        chex.assert_shape(value, ())


def test_surrogate_overflow_demonstration():
    """The classic overflow: log-probs 1e4 apart.

    float32 exp overflows above a log-ratio of ~88.7. Without the clamp,
    r = exp(1e4) = inf: with A < 0 the surrogate min(r·A, …) is −inf (loss inf),
    and the gradient A·r·(…) is inf·0 = NaN. With the clamp c = 10 (the
    default) r ≤ e^10 ≈ 22026 and loss and gradient are finite.
    """
    old = _f32([-1.0, -1.0, -1.0, -1.0])
    lp = old + _f32([1e4, -1e4, 1e4, -1e4])
    adv = _f32([1.0, 1.0, -1.0, -1.0])

    loss, aux, grad = _surrogate_and_grad(lp, old, adv, 0.2, 10.0)
    assert _all_finite((loss, grad, aux))
    ref_loss, _ = _np_surrogate(lp, old, adv, 0.2, 10.0)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(aux["ratio_max"], np.exp(10.0), rtol=1e-5)
    assert float(aux["log_ratio_clamped_fraction"]) == 1.0
    assert float(aux["nonfinite_ratio_count"]) == 0.0

    loss_none, aux_none, grad_none = _surrogate_and_grad(lp, old, adv, 0.2, None)
    assert not np.isfinite(float(loss_none))
    assert not np.all(np.isfinite(np.asarray(grad_none)))
    assert float(aux_none["ratio_max"]) == np.inf
    assert float(aux_none["nonfinite_ratio_count"]) == 2.0


def test_surrogate_overflow_beyond_a_large_clamp_is_replaced():
    # c = 1000 > 88.7: exp of the clamped log-ratio still overflows float32; that
    # ratio is replaced by 1 and counted, and the gradient stays finite (0 there).
    old = _f32([-1.0, -1.0, -1.0])
    lp = old + _f32([1e4, 50.0, 0.1])
    adv = _f32([-1.0, -1.0, 1.0])
    loss, aux, grad = _surrogate_and_grad(lp, old, adv, 0.2, 1000.0)
    assert _all_finite((loss, aux, grad))
    assert float(aux["nonfinite_ratio_count"]) == 1.0
    # −mean(1·(−1), min(−e^50, −1.2), min(e^0.1, 1.2)·1)
    np.testing.assert_allclose(loss, -(-1.0 - np.exp(50.0) + np.exp(0.1)) / 3, rtol=1e-5)
    np.testing.assert_array_equal(grad[0], 0.0)


@pytest.mark.parametrize("log_ratio_clip", [None, 10.0])
def test_surrogate_replaces_nonfinite_log_probs(log_ratio_clip):
    lp = _f32([np.nan, np.inf, -np.inf, -0.5, -1.2])
    old = _f32([-1.0, -1.0, -1.0, -np.inf, -1.0])
    adv = _f32([1.0, -2.0, 3.0, 4.0, 0.5])

    loss, aux, grad = _surrogate_and_grad(lp, old, adv, 0.2, log_ratio_clip)
    # Four bad samples count as r = 1 (contribute A); the last is ordinary,
    # r = e^-0.2 = 0.819 inside [0.8, 1.2], so it contributes r·A.
    r_last = np.exp(-0.2)
    expected = -(1.0 - 2.0 + 3.0 + 4.0 + r_last * 0.5) / 5
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert float(aux["nonfinite_ratio_count"]) == 4.0
    assert _all_finite((grad, aux))
    np.testing.assert_array_equal(grad[:4], 0.0)
    np.testing.assert_allclose(grad[4], -r_last * 0.5 / 5, rtol=1e-5)


def test_surrogate_fractions_hand_checked():
    diffs = np.array([0.0, 0.1, -0.3, 0.25, 2.0, -5.0])
    # ratios 1, 1.105, 0.741, 1.284, then clamped to e^1 = 2.718 and e^-1 = 0.368:
    # |r − 1| > 0.2 for the last four (4/6); |log-ratio| > 1 for the last two.
    old = _f32(np.full(6, -2.0))
    _, aux, _ = _surrogate_and_grad(old + _f32(diffs), old, _f32(np.ones(6)), 0.2, 1.0)
    np.testing.assert_allclose(aux["clip_fraction"], 4 / 6, rtol=1e-6)
    np.testing.assert_allclose(aux["log_ratio_clamped_fraction"], 2 / 6, rtol=1e-6)
    np.testing.assert_allclose(aux["ratio_max"], np.e, rtol=1e-5)
    np.testing.assert_allclose(aux["ratio_min"], 1 / np.e, rtol=1e-5)


def test_surrogate_gradient_sign():
    """Descending the loss raises log π where A > 0 and lowers it where A < 0."""
    lp = _f32([-1.0, -1.0, -2.0, -2.0])
    adv = _f32([2.0, 0.5, -1.0, -3.0])
    _, _, grad = _surrogate_and_grad(lp, lp, adv, 0.2, 10.0)
    # At r = 1 the surrogate is unclipped: ∂loss/∂log π = −A/M.
    np.testing.assert_allclose(grad, -np.asarray(adv) / 4, rtol=1e-6)
    new_lp = lp - 0.1 * grad
    assert np.all(np.sign(np.asarray(new_lp - lp)) == np.sign(np.asarray(adv)))


# ----------------------------------------------------------------------------
# kl


def _categorical_params(rng, shape=(16,), num_actions=5):
    return _f32(rng.normal(size=shape + (num_actions,)))


def _gaussian_params(rng, shape=(16,), dim=3):
    return (
        _f32(rng.normal(size=shape + (dim,))),
        _f32(np.exp(rng.normal(0.0, 0.3, size=shape + (dim,)))),
    )


@jax.jit
def _exact_kls(old_logits, new_logits, old_gauss, new_gauss):
    """jppo's and distrax's exact KL for Categorical and diagonal Gaussian."""
    cat_old = distrax.Categorical(logits=old_logits)
    cat_new = distrax.Categorical(logits=new_logits)
    actions = cat_old.mode()
    cat = losses.kl(cat_old, cat_new, cat_old.log_prob(actions), cat_new.log_prob(actions), "exact")
    gauss_old = distrax.MultivariateNormalDiag(*old_gauss)
    gauss_new = distrax.MultivariateNormalDiag(*new_gauss)
    gauss = losses.kl(gauss_old, gauss_new, None, None, "exact")
    return (cat, cat_old.kl_divergence(cat_new), gauss, gauss_old.kl_divergence(gauss_new))


def test_kl_exact_matches_distrax_and_closed_forms():
    rng = np.random.default_rng(2)
    old_logits, new_logits = _categorical_params(rng), _categorical_params(rng)
    old_gauss, new_gauss = _gaussian_params(rng), _gaussian_params(rng)
    cat, cat_distrax, gauss, gauss_distrax = _exact_kls(
        old_logits, new_logits, old_gauss, new_gauss
    )

    chex.assert_shape([cat, gauss], (16,))  # Gaussian: summed over 3 dims.
    np.testing.assert_allclose(cat, cat_distrax, rtol=1e-6)
    np.testing.assert_allclose(gauss, gauss_distrax, rtol=1e-6)
    log_p_old = np_log_softmax(old_logits)
    log_p_new = np_log_softmax(new_logits)
    np.testing.assert_allclose(
        cat, np.sum(np.exp(log_p_old) * (log_p_old - log_p_new), -1), rtol=1e-4, atol=1e-6
    )
    (m1, s1), (m2, s2) = ([np.asarray(x, np.float64) for x in g] for g in (old_gauss, new_gauss))
    closed = np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
    np.testing.assert_allclose(gauss, closed.sum(-1), rtol=1e-4, atol=1e-6)


def test_kl_seed_gaussian_example():
    """Deep-analysis #2: KL(N(0,1) ‖ N(0,2)) = log 2 + 1/8 − 1/2 = 0.3181."""

    @jax.jit
    def exact_and_k1_at_zero():
        old = distrax.MultivariateNormalDiag(jnp.zeros((1, 1)), jnp.ones((1, 1)))
        new = distrax.MultivariateNormalDiag(jnp.zeros((1, 1)), 2 * jnp.ones((1, 1)))
        a = jnp.zeros((1, 1))
        return (
            losses.kl(old, new, None, None, "exact"),
            losses.kl(None, None, old.log_prob(a), new.log_prob(a), "k1"),
        )

    result, k1 = exact_and_k1_at_zero()
    np.testing.assert_allclose(result, [np.log(2) + 1 / 8 - 1 / 2], rtol=1e-6)
    np.testing.assert_allclose(result, [0.3181], atol=1e-4)
    # The seed's k1 at a = 0 is log 2 ≈ 0.693: a single sample is far off.
    np.testing.assert_allclose(k1, [np.log(2)], rtol=1e-6)


def test_kl_k1_k3_formulas_and_k3_nonnegative():
    rng = np.random.default_rng(3)
    old = np.concatenate([rng.normal(-1, 2, 200), [-1.0, -1.0, -3.0]])
    new = np.concatenate([rng.normal(-1, 2, 200), [-1.0, -1.0 + 1e-6, 5.0]])
    k1 = losses.kl(None, None, _f32(old), _f32(new), "k1")
    k3 = losses.kl(None, None, _f32(old), _f32(new), "k3")
    default = losses.kl(None, None, _f32(old), _f32(new))
    chex.assert_shape([k1, k3], (203,))
    np.testing.assert_allclose(k1, old - new, rtol=1e-5, atol=1e-5)
    log_r = new - old
    np.testing.assert_allclose(k3, np.expm1(log_r) - log_r, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(default, k3)
    assert np.all(np.asarray(k3) >= 0.0)
    assert np.any(np.asarray(k1) < 0.0)  # k1 is only unbiased, not positive.
    # Near r = 1, expm1 keeps the second-order term: k3 ≈ (log r)²/2.
    small = losses.kl(None, None, _f32([0.0]), _f32([1e-3]), "k3")
    np.testing.assert_allclose(small, [0.5e-6], rtol=1e-2)


@pytest.mark.parametrize("family", ["categorical", "gaussian"])
def test_kl_monte_carlo_estimators_match_exact(family):
    rng = np.random.default_rng(4)
    # The new policy is a PPO-sized step away from the old (KL ~ 0.01 … 0.5).
    if family == "categorical":
        old_logits = _categorical_params(rng, (4,))
        params = (old_logits, old_logits + _f32(rng.normal(0, 0.5, (4, 5))))
        make = lambda logits: distrax.Categorical(logits=logits)  # noqa: E731
    else:
        mean, scale = _gaussian_params(rng, (4,))
        params = (
            (mean, scale),
            (
                mean + _f32(rng.normal(0, 0.3, (4, 3))),
                scale * _f32(np.exp(rng.normal(0, 0.2, (4, 3)))),
            ),
        )
        make = lambda p: distrax.MultivariateNormalDiag(*p)  # noqa: E731

    @jax.jit
    def estimates(old_params, new_params, key):
        old, new = make(old_params), make(new_params)
        with jax.numpy_rank_promotion("allow"):  # distrax: [S, 4] vs [4].
            actions = old.sample(seed=key, sample_shape=(50_000,))
            old_lp, new_lp = old.log_prob(actions), new.log_prob(actions)  # [S, 4]
        k1 = losses.kl(old, new, old_lp, new_lp, "k1")
        k3 = losses.kl(old, new, old_lp, new_lp, "k3")
        chex.assert_shape([k1, k3], (50_000, 4))
        return k1.mean(0), k3.mean(0), old.kl_divergence(new)

    k1, k3, exact = estimates(*params, jax.random.key(1))
    assert np.all(np.asarray(exact) > 0.01)
    np.testing.assert_allclose(k1, exact, rtol=0.05, atol=0.01)
    np.testing.assert_allclose(k3, exact, rtol=0.05, atol=0.01)


def test_kl_unknown_estimator():
    with pytest.raises(ValueError, match="k2"):
        losses.kl(None, None, jnp.zeros(2), jnp.zeros(2), "k2")


# ----------------------------------------------------------------------------
# value_loss


def _np_value_error(x, kind, delta):
    mse = 0.5 * x**2
    huber = np.where(np.abs(x) <= delta, 0.5 * x**2, delta * (np.abs(x) - 0.5 * delta))
    mixed = 0.5 * mse + 0.5 * huber
    return {"mse": mse, "huber": huber, "mse_huber": mixed}[kind]


@pytest.mark.parametrize("kind", ["mse", "huber", "mse_huber"])
@pytest.mark.parametrize("vf_clip", [None, 0.3])
def test_value_loss_matches_numpy(kind, vf_clip):
    rng = np.random.default_rng(5)
    pred, old, target = (rng.normal(0, 2, 128) for _ in range(3))
    delta = 1.5
    loss = losses.value_loss(_f32(pred), _f32(old), _f32(target), kind, vf_clip, delta)
    expected = _np_value_error(pred - target, kind, delta)
    if vf_clip is not None:
        pred_clipped = old + np.clip(pred - old, -vf_clip, vf_clip)
        expected = np.maximum(expected, _np_value_error(pred_clipped - target, kind, delta))
    chex.assert_shape(loss, ())
    np.testing.assert_allclose(loss, expected.mean(), rtol=1e-5)


def test_value_loss_vf_clip_takes_the_max():
    mse = lambda x: 0.5 * x**2  # noqa: E731
    # old = 0, pred = 2, c = 0.5 ⇒ pred_clipped = 0.5.
    # Target 3: clipped error 2.5 beats unclipped error 1 ⇒ the clipped loss.
    loss = losses.value_loss(_f32([2.0]), _f32([0.0]), _f32([3.0]), "mse", 0.5)
    np.testing.assert_allclose(loss, mse(2.5), rtol=1e-6)
    # Target 0: unclipped error 2 beats clipped error 0.5 ⇒ the unclipped loss.
    loss = losses.value_loss(_f32([2.0]), _f32([0.0]), _f32([0.0]), "mse", 0.5)
    np.testing.assert_allclose(loss, mse(2.0), rtol=1e-6)
    # Both samples together: the per-sample max, then the mean.
    loss = losses.value_loss(_f32([2.0, 2.0]), _f32([0.0, 0.0]), _f32([3.0, 0.0]), "mse", 0.5)
    np.testing.assert_allclose(loss, (mse(2.5) + mse(2.0)) / 2, rtol=1e-6)
    # vf_clip may be traced.
    traced = jax.jit(lambda c: losses.value_loss(_f32([2.0]), _f32([0.0]), _f32([3.0]), "mse", c))(
        jnp.float32(0.5)
    )
    np.testing.assert_allclose(traced, mse(2.5), rtol=1e-6)


def test_huber_linear_beyond_delta():
    delta = 2.0
    errors = _f32([0.5, 2.0, 3.0, 5.0, 10.0, -10.0])
    zeros = jnp.zeros(1)

    @jax.jit
    def per_sample_and_grad(errors):
        single = lambda e: losses.value_loss(  # noqa: E731
            e[None], zeros, zeros, "huber", None, delta
        )
        return jax.vmap(single)(errors), jax.vmap(jax.grad(single))(errors)

    per, grad = per_sample_and_grad(errors)
    # 0.5·x² inside, δ·(|x| − δ/2) outside: 0.125, 2, 4, 8, 18, 18.
    np.testing.assert_allclose(per, [0.125, 2.0, 4.0, 8.0, 18.0, 18.0], rtol=1e-6)
    np.testing.assert_allclose(per, optax.huber_loss(errors, delta=delta), rtol=1e-6)
    assert float(per[4] - per[3]) == pytest.approx(delta * 5.0)  # Slope δ.
    np.testing.assert_allclose(grad, [0.5, 2.0, 2.0, 2.0, 2.0, -2.0], rtol=1e-6)


def test_value_loss_unknown_kind():
    with pytest.raises(ValueError, match="l1"):
        losses.value_loss(jnp.zeros(2), jnp.zeros(2), jnp.zeros(2), "l1")


# ----------------------------------------------------------------------------
# quantile_huber_loss


def test_quantile_midpoints():
    taus = losses.quantile_midpoints(4)
    chex.assert_shape(taus, (4,))
    np.testing.assert_allclose(taus, [0.125, 0.375, 0.625, 0.875])


@pytest.mark.parametrize("kappa", [0.0, 1.0, 2.0])
def test_quantile_huber_matches_rlax(kappa):
    rng = np.random.default_rng(6)
    pred = _f32(rng.normal(0, 2, (6, 8)))
    target = _f32(rng.normal(0, 2, (6, 5)))
    custom = _f32(np.sort(rng.uniform(size=8)))  # Non-midpoint taus.

    def rlax_loss(p, taus):
        return jax.vmap(lambda q, t: rlax.quantile_regression_loss(q, taus, t, huber_param=kappa))(
            p, target
        ).mean()

    @jax.jit
    def compare(pred):
        midpoints = losses.quantile_midpoints(8)
        ours = lambda p, taus=None: losses.quantile_huber_loss(  # noqa: E731
            p, target, kappa, taus
        )
        return (
            (ours(pred), rlax_loss(pred, midpoints)),
            (ours(pred, custom), rlax_loss(pred, custom)),
            (jax.grad(ours)(pred), jax.grad(rlax_loss)(pred, midpoints)),
        )

    (loss, ref), (loss_custom, ref_custom), (grad, ref_grad) = compare(pred)
    chex.assert_shape(loss, ())
    np.testing.assert_allclose(loss, ref, rtol=1e-5)
    np.testing.assert_allclose(loss_custom, ref_custom, rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-7)


def test_quantile_huber_hand_example():
    # N = 2, τ = (0.25, 0.75), θ = (0, 1); M = 3 targets y = (−1, 0.5, 3); κ = 1.
    # i = 0 (θ=0, τ=.25): δ = (−1, .5, 3), w = |τ − 1{δ<0}| = (.75, .25, .25),
    #   Huber = (.5, .125, 3 − .5 = 2.5), w·H = (.375, .03125, .625): sum 1.03125.
    # i = 1 (θ=1, τ=.75): δ = (−2, −.5, 2), w = (.25, .25, .75),
    #   Huber = (1.5, .125, 1.5), w·H = (.375, .03125, 1.125): sum 1.53125.
    # loss = 1.03125/3 + 1.53125/3 = 2.5625/3 = 0.854166…
    # κ = 0 (|δ|): i = 0: .75 + .125 + .75 = 1.625;
    #   i = 1: .5 + .125 + 1.5 = 2.125;
    #   loss = 3.75/3 = 1.25.
    pred = _f32([0.0, 1.0])
    target = _f32([-1.0, 0.5, 3.0])
    np.testing.assert_allclose(losses.quantile_huber_loss(pred, target, 1.0), 2.5625 / 3, rtol=1e-6)
    np.testing.assert_allclose(losses.quantile_huber_loss(pred, target, 0.0), 1.25, rtol=1e-6)
    np.testing.assert_allclose(
        jax.jit(losses.quantile_huber_loss)(pred, target, jnp.float32(0.0)), 1.25, rtol=1e-6
    )


def test_quantile_huber_batch_and_scalar_targets():
    rng = np.random.default_rng(7)
    pred = _f32(rng.normal(size=(3, 4, 8)))  # [T, B, N]
    returns = _f32(rng.normal(size=(3, 4)))  # scalar λ-returns [T, B]

    @jax.jit
    def batched_single_and_target_grad(returns):
        loss = losses.quantile_huber_loss(pred, returns[..., None], 1.0)
        single = lambda q, y: losses.quantile_huber_loss(q, y[None], 1.0)  # noqa
        per = jax.vmap(jax.vmap(single))(pred, returns)  # One example at a time.
        target_grad = jax.grad(lambda y: losses.quantile_huber_loss(pred, y, 1.0))(
            returns[..., None]
        )
        return loss, per, target_grad

    loss, per, target_grad = batched_single_and_target_grad(returns)
    chex.assert_shape(per, (3, 4))
    np.testing.assert_allclose(loss, np.mean(per), rtol=1e-5)
    np.testing.assert_array_equal(target_grad, 0.0)  # Targets: stop-gradient.


def test_quantile_huber_fit_recovers_true_quantiles():
    """Gradient descent of 8 free quantiles on N(1, 2²) samples lands at the τ_i
    quantiles 1 + 2·Φ⁻¹(τ_i) (κ = 0: the pure quantile loss, whose minimizer is
    exactly the τ-quantile)."""
    num_quantiles, num_samples, num_steps = 8, 4096, 400
    optimizer = optax.adam(optax.cosine_decay_schedule(0.1, num_steps, 0.01))

    @jax.jit
    def fit(key):
        def step(carry, step_key):
            theta, opt_state = carry
            samples = 1.0 + 2.0 * jax.random.normal(step_key, (num_samples,))
            grad = jax.grad(losses.quantile_huber_loss)(theta, samples, 0.0)
            updates, opt_state = optimizer.update(grad, opt_state)
            return (optax.apply_updates(theta, updates), opt_state), None

        theta = jnp.zeros(num_quantiles)
        (theta, _), _ = jax.lax.scan(
            step, (theta, optimizer.init(theta)), jax.random.split(key, num_steps)
        )
        return theta

    theta = fit(jax.random.key(3))
    taus = losses.quantile_midpoints(num_quantiles)
    expected = 1.0 + 2.0 * jax.scipy.special.ndtri(taus)
    np.testing.assert_allclose(theta, expected, atol=0.03)  # Seen: ≤ 0.01.


# ----------------------------------------------------------------------------
# cvar


@pytest.mark.parametrize("alpha", [0.1, 0.25, 0.3, 0.05, 1 / 32, 1.0])
def test_cvar_matches_numpy(alpha):
    # N = 16: αN = 1.6, 4, 4.8, 0.8 (< 1), 0.5 (< 1), 16.
    rng = np.random.default_rng(8)
    quantiles = rng.normal(size=(5, 3, 16))
    result = losses.cvar(_f32(quantiles), alpha)
    chex.assert_shape(result, (5, 3))
    np.testing.assert_allclose(result, np_cvar(quantiles, alpha), rtol=1e-5, atol=1e-6)


def test_cvar_known_values():
    q = _f32([4.0, 1.0, 3.0, 2.0])  # Unsorted on purpose.
    np.testing.assert_allclose(losses.cvar(q, 1.0), 2.5, rtol=1e-6)  # The mean.
    np.testing.assert_allclose(losses.cvar(q, 0.5), 1.5, rtol=1e-6)  # (1 + 2)/2
    np.testing.assert_allclose(losses.cvar(q, 0.125), 1.0, rtol=1e-6)  # αN < 1
    # αN = 1.5: (1·1 + 0.5·2)/1.5.
    np.testing.assert_allclose(losses.cvar(q, 0.375), 2.0 / 1.5, rtol=1e-6)
    traced = jax.jit(losses.cvar)(q, jnp.float32(0.375))
    np.testing.assert_allclose(traced, 2.0 / 1.5, rtol=1e-6)


# ----------------------------------------------------------------------------
# clip_quantiles and quantile_value_loss


def test_clip_quantiles_mean_shift_preserves_shape():
    rng = np.random.default_rng(9)
    pred = _f32(rng.normal(0, 2, (64, 8)))
    old = _f32(rng.normal(0, 2, (64, 8)))
    c = 0.3
    out = losses.clip_quantiles(pred, old, c, "mean_shift")
    chex.assert_shape(out, (64, 8))
    np.testing.assert_allclose(
        out - out.mean(-1, keepdims=True), pred - pred.mean(-1, keepdims=True), atol=1e-5
    )
    change = np.asarray(out.mean(-1) - old.mean(-1))
    assert np.all(np.abs(change) <= c + 1e-5)
    inside = np.abs(np.asarray(pred.mean(-1) - old.mean(-1))) <= c
    assert inside.any() and not inside.all()
    np.testing.assert_allclose(out[inside], pred[inside], atol=1e-6)
    # The seed's example: [6..10] from [1..5], c = 0.5 ⇒ [1.5..5.5].
    np.testing.assert_allclose(
        losses.clip_quantiles(_f32([6, 7, 8, 9, 10]), _f32([1, 2, 3, 4, 5]), 0.5, "mean_shift"),
        [1.5, 2.5, 3.5, 4.5, 5.5],
        rtol=1e-6,
    )


def test_clip_quantiles_per_quantile():
    rng = np.random.default_rng(10)
    pred = _f32(rng.normal(0, 1, (64, 8)))
    old = _f32(rng.normal(0, 1, (64, 8)))
    c = 0.3
    out = losses.clip_quantiles(pred, old, c, "per_quantile")
    chex.assert_shape(out, (64, 8))
    assert np.all(np.abs(np.asarray(out - old)) <= c + 1e-6)
    inside = np.abs(np.asarray(pred - old)) <= c
    np.testing.assert_allclose(out[inside], pred[inside], atol=1e-6)
    np.testing.assert_allclose(
        losses.clip_quantiles(_f32([6, 7]), _f32([1, 8]), 0.5, "per_quantile"),
        [1.5, 7.5],
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="median"):
        losses.clip_quantiles(pred, old, c, "median")


@pytest.mark.parametrize("mode", ["mean_shift", "per_quantile"])
def test_quantile_value_loss_takes_per_example_max(mode):
    # Both examples: old = (0, 0), pred = (2, 2), c = 0.5 ⇒ clipped = (0.5, 0.5)
    # in both modes. τ = (.25, .75), κ = 1, one target y per example:
    # Example 0, y = 3: unclipped δ = 1:   Huber .5,   Σ_i τ_i·.5      = 0.5
    #                   clipped   δ = 2.5: Huber 2,    Σ_i τ_i·2       = 2.0 ← max
    # Example 1, y = 0: unclipped δ = −2:  Huber 1.5,  Σ_i (1−τ_i)·1.5 = 1.5 ← max
    #                   clipped   δ = −.5: Huber .125, Σ_i (1−τ_i)·.125 = 0.125
    # Per-example max, then mean: (2 + 1.5)/2 = 1.75. (Max of the means would be
    # max(1.0, 1.0625).)
    pred = _f32([[2.0, 2.0], [2.0, 2.0]])
    old = jnp.zeros((2, 2))
    targets = _f32([[3.0], [0.0]])

    @jax.jit
    def all_losses(pred):
        return (
            losses.quantile_value_loss(pred, old, targets, 1.0, 0.5, mode),
            losses.quantile_value_loss(pred, old, targets, 1.0),
            losses.quantile_huber_loss(pred, targets, 1.0),
            losses.quantile_huber_loss(jnp.full_like(pred, 0.5), targets, 1.0),
        )

    loss, loss_no_clip, unclipped, clipped = all_losses(pred)
    chex.assert_shape(loss, ())
    np.testing.assert_allclose(unclipped, (0.5 + 1.5) / 2, rtol=1e-6)
    np.testing.assert_allclose(clipped, (2.0 + 0.125) / 2, rtol=1e-6)
    np.testing.assert_allclose(loss, 1.75, rtol=1e-6)
    # Without vf_clip it is the plain quantile Huber loss.
    np.testing.assert_allclose(loss_no_clip, unclipped, rtol=1e-6)


# ----------------------------------------------------------------------------
# awr_bc_loss


def test_awr_weights_capped_and_stop_gradient():
    beta, max_weight = 5.0, 100.0
    adv = _f32([-10.0, 0.0, 3.0, 20.0, 24.0, 50.0, 1e4])
    log_prob = _f32([-1.0, -2.0, -0.5, -1.5, -3.0, -0.1, -2.5])
    loss, weights = losses.awr_bc_loss(log_prob, adv, beta, max_weight)
    chex.assert_shape(weights, (7,))
    expected = np.exp(np.minimum(np.asarray(adv, np.float64) / beta, np.log(100)))
    np.testing.assert_allclose(weights, expected, rtol=1e-5)
    assert np.all(np.asarray(weights) <= max_weight * (1 + 1e-6))
    np.testing.assert_allclose(weights[-3:], max_weight, rtol=1e-5)
    np.testing.assert_allclose(
        loss, -np.mean(expected * np.asarray(log_prob, np.float64)), rtol=1e-5
    )
    grad_lp, grad_adv = jax.grad(
        lambda lp, a: losses.awr_bc_loss(lp, a, beta, max_weight)[0], argnums=(0, 1)
    )(log_prob, adv)
    np.testing.assert_allclose(grad_lp, -expected / 7, rtol=1e-5)
    np.testing.assert_array_equal(grad_adv, 0.0)
