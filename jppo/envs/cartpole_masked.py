"""CartPole with the velocities hidden: a POMDP for recurrent policies.

The physics, rewards, termination and the 500-step truncation are gymnax's CartPole-v1,
inherited unchanged; only the observation differs. An agent that sees one frame knows
where the cart and the pole are but not how fast they move, so a memoryless (MLP) policy
must guess the velocities while a recurrent one can infer them from consecutive frames.
"""

import jax
import jax.numpy as jnp
from gymnax.environments import spaces
from gymnax.environments.classic_control import cartpole

EnvState = cartpole.EnvState
EnvParams = cartpole.EnvParams


class MaskedCartPole(cartpole.CartPole):
    """gymnax CartPole-v1 observing only ``[x, theta]``.

    Observation, shape ``[2]`` float32:
        0. cart position ``x``
        1. pole angle ``theta`` (radians)

    The cart velocity ``x_dot`` and the pole's angular velocity ``theta_dot`` stay in the
    state and drive the dynamics but are never observed: the observation equals
    CartPole-v1's observation at indices ``[0, 2]``. Everything else (``EnvState``,
    ``EnvParams``, actions 0 = push left / 1 = push right, reward 1 per step, termination
    when ``|x| > 2.4`` or ``|theta| > 12°``, truncation at ``max_steps_in_episode`` = 500)
    is CartPole-v1's.

    Example:
        >>> import jax
        >>> env = MaskedCartPole()
        >>> obs, state = env.reset(jax.random.key(0), env.default_params)
        >>> obs.shape
        (2,)
    """

    def __init__(self):
        super().__init__()
        self.obs_shape = (2,)

    def get_obs(self, state: EnvState, params=None, key=None) -> jax.Array:
        """Returns ``[x, theta]``, shape ``[2]``; the velocities are masked out."""
        del params, key
        return jnp.array([state.x, state.theta])

    @property
    def name(self) -> str:
        """Environment name."""
        return "CartPole-masked"

    def observation_space(self, params: EnvParams) -> spaces.Box:
        """Box of shape ``(2,)``: ``|x| <= 2·x_threshold``, ``|theta| <= 2·theta_threshold``."""
        high = jnp.array([params.x_threshold * 2, params.theta_threshold_radians * 2])
        return spaces.Box(-high, high, (2,), dtype=jnp.float32)
