"""Shared small configurations and compiled runs, so the suite compiles few distinct shapes."""

import jax
import pytest

import jppo

# A tiny CartPole run: 4 updates of 4 envs x 32 steps.
SMALL = jppo.PPOConfig(total_timesteps=512, num_envs=4, num_steps=32)
# A tiny continuous-action run.
SMALL_PENDULUM = jppo.PPOConfig(env="Pendulum-v1", total_timesteps=512, num_envs=4,
                                num_steps=32)


def fresh_rollout(cfg, key=0):
    """One real rollout of `cfg` from fresh parameters: (network, state, traj, carry0)."""
    from jppo import trainer
    from jppo.rollout import rollout

    built = trainer.build(cfg)
    env, env_params, spec, network = built
    state = trainer.init_state(cfg, jax.random.key(key), built=built)
    state, traj, carry0, _ = rollout(cfg, env, env_params, spec, network, state,
                                     jax.random.key(key + 1))
    return network, state, traj, carry0


def final_return(metrics, fraction=0.05):
    """Mean episode return of the last `fraction` of updates (averaged over seeds)."""
    returns = jax.device_get(metrics["episode_return"])
    tail = max(1, int(returns.shape[-1] * fraction))
    return float(returns[..., -tail:].mean())


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
