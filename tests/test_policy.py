"""Sampling from pre-drawn noise (`policy.action_noise` / `sample_with_noise`): the same
distributions as distrax's own samplers, and rollouts that draw no randomness per step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jppo import PPOConfig, envs, policy
from jppo.trainer import build, init_actors, init_learner
from jppo.types import EnvSpec
from tests.helpers import primitive_count, sub_jaxprs

DISCRETE = EnvSpec(
    obs_dim=3,
    discrete=True,
    action_dim=3,
    action_low=None,
    action_high=None,
    max_episode_steps=None,
)
CONTINUOUS = DISCRETE._replace(discrete=False, action_dim=2)


def test_noise_shapes_and_sample_shapes():
    key = jax.random.key(0)
    noise = policy.action_noise(key, DISCRETE, (5, 4))
    assert noise.shape == (5, 4, 3) and noise.dtype == jnp.float32
    logits = {"logits": jnp.zeros((5, 4, 3))}
    action = policy.sample_with_noise(logits, noise)
    log_prob = policy.log_prob(logits, action)
    assert action.shape == (5, 4) and log_prob.shape == (5, 4)
    assert action.dtype == jnp.int32
    noise = policy.action_noise(key, CONTINUOUS, (5, 4))
    params = {"mean": jnp.zeros((5, 4, 2)), "log_std": jnp.zeros((5, 4, 2))}
    action = policy.sample_with_noise(params, noise)
    assert action.shape == (5, 4, 2) and policy.log_prob(params, action).shape == (5, 4)


def test_gumbel_max_samples_the_softmax_and_logs_its_probability():
    logits = np.array([1.0, -0.5, 0.3], np.float32)
    n = 200_000
    noise = policy.action_noise(jax.random.key(1), DISCRETE, (n,))
    dist_params = {"logits": jnp.broadcast_to(logits, (n, 3))}
    action = policy.sample_with_noise(dist_params, noise)
    log_prob = policy.log_prob(dist_params, action)
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    freq = np.bincount(np.asarray(action), minlength=3) / n
    # 5 standard errors of a binomial frequency
    assert np.all(np.abs(freq - probs) <= 5 * np.sqrt(probs * (1 - probs) / n)), (freq, probs)
    np.testing.assert_allclose(np.asarray(log_prob), np.log(probs)[np.asarray(action)], rtol=1e-5)


def test_gaussian_samples_have_the_policy_moments_and_density():
    mean = np.array([0.5, -2.0], np.float32)
    log_std = np.array([-1.0, 0.7], np.float32)
    n = 200_000
    noise = policy.action_noise(jax.random.key(2), CONTINUOUS, (n,))
    params = {"mean": jnp.broadcast_to(mean, (n, 2)), "log_std": jnp.broadcast_to(log_std, (n, 2))}
    action = policy.sample_with_noise(params, noise)
    log_prob = policy.log_prob(params, action)
    a = np.asarray(action, np.float64)
    std = np.exp(log_std.astype(np.float64))
    assert np.all(np.abs(a.mean(0) - mean) <= 5 * std / np.sqrt(n)), (a.mean(0), mean)
    np.testing.assert_allclose(a.std(0), std, rtol=0.01)
    # float64 diagonal-Gaussian log density
    ref = np.sum(-0.5 * ((a - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi), axis=1)
    np.testing.assert_allclose(np.asarray(log_prob), ref, rtol=1e-4, atol=1e-4)


def _scan_bodies(jaxpr):
    """Every scan body in `jaxpr`, nested ones included."""
    for eqn in jaxpr.eqns:
        for sub in sub_jaxprs(eqn):
            if eqn.primitive.name == "scan":
                yield sub
            yield from _scan_bodies(sub)


def _random_calls(jaxpr) -> int:
    """Random-bit generations in `jaxpr` (nested jaxprs included)."""
    return primitive_count(jaxpr, "random_bits", "threefry2x32")


@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1"])
def test_rollout_steps_draw_no_randomness_beyond_the_environments_own(env):
    # Per-step key splits and samples cost a threefry loop each inside every step on
    # XLA:CPU; the rollout draws them all before its scan. Only the env's own auto-reset
    # (gymnax resets from the key it is given at every step) may draw inside a step.
    from jppo.rollout import rollout

    cfg = PPOConfig(env=env, num_envs=4, num_steps=8, total_timesteps=64)
    setup = build(cfg)
    learner = init_learner(cfg, setup, jax.random.key(0))
    actors = init_actors(cfg, setup, jax.random.key(1))
    roll = jax.make_jaxpr(lambda k: rollout(cfg, setup, learner, actors, k))(jax.random.key(2))
    (body,) = list(_scan_bodies(roll.jaxpr))
    env, env_params, spec, _ = setup
    keys = jax.random.split(jax.random.key(0), cfg.num_envs)
    action = jnp.zeros((cfg.num_envs,) + (() if spec.discrete else (spec.action_dim,)))
    action = policy.env_action(action.astype(jnp.int32 if spec.discrete else jnp.float32), spec)
    env_only = jax.make_jaxpr(lambda k: envs.step(env, env_params, k, actors.env_state, action))(
        keys
    )
    assert _random_calls(body) == _random_calls(env_only.jaxpr)
    assert _random_calls(roll.jaxpr) > _random_calls(body)  # drawn outside the scan


def test_mlp_rollout_runs_only_the_actor_per_step_and_values_afterwards():
    # The critic has no effect on what is collected: its values of every stored observation
    # come from one batched pass after the loop, equal to the critic applied to them.
    from jppo.rollout import rollout

    cfg = PPOConfig(num_envs=4, num_steps=8, total_timesteps=64)
    setup = build(cfg)
    learner = init_learner(cfg, setup, jax.random.key(0))
    actors = init_actors(cfg, setup, jax.random.key(1))
    roll = jax.make_jaxpr(lambda k: rollout(cfg, setup, learner, actors, k))(jax.random.key(2))
    (body,) = list(_scan_bodies(roll.jaxpr))
    # The actor's layers only: its hidden layers and CartPole's 2-logit head, which runs as
    # one matrix-vector product per output (`networks._dot_general`).
    assert primitive_count(body, "dot_general") == len(cfg.hidden_sizes) + 2
    out = rollout(cfg, setup, learner, actors, jax.random.key(2))
    traj = out.traj
    assert traj.value_pred.shape == (cfg.num_steps, cfg.num_envs)
    values, _ = setup.network.critic(
        learner.params["critic"], traj.obs, traj.episode_start, actors.carry["critic"]
    )
    np.testing.assert_allclose(traj.value_pred, values, rtol=1e-6, atol=1e-6)
    assert float(jnp.std(traj.value_pred)) > 0  # not a constant placeholder


def test_log_probs_and_episode_starts_come_after_the_loop_and_match_the_steps():
    # Both are per-step outputs the loop no longer writes: the log-probability is computed
    # for all steps at once from the stored logits and actions, and a step starts an episode
    # exactly where the step before it ended.
    from jppo.rollout import rollout

    cfg = PPOConfig(num_envs=4, num_steps=64, total_timesteps=256)
    setup = build(cfg)
    learner = init_learner(cfg, setup, jax.random.key(0))
    actors = init_actors(cfg, setup, jax.random.key(1))
    actors = actors._replace(episode_start=jnp.array([True, False, True, False]))
    roll = jax.make_jaxpr(lambda k: rollout(cfg, setup, learner, actors, k))(jax.random.key(2))
    (body,) = list(_scan_bodies(roll.jaxpr))
    assert primitive_count(body, "log") == 0  # no log-softmax inside the loop (CartPole)
    traj = rollout(cfg, setup, learner, actors, jax.random.key(2)).traj
    logits = np.asarray(traj.dist_params["logits"], np.float64)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = np.take_along_axis(log_softmax, np.asarray(traj.action)[..., None], -1)[..., 0]
    np.testing.assert_allclose(traj.log_prob, want, rtol=1e-5, atol=1e-6)
    done = np.asarray(traj.done)
    assert done.any()  # CartPole episodes end within 64 steps of a random-ish policy
    np.testing.assert_array_equal(traj.episode_start[0], actors.episode_start)
    np.testing.assert_array_equal(traj.episode_start[1:], done[:-1])


@pytest.mark.parametrize("outputs", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("rows", [1, 4, 128])
def test_dense_layers_match_a_float64_matmul_and_its_gradients(outputs, rows):
    # `networks._dot_general` computes 2- and 3-output layers one column at a time (faster
    # on XLA:CPU, forward and backward); values and both gradients must be the matmul's.
    from jppo import networks

    kx, kw, kg = jax.random.split(jax.random.key(outputs * 1000 + rows), 3)
    x = jax.random.normal(kx, (rows, 64))
    w = jax.random.normal(kw, (64, outputs))
    g = jax.random.normal(kg, (rows, outputs))
    dims = (((1,), (0,)), ((), ()))
    out, vjp = jax.vjp(lambda a, b: networks._dot_general(a, b, dims), x, w)
    dx, dw = vjp(g)
    x64, w64, g64 = (np.asarray(a, np.float64) for a in (x, w, g))
    assert out.shape == (rows, outputs)
    np.testing.assert_allclose(out, x64 @ w64, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dx, g64 @ w64.T, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dw, x64.T @ g64, rtol=1e-5, atol=1e-4)
    # A Dense layer on [T, B, K] inputs (flax contracts the last axis) gives the same rows.
    x3 = x.reshape(1, rows, 64)
    out3 = networks._dot_general(x3, w, (((2,), (0,)), ((), ())))
    np.testing.assert_allclose(out3[0], x64 @ w64, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("outputs, columnwise", [(1, False), (2, True), (3, True), (4, False)])
def test_narrow_output_layers_run_one_matrix_vector_product_per_column(outputs, columnwise):
    # Which layers take the column-at-a-time path: 2 and 3 outputs (the case XLA:CPU handles
    # slowly as a matmul); 1 output is a matrix-vector product already, 4+ stay one matmul.
    from jppo import networks

    head = networks.Head((8,), "tanh", outputs, 1.0)
    obs, reset = jnp.zeros((2, 3, 5)), jnp.zeros((2, 3), bool)
    params = head.init(jax.random.key(0), obs, reset, {})
    jaxpr = jax.make_jaxpr(lambda p: head.apply(p, obs, reset, {}))(params).jaxpr
    expected_head_dots = outputs if columnwise else 1
    assert primitive_count(jaxpr, "dot_general") == 1 + expected_head_dots
    out, _ = head.apply(params, obs, reset, {})
    p = params["params"]
    h = np.tanh(np.asarray(obs, np.float64).reshape(6, 5) @ p["MLP_0"]["Dense_0"]["kernel"])
    ref = h @ np.asarray(p["Dense_0"]["kernel"], np.float64) + np.asarray(p["Dense_0"]["bias"])
    np.testing.assert_allclose(out.reshape(6, outputs), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spec", [DISCRETE, CONTINUOUS], ids=["discrete", "continuous"])
def test_mlp_init_gives_orthogonal_kernels_with_the_ppo_gains(spec):
    from jppo import networks

    net = networks.make_network(spec, hidden_sizes=(64, 32), log_std_init=-0.7)
    params = net.init(jax.random.key(0))
    gains = {"MLP_0": np.sqrt(2.0), "actor": 0.01, "critic": 1.0}
    for name in ("actor", "critic"):
        p = params[name]["params"]
        kernels = {
            "MLP_0/Dense_0": (p["MLP_0"]["Dense_0"]["kernel"], (3, 64), gains["MLP_0"]),
            "MLP_0/Dense_1": (p["MLP_0"]["Dense_1"]["kernel"], (64, 32), gains["MLP_0"]),
            "Dense_0": (
                p["Dense_0"]["kernel"],
                (32, spec.action_dim if name == "actor" else 1),
                gains[name],
            ),
        }
        for where, (k, shape, gain) in kernels.items():
            assert k.shape == shape, where
            k = np.asarray(k, np.float64) / gain
            gram = k.T @ k if shape[0] >= shape[1] else k @ k.T  # orthonormal columns or rows
            np.testing.assert_allclose(gram, np.eye(min(shape)), atol=2e-5, err_msg=where)
        for layer in (p["MLP_0"]["Dense_0"], p["MLP_0"]["Dense_1"], p["Dense_0"]):
            np.testing.assert_array_equal(layer["bias"], 0.0)
    if not spec.discrete:
        log_std = params["actor"]["params"]["log_std"]
        np.testing.assert_array_equal(log_std, np.float32([-0.7, -0.7]))
    # Actor and critic torsos are drawn independently, and another key draws other kernels.
    a = params["actor"]["params"]["MLP_0"]["Dense_1"]["kernel"]
    c = params["critic"]["params"]["MLP_0"]["Dense_1"]["kernel"]
    assert np.abs(np.asarray(a) - np.asarray(c)).max() > 0.1
    other = net.init(jax.random.key(1))["actor"]["params"]["MLP_0"]["Dense_1"]["kernel"]
    assert np.abs(np.asarray(a) - np.asarray(other)).max() > 0.1


@pytest.mark.parametrize("shape", [(4, 64), (64, 64), (64, 2), (64, 1), (3, 5, 7)])
def test_orthogonalize_of_one_kernel_is_jax_orthogonal_initializer(shape):
    # Alone, a kernel's slice of the single draw is the draw jax's initializer makes.
    from jppo import networks

    key = jax.random.key(7)
    ours = networks.orthogonalize(key, {"kernel": jnp.full(shape, 1.3)})["kernel"]
    theirs = jax.nn.initializers.orthogonal(1.3)(key, shape, jnp.float32)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)


def test_mlp_init_draws_all_kernels_with_one_random_call():
    # Every random call compiles to its own threefry loop on CPU: one draw for both
    # networks' kernels, not one per kernel (plus flax's per-parameter key derivations).
    from jppo import networks

    net = networks.make_network(DISCRETE, hidden_sizes=(64, 64))
    jaxpr = jax.make_jaxpr(net.init)(jax.random.key(0)).jaxpr
    assert primitive_count(jaxpr, "random_bits") == 1


_RANDOM_CALLS = ("random_bits", "random_split", "random_fold_in", "threefry2x32")


def _random_calls_outside_loops(jaxpr) -> int:
    """Random calls in `jaxpr` and the calls it makes, not counting scan or while bodies."""
    own = sum(eqn.primitive.name in _RANDOM_CALLS for eqn in jaxpr.eqns)
    return own + sum(
        _random_calls_outside_loops(sub)
        for eqn in jaxpr.eqns
        if eqn.primitive.name not in ("scan", "while")
        for sub in sub_jaxprs(eqn)
    )


def test_an_update_draws_its_randomness_in_four_calls_before_its_loops():
    # On CPU every random call is a threefry loop (a dozen kernels to compile and to run):
    # the update's key split, the rollout's split (env keys and the noise key), the action
    # noise, and all epochs' shuffle keys at once; none inside the epoch or minibatch loops.
    from jppo.trainer import make_trainer

    cfg = PPOConfig(num_envs=4, num_steps=8, total_timesteps=64)
    trainer = make_trainer(cfg)
    step = jax.make_jaxpr(trainer.step)(trainer.init(jax.random.key(0))).jaxpr
    assert _random_calls_outside_loops(step) == 4
    # The epochs' scan (the minibatch scan nested in it): the top-level scan of that length.
    (epochs,) = [
        e
        for e in step.eqns
        if e.primitive.name == "scan" and e.params["length"] == cfg.update_epochs
    ]
    assert primitive_count(epochs.params["jaxpr"].jaxpr, *_RANDOM_CALLS) == 0
