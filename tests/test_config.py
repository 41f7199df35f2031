"""PPOConfig: defaults, presets, and validation before anything compiles."""

import dataclasses
import re

import gymnax
import jax
import numpy as np
import pytest

import jppo
from jppo.config import TRACED_FIELDS
from tests.helpers import SMALL, count_compilations

# Every field's default: the table of the contract (SPEC §1), then the fields it does not
# list (switches and tuning knobs added since). A field missing here fails the test.
CONTRACT_DEFAULTS = dict(
    env="CartPole-v1",
    env_params=None,
    total_timesteps=500_000,
    num_envs=4,
    num_steps=128,
    update_epochs=4,
    num_minibatches=4,
    hidden_sizes=(64, 64),
    activation="tanh",
    network="mlp",
    lstm_size=128,
    lstm_shared=False,
    learning_rate=2.5e-4,
    anneal_lr=True,
    critic_learning_rate=None,
    gamma=0.99,
    gae_lambda=0.95,
    clip_eps=0.2,
    adaptive_clip=False,
    log_ratio_clip=10.0,
    ent_coef=0.01,
    ent_coef_final=None,
    ent_coef_min=0.0,
    vf_coef=0.5,
    vf_coef_init=None,
    vf_warmup_fraction=0.1,
    value_loss="mse",
    huber_delta=1.0,
    vf_clip=None,
    max_grad_norm=0.5,
    target_kl=None,
    kl_estimator="k3",
    adv_norm="batch",
    num_adv_groups=1,
    adv_std_floor=1e-2,
    adv_clip=10.0,
    log_std_init=-0.5,
    critic="scalar",
    num_quantiles=32,
    quantile_kappa=1.0,
    quantile_vf_clip="mean_shift",
    cvar_alpha=0.1,
    risk_weight=0.0,
    normalize_obs=False,
    normalize_reward=False,
    obs_clip=10.0,
    reward_clip=10.0,
    normalize_value_targets=True,
    bc_coef=None,
    awr_beta=5.0,
    awr_max_weight=100.0,
    awr_raw_advantages=False,
    adaptive_bc=False,
    max_bc_ratio=1.0,
    vgs=False,
    agent_params="independent",
    critic_input="local",
)
EXTRA_DEFAULTS = dict(
    agent_id=False,
    lstm_chunk_len=None,
    lstm_unroll=None,
    vgs_alpha=1.0,
    vgs_beta=0.99,
    vgs_eps=1e-8,
    vgs_min_scale=0.1,
    vgs_per_element=False,
    num_devices=1,
)


def test_defaults_match_the_contract():
    cfg = jppo.PPOConfig()
    names = [f.name for f in dataclasses.fields(cfg)]
    assert sorted(names) == sorted({**CONTRACT_DEFAULTS, **EXTRA_DEFAULTS})
    for name, default in {**CONTRACT_DEFAULTS, **EXTRA_DEFAULTS}.items():
        value = getattr(cfg, name)
        assert value == default and type(value) is type(default), (name, value)
    assert cfg.num_updates == 500_000 // 512 and cfg.minibatch_size == 128


def test_frozen_and_replace_validates():
    cfg = jppo.PPOConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.num_envs = 8
    assert cfg.replace(ent_coef=0.0).ent_coef == 0.0
    with pytest.raises(ValueError, match="ent_coef"):
        cfg.replace(ent_coef=-1.0)


def _config(**changes):
    return lambda: jppo.PPOConfig(**changes)


_CARTPOLE_PARAMS = gymnax.make("CartPole-v1")[1]
_PENDULUM_PARAMS = gymnax.make("Pendulum-v1")[1]
_INT = "expected an integer >= 1"
# Built here, not inside the checks: creating a key runs (and compiles) a small program.
_KEY = jax.random.key(0)
_HP_WITH_KL = jppo.Hyperparams.from_config(SMALL.replace(target_kl=0.01))
_SMALL_TRAIN = jppo.make_train(SMALL)
_CARTPOLE_PARAMS_TYPE = "a gymnax.environments.classic_control.cartpole.EnvParams"

# (what raises, the field it must name, what its message must say is allowed). Each raises
# a ValueError before anything is compiled.
BAD_INPUT = {
    # sizes and shapes
    "num_envs=0": (_config(num_envs=0), "PPOConfig.num_envs=0", _INT),
    "num_envs float": (_config(num_envs=4.0), "PPOConfig.num_envs=4.0", _INT),
    "num_steps<0": (_config(num_steps=-5), "PPOConfig.num_steps=-5", _INT),
    "update_epochs=0": (_config(update_epochs=0), "PPOConfig.update_epochs=0", _INT),
    "num_minibatches": (
        _config(num_minibatches=3),
        "PPOConfig.num_minibatches=3",
        "must divide num_envs \\* num_steps = 512",
    ),
    "total_timesteps": (
        _config(total_timesteps=100),
        "PPOConfig.total_timesteps=100",
        "at least num_envs \\* num_steps = 512",
    ),
    "hidden_sizes": (
        _config(hidden_sizes=(64, 0)),
        "PPOConfig.hidden_sizes",
        "non-empty tuple of positive ints",
    ),
    "lstm minibatching": (
        _config(network="lstm", num_envs=6, num_minibatches=4),
        "PPOConfig.num_minibatches=4",
        "whole env sequences, so it must divide num_envs=6",
    ),
    "num_devices=0": (_config(num_devices=0), "PPOConfig.num_devices=0", _INT),
    "num_devices divides num_envs": (
        _config(num_envs=6, num_devices=4),
        "PPOConfig.num_devices=4",
        "must divide num_envs=6",
    ),
    "num_devices shares minibatches": (
        _config(num_envs=8, num_steps=3, num_minibatches=4, num_devices=8),
        "PPOConfig.num_devices=8",
        "num_minibatches \\* num_devices must divide num_envs \\* num_steps = 24",
    ),
    "num_devices lstm": (
        _config(network="lstm", num_envs=8, num_minibatches=4, num_devices=4),
        "PPOConfig.num_devices=4",
        "each device's envs \\(num_envs / num_devices = 2\\) must split",
    ),
    "lstm_chunk_len divides": (
        _config(network="lstm", lstm_chunk_len=5),
        "PPOConfig.lstm_chunk_len=5",
        "must divide num_steps=128",
    ),
    "adv groups divide": (
        _config(adv_norm="group", num_adv_groups=3),
        "PPOConfig.num_adv_groups=3",
        "must divide num_envs=4",
    ),
    # numbers and their ranges
    "learning_rate=0": (_config(learning_rate=0.0), "PPOConfig.learning_rate=0.0", "> 0"),
    "learning_rate str": (
        _config(learning_rate="3e-4"),
        "PPOConfig.learning_rate='3e-4'",
        "expected a finite number",
    ),
    "learning_rate nan": (
        _config(learning_rate=float("nan")),
        "PPOConfig.learning_rate=nan",
        "expected a finite number",
    ),
    "gamma>1": (_config(gamma=1.5), "PPOConfig.gamma=1.5", "<= 1"),
    "gae_lambda<0": (_config(gae_lambda=-0.1), "PPOConfig.gae_lambda=-0.1", ">= 0"),
    "clip_eps=0": (_config(clip_eps=0.0), "PPOConfig.clip_eps=0.0", "> 0"),
    "clip_eps>=1": (_config(clip_eps=5.0), "PPOConfig.clip_eps=5.0", "< 1"),
    "vf_coef<0": (_config(vf_coef=-0.5), "PPOConfig.vf_coef=-0.5", ">= 0"),
    "max_grad_norm=0": (_config(max_grad_norm=0.0), "PPOConfig.max_grad_norm=0.0", "> 0"),
    "target_kl<0": (_config(target_kl=-0.01), "PPOConfig.target_kl=-0.01", "> 0"),
    "cvar_alpha=0": (_config(cvar_alpha=0.0), "PPOConfig.cvar_alpha=0.0", "> 0"),
    "risk_weight>1": (
        _config(critic="quantile", risk_weight=2.0),
        "PPOConfig.risk_weight=2.0",
        "<= 1",
    ),
    "vgs_beta=1": (_config(vgs_beta=1.0), "PPOConfig.vgs_beta=1.0", "< 1"),
    "vgs_min_scale>1": (_config(vgs_min_scale=1.5), "PPOConfig.vgs_min_scale=1.5", "<= 1"),
    "flag not bool": (
        _config(normalize_obs="yes"),
        "PPOConfig.normalize_obs='yes'",
        "expected True or False",
    ),
    # names
    "unknown field": (
        _config(learnin_rate=1e-3),
        "'learnin_rate' is not a PPOConfig field",
        "did you mean 'learning_rate'",
    ),
    "unknown field in replace": (
        lambda: jppo.PPOConfig().replace(gama=0.9),
        "'gama' is not a PPOConfig field",
        "did you mean 'gamma'",
    ),
    "unknown env": (
        _config(env="CartPol-v1"),
        "PPOConfig.env='CartPol-v1'",
        "Did you mean 'CartPole-v1'",
    ),
    "unknown mode": (
        _config(adv_norm="bach"),
        "PPOConfig.adv_norm='bach'",
        "expected one of \\['batch'.*did you mean 'batch'",
    ),
    "activation": (_config(activation="sigmoidish"), "PPOConfig.activation=", "one of"),
    "value_loss": (_config(value_loss="l1"), "PPOConfig.value_loss='l1'", "'mse_huber'"),
    "kl_estimator": (_config(kl_estimator="k2"), "PPOConfig.kl_estimator='k2'", "'k3'"),
    "critic": (_config(critic="categorical"), "PPOConfig.critic=", "'quantile'"),
    "network": (_config(network="gru"), "PPOConfig.network='gru'", "'lstm'"),
    "quantile_vf_clip": (
        _config(quantile_vf_clip="both"),
        "PPOConfig.quantile_vf_clip=",
        "'per_quantile'",
    ),
    # settings that would be accepted and silently ignored
    "risk_weight, scalar critic": (
        _config(risk_weight=0.5),
        "PPOConfig.risk_weight=0.5",
        "only the quantile critic.*critic='scalar' it must be 0",
    ),
    "adaptive_bc without bc_coef": (
        _config(adaptive_bc=True),
        "PPOConfig.adaptive_bc=True",
        "needs bc_coef set",
    ),
    "lstm_chunk_len with the MLP": (
        _config(lstm_chunk_len=16),
        "PPOConfig.lstm_chunk_len=16",
        "only network='lstm'.*must be None",
    ),
    "groups without group norm": (
        _config(num_adv_groups=2),
        "PPOConfig.num_adv_groups=2",
        "only adv_norm='group'.*must be 1",
    ),
    "value_loss with quantile critic": (
        _config(critic="quantile", value_loss="huber"),
        "PPOConfig.value_loss='huber'",
        "quantile Huber loss.*must stay 'mse'",
    ),
    "ent_coef_min above ent_coef": (
        _config(ent_coef_min=0.1),
        "PPOConfig.ent_coef_min=0.1",
        "expected a value <= ent_coef",
    ),
    "env_params of another env": (
        _config(env="CartPole-v1", env_params=_PENDULUM_PARAMS),
        "PPOConfig.env_params=gymnax.environments.classic_control.pendulum.EnvParams",
        f"expected the params of CartPole-v1, {_CARTPOLE_PARAMS_TYPE}",
    ),
    "target_kl only in Hyperparams": (
        lambda: jppo.Hyperparams.from_config(SMALL, target_kl=0.01),
        "Hyperparams.target_kl: PPOConfig.target_kl is None",
        "set PPOConfig.target_kl to a number",
    ),
    "bc_coef only in Hyperparams": (
        lambda: jppo.Hyperparams.from_config(SMALL, bc_coef=0.1),
        "Hyperparams.bc_coef: PPOConfig.bc_coef is None",
        "set PPOConfig.bc_coef to a number",
    ),
    "Hyperparams of another config": (
        lambda: jax.jit(_SMALL_TRAIN)(_KEY, _HP_WITH_KL),
        "Hyperparams.target_kl: PPOConfig.target_kl is None",
        "would be ignored",
    ),
    # entry points
    "train_seeds with one key": (
        lambda: jppo.train_seeds(SMALL, _KEY),
        "train_seeds: expected a batch of keys",
        "e.g. jax.random.split",
    ),
    "population of 0": (
        lambda: jppo.PBTConfig(population_size=0, interval=1),
        "PBTConfig.population_size=0",
        ">= 1",
    ),
    "sweep over a static field": (
        lambda: jppo.sweep(SMALL, _KEY, num_envs=[4, 8]),
        "PPOConfig.num_envs is static",
        "traced fields: learning_rate",
    ),
    "sweep over an unknown field": (
        lambda: jppo.sweep(SMALL, _KEY, lerning_rate=[1e-3]),
        "'lerning_rate' is not a PPOConfig field",
        "did you mean 'learning_rate'",
    ),
    "sweep value out of range": (
        lambda: jppo.sweep(SMALL, _KEY, gamma=[0.9, 1.5]),
        "gamma[1]: PPOConfig.gamma=1.5",
        "<= 1",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_a_value_error_naming_the_field(case):
    """Each bad input raises a ValueError that names the field (or argument) and says what
    is allowed, and nothing is compiled on the way there."""
    make, field, allowed = BAD_INPUT[case]
    with count_compilations() as compiles, pytest.raises(ValueError) as err:
        make()
    message = str(err.value)
    assert re.search(re.escape(field), message), message
    assert re.search(allowed, message), message
    assert compiles == []


def test_numpy_scalars_are_good_numbers():
    """numpy scalars validate like Python numbers and are stored as Python numbers, so the
    config equals (and shares its compiled program with) the one written with literals."""
    cfg = jppo.PPOConfig(
        learning_rate=np.float32(3e-4), num_envs=np.int64(8), gamma=np.float64(0.9)
    )
    assert type(cfg.num_envs) is int and type(cfg.learning_rate) is float
    assert cfg.batch_size == 8 * 128
    plain = jppo.PPOConfig(learning_rate=float(np.float32(3e-4)), num_envs=8, gamma=0.9)
    assert cfg == plain and cfg.static_key() == plain.static_key()
    assert jppo.PPOConfig(num_adv_groups=np.int32(1)).num_adv_groups == 1
    with pytest.raises(ValueError, match="num_envs"):
        jppo.PPOConfig(num_envs=np.int64(0))
    with pytest.raises(ValueError, match="normalize_obs"):
        jppo.PPOConfig(normalize_obs=np.float32(1.0))


def test_legitimate_combinations_are_accepted():
    """The combination rules reject only what would be ignored: each feature with its
    partner is fine, and the params of the right env are accepted."""
    jppo.PPOConfig(critic="quantile", risk_weight=0.5)
    jppo.PPOConfig(bc_coef=0.1, adaptive_bc=True)
    jppo.PPOConfig(network="lstm", lstm_chunk_len=16)
    jppo.PPOConfig(adv_norm="group", num_adv_groups=2)
    jppo.PPOConfig(ent_coef=0.01, ent_coef_min=0.01, ent_coef_final=0.0)
    jppo.PPOConfig(clip_eps=0.99)
    cfg = jppo.PPOConfig(env_params=_CARTPOLE_PARAMS.replace(max_steps_in_episode=200))
    assert cfg.env_params.max_steps_in_episode == 200
    hp = jppo.Hyperparams.from_config(SMALL.replace(target_kl=0.01), target_kl=0.02)
    assert float(hp.target_kl) == pytest.approx(0.02)


def test_presets():
    pend = jppo.PPOConfig.preset("Pendulum-v1")
    assert pend.env == "Pendulum-v1" and pend.total_timesteps <= 1_000_000
    assert jppo.PPOConfig.preset("CartPole-v1") == jppo.PPOConfig()
    assert pend.replace(num_envs=32).num_envs == 32
    with pytest.raises(ValueError, match="Pendulum-v1"):
        jppo.PPOConfig.preset("Pendulum-v0")


def test_traced_fields_are_config_fields():
    names = {f.name for f in dataclasses.fields(jppo.PPOConfig)}
    assert set(TRACED_FIELDS) <= names
    hp = jppo.Hyperparams.from_config(jppo.PPOConfig())
    assert hp.target_kl is None and float(hp.learning_rate) == pytest.approx(2.5e-4)


def test_vgs_fields_bounds_and_which_are_traced():
    cfg = jppo.PPOConfig()
    assert (cfg.vgs, cfg.vgs_alpha, cfg.vgs_beta, cfg.vgs_eps) == (False, 1.0, 0.99, 1e-8)
    assert (cfg.vgs_min_scale, cfg.vgs_per_element) == (0.1, False)
    # the closed ends of the ranges are allowed
    jppo.PPOConfig(vgs=True, vgs_alpha=0.0, vgs_beta=0.0, vgs_min_scale=1.0)
    traced = {"vgs_alpha", "vgs_beta", "vgs_eps", "vgs_min_scale"}
    assert traced <= set(TRACED_FIELDS) and not {"vgs", "vgs_per_element"} & set(TRACED_FIELDS)
    # the numbers never change the compiled program; the switches do
    assert cfg.replace(vgs_alpha=3.0, vgs_beta=0.5).static_key() == cfg.static_key()
    assert cfg.replace(vgs_per_element=True).static_key() != cfg.static_key()


def test_the_kept_jaxmarl_names_are_jaxmarls_own():
    """Unknown-name checks read a copy of JaxMARL's list (importing jaxmarl compiles)."""
    jaxmarl = pytest.importorskip("jaxmarl")
    from jppo.envs import marl

    assert marl.registered_names() == tuple(jaxmarl.registered_envs)
