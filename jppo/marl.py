"""Multi-agent PPO on JaxMARL environments: IPPO and MAPPO, independent or shared networks.

The multi-agent trainer has the single-agent trainer's shape — `make_trainer(cfg)` gives a
`Trainer(cfg, setup, init, step, run)` over a `TrainState(learner, actors, step, rng)` — and
reuses its stages by composition:

- `agent_params="independent"`: every agent has its own actor and critic parameters,
  optimizer state and value-target statistics, stacked on a leading agent axis [N, ...].
  The batch stage (`targets.make_batch`) and the update (`update.update`) are `jax.vmap`ped
  over that axis, so each agent gets its own advantage normalization, gradient clipping,
  Adam moments and KL early stop, and its parameters see only its own data: nothing sums
  or averages across agents inside the compiled update.
- `agent_params="shared"`: one network for all agents (`agent_id=True` appends a one-hot
  agent id to its input). The agents stay a trailing axis of the batch, [T, B, N, ...], so a
  minibatch holds whole env steps with all their agents; advantages are still normalized per
  agent (except `adv_norm="minibatch"`, which normalizes each minibatch as a whole).
- `critic_input="local"` (IPPO): agent i's critic sees agent i's observation.
  `critic_input="global"` (MAPPO): the critic sees the global state [B, S] (every agent's
  observation, `MarlEnv.global_state`), stored once per env step, never copied per agent:
  independent critics are vmapped with the state unbatched; the shared critic is one network
  with N outputs (one value per agent) evaluated once per env step.

Layout: rollouts are time-major with the agent axis after the env axis, [T, B, N, ...];
episode flags are the team's, [T, B]. Time-limit ends (all MPE ends) are bootstrapped from
V(final observation) (see `jppo.envs.marl`).

Metrics, one [num_updates] array each. The naming rule: `name/<agent>` is agent <agent>'s
value (e.g. `policy_loss/agent_0`, `episode_return/speaker_0`); the plain `name` summarizes
the agents: `episode_return` is the team return (the sum over agents of each agent's
undiscounted episode return, averaged over the episodes that ended), `ratio_max` /
`ratio_min` the extremes, the `nonfinite_*` counts sums, everything else the mean over
agents. Per-agent loss, KL and entropy metrics exist where agents have their own losses
(independent); a shared network has one loss, so it reports only the plain names (and the
per-agent returns).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jppo import networks, policy, schedules
from jppo.compile import as_key
from jppo.config import PPOConfig
from jppo.envs.marl import MarlEnv
from jppo.normalize import RunningMeanStd
from jppo.optim import init_opt_state, nonfinite_grad_count
from jppo.rollout import fill_after_loop, finish_episodes, step_stats
from jppo.targets import make_batch, normalize_advantages
from jppo.types import (
    Actors,
    Batch,
    EnvSpec,
    EpisodeStats,
    Hyperparams,
    Learner,
    NormStats,
    RolloutStats,
    Setup,
    TrainState,
    Transition,
)
from jppo.update import update

# Logit of an action an agent does not have (padded action spaces): exp() underflows to an
# exact 0 probability, while entropies and KLs stay finite (0 · −1e9 = 0, never 0 · −inf).
MASKED_LOGIT = -1e9

# Per-agent metrics reduced to their plain name by something other than the mean.
_REDUCTIONS = {"ratio_max": jnp.max, "ratio_min": jnp.min}
_SUMS = ("nonfinite_ratio_count", "nonfinite_grad_count", "nonfinite_env_count")


def independent(cfg: PPOConfig) -> bool:
    return cfg.agent_params == "independent"


# -- networks ---------------------------------------------------------------------------


def make_agent_network(cfg: PPOConfig, menv: MarlEnv) -> networks.Network:
    """The actor and critic as a core `Network` over observation dicts.

    Inputs are dicts: "obs" [..., D] (independent: one agent's; shared: [..., N, D]),
    "state" [..., S] (global critic only), "mask" [..., A] bool (padded discrete actions
    only). Independent: one agent's network (vmapped over the agent axis by the caller),
    values [...]. Shared: all agents at once, values [..., N]. Built from
    `networks.make_network` (the shared global critic is its N-output critic head, the
    quantile critic's head with N outputs: one value per agent).
    """
    n, shared = menv.num_agents, not independent(cfg)
    use_global = cfg.critic_input == "global"
    kw = dict(hidden_sizes=cfg.hidden_sizes, activation=cfg.activation)
    spec = EnvSpec(
        obs_dim=menv.obs_dim + (n if cfg.agent_id else 0),
        discrete=menv.discrete,
        action_dim=menv.action_dim,
        action_low=None,
        action_high=None,
        max_episode_steps=menv.max_steps,
    )
    actor_net = networks.make_network(spec, log_std_init=cfg.log_std_init, **kw)
    critic_net = actor_net
    if use_global:
        heads = n if shared else 1
        critic_net = networks.make_network(
            spec._replace(obs_dim=menv.state_dim),
            critic="quantile" if heads > 1 else "scalar",
            num_quantiles=heads,
            **kw,
        )

    def inputs(tree):
        x = tree["obs"]
        if cfg.agent_id:  # shared only: x is [..., N, D]
            x = jnp.concatenate([x, jnp.broadcast_to(jnp.eye(n), x.shape[:-1] + (n,))], -1)
        return x

    def init(key):
        if critic_net is actor_net:
            return actor_net.init(key)
        k_actor, k_critic = jax.random.split(key)
        return {
            "actor": actor_net.init(k_actor)["actor"],
            "critic": critic_net.init(k_critic)["critic"],
        }

    def actor(params, tree, reset, carry):
        dist, _ = actor_net.actor(params, inputs(tree), reset, {})
        if "mask" in tree:
            dist = {"logits": jnp.where(tree["mask"], dist["logits"], MASKED_LOGIT)}
        return dist, carry

    def critic(params, tree, reset, carry):
        values, _ = critic_net.critic(
            params, tree["state"] if use_global else inputs(tree), reset, {}
        )
        if use_global and shared and n == 1:
            values = values[..., None]
        return values, carry

    def actor_critic(params, tree, reset, carry):
        dist, _ = actor(params["actor"], tree, reset, carry)
        values, _ = critic(params["critic"], tree, reset, carry)
        return dist, values, carry

    def value(params, tree, reset, carry):
        return critic(params["critic"], tree, reset, carry)

    def unavailable(*_):
        raise NotImplementedError("the multi-agent trainer has its own rollout (jppo.marl)")

    return networks.Network(
        init=init,
        initial_carry=lambda batch_size: {"actor": {}, "critic": {}},
        actor=actor,
        critic=critic,
        actor_critic=actor_critic,
        value=value,
        step=unavailable,
        bootstrap=unavailable,
        recurrent=False,
        discrete=menv.discrete,
    )


def build(cfg: PPOConfig) -> Setup:
    """Static set-up: the adapted environment, the per-agent spec and the network."""
    menv = MarlEnv(cfg.env)
    network = make_agent_network(cfg, menv)
    # No max_episode_steps: every episode runs to the time limit whatever the agents do, so
    # reaching it says nothing about success (the health check reads it as survival).
    spec = EnvSpec(
        obs_dim=menv.obs_dim,
        discrete=menv.discrete,
        action_dim=menv.action_dim,
        action_low=None,
        action_high=None,
        max_episode_steps=None,
    )
    return Setup(env=menv, env_params=None, spec=spec, network=network)


def observation_tree(cfg: PPOConfig, menv: MarlEnv, obs: jax.Array) -> dict:
    """The network's input dict for observations [..., N, D] (rollout layout)."""
    tree = {"obs": obs}
    if cfg.critic_input == "global":
        tree["state"] = menv.global_state(obs)  # [..., S], once per env step
    if menv.heterogeneous:
        tree["mask"] = jnp.broadcast_to(menv.action_mask, obs.shape[:-1] + (menv.action_dim,))
    return tree


def _agent_axes(tree: dict) -> dict:
    """vmap axes of an observation dict: the global state is shared, not per agent."""
    return {k: (None if k == "state" else 0) for k in tree}


def _agents_first(tree: dict, lead: int) -> dict:
    """Move the agent axis (after `lead` leading axes) to the front, except the state."""
    return {k: (v if k == "state" else jnp.moveaxis(v, lead, 0)) for k, v in tree.items()}


def apply_agents(cfg: PPOConfig, fn, params, tree: dict):
    """`fn(params, tree, reset, carry)` for every agent: outputs with the agent axis after
    the leading axes of `tree["obs"]` ([..., N, ...]). Independent: vmapped over agents."""
    lead = tree["obs"].ndim - 2
    reset = jnp.zeros(tree["obs"].shape[:lead], bool)
    if not independent(cfg):
        return fn(params, tree, reset, {})
    out = jax.vmap(fn, in_axes=(0, _agent_axes(tree), None, None))(
        params, _agents_first(tree, lead), reset, {}
    )
    return jax.tree.map(lambda x: jnp.moveaxis(x, 0, lead), out)


# -- state ------------------------------------------------------------------------------


def _per_agent(cfg: PPOConfig, menv: MarlEnv, make):
    """`make(key)` once (shared) or stacked over agents (independent).

    One member at a time under any vmap (seeds, sweeps, populations, agents), for the same
    reason as trainer.init_learner: jaxlib's batched QR (the orthogonal initializer) can
    hang on CPU under vmap.
    """
    one = jax.custom_batching.sequential_vmap(make)
    if not independent(cfg):
        return one
    return lambda key: jax.vmap(one)(jax.random.split(key, menv.num_agents))


def init_learner(cfg: PPOConfig, setup: Setup, key, hyperparams: Hyperparams | None = None):
    """Parameters (and optimizer state, value statistics) per agent or shared."""
    if hyperparams is None:
        hyperparams = Hyperparams.from_config(cfg)
    hyperparams.check_config(cfg)
    params = _per_agent(cfg, setup.env, setup.network.init)(key)
    if independent(cfg):
        opt_state = jax.vmap(lambda p: init_opt_state(p, cfg))(params)
    else:
        opt_state = init_opt_state(params, cfg)
    value = None
    if cfg.normalize_value_targets:
        value = RunningMeanStd.init(())
        if independent(cfg):
            value = jax.tree.map(
                lambda x: jnp.broadcast_to(x, (setup.env.num_agents,) + x.shape), value
            )
    return Learner(
        params=params,
        opt_state=opt_state,
        norm=NormStats(obs=None, reward=None, value=value),
        hyperparams=hyperparams,
    )


def init_actors(cfg: PPOConfig, setup: Setup, key) -> Actors:
    menv, b, n = setup.env, cfg.num_envs, setup.env.num_agents
    obs, env_state = menv.reset(jax.random.split(key, b))
    episodes = EpisodeStats(
        returns=jnp.zeros((b, n), jnp.float32),  # [B, N] running returns per agent
        lengths=jnp.zeros(b, jnp.int32),
        last_return=jnp.zeros(n, jnp.float32),  # [N] per agent
        last_length=jnp.zeros((), jnp.float32),
    )
    return Actors(
        env_state=env_state,
        obs=obs,  # [B, N, D]
        episode_start=jnp.ones(b, bool),
        carry=setup.network.initial_carry(b),
        episodes=episodes,
        discounted_returns=None,
    )


# -- rollout ----------------------------------------------------------------------------


class _Carry(NamedTuple):
    actors: Actors
    stats: RolloutStats  # returns_sum [N]


def env_action(action: jax.Array, menv: MarlEnv) -> jax.Array:
    """Continuous samples clipped to each agent's bounds (the unclipped one is learned)."""
    if menv.discrete:
        return action
    action = jnp.clip(action, menv.action_low, menv.action_high)
    return action.astype(jax.dtypes.canonicalize_dtype(jnp.float64))


def rollout(cfg: PPOConfig, setup: Setup, learner: Learner, actors: Actors, key):
    """`num_steps` steps of every env: (actors, trajectory [T, B, N, ...], RolloutStats).

    The trajectory's `obs` is the observation dict (`observation_tree`), `done` and
    `terminated` are the team's [T, B]; `next_value_pred` [T, B, N] is V(true next
    observation), the final one at episode ends.
    """
    menv, network, params = setup.env, setup.network, learner.params

    def step(c: _Carry, xs):
        noise, env_keys = xs  # [B, N, A] action noise, [B] env keys of this step
        a = c.actors
        tree = observation_tree(cfg, menv, a.obs)
        # The actor alone inside the sequential loop: the critic values the stored
        # observations after it, in one batched pass with the final observations.
        dist_params = apply_agents(cfg, _actor_only(network), params, tree)
        action = policy.sample_with_noise(dist_params, noise)
        out = menv.step(env_keys, a.env_state, env_action(action, menv))
        done = out.terminated | out.truncated
        stats, episodes = step_stats(c.stats, a.episodes, out, done)
        transition = Transition(
            obs=tree,
            episode_start=None,  # both filled in after the scan (`fill_after_loop`)
            action=action,
            log_prob=None,
            dist_params=dist_params,
            value_pred=None,  # valued after the scan
            reward=out.reward,
            terminated=out.terminated,
            done=done,
            next_value_pred=out.final_obs,  # replaced by its value after the scan
        )
        actors = a._replace(env_state=out.state, obs=out.obs, episode_start=done, episodes=episodes)
        return _Carry(actors=actors, stats=stats), transition

    zero = jnp.zeros((), jnp.float32)
    n = menv.num_agents
    init = _Carry(
        actors=actors,
        stats=RolloutStats(
            returns_sum=jnp.zeros(n), lengths_sum=zero, episodes=zero, nonfinite_env=zero
        ),
    )
    # The rollout's randomness drawn before the scan, as the single-agent rollout does.
    k_act, k_env = jax.random.split(key)
    shape = (cfg.num_steps, cfg.num_envs)
    noise = policy.action_noise(k_act, menv, shape + (n,))
    c, traj = jax.lax.scan(step, init, (noise, jax.random.split(k_env, shape)))
    # Every step's observation and true next observation (the final observation where an
    # episode ended, which is what a time-limit end bootstraps from) valued in one batched
    # pass: [2T, B, ...] rows.
    final_tree = observation_tree(cfg, menv, traj.next_value_pred)
    both = jax.tree.map(lambda x, y: jnp.concatenate([x, y]), traj.obs, final_tree)
    values, _ = apply_agents(cfg, network.value, params, both)
    value_pred, next_values = values[: cfg.num_steps], values[cfg.num_steps :]
    traj = fill_after_loop(traj, actors.episode_start)
    traj = traj._replace(value_pred=value_pred, next_value_pred=next_values)
    episodes = finish_episodes(c.actors.episodes, c.stats)
    return c.actors._replace(episodes=episodes), traj, c.stats


def _actor_only(network: networks.Network):
    """`apply_agents`' function for the actor of full params: dist_params only."""
    return lambda params, tree, reset, carry: network.actor(params["actor"], tree, reset, carry)[0]


# -- batch and update -------------------------------------------------------------------


def _per_agent_flags(traj: Transition, n: int) -> Transition:
    """Team flags [T, B] broadcast to every agent [T, B, N]."""
    wide = lambda x: jnp.broadcast_to(x[..., None], x.shape + (n,))
    return traj._replace(
        episode_start=wide(traj.episode_start),
        terminated=wide(traj.terminated),
        done=wide(traj.done),
    )


def _normalize_per_agent(cfg: PPOConfig, raw_adv: jax.Array, hp: Hyperparams) -> jax.Array:
    """Batch-level advantage normalization of [T, B, N], each agent by its own statistics."""
    one = lambda adv: normalize_advantages(cfg, adv, hp)  # [T, B]
    return jnp.moveaxis(jax.vmap(one, in_axes=2)(raw_adv), 0, 2)


def make_agent_batch(
    cfg: PPOConfig, traj: Transition, hp: Hyperparams, value_stats, n: int, shared_cfg=None
):
    """GAE, targets and per-agent advantage normalization: (Batch, value_stats, metrics).

    Independent: `make_batch` vmapped over agents; leaves [N, T, B, ...] (the global state
    stays [T, B, S]), statistics and metrics [N]. Shared: leaves [T, B, N, ...], one set of
    value statistics, metrics over all agents; `shared_cfg` is `shared_batch_config(cfg)`
    (built outside any trace: building a config builds its environment).
    """
    obs = traj.obs
    traj = _per_agent_flags(traj._replace(obs=None), n)
    if independent(cfg):
        traj = jax.tree.map(lambda x: jnp.moveaxis(x, 2, 0), traj)
        batch_fn = lambda t, v: make_batch(cfg, t, hp, v)
        batch, value_stats, metrics = jax.vmap(batch_fn)(traj, value_stats)
        return batch._replace(obs=_agents_first(obs, 2)), value_stats, metrics
    shared_cfg = shared_cfg or shared_batch_config(cfg)
    batch, value_stats, metrics = make_batch(shared_cfg, traj, hp, value_stats)
    advantages = _normalize_per_agent(cfg, batch.raw_advantages, hp)
    return batch._replace(obs=obs, advantages=advantages), value_stats, metrics


def shared_batch_config(cfg: PPOConfig) -> PPOConfig:
    """The config `make_batch` gets for a shared network: its own (whole-batch) advantage
    normalization off, since `make_agent_batch` normalizes per agent instead."""
    return cfg.replace(adv_norm="none", num_adv_groups=1)


def update_agents(cfg: PPOConfig, network, params, opt_state, batch: Batch, hp, coefs, key):
    """`update.update` per agent (independent, vmapped: own optimizer state, clipping, KL
    early stop) or once for the shared network. Returns (params, opt_state, metrics)."""
    if not independent(cfg):
        return update(cfg, network, params, opt_state, batch, {}, hp, coefs, key)
    n = jax.tree.leaves(params)[0].shape[0]
    axes = Batch(*([0] * len(Batch._fields)))._replace(obs=_agent_axes(batch.obs))
    fn = lambda p, o, b, k: update(cfg, network, p, o, b, {}, hp, coefs, k)
    return jax.vmap(fn, in_axes=(0, 0, axes, 0))(params, opt_state, batch, jax.random.split(key, n))


def agent_metrics(metrics: dict, agents: tuple[str, ...]) -> dict:
    """[N] metrics -> `name/<agent>` entries and the plain `name` (see the module doc)."""
    out = {}
    for name, v in metrics.items():
        if jnp.ndim(v) == 0:
            out[name] = v
            continue
        for i, agent in enumerate(agents):
            out[f"{name}/{agent}"] = v[i]
        reduce = _REDUCTIONS.get(name, jnp.sum if name in _SUMS else jnp.mean)
        out[name] = reduce(v)
    return out


# -- the trainer ------------------------------------------------------------------------


def make_trainer(cfg: PPOConfig):
    """The multi-agent `Trainer` (same pieces and TrainState layout as `jppo.make_trainer`)."""
    from jppo.trainer import Trainer, env_steps

    setup = build(cfg)
    menv, network = setup.env, setup.network
    agents, n = menv.agents, menv.num_agents
    shared_cfg = None if independent(cfg) else shared_batch_config(cfg)

    def init(key, hyperparams: Hyperparams | None = None) -> TrainState:
        k_net, k_env, k_run = jax.random.split(as_key(key), 3)
        return TrainState(
            learner=init_learner(cfg, setup, k_net, hyperparams),
            actors=init_actors(cfg, setup, k_env),
            step=jnp.zeros((), jnp.int32),
            rng=k_run,
        )

    def step(state: TrainState, _=None):
        learner, hp = state.learner, state.learner.hyperparams
        rng, k_roll, k_upd = jax.random.split(state.rng, 3)
        actors, traj, stats = rollout(cfg, setup, learner, state.actors, k_roll)
        batch, value_stats, metrics = make_agent_batch(
            cfg, traj, hp, learner.norm.value, n, shared_cfg
        )
        coefs = schedules.coefficients(cfg, hp, state.step)
        params, opt_state, upd = update_agents(
            cfg, network, learner.params, learner.opt_state, batch, hp, coefs, k_upd
        )
        metrics = {**metrics, **upd}
        metrics["nonfinite_grad_count"] = nonfinite_grad_count(opt_state).astype(jnp.float32)
        metrics = agent_metrics(metrics, agents if independent(cfg) else ())
        ep = actors.episodes
        metrics.update(agent_metrics({"episode_return": ep.last_return}, agents))
        metrics.update(
            episode_return=jnp.sum(ep.last_return),  # the team's
            timesteps=env_steps(state.step + 1, cfg.batch_size),
            episode_length=ep.last_length,
            episodes_completed=stats.episodes,
            learning_rate=coefs.learning_rate,
            ent_coef=coefs.ent_coef,
            vf_coef=coefs.vf_coef,
            clip_eps=hp.clip_eps,
            nonfinite_env_count=stats.nonfinite_env,
        )
        if cfg.bc_coef is not None:
            metrics["bc_coef"] = coefs.bc_coef
        learner = learner._replace(
            params=params,
            opt_state=opt_state,
            norm=learner.norm._replace(value=value_stats),
            hyperparams=schedules.adapt(cfg, hp, metrics),
        )
        new = TrainState(learner=learner, actors=actors, step=state.step + 1, rng=rng)
        return new, metrics

    def run(state: TrainState, num_updates: int):
        return jax.lax.scan(step, state, None, num_updates)

    return Trainer(cfg=cfg, setup=setup, init=init, step=step, run=run)


# -- evaluation and exported policy -----------------------------------------------------


class _EvalCarry(NamedTuple):
    t: jax.Array
    obs: jax.Array  # [E, N, D]
    env_state: Any
    active: jax.Array  # [E] bool
    returns: jax.Array  # [E] team return so far
    key: jax.Array


def make_evaluate(cfg: PPOConfig, num_episodes: int, setup: Setup | None = None):
    """`(params, obs_stats, hyperparams, key) -> team returns [num_episodes]`, deterministic.

    One episode per env, run side by side until every one has ended (or 10 000 steps for an
    env without a step limit); the signature is the single-agent `make_evaluate`'s.
    """
    setup = setup or build(cfg)
    menv, network = setup.env, setup.network
    max_steps = (menv.max_steps + 1) if menv.max_steps is not None else 10_000

    def body(c: _EvalCarry, params) -> _EvalCarry:
        key, k_env = jax.random.split(c.key)
        tree = observation_tree(cfg, menv, c.obs[None])
        dist_params, _ = apply_agents(cfg, network.actor, params["actor"], tree)
        action = policy.deterministic_action(jax.tree.map(lambda x: x[0], dist_params))
        out = menv.step(
            jax.random.split(k_env, num_episodes), c.env_state, env_action(action, menv)
        )
        return _EvalCarry(
            t=c.t + 1,
            obs=out.obs,
            env_state=out.state,
            active=c.active & ~(out.terminated | out.truncated),
            returns=c.returns + jnp.where(c.active, jnp.sum(out.reward, -1), 0.0),
            key=key,
        )

    def evaluate_fn(params, obs_stats, hp, key):
        k_reset, k_loop = jax.random.split(key)
        obs, env_state = menv.reset(jax.random.split(k_reset, num_episodes))
        init = _EvalCarry(
            t=jnp.zeros((), jnp.int32),
            obs=obs,
            env_state=env_state,
            active=jnp.ones(num_episodes, bool),
            returns=jnp.zeros(num_episodes, jnp.float32),
            key=k_loop,
        )
        final = jax.lax.while_loop(
            lambda c: (c.t < max_steps) & jnp.any(c.active), lambda c: body(c, params), init
        )
        return final.returns

    return evaluate_fn


def make_policy(cfg: PPOConfig, state: TrainState):
    """The agents' policy as `act(obs, key, deterministic=False) -> actions`.

    `obs` is JaxMARL's dict {agent: observation} (one env, or a batch [B, ...] per agent),
    answered with a dict {agent: action}; or an array [N, D] / [B, N, D] of padded flat
    observations (`MarlEnv.obs_array`), answered with actions [N] / [B, N] (discrete) or
    [N, A] / [B, N, A].
    """
    setup = build(cfg)
    menv, network = setup.env, setup.network
    actor_params = state.learner.params["actor"]

    def act(obs, key, deterministic: bool = False):
        as_dict = isinstance(obs, dict)
        x = menv.obs_array(obs)[0] if as_dict else jnp.asarray(obs, jnp.float32)
        single = x.ndim == 2
        x = x[None] if single else x  # [B, N, D]
        dist_params, _ = apply_agents(
            cfg, network.actor, actor_params, observation_tree(cfg, menv, x[None])
        )
        dist_params = jax.tree.map(lambda v: v[0], dist_params)
        if deterministic:
            action = policy.deterministic_action(dist_params)
        else:
            action = policy.make_dist(dist_params).sample(seed=key)
        action = env_action(action, menv)
        action = action[0] if single else action
        return menv.action_dict(action) if as_dict else action

    act.recurrent = False
    return act


def check_config(cfg: PPOConfig) -> None:
    """Raise ValueError for settings the multi-agent trainer does not support."""
    unsupported = {
        "network": (cfg.network != "mlp", "only network='mlp'"),
        "critic": (cfg.critic != "scalar", "only critic='scalar'"),
        "normalize_obs": (cfg.normalize_obs, "observation normalization is not supported yet"),
        "normalize_reward": (cfg.normalize_reward, "reward normalization is not supported yet"),
    }
    for field, (bad, allowed) in unsupported.items():
        if bad:
            raise ValueError(
                f"PPOConfig.{field}={getattr(cfg, field)!r} is invalid with the multi-agent "
                f"env {cfg.env_name!r}: {allowed}"
            )
