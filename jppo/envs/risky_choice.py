"""RiskyChoice: a one-decision bandit with a delayed, random payoff — the CVaR test bed.

The risky branch has the higher mean return but the lower CVaR_0.1, so a
risk-neutral learner (``risk_weight`` 0) should pick it and a CVaR learner (``risk_weight``
1) the safe branch. The payoff arrives ``delay`` steps after the choice, so the value of the
choice must travel back through the critic's bootstrap (and its quantiles) rather than be
read off the immediate reward.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

SAFE = 0
RISKY = 1


@struct.dataclass
class EnvState(environment.EnvState):
    time: jax.Array  # [] int32, steps taken in this episode
    risky: jax.Array  # [] bool, branch chosen at step 0 (False before the choice)
    bad_outcome: jax.Array  # [] bool, risky draw fixed at the choice, hidden until paid


@struct.dataclass
class EnvParams(environment.EnvParams):
    """RiskyChoice parameters; the episode length is ``L = delay + 1``.

    ``max_steps_in_episode`` defaults to L; the episode ends by termination at step L, so
    truncation only fires if it is set below L.
    """

    delay: int = 4
    safe_reward: float = 1.0
    risky_high: float = 2.0
    risky_low: float = -10.0
    p_bad: float = 0.05
    max_steps_in_episode: int = 5


class BranchStatistics(NamedTuple):
    """Exact return statistics of always-safe and always-risky play."""

    safe_mean: float
    safe_cvar: float
    risky_mean: float
    risky_cvar: float


def branch_statistics(params: EnvParams, alpha: float = 0.1) -> BranchStatistics:
    """Mean and lower-tail CVaR_α of each branch's episode return (host-side floats).

    The risky return is two-point: ``lo`` with probability ``p`` and ``hi`` otherwise, so
        CVaR_α = lo                          if α <= p,
        CVaR_α = (p·lo + (α − p)·hi) / α     otherwise,
    the mean of the worst α fraction of outcomes (Rockafellar & Uryasev, 2000).

    Example:
        >>> branch_statistics(EnvParams(), alpha=0.1)
        BranchStatistics(safe_mean=1.0, safe_cvar=1.0, risky_mean=1.4, risky_cvar=-4.0)
    """
    p = float(params.p_bad)
    lo = min(float(params.risky_low), float(params.risky_high))
    hi = max(float(params.risky_low), float(params.risky_high))
    p_lo = p if lo == float(params.risky_low) else 1.0 - p
    risky_mean = p * float(params.risky_low) + (1.0 - p) * float(params.risky_high)
    risky_cvar = lo if alpha <= p_lo else (p_lo * lo + (alpha - p_lo) * hi) / alpha
    safe = float(params.safe_reward)
    return BranchStatistics(safe, safe, round(risky_mean, 12), round(risky_cvar, 12))


class RiskyChoice(environment.Environment[EnvState, EnvParams]):
    """Pick a safe or a risky branch once; the payoff is paid ``delay`` steps later.

    An episode lasts exactly ``L = delay + 1`` steps (5 by default) and ends by
    termination, never truncation. The first action picks the branch:

        action 0 = safe:  pays ``safe_reward`` = 1.0 for sure;
        action 1 = risky: pays ``risky_high`` = 2.0 with probability 1 − p_bad = 0.95,
                          ``risky_low`` = −10.0 with probability p_bad = 0.05.

    Every later action is ignored. The risky draw is sampled with the step key at the choice
    (so it is fixed from then on) and stays hidden: no observation ever depends on it. The
    whole return is the reward of step L; every earlier reward is 0. With the defaults:

        safe:  mean = 1.0,  CVaR_0.1 = 1.0
        risky: mean = 0.95·2 − 0.05·10 = 1.4,
               CVaR_0.1 = (0.05·(−10) + (0.1 − 0.05)·2) / 0.1 = −4.0

    Risky wins on the mean (1.4 > 1.0) and loses on CVaR_0.1 (−4.0 < 1.0).

    Observation, shape ``[4]`` float32:
        0. is_choice_step: 1 at time 0, else 0
        1. branch_is_safe: 1 after choosing safe, else 0
        2. branch_is_risky: 1 after choosing risky, else 0
        3. time / L, in [0, 1]

    Example:
        >>> import jax
        >>> env = RiskyChoice()
        >>> params = env.default_params
        >>> obs, state = env.reset(jax.random.key(0), params)
        >>> obs.tolist()
        [1.0, 0.0, 0.0, 0.0]
    """

    def __init__(self):
        super().__init__()
        self.obs_shape = (4,)

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    def step_env(
        self,
        key: jax.Array,
        state: EnvState,
        action: int | float | jax.Array,
        params: EnvParams,
    ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, dict[Any, Any]]:
        """Records the branch at time 0; pays ``_payoff`` on reaching time L."""
        is_choice = state.time == 0
        bad_draw = jax.random.bernoulli(key, params.p_bad)
        state = EnvState(
            time=state.time + 1,
            risky=jnp.where(is_choice, jnp.asarray(action) == RISKY, state.risky),
            bad_outcome=jnp.where(is_choice, bad_draw, state.bad_outcome),
        )
        terminated = self.is_terminated(state, params)
        reward = jnp.where(terminated, self._payoff(state, params), 0.0)
        info = {"discount": self.discount(state, params)}
        return self.get_obs(state, params), state, reward, terminated, info

    def _payoff(self, state: EnvState, params: EnvParams) -> jax.Array:
        """Episode return of the chosen branch and the drawn outcome, shape ``[]``."""
        risky_payoff = jnp.where(state.bad_outcome, params.risky_low, params.risky_high)
        payoff = jnp.where(state.risky, risky_payoff, params.safe_reward)
        return payoff.astype(jnp.float32)

    def reset_env(self, key: jax.Array, params: EnvParams) -> tuple[jax.Array, EnvState]:
        """Starts at the choice step; the key is unused (the start is deterministic)."""
        del key
        state = EnvState(time=jnp.int32(0), risky=jnp.bool_(False), bad_outcome=jnp.bool_(False))
        return self.get_obs(state, params), state

    def get_obs(self, state: EnvState, params=None, key=None) -> jax.Array:
        """``[is_choice_step, branch_is_safe, branch_is_risky, time / L]``, shape ``[4]``."""
        del key
        params = self.default_params if params is None else params
        chosen = state.time > 0
        return jnp.array(
            [
                state.time == 0,
                chosen & ~state.risky,
                chosen & state.risky,
                state.time / (params.delay + 1),
            ],
            dtype=jnp.float32,
        )

    def is_terminated(self, state: EnvState, params: EnvParams) -> jax.Array:
        """True once L = delay + 1 steps have been taken."""
        return state.time >= params.delay + 1

    def is_truncated(self, state: EnvState, params: EnvParams) -> jax.Array:
        """Time limit hit before the natural end; never at the default ``max_steps = L``."""
        limit_hit = state.time >= params.max_steps_in_episode
        return limit_hit & ~self.is_terminated(state, params)

    @property
    def name(self) -> str:
        """Environment name."""
        return "RiskyChoice"

    @property
    def num_actions(self) -> int:
        """Number of actions: 0 = safe, 1 = risky."""
        return 2

    def action_space(self, params: EnvParams | None = None) -> spaces.Discrete:
        """Action space: ``Discrete(2)``, 0 = safe, 1 = risky."""
        return spaces.Discrete(2)

    def observation_space(self, params: EnvParams) -> spaces.Box:
        """Box ``[0, 1]^4``."""
        return spaces.Box(0.0, 1.0, (4,), dtype=jnp.float32)

    def state_space(self, params: EnvParams) -> spaces.Dict:
        """State space of the environment."""
        return spaces.Dict(
            {
                "time": spaces.Discrete(params.delay + 2),
                "risky": spaces.Discrete(2),
                "bad_outcome": spaces.Discrete(2),
            }
        )
