"""Session-wide compiled runs, shared so the suite compiles few distinct programs.

XLA compilation dominates the suite's time on a CPU, so compiled programs are kept in jax's
persistent compilation cache under `.jax_cache/` in the repository (git-ignored): a second
run of the suite, or of one file, skips most compiles. `JPPO_TEST_JAX_CACHE=0` turns it off.
"""

import jax
import pytest

import jppo
from tests.helpers import JAX_CACHE_DIR, JAX_CACHE_MIN_COMPILE_SECS, SMALL, USE_JAX_CACHE

if USE_JAX_CACHE:
    jax.config.update("jax_compilation_cache_dir", str(JAX_CACHE_DIR))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", JAX_CACHE_MIN_COMPILE_SECS)


@pytest.fixture(scope="session")
def small_run():
    return jppo.train(SMALL, jax.random.key(0))


@pytest.fixture(scope="session")
def cartpole_default_run():
    """The default config on CartPole-v1, 4 seeds in one program (~45 s on 2 cores)."""
    return jppo.train_seeds(jppo.PPOConfig(), jax.random.split(jax.random.key(0), 4))


@pytest.fixture(scope="session")
def pendulum_preset_run():
    """The Pendulum-v1 preset (1M steps), 4 seeds in one program (~90 s on 2 cores)."""
    cfg = jppo.PPOConfig.preset("Pendulum-v1")
    return jppo.train_seeds(cfg, jax.random.split(jax.random.key(0), 4))
