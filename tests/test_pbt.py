"""Population-based training: the exploit copies the whole learner (statistics included), the
explore step perturbs within bounds, carries restart, and `train_pbt` agrees with a replay
built from the trainer's own pieces."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jppo
from jppo import pbt
from jppo.pbt import PBTConfig, train_pbt
from tests.helpers import SMALL, as_numpy, assert_trees_close, count_compilations

KEY = jax.random.key(11)
# A tiny recurrent run on the POMDP with every normalization on: 4 updates of 4 envs x 16.
LSTM = jppo.PPOConfig(
    env="CartPole-masked",
    network="lstm",
    hidden_sizes=(16,),
    lstm_size=8,
    num_envs=4,
    num_steps=16,
    num_minibatches=2,
    update_epochs=2,
    total_timesteps=4 * 4 * 16,
    normalize_obs=True,
    normalize_reward=True,
)
POP = 4
LRS = np.array([1e-4, 5e-4, 2e-3, 8e-3], np.float32)
FIRST = 2  # updates in the first interval


def _member(tree, p):
    return jax.tree.map(lambda x: x[p], tree)


@pytest.fixture(scope="module")
def first_interval():
    """The population after its first interval, built from the trainer alone: member p from
    `split(KEY, POP + 1)[p]` with learning rate LRS[p], FIRST updates, vmapped.
    Returns (trainer, population [POP], metrics [POP, FIRST], the jitted vmapped run)."""
    trainer = jppo.make_trainer(LSTM)
    hps = jppo.Hyperparams.from_config(LSTM, learning_rate=jnp.asarray(LRS))
    hps = jax.tree.map(lambda x: jnp.broadcast_to(x, (POP,)), hps)
    keys = jax.random.split(KEY, POP + 1)[:POP]
    start = jax.jit(jax.vmap(trainer.init))(keys, hps)
    run = jax.jit(jax.vmap(lambda s: trainer.run(s, FIRST)))
    population, metrics = run(start)
    return trainer, population, metrics, run


# -- the exploit --------------------------------------------------------------------------


def _greedy_actions(network, learner, raw_obs):
    """Argmax actions of one member's actor on raw observations [T, E, D], each member
    normalizing them with its own statistics, from a fresh carry."""
    obs = learner.norm.obs.normalize(raw_obs, clip=learner.hyperparams.obs_clip)
    reset = jnp.zeros(raw_obs.shape[:2], bool).at[0].set(True)
    carry = network.initial_carry(raw_obs.shape[1])["actor"]
    dist_params, _ = network.actor(learner.params["actor"], obs, reset, carry)
    return np.asarray(jnp.argmax(dist_params["logits"], axis=-1))


def _copy_weights_only(population, source):
    """The broken exploit: weights and optimizer state copied, statistics left behind."""
    learner = population.learner
    params, opt_state = jax.tree.map(lambda x: x[source], (learner.params, learner.opt_state))
    return population._replace(learner=learner._replace(params=params, opt_state=opt_state))


def test_exploit_brings_the_statistics_with_the_weights(first_interval):
    """Member 1 copies member 0. Its observation, reward and value statistics then equal the
    source's exactly, and on the same raw observations (each member normalizing them with
    its own statistics) its greedy actions are the source's. The weights-only copy, which
    leaves the target's statistics in place, acts differently on the same inputs."""
    trainer, population, _, _ = first_interval
    network = trainer.setup.network
    # Two updates give the members nearly the same statistics; move the target's by half a
    # std and widen them 1.5x, as a member that has seen other states would have them.
    stats = population.learner.norm.obs
    moved = stats._replace(
        mean=stats.mean.at[1].add(0.5 * jnp.sqrt(stats.var[1])), var=stats.var.at[1].mul(2.25)
    )
    norm = population.learner.norm._replace(obs=moved)
    population = population._replace(learner=population.learner._replace(norm=norm))
    norm = as_numpy(norm)
    for stats in (norm.obs, norm.reward, norm.value):
        assert not np.allclose(stats.mean[0], stats.mean[1])
    source = jnp.array([0, 0, 2, 3])
    exploited = pbt.exploit(population, source, network.initial_carry(LSTM.num_envs))
    after = as_numpy(exploited.learner.norm)
    for new, old in zip(jax.tree.leaves(after), jax.tree.leaves(norm)):
        np.testing.assert_array_equal(new[1], old[0])

    # Observations spread like the source's own (its statistics' mean and 2x its std).
    obs_stats = _member(population.learner.norm.obs, 0)
    noise = jax.random.normal(jax.random.key(5), (8, 256, obs_stats.mean.shape[0]))
    raw_obs = obs_stats.mean + 2.0 * jnp.sqrt(obs_stats.var) * noise
    expected = _greedy_actions(network, _member(population.learner, 0), raw_obs)
    actions = _greedy_actions(network, _member(exploited.learner, 1), raw_obs)
    np.testing.assert_array_equal(actions, expected)

    broken = _copy_weights_only(population, source)
    wrong = _greedy_actions(network, _member(broken.learner, 1), raw_obs)
    # The check above fails for this copy: a young policy is near-constant, so only the
    # observations near its decision boundary flip, but a few percent of them do.
    assert not np.array_equal(wrong, expected)
    assert np.mean(wrong != expected) > 0.02


def test_exploit_copies_the_whole_learner_and_restarts_only_copied_carries(first_interval):
    """Every learner leaf (parameters, optimizer state, statistics, hyperparameters) of each
    member is its source's; the copied member's recurrent carries are the initial ones and
    all its envs start an episode; everything else in `actors`, the RNG and the step count
    are every member's own."""
    trainer, population, _, _ = first_interval
    initial_carry = trainer.setup.network.initial_carry(LSTM.num_envs)
    source = np.array([0, 3, 2, 3])
    exploited = pbt.exploit(population, jnp.asarray(source), initial_carry)
    old, new = as_numpy(population), as_numpy(exploited)

    for name in ("params", "opt_state", "norm", "hyperparams"):
        before, after = (
            jax.tree.leaves(getattr(old.learner, name)),
            jax.tree.leaves(getattr(new.learner, name)),
        )
        assert any(not np.array_equal(x[1], x[3]) for x in before), name
        for x, y in zip(before, after):
            np.testing.assert_array_equal(y, x[source])

    assert all(np.abs(c[1]).max() > 0 for c in jax.tree.leaves(old.actors.carry))
    for c_old, c_new, c0 in zip(
        jax.tree.leaves(old.actors.carry),
        jax.tree.leaves(new.actors.carry),
        jax.tree.leaves(initial_carry),
    ):
        np.testing.assert_array_equal(c_new[1], c0)
        np.testing.assert_array_equal(c_new[[0, 2, 3]], c_old[[0, 2, 3]])
    assert not old.actors.episode_start[1].all()
    assert new.actors.episode_start[1].all()
    np.testing.assert_array_equal(
        new.actors.episode_start[[0, 2, 3]], old.actors.episode_start[[0, 2, 3]]
    )
    rest = dict(carry=None, episode_start=None)
    kept, now = old.actors._replace(**rest), new.actors._replace(**rest)
    assert len(jax.tree.leaves(kept)) > 4  # env states, obs, episode statistics, returns
    for x, y in zip(jax.tree.leaves(kept), jax.tree.leaves(now)):
        np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(new.rng, old.rng)
    np.testing.assert_array_equal(new.step, old.step)


# -- ranking and exploring ------------------------------------------------------------------


def test_select_sources_bottom_copies_top():
    """P = 8, fraction 0.25: the two worst members copy one of the two best (both drawn over
    many keys); everyone else is their own source. NaN fitness ranks last."""
    fitness = jnp.array([3.0, 7.0, 1.0, 5.0, 8.0, 2.0, 6.0, 4.0])
    k = PBTConfig(population_size=8, interval=1).num_exploited
    assert k == 2
    keys = jax.random.split(jax.random.key(0), 32)
    sources = np.asarray(jax.vmap(lambda key: pbt.select_sources(fitness, k, key))(keys))
    bottom, top = [2, 5], {4, 1}
    others = [p for p in range(8) if p not in bottom]
    np.testing.assert_array_equal(sources[:, others], np.broadcast_to(others, (32, 6)))
    assert set(sources[:, bottom].ravel()) == top

    nan_last = pbt.fitness_of({"r": jnp.array([[1.0], [jnp.nan], [0.0], [2.0]])}, "r")
    np.testing.assert_array_equal(pbt.select_sources(nan_last, 1, keys[0]), [0, 3, 2, 3])
    assert PBTConfig(population_size=1, interval=1).num_exploited == 0
    assert PBTConfig(population_size=7, interval=1).num_exploited == 1
    np.testing.assert_array_equal(pbt.select_sources(fitness, 0, keys[0]), np.arange(8))


def test_explore_multiplies_by_a_factor_and_clips_to_bounds():
    """Copied members' explored values become clip(value * f, lo, hi) for an f of the
    factors (both factors occur); members not copied and fields not explored are unchanged."""
    size = 64
    pbt_cfg = PBTConfig(population_size=size, interval=1, perturb_factors=(0.5, 2.0))
    lo_lr, hi_lr = pbt_cfg.bounds["learning_rate"]
    lo_ent, hi_ent = pbt_cfg.bounds["ent_coef"]
    values = {
        "learning_rate": np.geomspace(2e-6, 3e-2, size).astype(np.float32),
        "ent_coef": np.linspace(0.0, 0.15, size).astype(np.float32),
    }
    hps = jppo.Hyperparams.from_config(SMALL, **{k: jnp.asarray(v) for k, v in values.items()})
    hps = jax.tree.map(lambda x: jnp.broadcast_to(x, (size,)), hps)
    copied = np.arange(size) % 2 == 0
    new = pbt.explore(hps, jnp.asarray(copied), pbt_cfg, jax.random.key(3))

    for name, (lo, hi) in (("learning_rate", (lo_lr, hi_lr)), ("ent_coef", (lo_ent, hi_ent))):
        old, out = values[name].astype(np.float64), np.asarray(getattr(new, name), np.float64)
        np.testing.assert_array_equal(out[~copied], old[~copied])
        candidates = np.clip(old[copied, None] * np.array([0.5, 2.0]), lo, hi)  # [n, 2]
        matches = np.isclose(out[copied, None], candidates, rtol=1e-6, atol=0)
        assert matches.any(axis=1).all(), name
        lo32, hi32 = np.float32(lo), np.float32(hi)  # the bounds as the float32 leaves hold them
        assert ((out[copied] >= lo32) & (out[copied] <= hi32)).all()
        inside = (candidates > lo) & (candidates < hi)
        assert (matches & inside)[:, 0].any() and (matches & inside)[:, 1].any(), name
    np.testing.assert_array_equal(new.clip_eps, hps.clip_eps)
    np.testing.assert_array_equal(new.gamma, hps.gamma)


# -- train_pbt ------------------------------------------------------------------------------


def test_population_of_one_is_plain_training():
    """P = 1 never exploits: `train_pbt` equals `jppo.train` from the member's key, over two
    intervals of which the last is partial (3 + 1 updates)."""
    out = train_pbt(SMALL, PBTConfig(population_size=1, interval=3), KEY)
    one = jppo.train(SMALL, jax.random.split(KEY, 2)[0])
    assert_trees_close(_member(out.metrics, 0), one.metrics)
    assert_trees_close(_member(out.population, 0), one.state)
    assert_trees_close(out.best, one.state)
    np.testing.assert_array_equal(out.lineage, [[0], [0]])
    assert out.hyperparams["learning_rate"].shape == (1, 2)
    assert int(out.best_index) == 0


@pytest.fixture(scope="module")
def pbt_run():
    return train_pbt(LSTM, PBTConfig(population_size=POP, interval=FIRST), KEY, learning_rate=LRS)


def test_lineage_and_copies_match_an_independent_replay(first_interval, pbt_run):
    """Replays the run from the trainer alone: after the first interval the worst member
    (by mean episode return) must take the best one's learner with its explored values
    perturbed by a factor (as the recorded history says), restart its carries, and both
    then train one more interval. The lineage, the hyperparameter history, the final
    population and every metric must agree with the replay."""
    trainer, population, first_metrics, run = first_interval
    fitness = np.asarray(first_metrics["episode_return"]).mean(axis=1)
    assert len(set(fitness.tolist())) == POP, "ties would make the ranking ambiguous"
    worst, best = int(np.argmin(fitness)), int(np.argmax(fitness))
    source = np.arange(POP)
    source[worst] = best  # with one member exploited, the top "fraction" is the best one
    np.testing.assert_array_equal(pbt_run.lineage, [source, np.arange(POP)])

    history = {k: np.asarray(v) for k, v in pbt_run.hyperparams.items()}
    np.testing.assert_allclose(history["learning_rate"][:, 0], LRS, rtol=1e-6)
    for name, h in history.items():
        lo, hi = PBTConfig(population_size=POP, interval=FIRST).bounds[name]
        others = [p for p in range(POP) if p != worst]
        np.testing.assert_array_equal(h[others, 1], h[others, 0])
        options = np.clip(h[best, 0] * np.array([0.8, 1.25]), lo, hi)
        assert np.isclose(h[worst, 1], options, rtol=1e-6).any(), name

    learner = jax.tree.map(lambda x: x[source], population.learner)
    learner = learner._replace(
        hyperparams=learner.hyperparams._replace(
            **{k: jnp.asarray(h[:, 1]) for k, h in history.items()}
        )
    )
    reset = np.arange(POP) == worst
    carry = jax.tree.map(
        lambda c: jnp.where(reset.reshape((POP,) + (1,) * (c.ndim - 1)), 0.0, c),
        population.actors.carry,
    )
    actors = population.actors._replace(
        carry=carry, episode_start=population.actors.episode_start | reset[:, None]
    )
    replay, second_metrics = run(population._replace(learner=learner, actors=actors))
    assert_trees_close(pbt_run.population, replay)
    metrics = jax.tree.map(lambda a, b: np.concatenate([a, b], 1), first_metrics, second_metrics)
    assert_trees_close(pbt_run.metrics, metrics)
    final = np.asarray(second_metrics["episode_return"]).mean(axis=1)
    assert int(pbt_run.best_index) == int(np.argmax(final))
    assert_trees_close(pbt_run.best, _member(replay, int(np.argmax(final))))


def test_best_member_evaluates(pbt_run):
    returns = jppo.evaluate(LSTM, pbt_run.best, jax.random.key(2), num_episodes=4)
    assert returns.shape == (4,) and np.isfinite(np.asarray(returns)).all()


def test_train_pbt_compiles_once(pbt_run):
    """A second call with a new key and new initial values compiles nothing."""
    with count_compilations() as again:
        other = train_pbt(
            LSTM,
            PBTConfig(population_size=POP, interval=FIRST),
            jax.random.key(12),
            learning_rate=LRS[::-1],
        )
        jax.block_until_ready(other)
    assert again == [], f"{len(again)} new compilations"
    np.testing.assert_allclose(other.hyperparams["learning_rate"][:, 0], LRS[::-1], rtol=1e-6)
    assert not np.allclose(other.metrics["policy_loss"], pbt_run.metrics["policy_loss"])


# -- configuration errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(population_size=0), "PBTConfig.population_size"),
        (dict(interval=0), "PBTConfig.interval"),
        (dict(interval=2.5), "PBTConfig.interval"),
        (dict(exploit_fraction=0.6), "PBTConfig.exploit_fraction"),
        (dict(exploit_fraction=-0.1), "PBTConfig.exploit_fraction"),
        (dict(perturb_factors=()), "PBTConfig.perturb_factors"),
        (dict(perturb_factors=(0.8, -1.0)), "PBTConfig.perturb_factors"),
        (dict(explore=("num_envs",)), "'num_envs' is not a traced PPOConfig field"),
        (dict(explore=("learning_rat",)), "'learning_rat' is not a traced"),
        (dict(explore=("gamma", "gamma")), "names a field twice"),
        (dict(bounds={"clip_eps": (0.1, 0.3)}), "'clip_eps' is not explored"),
        (dict(bounds={"learning_rate": (1e-2, 1e-5)}), "lo <= hi"),
        (dict(explore=("vgs_alpha",)), "no default bounds for 'vgs_alpha'"),
        (dict(fitness=""), "PBTConfig.fitness"),
    ],
)
def test_pbt_config_validates_on_construction(changes, message):
    with pytest.raises(ValueError, match=message):
        PBTConfig(**{**dict(population_size=4, interval=2), **changes})


def test_pbt_config_defaults():
    cfg = PBTConfig(population_size=8, interval=10, explore=["learning_rate", "clip_eps"])
    assert cfg.explore == ("learning_rate", "clip_eps")
    assert dict(cfg.bounds) == {"learning_rate": (1e-5, 1e-2), "clip_eps": (0.05, 0.5)}
    assert cfg.exploit_fraction == 0.25 and cfg.perturb_factors == (0.8, 1.25)
    assert cfg.num_exploited == math.floor(8 * 0.25)
    assert cfg.replace(explore=("ent_coef",)).bounds == {"ent_coef": (0.0, 0.1)}


def test_train_pbt_rejects_what_the_config_cannot_run():
    base = PBTConfig(population_size=2, interval=2)
    with pytest.raises(ValueError, match="set PPOConfig.target_kl to a number to enable it"):
        train_pbt(SMALL, base.replace(explore=("target_kl",)), KEY)
    bounds = {"learning_rate": (0.0, 1e-2)}
    with pytest.raises(ValueError, match=r"bounds\['learning_rate'\]: PPOConfig.learning_rate"):
        train_pbt(SMALL, base.replace(bounds=bounds), KEY)
    with pytest.raises(ValueError, match="one per member"):
        train_pbt(SMALL, base, KEY, learning_rate=[1e-3, 1e-4, 1e-5])
    with pytest.raises(ValueError, match="did you mean 'learning_rate'"):
        train_pbt(SMALL, base, KEY, learning_rat=[1e-3, 1e-4])
    with pytest.raises(ValueError, match="PBTConfig.fitness='episode_retrun' is not a metric"):
        train_pbt(SMALL, base.replace(fitness="episode_retrun"), KEY)
