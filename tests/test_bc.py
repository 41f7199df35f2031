"""AWR behaviour cloning: its loss on a real batch, the BC/PPO ratio and the adaptive
coefficient in the training pipeline, against float64 numpy re-derivations."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jppo
from jppo import advantages as adv_lib
from jppo import schedules
from jppo.targets import make_batch
from jppo.update import loss_fn
from tests.helpers import SMALL, final_return, fresh_rollout, np_log_softmax

BC = SMALL.replace(bc_coef=0.5, awr_beta=2.0, awr_max_weight=20.0)
FLOOR = 0.01  # the adaptive rule's floor on shrinking
SHRINK = 0.9


# -- the loss on one real minibatch -------------------------------------------------------


@functools.cache
def _rollout():
    """One rollout of BC from fresh parameters; advantage settings do not change it."""
    return fresh_rollout(BC)


@functools.cache
def _case(adv_norm: str, raw: bool):
    """(cfg, minibatch [1, M], logits [1, M, A] in float64, loss_fn's aux) for one setting.

    The actor's parameters are perturbed so the policy differs from the one that collected
    the batch: the probability ratios and the policy loss are then not trivial.
    """
    network, state, traj, carry0 = _rollout()
    groups = 2 if adv_norm == "group" else 1
    cfg = BC.replace(adv_norm=adv_norm, num_adv_groups=groups, awr_raw_advantages=raw)
    hp = state.learner.hyperparams
    batch, _, _ = make_batch(cfg, traj, hp, state.learner.norm.value)
    idx = np.random.default_rng(0).permutation(cfg.batch_size)[: cfg.minibatch_size]
    mb = jax.tree.map(lambda x: x.reshape((1, -1) + x.shape[2:])[:, idx], batch)
    leaves, treedef = jax.tree.flatten(state.learner.params["actor"])
    keys = jax.random.split(jax.random.key(3), len(leaves))
    noisy = [x + 0.5 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    params = dict(state.learner.params, actor=jax.tree.unflatten(treedef, noisy))
    coefs = schedules.coefficients(cfg, hp, state.step)
    _, aux = loss_fn(params, mb, carry0, cfg, network, hp, coefs)
    logits = network.actor_critic(params, mb.obs, mb.episode_start, carry0)[0]["logits"]
    return cfg, mb, np.asarray(logits, np.float64), jax.device_get(aux)


def _np_minibatch_normalize(adv, clip):
    """(A − mean A) / std A over the minibatch (ddof 0), clipped to ±clip."""
    adv = np.asarray(adv, np.float64)
    return np.clip((adv - adv.mean()) / adv.std(), -clip, clip)


def _np_policy_advantages(cfg, mb):
    """The normalized advantages the surrogate uses: per minibatch under "minibatch", else
    the batch-level ones the batch carries ("none": the raw ones)."""
    if cfg.adv_norm == "minibatch":
        return _np_minibatch_normalize(mb.advantages, cfg.adv_clip)
    return np.asarray(mb.advantages, np.float64)


def _np_log_pi(logits, action):
    lp = np_log_softmax(logits)
    return np.take_along_axis(lp, np.asarray(action)[..., None], axis=-1)[..., 0]


def _np_bc_loss(log_pi, adv, beta, max_weight):
    """−mean(w·log π), w = exp(min(A/β, log w_max)); also the weights."""
    w = np.exp(np.minimum(np.asarray(adv, np.float64) / beta, np.log(max_weight)))
    return -np.mean(w * log_pi), w


@pytest.mark.parametrize("raw", [False, True], ids=["normalized", "raw"])
@pytest.mark.parametrize("adv_norm", adv_lib.NORMALIZE_MODES)
def test_awr_weights_come_from_the_right_advantages(adv_norm, raw):
    cfg, mb, logits, aux = _case(adv_norm, raw)
    log_pi = _np_log_pi(logits, mb.action)
    raw_adv = np.asarray(mb.raw_advantages, np.float64)
    normalized = _np_policy_advantages(cfg, mb)
    if adv_norm == "minibatch":  # the library's own normalization agrees with ours
        lib = adv_lib.normalize(mb.advantages, "minibatch", std_floor=0.0, clip=cfg.adv_clip)
        np.testing.assert_allclose(lib, normalized, rtol=1e-5, atol=1e-5)
    chosen, other = (raw_adv, normalized) if raw else (normalized, raw_adv)
    want, weights = _np_bc_loss(log_pi, chosen, cfg.awr_beta, cfg.awr_max_weight)
    np.testing.assert_allclose(aux["bc_loss"], want, rtol=1e-5)
    if raw:  # the cap binds for the large raw advantages: min(·, log w_max) is exercised
        capped = np.isclose(weights, cfg.awr_max_weight, rtol=1e-12)
        assert capped.any() and not capped.all()
    if adv_norm != "none":  # the two choices differ, so a wrong choice cannot pass
        wrong, _ = _np_bc_loss(log_pi, other, cfg.awr_beta, cfg.awr_max_weight)
        assert abs(wrong - want) > 1e-2 * abs(want)


@pytest.mark.parametrize("adv_norm", ["batch", "minibatch", "none"])
def test_bc_ppo_ratio_is_bc_over_policy_loss(adv_norm):
    cfg, mb, logits, aux = _case(adv_norm, False)
    log_pi = _np_log_pi(logits, mb.action)
    adv = _np_policy_advantages(cfg, mb)
    log_ratio = np.clip(log_pi - np.asarray(mb.log_prob, np.float64), -10.0, 10.0)
    ratio = np.exp(log_ratio)
    eps = cfg.clip_eps
    policy_loss = -np.mean(np.minimum(ratio * adv, np.clip(ratio, 1 - eps, 1 + eps) * adv))
    assert (np.abs(ratio - 1) > eps).any()  # the perturbation makes clipping matter
    bc_loss, _ = _np_bc_loss(log_pi, adv, cfg.awr_beta, cfg.awr_max_weight)
    np.testing.assert_allclose(aux["policy_loss"], policy_loss, rtol=1e-4, atol=1e-7)
    want = abs(cfg.bc_coef * bc_loss) / (abs(policy_loss) + 1e-8)
    np.testing.assert_allclose(aux["bc_ppo_ratio"], want, rtol=1e-4)


# -- the adaptive coefficient over a few updates -------------------------------------------

NUM_UPDATES = 16
ADAPTIVE = SMALL.replace(
    total_timesteps=SMALL.batch_size * NUM_UPDATES, bc_coef=0.05, adaptive_bc=True
)


@functools.cache
def _adaptive_program():
    """One compiled run of NUM_UPDATES updates; bc_coef and max_bc_ratio are traced."""
    trainer = jppo.make_trainer(ADAPTIVE)
    return trainer, jax.jit(lambda state: trainer.run(state, NUM_UPDATES))


def _adaptive_run(bc_coef, max_bc_ratio):
    """(metrics [NUM_UPDATES], bc_coef after the last update's rule)."""
    trainer, run = _adaptive_program()
    hp = jppo.Hyperparams.from_config(ADAPTIVE, bc_coef=bc_coef, max_bc_ratio=max_bc_ratio)
    state, metrics = run(trainer.init(jax.random.key(0), hp))
    return jax.device_get(metrics), float(state.learner.hyperparams.bc_coef)


def _np_replay(bc_coef, ratios, bound):
    """The coefficient before each update and after the last: ×0.9 while the ratio exceeds
    the bound, but never below the floor, and never changed once at or below it."""
    bound = np.float32(bound)
    coefs = [np.float32(bc_coef)]
    for r in ratios:
        c = coefs[-1]
        if r > bound and c > FLOOR:
            c = np.maximum(np.float32(SHRINK) * c, np.float32(FLOOR))
        coefs.append(c)
    return np.array(coefs[:-1]), float(coefs[-1])


def _check_against_replay(bc_coef, bound):
    metrics, final = _adaptive_run(bc_coef, bound)
    want, want_final = _np_replay(bc_coef, metrics["bc_ppo_ratio"], bound)
    np.testing.assert_allclose(metrics["bc_coef"], want, rtol=1e-6)
    np.testing.assert_allclose(final, want_final, rtol=1e-6)
    return metrics, final


def test_adaptive_bc_shrinks_while_the_ratio_is_high_and_stops_at_the_floor():
    metrics, final = _check_against_replay(0.03, 1e-3)
    coefs, ratios = metrics["bc_coef"], metrics["bc_ppo_ratio"]
    assert (ratios > 1e-3).all()  # the cloning term outweighs the bound throughout
    np.testing.assert_allclose(coefs[:4], 0.03 * SHRINK ** np.arange(4), rtol=1e-5)
    at_floor = np.isclose(coefs, FLOOR, rtol=1e-6)
    assert at_floor.sum() >= 3 and at_floor[-1]  # it reached the floor and stayed there
    np.testing.assert_allclose(final, FLOOR, rtol=1e-6)


def test_adaptive_bc_shrinks_only_on_updates_whose_ratio_exceeds_the_bound():
    metrics, _ = _check_against_replay(0.03, 0.2)
    above = metrics["bc_ppo_ratio"] > np.float32(0.2)
    assert above.any() and not above.all()  # both branches of the rule are taken


def test_adaptive_bc_leaves_the_coefficient_alone_while_the_ratio_is_low():
    metrics, _ = _check_against_replay(0.03, 1e6)
    np.testing.assert_allclose(metrics["bc_coef"], 0.03, rtol=1e-6)


@pytest.mark.parametrize("bc_coef", [0.005, 0.0])
def test_adaptive_bc_never_raises_a_coefficient_below_the_floor(bc_coef):
    metrics, final = _check_against_replay(bc_coef, 1e-3)
    np.testing.assert_array_equal(metrics["bc_coef"], np.float32(bc_coef))
    assert final == np.float32(bc_coef)
    if bc_coef > 0:  # the shrink condition held, so the floor rule was consulted
        assert (metrics["bc_ppo_ratio"] > 1e-3).all()


# -- learning -------------------------------------------------------------------------------


@pytest.mark.slow
def test_cartpole_learns_with_behaviour_cloning():
    out = jppo.train_seeds(jppo.PPOConfig(bc_coef=0.1), jax.random.split(jax.random.key(0), 4))
    assert final_return(out.metrics) >= 450
    assert np.all(np.isfinite(jnp.asarray(out.metrics["bc_loss"])))
