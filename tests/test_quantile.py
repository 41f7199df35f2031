"""The distributional (quantile) critic inside the training pipeline.

The building blocks (`quantile_huber_loss`, `cvar`, `clip_quantiles`) are tested against rlax
and numpy in tests/test_losses.py; here the checks are that the trainer wires them as documented
says, each against an independent float64 numpy re-derivation:

- the critic head outputs N quantiles [T, B, N], trained at the midpoints τ_i = (2i + 1)/2N;
- the policy's GAE uses (1 − w)·mean + w·CVaR_α of the quantiles as baseline and bootstrap,
  while the critic's targets stay the λ-returns of the mean value;
- the loss uses the `quantile_vf_clip` mode that the config selects;
- real learning: CartPole-v1 with the default settings and RiskyChoice, where risk_weight 0
  ends on the risky branch and risk_weight 1 on the safe one.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jppo
from jppo import losses, schedules
from jppo import targets as targets_lib
from jppo import trainer as train_lib
from jppo.envs.risky_choice import RISKY
from jppo.normalize import RunningMeanStd
from jppo.types import Batch, Transition
from jppo.update import loss_fn
from tests.helpers import SMALL, final_return, fresh_rollout, np_cvar, np_gae

QSMALL = SMALL.replace(critic="quantile", num_quantiles=8)


# -- float64 numpy references ------------------------------------------------------------------


def _np_quantile_huber(pred, target, kappa):
    """Σ_i |τ_i − 1{δ<0}|·Huber_κ(δ), δ = target − θ_i, τ_i = (2i+1)/2N; pred [M, N],
    target [M] -> [M]."""
    pred = np.asarray(pred, np.float64)
    n = pred.shape[-1]
    taus = (2 * np.arange(n) + 1) / (2 * n)
    delta = np.asarray(target, np.float64)[:, None] - pred
    huber = np.where(np.abs(delta) <= kappa, 0.5 * delta**2, kappa * (np.abs(delta) - 0.5 * kappa))
    return np.sum(np.abs(taus - (delta < 0)) * huber, axis=-1)


def _np_clip(pred, old, c, mode):
    pred, old = np.asarray(pred, np.float64), np.asarray(old, np.float64)
    if mode == "per_quantile":
        return old + np.clip(pred - old, -c, c)
    change = pred.mean(-1, keepdims=True) - old.mean(-1, keepdims=True)
    return pred - change + np.clip(change, -c, c)


# -- shapes -----------------------------------------------------------------------------------


@functools.cache
def _real_rollout(cfg):
    network, state, traj, _ = fresh_rollout(cfg)
    return network, state, traj


def test_quantile_head_outputs_n_quantiles():
    network, state, traj = _real_rollout(QSMALL)
    t, b, n = QSMALL.num_steps, QSMALL.num_envs, QSMALL.num_quantiles
    obs = jnp.zeros((3, 5, 4))
    values, _ = network.critic(state.learner.params["critic"], obs, jnp.zeros((3, 5), bool), {})
    chex.assert_shape(values, (3, 5, n))
    chex.assert_shape([traj.value_pred, traj.next_value_pred], (t, b, n))
    # The quantiles start out distinct (a head of N outputs, not one value repeated).
    assert float(jnp.min(jnp.std(traj.value_pred, axis=-1))) > 0
    batch, _, metrics = targets_lib.make_batch(
        QSMALL, traj, state.learner.hyperparams, state.learner.norm.value
    )
    chex.assert_shape(batch.value_pred, (t, b, n))
    chex.assert_shape([batch.advantages, batch.targets], (t, b))
    assert "value_cvar" in metrics
    lstm = train_lib.build(QSMALL.replace(network="lstm", lstm_size=8)).network
    params = lstm.init(jax.random.key(0))
    values, _ = lstm.critic(
        params["critic"], obs, jnp.zeros((3, 5), bool), lstm.initial_carry(5)["critic"]
    )
    chex.assert_shape(values, (3, 5, n))


# -- the risk-adjusted baseline in make_batch -------------------------------------------------


def _synthetic_traj(n, t=12, b=5, seed=0):
    """Random unsorted quantiles, rewards, terminations and truncations (done, not terminated)."""
    rng = np.random.default_rng(seed)
    terminated = rng.uniform(size=(t, b)) < 0.15
    done = terminated | (rng.uniform(size=(t, b)) < 0.15)
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    zeros = jnp.zeros((t, b))
    return Transition(
        obs=jnp.zeros((t, b, 4)),
        episode_start=jnp.zeros((t, b), bool),
        action=jnp.zeros((t, b), jnp.int32),
        log_prob=zeros,
        dist_params={"logits": jnp.zeros((t, b, 2))},
        value_pred=f32(rng.normal(1.0, 2.0, (t, b, n))),
        reward=f32(rng.normal(size=(t, b))),
        terminated=jnp.asarray(terminated),
        done=jnp.asarray(done),
        next_value_pred=f32(rng.normal(1.0, 2.0, (t, b, n))),
    )


CASES = [  # (risk_weight, cvar_alpha, num_quantiles, value statistics (mean, var) or None)
    (0.0, 0.1, 32, None),
    (1.0, 0.1, 32, None),  # αN = 3.2: fractional weight on the 4th-lowest quantile
    (0.3, 0.25, 8, None),
    (0.7, 0.3, 8, (2.0, 9.0)),  # normalized value targets: quantiles in normalized units
]


@pytest.mark.parametrize("w, alpha, n, stats", CASES)
def test_make_batch_risk_baseline_matches_numpy_gae(w, alpha, n, stats):
    cfg = QSMALL.replace(
        num_quantiles=n,
        adv_norm="none",
        gamma=0.9,
        gae_lambda=0.8,
        risk_weight=w,
        cvar_alpha=alpha,
        normalize_value_targets=stats is not None,
    )
    traj = _synthetic_traj(n)
    hp = jppo.Hyperparams.from_config(cfg)
    value_stats = None
    quantiles = np.asarray(traj.value_pred, np.float64)
    next_quantiles = np.asarray(traj.next_value_pred, np.float64)
    if stats is not None:
        value_stats = RunningMeanStd.init(())._replace(
            mean=jnp.float32(stats[0]), var=jnp.float32(stats[1]), count=jnp.float32(50.0)
        )
        scale = np.sqrt(stats[1] + 1e-8)
        quantiles, next_quantiles = quantiles * scale + stats[0], next_quantiles * scale + stats[0]
    batch, new_stats, metrics = jax.jit(lambda tr, h, s: targets_lib.make_batch(cfg, tr, h, s))(
        traj, hp, value_stats
    )

    term, done = np.asarray(traj.terminated, float), np.asarray(traj.done, float)
    gae = lambda v, nv: np_gae(traj.reward, v, nv, term, done, 0.9, 0.8)  # noqa: E731
    risky = lambda q: (1 - w) * q.mean(-1) + w * np_cvar(q, alpha)  # noqa: E731
    adv, _ = gae(risky(quantiles), risky(next_quantiles))
    mean_adv, targets = gae(quantiles.mean(-1), next_quantiles.mean(-1))
    np.testing.assert_allclose(batch.advantages, adv, rtol=1e-4, atol=1e-4)
    if w == 0.0:  # value = mean of the quantiles
        np.testing.assert_allclose(batch.advantages, mean_adv, rtol=1e-4, atol=1e-4)
    else:  # the risk weight really moves the advantages
        assert np.max(np.abs(adv - mean_adv)) > 0.1
    if stats is None:
        np.testing.assert_allclose(batch.targets, targets, rtol=1e-4, atol=1e-4)
    else:  # statistics include this batch's targets before they are normalized
        assert abs(float(new_stats.mean) - stats[0]) > 1e-3
        norm = (targets - float(new_stats.mean)) / np.sqrt(float(new_stats.var) + 1e-8)
        np.testing.assert_allclose(batch.targets, norm, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        metrics["value_cvar"], np_cvar(quantiles, alpha).mean(), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(metrics["value_mean"], quantiles.mean(), rtol=1e-4, atol=1e-4)


def _np_cvar_weights(quantiles, alpha):
    """∂CVaR_α/∂q_i for distinct quantiles: clip(αN − rank_i, 0, 1)/(αN), [..., N]."""
    n = quantiles.shape[-1]
    rank = np.argsort(np.argsort(quantiles, axis=-1), axis=-1)
    return np.clip(alpha * n - rank, 0.0, 1.0) / (alpha * n)


def test_cvar_gradient_ties_nan_and_vmapped_alpha():
    """`losses.cvar` (partial selection, no sort) beyond its values (tests/test_losses.py):
    the gradient is the sorted form's weights; tied quantiles share the weight equally; NaN
    propagates per row; α may be vmapped."""
    rng = np.random.default_rng(5)
    q = rng.normal(size=(6, 32))
    alphas = np.array([0.01, 0.1, 0.3, 0.5, 1.0])
    f = jax.jit(
        jax.vmap(jax.value_and_grad(lambda x, a: jnp.sum(losses.cvar(x, a))), in_axes=(None, 0))
    )
    values, grads = f(jnp.asarray(q, jnp.float32), jnp.asarray(alphas, jnp.float32))
    for i, a in enumerate(alphas):
        np.testing.assert_allclose(values[i], np_cvar(q, a).sum(), rtol=1e-5)
        np.testing.assert_allclose(grads[i], _np_cvar_weights(q, a), rtol=1e-5, atol=1e-7)
    # Ties: [0, 0, 0, 1] at α = 0.5 (αN = 2): the three zeros share weight 2 equally.
    grad = jax.grad(lambda x: losses.cvar(x, 0.5))(jnp.array([0.0, 1.0, 0.0, 0.0]))
    np.testing.assert_allclose(grad, [1 / 3, 0.0, 1 / 3, 1 / 3], rtol=1e-6)
    rows = jnp.array([[1.0, jnp.nan, 2.0, 3.0], [4.0, 1.0, 2.0, 3.0]])
    out = np.asarray(losses.cvar(rows, 0.5))
    assert np.isnan(out[0]) and out[1] == 1.5


# -- value clipping mode in the loss ----------------------------------------------------------


@pytest.mark.parametrize("mode", ["mean_shift", "per_quantile", None])
def test_loss_uses_selected_quantile_vf_clip(mode):
    """loss_fn's value_loss equals the numpy loss of the selected clip mode (midpoint taus),
    and not that of the other mode, nor the unclipped one."""
    c, m, n = 0.3, 64, 8
    cfg = QSMALL.replace(
        vf_clip=None if mode is None else c,
        quantile_vf_clip=mode or "mean_shift",
        quantile_kappa=1.0,
    )
    network = train_lib.build(cfg).network
    params = network.init(jax.random.key(0))
    rng = np.random.default_rng(3)
    obs = jnp.asarray(rng.normal(size=(1, m, 4)), jnp.float32)
    reset = jnp.zeros((1, m), bool)
    pred = np.asarray(network.critic(params["critic"], obs, reset, {})[0], np.float64)
    # Old quantiles: a common shift of ±1 (beyond c) plus per-quantile noise, so that the
    # two modes give different clipped quantiles.
    old = pred + rng.choice([-1.0, 1.0], (1, m, 1)) + rng.normal(0, 0.4, (1, m, n))
    targets = pred.mean(-1) + rng.normal(0, 0.5, (1, m))
    mb = Batch(
        obs=obs,
        episode_start=reset,
        action=jnp.zeros((1, m), jnp.int32),
        log_prob=jnp.zeros((1, m)),
        dist_params={"logits": jnp.zeros((1, m, 2))},
        value_pred=jnp.asarray(old, jnp.float32),
        advantages=jnp.zeros((1, m)),
        raw_advantages=jnp.zeros((1, m)),
        targets=jnp.asarray(targets, jnp.float32),
    )
    hp = jppo.Hyperparams.from_config(cfg)
    coefs = schedules.coefficients(cfg, hp, jnp.zeros((), jnp.int32))
    _, aux = jax.jit(
        lambda p, b: loss_fn(p, b, {"actor": {}, "critic": {}}, cfg, network, hp, coefs)
    )(params, mb)

    flat = lambda x: x.reshape(m, -1)  # noqa: E731
    unclipped = _np_quantile_huber(flat(pred), targets.ravel(), 1.0)
    refs = {"none": unclipped.mean()}
    for name in ("mean_shift", "per_quantile"):
        clipped = _np_clip(flat(pred), flat(old), c, name)
        refs[name] = np.maximum(unclipped, _np_quantile_huber(clipped, targets.ravel(), 1.0)).mean()
    selected = mode or "none"
    np.testing.assert_allclose(aux["value_loss"], refs[selected], rtol=1e-5)
    for other, ref in refs.items():
        if other != selected:  # the references are far apart, so the match is meaningful
            assert abs(ref - refs[selected]) > 0.05 * refs[selected], (other, ref, refs)


# -- learning ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_quantile_critic_solves_cartpole():
    """PPOConfig(critic="quantile") on CartPole-v1: ≥ 475 over 4 seeds (last 5 % of updates),
    with finite CVaR metrics and no skipped gradient step.

    With normalize_value_targets (the default) all 4 seeds end at 500, and all 8 of
    split(key(1), 8); without it one seed of split(key(0), 4) collapsed late (mean 448).
    """
    out = jppo.train_seeds(
        jppo.PPOConfig(critic="quantile"), jax.random.split(jax.random.key(0), 4)
    )
    metrics = out.metrics
    assert final_return(metrics) >= 475, metrics["episode_return"][:, -10:]
    chex.assert_shape(metrics["value_cvar"], metrics["value_mean"].shape)
    assert np.all(np.isfinite(metrics["value_cvar"]))
    assert float(np.max(metrics["nonfinite_grad_count"])) == 0


# RiskyChoice (jppo/envs/risky_choice.py): at step 0 pick safe (return 1) or risky (2 w.p.
# 0.95, −10 w.p. 0.05: mean 1.4, CVaR_0.1 −4); the payoff comes 4 steps later. The risk
# weight acts only through the GAE's bootstraps: with γ = 1 the choice's advantage is
# Σ_k (1 − λ)λ^(k−1)·b(s_k) + λ⁴·return − b(s_0), b = (1 − w)·mean + w·CVaR of the quantiles.
# With λ = 1 the baselines cancel and every w would pick the risky branch. The quantiles at a
# risky-branch state s_k learn the spread of its λ-return targets, λ^(4−k)·(return − 1.4),
# so at w = 1 the risky choice is worth about 1.4 − 5.4·4(1 − λ)λ³: −0.81 at λ = 0.8 against
# the safe 1.0 (at the default λ = 0.95 only 0.47, and one of 4 seeds had not settled after
# 100 updates). Settings: γ = 1, λ = 0.8, 64 envs × 10 steps (2 episodes per env per update),
# learning rate 1e-3, 50 updates (32k steps), defaults otherwise (ent_coef 0.01). Seeds from
# keys 0, 1, 2 all gave p(risky) ≥ 0.98 at w = 0 and ≤ 0.005 at w = 1.
RISKY_CFG = jppo.PPOConfig(
    env="RiskyChoice",
    critic="quantile",
    num_envs=64,
    num_steps=10,
    total_timesteps=64 * 10 * 50,
    learning_rate=1e-3,
    gamma=1.0,
    gae_lambda=0.8,
    cvar_alpha=0.1,
)


@pytest.mark.slow
def test_risk_weight_picks_the_branch_on_risky_choice():
    """4 seeds each of risk_weight 0 and 1 (cvar_alpha 0.1), one vmapped program: the final
    policy's p(risky) at the choice step is > 0.5 for w = 0 and < 0.5 for w = 1."""
    hp = jppo.Hyperparams.from_config(RISKY_CFG, risk_weight=jnp.array([0.0] * 4 + [1.0] * 4))
    in_axes = (0, jax.tree.map(lambda _: None, hp)._replace(risk_weight=0))  # only w varies
    keys = jax.random.split(jax.random.key(0), 8)
    out = jax.jit(jax.vmap(jppo.make_train(RISKY_CFG), in_axes=in_axes))(keys, hp)
    network = train_lib.build(RISKY_CFG).network
    obs = jnp.array([[[1.0, 0.0, 0.0, 0.0]]])  # the reset observation: the choice step

    def p_risky(params):
        dist_params, _ = network.actor(params["actor"], obs, jnp.ones((1, 1), bool), {})
        return jax.nn.softmax(dist_params["logits"][0, 0])[RISKY]

    p = np.asarray(jax.vmap(p_risky)(out.state.learner.params))
    assert np.all(p[:4] > 0.5) and np.all(p[4:] < 0.5), p
    # The critic sees the risky tail: the logged CVaR is far below the mean for w = 0.
    cvar, mean = out.metrics["value_cvar"][:, -1], out.metrics["value_mean"][:, -1]
    assert np.all(cvar[:4] < mean[:4] - 1.0), (cvar, mean)
