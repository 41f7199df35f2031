"""Session-wide compiled runs, shared so the suite compiles few distinct programs."""

import jax
import pytest

import jppo
from tests.helpers import SMALL


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
