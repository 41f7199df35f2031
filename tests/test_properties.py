"""Property tests (hypothesis) of the RL math against float64 numpy re-derivations.

GAE's identities (λ = 1 is the Monte-Carlo return minus the value, λ = 0 the TD error,
truncation bootstraps and termination does not), running statistics under any split of the
data, each advantage-normalization mode's defining property, and the clipped surrogate's
region of zero gradient. Shapes are fixed so that each jitted function compiles once.
"""

import jax
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jppo import advantages, losses
from jppo.normalize import RunningMeanStd

T, B = 12, 3
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_gae = jax.jit(advantages.gae)


def _floats(shape, lo=-10.0, hi=10.0):
    return hnp.arrays(np.float32, shape, elements=st.floats(lo, hi, width=32))


@st.composite
def _rollouts(draw):
    """Rewards, values, next values and episode-end flags [T, B]: terminated ⊂ done.

    As in a real rollout, V(next obs) is the next step's value inside an episode; at an
    episode end (and after the last step) it values the final observation, free here."""
    terminated = draw(hnp.arrays(bool, (T, B)))
    truncated = draw(hnp.arrays(bool, (T, B))) & ~terminated
    done = terminated | truncated
    values = draw(_floats((T, B)))
    final_values = draw(_floats((T, B)))
    following = np.concatenate([values[1:], final_values[-1:]])
    return dict(
        rewards=draw(_floats((T, B))),
        values=values,
        next_values=np.where(done, final_values, following).astype(np.float32),
        terminated=terminated,
        done=done,
        gamma=draw(st.floats(0.0, 1.0)),
    )


def _np_monte_carlo(r, next_v, terminated, done, gamma):
    """Discounted return to each episode's end (or the rollout's end), bootstrapped from
    V(next obs) where the episode is cut but not terminated; float64, plain loops."""
    returns = np.zeros((T, B))
    for b in range(B):
        for t in range(T):
            g, discount = 0.0, 1.0
            for k in range(t, T):
                g += discount * r[k, b]
                if terminated[k, b]:
                    break
                if done[k, b] or k == T - 1:
                    g += discount * gamma * next_v[k, b]
                    break
                discount *= gamma
            returns[t, b] = g
    return returns


@PROPERTY
@given(_rollouts())
def test_gae_lambda_one_is_monte_carlo_return_minus_value(x):
    adv, returns = _gae(**x, gae_lambda=1.0)
    mc = _np_monte_carlo(x["rewards"], x["next_values"], x["terminated"], x["done"], x["gamma"])
    np.testing.assert_allclose(adv, mc - x["values"], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(returns, mc, rtol=1e-4, atol=1e-3)


@PROPERTY
@given(_rollouts())
def test_gae_lambda_zero_is_the_td_error(x):
    adv, _ = _gae(**x, gae_lambda=0.0)
    r, v, nv = (np.asarray(x[k], np.float64) for k in ("rewards", "values", "next_values"))
    td = r + x["gamma"] * (1.0 - x["terminated"]) * nv - v
    np.testing.assert_allclose(adv, td, rtol=1e-5, atol=1e-4)


@PROPERTY
@given(_rollouts(), st.floats(0.0, 1.0), _floats((T, B), -5.0, 5.0))
def test_truncation_bootstraps_and_termination_does_not(x, lam, change):
    """Changing V(next obs) at terminated steps changes nothing; at a truncated step t it
    moves A_t by exactly γ·ΔV, and never leaks into another episode."""
    adv, _ = _gae(**x, gae_lambda=lam)
    term, done = x["terminated"], x["done"]
    at_terminal = dict(x, next_values=x["next_values"] + np.where(term, change, 0.0))
    np.testing.assert_allclose(_gae(**at_terminal, gae_lambda=lam)[0], adv, rtol=0, atol=1e-5)
    truncated = done & ~term
    at_truncated = dict(x, next_values=x["next_values"] + np.where(truncated, change, 0.0))
    moved = np.asarray(_gae(**at_truncated, gae_lambda=lam)[0], np.float64) - adv
    np.testing.assert_allclose(
        moved[truncated], x["gamma"] * change[truncated], rtol=1e-4, atol=1e-4
    )
    # A change at a truncated step reaches only earlier steps (of its own episode).
    later = np.cumsum(truncated[::-1], axis=0)[::-1] == 0  # no truncated step at or after
    np.testing.assert_allclose(moved[later], 0.0, atol=1e-5)


# -- running statistics --------------------------------------------------------------------

N, D = 48, 2
_update = jax.jit(lambda rms, x, mask: rms.update(x, mask))


@PROPERTY
@given(
    _floats((N, D), -1e3, 1e3),
    st.lists(st.integers(0, N), max_size=6).map(sorted),
)
def test_running_statistics_under_any_split(data, cuts):
    """Any split of a stream into consecutive chunks (fed through the masked update, so one
    program serves every split) gives the statistics of one update over all of it: the
    float64 merge of the prior (count 1e-4, mean 0, var 1) with the data."""
    rms = RunningMeanStd.init((D,))
    bounds = [0, *cuts, N]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        rms = _update(rms, data, (np.arange(N) >= lo) & (np.arange(N) < hi))
    x = np.asarray(data, np.float64)
    prior = 1e-4
    count = prior + N
    mean = x.sum(0) / count
    var = (prior * (1.0 + mean**2) + ((x - mean) ** 2).sum(0)) / count
    np.testing.assert_allclose(float(rms.count), count, rtol=1e-6)
    np.testing.assert_allclose(rms.mean, mean, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(rms.var, var, rtol=1e-3, atol=1e-3)


# -- advantage normalization --------------------------------------------------------------------

_normalize = jax.jit(
    lambda adv, mode, groups, floor: advantages.normalize(
        adv, mode, groups=groups, num_groups=2 if mode == "group" else None, std_floor=floor
    ),
    static_argnames="mode",
)
GROUPS = np.repeat(np.array([[0, 1]]), 8, axis=1)  # [1, 16]: env blocks 0..7 and 8..15
_ADV = _floats((6, 16), -100.0, 100.0)


def _spread(x):
    return np.std(np.asarray(x, np.float64)) > 0.5


def _mean_tol(x) -> float:
    """Tolerance for the mean of float32 data standardized in float32: a float32 sum of n
    values is off by up to ~n·u·mean|x| (u = 2^-24), divided by the std. A nearly constant
    group far from 0 (std 0.15 at |x| 45) legitimately ends ~1e-4 from mean 0."""
    x = np.asarray(x, np.float64)
    return 1e-4 + x.size * 2.0**-24 * np.abs(x).mean() / max(x.std(), 1e-12)


@PROPERTY
@given(_ADV.filter(_spread))
def test_each_normalization_mode_has_its_defining_property(adv):
    x = np.asarray(adv, np.float64)
    for mode in ("batch", "minibatch"):  # mean 0, std 1 (max |z| <= sqrt(95) < the clip)
        z = np.asarray(_normalize(adv, mode, None, 1e-2), np.float64)
        np.testing.assert_allclose(z.mean(), 0.0, atol=_mean_tol(x))
        np.testing.assert_allclose(z.std(), 1.0, atol=1e-4)
    z = np.asarray(_normalize(adv, "group", GROUPS, 1e-2), np.float64)
    for block, x_block in ((z[:, :8], x[:, :8]), (z[:, 8:], x[:, 8:])):
        if np.std(block) > 0:  # a constant block only centers
            np.testing.assert_allclose(block.mean(), 0.0, atol=_mean_tol(x_block))
    z = np.asarray(_normalize(adv, "scale", None, 1e-2), np.float64)
    visible = np.abs(x) > 1e-6 * x.std()  # x / std would be flushed to 0 below this
    np.testing.assert_array_equal(np.sign(z)[visible], np.sign(x)[visible])
    np.testing.assert_allclose(z, np.clip(x / x.std(), -10, 10), rtol=1e-4, atol=1e-5)
    z = np.asarray(_normalize(adv, "robust", None, 1e-2), np.float64)
    q25, med, q75 = np.quantile(x, [0.25, 0.5, 0.75])
    if q75 - q25 >= 1e-2:
        np.testing.assert_allclose(
            z, np.clip((x - med) / (q75 - q25), -10, 10), rtol=1e-4, atol=1e-4
        )
    np.testing.assert_array_equal(_normalize(adv, "none", None, 1e-2), adv)


@PROPERTY
@given(_ADV, st.floats(0.0, 1e3))
def test_below_the_std_floor_modes_only_center(adv, shift):
    """A batch whose std is below the floor is centered, never divided (scale: divided by
    the floor): shrunk to a tiny spread around `shift`, it must not be blown up."""
    tiny = (np.float32(shift) + 1e-4 * adv).astype(np.float32)
    x = np.asarray(tiny, np.float64)
    rounding = 5e-6 * (1.0 + shift)  # float32 mean of values near `shift`
    z = np.asarray(_normalize(tiny, "batch", None, 1.0), np.float64)
    np.testing.assert_allclose(z, x - x.mean(), atol=rounding)
    z = np.asarray(_normalize(tiny, "scale", None, 1.0), np.float64)
    np.testing.assert_allclose(z, np.clip(x, -10, 10), rtol=1e-5, atol=1e-3)


# -- the clipped surrogate -------------------------------------------------------------------

M = 32
_surrogate_grad = jax.jit(
    jax.value_and_grad(
        lambda lp, old, adv, eps: losses.clipped_surrogate(lp, old, adv, eps, 10.0)[0]
    )
)


@PROPERTY
@given(_floats((M,), -1.0, 1.0), _floats((M,), -5.0, 5.0), st.floats(0.05, 0.5))
def test_surrogate_gradient_vanishes_exactly_outside_the_clip_region(log_ratio, adv, eps):
    """loss = −mean(min(r·A, clip(r, 1 ± ε)·A)); its gradient w.r.t. log π is −A·r/M where
    the unclipped term is the minimum, and exactly 0 where the ratio has left the trust
    region in the direction the advantage favours (A > 0, r > 1 + ε or A < 0, r < 1 − ε)."""
    old = np.zeros(M, np.float32)
    loss, grad = _surrogate_grad(log_ratio, old, adv, np.float32(eps))
    r, a = np.exp(np.asarray(log_ratio, np.float64)), np.asarray(adv, np.float64)
    clipped = np.clip(r, 1 - eps, 1 + eps)
    np.testing.assert_allclose(loss, -np.mean(np.minimum(r * a, clipped * a)), rtol=1e-4, atol=1e-5)
    margin = 1e-4  # keep away from the boundary, where float32 rounding decides the side
    outside = ((a > 0) & (r > 1 + eps + margin)) | ((a < 0) & (r < 1 - eps - margin))
    inside = (np.abs(r - 1) < eps - margin) | (a > 0) & (r < 1 - eps - margin)
    inside |= (a < 0) & (r > 1 + eps + margin)
    np.testing.assert_array_equal(np.asarray(grad)[outside], 0.0)
    np.testing.assert_allclose(np.asarray(grad)[inside], (-a * r / M)[inside], rtol=1e-4, atol=1e-7)
