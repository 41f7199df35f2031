"""What several test modules share: small configs, rollout builders and float64 oracles.

The oracles are independent numpy re-derivations (float64, plain loops where the library
vectorizes), written without looking at how jppo computes the same thing.
"""

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jppo
from jppo.permutation import round_keys
from jppo.rollout import rollout
from jppo.types import TrainState

# jax's persistent compilation cache for the suite (and the processes it starts): compiling
# dominates the suite's time on a CPU. `JPPO_TEST_JAX_CACHE=0` turns it off.
JAX_CACHE_DIR = Path(__file__).resolve().parents[1] / ".jax_cache"
JAX_CACHE_MIN_COMPILE_SECS = 0.5
USE_JAX_CACHE = os.environ.get("JPPO_TEST_JAX_CACHE", "1") != "0"


def jax_cache_env() -> dict:
    """Environment variables giving a child process the suite's compilation cache."""
    if not USE_JAX_CACHE:
        return {}
    return {
        "JAX_COMPILATION_CACHE_DIR": str(JAX_CACHE_DIR),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": str(JAX_CACHE_MIN_COMPILE_SECS),
    }


# A tiny CartPole run: 4 updates of 4 envs x 32 steps.
SMALL = jppo.PPOConfig(total_timesteps=512, num_envs=4, num_steps=32)
# A tiny continuous-action run.
SMALL_PENDULUM = jppo.PPOConfig(env="Pendulum-v1", total_timesteps=512, num_envs=4, num_steps=32)


# -- rollout builders ---------------------------------------------------------------------


def cli_env() -> dict:
    """The environment a `python -m jppo` subprocess runs in: unbuffered, the shared cache,
    and without CI (which would switch the progress display to plain lines)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **jax_cache_env())
    env.pop("CI", None)
    return env


def run_cli(*args, timeout=600) -> subprocess.CompletedProcess:
    """`python -m jppo *args` in a subprocess; its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "jppo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(),
    )


def interrupt_cli(*args, at: str, timeout=600) -> tuple[int, str, str]:
    """`python -m jppo *args`, sent SIGINT once a stdout line starts with `at`.

    Returns (exit code, the stdout after that line, stderr).
    """
    child = subprocess.Popen(
        [sys.executable, "-m", "jppo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    for line in child.stdout:
        if line.startswith(at):
            child.send_signal(signal.SIGINT)
            break
    rest, err = child.communicate(timeout=timeout)
    return child.returncode, rest, err


def init_state(cfg, key=0) -> TrainState:
    """A fresh TrainState of `cfg` (`key` an int seed or a PRNG key)."""
    key = jax.random.key(key) if isinstance(key, int) else key
    return jppo.make_trainer(cfg).init(key)


def rollout_state(cfg, setup, state: TrainState, key):
    """One rollout from `state`: (state advanced as the trainer would before its update,
    Transition [T, B, ...], carries at the chunk starts, RolloutOutput)."""
    out = rollout(cfg, setup, state.learner, state.actors, key)
    state = state._replace(actors=out.actors, learner=state.learner._replace(norm=out.norm))
    return state, out.traj, out.chunk_carries, out


def fresh_rollout(cfg, key=0):
    """One real rollout of `cfg` from fresh parameters: (network, state, traj, carry0)."""
    trainer = jppo.make_trainer(cfg)
    state = trainer.init(jax.random.key(key))
    state, traj, carry0, _ = rollout_state(cfg, trainer.setup, state, jax.random.key(key + 1))
    return trainer.setup.network, state, traj, carry0


def final_return(metrics, fraction=0.05):
    """Mean episode return of the last `fraction` of updates (averaged over seeds)."""
    returns = jax.device_get(metrics["episode_return"])
    tail = max(1, int(returns.shape[-1] * fraction))
    return float(returns[..., -tail:].mean())


# -- comparing pytrees ----------------------------------------------------------------------


def as_numpy(tree):
    """Leaves as numpy arrays; typed PRNG keys as their raw data (so they compare)."""

    def leaf(x):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.asarray(x)

    return jax.tree.map(leaf, tree)


def assert_trees_equal(a, b):
    """Same structure and bit-identical leaves."""
    a, b = as_numpy(a), as_numpy(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


def assert_trees_close(actual, expected, rtol=1e-5, atol=1e-6):
    """Same structure and leaves equal within float tolerance."""
    actual, expected = as_numpy(actual), as_numpy(expected)
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for x, y in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


# -- compilation counting ------------------------------------------------------------------


@contextlib.contextmanager
def count_compilations():
    """Counts XLA backend compilations inside the block (with the persistent compilation
    cache off, so that a program found on disk still counts as compiled here)."""
    events = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            events.append(duration)

    cache_on = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
        jax.config.update("jax_enable_compilation_cache", cache_on)


# -- float64 oracles ----------------------------------------------------------------------


def np_gae(rewards, values, next_values, terminated, done, gamma, lam):
    """GAE by the backward recursion in float64: (advantages, λ-returns), [T, ...] each.

    δ_t = r_t + γ(1 − terminated_t)·next_v_t − v_t; A_t = δ_t + γλ(1 − done_t)·A_{t+1}.
    """
    rewards, values, next_values = (
        np.asarray(a, np.float64) for a in (rewards, values, next_values)
    )
    terminated = np.asarray(terminated, np.float64)
    done = np.asarray(done, np.float64)
    adv = np.zeros_like(rewards)
    running = np.zeros(rewards.shape[1:])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * (1.0 - terminated[t]) * next_values[t] - values[t]
        running = delta + gamma * lam * (1.0 - done[t]) * running
        adv[t] = running
    return adv, adv + values


def np_cvar(quantiles, alpha):
    """(1/α)∫_0^α F⁻¹(u)du for the step quantile function of N sorted quantiles: quantile i
    covers u ∈ [i/N, (i+1)/N) and contributes its overlap with [0, α]. [..., N] -> [...]."""
    q = np.sort(np.asarray(quantiles, np.float64), axis=-1)
    n = q.shape[-1]
    overlap = np.clip(alpha - np.arange(n) / n, 0.0, 1.0 / n)
    return (q * overlap).sum(-1) / alpha


def np_log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def sub_jaxprs(eqn):
    """The jaxprs nested in one equation's parameters (scan and while bodies, calls,
    custom-derivative rules), without reaching into jax's private API."""
    for param in eqn.params.values():
        for sub in param if isinstance(param, (list, tuple)) else (param,):
            if hasattr(sub, "eqns"):
                yield sub
            elif hasattr(sub, "jaxpr"):
                yield sub.jaxpr if hasattr(sub.jaxpr, "eqns") else sub.jaxpr.jaxpr


def primitive_count(jaxpr, *names: str) -> int:
    """Equations of the primitives `names` in `jaxpr`, nested jaxprs included."""
    own = sum(eqn.primitive.name in names for eqn in jaxpr.eqns)
    return own + sum(primitive_count(sub, *names) for e in jaxpr.eqns for sub in sub_jaxprs(e))


def qr_operand_shapes(fn, *args) -> list[tuple]:
    """Shapes of the matrices every QR in `jax.make_jaxpr(fn)(*args)` factors, nested
    jaxprs (scan, map, custom rules) included: a batched QR shows a leading batch axis."""
    out = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in ("qr", "geqrf", "householder_product"):
                out.extend(v.aval.shape for v in eqn.invars)
            for sub in sub_jaxprs(eqn):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return out


def epoch_keys(seed: int, cfg) -> jax.Array:
    """One epoch's shuffle keys as `update` passes them to `_minibatches`:
    uint32 [num_devices, rounds]."""
    return round_keys(jax.random.key(seed), (cfg.num_devices,))
