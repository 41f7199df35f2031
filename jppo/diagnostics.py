"""Training-health diagnostics: read a run's metric traces and name what went wrong.

`health_check(metrics, cfg)` looks at the per-update metrics a run returns and reports
`Finding`s: a code, a severity, the evidence (metric, update indices, values, affected seeds)
and a suggestion that names the config fields to change. It runs on the host with numpy,
after training or between the chunks of a chunked run, and never inside the compiled program.

Every number that decides a finding lives in one place, `THRESHOLDS` (a `Thresholds`), so a
user can see and tighten them: `health_check(m, cfg, thresholds=THRESHOLDS.replace(kl_max=0.5))`.

Three rules keep healthy runs quiet:

- Warm-up: the first `warmup_fraction` of the run's updates are ignored by every check
  except the non-finite counters (an untrained critic and the first episodes make them noisy).
- Sustained: a condition must hold on a given fraction of the analysed updates (and on at
  least `min_updates` of them), so a single bad update is not a finding.
- Plateau: a run whose returns rose and then levelled off at their best is converged. Its
  policy may legitimately stop moving (approx_kl ~ 0), and its critic's explained variance
  may be strongly negative: on a solved CartPole every episode reaches the 500-step limit, the
  λ-return targets are almost the same number everywhere, var(targets) is tiny and any small
  error gives explained variance ~ −8; it may also have become (nearly) deterministic. So
  `frozen_policy`, `value_collapse`, `random_policy` and `entropy_collapse` are not reported
  for seeds at such a plateau.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

SEVERITIES = ("warning", "error")
# Evidence lists at most this many update indices per seed, so a finding stays printable.
_MAX_LISTED = 20


@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem found in a run's metrics.

    Attributes:
      code: what kind of problem, e.g. "kl_explosion" (the codes are listed in `health_check`).
      severity: "warning" (worth a look) or "error" (the run is broken or not learning).
      message: one sentence saying what was seen.
      evidence: a dict with
        "metric": the metric's name, or a tuple of names;
        "threshold": the bound it was compared with;
        "updates": absolute update indices where the condition held (at most 20);
        "values": the metric at those updates (the first metric's when several are named;
          for `nonfinite`, the number of new non-finite values);
        "fraction", "count": share and number of the analysed updates where it held;
        "seeds": the affected seed indices, or None for a single run.
        For a seed batch, "updates", "values", "fraction" and "count" hold one entry per
        affected seed. `returns_declining` gives the bounds of the first and last quarters
        as "updates" and their median returns as "values"; `entropy_collapse` adds
        "kl_peak", the KL metric's maximum over the window, warm-up included.
      suggestion: which config field(s) to change, and in which direction.
    """

    code: str
    severity: str
    message: str
    evidence: dict
    suggestion: str

    def __str__(self) -> str:
        ev = self.evidence
        updates, values = ev.get("updates") or [], ev.get("values") or []
        seeds = ev.get("seeds")
        if seeds is not None and updates:  # show the first affected seed's evidence
            updates, values = updates[0], values[0]
        where = "" if seeds is None else f"; seeds {seeds}"
        return (
            f"[{self.severity}] {self.code}: {self.message}\n"
            f"    evidence: {ev.get('metric')} = {_brief(values)} at updates {_brief(updates)}"
            f" (threshold {ev.get('threshold')}{where})\n"
            f"    suggestion: {self.suggestion}"
        )


def _brief(items, k: int = 4) -> str:
    """'[1, 2, 3, 4, ...]' with floats at 4 significant digits."""
    shown = [f"{x:.4g}" if isinstance(x, float) else str(x) for x in list(items)[:k]]
    return "[" + ", ".join(shown + (["..."] if len(items) > k else [])) + "]"


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Every number `health_check` uses to decide a finding.

    Fractions are of the analysed updates (after the warm-up, inside the window) unless said
    otherwise; "spread" is the 5–95 percentile range of a seed's returns, the scale against
    which return changes are judged.

    Attributes:
      warmup_fraction: leading share of the run's updates that no check (but the non-finite
        counters) looks at.
      min_updates: fewest analysed updates on which a condition must hold.
      sustain_fraction: share of updates on which a "sustained" condition must hold.
      frozen_kl: |approx_kl| below this counts as "the policy did not move" (a healthy update
        moves it by 1e-3…1e-2; the collapse this catches showed 2e-7).
      frozen_clip: clip_fraction below this counts as "nothing was clipped".
      lr_active_fraction: updates whose learning_rate is below this share of the run's peak
        are not held against the policy: the schedule, not the learner, stopped it.
      value_collapse_ev: explained_variance below this is worse than predicting the mean by a
        margin (0 is "as good as the mean").
      random_entropy_margin: entropy within this relative margin of its reference counts as
        "still random" (discrete actions: of log(num_actions); otherwise the reference is
        the run's initial entropy and the margin is taken of max(|reference|, action_dim)
        nats, since a Gaussian's entropy can be near zero or negative).
      collapsed_entropy_fraction: a discrete policy whose entropy is below this share of
        log(num_actions) counts as deterministic (a learning CartPole policy keeps ~0.1–0.5
        nats; one that far too large steps saturated shows 0).
      kl_max: approx_kl above this is an explosion whatever target_kl says.
      kl_target_multiple: with target_kl set, approx_kl above this multiple of it is one too.
      kl_spike_fraction: share of updates (at least `min_updates`) that must exceed the KL
        bound; reaching `sustain_fraction` makes it an error.
      clip_fraction_max: clip_fraction above this is saturated (0.1–0.3 is normal).
      clip_spike_fraction: share of updates that must exceed it.
      ratio_max, ratio_min: minibatch-max / -min probability ratios beyond these are extreme.
      ratio_spike_fraction: share of updates that must show extreme ratios.
      adv_std_max: raw advantage std above this (normalized advantages have std 1).
      adv_std_reward_multiple: ... and above this multiple of the per-step reward scale
        (|episode_return| / episode_length), so large rewards alone are not a finding.
      bc_ratio_default: bc_ppo_ratio bound when no config gives `max_bc_ratio`.
      decline_spread_fraction: a decline must be at least this share of the return spread...
      decline_level_fraction: ... and of the returns' level (|first-quarter median|).
      min_trend_updates: fewest analysed updates for any trend or plateau judgement.
      plateau_head_fraction: leading share of the run taken as its starting return level.
      plateau_gain_fraction: a plateau needs a gain over the start of this share of the spread.
      plateau_flat_fraction: and its last two quarters within this share of the spread.
      survival_length_fraction: episodes at least this share of the env's step limit...
      survival_return_spread: ... with returns this steady (relative) are a plateau too.
    """

    warmup_fraction: float = 0.1
    min_updates: int = 3
    sustain_fraction: float = 0.5
    frozen_kl: float = 1e-5
    frozen_clip: float = 1e-3
    lr_active_fraction: float = 0.1
    value_collapse_ev: float = -1.0
    random_entropy_margin: float = 0.05
    collapsed_entropy_fraction: float = 0.01
    kl_max: float = 1.0
    kl_target_multiple: float = 10.0
    kl_spike_fraction: float = 0.02
    clip_fraction_max: float = 0.5
    clip_spike_fraction: float = 0.1
    ratio_max: float = 100.0
    # The extremes are over every sample of every applied minibatch step of an update. A
    # continuous policy whose std shrinks makes a few old samples far less likely, so the
    # minimum has a long lower tail in healthy runs (the Pendulum preset: ratio_min < 0.01 on
    # 5 % of updates, < 1e-3 on 2 %); a ratio can only grow as far as the density at a sample
    # can, so the maximum needs no such allowance (> 100 on 0.05 % of updates there).
    ratio_min: float = 1e-3
    ratio_spike_fraction: float = 0.05
    adv_std_max: float = 100.0
    adv_std_reward_multiple: float = 10.0
    bc_ratio_default: float = 1.0
    decline_spread_fraction: float = 0.25
    decline_level_fraction: float = 0.05
    min_trend_updates: int = 8
    plateau_head_fraction: float = 0.05
    plateau_gain_fraction: float = 0.5
    plateau_flat_fraction: float = 0.1
    survival_length_fraction: float = 0.99
    survival_return_spread: float = 0.01

    def replace(self, **changes) -> Thresholds:
        return dataclasses.replace(self, **changes)


THRESHOLDS = Thresholds()


class _Run(NamedTuple):
    """The metrics reshaped to [num_seeds, num_updates] float64, and what frames them."""

    full: dict  # name -> np.ndarray [R, U], the whole history passed in
    batch_shape: tuple  # () for a single run, else the leading (seed) dims
    lo: int  # first update of the window
    start: int  # first analysed update: max(lo, end of warm-up)
    hi: int  # one past the window's last update
    cfg: Any
    spec: Any  # what jppo.envs.env_spec returns for cfg.env, or None without a cfg
    th: Thresholds
    plateau: np.ndarray  # [R] bool, seed converged (see the module docstring)

    def get(self, name, warmup=False):
        """`name` over the analysed updates [R, U'], or None; `warmup`: from the window start."""
        x = self.full.get(name)
        return None if x is None else x[:, self.lo if warmup else self.start : self.hi]


def _numeric_arrays(metrics: Mapping) -> dict:
    """The metrics that are numeric arrays with an update axis, as float64 numpy arrays."""
    out = {}
    for name, value in metrics.items():
        arr = np.asarray(value)
        if arr.ndim >= 1 and arr.dtype.kind in "biuf":
            out[name] = arr.astype(np.float64)
    return out


def _window(window, num_updates: int) -> tuple[int, int]:
    if window is None:
        return 0, num_updates
    if isinstance(window, slice):
        lo, hi, step = window.indices(num_updates)
        if step != 1:
            raise ValueError(f"window={window!r}: the step must be 1")
        return lo, hi
    lo, hi = window
    return slice(lo, hi).indices(num_updates)[:2]


def _env_spec(cfg):
    if cfg is None:
        return None
    from jppo import envs  # the env layer is only needed when a config is given
    from jppo.envs.marl import is_marl_env

    if is_marl_env(cfg.env):
        from jppo import marl  # the per-agent spec (padded action count)

        return marl.build(cfg).spec
    env, params = envs.make_env(cfg.env, cfg.env_params)
    return envs.env_spec(env, params)


def _make_run(metrics: Mapping, cfg, window, th: Thresholds) -> _Run | None:
    arrays = _numeric_arrays(metrics)
    if not arrays:
        return None
    # episode_return fixes the layout; metrics of another shape (extra dims) are left out
    ref = arrays.get("episode_return", next(iter(arrays.values())))
    batch_shape, num_updates = ref.shape[:-1], ref.shape[-1]
    num_runs = int(np.prod(batch_shape, dtype=int))
    full = {k: a.reshape(num_runs, num_updates) for k, a in arrays.items() if a.shape == ref.shape}
    lo, hi = _window(window, num_updates)
    run_length = cfg.num_updates if cfg is not None else num_updates
    start = min(max(lo, math.ceil(th.warmup_fraction * run_length)), hi)
    plateau = np.zeros(num_runs, bool)
    run = _Run(full, batch_shape, lo, start, hi, cfg, _env_spec(cfg), th, plateau)
    return run._replace(plateau=_plateau(run))


# -- shared judgements ------------------------------------------------------------------


def _median(x: np.ndarray) -> np.ndarray:
    """[R] row medians ignoring NaNs; NaN (and no warning) for an empty or all-NaN row."""
    if x.shape[1] == 0:
        return np.full(x.shape[0], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(x, axis=1)


def _spread(x: np.ndarray) -> np.ndarray:
    """[R] the 5–95 percentile range of each row, ignoring NaNs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanpercentile(x, 95, axis=1) - np.nanpercentile(x, 5, axis=1)


def _plateau(run: _Run) -> np.ndarray:
    """[R] bool: the seed's returns rose, then levelled off at their best (or it survives).

    A seed is at a plateau when its last-quarter median return exceeds its starting level
    by `plateau_gain_fraction` of its spread, is within `plateau_flat_fraction` of the spread
    of the quarter before, and is the best quarter so far; or when its episodes reach the
    env's step limit with steady returns (a solved survival task seen in a late chunk).
    """
    th = run.th
    name = "episode_return" if "episode_return" in run.full else "return_mean"
    history = run.full.get(name)
    returns = run.get(name)
    if history is None or returns.shape[1] < th.min_trend_updates:
        return run.plateau
    q = returns.shape[1] // 4
    quarters = np.stack([_median(returns[:, i * q : (i + 1) * q]) for i in range(4)], 1)
    head = history[:, : max(1, math.ceil(th.plateau_head_fraction * history.shape[1]))]
    spread = _spread(history[:, : run.hi])
    tol = th.plateau_flat_fraction * spread
    last = _median(returns[:, -q:])
    improved = (last - _median(head) >= th.plateau_gain_fraction * spread) & (spread > 0)
    flat = np.abs(last - quarters[:, 2]) <= tol
    at_best = last >= np.max(quarters, axis=1) - tol  # a NaN quarter: no plateau
    return (improved & flat & at_best) | _survives(run, returns[:, -q:])


def _survives(run: _Run, last_returns: np.ndarray) -> np.ndarray:
    """[R] bool: episodes run to the env's step limit and returns are steady."""
    th, lengths = run.th, run.get("episode_length")
    limit = None if run.spec is None else run.spec.max_episode_steps
    if lengths is None or not limit:
        return np.zeros(last_returns.shape[0], bool)
    q = last_returns.shape[1]
    long = _median(lengths[:, -q:]) >= th.survival_length_fraction * limit
    level = np.abs(_median(last_returns))
    steady = _spread(last_returns) <= th.survival_return_spread * level
    return long & steady & (level > 0)


def _held(cond: np.ndarray, fraction: float, th: Thresholds) -> np.ndarray:
    """[R] bool: `cond` [R, U] holds on at least `fraction` of updates (and `min_updates`)."""
    need = max(th.min_updates, math.ceil(fraction * cond.shape[1]))
    return cond.sum(axis=1) >= need


def _seed_ids(run: _Run, rows) -> list | None:
    if run.batch_shape == ():
        return None
    if len(run.batch_shape) == 1:
        return [int(r) for r in rows]
    return [tuple(int(i) for i in np.unravel_index(r, run.batch_shape)) for r in rows]


def _fraction(cond: np.ndarray) -> np.ndarray:
    return cond.mean(axis=1) if cond.shape[1] else np.zeros(cond.shape[0])


def _evidence(run: _Run, metric, threshold, cond, values, hit, offset=None) -> dict:
    """The evidence dict for the seeds in `hit`, from a condition and values [R, U]."""
    offset = run.start if offset is None else offset
    rows = np.flatnonzero(hit)
    updates, vals = [], []
    for r in rows:
        idx = np.flatnonzero(cond[r])[:_MAX_LISTED]
        updates.append([int(i + offset) for i in idx])
        vals.append([float(v) for v in values[r, idx]])
    frac = [round(float(f), 3) for f in _fraction(cond)[rows]]
    count = [int(c) for c in cond.sum(axis=1)[rows]]
    single = run.batch_shape == ()
    return {
        "metric": metric,
        "threshold": threshold,
        "updates": updates[0] if single else updates,
        "values": vals[0] if single else vals,
        "fraction": frac[0] if single else frac,
        "count": count[0] if single else count,
        "seeds": _seed_ids(run, rows),
    }


def _where(run: _Run, evidence: dict, offset=None) -> str:
    """' on 87% of updates 98–975 (seeds [1, 3])' or ' on 2 updates in 0–975'."""
    frac, count = evidence["fraction"], evidence["count"]
    frac, count = (max(frac), max(count)) if isinstance(frac, list) else (frac, count)
    span = f"{run.start if offset is None else offset}–{run.hi - 1}"
    share = f"{frac:.0%} of updates {span}" if frac >= 0.01 else f"{count} updates in {span}"
    seeds = "" if evidence["seeds"] is None else f" (seeds {evidence['seeds']})"
    return f" on {share}{seeds}"


def _kl(run: _Run):
    """The KL metric early stopping uses (approx_kl), else another estimator, over [R, U']."""
    for name in ("approx_kl", "kl_k3", "kl_exact"):
        x = run.get(name)
        if x is not None:
            return name, x
    return None, None


# -- the checks -------------------------------------------------------------------------


def _frozen_policy(run: _Run) -> Finding | None:
    th = run.th
    name, kl = _kl(run)
    clip = run.get("clip_fraction")
    if kl is None or clip is None:
        return None
    active = np.ones_like(kl, bool)
    lr = run.get("learning_rate")
    if lr is not None:
        peak = np.nanmax(run.full["learning_rate"][:, : run.hi], axis=1, keepdims=True)
        active = lr >= th.lr_active_fraction * peak
    cond = (np.abs(kl) < th.frozen_kl) & (clip < th.frozen_clip) & active
    cond &= ~run.plateau[:, None]
    collapsed = _collapsed_entropy(run)
    if collapsed is not None:
        # A deterministic policy stands still because its softmax saturated, not because its
        # steps are too small: entropy_collapse reports it, and this check's advice (raise
        # the learning rate) would make it worse.
        cond &= ~collapsed
    hit = _held(cond, th.sustain_fraction, th)
    if not hit.any():
        return None
    thr = {name: th.frozen_kl, "clip_fraction": th.frozen_clip}
    ev = _evidence(run, (name, "clip_fraction"), thr, cond, kl, hit)
    return Finding(
        "frozen_policy",
        "error",
        f"{name} < {th.frozen_kl:g} and clip_fraction < {th.frozen_clip:g}{_where(run, ev)}: "
        "the updates do not move the policy",
        ev,
        "raise learning_rate (or update_epochs), raise max_grad_norm; if the rewards are tiny "
        "set normalize_reward=True; if anneal_lr drives the rate to 0 too early, set "
        "anneal_lr=False",
    )


def _value_collapse(run: _Run) -> Finding | None:
    th = run.th
    ev_ = run.get("explained_variance")
    if ev_ is None:
        return None
    cond = (ev_ < th.value_collapse_ev) & ~run.plateau[:, None]
    hit = _held(cond, th.sustain_fraction, th)
    if not hit.any():
        return None
    ev = _evidence(run, "explained_variance", th.value_collapse_ev, cond, ev_, hit)
    median = float(np.nanmedian(ev_[cond & hit[:, None]]))
    return Finding(
        "value_collapse",
        "error",
        f"explained_variance < {th.value_collapse_ev:g} (median {median:.3g}){_where(run, ev)}"
        " while the returns are not at a plateau: the critic is worse than a constant",
        ev,
        "set critic_learning_rate above learning_rate, raise vf_coef, keep "
        "normalize_value_targets=True and set normalize_reward=True; try value_loss='huber'",
    )


def _entropy_floor(run: _Run) -> tuple[np.ndarray, str]:
    """[R, 1] the entropy at or above which the policy counts as random, and its reference.

    Discrete actions: within the margin of log(num_actions). Otherwise (continuous actions,
    or no config) the maximum is unknown, so the reference is the median entropy of the run's
    first `warmup_fraction` of updates (a fresh policy is as random as it will be), and the
    margin is taken of max(|reference|, action_dim nats) because a Gaussian's entropy may be
    near zero or negative.
    """
    th, spec = run.th, run.spec
    if spec is not None and spec.discrete and spec.action_dim >= 2:
        ref = np.full((len(run.plateau), 1), math.log(spec.action_dim))
        return ref * (1.0 - th.random_entropy_margin), f"log({spec.action_dim})"
    history = run.full["entropy"]
    head = history[:, : max(1, math.ceil(th.warmup_fraction * history.shape[1]))]
    ref = _median(head)[:, None]
    dim = 1 if spec is None else spec.action_dim
    return ref - th.random_entropy_margin * np.maximum(np.abs(ref), dim), "the initial entropy"


def _random_policy(run: _Run) -> Finding | None:
    th = run.th
    ent = run.get("entropy")
    if ent is None:
        return None
    floor, label = _entropy_floor(run)
    cond = (ent >= floor) & ~run.plateau[:, None]
    hit = _held(cond, th.sustain_fraction, th)
    if not hit.any():
        return None
    thr = [round(float(f), 4) for f in floor[hit, 0]]
    ev = _evidence(run, "entropy", thr[0] if run.batch_shape == () else thr, cond, ent, hit)
    return Finding(
        "random_policy",
        "warning",
        f"entropy stays within {th.random_entropy_margin:.0%} of {label}{_where(run, ev)}: "
        "the policy is still (nearly) uniform",
        ev,
        "lower ent_coef (or set ent_coef_final to decay it), raise learning_rate; check that "
        "the advantages carry signal (see value_collapse)",
    )


def _collapsed_entropy(run: _Run) -> np.ndarray | None:
    """[R, U'] bool: a discrete policy's entropy below `collapsed_entropy_fraction` of
    log(num_actions); None when the maximum is unknown (continuous actions, or no config:
    a Gaussian's entropy has no floor at which it is "deterministic")."""
    ent, spec = run.get("entropy"), run.spec
    if ent is None or spec is None or not spec.discrete or spec.action_dim < 2:
        return None
    return ent < run.th.collapsed_entropy_fraction * math.log(spec.action_dim)


def _entropy_collapse(run: _Run) -> Finding | None:
    th = run.th
    collapsed = _collapsed_entropy(run)
    if collapsed is None:
        return None
    cond = collapsed & ~run.plateau[:, None]
    hit = _held(cond, th.sustain_fraction, th)
    if not hit.any():
        return None
    bound = th.collapsed_entropy_fraction * math.log(run.spec.action_dim)
    ev = _evidence(run, "entropy", bound, cond, run.get("entropy"), hit)
    # The collapse usually happens in the first updates, inside the warm-up the other
    # checks skip; the KL peak over the whole window shows the step that caused it.
    name, _ = _kl(run)
    spike = ""
    if name is not None:
        peaks = np.nanmax(run.full[name][hit, run.lo : run.hi], axis=1)
        ev["kl_peak"] = float(peaks[0]) if run.batch_shape == () else [float(p) for p in peaks]
        if (peaks > th.kl_max).any():
            spike = f"; {name} peaked at {float(peaks.max()):.3g}"
    return Finding(
        "entropy_collapse",
        "error",
        f"entropy < {bound:.3g} ({th.collapsed_entropy_fraction:.0%} of "
        f"log({run.spec.action_dim})){_where(run, ev)} while the returns are not at a "
        f"plateau{spike}: the policy became deterministic, so its gradients vanish",
        ev,
        "lower learning_rate (too large steps saturate the policy's softmax), set target_kl "
        "(e.g. 0.015), keep max_grad_norm set; raise ent_coef to keep some exploration",
    )


def _spike_severity(cond, hit, th) -> str:
    return "error" if (_fraction(cond)[hit] >= th.sustain_fraction).any() else "warning"


def _kl_explosion(run: _Run) -> Finding | None:
    th, cfg = run.th, run.cfg
    name, kl = _kl(run)
    if kl is None:
        return None
    bound = th.kl_max
    if cfg is not None and cfg.target_kl is not None:
        bound = min(bound, th.kl_target_multiple * float(cfg.target_kl))
    cond = kl > bound
    hit = _held(cond, th.kl_spike_fraction, th)
    if not hit.any():
        return None
    ev = _evidence(run, name, bound, cond, kl, hit)
    return Finding(
        "kl_explosion",
        _spike_severity(cond, hit, th),
        f"{name} > {bound:g}{_where(run, ev)}: each update moves the policy far outside the "
        "trust region",
        ev,
        "set target_kl (e.g. 0.015) or lower it, lower learning_rate and update_epochs; with "
        "adv_norm='none' switch to adv_norm='batch'",
    )


def _clip_saturation(run: _Run) -> Finding | None:
    th = run.th
    clip = run.get("clip_fraction")
    if clip is None:
        return None
    cond = clip > th.clip_fraction_max
    hit = _held(cond, th.clip_spike_fraction, th)
    if not hit.any():
        return None
    ev = _evidence(run, "clip_fraction", th.clip_fraction_max, cond, clip, hit)
    return Finding(
        "clip_saturation",
        _spike_severity(cond, hit, th),
        f"clip_fraction > {th.clip_fraction_max:g}{_where(run, ev)}: most samples fall "
        "outside the clip range, so their gradient is zero",
        ev,
        "lower learning_rate or update_epochs, set target_kl, normalize advantages "
        "(adv_norm='batch'); or raise clip_eps / set adaptive_clip=True",
    )


def _ratio_overflow(run: _Run) -> Finding | None:
    bad = run.get("nonfinite_ratio_count", warmup=True)
    if bad is not None and (bad > 0).any():
        hit = (bad > 0).any(axis=1)
        ev = _evidence(run, "nonfinite_ratio_count", 0, bad > 0, bad, hit, run.lo)
        return Finding(
            "ratio_overflow",
            "error",
            f"non-finite probability ratios{_where(run, ev, run.lo)}",
            ev,
            _RATIO_SUGGESTION,
        )
    return _extreme_ratios(run)


_RATIO_SUGGESTION = (
    "keep log_ratio_clip set (10.0), lower learning_rate or update_epochs, set target_kl"
)


def _extreme_ratios(run: _Run) -> Finding | None:
    th = run.th
    parts = {
        "ratio_max": lambda x: x > th.ratio_max,
        "ratio_min": lambda x: x < th.ratio_min,
        "log_ratio_clamped_fraction": lambda x: x > 0,
    }
    conds = {k: f(run.get(k)) for k, f in parts.items() if run.get(k) is not None}
    if not conds:
        return None
    cond = np.logical_or.reduce(list(conds.values()))
    hit = _held(cond, th.ratio_spike_fraction, th)
    if not hit.any():
        return None
    name = "ratio_max" if "ratio_max" in conds else next(iter(conds))
    thr = {"ratio_max": th.ratio_max, "ratio_min": th.ratio_min, "log_ratio_clamped": 0}
    ev = _evidence(run, tuple(conds), thr, cond, run.get(name), hit)
    return Finding(
        "ratio_overflow",
        "warning",
        f"extreme probability ratios (max > {th.ratio_max:g}, min < {th.ratio_min:g} or "
        f"clamped log-ratios){_where(run, ev)}",
        ev,
        _RATIO_SUGGESTION,
    )


def _reward_scale(run: _Run) -> np.ndarray | None:
    """[R, 1] per-step reward magnitude, median |episode_return| / episode_length."""
    ret, length = run.get("episode_return"), run.get("episode_length")
    if ret is None or length is None:
        return None
    with np.errstate(all="ignore"):
        per_step = np.abs(ret) / np.maximum(length, 1.0)
    return _median(np.where(length > 0, per_step, np.nan))[:, None]


def _advantage_scale(run: _Run) -> Finding | None:
    th, cfg = run.th, run.cfg
    adv = run.get("adv_std")
    if adv is None:
        return None
    bound = np.full((adv.shape[0], 1), th.adv_std_max)
    scale = _reward_scale(run)
    if scale is not None:
        bound = np.maximum(bound, np.nan_to_num(th.adv_std_reward_multiple * scale))
    cond = adv > bound
    hit = _held(cond, th.sustain_fraction, th)
    if not hit.any():
        return None
    off = cfg is not None and cfg.adv_norm == "none"
    ev = _evidence(run, "adv_std", th.adv_std_max, cond, adv, hit)
    ev["reward_scale"] = None if scale is None else [float(s) for s in scale[hit, 0]]
    norm = "with adv_norm='none'" if off else "(normalized before the loss)"
    return Finding(
        "advantage_scale",
        "error" if off else "warning",
        f"raw adv_std > {th.adv_std_max:g} and > {th.adv_std_reward_multiple:g}x the "
        f"per-step reward{_where(run, ev)} {norm}: the critic's errors dominate the "
        "advantages",
        ev,
        "set adv_norm='batch' (with adv_clip=10.0), normalize_reward=True and "
        "normalize_value_targets=True; raise critic_learning_rate if the critic lags",
    )


def _bc_dominates(run: _Run) -> Finding | None:
    th, cfg = run.th, run.cfg
    ratio = run.get("bc_ppo_ratio")
    if ratio is None or (cfg is not None and cfg.bc_coef is None):
        return None
    bound = th.bc_ratio_default if cfg is None else float(cfg.max_bc_ratio)
    cond = ratio > bound
    hit = _held(cond, th.sustain_fraction, th)
    if not hit.any():
        return None
    ev = _evidence(run, "bc_ppo_ratio", bound, cond, ratio, hit)
    return Finding(
        "bc_dominates",
        "warning",
        f"bc_ppo_ratio > {bound:g}{_where(run, ev)}: behaviour cloning outweighs the PPO loss",
        ev,
        "lower bc_coef or set adaptive_bc=True (raise max_bc_ratio only if BC should lead)",
    )


def _theil_sen_slope(y: np.ndarray, max_points: int = 200) -> float:
    """Median of pairwise slopes (robust to outliers), on at most `max_points` points."""
    idx = np.unique(np.linspace(0, len(y) - 1, min(len(y), max_points)).astype(int))
    x, y = idx.astype(np.float64), y[idx]
    i, j = np.triu_indices(len(x), 1)
    slopes = (y[j] - y[i]) / (x[j] - x[i])
    slopes = slopes[np.isfinite(slopes)]
    return float(np.median(slopes)) if slopes.size else 0.0


def _returns_declining(run: _Run) -> Finding | None:
    th = run.th
    ret = run.get("episode_return")
    if ret is None or ret.shape[1] < th.min_trend_updates:
        return None
    q = ret.shape[1] // 4
    first, last = _median(ret[:, :q]), _median(ret[:, -q:])
    spread = _spread(ret)
    slope = np.array([_theil_sen_slope(r) for r in ret]) * (ret.shape[1] - 1)
    drop = first - last
    need = np.maximum(
        th.decline_spread_fraction * spread,
        th.decline_level_fraction * np.maximum(np.abs(first), spread),
    )
    hit = (drop >= need) & (-slope >= th.decline_spread_fraction * spread) & (spread > 0)
    if not hit.any():
        return None
    rows = np.flatnonzero(hit)
    per = [[float(first[r]), float(last[r])] for r in rows]
    quarters = [run.start, run.start + q - 1, run.hi - q, run.hi - 1]
    single = run.batch_shape == ()
    ev = {
        "metric": "episode_return",
        "threshold": {"decline_spread_fraction": th.decline_spread_fraction},
        "updates": quarters if single else [quarters] * len(rows),
        "values": per[0] if single else per,
        "fraction": None,
        "count": None,
        "seeds": _seed_ids(run, rows),
    }
    seeds = "" if single else f" (seeds {ev['seeds']})"
    return Finding(
        "returns_declining",
        "error",
        f"episode_return fell from a first-quarter median of {per[0][0]:.4g} to "
        f"{per[0][1]:.4g} in the last quarter of updates {run.start}–{run.hi - 1}{seeds}",
        ev,
        "lower learning_rate (or keep anneal_lr=True), set target_kl, lower update_epochs; "
        "see the other findings for the cause",
    )


def _nonfinite(run: _Run) -> Finding | None:
    conds, values = {}, {}
    grads = run.get("nonfinite_grad_count", warmup=True)
    if grads is not None:
        # cumulative count: the previous update's value (0 at the run's start) is the base
        history = run.full["nonfinite_grad_count"]
        base = history[:, run.lo - 1 : run.lo] if run.lo > 0 else np.zeros_like(grads[:, :1])
        steps = np.diff(np.concatenate([base, grads], axis=1), axis=1)
        conds["nonfinite_grad_count"], values["nonfinite_grad_count"] = steps > 0, steps
    for name in ("nonfinite_env_count", "nonfinite_ratio_count"):
        x = run.get(name, warmup=True)
        if x is not None:
            conds[name], values[name] = x > 0, x
    conds = {k: c for k, c in conds.items() if c.any()}
    if not conds:
        return None
    cond = np.logical_or.reduce(list(conds.values()))
    events = sum(np.where(conds[k], values[k], 0.0) for k in conds)  # new non-finite values
    ev = _evidence(run, tuple(conds), 0, cond, events, cond.any(axis=1), run.lo)
    ev["totals"] = {k: int(c.sum()) for k, c in conds.items()}
    only_env = set(conds) == {"nonfinite_env_count"}
    return Finding(
        "nonfinite",
        "warning" if only_env else "error",
        f"non-finite values ({', '.join(conds)}){_where(run, ev, run.lo)}",
        ev,
        "lower learning_rate, keep log_ratio_clip set, set normalize_obs=True and "
        "normalize_reward=True; non-finite env values come from the environment itself",
    )


_CHECKS = (
    _frozen_policy,
    _value_collapse,
    _random_policy,
    _entropy_collapse,
    _kl_explosion,
    _clip_saturation,
    _ratio_overflow,
    _advantage_scale,
    _bc_dominates,
    _returns_declining,
    _nonfinite,
)


def health_check(
    metrics: Mapping[str, Any],
    cfg=None,
    *,
    window=None,
    thresholds: Thresholds = THRESHOLDS,
) -> list[Finding]:
    """Findings about a run's health, read from its per-update metrics.

    Codes: `frozen_policy` (approx_kl ~ 0 and clip_fraction ~ 0, sustained, while the
    learning rate is still active), `value_collapse` (explained_variance < −1 sustained),
    `random_policy` (entropy stays near its maximum log(num_actions) for discrete actions,
    else near the run's initial entropy), `entropy_collapse` (a discrete policy's entropy
    below 1% of log(num_actions), sustained: deterministic; updates where it holds do not
    count as `frozen_policy`), `kl_explosion` (approx_kl > 1, or > 10·target_kl),
    `clip_saturation` (clip_fraction > 0.5), `ratio_overflow` (non-finite ratios: error;
    extreme ratio_max / ratio_min or clamped log-ratios: warning), `advantage_scale` (raw
    adv_std > 100 and > 10× the per-step reward: error with adv_norm="none", else warning),
    `bc_dominates` (bc_ppo_ratio > max_bc_ratio sustained), `returns_declining` (the last
    quarter's median return is below the first quarter's by a quarter of the spread, and a
    robust Theil–Sen slope agrees), `nonfinite` (nonfinite_grad_count rising,
    nonfinite_env_count or nonfinite_ratio_count > 0). The first four are not reported for
    seeds whose returns are at a converged plateau (see the module docstring). A metric that
    is absent skips its checks.

    Args:
      metrics: name -> array, [num_updates] for one run or [num_seeds, num_updates] for a
        seed batch (more leading dims are seen as a flattened batch). A seed batch gives one
        finding per code, naming the affected seeds in `evidence["seeds"]`.
      cfg: the run's `PPOConfig` (optional): gives the action space (random_policy),
        target_kl, adv_norm, bc_coef / max_bc_ratio, the env's step limit and the run's
        length (num_updates) for the warm-up.
      window: (start, stop) or a slice of update indices to analyse; metrics are the whole
        history so far, so update indices in the evidence are absolute and the warm-up is
        counted from the run's start. Passing a slice of the metrics instead treats its first
        entry as update 0.
      thresholds: the numbers that decide a finding (default `THRESHOLDS`).

    Returns:
      the findings, errors first, in a fixed code order; [] for a healthy run.

    Example:
      >>> import jax, jppo
      >>> cfg = jppo.PPOConfig()
      >>> out = jppo.train(cfg, jax.random.key(0))
      >>> for finding in jppo.health_check(out.metrics, cfg):
      ...     print(finding)
    """
    run = _make_run(metrics, cfg, window, thresholds)
    if run is None or run.hi <= run.lo:
        return []
    findings = [f for f in (check(run) for check in _CHECKS) if f is not None]
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity), reverse=True)
