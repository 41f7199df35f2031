"""The training program: `make_trainer(cfg)` gives pure `init`, `step` and `run` functions.

`make_trainer` does the static set-up in Python (environment, networks, shapes) and returns
pure functions over `TrainState`: `step` is one update — rollout → targets → minibatch epochs
→ adaptive rules — and `run(state, n)` is `n` of them in one `lax.scan`. None is jitted, so
they compose with `jax.jit` and `jax.vmap` (seeds, hyperparameters, populations) and with a
Python loop over compiled chunks (progress, checkpoints, health checks between chunks).
`make_train(cfg)` is the whole run as one function. `train` and `train_seeds` are the
convenience entry points; each compiles once per config structure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jppo import envs, networks, schedules, sharding
from jppo.compile import as_key, cached_program, jit
from jppo.config import PPOConfig
from jppo.envs.marl import is_marl_env
from jppo.normalize import RunningMeanStd
from jppo.optim import init_opt_state, nonfinite_grad_count
from jppo.rollout import rollout
from jppo.targets import make_batch
from jppo.types import (
    Actors,
    EpisodeStats,
    Hyperparams,
    Learner,
    NormStats,
    Setup,
    TrainResult,
    TrainState,
)
from jppo.update import update


def build(cfg: PPOConfig) -> Setup:
    """Static set-up shared by training and evaluation: environment, spec and network."""
    env, env_params = envs.make_env(cfg.env, cfg.env_params)
    spec = envs.env_spec(env, env_params)
    network = networks.make_network(
        spec,
        hidden_sizes=cfg.hidden_sizes,
        activation=cfg.activation,
        network=cfg.network,
        lstm_size=cfg.lstm_size,
        critic=cfg.critic,
        num_quantiles=cfg.num_quantiles,
        log_std_init=cfg.log_std_init,
        lstm_shared=cfg.lstm_shared,
        lstm_unroll=cfg.lstm_unroll,
    )
    return Setup(env=env, env_params=env_params, spec=spec, network=network)


def init_learner(
    cfg: PPOConfig, setup: Setup, key: jax.Array, hyperparams: Hyperparams | None = None
) -> Learner:
    """Fresh parameters, optimizer state, normalization statistics and hyperparameters."""
    if hyperparams is None:
        hyperparams = Hyperparams.from_config(cfg)
    hyperparams.check_config(cfg)
    # Under vmap (seeds, sweeps) run the initializers one member at a time: jaxlib's batched
    # QR (LAPACK geqrf behind the orthogonal initializer) intermittently hangs on CPU, and
    # each member then gets exactly the parameters an unbatched run would.
    params = jax.custom_batching.sequential_vmap(setup.network.init)(key)
    norm = NormStats(
        obs=RunningMeanStd.init((setup.spec.obs_dim,)) if cfg.normalize_obs else None,
        reward=RunningMeanStd.init(()) if cfg.normalize_reward else None,
        value=RunningMeanStd.init(()) if cfg.normalize_value_targets else None,
    )
    return Learner(
        params=params, opt_state=init_opt_state(params, cfg), norm=norm, hyperparams=hyperparams
    )


def init_actors(cfg: PPOConfig, setup: Setup, key: jax.Array) -> Actors:
    """Freshly reset environments, initial carries and empty episode statistics."""
    obs, env_state = envs.reset(setup.env, setup.env_params, jax.random.split(key, cfg.num_envs))
    zero = jnp.zeros((), jnp.float32)
    episodes = EpisodeStats(
        returns=jnp.zeros(cfg.num_envs, jnp.float32),
        lengths=jnp.zeros(cfg.num_envs, jnp.int32),
        last_return=zero,
        last_length=zero,
    )
    returns = jnp.zeros(cfg.num_envs, jnp.float32) if cfg.normalize_reward else None
    return Actors(
        env_state=env_state,
        obs=obs,
        episode_start=jnp.ones(cfg.num_envs, bool),
        carry=setup.network.initial_carry(cfg.num_envs),
        episodes=episodes,
        discounted_returns=returns,
    )


def env_steps(num_updates: jax.Array, batch_size: int) -> jax.Array:
    """Env steps after `num_updates` updates of `batch_size` transitions, as float32.

    An int32 product wraps past 2^31 env steps (8192 updates of 2048 x 128 already), and
    int64 exists only under `jax_enable_x64`; float32 is exact while the count fits its 24
    significand bits (every count up to 2^24, and larger ones with enough factors of 2),
    otherwise within a relative 6e-8, and it never decreases as updates go on.
    """
    return jnp.asarray(num_updates, jnp.float32) * jnp.float32(batch_size)


def _update_metrics(cfg, step, coefs, learner: Learner, actors: Actors, stats) -> dict:
    """The per-update metrics that come from the counters, schedules and rollout summaries.

    `timesteps` is `env_steps(step, batch_size)` (float32, see there). Of the non-finite
    counters, `nonfinite_env_count` (observation and reward entries replaced during this
    update's rollout) and `nonfinite_ratio_count` (ratios replaced during this update's
    minibatch steps) count this update only; `nonfinite_grad_count` is cumulative: minibatch
    steps skipped since the run began (it lives in the optimizer state, so it survives
    chunks and checkpoints).
    """
    metrics = dict(
        timesteps=env_steps(step, cfg.batch_size),
        episode_return=actors.episodes.last_return,
        episode_length=actors.episodes.last_length,
        episodes_completed=stats.episodes,
        learning_rate=coefs.learning_rate,
        ent_coef=coefs.ent_coef,
        vf_coef=coefs.vf_coef,
        clip_eps=learner.hyperparams.clip_eps,
        nonfinite_grad_count=nonfinite_grad_count(learner.opt_state).astype(jnp.float32),
        nonfinite_env_count=stats.nonfinite_env,
    )
    if cfg.bc_coef is not None:
        metrics["bc_coef"] = coefs.bc_coef
    return metrics


class Trainer(NamedTuple):
    """Pure pieces of a training run (see `make_trainer`)."""

    cfg: PPOConfig
    setup: Setup
    init: Callable[..., TrainState]  # (key, hyperparams=None) -> TrainState
    step: Callable[[TrainState], tuple[TrainState, dict]]  # one update
    run: Callable[[TrainState, int], tuple[TrainState, dict]]  # (state, num_updates) static


def make_trainer(cfg: PPOConfig, *, mesh: Any = "config") -> Trainer:
    """The pure, jit- and vmap-able pieces of a run of `cfg`.

    `mesh`: where the env axis lives. "config" (the default): sharded across the first
    `cfg.num_devices` of `jax.devices()` (`jppo.sharding.env_mesh`; no sharding for 1);
    None: no placement, the same computation on one device (what a sharded run is
    compared with); or a `jax.sharding.Mesh` with the axis "env".

    `init(key, hyperparams=None) -> TrainState`; `step(state) -> (state, metrics)` (one
    update; metrics are scalars); `run(state, num_updates) -> (state, metrics)` with metric
    leaves [num_updates] (`num_updates` is static). Schedules read `state.step` and
    `cfg.num_updates`, so `run(run(s, a), b)` equals `run(s, a + b)`.

    Example:
        >>> trainer = make_trainer(PPOConfig(total_timesteps=2048))
        >>> state = trainer.init(jax.random.key(0))
        >>> state, metrics = jax.jit(trainer.run, static_argnums=1)(state, 2)
        >>> metrics["episode_return"].shape
        (2,)
    """
    if is_marl_env(cfg.env):
        from jppo import marl  # JaxMARL environments: the multi-agent trainer

        return marl.make_trainer(cfg)
    setup = build(cfg)
    if isinstance(mesh, str):
        mesh = sharding.env_mesh(cfg.num_devices)

    def init(key: jax.Array, hyperparams: Hyperparams | None = None) -> TrainState:
        k_net, k_env, k_run = jax.random.split(as_key(key), 3)
        return TrainState(
            learner=init_learner(cfg, setup, k_net, hyperparams),
            actors=sharding.constrain(init_actors(cfg, setup, k_env), mesh, 0),
            step=jnp.zeros((), jnp.int32),
            rng=k_run,
        )

    def step(state: TrainState, _=None) -> tuple[TrainState, dict]:
        learner, hp = state.learner, state.learner.hyperparams
        rng, k_roll, k_upd = jax.random.split(state.rng, 3)
        roll = rollout(cfg, setup, learner, state.actors, k_roll, mesh)
        batch, value_stats, metrics = make_batch(cfg, roll.traj, hp, roll.norm.value)
        batch = sharding.constrain(batch, mesh, 1)
        coefs = schedules.coefficients(cfg, hp, state.step)
        params, opt_state, upd = update(
            cfg,
            setup.network,
            learner.params,
            learner.opt_state,
            batch,
            roll.chunk_carries,
            hp,
            coefs,
            k_upd,
            mesh,
        )
        metrics.update(upd)
        learner = learner._replace(
            params=params, opt_state=opt_state, norm=roll.norm._replace(value=value_stats)
        )
        metrics.update(
            _update_metrics(cfg, state.step + 1, coefs, learner, roll.actors, roll.stats)
        )
        metrics.update(roll.metrics)
        learner = learner._replace(hyperparams=schedules.adapt(cfg, hp, metrics))
        new = TrainState(learner=learner, actors=roll.actors, step=state.step + 1, rng=rng)
        return new, metrics

    def run(state: TrainState, num_updates: int) -> tuple[TrainState, dict]:
        return jax.lax.scan(step, state, None, num_updates)

    return Trainer(cfg=cfg, setup=setup, init=init, step=step, run=run)


def make_train(cfg: PPOConfig, *, mesh: Any = "config") -> Callable[..., TrainResult]:
    """The pure training function `train(key, hyperparams=None) -> TrainResult`.

    `run(init(key, hyperparams), cfg.num_updates)`. `hyperparams` (a `Hyperparams`,
    default: the config's) holds the traced numbers; vmap over keys for seeds and over
    hyperparameters for sweeps — nothing recompiles.

    Example:
        >>> train_fn = make_train(PPOConfig(total_timesteps=2048))
        >>> keys = jax.random.split(jax.random.key(0), 2)
        >>> out = jax.jit(jax.vmap(train_fn))(keys)
        >>> out.metrics["episode_return"].shape
        (2, 4)
    """
    trainer = make_trainer(cfg, mesh=mesh)

    def train(key: jax.Array, hyperparams: Hyperparams | None = None) -> TrainResult:
        state, metrics = trainer.run(trainer.init(key, hyperparams), cfg.num_updates)
        return TrainResult(state=state, metrics=metrics)

    return train


def train(cfg: PPOConfig, key: jax.Array) -> TrainResult:
    """Train one seed: the jitted `make_train(cfg)`, compiled once per config structure.

    Example:
        >>> out = train(PPOConfig(total_timesteps=2048), jax.random.key(0))
        >>> out.metrics["episode_return"].shape
        (4,)
    """
    program = cached_program("train", cfg, lambda: jit(make_train(cfg)))
    mesh = sharding.env_mesh(cfg.num_devices)
    return program(*sharding.global_inputs(mesh, as_key(key), Hyperparams.from_config(cfg)))


def train_seeds(cfg: PPOConfig, keys: jax.Array) -> TrainResult:
    """Train one run per key in one compiled program.

    Member i equals `train(cfg, keys[i])` within float tolerance (XLA batches reductions
    differently under vmap). Leaves of the result have a leading [num_seeds] axis.
    """
    keys = as_key(keys)
    if keys.ndim != 1:
        raise ValueError(
            f"train_seeds: expected a batch of keys, e.g. jax.random.split(key, num_seeds); "
            f"got keys of shape {keys.shape}"
            + (" (a single key: use jppo.train for one run)" if keys.ndim == 0 else "")
        )
    # With several devices and a seed count they divide, whole runs go to the devices
    # side by side (the seed axis is sharded; each run's math is the config's either way).
    by_seed = cfg.num_devices > 1 and keys.shape[0] % cfg.num_devices == 0
    program = cached_program(("seeds", by_seed), cfg, lambda: _seeds_program(cfg, by_seed))
    mesh = sharding.seed_mesh(cfg.num_devices) if by_seed else sharding.env_mesh(cfg.num_devices)
    hp = Hyperparams.from_config(cfg)
    if by_seed and jax.process_count() > 1:
        raise ValueError(
            "train_seeds across processes shards the env axis: use a seed count that "
            "num_devices does not divide, or one process per group of seeds"
        )
    return program(*sharding.global_inputs(mesh, keys, hp))


def _seeds_program(cfg: PPOConfig, by_seed: bool):
    if not by_seed:
        return jit(jax.vmap(make_train(cfg), in_axes=(0, None)))
    mesh = sharding.seed_mesh(cfg.num_devices)
    return jit(
        jax.vmap(make_train(cfg, mesh=None), in_axes=(0, None)),
        in_shardings=(sharding.leading(mesh), sharding.replicated(mesh)),
        out_shardings=sharding.leading(mesh),
    )
