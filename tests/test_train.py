"""The compiled training program: shapes, metrics, determinism, keys, and the update's parts."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

import jppo
from jppo import optim, policy, schedules
from jppo import targets as targets_lib
from jppo import trainer as train_lib
from jppo.update import update
from tests.helpers import SMALL, SMALL_PENDULUM, assert_trees_equal, fresh_rollout

SPEC_METRICS = (
    "timesteps",
    "episode_return",
    "episode_length",
    "episodes_completed",
    "policy_loss",
    "value_loss",
    "entropy",
    "entropy_loss",
    "approx_kl",
    "kl_k1",
    "kl_k3",
    "kl_exact",
    "clip_fraction",
    "ratio_mean",
    "ratio_min",
    "ratio_max",
    "log_ratio_clamped_fraction",
    "nonfinite_ratio_count",
    "explained_variance",
    "adv_mean",
    "adv_std",
    "value_mean",
    "return_mean",
    "grad_norm",
    "learning_rate",
    "ent_coef",
    "clip_eps",
    "epochs_completed",
    "nonfinite_grad_count",
)


def test_metrics_have_spec_names_and_shapes(small_run):
    n = SMALL.num_updates
    for name in SPEC_METRICS:
        assert name in small_run.metrics, name
        chex.assert_shape(small_run.metrics[name], (n,))
        assert np.all(np.isfinite(small_run.metrics[name])), name
    np.testing.assert_array_equal(
        small_run.metrics["timesteps"], SMALL.batch_size * np.arange(1, n + 1)
    )
    assert int(small_run.state.step) == n
    # Annealed linearly to 0 over the run, starting from the configured rate.
    np.testing.assert_allclose(
        small_run.metrics["learning_rate"], SMALL.learning_rate * (1 - np.arange(n) / n), rtol=1e-6
    )


def test_state_shapes(small_run):
    s = small_run.state
    chex.assert_shape(s.actors.obs, (SMALL.num_envs, 4))
    chex.assert_shape(s.actors.episode_start, (SMALL.num_envs,))
    assert s.learner.hyperparams.learning_rate.shape == ()


def test_same_key_same_result_and_legacy_keys(small_run):
    """Same key and config: every metric and the whole final state bit-identical on CPU (a
    legacy uint32 key of the same seed included); another key: other parameters, rollouts
    and losses."""
    again = jppo.train(SMALL, jax.random.key(0))
    legacy = jppo.train(SMALL, jax.random.PRNGKey(0))
    for out in (again, legacy):
        assert_trees_equal(out.metrics, small_run.metrics)
        assert_trees_equal(out.state, small_run.state)
    other = jppo.train(SMALL, jax.random.key(1))
    for name in ("policy_loss", "value_loss", "return_mean", "entropy"):
        assert not np.array_equal(other.metrics[name], small_run.metrics[name]), name
    actor = lambda out: jax.tree.leaves(out.state.learner.params["actor"])
    assert all(not np.array_equal(a, b) for a, b in zip(actor(other), actor(small_run)))


def test_train_seeds_member_equals_train():
    """Member i of train_seeds equals train(keys[i]) to float tolerance only, not bit for
    bit: under vmap XLA batches the reductions differently, so sums round differently."""
    keys = jax.random.split(jax.random.key(3), 3)
    seeds = jppo.train_seeds(SMALL, keys)
    chex.assert_shape(seeds.metrics["episode_return"], (3, SMALL.num_updates))
    for i in (0, 2):
        one = jppo.train(SMALL, keys[i])
        member = jax.tree.map(lambda x: x[i], seeds.metrics)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), member, one.metrics
        )


def test_vmap_over_hyperparameters_matches_separate_runs(small_run):
    train_fn = jppo.make_train(SMALL)
    lrs = jnp.array([SMALL.learning_rate, 1e-3])
    hps = jppo.Hyperparams.from_config(SMALL, learning_rate=lrs)
    hps = jax.tree.map(lambda x: jnp.broadcast_to(x, (2,)), hps)
    swept = jax.jit(jax.vmap(train_fn, in_axes=(None, 0)))(jax.random.key(0), hps)
    np.testing.assert_allclose(
        swept.metrics["learning_rate"][1],
        1e-3 * (1 - np.arange(SMALL.num_updates) / SMALL.num_updates),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        swept.metrics["policy_loss"][0], small_run.metrics["policy_loss"], rtol=1e-4, atol=1e-6
    )
    assert not np.allclose(swept.metrics["policy_loss"][1], swept.metrics["policy_loss"][0])


def test_continuous_actions_clip_for_env_but_not_for_log_prob():
    """Pendulum's torque is clipped to [-2, 2] for the env, but the rollout stores the
    unclipped sample and its log-prob: with log_std_init 1 (std 2.7) many samples lie
    outside the bounds, and the stored log-prob is the float64 Gaussian density of the
    stored sample, not of its clipped value."""
    spec = train_lib.build(SMALL_PENDULUM).spec
    raw = jnp.array([[-5.0], [0.5], [7.0]])
    np.testing.assert_array_equal(policy.env_action(raw, spec), [[-2.0], [0.5], [2.0]])
    _, _, traj, _ = fresh_rollout(SMALL_PENDULUM.replace(log_std_init=1.0))
    action = np.asarray(traj.action, np.float64)[..., 0]
    mean = np.asarray(traj.dist_params["mean"], np.float64)[..., 0]
    np.testing.assert_array_equal(traj.dist_params["log_std"], 1.0)

    def density(a):
        return -0.5 * ((a - mean) / np.e) ** 2 - 1.0 - 0.5 * np.log(2 * np.pi)

    outside = np.abs(action) > 2.0
    assert outside.mean() > 0.2
    np.testing.assert_allclose(traj.log_prob, density(action), rtol=1e-5, atol=1e-5)
    clipped = density(np.clip(action, -2.0, 2.0))
    assert np.all(np.abs(np.asarray(traj.log_prob)[outside] - clipped[outside]) > 1e-3)


def test_log_std_initialized_at_config_value():
    cfg = SMALL_PENDULUM.replace(log_std_init=-1.3)
    params = train_lib.build(cfg).network.init(jax.random.key(0))
    np.testing.assert_allclose(params["actor"]["params"]["log_std"], [-1.3])
    dist_params, _ = train_lib.build(cfg).network.actor(
        params["actor"], jnp.zeros((1, 2, 3)), jnp.zeros((1, 2), bool), {}
    )
    np.testing.assert_allclose(dist_params["log_std"], -1.3, rtol=1e-6)


# -- the update's parts -----------------------------------------------------------------------


@functools.cache
def _one_batch(cfg, key=0):
    """A real rollout batch and everything `update` needs, outside jit."""
    network, state, traj, carry0 = fresh_rollout(cfg, key)
    batch, _, _ = targets_lib.make_batch(
        cfg, traj, state.learner.hyperparams, state.learner.norm.value
    )
    coefs = schedules.coefficients(cfg, state.learner.hyperparams, state.step)
    return network, state, batch, carry0, coefs


@functools.cache
def _jitted_update(cfg):
    network = train_lib.build(cfg).network
    return jax.jit(
        lambda p, o, b, c0, hp, c: update(cfg, network, p, o, b, c0, hp, c, jax.random.key(7))
    )


def _update(cfg, network, state, batch, carry0, coefs, hp=None):
    """One compiled `update` per config, shared by the tests below."""
    return _jitted_update(cfg)(
        state.learner.params,
        state.learner.opt_state,
        batch,
        carry0,
        hp or state.learner.hyperparams,
        coefs,
    )


def test_huge_value_loss_does_not_shrink_the_policy_step():
    """Actor and critic are clipped separately: scaling value targets by 1e4 changes nothing
    in the actor's update (with joint clipping the actor's step would shrink)."""
    network, state, batch, carry0, coefs = _one_batch(SMALL)
    p1, _, m1 = _update(SMALL, network, state, batch, carry0, coefs)
    p2, _, m2 = _update(
        SMALL, network, state, batch._replace(targets=batch.targets * 1e4), carry0, coefs
    )
    jax.tree.map(np.testing.assert_array_equal, p1["actor"], p2["actor"])
    assert m2["value_loss"] > 1e3 * m1["value_loss"]


def test_separate_critic_learning_rate():
    network, state, batch, carry0, coefs = _one_batch(SMALL)
    frozen_critic = coefs._replace(critic_learning_rate=jnp.zeros(()))
    params, _, _ = _update(SMALL, network, state, batch, carry0, frozen_critic)
    jax.tree.map(np.testing.assert_array_equal, params["critic"], state.learner.params["critic"])
    moved = jax.tree.leaves(
        jax.tree.map(
            lambda a, b: np.abs(a - b).max(), params["actor"], state.learner.params["actor"]
        )
    )
    assert max(moved) > 0
    frozen_actor = coefs._replace(learning_rate=jnp.zeros(()))
    params, _, _ = _update(SMALL, network, state, batch, carry0, frozen_actor)
    jax.tree.map(np.testing.assert_array_equal, params["actor"], state.learner.params["actor"])


def test_nonfinite_gradient_step_is_skipped_and_counted():
    network, state, batch, carry0, coefs = _one_batch(SMALL)
    all_bad = batch._replace(targets=jnp.full_like(batch.targets, jnp.nan))
    params, opt_state, _ = _update(SMALL, network, state, all_bad, carry0, coefs)
    jax.tree.map(np.testing.assert_array_equal, params, state.learner.params)
    steps = SMALL.update_epochs * SMALL.num_minibatches
    assert int(optim.nonfinite_grad_count(opt_state)) == steps
    # One NaN sample spoils exactly the one minibatch that holds it, once per epoch.
    one_bad = batch._replace(targets=batch.targets.at[0, 0].set(jnp.nan))
    params, opt_state, _ = _update(SMALL, network, state, one_bad, carry0, coefs)
    assert int(optim.nonfinite_grad_count(opt_state)) == SMALL.update_epochs
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))


def test_entropy_bonus_increases_entropy():
    """With zero advantages and no value loss, a step on the loss raises the entropy."""
    cfg = SMALL
    network, state, batch, carry0, coefs = _one_batch(cfg)
    batch = batch._replace(advantages=jnp.zeros_like(batch.advantages))
    # Start from a skewed policy (logit bias +-2), well below the maximum entropy ln 2.
    actor = state.learner.params["actor"]["params"]
    actor = {**actor, "Dense_0": {**actor["Dense_0"], "bias": jnp.array([2.0, -2.0])}}
    learner = state.learner._replace(params={**state.learner.params, "actor": {"params": actor}})
    state = state._replace(learner=learner)
    coefs = coefs._replace(
        vf_coef=jnp.zeros(()), learning_rate=jnp.asarray(1e-2), ent_coef=jnp.asarray(0.5)
    )

    def entropy(params):
        dist_params, _ = network.actor(params["actor"], batch.obs, batch.episode_start, {})
        return float(jnp.mean(policy.make_dist(dist_params).entropy()))

    params, _, metrics = _update(cfg, network, state, batch, carry0, coefs)
    assert entropy(params) > entropy(state.learner.params) + 1e-4
    assert metrics["entropy_loss"] < 0


def test_clip_by_global_norm_per_network_matches_numpy():
    """Three steps of the optimizer vs a float64 numpy clip-per-network + Adam(eps=1e-5)."""
    rng = np.random.default_rng(0)
    params = {"actor": {"w": np.zeros(3, np.float32)}, "critic": {"w": np.zeros(2, np.float32)}}
    grads = [
        {
            "actor": {"w": rng.normal(size=3).astype(np.float32) * s1},
            "critic": {"w": rng.normal(size=2).astype(np.float32) * s2},
        }
        for s1, s2 in ((0.1, 100.0), (3.0, 0.01), (1.0, 50.0))
    ]
    hp = jppo.Hyperparams.from_config(jppo.PPOConfig(max_grad_norm=0.5))
    tx = optim.make_optimizer(hp, 0.1, 0.2, vgs=False, vgs_per_element=False)
    state = tx.init(params)
    p = params
    for g in grads:
        u, state = tx.update(g, state, p)
        p = jax.tree.map(lambda a, b: a + b, p, u)

    for name, lr in (("actor", 0.1), ("critic", 0.2)):
        w, m, v = np.zeros_like(params[name]["w"], np.float64), 0.0, 0.0
        for t, g in enumerate(grads, start=1):
            g = np.asarray(g[name]["w"], np.float64)
            g = g * min(1.0, 0.5 / np.linalg.norm(g))
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            w = w - lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-5)
        np.testing.assert_allclose(p[name]["w"], w, rtol=1e-4, atol=1e-6)


GAINS = 0.1 * jnp.array([0.1, 0.5, 10.0, 2.0])


def _balancing_actor(actor):
    """Actor parameters of the linear controller "push right iff 0.1x + 0.5x' + 10θ + 2θ' > 0",
    which keeps CartPole's pole up and the cart in bounds for the whole 500 steps: the sign
    passes through both tanh layers unchanged."""
    zeros = jax.tree.map(jnp.zeros_like, actor)
    p = zeros["params"]
    torso = p["MLP_0"]
    torso = {
        "Dense_0": {**torso["Dense_0"], "kernel": torso["Dense_0"]["kernel"].at[:, 0].set(GAINS)},
        "Dense_1": {**torso["Dense_1"], "kernel": torso["Dense_1"]["kernel"].at[0, 0].set(1.0)},
    }
    head = {**p["Dense_0"], "kernel": p["Dense_0"]["kernel"].at[0].set(jnp.array([-10.0, 10.0]))}
    return {"params": {"MLP_0": torso, "Dense_0": head}}


def test_evaluate_tells_a_good_policy_from_a_poor_one(small_run):
    """evaluate plays the deterministic policy: a balancing controller scores 500 in every
    episode; one that always pushes left lets the pole fall within ~10 steps. (An untrained
    network is no sure poor policy: its small logits' argmax can balance for a while.)"""
    state = small_run.state
    fresh = train_lib.build(SMALL).network.init(jax.random.key(0))
    always_left = jax.tree.map(jnp.zeros_like, fresh["actor"])
    head = always_left["params"]["Dense_0"]
    head["bias"] = head["bias"].at[0].set(1.0)
    poor_params = {**fresh, "actor": always_left}
    poor = state._replace(learner=state.learner._replace(params=poor_params))
    good_params = {**fresh, "actor": _balancing_actor(fresh["actor"])}
    good = state._replace(learner=state.learner._replace(params=good_params))
    good_returns = jppo.evaluate(SMALL, good, jax.random.key(0), num_episodes=8)
    poor_returns = jppo.evaluate(SMALL, poor, jax.random.key(0), num_episodes=8)
    chex.assert_shape([good_returns, poor_returns], (8,))
    np.testing.assert_array_equal(good_returns, 500.0)
    assert np.all(poor_returns >= 1) and float(np.mean(poor_returns)) < 50, poor_returns
