"""JaxMARL environments as arrays with an explicit agent axis (optional extra `jppo[marl]`).

JaxMARL speaks in dicts keyed by agent name (`obs["agent_0"]`, `rewards["agent_0"]`,
`dones["__all__"]`) and resets an episode inside `step` when `dones["__all__"]` is set,
without returning the observation that ended it. The learner wants arrays and the true
final observation, so `MarlEnv` turns a JaxMARL environment into:

- observations `[B, N, D]` float32, agent i's flat observation zero-padded to the largest
  agent's size D (agents in `env.agents` order);
- rewards `[B, N]`, episode flags `[B]` (an episode ends for the whole team at
  `dones["__all__"]`; per-agent dones before it are not used: every agent stays in the
  batch until the team's episode ends);
- discrete actions `[B, N]` int32 (agent i's index must be below its own action count; the
  `action_mask [N, A]` says which of the padded A actions each agent has), or continuous
  actions `[B, N, A]` when every agent has a Box space of one shape (agents with continuous
  actions of different sizes are rejected with a ValueError);
- `final_obs [B, N, D]`: the observation that ended the step, before any reset.

The step reproduces JaxMARL's own `MultiAgentEnv.step` exactly (same key split, same
`step_env`, same reset), so the arrays equal its dicts step for step
(tests/test_marl_env.py); it calls `step_env` and `reset` itself only to keep the pre-reset
observation.

Time limits. JaxMARL has no truncated flag, so the adapter decides, per environment class,
which ends are time limits:

- MPE (`SimpleMPE` and every subclass: `MPE_simple_spread_v3`, `MPE_simple_speaker_listener_v4`,
  ...): the only end is the step counter reaching `max_steps` (`done = state.step >=
  max_steps`, 26 steps per episode with the default `max_steps=25`), so every end is a
  time limit: `truncated`, never `terminated`, and the learner bootstraps it from
  V(final observation).
- An environment (or wrapper) with the attribute `time_limit_only = True` says the same of
  itself (jppo's own test environments use it); `False` says every end is a termination.
- Any other JaxMARL environment: every end is treated as a termination (not bootstrapped),
  the conservative choice, since its ends may be real terminations (SMAX battles,
  Hanabi games) and JaxMARL does not say which.

The global state (MAPPO's centralized critic input) is the concatenation of every agent's
padded observation, `[B, N·D]`, as JaxMARL's MPE world-state wrapper builds it.

jaxmarl is imported only when a JaxMARL name is used, so jppo works without the extra.
"""

from __future__ import annotations

import difflib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jppo import prng


class MarlStep(NamedTuple):
    """One vectorized multi-agent step; leading shape [B] everywhere."""

    obs: jax.Array  # [B, N, D] float32, after the team's auto-reset
    state: Any  # batched JaxMARL state
    reward: jax.Array  # [B, N] float32, finite
    terminated: jax.Array  # [B] bool, the team's episode ended (not a time limit)
    truncated: jax.Array  # [B] bool, the team's episode hit its time limit
    final_obs: jax.Array  # [B, N, D] the observation that ended the step (pre-reset)
    nonfinite: jax.Array  # [B] int32, non-finite obs/reward entries replaced this step


def _jaxmarl():
    try:
        import jaxmarl
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError(
            "multi-agent environments need JaxMARL: pip install 'jppo[marl]' (jaxmarl==0.2.0)"
        ) from err
    return jaxmarl


# `jaxmarl.registered_envs` of the pinned jaxmarl==0.2.0. Kept here because importing
# jaxmarl builds and compiles parts of its environments, and a config check of an unknown
# env name (or any name that is not gymnax's) must not compile anything.
_JAXMARL_NAMES = (
    "MPE_simple_v3", "MPE_simple_tag_v3", "MPE_simple_world_comm_v3", "MPE_simple_spread_v3",
    "MPE_simple_crypto_v3", "MPE_simple_speaker_listener_v4", "MPE_simple_push_v3",
    "MPE_simple_adversary_v3", "MPE_simple_reference_v3", "MPE_simple_facmac_v1",
    "MPE_simple_facmac_3a_v1", "MPE_simple_facmac_6a_v1", "MPE_simple_facmac_9a_v1",
    "switch_riddle", "SMAX", "HeuristicEnemySMAX", "LearnedPolicyEnemySMAX", "ant_4x2",
    "halfcheetah_6x1", "hopper_3x1", "humanoid_9|8", "walker2d_2x3", "storm", "storm_2p",
    "storm_np", "hanabi", "overcooked", "overcooked_v2", "coin_game", "jaxnav",
    "JaxRobotarium_navigation", "JaxRobotarium_discovery", "JaxRobotarium_material_transport",
    "JaxRobotarium_warehouse", "JaxRobotarium_arctic_transport", "JaxRobotarium_foraging",
    "JaxRobotarium_rware", "JaxRobotarium_predator_prey",
)  # fmt: skip


def registered_names() -> tuple[str, ...]:
    """JaxMARL's environment names, or () when jaxmarl is not installed (not imported)."""
    import importlib.util

    return _JAXMARL_NAMES if importlib.util.find_spec("jaxmarl") is not None else ()


def is_marl_env(env: Any) -> bool:
    """True for a JaxMARL name or an object with JaxMARL's `MultiAgentEnv` interface."""
    if isinstance(env, str):
        # Gymnax and built-in names are far more common; look at JaxMARL's list (importing
        # jaxmarl) only for names that are neither.
        from jppo import envs

        return env not in envs.available_envs() and env in registered_names()
    return all(hasattr(env, a) for a in ("agents", "num_agents", "step_env", "reset"))


def check_marl_env(env: Any, env_params: Any) -> None:
    """Raise `ValueError` unless `env` is a usable JaxMARL env (name or instance)."""
    if isinstance(env, str) and env not in registered_names():
        close = difflib.get_close_matches(env, registered_names(), n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"PPOConfig.env={env!r} is invalid: not a JaxMARL name.{hint}")
    if env_params is not None:
        raise ValueError(
            f"PPOConfig.env_params={env_params!r} is invalid: JaxMARL environments have no "
            "params object; pass an instance built with its keyword arguments instead, e.g. "
            "env=jaxmarl.make('MPE_simple_spread_v3', local_ratio=0.3)"
        )
    MarlEnv(env)  # shape checks: raises for unsupported spaces


def _time_limit_only(env: Any) -> bool:
    flag = getattr(env, "time_limit_only", None)
    if flag is not None:
        return bool(flag)
    try:
        from jaxmarl.environments.mpe.simple import SimpleMPE
    except ImportError:  # pragma: no cover
        return False
    inner = env
    while hasattr(inner, "_env"):  # JaxMARL wrappers keep the environment in `_env`
        inner = inner._env
    return isinstance(inner, SimpleMPE)


def _space_kind(space) -> str:
    name = type(space).__name__
    if name == "Discrete":
        return "discrete"
    if name == "Box":
        return "continuous"
    return name


class MarlEnv:
    """A JaxMARL environment with arrays and an explicit agent axis (see the module doc).

    Static attributes: `agents` (names, in order), `num_agents` N, `obs_dim` D (padded),
    `obs_dims` (each agent's own flat size), `discrete`, `action_dim` A (padded),
    `action_dims`, `action_mask` [N, A] bool numpy, `state_dim` (= N·D),
    `time_limit_only`, `max_steps` (or None), `name`.

    Example:
        >>> menv = MarlEnv("MPE_simple_spread_v3")
        >>> obs, state = menv.reset(jax.random.split(jax.random.key(0), 4))
        >>> obs.shape
        (4, 3, 18)
    """

    def __init__(self, env: Any):
        if isinstance(env, str):
            env = _jaxmarl().make(env)
        self.env = env
        self.agents = tuple(env.agents)
        self.num_agents = len(self.agents)
        obs_shapes = [tuple(env.observation_space(a).shape) for a in self.agents]
        self.obs_dims = tuple(int(np.prod(s)) for s in obs_shapes)
        self.obs_dim = max(self.obs_dims)
        spaces = [env.action_space(a) for a in self.agents]
        kinds = {_space_kind(s) for s in spaces}
        if len(kinds) != 1 or not kinds <= {"discrete", "continuous"}:
            raise ValueError(
                f"PPOConfig.env: unsupported JaxMARL action spaces {sorted(kinds)} (every "
                "agent needs a Discrete space, or every agent a Box space)"
            )
        self.discrete = kinds == {"discrete"}
        if self.discrete:
            self.action_dims = tuple(int(s.n) for s in spaces)
            self.action_low = self.action_high = None
        else:
            shapes = {tuple(s.shape) for s in spaces}
            if len(shapes) != 1:
                raise ValueError(
                    "PPOConfig.env: agents with continuous actions of different shapes "
                    f"({sorted(shapes)}) are not supported (a padded Gaussian would put "
                    "log-probability mass on actions an agent does not have)"
                )
            shape = shapes.pop()
            self.action_dims = (int(np.prod(shape)),) * self.num_agents
            bounds = lambda b: np.broadcast_to(np.asarray(b, np.float32), shape).reshape(-1)
            self.action_low = np.stack([bounds(s.low) for s in spaces])  # [N, A]
            self.action_high = np.stack([bounds(s.high) for s in spaces])
        self.action_dim = max(self.action_dims)
        self.action_mask = np.arange(self.action_dim)[None] < np.array(self.action_dims)[:, None]
        self.heterogeneous = len(set(self.action_dims)) > 1
        self.state_dim = self.num_agents * self.obs_dim
        self.time_limit_only = _time_limit_only(env)
        max_steps = getattr(env, "max_steps", None)
        self.max_steps = int(max_steps) if max_steps is not None else None
        self.name = getattr(env, "name", type(env).__name__)

    # -- dicts <-> arrays --------------------------------------------------------------------
    def obs_array(self, obs: dict) -> tuple[jax.Array, jax.Array]:
        """Agents' observations [..., N, D] (padded, sanitized) and non-finite counts [...]."""
        rows = []
        for a, d in zip(self.agents, self.obs_dims):
            x = jnp.asarray(obs[a], jnp.float32)
            x = x.reshape(x.shape[: x.ndim - len(self.env.observation_space(a).shape)] + (d,))
            rows.append(jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, self.obs_dim - d)]))
        x = jnp.stack(rows, axis=-2)
        bad = jnp.sum(~jnp.isfinite(x), axis=(-2, -1))
        return jnp.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), bad

    def action_dict(self, action: jax.Array) -> dict:
        """[..., N] (discrete) or [..., N, A] (continuous) -> {agent: its action}."""
        if self.discrete:
            return {a: action[..., i] for i, a in enumerate(self.agents)}
        shape = tuple(self.env.action_space(self.agents[0]).shape)
        return {
            a: action[..., i, :].reshape(action.shape[:-2] + shape)
            for i, a in enumerate(self.agents)
        }

    def global_state(self, obs: jax.Array) -> jax.Array:
        """The centralized critic's input: [..., N, D] -> [..., N·D] (all observations)."""
        return obs.reshape(obs.shape[:-2] + (self.state_dim,))

    # -- one env, then a batch -------------------------------------------------------------
    def _step_one(self, key, state, action):
        # JaxMARL's `step` in its own order (key split, step_env, reset, select on
        # dones["__all__"]), done here so that the pre-reset observation is kept.
        key, key_reset = jax.random.split(key)
        obs_st, state_st, reward, dones, _ = self.env.step_env(key, state, self.action_dict(action))
        obs_re, state_re = self.env.reset(key_reset)
        done = jnp.asarray(dones["__all__"], bool)
        pick = lambda x, y: jax.lax.select(done, x, y)
        state = jax.tree.map(pick, state_re, state_st)
        obs = jax.tree.map(
            pick, {a: obs_re[a] for a in self.agents}, {a: obs_st[a] for a in self.agents}
        )
        reward = jnp.stack([jnp.asarray(reward[a], jnp.float32) for a in self.agents])
        return obs, state, reward, done, {a: obs_st[a] for a in self.agents}

    def reset(self, keys: jax.Array) -> tuple[jax.Array, Any]:
        """keys [B] -> (observations [B, N, D], batched state)."""
        obs, state = jax.vmap(self.env.reset)(keys)
        return self.obs_array(obs)[0], state

    def step(self, keys: jax.Array, state: Any, action: jax.Array) -> MarlStep:
        """Step B environments with the team auto-reset; see the module doc for the flags.

        Args:
          keys: [B] PRNG keys. state: batched state. action: [B, N] int32 or [B, N, A].
        """
        # Loop-free keys for the env's per-step randomness, as in `jppo.envs.step`.
        obs, state, reward, done, final = jax.vmap(self._step_one)(
            *prng.straight_line((keys, state)), action
        )
        state = prng.standard(state)
        obs, bad_obs = self.obs_array(obs)
        final_obs, _ = self.obs_array(final)
        bad_reward = ~jnp.isfinite(reward)
        reward = jnp.where(bad_reward, 0.0, reward)
        limit = jnp.asarray(self.time_limit_only)
        return MarlStep(
            obs=obs,
            state=state,
            reward=reward,
            terminated=done & ~limit,
            truncated=done & limit,
            final_obs=final_obs,
            nonfinite=bad_obs + jnp.sum(bad_reward, axis=-1, dtype=jnp.int32),
        )
