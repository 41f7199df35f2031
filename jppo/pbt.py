"""Population-based training (PBT) around the trainer, as one compiled program.

The population is a vmap over members of the ordinary trainer; nothing in the core knows
about it. The run is cut into intervals of `PBTConfig.interval` updates. Between two
intervals every member is ranked by its fitness (the mean of one metric over the interval
just finished); each member of the bottom `exploit_fraction` copies the whole `Learner` of a
member drawn uniformly from the top fraction, then multiplies each explored hyperparameter
by a factor drawn from `perturb_factors` and clips it to its bounds.

The whole learner travels as one unit: parameters, optimizer state, the normalization
statistics (observations, reward scale, value targets) and the hyperparameters. The
statistics matter as much as the weights: the copied policy was trained on inputs
standardized with its own statistics, and fed the target's it would act on inputs in other
units. What belongs to the target's environments stays: env states, last observations,
episode statistics and the return accumulators of reward scaling. Its recurrent carries are
reset to the initial state, since they summarize a history seen by another policy, and the
reset is marked as an episode start so that the policy and its update treat it as one.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jppo.compile import as_key, cached_program, jit
from jppo.config import TRACED_FIELDS, PPOConfig
from jppo.sweep import check_traced_field, check_values, stack_hyperparams
from jppo.trainer import make_trainer
from jppo.types import Hyperparams, TrainState

# Bounds an explored hyperparameter is clipped to when `PBTConfig.bounds` does not say.
DEFAULT_BOUNDS: dict[str, tuple[float, float]] = {
    "learning_rate": (1e-5, 1e-2),
    "critic_learning_rate": (1e-5, 1e-2),
    "ent_coef": (0.0, 0.1),
    "clip_eps": (0.05, 0.5),
    "vf_coef": (0.1, 2.0),
    "max_grad_norm": (0.1, 10.0),
    "gamma": (0.9, 0.9999),
    "gae_lambda": (0.8, 1.0),
    "target_kl": (1e-3, 0.1),
    "bc_coef": (0.0, 1.0),
}


def _fail(field: str, value: Any, allowed: str) -> None:
    raise ValueError(f"PBTConfig.{field}={value!r} is invalid: {allowed}")


@dataclasses.dataclass(frozen=True)
class PBTConfig:
    """How a population explores: its size, the exploit interval and the perturbations.

    Attributes:
      population_size: members trained side by side (>= 1).
      interval: updates between two exploit/explore steps (>= 1).
      exploit_fraction: the bottom floor(P * fraction) members copy one of the top as many
        (0 <= fraction <= 0.5, so the two groups never overlap).
      perturb_factors: the factors an explored hyperparameter is multiplied by (positive).
      explore: the traced `PPOConfig` fields perturbed after a copy.
      bounds: name -> (lo, hi) for the explored fields; missing ones from `DEFAULT_BOUNDS`.
      fitness: the metric whose mean over an interval ranks the members.

    Example:
        >>> PBTConfig(population_size=8, interval=10).bounds["learning_rate"]
        (1e-05, 0.01)
    """

    population_size: int
    interval: int
    exploit_fraction: float = 0.25
    perturb_factors: tuple[float, ...] = (0.8, 1.25)
    explore: tuple[str, ...] = ("learning_rate", "ent_coef")
    bounds: Mapping[str, tuple[float, float]] | None = None
    fitness: str = "episode_return"

    def __post_init__(self):
        for name in ("perturb_factors", "explore"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        _validate_sizes(self)
        _validate_explore(self)
        bounds = _resolve_bounds(self.explore, self.bounds)
        object.__setattr__(self, "bounds", types.MappingProxyType(bounds))
        if not isinstance(self.fitness, str) or not self.fitness:
            _fail("fitness", self.fitness, "expected a metric name, e.g. 'episode_return'")

    @property
    def num_exploited(self) -> int:
        """Members replaced at each exploit: floor(P * exploit_fraction)."""
        return math.floor(self.population_size * self.exploit_fraction)

    def replace(self, **changes) -> PBTConfig:
        """A copy with `changes` applied (and validated)."""
        if "explore" in changes and "bounds" not in changes:
            changes["bounds"] = {k: v for k, v in self.bounds.items() if k in changes["explore"]}
        return dataclasses.replace(self, **changes)

    def __hash__(self):
        return hash(self.program_key())

    def program_key(self) -> tuple:
        """Everything here fixes the compiled program (hashable)."""
        return (
            self.population_size,
            self.interval,
            self.exploit_fraction,
            self.perturb_factors,
            self.explore,
            tuple(sorted(self.bounds.items())),
            self.fitness,
        )


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _validate_sizes(pbt: PBTConfig) -> None:
    for name in ("population_size", "interval"):
        if not _is_int(getattr(pbt, name)) or getattr(pbt, name) < 1:
            _fail(name, getattr(pbt, name), "expected an integer >= 1")
    if not _is_number(pbt.exploit_fraction) or not 0 <= pbt.exploit_fraction <= 0.5:
        _fail("exploit_fraction", pbt.exploit_fraction, "expected a number in [0, 0.5]")
    factors = pbt.perturb_factors
    if (
        not isinstance(factors, tuple)
        or not factors
        or not all(_is_number(f) and f > 0 for f in factors)
    ):
        _fail("perturb_factors", factors, "expected a non-empty tuple of positive numbers")


def _validate_explore(pbt: PBTConfig) -> None:
    explore = pbt.explore
    if not isinstance(explore, tuple) or not all(isinstance(n, str) for n in explore):
        _fail("explore", explore, "expected a tuple of PPOConfig field names")
    for name in explore:
        if name not in TRACED_FIELDS:
            _fail("explore", explore, f"{name!r} is not a traced PPOConfig field")
    if len(set(explore)) != len(explore):
        _fail("explore", explore, "names a field twice")


def _resolve_bounds(explore: tuple[str, ...], given) -> dict[str, tuple[float, float]]:
    """The bounds of every explored field: the given ones over `DEFAULT_BOUNDS`."""
    given = {} if given is None else dict(given)
    for name in given:
        if name not in explore:
            _fail("bounds", given, f"{name!r} is not explored (explore={explore})")
    bounds = {}
    for name in explore:
        pair = given.get(name, DEFAULT_BOUNDS.get(name))
        if pair is None:
            _fail("bounds", given, f"no default bounds for {name!r}; pass bounds[{name!r}]")
        if (
            not isinstance(pair, (tuple, list))
            or len(pair) != 2
            or not all(_is_number(x) for x in pair)
            or not pair[0] <= pair[1]
        ):
            _fail("bounds", given, f"bounds[{name!r}]={pair!r}: expected (lo, hi) with lo <= hi")
        bounds[name] = (float(pair[0]), float(pair[1]))
    return bounds


class PBTResult(NamedTuple):
    """What `train_pbt` returns. P = population_size, I = number of intervals."""

    population: TrainState  # final states, leaves [P, ...]
    metrics: dict  # per-update metrics, [P, num_updates] each (by member slot)
    hyperparams: dict  # explored field -> [P, I]: each member's value at each interval start
    lineage: jax.Array  # [I, P] int32: the member p copied after interval i (p: no copy)
    best: TrainState  # the fittest member's final state (unbatched; works with evaluate)
    best_index: jax.Array  # [] int32, its slot in the population


# -- exploit and explore, as pure functions -------------------------------------------------


def fitness_of(metrics: dict, name: str) -> jax.Array:
    """Mean of the metric `name` over an interval, [P, T] -> [P]; NaN ranks last."""
    if name not in metrics:
        raise ValueError(
            f"PBTConfig.fitness={name!r} is not a metric of this config; metrics: "
            f"{', '.join(sorted(metrics))}"
        )
    fitness = jnp.mean(metrics[name].astype(jnp.float32), axis=-1)
    return jnp.where(jnp.isnan(fitness), -jnp.inf, fitness)


def select_sources(fitness: jax.Array, num_exploited: int, key: jax.Array) -> jax.Array:
    """Which member each member copies: [P] int32, `p` itself for a member that keeps its own.

    The `num_exploited` lowest-ranked members (static count; ties by position) each copy a
    member drawn uniformly, with replacement, from the `num_exploited` highest-ranked ones.
    """
    size = fitness.shape[0]
    keep = jnp.arange(size, dtype=jnp.int32)
    if num_exploited == 0:
        return keep
    order = jnp.argsort(fitness, stable=True).astype(jnp.int32)
    bottom, top = order[:num_exploited], order[size - num_exploited :]
    picks = jax.random.randint(key, (num_exploited,), 0, num_exploited)
    return keep.at[bottom].set(top[picks])


def _per_member(mask: jax.Array, x: jax.Array) -> jax.Array:
    """`mask` [P] shaped to broadcast against `x` [P, ...]."""
    return mask.reshape(mask.shape + (1,) * (x.ndim - 1))


def exploit(population: TrainState, source: jax.Array, initial_carry: Any) -> TrainState:
    """Member p takes member `source[p]`'s whole learner (one gather over every leaf).

    Copied members (`source[p] != p`) restart their recurrent carries from `initial_carry`
    (leaves [B, ...], one member's) and mark every env as an episode start; their env
    states, observations, episode statistics, return accumulators, RNG and step stay.
    """
    copied = source != jnp.arange(source.shape[0])
    learner = jax.tree.map(lambda x: x[source], population.learner)
    actors = population.actors
    carry = jax.tree.map(
        lambda c, c0: jnp.where(_per_member(copied, c), c0[None], c), actors.carry, initial_carry
    )
    starts = actors.episode_start | copied[:, None]
    actors = actors._replace(carry=carry, episode_start=starts)
    return population._replace(learner=learner, actors=actors)


def explore(
    hyperparams: Hyperparams, copied: jax.Array, pbt_cfg: PBTConfig, key: jax.Array
) -> Hyperparams:
    """Perturb the explored fields of the copied members ([P] bool), clipped to bounds.

    Each explored value of a copied member is multiplied by a factor drawn uniformly from
    `perturb_factors` (independently per field and member); other members and other fields
    are unchanged.
    """
    factors = jnp.asarray(pbt_cfg.perturb_factors, jnp.float32)
    changes = {}
    for name, k in zip(pbt_cfg.explore, jax.random.split(key, max(1, len(pbt_cfg.explore)))):
        value = getattr(hyperparams, name)
        lo, hi = pbt_cfg.bounds[name]
        factor = jax.random.choice(k, factors, value.shape)
        changes[name] = jnp.where(copied, jnp.clip(value * factor, lo, hi), value)
    return hyperparams._replace(**changes)


def exploit_and_explore(
    population: TrainState,
    fitness: jax.Array,
    pbt_cfg: PBTConfig,
    initial_carry: Any,
    key: jax.Array,
    active: jax.Array | bool = True,
) -> tuple[TrainState, jax.Array]:
    """One PBT step: (new population, source [P] of each member; all `p` when not `active`).

    `active` (a traced or Python bool) switches the step off: with every member its own
    source, the gather, the resets and the perturbations all leave the population as it is.
    """
    k_select, k_explore = jax.random.split(key)
    keep = jnp.arange(fitness.shape[0], dtype=jnp.int32)
    source = select_sources(fitness, pbt_cfg.num_exploited, k_select)
    source = jnp.where(active, source, keep)
    population = exploit(population, source, initial_carry)
    learner = population.learner
    hyperparams = explore(learner.hyperparams, source != keep, pbt_cfg, k_explore)
    return population._replace(learner=learner._replace(hyperparams=hyperparams)), source


# -- the program ----------------------------------------------------------------------------


def _explored(population: TrainState, pbt_cfg: PBTConfig) -> dict:
    """The explored hyperparameters of a population, name -> [P]."""
    return {name: getattr(population.learner.hyperparams, name) for name in pbt_cfg.explore}


def _join(metrics: dict) -> dict:
    """Metrics of the scanned intervals, [I, P, interval] -> [P, I * interval]."""
    return jax.tree.map(lambda m: jnp.swapaxes(m, 0, 1).reshape(m.shape[1], -1), metrics)


def _concatenate(parts: list) -> tuple:
    """Joins (metrics [P, n], lineage [I, P], explored {name: [I, P]}) of consecutive parts."""
    metrics = jax.tree.map(lambda *m: jnp.concatenate(m, axis=1), *[p[0] for p in parts])
    lineage = jnp.concatenate([p[1] for p in parts])
    explored = jax.tree.map(lambda *h: jnp.concatenate(h), *[p[2] for p in parts])
    return metrics, lineage, explored


def make_pbt(cfg: PPOConfig, pbt_cfg: PBTConfig):
    """The pure PBT run `(member_keys [P], hyperparams [P], key) -> PBTResult` (not jitted).

    A `lax.scan` over the full intervals of `pbt_cfg.interval` updates — the vmapped
    `trainer.run` and then an exploit/explore step, skipped after the run's last interval —
    and a final partial interval of `num_updates % interval` updates without one.
    """
    trainer = make_trainer(cfg)
    initial_carry = trainer.setup.network.initial_carry(cfg.num_envs)
    num_full, remainder = divmod(cfg.num_updates, pbt_cfg.interval)
    num_exploits = num_full + (remainder > 0) - 1  # between intervals only
    run_interval = jax.vmap(lambda s: trainer.run(s, pbt_cfg.interval))

    def interval(population: TrainState, xs):
        index, key = xs
        explored = _explored(population, pbt_cfg)
        population, metrics = run_interval(population)
        fitness = fitness_of(metrics, pbt_cfg.fitness)
        population, source = exploit_and_explore(
            population, fitness, pbt_cfg, initial_carry, key, active=index < num_exploits
        )
        return population, (metrics, source, explored, fitness)

    def last_interval(population: TrainState):
        explored = _explored(population, pbt_cfg)
        population, metrics = jax.vmap(lambda s: trainer.run(s, remainder))(population)
        keep = jnp.arange(pbt_cfg.population_size, dtype=jnp.int32)
        out = jax.tree.map(lambda x: x[None], (metrics, keep, explored))
        return population, out, fitness_of(metrics, pbt_cfg.fitness)

    def program(member_keys: jax.Array, hyperparams: Hyperparams, key: jax.Array) -> PBTResult:
        population = jax.vmap(trainer.init)(member_keys, hyperparams)
        parts = []
        if num_full:
            xs = (jnp.arange(num_full), jax.random.split(key, num_full))
            population, (metrics, lineage, explored, fitness) = jax.lax.scan(
                interval, population, xs
            )
            parts.append((_join(metrics), lineage, explored))
            fitness = fitness[-1]
        if remainder:
            population, (metrics, lineage, explored), fitness = last_interval(population)
            parts.append((_join(metrics), lineage, explored))
        metrics, lineage, explored = _concatenate(parts)
        best_index = jnp.argmax(fitness).astype(jnp.int32)
        return PBTResult(
            population=population,
            metrics=metrics,
            hyperparams={name: h.T for name, h in explored.items()},
            lineage=lineage,
            best=jax.tree.map(lambda x: x[best_index], population),
            best_index=best_index,
        )

    return program


def _check_against_config(cfg: PPOConfig, pbt_cfg: PBTConfig) -> None:
    """Explored features must be on in `cfg`, and their bounds values `PPOConfig` accepts."""
    for name in pbt_cfg.explore:
        check_traced_field(cfg, name, "train_pbt")
        for end in pbt_cfg.bounds[name]:
            try:
                cfg.replace(**{name: end})
            except ValueError as err:
                raise ValueError(f"train_pbt: PBTConfig.bounds[{name!r}]: {err}") from err


def member_keys(key: jax.Array, population_size: int) -> tuple[jax.Array, jax.Array]:
    """(keys [P] that `trainer.init` gets for each member, the key of the PBT steps)."""
    keys = jax.random.split(as_key(key), population_size + 1)
    return keys[:population_size], keys[population_size]


def train_pbt(cfg: PPOConfig, pbt_cfg: PBTConfig, key: jax.Array, **initial) -> PBTResult:
    """Population-based training of `cfg`, the whole run one compiled program.

    Member p starts from `member_keys(key, P)[0][p]` with the config's hyperparameters, or
    with `initial[name][p]` for each traced field given (1-D, length P, checked like a
    `jppo.sweep`'s values). After every interval but the last, the bottom members copy the
    whole learner of a top member and perturb the explored fields (see the module doc). One
    program per config structure and `PBTConfig`; a new key or new initial values compile
    nothing.

    Returns:
      A `PBTResult`: final population, metrics [P, num_updates] by member slot, the explored
      hyperparameters at each interval's start [P, I], the lineage [I, P], and the fittest
      member over the last interval (`best`, `best_index`).

    Raises:
      ValueError: for an explored field that is off in `cfg` (None), bounds `PPOConfig`
        rejects, or initial values `jppo.sweep` would reject or of a length other than P.

    Example:
        >>> cfg = jppo.PPOConfig(total_timesteps=40_960)
        >>> out = train_pbt(cfg, PBTConfig(population_size=4, interval=20), jax.random.key(0),
        ...                 learning_rate=[1e-4, 3e-4, 1e-3, 3e-3])
        >>> out.metrics["episode_return"].shape, out.lineage.shape
        ((4, 80), (4, 4))
        >>> returns = jppo.evaluate(cfg, out.best, jax.random.key(1))
    """
    if not isinstance(pbt_cfg, PBTConfig):
        raise ValueError(f"train_pbt: pbt_cfg must be a PBTConfig, got {type(pbt_cfg).__name__}")
    _check_against_config(cfg, pbt_cfg)
    size = pbt_cfg.population_size
    if initial and check_values(cfg, initial, "train_pbt") != size:
        lengths = {name: len(value) for name, value in initial.items()}
        raise ValueError(
            f"train_pbt: initial values need one per member (population_size={size}): {lengths}"
        )
    hyperparams = stack_hyperparams(cfg, size, **initial)
    program = cached_program(
        ("pbt", pbt_cfg.program_key()), cfg, lambda: jit(make_pbt(cfg, pbt_cfg))
    )
    keys, pbt_key = member_keys(key, size)
    return program(keys, hyperparams, pbt_key)
