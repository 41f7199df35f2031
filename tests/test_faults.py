"""Faults: what the metrics report about bad values, and what training does with them.

Non-finite log-probabilities (ratios and KL), a forced non-finite gradient, environments that
emit NaN / Inf, float64 mode, action spaces that are not 1-D, and the step counter at sizes
where int32 wraps.
"""

import functools
import os
import subprocess
import sys
from pathlib import Path

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import environment, spaces

import jppo
from jppo import envs, policy, schedules
from jppo import targets as targets_lib
from jppo import trainer as train_lib
from jppo.update import update
from tests.helpers import SMALL, final_return, fresh_rollout

# -- ratios and KL over the minibatch steps ----------------------------------------------------

# One compiled update serves both tests: early stopping on (a threshold that a finite KL
# never reaches here), estimator "exact" so that its KL can be made NaN through the stored
# distribution parameters while the log-probs stay finite.
GUARD_CFG = SMALL.replace(target_kl=1e6, kl_estimator="exact")


@functools.cache
def _guard_setup():
    network, state, traj, carry0 = fresh_rollout(GUARD_CFG, key=3)
    hp = state.learner.hyperparams
    batch, _, _ = targets_lib.make_batch(GUARD_CFG, traj, hp, state.learner.norm.value)
    coefs = schedules.coefficients(GUARD_CFG, hp, state.step)
    # Learning rates 0: the parameters never move, so every ratio is exactly what the
    # stored log-probs make it, in every epoch.
    frozen = coefs._replace(learning_rate=jnp.zeros(()), critic_learning_rate=jnp.zeros(()))
    fn = jax.jit(
        lambda b: update(
            GUARD_CFG,
            network,
            state.learner.params,
            state.learner.opt_state,
            b,
            carry0,
            hp,
            frozen,
            jax.random.key(2),
        )
    )
    return state, batch, fn


def _np_k3(log_r):
    log_r = np.asarray(log_r, np.float64)
    return np.expm1(log_r) - log_r


def test_ratio_extremes_and_counts_reduce_over_the_applied_steps():
    """One ratio of e^5 in 128 samples is the update's ratio_max (not the average of each
    minibatch's maximum), one of e^-3 its ratio_min, and one NaN log-prob counts once per
    epoch in nonfinite_ratio_count (a sum, not an average). The NaN sample is masked out of
    the KL estimates like the surrogate masks it: they stay finite and equal the float64
    mean over the finite samples."""
    _, batch, fn = _guard_setup()
    old = np.asarray(batch.log_prob, np.float32).copy()
    old[0, 0] -= 5.0  # ratio e^5 ≈ 148.4
    old[5, 1] += 3.0  # ratio e^-3 ≈ 0.0498
    old[9, 2] = np.nan
    _, _, m = fn(batch._replace(log_prob=jnp.asarray(old)))
    m = jax.device_get(m)
    np.testing.assert_allclose(m["ratio_max"], np.exp(5.0), rtol=1e-4)
    np.testing.assert_allclose(m["ratio_min"], np.exp(-3.0), rtol=1e-4)
    assert float(m["nonfinite_ratio_count"]) == GUARD_CFG.update_epochs
    # Every epoch covers each sample once in equal minibatches, so the mean over the steps
    # is the mean over the samples; the NaN sample contributes 0 (treated as unchanged).
    expected_k3 = (_np_k3(5.0) + _np_k3(-3.0)) / GUARD_CFG.batch_size
    np.testing.assert_allclose(m["kl_k3"], expected_k3, rtol=1e-3)
    np.testing.assert_allclose(m["kl_k1"], (-5.0 + 3.0) / GUARD_CFG.batch_size, rtol=1e-3)
    assert np.isfinite(m["kl_exact"]) and abs(float(m["kl_exact"])) < 1e-6
    assert float(m["epochs_completed"]) == GUARD_CFG.update_epochs  # nothing tripped


def test_nonfinite_kl_stops_the_update():
    """A NaN KL estimate counts as past the threshold: the first minibatch step is skipped
    and so is every later one (NaN > threshold alone is False and would never stop)."""
    state, batch, fn = _guard_setup()
    logits = batch.dist_params["logits"]
    bad = batch._replace(dist_params={"logits": logits.at[:].set(jnp.nan)})
    params, opt_state, m = fn(bad)
    assert float(m["epochs_completed"]) == 0.0
    jax.tree.map(np.testing.assert_array_equal, params, state.learner.params)
    _, _, ok = fn(batch)  # the same update on clean data runs every epoch
    assert float(ok["epochs_completed"]) == GUARD_CFG.update_epochs


# -- a forced non-finite gradient in a training step --------------------------------------------


def test_nonfinite_gradient_steps_are_skipped_and_the_metric_is_cumulative():
    """A NaN critic weight makes every gradient non-finite: each minibatch step is skipped
    (parameters unchanged) and `nonfinite_grad_count` counts the run's skipped steps so far:
    16 after the first update, 32 after the second."""
    trainer = jppo.make_trainer(SMALL)
    state = trainer.init(jax.random.key(0))
    critic = jax.tree.map(
        lambda x: x.at[(0,) * x.ndim].set(jnp.nan), state.learner.params["critic"]
    )
    params = {**state.learner.params, "critic": critic}
    state = state._replace(learner=state.learner._replace(params=params))
    step = jax.jit(trainer.step)
    steps = SMALL.update_epochs * SMALL.num_minibatches
    s1, m1 = step(state)
    s2, m2 = step(s1)
    assert float(m1["nonfinite_grad_count"]) == steps
    assert float(m2["nonfinite_grad_count"]) == 2 * steps
    actor = lambda s: s.learner.params["actor"]
    jax.tree.map(np.testing.assert_array_equal, actor(s2), actor(state))


# -- environments that emit NaN / Inf -----------------------------------------------------------


class FaultyEnv:
    """A wrapper that replaces, at a fraction `rate` of steps each, one observation entry
    and (independently) the reward with NaN, +Inf or -Inf. The draws come from the step's
    own key, so `faults(key)` tells which steps were hit."""

    def __init__(self, env, rate: float):
        self._env, self.rate = env, rate

    def __getattr__(self, name):
        if name == "_env":
            raise AttributeError(name)
        return getattr(self._env, name)

    def faults(self, key):
        """(obs hit, reward hit, which obs entry, the bad value) for a step key."""
        k_hit, k_entry, k_value = jax.random.split(jax.random.fold_in(key, 12345), 3)
        hit = jax.random.uniform(k_hit, (2,)) < self.rate
        obs_dim = int(np.prod(self._env.observation_space(self._env.default_params).shape))
        entry = jax.random.randint(k_entry, (), 0, obs_dim)
        value = jnp.array([jnp.nan, jnp.inf, -jnp.inf])[jax.random.randint(k_value, (), 0, 3)]
        return hit[0], hit[1], entry, value

    def reset(self, key, params=None):
        return self._env.reset(key, params)

    def step(self, key, state, action, params=None):
        obs, state, reward, terminated, truncated, info = self._env.step(key, state, action, params)
        obs_hit, reward_hit, entry, value = self.faults(key)
        obs = obs.at[entry].set(jnp.where(obs_hit, value, obs[entry]))
        reward = jnp.where(reward_hit, value, jnp.asarray(reward, jnp.float32))
        return obs, state, reward, terminated, truncated, info


def test_env_faults_are_sanitized_and_counted_exactly():
    """At the env-step level: every injected NaN / Inf is replaced by 0 and counted, per env,
    and nothing else changes (rate 0.3 so that a batch of 256 holds many faults)."""
    inner, params = gymnax.make("CartPole-v1")
    env = FaultyEnv(inner, rate=0.3)
    num = 256
    _, state = envs.reset(env, params, jax.random.split(jax.random.key(0), num))
    keys = jax.random.split(jax.random.key(1), num)
    action = jnp.arange(num) % 2
    out = jax.jit(lambda k, s, a: envs.step(env, params, k, s, a))(keys, state, action)
    clean = jax.jit(lambda k, s, a: envs.step(inner, params, k, s, a))(keys, state, action)
    obs_hit, reward_hit, entry, _ = jax.vmap(env.faults)(keys)
    expected = np.asarray(obs_hit, np.int32) + np.asarray(reward_hit, np.int32)
    assert 20 < expected.sum() < 300
    np.testing.assert_array_equal(out.nonfinite, expected)
    assert np.all(np.isfinite(out.obs)) and np.all(np.isfinite(out.reward))
    hit_mask = np.zeros(out.obs.shape, bool)
    hit_mask[np.arange(num), np.asarray(entry)] = np.asarray(obs_hit)
    np.testing.assert_array_equal(np.asarray(out.obs)[hit_mask], 0.0)
    np.testing.assert_array_equal(np.asarray(out.obs)[~hit_mask], np.asarray(clean.obs)[~hit_mask])
    np.testing.assert_array_equal(
        out.reward, np.where(np.asarray(reward_hit), 0.0, np.asarray(clean.reward))
    )


def _faulty_cartpole(rate=0.01):
    return FaultyEnv(gymnax.make("CartPole-v1")[0], rate=rate)


def test_training_with_env_faults_stays_finite():
    """NaN / Inf in 1 % of observations and rewards: a short run counts them (about 2 % of
    its steps), and every metric and parameter stays finite."""
    cfg = SMALL.replace(env=_faulty_cartpole(), total_timesteps=SMALL.batch_size * 8)
    out = jppo.train(cfg, jax.random.key(0))
    metrics = jax.device_get(out.metrics)
    for name, value in metrics.items():
        assert np.all(np.isfinite(value)), name
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(out.state.learner.params))
    total = float(metrics["nonfinite_env_count"].sum())
    assert 0.005 * cfg.total_timesteps < total < 0.05 * cfg.total_timesteps, total


@pytest.mark.slow
def test_cartpole_with_env_faults_still_learns():
    """The default config, 500k steps, with 1 % of observations and rewards NaN / Inf:
    parameters stay finite, the faults were counted, and every one of 4 seeds still ends
    (last 5 % of updates) at a return >= 400."""
    cfg = jppo.PPOConfig(env=_faulty_cartpole())
    num_seeds = 4
    out = jppo.train_seeds(cfg, jax.random.split(jax.random.key(0), num_seeds))
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(out.state.learner.params))
    faults = float(out.metrics["nonfinite_env_count"].sum())
    assert faults > 0.01 * num_seeds * cfg.total_timesteps, faults
    per_seed = [final_return({"episode_return": r}) for r in out.metrics["episode_return"]]
    assert min(per_seed) >= 400, per_seed


# -- float64 mode -------------------------------------------------------------------------------

_X64_SCRIPT = """
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import jppo

for env in ("CartPole-v1", "Pendulum-v1"):
    cfg = jppo.PPOConfig(env=env, total_timesteps=64, num_envs=2, num_steps=32,
                         update_epochs=1, num_minibatches=2, hidden_sizes=(8,))
    out = jppo.train(cfg, jax.random.key(0))
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(out.state.learner.params))
    returns = np.asarray(jppo.evaluate(cfg, out.state, jax.random.key(1), num_episodes=2))
    assert returns.shape == (2,) and np.all(np.isfinite(returns)), returns
    print(env, "ok", float(out.metrics["timesteps"][-1]), returns.tolist())
"""


def test_float64_mode_trains_and_evaluates():
    """Under jax_enable_x64 (in a fresh interpreter, so the mode cannot leak into the other
    tests) a discrete and a continuous env train and evaluate. Pendulum-v1 failed there:
    its auto-reset selects between a state computed from a float32 action and a float64
    reset state."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", _X64_SCRIPT], cwd=root, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CartPole-v1 ok 64.0" in proc.stdout and "Pendulum-v1 ok 64.0" in proc.stdout


# -- continuous action spaces that are not 1-D ---------------------------------------------------


@struct.dataclass
class _EchoState(environment.EnvState):
    time: int


class EchoBox(environment.Environment):
    """Continuous actions of any shape; the next observation is the action received,
    flattened. `step_env` refuses (at trace time) an action of the wrong shape."""

    def __init__(self, low, high):
        self.low, self.high = np.asarray(low, np.float32), np.asarray(high, np.float32)

    @property
    def default_params(self):
        return environment.EnvParams(max_steps_in_episode=1000)

    def step_env(self, key, state, action, params):
        assert action.shape == self.low.shape, (action.shape, self.low.shape)
        obs = jnp.reshape(action, (-1,)).astype(jnp.float32)
        return obs, _EchoState(time=state.time + 1), 0.0, jnp.array(False), {}

    def reset_env(self, key, params):
        return jnp.zeros(self.low.size, jnp.float32), _EchoState(time=0)

    def action_space(self, params=None):
        return spaces.Box(self.low, self.high, self.low.shape, jnp.float32)

    def observation_space(self, params):
        return spaces.Box(-jnp.inf, jnp.inf, (self.low.size,), jnp.float32)


ECHO_SPACES = {
    "scalar": (-1.0, 2.0),
    "2x2": ([[-1.0, 0.0], [-2.0, -0.5]], [[1.0, 0.5], [2.0, 3.0]]),  # per-element bounds
}


@pytest.mark.parametrize("name", list(ECHO_SPACES))
def test_action_space_shape_and_bounds_are_restored(name):
    """The env receives actions of its own space's shape (() or (2, 2), not the flat (1,) or
    (4,)), clipped per element to that element's bounds; the rollout stores the unclipped
    flat sample, whose log-prob (float64 Gaussian) is the stored one."""
    low, high = ECHO_SPACES[name]
    env = EchoBox(low, high)
    spec = envs.env_spec(env, env.default_params)
    assert spec.action_shape == env.low.shape and spec.action_dim == env.low.size
    cfg = jppo.PPOConfig(
        env=env, num_envs=4, num_steps=8, total_timesteps=32, num_minibatches=1, log_std_init=1.0
    )
    _, _, traj, _ = fresh_rollout(cfg)
    action = np.asarray(traj.action, np.float64)  # [T, B, A]
    flat_low, flat_high = env.low.reshape(-1), env.high.reshape(-1)
    received = np.asarray(traj.obs[1:], np.float64)  # step t's action comes back at t + 1
    np.testing.assert_allclose(received, np.clip(action[:-1], flat_low, flat_high), atol=1e-6)
    assert np.any(action < flat_low) and np.any(action > flat_high)  # clipping was needed
    mean = np.asarray(traj.dist_params["mean"], np.float64)
    log_std = np.asarray(traj.dist_params["log_std"], np.float64)
    log_prob = np.sum(
        -0.5 * ((action - mean) / np.exp(log_std)) ** 2 - log_std - 0.5 * np.log(2 * np.pi), -1
    )
    np.testing.assert_allclose(traj.log_prob, log_prob, rtol=1e-5, atol=1e-5)
    # The mode (evaluation) goes out in the space's shape too.
    sent = policy.env_action(jnp.zeros((3, env.low.size)), spec)
    assert sent.shape == (3,) + env.low.shape


# -- the step counter ---------------------------------------------------------------------------


def test_timesteps_do_not_wrap_past_int32():
    """At 2048 envs x 128 steps, 8193 updates are 2^31 + 2^18 env steps: an int32 counter
    wraps negative there. The float32 count is exact for such power-of-two batches, within
    6e-8 of the exact count for any other, and never decreases."""
    counted = jax.jit(train_lib.env_steps, static_argnums=1)
    assert float(counted(jnp.int32(8193), 2048 * 128)) == 8193 * 2048 * 128
    steps = np.arange(2**31 // 3000, 2**31 // 3000 + 2000, dtype=np.int32)
    odd = np.asarray(counted(jnp.asarray(steps), 3000), np.float64)  # across 2^31
    np.testing.assert_allclose(odd, steps.astype(np.float64) * 3000, rtol=6e-8)
    assert np.all(odd > 0) and np.all(np.diff(odd) >= 0)
