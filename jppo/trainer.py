"""The whole training run as one pure function: `make_train(cfg)(key) -> TrainResult`.

`make_train` does the static set-up in Python (environment, networks, shapes) and returns a
pure function of nested `lax.scan`s: updates ∘ (rollout → advantages → minibatch epochs).
It is not jitted, so it composes with `jax.jit` and `jax.vmap` (seeds, hyperparameters).
`train`, `train_seeds` and `evaluate` are the convenience entry points; each compiles once
per configuration.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from jppo import advantages as adv_lib
from jppo import envs, losses, networks
from jppo.config import PPOConfig
from jppo.normalize import RewardNormState, RunningMeanStd
from jppo.optim import init_opt_state, nonfinite_grad_count
from jppo.rollout import rollout
from jppo.types import EpisodeStats, Hyperparams, NormState, TrainResult, TrainState
from jppo.update import Batch, Coefs, update


def as_key(key: jax.Array) -> jax.Array:
    """Accept new-style typed keys and legacy uint32 `PRNGKey`s alike."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key)


def build(cfg: PPOConfig):
    """Static set-up shared by training and evaluation: (env, env_params, spec, network)."""
    env, env_params = envs.make_env(cfg.env, cfg.env_params)
    spec = envs.env_spec(env, env_params)
    network = networks.make_network(
        spec, hidden_sizes=cfg.hidden_sizes, activation=cfg.activation, network=cfg.network,
        lstm_size=cfg.lstm_size, critic=cfg.critic, num_quantiles=cfg.num_quantiles,
        log_std_init=cfg.log_std_init, lstm_shared=cfg.lstm_shared,
        lstm_unroll=cfg.lstm_unroll)
    return env, env_params, spec, network


def init_state(cfg: PPOConfig, key: jax.Array, hyperparams: Hyperparams | None = None,
               built=None) -> TrainState:
    """A fresh TrainState: initialized networks, optimizer, statistics and environments."""
    env, env_params, spec, network = built or build(cfg)
    k_net, k_env, k_run = jax.random.split(as_key(key), 3)
    # Under vmap (seeds, sweeps) run the initializers one member at a time: jaxlib's batched
    # QR (LAPACK geqrf behind the orthogonal initializer) intermittently hangs on CPU, and
    # each member then gets exactly the parameters an unbatched run would.
    params = jax.custom_batching.sequential_vmap(network.init)(k_net)
    obs, env_state = envs.reset(env, env_params, jax.random.split(k_env, cfg.num_envs))
    norm = NormState(
        obs=RunningMeanStd.init((spec.obs_dim,)) if cfg.normalize_obs else None,
        reward=RewardNormState.init(cfg.num_envs) if cfg.normalize_reward else None,
        value=RunningMeanStd.init(()) if cfg.normalize_value_targets else None)
    zero = jnp.zeros((), jnp.float32)
    episodes = EpisodeStats(jnp.zeros(cfg.num_envs, jnp.float32),
                            jnp.zeros(cfg.num_envs, jnp.int32), zero, zero)
    return TrainState(
        params=params, opt_state=init_opt_state(params), norm=norm,
        hyperparams=hyperparams if hyperparams is not None else Hyperparams.from_config(cfg),
        env_state=env_state, obs=obs, episode_start=jnp.ones(cfg.num_envs, bool),
        carry=network.initial_carry(cfg.num_envs), episodes=episodes, rng=k_run,
        step=jnp.zeros((), jnp.int32))


def schedule(cfg: PPOConfig, hp: Hyperparams, step: jax.Array) -> Coefs:
    """This update's learning rates and coefficients (optax schedules over updates)."""
    n = cfg.num_updates
    lr_frac = optax.linear_schedule(1.0, 0.0, n)(step) if cfg.anneal_lr else 1.0
    critic_lr = hp.learning_rate if hp.critic_learning_rate is None else hp.critic_learning_rate
    ent = hp.ent_coef
    if hp.ent_coef_final is not None:
        ent = optax.linear_schedule(hp.ent_coef, hp.ent_coef_final, n)(step)
    vf = hp.vf_coef
    if hp.vf_coef_init is not None:
        warm = max(1, round(cfg.vf_warmup_fraction * n))
        vf = optax.linear_schedule(hp.vf_coef_init, hp.vf_coef, warm)(step)
    bc = jnp.zeros(()) if hp.bc_coef is None else hp.bc_coef
    return Coefs(hp.learning_rate * lr_frac, critic_lr * lr_frac,
                 jnp.maximum(ent, hp.ent_coef_min), vf, bc)


def _baseline(value_pred, hp: Hyperparams, cfg: PPOConfig, cvar=None):
    """(value used by the policy's GAE, mean value used for the critic's targets).

    Quantile critic [..., N]: (1 − w)·mean + w·CVaR_α, w = risk_weight. CVaR sorts the
    quantiles (the quantile critic's main cost on CPU), so it is skipped at run time when
    w = 0, unless already computed (`cvar` [...]).
    """
    if cfg.critic != "quantile":
        return value_pred, value_pred
    mean = jnp.mean(value_pred, axis=-1)
    w = hp.risk_weight
    if cvar is not None:
        return (1.0 - w) * mean + w * cvar, mean
    risky = jax.lax.cond(
        w == 0, lambda: mean,
        lambda: (1.0 - w) * mean + w * losses.cvar(value_pred, hp.cvar_alpha))
    return risky, mean


def make_batch(cfg: PPOConfig, traj, hp: Hyperparams, value_stats):
    """GAE, value targets (and their statistics) and batch-level advantage normalization.

    Returns (Batch, updated value statistics, metrics).
    """
    denorm = (lambda x: x) if value_stats is None else value_stats.denormalize
    cvar = None  # CVaR_α of the quantiles [T, B]: the value_cvar metric and the baseline
    if cfg.critic == "quantile":
        cvar = losses.cvar(denorm(traj.value_pred), hp.cvar_alpha)
    baseline, mean_value = _baseline(denorm(traj.value_pred), hp, cfg, cvar)
    next_baseline, next_mean = _baseline(denorm(traj.next_value_pred), hp, cfg)
    gae = lambda v, nv: adv_lib.gae(traj.reward, v, nv, traj.terminated, traj.done, hp.gamma,
                                    hp.gae_lambda)
    raw_adv, targets = gae(baseline, next_baseline)
    if cfg.critic == "quantile":  # the critic learns the λ-returns of its mean value
        _, targets = gae(mean_value, next_mean)
    old_pred = traj.value_pred
    if value_stats is not None:  # statistics include this batch BEFORE its loss: no lag
        new_stats = value_stats.update(targets)
        old_pred = new_stats.normalize(denorm(traj.value_pred))
        targets_for_critic = new_stats.normalize(targets)
        value_stats = new_stats
    else:
        targets_for_critic = targets

    if cfg.adv_norm in ("minibatch", "none"):
        adv = raw_adv
    else:
        groups = None
        if cfg.adv_norm == "group":
            groups = (jnp.arange(cfg.num_envs) // (cfg.num_envs // cfg.num_adv_groups))[None]
        adv = adv_lib.normalize(raw_adv, cfg.adv_norm, groups=groups,
                                num_groups=cfg.num_adv_groups if groups is not None else None,
                                std_floor=hp.adv_std_floor, clip=hp.adv_clip)
    batch = Batch(traj.obs, traj.episode_start, traj.action, traj.log_prob, traj.dist_params,
                  old_pred, adv, raw_adv if cfg.awr_raw_advantages else adv,
                  targets_for_critic)
    metrics = {"adv_mean": jnp.mean(raw_adv), "adv_std": jnp.std(raw_adv),
               "value_mean": jnp.mean(mean_value), "return_mean": jnp.mean(targets),
               "explained_variance": _explained_variance(mean_value, targets)}
    if cfg.critic == "quantile":
        metrics["value_cvar"] = jnp.mean(cvar)
    return batch, value_stats, metrics


def _explained_variance(pred, target):
    var = jnp.var(target)
    return jnp.where(var > 0, 1.0 - jnp.var(target - pred) / jnp.maximum(var, 1e-12), 0.0)


def _adapt(cfg: PPOConfig, hp: Hyperparams, metrics) -> Hyperparams:
    """Adaptive clip range and BC coefficient, carried in the hyperparameters."""
    if cfg.adaptive_clip:
        frac = metrics["clip_fraction"]
        factor = jnp.where(frac > 0.3, 1.1, jnp.where(frac < 0.1, 0.9, 1.0))
        hp = hp._replace(clip_eps=jnp.clip(hp.clip_eps * factor, 0.05, 0.5))
    if cfg.adaptive_bc and cfg.bc_coef is not None:
        shrink = metrics["bc_ppo_ratio"] > hp.max_bc_ratio
        hp = hp._replace(bc_coef=jnp.maximum(jnp.where(shrink, hp.bc_coef * 0.9, hp.bc_coef),
                                             0.01))
    return hp


def make_update_step(cfg: PPOConfig, built) -> Callable[[TrainState], tuple[TrainState, dict]]:
    """One update: rollout → advantages → epochs. (TrainState) -> (TrainState, metrics)."""
    env, env_params, spec, network = built

    def update_step(state: TrainState, _=None):
        hp = state.hyperparams
        rng, k_roll, k_upd = jax.random.split(state.rng, 3)
        state, traj, carry0, roll = rollout(cfg, env, env_params, spec, network, state, k_roll)
        batch, value_stats, metrics = make_batch(cfg, traj, hp, state.norm.value)
        coefs = schedule(cfg, hp, state.step)
        params, opt_state, upd = update(cfg, network, state.params, state.opt_state, batch,
                                        carry0, hp, coefs, k_upd)
        metrics.update(upd)
        step = state.step + 1
        metrics.update(
            timesteps=step * cfg.batch_size,
            episode_return=state.episodes.last_return,
            episode_length=state.episodes.last_length,
            episodes_completed=roll.episodes,
            learning_rate=coefs.learning_rate, ent_coef=coefs.ent_coef,
            vf_coef=coefs.vf_coef, clip_eps=hp.clip_eps,
            nonfinite_grad_count=nonfinite_grad_count(opt_state).astype(jnp.float32),
            nonfinite_env_count=roll.nonfinite_env)
        metrics.update(roll.lstm)  # LSTM hidden-state statistics ({} for an MLP)
        state = state._replace(
            params=params, opt_state=opt_state, rng=rng, step=step,
            norm=state.norm._replace(value=value_stats),
            hyperparams=_adapt(cfg, hp, metrics))
        return state, metrics

    return update_step


def make_train(cfg: PPOConfig) -> Callable[..., TrainResult]:
    """The pure training function `train(key, hyperparams=None) -> TrainResult`.

    `hyperparams` (a `Hyperparams`, default: the config's) holds the traced numbers; vmap
    over keys for seeds and over hyperparameters for sweeps — nothing recompiles.

    Example:
        >>> train_fn = make_train(PPOConfig(total_timesteps=2048))
        >>> keys = jax.random.split(jax.random.key(0), 2)
        >>> out = jax.jit(jax.vmap(train_fn))(keys)
        >>> out.metrics["episode_return"].shape
        (2, 4)
    """
    built = build(cfg)
    update_step = make_update_step(cfg, built)

    def train(key: jax.Array, hyperparams: Hyperparams | None = None) -> TrainResult:
        state = init_state(cfg, key, hyperparams, built)
        state, metrics = jax.lax.scan(update_step, state, None, cfg.num_updates)
        return TrainResult(state, metrics)

    return train


_COMPILED: dict[Any, Callable] = {}


def _cached(kind: str, cfg: PPOConfig, factory: Callable[[], Callable]) -> Callable:
    """One jitted function per (entry point, config); unhashable configs are not cached."""
    try:
        key = (kind, cfg)
        hash(key)
    except TypeError:
        return factory()
    if key not in _COMPILED:
        _COMPILED[key] = factory()
    return _COMPILED[key]


def train(cfg: PPOConfig, key: jax.Array) -> TrainResult:
    """Train one seed: the jitted `make_train(cfg)`.

    Example:
        >>> out = train(PPOConfig(total_timesteps=2048), jax.random.key(0))
        >>> out.metrics["episode_return"].shape
        (4,)
    """
    return _cached("train", cfg, lambda: jax.jit(make_train(cfg)))(key)


def train_seeds(cfg: PPOConfig, keys: jax.Array) -> TrainResult:
    """Train one run per key in one compiled program; member i equals `train(cfg, keys[i])`.

    Leaves of the result have a leading [num_seeds] axis.
    """
    return _cached("seeds", cfg, lambda: jax.jit(jax.vmap(make_train(cfg))))(keys)


def evaluate(cfg: PPOConfig, state: TrainState, key: jax.Array,
             num_episodes: int = 64) -> jax.Array:
    """Undiscounted returns [num_episodes] of the deterministic policy of one `state`.

    Uses the state's observation statistics; recurrent carries start fresh per episode;
    each episode runs to its end or the environment's step limit.
    """
    fn = _cached(("evaluate", num_episodes), cfg,
                 lambda: jax.jit(_make_evaluate(cfg, num_episodes)))
    return fn(state.params, state.norm.obs, state.hyperparams, as_key(key))


def _make_evaluate(cfg: PPOConfig, num_episodes: int):
    env, env_params, spec, network = build(cfg)
    max_steps = spec.max_episode_steps or 10_000

    def run(params, obs_stats, hp, key):
        k_reset, k_loop = jax.random.split(key)
        obs, env_state = envs.reset(env, env_params, jax.random.split(k_reset, num_episodes))
        carry = network.initial_carry(num_episodes)
        start = jnp.ones(num_episodes, bool)

        def body(c):
            t, obs, env_state, carry, start, active, returns, key = c
            key, k_env = jax.random.split(key)
            obs_in = obs if obs_stats is None else obs_stats.normalize(obs, clip=hp.obs_clip)
            dist_params, actor_carry = network.actor(params["actor"], obs_in[None],
                                                     start[None], carry["actor"])
            action = networks.deterministic_action(jax.tree.map(lambda x: x[0], dist_params))
            out = envs.step(env, env_params, jax.random.split(k_env, num_episodes), env_state,
                            networks.env_action(action, spec))
            returns = returns + jnp.where(active, out.reward, 0.0)
            active = active & ~(out.terminated | out.truncated)
            carry = {**carry, "actor": actor_carry}
            return t + 1, out.obs, out.state, carry, start & False, active, returns, key

        def cond(c):
            return (c[0] < max_steps) & jnp.any(c[5])

        init = (0, obs, env_state, carry, start, jnp.ones(num_episodes, bool),
                jnp.zeros(num_episodes, jnp.float32), k_loop)
        return jax.lax.while_loop(cond, body, init)[6]

    return run
