"""variance_gradient_scaler against a float64 numpy re-derivation, under jit, vmap and chain;
its place in the optimizer chain and its wiring into the training pipeline."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jppo
from jppo import optim
from jppo.optim import VarianceGradientScalerState, variance_gradient_scaler
from tests.helpers import SMALL, final_return

HP = dict(alpha=2.0, beta=0.9, eps=1e-8, min_scale=0.1)
NUM_STEPS = 25
SHAPES = {"w": (3, 4), "b": (4,), "s": ()}


def gradient_sequence(seed=0, num_steps=NUM_STEPS):
    """Gradients with a steady part, a per-tensor common fluctuation and element noise, so
    the tensors' relative variances (and scales) spread over (min_scale, 1)."""
    rng = np.random.default_rng(seed)
    common_sizes = {"w": 0.3, "b": 1.5, "s": 0.05}
    out = []
    for _ in range(num_steps):
        out.append(
            {
                k: 1.0 + common_sizes[k] * rng.standard_normal() + 0.2 * rng.standard_normal(shape)
                for k, shape in SHAPES.items()
            }
        )
    return out


def reference(grads, alpha, beta, eps, min_scale, per_element=False):
    """The formula in float64: per-step scaled gradients and scales."""
    mean = {k: 0.0 for k in SHAPES}
    mean_sq = {k: 0.0 for k in SHAPES}
    outs, scales = [], []
    for t, g in enumerate(grads, start=1):
        out, scale = {}, {}
        for k, x in g.items():
            x = np.asarray(x, np.float64)
            g_bar = x if per_element else x.mean()
            mean[k] = beta * mean[k] + (1 - beta) * g_bar
            mean_sq[k] = beta * mean_sq[k] + (1 - beta) * g_bar**2
            m, s = mean[k] / (1 - beta**t), mean_sq[k] / (1 - beta**t)
            v = np.maximum(s - m**2, 0.0) / (m**2 + eps)
            scale[k] = np.clip(1.0 / (1.0 + alpha * v), min_scale, 1.0)
            out[k] = x * scale[k]
        outs.append(out)
        scales.append(scale)
    return outs, scales


def run(tx, grads):
    """Apply `tx` to the gradient sequence; the per-step outputs as numpy."""
    state = tx.init(jax.tree.map(jnp.zeros_like, grads[0]))
    outs = []
    for g in grads:
        out, state = tx.update(jax.tree.map(jnp.asarray, g), state)
        outs.append(jax.tree.map(np.asarray, out))
    return outs, state


def as_f32(grads):
    return [{k: np.asarray(v, np.float32) for k, v in g.items()} for g in grads]


@pytest.mark.parametrize("per_element", [False, True])
def test_matches_float64_reference_step_by_step(per_element):
    grads = as_f32(gradient_sequence())
    outs, state = run(variance_gradient_scaler(**HP, per_element=per_element), grads)
    want, scales = reference(grads, **HP, per_element=per_element)
    for got, ref in zip(outs, want, strict=True):
        for k in SHAPES:
            np.testing.assert_allclose(got[k], ref[k], rtol=2e-4, atol=1e-6)
    # the sequence exercises the formula, not only its bounds
    inner = [np.ravel(s[k]) for s in scales[1:] for k in SHAPES]
    inner = np.concatenate(inner)
    assert ((inner > HP["min_scale"] + 0.01) & (inner < 0.99)).mean() > 0.3
    assert isinstance(state, VarianceGradientScalerState)
    assert int(state.count) == NUM_STEPS


@pytest.mark.parametrize("per_element", [False, True])
def test_state_shapes(per_element):
    params = {k: jnp.zeros(s) for k, s in SHAPES.items()}
    state = variance_gradient_scaler(per_element=per_element).init(params)
    for k, shape in SHAPES.items():
        assert state.mean[k].shape == (shape if per_element else ())
        assert state.mean_sq[k].dtype == jnp.float32
    assert state.count.dtype == jnp.int32


def test_first_step_is_unscaled_and_a_steady_gradient_stays_unscaled():
    # bias correction: the zero-initialized averages must not look like variance
    g = {"w": np.full((3, 4), 0.5, np.float32)}
    outs, _ = run(variance_gradient_scaler(**HP), [g] * 5)
    for out in outs:
        np.testing.assert_allclose(out["w"], g["w"], rtol=1e-5)


@pytest.mark.parametrize("per_element", [False, True])
def test_scale_stays_within_bounds(per_element):
    rng = np.random.default_rng(1)
    # sign-flipping gradients: huge relative variance, the scale must stop at min_scale
    grads = [
        {"w": (rng.choice([-1.0, 1.0]) + 0.01 * rng.standard_normal((3, 4))).astype(np.float32)}
        for _ in range(NUM_STEPS)
    ]
    outs, _ = run(variance_gradient_scaler(**HP, per_element=per_element), grads)
    ratios = np.concatenate([np.ravel(o["w"] / g["w"]) for o, g in zip(outs, grads)])
    assert ratios.min() >= HP["min_scale"] * (1 - 1e-6)
    assert ratios.max() <= 1.0 + 1e-6
    np.testing.assert_allclose(ratios[-12:], HP["min_scale"], rtol=1e-5)


def test_per_element_sees_noise_that_cancels_inside_a_tensor():
    # each element flips sign every step, but half flip up while half flip down: the tensor
    # mean is steady, so only the per-element statistics notice
    base = np.array([1.0, 1.0, 1.0, 1.0], np.float32)
    flip = np.array([1.0, -1.0, 1.0, -1.0], np.float32)
    grads = [{"w": base + 3.0 * (-1) ** t * flip} for t in range(NUM_STEPS)]
    tensor, _ = run(variance_gradient_scaler(**HP), grads)
    element, _ = run(variance_gradient_scaler(**HP, per_element=True), grads)
    np.testing.assert_allclose(tensor[-1]["w"], grads[-1]["w"], rtol=1e-5)
    np.testing.assert_allclose(element[-1]["w"], HP["min_scale"] * grads[-1]["w"], rtol=1e-5)


def test_alpha_zero_is_the_identity():
    grads = as_f32(gradient_sequence(2))
    outs, _ = run(variance_gradient_scaler(**(HP | {"alpha": 0.0})), grads)
    for out, g in zip(outs, grads):
        for k in SHAPES:
            np.testing.assert_allclose(out[k], g[k], rtol=1e-6)


def _scan_outputs(alpha, grads, per_element=False):
    """All per-step outputs for one alpha, as one traced program."""
    tx = variance_gradient_scaler(alpha, HP["beta"], HP["eps"], HP["min_scale"], per_element)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *grads)
    state = tx.init(jax.tree.map(lambda x: x[0], stacked))

    def step(state, g):
        out, state = tx.update(g, state)
        return state, out

    return jax.lax.scan(step, state, stacked)[1]


def test_jit_equals_eager():
    grads = as_f32(gradient_sequence(3))
    tx = variance_gradient_scaler(**HP)
    eager, _ = run(tx, grads)
    jitted_update = jax.jit(tx.update)
    state = tx.init(grads[0])
    for g, want in zip(grads, eager):
        out, state = jitted_update(g, state)
        for k in SHAPES:
            np.testing.assert_allclose(out[k], want[k], rtol=1e-6)


@pytest.mark.parametrize("per_element", [False, True])
def test_vmap_over_alpha_matches_each_unbatched_run(per_element):
    grads = as_f32(gradient_sequence(4))
    alphas = jnp.array([0.5, 2.0, 8.0])
    fn = jax.jit(lambda a: _scan_outputs(a, grads, per_element))
    batched = jax.jit(jax.vmap(fn))(alphas)
    for i, alpha in enumerate(alphas):
        single = fn(alpha)
        for k in SHAPES:
            np.testing.assert_allclose(batched[k][i], single[k], rtol=1e-5, atol=1e-7)
    last = np.asarray(batched["b"][:, -1])
    assert not np.allclose(last[0], last[1]) and not np.allclose(last[1], last[2])


def test_traced_hyperparameters_do_not_branch():
    grads = as_f32(gradient_sequence(5))
    fn = jax.jit(lambda a, b, e, m: _scan_outputs_hp(a, b, e, m, grads))
    got = fn(*(jnp.float32(HP[k]) for k in ("alpha", "beta", "eps", "min_scale")))
    want, _ = reference(grads, **HP)
    for k in SHAPES:
        np.testing.assert_allclose(got[k][-1], want[-1][k], rtol=2e-4, atol=1e-6)


def _scan_outputs_hp(alpha, beta, eps, min_scale, grads):
    tx = variance_gradient_scaler(alpha, beta, eps, min_scale)
    state = tx.init(grads[0])
    outs = []
    for g in grads:
        out, state = tx.update(g, state)
        outs.append(out)
    return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)


def test_composes_with_adam():
    grads = as_f32(gradient_sequence(6))
    chained, _ = run(optax.chain(variance_gradient_scaler(**HP), optax.adam(1e-3)), grads)
    scaled, _ = run(variance_gradient_scaler(**HP), grads)
    by_hand, _ = run(optax.adam(1e-3), scaled)
    for got, want in zip(chained, by_hand):
        for k in SHAPES:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-9)
    params = {k: jnp.ones(s) for k, s in SHAPES.items()}
    tx = optax.chain(variance_gradient_scaler(), optax.adam(1e-3))
    state = tx.init(params)
    updates, state = jax.jit(tx.update)(jax.tree.map(jnp.asarray, grads[0]), state, params)
    params = optax.apply_updates(params, updates)
    assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(params))


# -- in the optimizer chain and the training pipeline -------------------------------------


def np_adam_vgs_chain(grads, finite, lrs, max_norm, alpha, beta, eps, min_scale):
    """One network's chain in float64: clip → Adam(eps=1e-5) → VGS → ×(−lr_t), with every
    statistic left unchanged on a step where `finite` is False (any network's gradient
    was not finite: the whole update is skipped). -> final params."""
    names = list(grads[0])
    w = {k: np.zeros(np.shape(grads[0][k])) for k in names}
    m = {k: 0.0 for k in names}
    v = {k: 0.0 for k in names}
    vm = {k: 0.0 for k in names}
    vs = {k: 0.0 for k in names}
    t = 0
    for g, ok, lr in zip(grads, finite, lrs):
        if not ok:
            continue
        g = {k: np.asarray(x, np.float64) for k, x in g.items()}
        t += 1
        norm = np.sqrt(sum(np.sum(x * x) for x in g.values()))
        g = {k: x * min(1.0, max_norm / norm) for k, x in g.items()}
        for k in names:
            m[k] = 0.9 * m[k] + 0.1 * g[k]
            v[k] = 0.999 * v[k] + 0.001 * g[k] ** 2
            u = (m[k] / (1 - 0.9**t)) / (np.sqrt(v[k] / (1 - 0.999**t)) + 1e-5)
            vm[k] = beta * vm[k] + (1 - beta) * u.mean()
            vs[k] = beta * vs[k] + (1 - beta) * u.mean() ** 2
            mean, mean_sq = vm[k] / (1 - beta**t), vs[k] / (1 - beta**t)
            rel_var = max(mean_sq - mean**2, 0.0) / (mean**2 + eps)
            w[k] = w[k] - lr * u * np.clip(1.0 / (1.0 + alpha * rel_var), min_scale, 1.0)
    return w


def test_chain_places_the_scaler_after_adam_before_the_learning_rate_inside_the_skip():
    cfg = jppo.PPOConfig(vgs=True, vgs_alpha=4.0, vgs_beta=0.8, max_grad_norm=0.5)
    hp = jppo.Hyperparams.from_config(cfg)
    rng = np.random.default_rng(7)
    shapes = {"actor": {"w": (3,), "b": ()}, "critic": {"w": (2,)}}
    grads = []
    for t in range(12):
        g = {
            net: {
                k: (1.0 + rng.standard_normal() + 0.3 * rng.standard_normal(s)).astype(np.float32)
                for k, s in sub.items()
            }
            for net, sub in shapes.items()
        }
        if t == 5:  # a non-finite step: skipped, and must not reach the scaler's averages
            g["actor"]["w"][0] = np.nan
        grads.append(g)
    # annealed rates: a scaler placed after the learning rate would see the schedule
    actor_lrs = 0.1 * (1.0 - np.arange(12) / 12)
    critic_lrs = 2.0 * actor_lrs
    params = jax.tree.map(lambda s: jnp.zeros(s, jnp.float32), shapes, is_leaf=_is_shape)
    state = optim.init_opt_state(params, cfg)
    for g, a_lr, c_lr in zip(grads, actor_lrs, critic_lrs):
        # rebuilt per step from this step's rates, as the update does
        tx = optim.make_optimizer(hp, a_lr, c_lr, vgs=True, vgs_per_element=False)
        u, state = tx.update(jax.tree.map(jnp.asarray, g), state, params)
        params = optax.apply_updates(params, u)
    assert int(optim.nonfinite_grad_count(state)) == 1
    finite = [all(np.isfinite(x).all() for x in jax.tree.leaves(g)) for g in grads]
    for net, lrs in (("actor", actor_lrs), ("critic", critic_lrs)):
        vgs_hp = (cfg.vgs_alpha, cfg.vgs_beta, cfg.vgs_eps, cfg.vgs_min_scale)
        want = np_adam_vgs_chain([g[net] for g in grads], finite, lrs, 0.5, *vgs_hp)
        for k in shapes[net]:
            np.testing.assert_allclose(params[net][k], want[k], rtol=2e-4, atol=1e-6)


def _is_shape(x):
    return isinstance(x, tuple)


def _scaler_states(opt_state):
    is_vgs = lambda x: isinstance(x, VarianceGradientScalerState)
    return [s for s in jax.tree.leaves(opt_state, is_leaf=is_vgs) if is_vgs(s)]


@pytest.mark.parametrize("per_element", [False, True])
def test_init_opt_state_follows_the_config(per_element):
    params = jppo.make_trainer(SMALL).setup.network.init(jax.random.key(0))
    assert _scaler_states(optim.init_opt_state(params)) == []
    assert _scaler_states(optim.init_opt_state(params, SMALL)) == []
    cfg = SMALL.replace(vgs=True, vgs_per_element=per_element)
    scalers = _scaler_states(optim.init_opt_state(params, cfg))
    assert len(scalers) == 2  # one per network
    for scaler, net in zip(scalers, ("actor", "critic")):
        want = jax.tree.map(lambda p: jnp.shape(p) if per_element else (), params[net])
        # multi_transform hands each chain the whole tree, the other network masked out
        assert jax.tree.map(jnp.shape, scaler.mean[net]) == want


@pytest.mark.parametrize("built_for", [dict(vgs=False), dict(vgs=True, vgs_per_element=True)])
def test_a_mismatched_optimizer_state_is_named(built_for):
    cfg = SMALL.replace(vgs=True)
    trainer = jppo.make_trainer(cfg)
    state = trainer.init(jax.random.key(0))
    params = state.learner.params
    wrong = optim.init_opt_state(params, SMALL.replace(**built_for))
    state = state._replace(learner=state.learner._replace(opt_state=wrong))
    with pytest.raises(ValueError, match=r"init_opt_state\(params, cfg\)"):
        jax.eval_shape(trainer.step, state)


@functools.cache
def _one_step(vgs: bool):
    """Fresh state and the state after one update of SMALL, with or without the scaler."""
    trainer = jppo.make_trainer(SMALL.replace(vgs=vgs))
    state = trainer.init(jax.random.key(0))
    return state, jax.jit(trainer.step)(state)[0]


def test_vgs_changes_the_parameters_of_one_update():
    (init_off, off), (init_on, on) = _one_step(False), _one_step(True)
    # the same start: only the optimizer differs
    for a, b in zip(
        jax.tree.leaves(init_off.learner.params), jax.tree.leaves(init_on.learner.params)
    ):
        np.testing.assert_array_equal(a, b)
    moved = [
        not np.allclose(a, b, rtol=1e-3, atol=1e-7)
        for a, b in zip(jax.tree.leaves(off.learner.params), jax.tree.leaves(on.learner.params))
    ]
    assert np.mean(moved) > 0.5
    steps = SMALL.update_epochs * SMALL.num_minibatches
    assert [int(s.count) for s in _scaler_states(on.learner.opt_state)] == [steps, steps]
    assert _scaler_states(off.learner.opt_state) == []


def test_vmapped_sweep_over_vgs_alpha_compiles_once(small_run):
    cfg = SMALL.replace(vgs=True)
    train_fn = jppo.make_train(cfg)
    traces = []

    def counted(key, hp):
        traces.append(1)  # runs once per trace, not per call
        return train_fn(key, hp)

    program = jax.jit(jax.vmap(counted, in_axes=(None, 0)))

    def sweep(alphas):
        hps = jppo.Hyperparams.from_config(cfg, vgs_alpha=jnp.array(alphas))
        hps = jax.tree.map(lambda x: jnp.broadcast_to(x, (len(alphas),)), hps)
        return jax.device_get(program(jax.random.key(0), hps))

    first = sweep([0.0, 1.0, 8.0])
    second = sweep([0.0, 2.0, 0.5])
    assert len(traces) == 1
    # alpha = 0 is the identity: the same run as without the scaler
    np.testing.assert_allclose(
        first.metrics["policy_loss"][0], small_run.metrics["policy_loss"], rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(first.metrics["policy_loss"][0], second.metrics["policy_loss"][0])
    finals = [
        np.concatenate([np.ravel(x[i]) for x in jax.tree.leaves(out.state.learner.params)])
        for out in (first, second)
        for i in range(3)
    ]
    for i, j in ((0, 1), (1, 2), (0, 2), (1, 4), (1, 5)):
        assert not np.allclose(finals[i], finals[j], rtol=1e-4, atol=1e-6), (i, j)


@pytest.mark.slow
def test_cartpole_learns_with_vgs():
    out = jppo.train_seeds(jppo.PPOConfig(vgs=True), jax.random.split(jax.random.key(0), 4))
    assert final_return(out.metrics) >= 450
