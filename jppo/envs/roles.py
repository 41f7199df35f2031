"""`RoleSplit`: a cooperative two-agent task that needs the agents to take different roles.

Both agents see the same observation, a one-hot cue c of `num_cues` values drawn afresh
each step. Agent 0 is paid for naming the cue, agent 1 for naming the next one:
the team reward, given to both, is 0.5·[a_0 = c] + 0.5·[a_1 = (c + 1) mod K]. Agents with
one shared network and no agent id see identical inputs, so they act from one
distribution p and earn at most max_p 0.5·(p(c) + p(c + 1)) = 0.5 per step; independent
networks (or a shared one with an agent id) can earn 1. Episodes last `episode_length`
steps and end only at that time limit (`time_limit_only = True`: bootstrapped).

It follows JaxMARL's `MultiAgentEnv` interface (`agents`, `reset(key)`,
`step_env(key, state, actions)`, per-agent spaces), so `PPOConfig(env=RoleSplit())` runs
through the same adapter as JaxMARL's own environments, without needing jaxmarl.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from gymnax.environments import spaces


class RoleSplitState(NamedTuple):
    cue: jax.Array  # [] int32, the cue both agents see
    step: jax.Array  # [] int32, steps taken in the episode


class RoleSplit:
    """See the module doc. Two agents, `num_cues` cues and actions, fixed-length episodes."""

    time_limit_only = True

    def __init__(self, num_cues: int = 4, episode_length: int = 8):
        self.num_cues = int(num_cues)
        self.max_steps = int(episode_length)
        self.agents = ["agent_0", "agent_1"]
        self.num_agents = 2
        self.name = f"RoleSplit-{self.num_cues}"

    def observation_space(self, agent: str) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (self.num_cues,), jnp.float32)

    def action_space(self, agent: str) -> spaces.Discrete:
        return spaces.Discrete(self.num_cues)

    def _obs(self, state: RoleSplitState) -> dict:
        cue = jax.nn.one_hot(state.cue, self.num_cues, dtype=jnp.float32)
        return {a: cue for a in self.agents}

    def reset(self, key: jax.Array):
        state = RoleSplitState(
            cue=jax.random.randint(key, (), 0, self.num_cues), step=jnp.zeros((), jnp.int32)
        )
        return self._obs(state), state

    def step_env(self, key: jax.Array, state: RoleSplitState, actions: dict):
        hit0 = actions["agent_0"] == state.cue
        hit1 = actions["agent_1"] == (state.cue + 1) % self.num_cues
        reward = 0.5 * hit0.astype(jnp.float32) + 0.5 * hit1.astype(jnp.float32)
        state = RoleSplitState(
            cue=jax.random.randint(key, (), 0, self.num_cues), step=state.step + 1
        )
        done = state.step >= self.max_steps
        dones = {a: done for a in self.agents}
        dones["__all__"] = done
        return self._obs(state), state, {a: reward for a in self.agents}, dones, {}
