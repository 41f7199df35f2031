"""PPOConfig: defaults, presets, and validation before anything compiles."""

import dataclasses

import pytest

import jppo
from jppo.config import TRACED_FIELDS


def test_defaults_match_the_contract():
    cfg = jppo.PPOConfig()
    assert (cfg.env, cfg.total_timesteps, cfg.num_envs, cfg.num_steps) == (
        "CartPole-v1",
        500_000,
        4,
        128,
    )
    assert (cfg.update_epochs, cfg.num_minibatches, cfg.hidden_sizes) == (4, 4, (64, 64))
    assert (cfg.learning_rate, cfg.gamma, cfg.gae_lambda, cfg.clip_eps) == (2.5e-4, 0.99, 0.95, 0.2)
    assert (cfg.log_ratio_clip, cfg.ent_coef, cfg.vf_coef, cfg.max_grad_norm) == (
        10.0,
        0.01,
        0.5,
        0.5,
    )
    assert cfg.adv_norm == "batch" and cfg.critic == "scalar" and cfg.network == "mlp"
    assert cfg.log_std_init == -0.5 and cfg.target_kl is None and cfg.anneal_lr
    assert cfg.num_updates == 500_000 // 512 and cfg.minibatch_size == 128


def test_frozen_and_replace_validates():
    cfg = jppo.PPOConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.num_envs = 8
    assert cfg.replace(ent_coef=0.0).ent_coef == 0.0
    with pytest.raises(ValueError, match="ent_coef"):
        cfg.replace(ent_coef=-1.0)


def test_unknown_env_suggests_close_match():
    with pytest.raises(ValueError, match=r"PPOConfig\.env.*Did you mean 'CartPole-v1'"):
        jppo.PPOConfig(env="CartPol-v1")


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(num_minibatches=3), "num_minibatches"),  # 4*128 not divisible by 3
        (dict(num_envs=0), "num_envs"),
        (dict(num_steps=-5), "num_steps"),
        (dict(update_epochs=0), "update_epochs"),
        (dict(total_timesteps=100), "total_timesteps"),
        (dict(hidden_sizes=(64, 0)), "hidden_sizes"),
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(gamma=1.5), "gamma"),
        (dict(gae_lambda=-0.1), "gae_lambda"),
        (dict(clip_eps=0.0), "clip_eps"),
        (dict(vf_coef=-0.5), "vf_coef"),
        (dict(max_grad_norm=0.0), "max_grad_norm"),
        (dict(target_kl=-0.01), "target_kl"),
        (dict(cvar_alpha=0.0), "cvar_alpha"),
        (dict(risk_weight=2.0), "risk_weight"),
        (dict(learning_rate=float("nan")), "learning_rate"),
        (dict(activation="sigmoidish"), "activation"),
        (dict(value_loss="l1"), "value_loss"),
        (dict(adv_norm="batchwise"), "adv_norm"),
        (dict(kl_estimator="k2"), "kl_estimator"),
        (dict(critic="categorical"), "critic"),
        (dict(network="gru"), "network"),
        (dict(quantile_vf_clip="both"), "quantile_vf_clip"),
        (dict(network="lstm", num_envs=6, num_minibatches=4), "num_minibatches"),
        (dict(adv_norm="group", num_adv_groups=3), "num_adv_groups"),
        (dict(normalize_obs="yes"), "normalize_obs"),
        (dict(num_envs=4.0), "num_envs"),
        (dict(vgs_alpha=-0.1), "vgs_alpha"),
        (dict(vgs_beta=1.0), "vgs_beta"),
        (dict(vgs_beta=-0.1), "vgs_beta"),
        (dict(vgs_eps=0.0), "vgs_eps"),
        (dict(vgs_min_scale=0.0), "vgs_min_scale"),
        (dict(vgs_min_scale=1.5), "vgs_min_scale"),
        (dict(vgs_per_element=1), "vgs_per_element"),
    ],
)
def test_bad_values_name_the_field(changes, field):
    with pytest.raises(ValueError, match=rf"PPOConfig\.{field}="):
        jppo.PPOConfig(**changes)


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
