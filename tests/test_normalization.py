"""Normalization in the training pipeline and `evaluate`.

The building blocks (`RunningMeanStd`, `normalize_reward`) are checked against float64 numpy
in tests/test_normalize.py; here the question is whether the pipeline feeds them the right
data at the right time:

* observation statistics = the prior merged with exactly the raw observations the policy
  acted on (each rollout's `T·B` inputs, the episode-start observations included; the
  pre-reset final observations, used only to bootstrap, are not); the policy's inputs use the
  statistics frozen at the rollout's start and are clipped to `±obs_clip`;
* rewards are scaled by VecNormalize's algorithm on the actual reward/done stream, with the
  per-env accumulators carried across rollouts;
* value-target statistics include the current batch before its loss (no one-update lag);
* the first minibatch's ratio is exactly 1 with observation normalization;
* `evaluate` plays the distribution's mode with the state's stored statistics.

The reference streams come from small gymnax-interface environments defined here: NoisyObs
and Cycle ignore the actions, so a run with normalization and one without see the same raw
stream; SignBandit's deterministic observations let `evaluate` be replayed in Python.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import environment, spaces

import jppo
from jppo import schedules
from jppo import targets as targets_lib
from jppo import trainer as train_lib
from jppo.normalize import RunningMeanStd
from jppo.update import _minibatches, loss_fn
from tests.helpers import SMALL_PENDULUM, epoch_keys, init_state, np_gae, rollout_state

EPS = 1e-8  # the variance epsilon of RunningMeanStd.normalize / normalize_reward


# -- test environments ------------------------------------------------------------------------


@struct.dataclass
class _State(environment.EnvState):
    time: jax.Array  # [] int32


@struct.dataclass
class NoisyParams(environment.EnvParams):
    p_end: float = 0.1
    max_steps_in_episode: int = 12


class NoisyObs(environment.Environment):
    """Random huge-scale observations and rewards that ignore the actions.

    obs = [1000 + 30·z0, −2e4 + 500·z1, z2·(1 + 99·spike)], z ~ N(0, 1), spike ~ B(0.02);
    reward = 2 + 3·z3 + 100·B(0.05); episodes terminate with probability `p_end` per step and
    are truncated at `max_steps_in_episode`.
    """

    @property
    def default_params(self):
        return NoisyParams()

    def _obs(self, key):
        k_z, k_spike = jax.random.split(key)
        z = jax.random.normal(k_z, (3,))
        spike = jax.random.bernoulli(k_spike, 0.02)
        return jnp.array(
            [1000.0 + 30.0 * z[0], -2e4 + 500.0 * z[1], z[2] * jnp.where(spike, 100.0, 1.0)]
        )

    def step_env(self, key, state, action, params):
        k_obs, k_rew, k_big, k_end = jax.random.split(key, 4)
        reward = 2.0 + 3.0 * jax.random.normal(k_rew) + 100.0 * jax.random.bernoulli(k_big, 0.05)
        state = _State(time=state.time + 1)
        terminated = jax.random.bernoulli(k_end, params.p_end)
        return self._obs(k_obs), state, reward, terminated, {}

    def reset_env(self, key, params):
        return self._obs(key), _State(time=jnp.int32(0))

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params):
        return spaces.Box(-jnp.inf, jnp.inf, (3,), jnp.float32)


@struct.dataclass
class CycleParams(environment.EnvParams):
    length: int = 5
    max_steps_in_episode: int = 100


class Cycle(environment.Environment):
    """Deterministic episodes of `length` steps: o_t = [1000 + 10t, −500 + 3t², t/2].

    The policy acts on o_0 … o_{L−1}; o_L is the final (pre-reset) observation.
    """

    @property
    def default_params(self):
        return CycleParams()

    @staticmethod
    def obs_at(t):
        t = jnp.asarray(t, jnp.float32)
        return jnp.stack([1000.0 + 10.0 * t, -500.0 + 3.0 * t * t, 0.5 * t])

    def step_env(self, key, state, action, params):
        state = _State(time=state.time + 1)
        return (self.obs_at(state.time), state, jnp.float32(1.0), state.time >= params.length, {})

    def reset_env(self, key, params):
        return self.obs_at(0), _State(time=jnp.int32(0))

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params):
        return spaces.Box(-jnp.inf, jnp.inf, (3,), jnp.float32)


@struct.dataclass
class SignParams(environment.EnvParams):
    length: int = 20
    max_steps_in_episode: int = 100


class SignBandit(environment.Environment):
    """x_t = 1000 + 10·sin(2.1t + 0.3); obs = [x_t, t / length] (deterministic).

    The right action is s_t = [x_t > 1000]: discrete reward 1 for it, else 0; continuous
    (action in [−1, 1]) reward −(a − (2s_t − 1))². Terminates after `length` steps.
    """

    def __init__(self, continuous=False):
        super().__init__()
        self.continuous = continuous

    @property
    def default_params(self):
        return SignParams()

    @staticmethod
    def x_at(t):
        return 1000.0 + 10.0 * jnp.sin(2.1 * jnp.asarray(t, jnp.float32) + 0.3)

    def _obs(self, t, params):
        return jnp.stack([self.x_at(t), jnp.asarray(t, jnp.float32) / params.length])

    def step_env(self, key, state, action, params):
        right = self.x_at(state.time) > 1000.0
        if self.continuous:
            target = jnp.where(right, 1.0, -1.0)
            reward = -jnp.square(jnp.reshape(action, ()) - target)
        else:
            reward = jnp.where(action == right.astype(jnp.int32), 1.0, 0.0)
        state = _State(time=state.time + 1)
        return self._obs(state.time, params), state, reward, state.time >= params.length, {}

    def reset_env(self, key, params):
        return self._obs(0, params), _State(time=jnp.int32(0))

    def action_space(self, params=None):
        if self.continuous:
            return spaces.Box(-1.0, 1.0, (1,), jnp.float32)
        return spaces.Discrete(2)

    def observation_space(self, params):
        return spaces.Box(-jnp.inf, jnp.inf, (2,), jnp.float32)


# -- float64 numpy references -----------------------------------------------------------------


def np_merge(mean, var, count, x):
    """Prior (mean, var, count) merged with samples x [N, *shape] in float64 (direct)."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    total = count + n
    new_mean = (count * mean + x.sum(0)) / total
    m2 = count * (var + np.square(mean - new_mean)) + np.square(x - new_mean).sum(0)
    return new_mean, m2 / total, total


def np_vecnormalize(rewards, dones, gamma, clip, returns=None):
    """SB3 VecNormalize reward scaling over a [T, B] stream, float64, returns per env carried."""
    rewards = np.asarray(rewards, np.float64)
    num_envs = rewards.shape[1]
    ret = np.zeros(num_envs) if returns is None else np.array(returns, np.float64)
    seen = []  # every accumulator value that entered the running variance
    out = np.empty_like(rewards)
    for t in range(rewards.shape[0]):
        ret = gamma * ret + rewards[t]
        seen.append(ret.copy())
        _, var, _ = np_merge(0.0, 1.0, 1e-4, np.concatenate(seen))
        out[t] = np.clip(rewards[t] / np.sqrt(var + EPS), -clip, clip)
        ret = np.where(dones[t], 0.0, ret)
    return out, ret, np.concatenate(seen)


def np_normalize(x, stats, clip=None):
    y = (np.asarray(x, np.float64) - np.asarray(stats.mean, np.float64)) / np.sqrt(
        np.asarray(stats.var, np.float64) + EPS
    )
    return y if clip is None else np.clip(y, -clip, clip)


# -- helpers ----------------------------------------------------------------------------------


def _rollouts(cfg, num, key=0):
    """`num` chained rollouts from a fresh state (compiled once): (states [num+1], trajs)."""
    setup = train_lib.build(cfg)
    roll = jax.jit(lambda s, k: rollout_state(cfg, setup, s, k)[:2])
    state = init_state(cfg, key)
    states, trajs = [state], []
    for k in jax.random.split(jax.random.key(key + 1), num):
        state, traj = roll(state, k)
        states.append(state)
        trajs.append(jax.device_get(traj))
    return states, trajs


NOISY = jppo.PPOConfig(env=NoisyObs(), total_timesteps=512, num_envs=4, num_steps=16, gamma=0.9)
NOISY_NORM = NOISY.replace(normalize_obs=True, normalize_reward=True, obs_clip=5.0, reward_clip=3.0)


@pytest.fixture(scope="module")
def noisy_pair():
    """Three rollouts of the action-independent NoisyObs, with and without normalization."""
    return _rollouts(NOISY, 3), _rollouts(NOISY_NORM, 3)


# -- (a) observation normalization ------------------------------------------------------------


def test_obs_stats_are_prior_plus_every_observation_acted_on(noisy_pair):
    """After k rollouts the statistics equal a float64 merge of the prior and the raw
    observations of those k rollouts (what the un-normalized run's policy saw)."""
    (_, raw_trajs), (norm_states, _) = noisy_pair
    for k in (1, 3):
        raw = np.concatenate([t.obs.reshape(-1, 3) for t in raw_trajs[:k]])
        mean, var, count = np_merge(np.zeros(3), np.ones(3), 1e-4, raw)
        stats = norm_states[k].learner.norm.obs
        np.testing.assert_allclose(stats.count, count, rtol=1e-6)
        # The mean to within 1e-5 of a standard deviation (feature means are up to 2e4).
        np.testing.assert_allclose((stats.mean - mean) / np.sqrt(var), 0.0, atol=1e-5)
        np.testing.assert_allclose(stats.var, var, rtol=1e-4)


def test_policy_inputs_use_frozen_stats_and_obs_clip(noisy_pair):
    """Rollout k's stored inputs are the raw observations normalized with the statistics of
    the start of rollout k (the prior for the first) and clipped to ±obs_clip."""
    (_, raw_trajs), (norm_states, norm_trajs) = noisy_pair
    clip = NOISY_NORM.obs_clip
    for k in range(3):
        expected = np_normalize(raw_trajs[k].obs, norm_states[k].learner.norm.obs, clip)
        np.testing.assert_allclose(norm_trajs[k].obs, expected, rtol=1e-5, atol=1e-4)
        assert np.abs(norm_trajs[k].obs).max() <= clip
    # Under the prior the two huge features are all clipped; with statistics that have seen
    # them, none are. (Whether a later spike of the third feature reaches the clip depends on
    # the draw: the comparison with np_normalize above covers the clip wherever it applies.)
    np.testing.assert_array_equal(np.abs(norm_trajs[0].obs[..., :2]), clip)
    assert np.all(np.abs(norm_trajs[2].obs[..., :2]) < clip)


def test_obs_stats_through_train_include_exactly_the_acted_on_observations():
    """Whole `train` run on the deterministic Cycle env: with N = num_updates·num_steps steps
    (N mod L ≠ 0), every env acted on o_{t mod L} for t = 0 … N−1. Counting the post-step
    observations (t = 1 … N) or the pre-reset final ones (o_L) instead would differ."""
    cfg = jppo.PPOConfig(
        env=Cycle(), total_timesteps=3 * 4 * 16, num_envs=4, num_steps=16, normalize_obs=True
    )
    state = jppo.train(cfg, jax.random.key(0)).state
    steps = cfg.num_updates * cfg.num_steps
    assert steps % 5 != 0
    seen = np.stack([np.asarray(Cycle.obs_at(t % 5)) for t in range(steps)])
    raw = np.repeat(seen, cfg.num_envs, axis=0)
    mean, var, count = np_merge(np.zeros(3), np.ones(3), 1e-4, raw)
    np.testing.assert_allclose(state.learner.norm.obs.count, count, rtol=1e-6)
    np.testing.assert_allclose(state.learner.norm.obs.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(state.learner.norm.obs.var, var, rtol=1e-4)


# -- (b) reward normalization -----------------------------------------------------------------


def test_reward_normalization_is_vecnormalize_on_the_stream(noisy_pair):
    """The rewards learned from equal a float64 VecNormalize re-derivation on the run's raw
    reward/done stream, accumulators carried across rollouts, clipped to ±reward_clip."""
    (_, raw_trajs), (norm_states, norm_trajs) = noisy_pair
    rewards = np.concatenate([t.reward for t in raw_trajs])
    dones = np.concatenate([t.done for t in raw_trajs])
    assert dones.any() and (dones & ~np.concatenate([t.terminated for t in raw_trajs])).any()
    scaled, returns, seen = np_vecnormalize(
        rewards, dones, NOISY_NORM.gamma, NOISY_NORM.reward_clip
    )
    np.testing.assert_allclose(
        np.concatenate([t.reward for t in norm_trajs]), scaled, rtol=1e-4, atol=1e-5
    )
    assert np.any(np.abs(scaled) == NOISY_NORM.reward_clip)  # the clip is exercised
    final = norm_states[-1].learner.norm.reward
    np.testing.assert_allclose(
        norm_states[-1].actors.discounted_returns, returns, rtol=1e-5, atol=1e-4
    )
    mean, var, count = np_merge(0.0, 1.0, 1e-4, seen)
    np.testing.assert_allclose(final.count, count, rtol=1e-6)
    np.testing.assert_allclose(final.var, var, rtol=1e-4)
    # Everything else the learner sees is the same stream.
    for a, b in zip(raw_trajs, norm_trajs):
        np.testing.assert_array_equal(a.done, b.done)
        np.testing.assert_array_equal(a.terminated, b.terminated)


# -- (c) value-target normalization without lag -----------------------------------------------

NORM = jppo.PPOConfig(
    total_timesteps=512,
    num_envs=4,
    num_steps=32,
    normalize_obs=True,
    normalize_reward=True,
    normalize_value_targets=True,
)


@pytest.fixture(scope="module")
def norm_parts():
    """CartPole with all three normalizations: state after 2 compiled updates, then a rollout."""
    trainer = jppo.make_trainer(NORM)
    state, _ = jax.jit(trainer.run, static_argnums=1)(trainer.init(jax.random.key(0)), 2)
    after, traj, carry0, _ = jax.jit(lambda s, k: rollout_state(NORM, trainer.setup, s, k))(
        state, jax.random.key(5)
    )
    return trainer.setup.network, state, after, traj, carry0


def test_value_targets_use_stats_that_include_this_batch(norm_parts):
    """Update 3's critic targets: λ-returns from values de-normalized with the statistics
    of updates 1–2, normalized with those statistics merged with these very λ-returns (a
    one-update lag would use the earlier statistics and fail)."""
    network, state, after, traj, _ = norm_parts
    hp, old = state.learner.hyperparams, state.learner.norm.value
    assert float(old.count) == pytest.approx(1e-4 + 2 * NORM.batch_size, rel=1e-6)
    batch, new, metrics = targets_lib.make_batch(NORM, traj, hp, old)

    denorm = lambda v: (
        np.asarray(v, np.float64) * np.sqrt(np.float64(old.var) + EPS) + np.float64(old.mean)
    )
    _, targets = np_gae(
        traj.reward,
        denorm(traj.value_pred),
        denorm(traj.next_value_pred),
        np.asarray(traj.terminated),
        np.asarray(traj.done),
        NORM.gamma,
        NORM.gae_lambda,
    )
    mean, var, count = np_merge(
        np.float64(old.mean), np.float64(old.var), np.float64(old.count), targets.reshape(-1)
    )
    np.testing.assert_allclose(new.count, count, rtol=1e-6)
    np.testing.assert_allclose(new.mean, mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(new.var, var, rtol=1e-4)
    scale = np.sqrt(var + EPS)
    np.testing.assert_allclose(batch.targets, (targets - mean) / scale, rtol=1e-4, atol=1e-4)
    # Old predictions re-expressed in the new units (what vf clipping compares against).
    np.testing.assert_allclose(
        batch.value_pred, (denorm(traj.value_pred) - mean) / scale, rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(metrics["return_mean"], targets.mean(), rtol=1e-4, atol=1e-5)
    # The lagged normalization is measurably different here, so the checks above can fail.
    lagged = (targets - np.float64(old.mean)) / np.sqrt(np.float64(old.var) + EPS)
    assert np.abs(lagged - np.asarray(batch.targets)).max() > 1e-2


def test_first_update_targets_are_standardized():
    """From the prior (count 1e-4) the first batch dominates its own statistics: the critic's
    first targets have mean ≈ 0 and std ≈ 1, whatever the scale of the returns."""
    cfg = NORM.replace(normalize_reward=False, normalize_obs=False)
    setup = train_lib.build(cfg)
    state = init_state(cfg, 1)
    _, traj, _, _ = rollout_state(cfg, setup, state, jax.random.key(2))
    batch, new, _ = targets_lib.make_batch(
        cfg, traj, state.learner.hyperparams, state.learner.norm.value
    )
    assert float(new.mean) > 1.0  # CartPole λ-returns are large and positive
    np.testing.assert_allclose(np.mean(batch.targets), 0.0, atol=1e-3)
    np.testing.assert_allclose(np.std(batch.targets), 1.0, atol=1e-3)


# -- (d) the first minibatch's ratio ----------------------------------------------------------


def test_first_minibatch_ratio_is_one_with_obs_normalization(norm_parts):
    """The update re-evaluates exactly the inputs the rollout acted on, although the
    rollout has already moved the statistics on (re-normalizing raw observations with the
    moved statistics would give ratios far from 1)."""
    network, state, after, traj, carry0 = norm_parts
    hp = state.learner.hyperparams
    batch, _, _ = targets_lib.make_batch(NORM, traj, hp, state.learner.norm.value)
    coefs = schedules.coefficients(NORM, hp, state.step)
    mbs, mb_carry = _minibatches(batch, carry0, epoch_keys(3, NORM), NORM, network.recurrent)
    first = jax.tree.map(lambda x: x[0], mbs)
    _, aux = loss_fn(state.learner.params, first, mb_carry, NORM, network, hp, coefs)
    np.testing.assert_allclose([aux["ratio_min"], aux["ratio_max"]], 1.0, atol=1e-6)
    np.testing.assert_allclose(aux["kl_exact"], 0.0, atol=1e-6)

    moved = jax.tree.map(np.subtract, after.learner.norm.obs, state.learner.norm.obs)
    assert np.abs(moved.mean).max() > 1e-3
    renormed = after.learner.norm.obs.normalize(
        state.learner.norm.obs.denormalize(first.obs), clip=10.0
    )
    _, aux = loss_fn(
        state.learner.params, first._replace(obs=renormed), mb_carry, NORM, network, hp, coefs
    )
    assert max(abs(float(aux["ratio_min"]) - 1), abs(float(aux["ratio_max"]) - 1)) > 1e-4


def test_ratio_is_one_throughout_with_zero_learning_rate_lstm():
    """The recurrent path (whole sequences re-run from the rollout's carry): with the learning
    rate traced at 0 the policy never moves, so every minibatch of every update, with the
    observation statistics moving between rollouts, must see a ratio of exactly 1."""
    cfg = NORM.replace(network="lstm", lstm_size=16, hidden_sizes=(32,))
    hp = jppo.Hyperparams.from_config(cfg, learning_rate=0.0)
    metrics = jax.jit(jppo.make_train(cfg))(jax.random.key(0), hp).metrics
    np.testing.assert_allclose(metrics["ratio_min"], 1.0, atol=1e-6)
    np.testing.assert_allclose(metrics["ratio_max"], 1.0, atol=1e-6)


# -- statistics travel with the state --------------------------------------------------------


def test_statistics_live_in_the_state_per_seed():
    """`train_seeds` returns each seed's own statistics in its TrainState, with the counts of
    a whole run (obs: every step acted on; value targets: every batch)."""
    keys = jax.random.split(jax.random.key(4), 2)
    out = jppo.train_seeds(NORM, keys)
    norm = out.state.learner.norm
    chex.assert_shape(norm.obs.mean, (2, 4))
    chex.assert_shape(out.state.actors.discounted_returns, (2, NORM.num_envs))
    chex.assert_shape(norm.value.mean, (2,))
    np.testing.assert_allclose(norm.obs.count, 1e-4 + NORM.total_timesteps, rtol=1e-6)
    np.testing.assert_allclose(norm.reward.count, 1e-4 + NORM.total_timesteps, rtol=1e-6)
    np.testing.assert_allclose(norm.value.count, 1e-4 + NORM.total_timesteps, rtol=1e-6)
    for stats in (norm.obs.mean, norm.obs.var, norm.reward.var, norm.value.mean):
        assert not np.allclose(stats[0], stats[1])


# -- (e) evaluate ------------------------------------------------------------------------------


def _reference_returns(cfg, params, obs_stats, num_steps):
    """The deterministic policy played in Python on SignBandit: argmax / mean actions on the
    observations normalized with `obs_stats` (numpy, float32), `num_steps` steps."""
    env, env_params, spec, network = train_lib.build(cfg)
    total = 0.0
    for t in range(num_steps):
        obs = np.asarray(env._obs(t, env_params), np.float32)
        if obs_stats is not None:
            obs = np_normalize(obs, obs_stats, cfg.obs_clip).astype(np.float32)
        dist_params, _ = network.actor(
            params["actor"], obs[None, None], jnp.zeros((1, 1), bool), {}
        )
        x = float(SignBandit.x_at(t))
        if spec.discrete:
            action = int(np.argmax(dist_params["logits"][0, 0]))
            total += float(action == int(x > 1000.0))
        else:
            action = float(np.clip(dist_params["mean"][0, 0, 0], -1.0, 1.0))
            total += -((action - (1.0 if x > 1000.0 else -1.0)) ** 2)
    return total


SIGN = jppo.PPOConfig(
    env=SignBandit(),
    total_timesteps=40 * 8 * 32,
    num_envs=8,
    num_steps=32,
    learning_rate=3e-3,
    normalize_obs=True,
)


@pytest.fixture(scope="module")
def sign_state():
    return jppo.train(SIGN, jax.random.key(0)).state


@pytest.mark.parametrize("length,max_steps", [(20, 100), (20, 7)])
def test_evaluate_plays_the_mode_with_stored_statistics(sign_state, length, max_steps):
    """A policy trained with observation normalization on SignBandit (x ≈ 1000 ± 10):
    evaluate equals the Python re-derivation with the stored statistics, for episodes ending
    by termination (20 steps) and by the step limit (7 steps); with fresh statistics every x
    clips to the same input and the re-derivation gives a different return."""
    cfg = SIGN.replace(env_params=SignParams(length=length, max_steps_in_episode=max_steps))
    steps = min(length, max_steps)
    returns = jppo.evaluate(cfg, sign_state, jax.random.key(0), num_episodes=3)
    chex.assert_shape(returns, (3,))
    expected = _reference_returns(
        cfg, sign_state.learner.params, sign_state.learner.norm.obs, steps
    )
    np.testing.assert_allclose(returns, expected)
    fresh = _reference_returns(cfg, sign_state.learner.params, RunningMeanStd.init((2,)), steps)
    assert fresh != expected
    if max_steps == 100:
        assert expected >= 18  # it learned: the normalized x is informative


def test_evaluate_continuous_uses_mean_and_stored_statistics():
    """Continuous SignBandit with hand-set statistics in the state: evaluate equals the
    re-derivation with the Gaussian's mean (a sampled action would not) and those
    statistics (the prior's would not)."""
    cfg = jppo.PPOConfig(
        env=SignBandit(continuous=True),
        num_envs=2,
        num_steps=8,
        total_timesteps=16,
        normalize_obs=True,
    )
    state = init_state(cfg)
    stats = RunningMeanStd(jnp.array([1000.0, 0.5]), jnp.array([50.0, 0.1]), jnp.float32(1e3))
    learner = state.learner._replace(norm=state.learner.norm._replace(obs=stats))
    state = state._replace(learner=learner)
    returns = jppo.evaluate(cfg, state, jax.random.key(1), num_episodes=2)
    expected = _reference_returns(cfg, state.learner.params, stats, 20)
    np.testing.assert_allclose(returns, expected, rtol=1e-5)
    fresh = _reference_returns(cfg, state.learner.params, RunningMeanStd.init((2,)), 20)
    assert abs(fresh - expected) > 1e-3


def test_evaluate_cartpole_and_pendulum(norm_parts):
    _, state, _, _, _ = norm_parts
    cart = np.asarray(jppo.evaluate(NORM, state, jax.random.key(0), num_episodes=16))
    chex.assert_shape(cart, (16,))
    # CartPole pays 1 per step: each return is its own episode's length (rewards after an
    # episode's end are not counted, so lengths differ) and at most the 500-step limit.
    np.testing.assert_array_equal(cart, np.round(cart))
    assert cart.min() >= 1 and cart.max() <= 500 and len(np.unique(cart)) > 1
    np.testing.assert_array_equal(
        cart, jppo.evaluate(NORM, state, jax.random.key(0), num_episodes=16)
    )

    cfg = SMALL_PENDULUM.replace(normalize_obs=True)
    pend = jppo.evaluate(cfg, init_state(cfg), jax.random.key(1), num_episodes=4)
    chex.assert_shape(pend, (4,))
    # 200 steps of rewards in [-(π² + 0.1·8² + 0.001·2²), 0].
    assert np.all(pend <= 0) and np.all(pend >= -200 * 16.2736044)
