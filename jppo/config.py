"""`PPOConfig`: the frozen, self-validating description of a training run.

Fields are either *static* (they fix shapes or switch features on and off; changing one
compiles a new program) or *traced* (numbers that sweeps and population-based training vary;
they live in `TrainState.learner.hyperparams` and never cause a recompile). Each field says
which it is once, in its metadata (`traced=True`), next to its one-line help text; everything
else (`TRACED_FIELDS`, `Hyperparams`, the compile-cache key, the CLI's help) is derived from
that declaration. A traced field whose default is `None` switches its feature off statically;
set to a number, that number is traced (a sweep may vary it, but not between `None` and a
number).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
import numbers
from typing import Any

import numpy as np


def _field(default: Any, help: str, *, traced: bool = False) -> Any:
    """A config field with its help text and whether it is traced (see the module doc)."""
    return dataclasses.field(default=default, metadata={"help": help, "traced": traced})


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Everything that defines a PPO run. Frozen; use `.replace(**changes)` for variants.

    Example:
        >>> cfg = PPOConfig(env="CartPole-v1", num_envs=8)
        >>> cfg.replace(ent_coef=0.0).batch_size
        1024
    """

    # Environment and rollout shape (static).
    env: Any = _field("CartPole-v1", "gymnax or built-in env name, or a gymnax-interface env")
    env_params: Any = _field(None, "env params (default: the environment's own)")
    total_timesteps: int = _field(500_000, "env steps per seed; sets num_updates")
    num_envs: int = _field(4, "parallel environments (rollout batch B)")
    num_steps: int = _field(128, "steps per env per rollout (rollout length T)")
    update_epochs: int = _field(4, "passes over each rollout batch")
    num_minibatches: int = _field(4, "minibatches per epoch")
    num_devices: int = _field(
        1, "devices the env axis is sharded over (each shuffles its own envs' minibatch share)"
    )
    # Networks (static).
    hidden_sizes: tuple[int, ...] = _field((64, 64), "MLP torso layer sizes (actor and critic)")
    activation: str = _field("tanh", "torso activation")
    network: str = _field("mlp", "'mlp' or 'lstm'")
    lstm_size: int = _field(128, "LSTM hidden size")
    lstm_shared: bool = _field(False, "one torso+LSTM shared by actor and critic")
    lstm_chunk_len: int | None = _field(
        None, "truncated-BPTT chunk length of the LSTM re-evaluation (None: whole rollout)"
    )
    lstm_unroll: int | None = _field(None, "scan unroll of the LSTM, speed only (None: by backend)")
    log_std_init: float = _field(-0.5, "initial log std of continuous actions")
    # Optimizer.
    learning_rate: float = _field(2.5e-4, "Adam learning rate", traced=True)
    anneal_lr: bool = _field(True, "anneal learning rates linearly to 0 over the run")
    critic_learning_rate: float | None = _field(
        None, "critic learning rate (None: learning_rate)", traced=True
    )
    max_grad_norm: float = _field(0.5, "global-norm gradient clip, per network", traced=True)
    vgs: bool = _field(False, "variance gradient scaler in both optimizers")
    vgs_alpha: float = _field(1.0, "VGS strength (0: no scaling)", traced=True)
    vgs_beta: float = _field(0.99, "VGS decay of its gradient-statistics EMAs", traced=True)
    vgs_eps: float = _field(1e-8, "VGS epsilon added to the squared mean gradient", traced=True)
    vgs_min_scale: float = _field(0.1, "VGS lower bound of the gradient scale", traced=True)
    vgs_per_element: bool = _field(False, "VGS statistics per element instead of per tensor")
    # Returns and advantages.
    gamma: float = _field(0.99, "discount", traced=True)
    gae_lambda: float = _field(0.95, "GAE lambda", traced=True)
    adv_norm: str = _field("batch", "advantage normalization mode")
    num_adv_groups: int = _field(1, "env groups for adv_norm='group'")
    adv_std_floor: float = _field(1e-2, "below this advantage std only center", traced=True)
    adv_clip: float | None = _field(10.0, "clip of normalized advantages (None: off)", traced=True)
    # Policy loss.
    clip_eps: float = _field(0.2, "PPO clip range epsilon", traced=True)
    adaptive_clip: bool = _field(False, "adapt clip_eps to the clip fraction")
    log_ratio_clip: float | None = _field(
        10.0, "clamp of the log-ratio before exp (None: off)", traced=True
    )
    ent_coef: float = _field(0.01, "entropy bonus coefficient", traced=True)
    ent_coef_final: float | None = _field(
        None, "entropy coefficient reached linearly at the end (None: constant)", traced=True
    )
    ent_coef_min: float = _field(0.0, "floor of the entropy coefficient", traced=True)
    target_kl: float | None = _field(
        None, "KL early stop threshold (None: off); stops past 1.5x", traced=True
    )
    kl_estimator: str = _field("k3", "KL estimator driving early stop and approx_kl")
    # Value loss and critic.
    vf_coef: float = _field(0.5, "value loss coefficient", traced=True)
    vf_coef_init: float | None = _field(
        None, "vf_coef at the start of a linear warm-down (None: constant)", traced=True
    )
    vf_warmup_fraction: float = _field(0.1, "fraction of updates of the vf_coef warm-down")
    value_loss: str = _field("mse", "value loss kind")
    huber_delta: float = _field(1.0, "Huber delta of the value loss", traced=True)
    vf_clip: float | None = _field(None, "value clipping range (None: off)", traced=True)
    critic: str = _field("scalar", "'scalar' or 'quantile' (distributional) critic")
    num_quantiles: int = _field(32, "quantiles of the quantile critic")
    quantile_kappa: float = _field(1.0, "Huber kappa of the quantile loss", traced=True)
    quantile_vf_clip: str = _field("mean_shift", "how vf_clip clips quantiles")
    cvar_alpha: float = _field(0.1, "CVaR level of the risk-sensitive baseline", traced=True)
    risk_weight: float = _field(
        0.0, "weight of CVaR in the policy's baseline (quantile critic)", traced=True
    )
    # Normalization statistics.
    normalize_obs: bool = _field(False, "running observation normalization")
    normalize_reward: bool = _field(False, "VecNormalize-style reward scaling")
    # On by default: with rewards in the thousands the critic cannot fit raw targets ~5e4
    # (explained variance 0, CartPole with rewards r·1000 − 500 ends near 350 over 8 seeds);
    # with it, 500, and the unscaled CartPole and Pendulum runs are unchanged or better.
    normalize_value_targets: bool = _field(True, "the critic learns normalized value targets")
    obs_clip: float = _field(10.0, "clip of normalized observations", traced=True)
    reward_clip: float = _field(10.0, "clip of normalized rewards", traced=True)
    # Behaviour cloning (AWR-weighted).
    bc_coef: float | None = _field(
        None, "AWR behaviour-cloning coefficient (None: off)", traced=True
    )
    awr_beta: float = _field(5.0, "AWR temperature", traced=True)
    awr_max_weight: float = _field(100.0, "AWR weight cap", traced=True)
    awr_raw_advantages: bool = _field(False, "AWR weights from unnormalized advantages")
    adaptive_bc: bool = _field(False, "shrink bc_coef when bc_ppo_ratio > max_bc_ratio")
    max_bc_ratio: float = _field(1.0, "bound of bc_ppo_ratio for adaptive_bc", traced=True)
    # Multi-agent (JaxMARL environments only, jppo.marl).
    agent_params: str = _field(
        "independent", "multi-agent: 'independent' (own networks per agent) or 'shared'"
    )
    critic_input: str = _field(
        "local", "multi-agent critic input: 'local' (IPPO) or 'global' state (MAPPO)"
    )
    agent_id: bool = _field(False, "multi-agent shared network: one-hot agent id in its input")

    def __post_init__(self):
        if isinstance(self.hidden_sizes, list):
            object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))
        # numpy scalars (np.float32(3e-4), np.int64(8)) are good numbers; stored as Python
        # ones so that equal configs compare, print and hash alike.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.generic) and isinstance(value, (numbers.Number, np.bool_)):
                object.__setattr__(self, f.name, value.item())
        _validate(self)

    # -- derived sizes -------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        """Transitions per update: `num_envs * num_steps`."""
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_updates(self) -> int:
        """Updates in the run: `total_timesteps // batch_size`."""
        return self.total_timesteps // self.batch_size

    @property
    def env_name(self) -> str:
        if isinstance(self.env, str):
            return self.env
        return getattr(self.env, "name", type(self.env).__name__)

    def replace(self, **changes) -> PPOConfig:
        """A copy with `changes` applied (and validated)."""
        check_field_names(changes, "PPOConfig.replace")
        return dataclasses.replace(self, **changes)

    def hyperparams(self) -> dict[str, Any]:
        """The traced hyperparameters' initial values, by field name (None = feature off)."""
        return {name: getattr(self, name) for name in TRACED_FIELDS}

    def static_key(self) -> tuple:
        """What fixes the compiled program: every static field, and which traced ones are off.

        Two configs with the same key share one compiled program; their traced numbers are
        passed as arguments. (May be unhashable, e.g. with array-valued `env_params`.)
        """
        static = tuple(
            (f.name, getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name not in TRACED_FIELDS
        )
        return static + tuple((name, getattr(self, name) is None) for name in TRACED_FIELDS)

    @classmethod
    def preset(cls, name: str, **overrides) -> PPOConfig:
        """Tuned settings for an environment; an ordinary config (`.replace` it).

        Example:
            >>> PPOConfig.preset("Pendulum-v1").env
            'Pendulum-v1'
        """
        if name not in PRESETS:
            raise ValueError(
                f"preset: unknown preset {name!r}; available presets: {sorted(PRESETS)}"
            )
        return cls(**{**PRESETS[name], **overrides})


def check_field_names(names, caller: str = "PPOConfig") -> None:
    """Raise `ValueError`, with close-match suggestions, for a name that is not a field."""
    fields = PPOConfig.__dataclass_fields__
    for name in names:
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=3)
            hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
            raise ValueError(
                f"{caller}: {name!r} is not a PPOConfig field; {hint}fields: {', '.join(fields)}"
            )


_dataclass_init = PPOConfig.__init__


@functools.wraps(_dataclass_init)
def _init_checking_names(self, *args, **kwargs):
    # The generated __init__ would reject a misspelt name with a bare TypeError; say which
    # field was meant instead.
    check_field_names(kwargs)
    _dataclass_init(self, *args, **kwargs)


_init_checking_names.__signature__ = inspect.signature(_dataclass_init)
PPOConfig.__init__ = _init_checking_names


# Names of the numeric hyperparameters carried as traced leaves of `Hyperparams`.
TRACED_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(PPOConfig) if f.metadata["traced"]
)


def field_help(name: str) -> str:
    """The one-line help text of a config field."""
    return PPOConfig.__dataclass_fields__[name].metadata["help"]


PRESETS: dict[str, dict[str, Any]] = {
    # PureJaxRL's CartPole settings are our defaults.
    "CartPole-v1": dict(env="CartPole-v1"),
    # Short horizon (gamma 0.95), larger steps, reward (and, by default, value-target)
    # normalization: about -160
    # within 1M steps (tests/test_learning.py, benchmarks/RESULTS.md).
    "Pendulum-v1": dict(
        env="Pendulum-v1",
        total_timesteps=1_000_000,
        num_envs=16,
        num_steps=128,
        update_epochs=10,
        num_minibatches=16,
        learning_rate=1e-3,
        gamma=0.95,
        gae_lambda=0.95,
        ent_coef=0.0,
        max_grad_norm=0.5,
        normalize_reward=True,
    ),
    # The POMDP (velocities hidden): separate actor and critic LSTMs reach about 500 within
    # 1M steps on 4 seeds, with exact or chunked (truncated BPTT, 16 steps: much faster)
    # re-evaluation; the MLP with the same settings stays near 50
    # (benchmarks/lstm_masked_cartpole.py, benchmarks/NOTES.md, tests/test_lstm.py).
    "CartPole-masked": dict(
        env="CartPole-masked",
        network="lstm",
        lstm_chunk_len=16,
        total_timesteps=1_000_000,
        num_envs=16,
        num_steps=128,
        update_epochs=4,
        num_minibatches=4,
        learning_rate=5e-4,
    ),
}


# -- validation ---------------------------------------------------------------------------


def _fail(field: str, value: Any, allowed: str) -> None:
    raise ValueError(f"PPOConfig.{field}={value!r} is invalid: {allowed}")


def _check_int(cfg, field: str, minimum: int = 1) -> None:
    value = getattr(cfg, field)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        _fail(field, value, f"expected an integer >= {minimum}")


def _check_number(
    cfg, field: str, lo=None, hi=None, lo_open=False, hi_open=False, optional=False
) -> None:
    value = getattr(cfg, field)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        _fail(field, value, "expected a finite number" + (" or None" if optional else ""))
    if lo is not None and (value <= lo if lo_open else value < lo):
        _fail(field, value, f"expected a value {'>' if lo_open else '>='} {lo}")
    if hi is not None and (value >= hi if hi_open else value > hi):
        _fail(field, value, f"expected a value {'<' if hi_open else '<='} {hi}")


def _check_choice(cfg, field: str, choices) -> None:
    value = getattr(cfg, field)
    if not isinstance(value, str) or value not in choices:
        close = difflib.get_close_matches(value, choices, n=1) if isinstance(value, str) else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        _fail(field, value, f"expected one of {list(choices)}{hint}")


def _check_sharding(cfg: PPOConfig) -> None:
    """Every device holds num_envs / num_devices envs and gives each minibatch an equal share
    of them (so an epoch's shuffle stays on the device)."""
    d = cfg.num_devices
    if _is_multi_agent(cfg.env):
        _fail("num_devices", d, "sharding is for single-agent envs; JaxMARL envs run on one device")
    if cfg.num_envs % d:
        _fail("num_devices", d, f"must divide num_envs={cfg.num_envs}")
    if cfg.network == "lstm" and (cfg.num_envs // d) % cfg.num_minibatches:
        _fail(
            "num_devices",
            d,
            f"with network='lstm' each device's envs (num_envs / num_devices = "
            f"{cfg.num_envs // d}) must split into num_minibatches={cfg.num_minibatches}",
        )
    if cfg.batch_size % (cfg.num_minibatches * d):
        _fail(
            "num_devices",
            d,
            f"num_minibatches * num_devices must divide num_envs * num_steps = "
            f"{cfg.batch_size} (each device gives each minibatch an equal share)",
        )


def _validate(cfg: PPOConfig) -> None:
    # The modules that implement each choice own its list of names; they know nothing of
    # configs (imported here, not at the top, because they import the state types).
    from jppo import advantages, envs, losses, networks

    multi_agent = _is_multi_agent(cfg.env)
    if not multi_agent:
        _check_single_agent_env(cfg.env)
    for field in (
        "total_timesteps",
        "num_envs",
        "num_steps",
        "update_epochs",
        "num_minibatches",
        "num_devices",
        "lstm_size",
        "num_quantiles",
        "num_adv_groups",
    ):
        _check_int(cfg, field)
    if cfg.lstm_unroll is not None:
        _check_int(cfg, "lstm_unroll")
    if cfg.lstm_chunk_len is not None:
        _check_int(cfg, "lstm_chunk_len")
        if cfg.num_steps % cfg.lstm_chunk_len:
            _fail("lstm_chunk_len", cfg.lstm_chunk_len, f"must divide num_steps={cfg.num_steps}")
    if not cfg.hidden_sizes or not all(
        isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in cfg.hidden_sizes
    ):
        _fail("hidden_sizes", cfg.hidden_sizes, "expected a non-empty tuple of positive ints")
    _check_choice(cfg, "activation", networks.ACTIVATIONS)
    _check_choice(cfg, "network", networks.NETWORK_KINDS)
    _check_choice(cfg, "value_loss", losses.VALUE_LOSS_KINDS)
    _check_choice(cfg, "adv_norm", advantages.NORMALIZE_MODES)
    _check_choice(cfg, "kl_estimator", losses.KL_ESTIMATORS)
    _check_choice(cfg, "critic", networks.CRITIC_KINDS)
    _check_choice(cfg, "quantile_vf_clip", losses.QUANTILE_CLIP_MODES)
    if cfg.batch_size % cfg.num_minibatches:
        _fail(
            "num_minibatches",
            cfg.num_minibatches,
            f"must divide num_envs * num_steps = {cfg.batch_size}",
        )
    if cfg.network == "lstm" and cfg.num_envs % cfg.num_minibatches:
        _fail(
            "num_minibatches",
            cfg.num_minibatches,
            f"with network='lstm' minibatches are whole env sequences, so it must divide "
            f"num_envs={cfg.num_envs}",
        )
    if cfg.num_devices > 1:
        _check_sharding(cfg)
    if cfg.adv_norm == "group" and cfg.num_envs % cfg.num_adv_groups:
        _fail("num_adv_groups", cfg.num_adv_groups, f"must divide num_envs={cfg.num_envs}")
    if cfg.total_timesteps < cfg.batch_size:
        _fail(
            "total_timesteps",
            cfg.total_timesteps,
            f"must be at least num_envs * num_steps = {cfg.batch_size} (one update)",
        )
    _check_number(cfg, "learning_rate", lo=0, lo_open=True)
    _check_number(cfg, "critic_learning_rate", lo=0, lo_open=True, optional=True)
    _check_number(cfg, "max_grad_norm", lo=0, lo_open=True)
    _check_number(cfg, "vgs_alpha", lo=0)
    _check_number(cfg, "vgs_beta", lo=0, hi=1, hi_open=True)
    _check_number(cfg, "vgs_eps", lo=0, lo_open=True)
    _check_number(cfg, "vgs_min_scale", lo=0, hi=1, lo_open=True)
    _check_number(cfg, "gamma", lo=0, hi=1)
    _check_number(cfg, "gae_lambda", lo=0, hi=1)
    _check_number(cfg, "adv_std_floor", lo=0)
    _check_number(cfg, "adv_clip", lo=0, lo_open=True, optional=True)
    # Below 1, so that the lower end of the clip range 1 - clip_eps stays a positive ratio.
    _check_number(cfg, "clip_eps", lo=0, hi=1, lo_open=True, hi_open=True)
    _check_number(cfg, "log_ratio_clip", lo=0, lo_open=True, optional=True)
    _check_number(cfg, "ent_coef", lo=0)
    _check_number(cfg, "ent_coef_final", lo=0, optional=True)
    _check_number(cfg, "ent_coef_min", lo=0)
    _check_number(cfg, "target_kl", lo=0, lo_open=True, optional=True)
    _check_number(cfg, "vf_coef", lo=0)
    _check_number(cfg, "vf_coef_init", lo=0, optional=True)
    _check_number(cfg, "vf_warmup_fraction", lo=0, hi=1)
    _check_number(cfg, "huber_delta", lo=0, lo_open=True)
    _check_number(cfg, "vf_clip", lo=0, lo_open=True, optional=True)
    _check_number(cfg, "quantile_kappa", lo=0)
    _check_number(cfg, "cvar_alpha", lo=0, hi=1, lo_open=True)
    _check_number(cfg, "risk_weight", lo=0, hi=1)
    _check_number(cfg, "obs_clip", lo=0, lo_open=True)
    _check_number(cfg, "reward_clip", lo=0, lo_open=True)
    _check_number(cfg, "log_std_init")
    _check_number(cfg, "bc_coef", lo=0, optional=True)
    _check_number(cfg, "awr_beta", lo=0, lo_open=True)
    _check_number(cfg, "awr_max_weight", lo=0, lo_open=True)
    _check_number(cfg, "max_bc_ratio", lo=0, lo_open=True)
    for flag in (
        "anneal_lr",
        "lstm_shared",
        "vgs",
        "vgs_per_element",
        "adaptive_clip",
        "normalize_obs",
        "normalize_reward",
        "normalize_value_targets",
        "awr_raw_advantages",
        "adaptive_bc",
    ):
        if not isinstance(getattr(cfg, flag), bool):
            _fail(flag, getattr(cfg, flag), "expected True or False")
    _check_combinations(cfg)
    _check_multi_agent(cfg, multi_agent)
    if not multi_agent:
        envs.check_env_params(cfg.env, cfg.env_params)


def _check_combinations(cfg: PPOConfig) -> None:
    """Settings that are valid alone but would be silently ignored in this combination."""
    if cfg.risk_weight > 0 and cfg.critic != "quantile":
        _fail(
            "risk_weight",
            cfg.risk_weight,
            f"only the quantile critic has a CVaR; with critic={cfg.critic!r} it must be 0 "
            "(or set critic='quantile')",
        )
    if cfg.adaptive_bc and cfg.bc_coef is None:
        _fail("adaptive_bc", cfg.adaptive_bc, "needs bc_coef set (behaviour cloning is off)")
    if cfg.lstm_chunk_len is not None and cfg.network != "lstm":
        _fail(
            "lstm_chunk_len",
            cfg.lstm_chunk_len,
            f"only network='lstm' re-evaluates in chunks; with network={cfg.network!r} "
            "it must be None",
        )
    if cfg.num_adv_groups != 1 and cfg.adv_norm != "group":
        _fail(
            "num_adv_groups",
            cfg.num_adv_groups,
            f"only adv_norm='group' uses groups; with adv_norm={cfg.adv_norm!r} it must be 1",
        )
    if cfg.critic == "quantile" and cfg.value_loss != "mse":
        _fail(
            "value_loss",
            cfg.value_loss,
            "the quantile critic always uses the quantile Huber loss (its kappa is "
            "quantile_kappa); with critic='quantile' value_loss must stay 'mse'",
        )
    if cfg.ent_coef_min > cfg.ent_coef:
        _fail(
            "ent_coef_min",
            cfg.ent_coef_min,
            f"a floor above ent_coef={cfg.ent_coef} would replace it; expected a value <= ent_coef",
        )


# -- multi-agent settings (jppo.marl) ------------------------------------------------------

AGENT_PARAMS = ("independent", "shared")
CRITIC_INPUTS = ("local", "global")


def _is_multi_agent(env: Any) -> bool:
    from jppo.envs import marl

    return marl.is_marl_env(env)


def _check_single_agent_env(env: Any) -> None:
    """`envs.check_env`, with JaxMARL's names among the suggestions for a misspelt one."""
    from jppo import envs
    from jppo.envs import marl

    try:
        envs.check_env(env)
    except ValueError as err:
        close = []
        if isinstance(env, str):
            close = difflib.get_close_matches(env, marl.registered_names(), n=3, cutoff=0.8)
        if not close:
            raise
        hint = " or ".join(map(repr, close))
        raise ValueError(f"{err} Multi-agent (JaxMARL) names close to it: {hint}.") from None


def _check_multi_agent(cfg: PPOConfig, multi_agent: bool) -> None:
    """The multi-agent fields: valid names, set only for JaxMARL envs, supported settings."""
    _check_choice(cfg, "agent_params", AGENT_PARAMS)
    _check_choice(cfg, "critic_input", CRITIC_INPUTS)
    if not isinstance(cfg.agent_id, bool):
        _fail("agent_id", cfg.agent_id, "expected True or False")
    if not multi_agent:
        for field, default in (
            ("agent_params", "independent"),
            ("critic_input", "local"),
            ("agent_id", False),
        ):
            if getattr(cfg, field) != default:
                _fail(
                    field,
                    getattr(cfg, field),
                    f"only multi-agent (JaxMARL) environments use it; with env="
                    f"{cfg.env_name!r} it must stay {default!r}",
                )
        return
    if cfg.agent_id and cfg.agent_params != "shared":
        _fail(
            "agent_id",
            cfg.agent_id,
            "only a shared network needs an agent id (independent agents have their own "
            "networks); set agent_params='shared' or agent_id=False",
        )
    from jppo import marl
    from jppo.envs.marl import check_marl_env

    check_marl_env(cfg.env, cfg.env_params)
    marl.check_config(cfg)
