"""Real learning runs on real environments: CartPole-v1 with the defaults, Pendulum-v1 preset."""

import numpy as np

from tests.helpers import final_return


def test_default_config_solves_cartpole(cartpole_default_run):
    """PPOConfig() on CartPole-v1: mean of the last 5 % of updates over 4 seeds >= 475
    (PureJaxRL reaches about 485 with the same settings)."""
    metrics = cartpole_default_run.metrics
    assert final_return(metrics) >= 475, metrics["episode_return"][:, -10:]
    assert np.all(np.isfinite(metrics["policy_loss"]))
    assert float(np.max(metrics["nonfinite_grad_count"])) == 0


def test_pendulum_preset(pendulum_preset_run):
    """The Pendulum-v1 preset reaches >= -250 over 4 seeds within its 1M-step budget."""
    metrics = pendulum_preset_run.metrics
    assert metrics["timesteps"][0, -1] <= 1_000_000
    assert final_return(metrics) >= -250, metrics["episode_return"][:, -10:]
