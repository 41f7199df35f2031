"""Every record that crosses a module boundary, declared once (NamedTuples: pytrees that jit,
vmap and save). Each is built by keyword.

Shapes: B = num_envs, T = num_steps, D = flat observation size, A = action size, N = number
of quantiles, H = lstm_size, C = number of LSTM re-evaluation chunks. A population or seed
axis appears only through vmap.

The train state splits in two on purpose. `Learner` is what learns and what a population
exploit copies (one `tree.map` over it); `Actors` is what belongs to a member's own
environments and stays with them.
"""

from __future__ import annotations

import difflib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jppo.config import TRACED_FIELDS, PPOConfig

_HyperparamsFields = NamedTuple("_HyperparamsFields", [(name, Any) for name in TRACED_FIELDS])


class Hyperparams(_HyperparamsFields):
    """Traced numeric hyperparameters: one float32 scalar per `TRACED_FIELDS` name.

    Field names and meanings are those of `PPOConfig` (the fields marked traced there); a
    field is None where its feature is statically off. Vmapping over a `Hyperparams` whose
    leaves have a leading axis runs a sweep without recompiling. `clip_eps` and `bc_coef`
    are also adapted during training when `adaptive_clip` / `adaptive_bc` are on.
    """

    __slots__ = ()

    @classmethod
    def from_config(cls, cfg: PPOConfig, **overrides) -> Hyperparams:
        """The config's values (or `overrides`, e.g. arrays for a sweep) as float32 leaves.

        Raises:
          ValueError: for an override that is not a traced field, or that gives a number to
            a feature the config switches off (None): the compiled program would ignore it.
        """
        for name, value in overrides.items():
            if name not in TRACED_FIELDS:
                close = difflib.get_close_matches(name, TRACED_FIELDS, n=3)
                hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
                raise ValueError(f"Hyperparams: {name!r} is not a traced PPOConfig field{hint}")
            if value is not None and getattr(cfg, name) is None:
                raise ValueError(_off_in_config(name))
        values = {**cfg.hyperparams(), **overrides}
        return cls(
            **{
                k: None if values[k] is None else jnp.asarray(values[k], jnp.float32)
                for k in TRACED_FIELDS
            }
        )

    def check_config(self, cfg: PPOConfig) -> None:
        """Raise `ValueError` unless exactly the config's switched-off fields are None here.

        Which traced features exist is decided by the config when the program is built; a
        number given here for a feature the config has off would be silently ignored.
        """
        for name in TRACED_FIELDS:
            given, configured = getattr(self, name), getattr(cfg, name)
            if given is not None and configured is None:
                raise ValueError(_off_in_config(name))
            if given is None and configured is not None:
                raise ValueError(
                    f"Hyperparams.{name} is None but PPOConfig.{name}={configured!r} switches "
                    "the feature on; build the hyperparameters with "
                    "Hyperparams.from_config(cfg, ...)"
                )


def _off_in_config(name: str) -> str:
    return (
        f"Hyperparams.{name}: PPOConfig.{name} is None, which switches the feature off in "
        f"the compiled program, so this value would be ignored; set PPOConfig.{name} to a "
        "number to enable it"
    )


# -- environments -------------------------------------------------------------------------


class EnvSpec(NamedTuple):
    """What the learner needs to know about an environment, all static."""

    obs_dim: int  # observations are flattened to [obs_dim] float32
    discrete: bool
    action_dim: int  # number of actions (discrete) or flat action size (continuous)
    action_low: np.ndarray | None  # [action_dim] per-element bounds (continuous) or None
    action_high: np.ndarray | None
    max_episode_steps: int | None
    # The continuous action space's own shape (e.g. () or (2, 2)): the policy acts on flat
    # [action_dim] vectors and the environment receives this shape. None: (action_dim,).
    action_shape: tuple[int, ...] | None = None


class EnvStep(NamedTuple):
    """One vectorized environment step; every array has leading shape [B]."""

    obs: jax.Array  # [B, D] float32, after auto-reset
    state: Any
    reward: jax.Array  # [B] float32, finite
    terminated: jax.Array  # [B] bool
    truncated: jax.Array  # [B] bool, time limit reached and not terminated
    final_obs: jax.Array  # [B, D] the true next observation (before any reset)
    nonfinite: jax.Array  # [B] int32, non-finite obs/reward entries replaced this step


class Setup(NamedTuple):
    """The static set-up of a run, built once in Python from the config (`trainer.build`)."""

    env: Any  # gymnax-interface environment
    env_params: Any
    spec: EnvSpec
    network: Any  # jppo.networks.Network


# -- train state --------------------------------------------------------------------------


class NormStats(NamedTuple):
    """The learner's normalization statistics; each None when its feature is off."""

    obs: Any  # RunningMeanStd over [D], or None
    reward: Any  # RunningMeanStd over scalars (discounted returns), or None
    value: Any  # RunningMeanStd over scalars (value targets), or None


class Learner(NamedTuple):
    """What learns, and what a population exploit copies as a whole."""

    params: Any  # {"actor": ..., "critic": ...}
    opt_state: Any  # optax state of jppo.optim.make_optimizer
    norm: NormStats
    hyperparams: Hyperparams


class EpisodeStats(NamedTuple):
    """Undiscounted episode statistics kept inside the compiled loop (LogWrapper-style)."""

    returns: jax.Array  # [B] float32, return of each env's running episode so far
    lengths: jax.Array  # [B] int32, steps of each env's running episode so far
    last_return: jax.Array  # [] mean return of the episodes that ended most recently
    last_length: jax.Array  # [] their mean length


class Actors(NamedTuple):
    """What stays with a member's own environments."""

    env_state: Any  # batched gymnax state [B, ...]
    obs: jax.Array  # [B, D] float32, last raw observation of each env
    episode_start: jax.Array  # [B] bool, True where obs begins a new episode
    carry: Any  # recurrent carries {"actor": (c, h), "critic": (c, h)} each [B, H]; MLP: {}
    episodes: EpisodeStats
    discounted_returns: Any  # [B] float32 per-env accumulators of reward scaling, or None


class TrainState(NamedTuple):
    """Everything needed to continue a run; a checkpoint of it resumes exactly."""

    learner: Learner
    actors: Actors
    step: jax.Array  # [] int32, updates done so far
    rng: jax.Array  # typed PRNG key


class TrainResult(NamedTuple):
    """What `train` returns: the final state and per-update metrics ([num_updates] each)."""

    state: TrainState
    metrics: dict[str, jax.Array]


# -- one update's data --------------------------------------------------------------------


class Transition(NamedTuple):
    """One rollout, time-major [T, B, ...]."""

    obs: jax.Array  # [T, B, D] observation as the policy saw it (normalized if enabled)
    episode_start: jax.Array  # [T, B] bool, obs_t begins an episode (recurrent reset flag)
    action: jax.Array  # [T, B] int32 or [T, B, A] float32 (unclipped sample)
    log_prob: jax.Array  # [T, B]
    dist_params: Any  # {"logits": [T, B, A]} or {"mean", "log_std": [T, B, A]}
    value_pred: jax.Array  # [T, B] or [T, B, N]: critic output (normalized units if enabled)
    reward: jax.Array  # [T, B] reward used for learning (normalized if enabled)
    terminated: jax.Array  # [T, B] bool
    done: jax.Array  # [T, B] bool, terminated or truncated
    next_value_pred: jax.Array  # [T, B] or [T, B, N]: critic output at the true next obs


class RolloutStats(NamedTuple):
    """Per-rollout summaries (scalars)."""

    returns_sum: jax.Array  # sum of undiscounted returns of episodes that ended
    lengths_sum: jax.Array  # sum of their lengths
    episodes: jax.Array  # number of episodes that ended
    nonfinite_env: jax.Array  # non-finite observation/reward entries replaced


class RolloutOutput(NamedTuple):
    """What `rollout` returns."""

    actors: Actors  # advanced env states, observations, carries, episode statistics
    norm: NormStats  # observation and reward statistics including this rollout
    traj: Transition
    chunk_carries: Any  # carries at the chunk starts, leaves [C, B, H] ({} for an MLP)
    stats: RolloutStats
    metrics: dict  # recurrent: lstm_{actor,critic}_{norm,mean,std}; MLP: {}


class Batch(NamedTuple):
    """The learner's view of one rollout, time-major [T, B, ...]."""

    obs: jax.Array  # [T, B, D]
    episode_start: jax.Array  # [T, B]
    action: jax.Array  # [T, B] or [T, B, A]
    log_prob: jax.Array  # [T, B]
    dist_params: Any  # [T, B, A] leaves
    value_pred: jax.Array  # [T, B] or [T, B, N], old critic output in target units
    advantages: jax.Array  # [T, B] (batch-normalized unless adv_norm is minibatch or none)
    raw_advantages: jax.Array  # [T, B] before any normalization (AWR may weight by these)
    targets: jax.Array  # [T, B] λ-return targets in the critic's units


class Coefs(NamedTuple):
    """Scheduled coefficients of this update (scalars)."""

    learning_rate: jax.Array
    critic_learning_rate: jax.Array
    ent_coef: jax.Array
    vf_coef: jax.Array
    bc_coef: jax.Array
