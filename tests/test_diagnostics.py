"""health_check on synthetic metric traces (fast) and on real runs (slow).

The synthetic traces use the numbers of a reported training collapse (policy_loss −7e−7,
approx_kl 2e−7, nothing clipped, explained variance −143.7, entropy at its maximum, returns
falling linearly) and of a KL explosion (KL ≈ 5, everything clipped, raw advantages in the
thousands); the healthy ones are shaped like real CartPole and Pendulum runs.
"""

import math

import jax
import numpy as np
import pytest

import jppo
from jppo.diagnostics import THRESHOLDS, Finding, health_check
from tests.helpers import final_return

CARTPOLE = jppo.PPOConfig()
PENDULUM = jppo.PPOConfig(env="Pendulum-v1")
N = CARTPOLE.num_updates  # 976, as in a default run


def _noise(seed, scale, n=N):
    return scale * np.random.default_rng(seed).standard_normal(n)


def _ramp(a, b, n=N):
    return np.linspace(a, b, n)


def _common(n=N):
    """Metrics every trace shares: nothing non-finite, an annealed learning rate."""
    return {
        "timesteps": np.arange(1, n + 1) * 512.0,
        "learning_rate": _ramp(2.5e-4, 2.5e-4 / n, n),
        "nonfinite_grad_count": np.zeros(n),
        "nonfinite_env_count": np.zeros(n),
        "nonfinite_ratio_count": np.zeros(n),
        "log_ratio_clamped_fraction": np.zeros(n),
        "episodes_completed": np.full(n, 4.0),
    }


def healthy_trace(seed=0, n=N):
    """KL ~0.01, clip 0.1–0.2, EV rising to 0.9, entropy falling, returns rising."""
    returns = np.clip(_ramp(20, 400, n) + _noise(seed, 15, n), 5, 500)
    return _common(n) | {
        "episode_return": returns,
        "episode_length": returns,
        "policy_loss": -0.01 + _noise(seed + 1, 0.003, n),
        "value_loss": _ramp(20, 2, n),
        "entropy": _ramp(0.69, 0.3, n),
        "approx_kl": np.exp(np.log(0.01) + _noise(seed + 2, 0.3, n)),
        "clip_fraction": 0.15 + 0.05 * np.sin(np.arange(n) / 7.0),
        "ratio_mean": np.ones(n),
        "ratio_max": 1.6 + _noise(seed + 3, 0.1, n),
        "ratio_min": 0.6 + _noise(seed + 4, 0.05, n),
        "explained_variance": np.minimum(_ramp(0.0, 1.2, n), 0.9),
        "adv_mean": _noise(seed + 5, 0.1, n),
        "adv_std": _ramp(5, 1, n),
        "value_mean": _ramp(5, 60, n),
        "return_mean": _ramp(6, 61, n),
        "grad_norm": np.full(n, 0.4),
    }


def collapse_trace(seed=0, n=N):
    """The reported collapse: a frozen, random policy, a useless critic, falling returns."""
    returns = _ramp(100, 20, n) + _noise(seed, 5, n)
    return _common(n) | {
        "episode_return": returns,
        "episode_length": returns,
        "policy_loss": -7.40352e-07 + _noise(seed + 1, 1e-8, n),
        "value_loss": np.full(n, 0.270569),
        "entropy": math.log(2) - np.abs(_noise(seed + 2, 1e-4, n)),
        "approx_kl": 2.00774e-07 + np.abs(_noise(seed + 3, 1e-8, n)),
        "clip_fraction": np.zeros(n),
        "ratio_mean": np.ones(n),
        "ratio_max": np.full(n, 1.0001),
        "ratio_min": np.full(n, 0.9999),
        "explained_variance": -143.673 + _noise(seed + 4, 5, n),
        "adv_mean": np.full(n, 6.77611e-07),
        "adv_std": np.full(n, 0.5),
        "value_mean": np.full(n, 0.3),
        "return_mean": 0.3 + _noise(seed + 5, 0.05, n),
        "grad_norm": np.full(n, 1e-6),
    }


def exploding_trace(seed=0, n=N):
    """KL ≈ 5 with every sample clipped (rewards −2000…+3000, advantages unnormalized)."""
    m = healthy_trace(seed, n)
    m["approx_kl"] = 5.0 + _noise(seed + 6, 0.3, n)
    m["clip_fraction"] = np.ones(n)
    return m


def solved_cartpole_trace(seed=0, n=N, late_kl=1e-3):
    """A solved CartPole: returns reach 500 by a quarter of the run, then every episode is
    truncated at 500 steps; the λ-return targets are then nearly constant, so EV ≈ −8."""
    solve = n // 4
    returns = np.concatenate([_ramp(20, 500, solve), np.full(n - solve, 500.0)])
    returns = np.clip(
        returns + np.concatenate([_noise(seed, 20, solve), np.zeros(n - solve)]), 10, 500
    )
    after = np.arange(n) >= solve
    return _common(n) | {
        "episode_return": returns,
        "episode_length": returns,
        "policy_loss": np.where(after, -1e-4, -0.01),
        "value_loss": np.where(after, 1e-5, 5.0),
        "entropy": np.where(after, 0.5, _ramp(0.69, 0.5, n)),
        "approx_kl": np.where(after, late_kl, 0.005) * np.exp(_noise(seed + 1, 0.3, n)),
        "clip_fraction": np.where(after, 0.0, 0.05),
        "ratio_mean": np.ones(n),
        "ratio_max": np.where(after, 1.01, 1.5),
        "ratio_min": np.where(after, 0.99, 0.6),
        "explained_variance": np.where(after, -8.0 + _noise(seed + 2, 2.0, n), 0.5),
        "adv_mean": np.zeros(n),
        "adv_std": np.where(after, 0.007, 3.0),
        "value_mean": np.where(after, 100.0, _ramp(10, 100, n)),
        "return_mean": np.where(after, 100.0, _ramp(10, 100, n)),
        "grad_norm": np.full(n, 0.4),
    }


def pendulum_trace(seed=0, n=N, learning=True):
    """A Pendulum run: returns −1200 → −160, Gaussian entropy 0.92 → 0.2 (or stuck)."""
    if learning:
        returns = -160 - 1040 * np.exp(-np.arange(n) / (n / 6)) + _noise(seed, 25, n)
        entropy = _ramp(0.92, 0.2, n)
    else:
        returns = -1200 + _noise(seed, 100, n)
        entropy = 0.919 + _noise(seed + 1, 0.003, n)
    return _common(n) | {
        "episode_return": returns,
        "episode_length": np.full(n, 200.0),
        "policy_loss": -0.005 + _noise(seed + 2, 0.002, n),
        "value_loss": _ramp(1.0, 0.1, n),
        "entropy": entropy,
        "approx_kl": np.exp(np.log(0.012) + _noise(seed + 3, 0.4, n)),
        "clip_fraction": 0.11 + _noise(seed + 4, 0.02, n),
        "ratio_max": 2.0 + np.abs(_noise(seed + 5, 0.3, n)),
        "ratio_min": 0.4 + _noise(seed + 6, 0.03, n),
        "explained_variance": np.minimum(_ramp(0.2, 1.0, n), 0.7),
        "adv_std": _ramp(2.0, 0.5, n),
        "return_mean": _ramp(-8, -3, n),
    }


def deterministic_trace(seed=0, n=N):
    """Far too large steps: KL ≈ 90 in the first updates saturates the softmax, then the
    policy always pushes the same way (entropy 0, nothing moves, CartPole returns ≈ 9)."""
    m = collapse_trace(seed, n)
    head = np.arange(n) < 3
    m["episode_return"] = m["episode_length"] = 9.3 + np.abs(_noise(seed, 0.5, n))
    m["entropy"] = np.where(head, 0.07, 0.0)
    m["approx_kl"] = np.where(head, 90.0, 0.0)
    m["clip_fraction"] = np.where(head, 0.9, 0.0)
    m["explained_variance"] = np.where(head, 0.5, 0.0)
    return m


def codes(findings):
    return [f.code for f in findings]


def stack(traces):
    return {k: np.stack([t[k] for t in traces]) for k in traces[0]}


# -- healthy runs yield nothing -------------------------------------------------------------


def test_healthy_trace_yields_no_finding():
    assert health_check(healthy_trace(), CARTPOLE) == []
    assert health_check(healthy_trace()) == []


def test_solved_cartpole_trace_yields_no_finding():
    assert health_check(solved_cartpole_trace(), CARTPOLE) == []
    assert health_check(solved_cartpole_trace()) == []


def test_solved_cartpole_with_a_still_policy_yields_no_finding():
    # once solved, raw advantages are ~0.007 and the policy barely moves: not a collapse
    m = solved_cartpole_trace(late_kl=1e-7)
    assert health_check(m, CARTPOLE) == []


def test_a_late_chunk_of_solved_cartpole_yields_no_finding():
    # only the plateau is visible: every episode runs to CartPole's 500-step limit
    m = {k: v[700:] for k, v in solved_cartpole_trace().items()}
    assert health_check(m, CARTPOLE) == []


def test_the_plateau_guard_is_what_keeps_solved_cartpole_quiet():
    # the same negative explained variance on returns that never improved is a collapse
    m = solved_cartpole_trace()
    m["episode_return"] = m["episode_length"] = 20 + _noise(9, 3)
    assert "value_collapse" in codes(health_check(m, CARTPOLE))


def test_healthy_pendulum_trace_yields_no_finding():
    assert health_check(pendulum_trace(), PENDULUM) == []


# -- the collapse ---------------------------------------------------------------------------


def test_collapse_trace_yields_its_four_codes():
    found = codes(health_check(collapse_trace(), CARTPOLE))
    for code in ("frozen_policy", "value_collapse", "random_policy", "returns_declining"):
        assert code in found
    assert not {"kl_explosion", "clip_saturation", "nonfinite"} & set(found)


def test_a_deterministic_policy_is_an_entropy_collapse_not_a_frozen_one():
    found = {f.code: f for f in health_check(deterministic_trace(), CARTPOLE)}
    assert "entropy_collapse" in found and "frozen_policy" not in found
    finding = found["entropy_collapse"]
    assert finding.severity == "error" and "lower learning_rate" in finding.suggestion
    # the spike that caused it lies in the warm-up, yet the finding shows it
    assert finding.evidence["kl_peak"] == 90.0 and "peaked at 90" in finding.message
    assert finding.evidence["fraction"] == 1.0
    np.testing.assert_allclose(finding.evidence["threshold"], 0.01 * math.log(2), rtol=1e-5)


def test_entropy_collapse_spares_converged_and_continuous_runs():
    solved = solved_cartpole_trace()
    solved["entropy"] = np.where(np.arange(N) >= N // 4, 1e-4, solved["entropy"])
    assert health_check(solved, CARTPOLE) == []  # a solved policy may be deterministic
    pend = pendulum_trace()
    pend["entropy"] = _ramp(0.92, -3.0)  # a Gaussian's entropy has no "deterministic" floor
    assert "entropy_collapse" not in codes(health_check(pend, PENDULUM))
    assert "entropy_collapse" not in codes(health_check(deterministic_trace()))  # no cfg


def test_frozen_policy_needs_both_kl_and_clip_near_zero():
    m = collapse_trace()
    m["clip_fraction"] = np.full(N, 0.2)
    assert "frozen_policy" not in codes(health_check(m, CARTPOLE))


def test_frozen_policy_ignores_a_learning_rate_annealed_to_zero():
    m = collapse_trace()
    m["learning_rate"] = np.concatenate([np.full(100, 2.5e-4), np.zeros(N - 100)])
    assert "frozen_policy" not in codes(health_check(m, CARTPOLE))


def test_random_policy_uses_log_num_actions_for_discrete_actions():
    m = healthy_trace()
    m["entropy"] = np.full(N, 0.67)  # 0.97 of log 2, held all run
    assert "random_policy" in codes(health_check(m, CARTPOLE))
    m["entropy"] = np.full(N, 0.6)  # 0.87 of log 2
    assert "random_policy" not in codes(health_check(m, CARTPOLE))


def test_random_policy_uses_the_initial_entropy_for_continuous_actions():
    m = pendulum_trace(learning=False)
    assert "random_policy" in codes(health_check(m, PENDULUM))
    assert "random_policy" in codes(health_check(m))  # no cfg: the same reference


# -- KL explosion, clipping, ratios, advantages -----------------------------------------------


def test_kl_explosion_and_clip_saturation():
    found = health_check(exploding_trace(), CARTPOLE)
    by_code = {f.code: f for f in found}
    assert {"kl_explosion", "clip_saturation"} <= set(by_code)
    assert by_code["kl_explosion"].severity == "error"
    assert "target_kl" in by_code["kl_explosion"].suggestion


def test_kl_bound_follows_target_kl():
    m = healthy_trace()
    m["approx_kl"] = np.full(N, 0.3)  # below 1, but 20x a target_kl of 0.015
    assert "kl_explosion" not in codes(health_check(m, CARTPOLE))
    assert "kl_explosion" in codes(health_check(m, CARTPOLE.replace(target_kl=0.015)))


def test_ratio_overflow_on_nonfinite_and_on_extreme_ratios():
    m = healthy_trace()
    m["nonfinite_ratio_count"][500] = 3.0
    found = {f.code: f for f in health_check(m, CARTPOLE)}
    assert found["ratio_overflow"].severity == "error"
    assert 500 in found["ratio_overflow"].evidence["updates"]
    m = healthy_trace()
    m["ratio_max"] = np.full(N, 2e4)
    m["log_ratio_clamped_fraction"] = np.full(N, 0.01)
    assert "ratio_overflow" in codes(health_check(m, CARTPOLE))


def test_advantage_scale_with_normalization_off_is_an_error():
    m = healthy_trace()
    m["adv_std"] = 3000 + _noise(7, 300)
    found = {f.code: f for f in health_check(m, CARTPOLE.replace(adv_norm="none"))}
    assert found["advantage_scale"].severity == "error"
    assert "adv_norm" in found["advantage_scale"].suggestion
    found = {f.code: f for f in health_check(m, CARTPOLE)}
    assert found["advantage_scale"].severity == "warning"


def test_advantage_scale_is_relative_to_the_reward_scale():
    m = healthy_trace()
    m["adv_std"] = np.full(N, 3000.0)
    m["episode_return"] = m["episode_return"] * 1000.0  # 1000 per step: 3000 is modest
    assert "advantage_scale" not in codes(health_check(m, CARTPOLE.replace(adv_norm="none")))


# -- behaviour cloning, returns, non-finite values -------------------------------------------


def test_bc_dominates_only_when_bc_is_on():
    m = healthy_trace()
    m["bc_ppo_ratio"] = np.full(N, 3.0)
    assert "bc_dominates" in codes(health_check(m, CARTPOLE.replace(bc_coef=0.1)))
    assert "bc_dominates" in codes(health_check(m))
    assert "bc_dominates" not in codes(health_check(m, CARTPOLE))  # bc_coef None
    m["bc_ppo_ratio"] = np.full(N, 0.5)
    assert "bc_dominates" not in codes(health_check(m, CARTPOLE.replace(bc_coef=0.1)))


def test_returns_declining_needs_a_real_trend():
    m = healthy_trace()
    m["episode_return"] = 300 + _noise(3, 40)  # flat and noisy
    assert "returns_declining" not in codes(health_check(m, CARTPOLE))
    m["episode_return"] = _ramp(300, 200) + _noise(3, 10)
    assert "returns_declining" in codes(health_check(m, CARTPOLE))


def test_nonfinite_counters():
    m = healthy_trace()
    m["nonfinite_grad_count"] = np.where(np.arange(N) >= 300, 2.0, 0.0)
    m["nonfinite_grad_count"][600:] = 5.0
    found = {f.code: f for f in health_check(m, CARTPOLE)}
    assert found["nonfinite"].severity == "error"
    assert found["nonfinite"].evidence["updates"] == [300, 600]
    # the cumulative count does not rise inside a later window
    assert "nonfinite" not in codes(health_check(m, CARTPOLE, window=(700, N)))
    m = healthy_trace()
    m["nonfinite_env_count"][5] = 1.0  # during the warm-up: still reported
    found = {f.code: f for f in health_check(m, CARTPOLE)}
    assert found["nonfinite"].severity == "warning"


# -- seeds, windows, warm-up, missing metrics ------------------------------------------------


def test_seed_batch_names_the_affected_seeds_once():
    m = stack([healthy_trace(0), exploding_trace(1), healthy_trace(2), exploding_trace(3)])
    found = health_check(m, CARTPOLE)
    assert codes(found).count("kl_explosion") == 1
    kl = next(f for f in found if f.code == "kl_explosion")
    assert kl.evidence["seeds"] == [1, 3]
    assert len(kl.evidence["updates"]) == 2 and len(kl.evidence["values"]) == 2
    assert "seeds [1, 3]" in kl.message
    assert health_check(stack([healthy_trace(s) for s in range(4)]), CARTPOLE) == []


def test_window_and_slices_for_chunked_runs():
    m = healthy_trace()
    half = N // 2
    m["approx_kl"][half:] = 5.0
    assert "kl_explosion" not in codes(health_check(m, CARTPOLE, window=(0, half)))
    found = {f.code: f for f in health_check(m, CARTPOLE, window=slice(half, N))}
    assert min(found["kl_explosion"].evidence["updates"]) >= half
    sliced = {k: v[half:] for k, v in m.items()}
    assert "kl_explosion" in codes(health_check(sliced))


def test_warmup_updates_are_ignored():
    m = healthy_trace()
    m["approx_kl"][: int(0.05 * N)] = 5.0
    m["explained_variance"][: int(0.08 * N)] = -50.0
    assert health_check(m, CARTPOLE) == []


def test_missing_metrics_skip_their_checks():
    only = {"approx_kl": np.full(N, 5.0)}
    assert codes(health_check(only)) == ["kl_explosion"]
    assert health_check({}) == []


def test_finding_reads_well():
    finding = health_check(exploding_trace(), CARTPOLE)[0]
    assert isinstance(finding, Finding) and finding.severity in ("warning", "error")
    text = str(finding)
    assert text.startswith(f"[{finding.severity}] {finding.code}: ")
    assert "suggestion:" in text and "evidence:" in text
    assert THRESHOLDS.warmup_fraction == 0.1


def test_thresholds_can_be_tightened():
    m = healthy_trace()
    assert "kl_explosion" in codes(
        health_check(m, CARTPOLE, thresholds=THRESHOLDS.replace(kl_max=0.001))
    )


# -- real runs -------------------------------------------------------------------------------


@pytest.mark.slow
def test_far_too_large_learning_rate_is_an_entropy_collapse():
    # learning_rate 0.5 (2000x the default) saturates the softmax within the first updates:
    # the policy then always pushes one way and CartPole episodes last about 9 steps.
    cfg = jppo.PPOConfig(learning_rate=0.5, total_timesteps=100_000)
    out = jppo.train(cfg, jax.random.key(0))
    assert final_return(out.metrics) < 15
    found = {f.code: f for f in health_check(out.metrics, cfg)}
    assert "entropy_collapse" in found and "frozen_policy" not in found
    assert found["entropy_collapse"].evidence["kl_peak"] > THRESHOLDS.kl_max


def test_public_names():
    assert jppo.health_check is health_check and jppo.Finding is Finding
    assert jppo.diagnostics.THRESHOLDS is THRESHOLDS
    assert {"Finding", "diagnostics", "health_check"} <= set(jppo.__all__)
