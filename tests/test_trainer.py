"""The resumable trainer: chunks compose, states travel, programs compile once per structure,
and the learner/actors split is what a population exploit needs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jppo
from jppo import compile as compile_lib
from tests.helpers import (
    SMALL,
    as_numpy,
    assert_trees_close,
    assert_trees_equal,
    count_compilations,
    qr_operand_shapes,
)

_BASE = dict(total_timesteps=4 * 4 * 32, num_envs=4, num_steps=32)
_ALL_NORM = dict(normalize_obs=True, normalize_reward=True, normalize_value_targets=True)
_QUANTILE = dict(critic="quantile", num_quantiles=8, risk_weight=0.3)
_LSTM = dict(
    env="CartPole-masked", network="lstm", hidden_sizes=(16,), lstm_size=8, num_minibatches=2
)
# Every normalization on, and the schedules and adaptive rules that depend on the update
# counter or on carried hyperparameters.
_MOVING = dict(adaptive_clip=True, target_kl=0.02, ent_coef_final=0.0, vf_coef_init=1.0)
CHUNK_CONFIGS = {
    "mlp_quantile": jppo.PPOConfig(**_BASE, **_ALL_NORM, **_QUANTILE, **_MOVING),
    "lstm_exact": jppo.PPOConfig(**_BASE, **_LSTM, **_ALL_NORM, **_MOVING),
    "lstm_chunked_quantile": jppo.PPOConfig(
        **_BASE, **_LSTM, **_ALL_NORM, **_QUANTILE, lstm_chunk_len=8
    ),
}


@pytest.mark.parametrize("name", list(CHUNK_CONFIGS))
def test_chunks_compose_bit_for_bit(name):
    """run(run(init(k), a), b) == run(init(k), a + b), states and metrics, bit for bit on
    CPU; the same after the intermediate state went to the host and back. Fails if a
    schedule or an adaptive rule restarts per chunk, or if any piece of the state needed to
    continue (RNG, statistics, accumulators, carries, episode statistics) is not carried."""
    cfg = CHUNK_CONFIGS[name]
    trainer = jppo.make_trainer(cfg)
    run = jax.jit(trainer.run, static_argnums=1)  # two programs: 4 and 2 updates
    start = jax.jit(trainer.init)(jax.random.key(0))
    whole, metrics = run(start, 4)
    first, m_first = run(start, 2)
    second, m_second = run(first, 2)
    assert_trees_equal(whole, second)
    joined = jax.tree.map(lambda x, y: jnp.concatenate([x, y]), m_first, m_second)
    assert_trees_equal(metrics, joined)
    moved = jax.device_put(jax.device_get(first))
    resumed, m_resumed = run(moved, 2)
    assert_trees_equal(resumed, whole)
    assert_trees_equal(m_resumed, m_second)
    # The schedules really change over the run, so a restart per chunk would show.
    assert float(metrics["learning_rate"][2]) < float(metrics["learning_rate"][0])


def test_step_is_one_update_of_run():
    trainer = jppo.make_trainer(SMALL)
    start = jax.jit(trainer.init)(jax.random.key(1))
    one, metrics = jax.jit(trainer.step)(start)
    via_run, run_metrics = jax.jit(trainer.run, static_argnums=1)(start, 1)
    assert_trees_equal(one, via_run)
    assert_trees_equal(metrics, jax.tree.map(lambda x: x[0], run_metrics))


def test_make_train_is_run_of_init(small_run):
    trainer = jppo.make_trainer(SMALL)
    # Compiled as jppo.train compiles (its XLA options), so the two agree bit for bit.
    state, metrics = compile_lib.jit(lambda k: trainer.run(trainer.init(k), SMALL.num_updates))(
        jax.random.key(0)
    )
    assert_trees_equal(metrics, small_run.metrics)
    assert_trees_equal(state, small_run.state)


def test_state_layout():
    state = jppo.make_trainer(SMALL.replace(normalize_reward=True)).init(jax.random.key(0))
    assert isinstance(state.learner, jppo.Learner) and isinstance(state.actors, jppo.Actors)
    assert state.learner.norm.reward is not None
    assert state.actors.discounted_returns.shape == (SMALL.num_envs,)
    assert state.actors.obs.shape == (SMALL.num_envs, 4)
    assert state.step.shape == () and state.step.dtype == jnp.int32


# -- compile once per structure -------------------------------------------------------------


def test_new_keys_and_traced_hyperparameters_reuse_the_compiled_programs():
    """train, train_seeds and evaluate compile once per config structure: a new key and
    changed traced numbers (ent_coef, learning_rate, clip_eps, gamma) compile nothing;
    a changed static field does."""
    cfg = SMALL.replace(total_timesteps=2 * 4 * 32)
    variant = cfg.replace(ent_coef=0.0, learning_rate=1e-3, clip_eps=0.3, gamma=0.9)
    keys = [jax.random.key(i) for i in range(3)]
    seeds = [jax.random.split(k, 2) for k in keys]
    with count_compilations() as warm_up:
        out = jppo.train(cfg, keys[0])
        jppo.train_seeds(cfg, seeds[0])
        jppo.evaluate(cfg, out.state, keys[0], num_episodes=4)
    assert len(warm_up) >= 3
    with count_compilations() as again:
        out2 = jppo.train(variant, keys[1])
        jppo.train_seeds(variant, seeds[1])
        returns = jppo.evaluate(variant, out2.state, keys[2], num_episodes=4)
        jax.block_until_ready(returns)
    assert again == [], f"{len(again)} new compilations"
    # The traced numbers did reach the program.
    np.testing.assert_allclose(out2.metrics["ent_coef"], 0.0)
    np.testing.assert_allclose(out2.metrics["learning_rate"][0], 1e-3, rtol=1e-6)
    np.testing.assert_allclose(out2.metrics["clip_eps"], 0.3, rtol=1e-6)
    # A static change is a new program.
    with count_compilations() as static_change:
        jppo.train(cfg.replace(num_minibatches=2), keys[0])
    assert len(static_change) >= 1


def test_program_cache_is_bounded():
    """Least recently used programs are dropped; the key is the structure, so a config with
    other traced numbers finds the cached program."""
    saved = dict(compile_lib._PROGRAMS)  # the suite's compiled programs, put back after
    compile_lib.clear_cache()
    n = compile_lib.MAX_CACHED_PROGRAMS + 5
    for i in range(n):
        compile_lib.cached_program("probe", SMALL.replace(num_steps=8 + i), lambda i=i: i)
    assert len(compile_lib._PROGRAMS) == compile_lib.MAX_CACHED_PROGRAMS
    newest = SMALL.replace(num_steps=8 + n - 1, ent_coef=0.5)
    assert compile_lib.cached_program("probe", newest, lambda: -1) == n - 1
    oldest = SMALL.replace(num_steps=8)
    assert compile_lib.cached_program("probe", oldest, lambda: -1) == -1
    compile_lib.clear_cache()
    compile_lib._PROGRAMS.update(saved)


def test_static_key_ignores_traced_values_but_not_their_switches():
    assert SMALL.static_key() == SMALL.replace(ent_coef=0.5, gamma=0.9).static_key()
    assert SMALL.static_key() != SMALL.replace(target_kl=0.01).static_key()  # None -> number
    assert SMALL.static_key() != SMALL.replace(num_envs=8).static_key()


# -- the learner/actors split ----------------------------------------------------------------


def test_exploit_is_one_tree_map_over_the_learner():
    """A population of 2 (vmapped init, one update each); member 1 copies member 0's whole
    learner with a single tree.map: every learner leaf then equals member 0's, and every
    actor leaf (env states, observations, carries, episode statistics, return accumulators)
    is still member 1's own."""
    cfg = SMALL.replace(normalize_obs=True, normalize_reward=True)
    trainer = jppo.make_trainer(cfg)
    pop = jax.jit(jax.vmap(lambda k: trainer.step(trainer.init(k))[0]))(
        jax.random.split(jax.random.key(0), 2)
    )
    source = jnp.array([0, 0])  # member i copies member source[i]
    learner = jax.tree.map(lambda x: x[source], pop.learner)
    exploited = pop._replace(learner=learner)

    pop_np, new_np = as_numpy(pop), as_numpy(exploited)
    for old, new in zip(jax.tree.leaves(pop_np.learner), jax.tree.leaves(new_np.learner)):
        np.testing.assert_array_equal(new[1], old[0])
        np.testing.assert_array_equal(new[0], old[0])
    assert any(not np.array_equal(x[0], x[1]) for x in jax.tree.leaves(pop_np.learner))
    assert_trees_equal(exploited.actors, pop.actors)
    assert any(not np.array_equal(x[0], x[1]) for x in jax.tree.leaves(pop_np.actors))
    # The exploited population keeps training.
    after, _ = jax.jit(jax.vmap(trainer.step))(exploited)
    assert np.all(np.asarray(after.step) == 2)


@pytest.mark.parametrize("critic", ["scalar", "quantile"])
def test_vmapped_init_factors_one_matrix_at_a_time(critic):
    """Seeds vmapped over `init` must not batch the MLP's orthogonal initializers' QR
    (jaxlib's batched QR can hang on CPU): every QR factors one [rows, cols] matrix. (The
    LSTM's initializers use no QR: networks.orthogonal_init.)"""
    cfg = SMALL.replace(critic=critic)
    init = jppo.make_trainer(cfg).init
    shapes = qr_operand_shapes(jax.vmap(init), jax.random.split(jax.random.key(0), 3))
    assert shapes and all(len(s) == 2 for s in shapes), shapes


def test_jppo_programs_compile_with_its_options_and_compute_the_same(monkeypatch):
    # The options (LLVM level 1 on CPU) shorten the compile only: a run compiled with them
    # equals the plain jax.jit one up to float rounding (LLVM may contract a multiply-add
    # differently: one metric differed by 1 ulp).
    cfg = jppo.PPOConfig(num_envs=4, num_steps=16, total_timesteps=4 * 16 * 3)
    train = jppo.make_train(cfg)
    key = jax.random.key(0)
    if jax.default_backend() == "cpu":
        assert compile_lib.compiler_options() == {"xla_backend_optimization_level": 1}
    assert_trees_close(compile_lib.jit(train)(key), jax.jit(train)(key), rtol=1e-5, atol=1e-6)
    # ... and jppo.train compiles through them: an option XLA rejects makes it fail.
    backend = jax.default_backend()
    monkeypatch.setitem(compile_lib._COMPILER_OPTIONS, backend, {"xla_no_such_option": 1})
    compile_lib.clear_cache()
    try:
        with pytest.raises(Exception, match="xla_no_such_option"):
            jppo.train(cfg, key)
    finally:
        compile_lib.clear_cache()
