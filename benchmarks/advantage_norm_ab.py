"""A/B test of the advantage-normalization modes.

Every `adv_norm` mode x `--seeds` seeds, one vmapped program (`jppo.train_seeds`) per mode, on
CartPole-v1 (default config) and Pendulum-v1 (its preset); then the kl_explosion regime —
CartPole with rewards r·1000 − 500 (`jppo.envs.wrappers.ScaledReward`) — for "batch" vs
"none", with value-target normalization on (the default) and off. Writes under
`benchmarks/results/`: a markdown table (final return mean ± std over seeds, mean approx_kl,
clip_fraction, ...), the mean/std learning curves (.npz) and a PNG of them, and a summary
section in benchmarks/RESULTS.md.

    python benchmarks/advantage_norm_ab.py                          # full budgets (~1 h, CPU)
    python benchmarks/advantage_norm_ab.py --seeds 2 --cartpole-steps 8192 \\
        --pendulum-steps 8192 --scaled-steps 8192 --no-write        # smoke test
    python benchmarks/advantage_norm_ab.py --report-only            # rebuild from saved
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gymnax  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from common import header, markdown_table, write_section  # noqa: E402

import jppo  # noqa: E402
from jppo.envs.wrappers import ScaledReward  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MODES = ("batch", "minibatch", "group", "robust", "scale", "none")
SCALE, SHIFT = 1000.0, -500.0
TAIL = 0.05  # final return = mean over the last 5 % of updates


def _configs(args):
    """(panel, label, config, group count) of every run, in order."""
    runs = []
    cart = jppo.PPOConfig(total_timesteps=args.cartpole_steps)
    pend = jppo.PPOConfig.preset("Pendulum-v1", total_timesteps=args.pendulum_steps)
    for panel, base in (("CartPole-v1", cart), ("Pendulum-v1", pend)):
        if panel.split("-")[0].lower() not in args.envs:
            continue
        groups = max(2, base.num_envs // 4)
        for mode in MODES:
            cfg = base.replace(adv_norm=mode, num_adv_groups=groups if mode == "group" else 1)
            runs.append((panel, mode + (f" ({groups} groups)" if mode == "group" else ""), cfg))
    if "scaled" in args.envs:
        env = ScaledReward(gymnax.make("CartPole-v1")[0], SCALE, SHIFT)
        panel = f"CartPole-v1, reward x{SCALE:g}{SHIFT:+g}"
        for nvt in (True, False):
            for mode in ("batch", "none"):
                cfg = jppo.PPOConfig(
                    env=env,
                    total_timesteps=args.scaled_steps,
                    adv_norm=mode,
                    normalize_value_targets=nvt,
                )
                runs.append((panel, f"{mode}, value norm {'on' if nvt else 'off'}", cfg))
    return runs


def _original_units(metrics, cfg):
    """Episode returns in the unscaled env's units ((R − shift·L) / scale) where wrapped."""
    ret = np.asarray(metrics["episode_return"], np.float64)
    if isinstance(cfg.env, ScaledReward):
        length = np.asarray(metrics["episode_length"], np.float64)
        ret = (ret - cfg.env.shift * length) / cfg.env.scale
    return ret


def run_all(args, partial: Path):
    """Train every configuration; each finished run is saved to `partial` at once, and runs
    already there (same seeds and budgets) are skipped, so an interrupted sweep resumes."""
    keys = jax.random.split(jax.random.key(args.seed), args.seeds)
    done = json.loads(partial.read_text()) if partial.exists() else {}
    rows, curves = [], {}
    for panel, label, cfg in _configs(args):
        name = f"{panel}|{label}"
        tag = f"{args.seeds}|{args.seed}|{cfg.total_timesteps}"
        if name in done and done[name]["tag"] == tag:
            rows.append(done[name]["row"])
            curves.update({k: np.asarray(v) for k, v in done[name]["curves"].items()})
            continue
        start = time.perf_counter()
        metrics = jax.device_get(jppo.train_seeds(cfg, keys).metrics)
        seconds = time.perf_counter() - start
        ret = _original_units(metrics, cfg)
        tail = max(1, int(TAIL * ret.shape[-1]))
        final = ret[:, -tail:].mean(-1)  # [seeds]
        finite = all(np.all(np.isfinite(v)) for v in metrics.values())
        row = dict(
            panel=panel,
            label=label,
            final_mean=float(final.mean()),
            final_std=float(final.std()),
            final_min=float(final.min()),
            approx_kl=float(np.mean(metrics["approx_kl"])),
            approx_kl_max=float(np.max(metrics["approx_kl"])),
            clip_fraction=float(np.mean(metrics["clip_fraction"])),
            grad_norm=float(np.median(metrics["grad_norm"])),
            explained_variance=float(np.mean(metrics["explained_variance"][:, -tail:])),
            finite=finite,
            seconds=seconds,
            steps=cfg.num_updates * cfg.batch_size,
        )
        rows.append(row)
        run_curves = {
            name + "|t": np.asarray(metrics["timesteps"][0], np.float64),
            name + "|mean": ret.mean(0),
            name + "|std": ret.std(0),
        }
        curves.update(run_curves)
        done[name] = dict(tag=tag, row=row, curves={k: v.tolist() for k, v in run_curves.items()})
        partial.write_text(json.dumps(done))
        print(json.dumps(row), flush=True)
    return rows, curves


def _smooth(x, fraction=0.01):
    """Moving average over `fraction` of the points (edges averaged over what exists)."""
    window = max(1, int(len(x) * fraction))
    kernel = np.ones(window)
    return np.convolve(x, kernel, "same") / np.convolve(np.ones_like(x), kernel, "same")


def plot(curves, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys(k.split("|")[0] for k in curves))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        labels = list(dict.fromkeys(k.split("|")[1] for k in curves if k.startswith(panel + "|")))
        for label in labels:
            name = f"{panel}|{label}"
            t, mean, std = (curves[f"{name}|{s}"] for s in ("t", "mean", "std"))
            first = int(np.argmax((mean != 0) | (std != 0)))  # 0 until an episode has ended
            t, mean, std = t[first:], _smooth(mean[first:]), _smooth(std[first:])
            (line,) = ax.plot(t, mean, label=label, lw=1.4)
            ax.fill_between(t, mean - std, mean + std, color=line.get_color(), alpha=0.15, lw=0)
        ax.set_title(panel)
        ax.set_xlabel("env steps")
        ax.set_ylabel("episode return" + (" (original units)" if "reward" in panel else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(
        "Advantage normalization A/B: mean ± std over seeds (moving average over 1 % of updates)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(rows) -> str:
    """One line per env: the modes ranked by mean final return."""
    lines = []
    for panel in dict.fromkeys(r["panel"] for r in rows):
        ranked = sorted((r for r in rows if r["panel"] == panel), key=lambda r: -r["final_mean"])
        lines.append(
            f"- {panel}: " + " > ".join(f"{r['label']} {r['final_mean']:.1f}" for r in ranked)
        )
    return "Ranking by mean final return:\n" + "\n".join(lines)


def table(rows) -> str:
    out = []
    for r in rows:
        out.append(
            (
                r["panel"],
                r["label"],
                f"{r['final_mean']:.1f} ± {r['final_std']:.1f}",
                f"{r['final_min']:.1f}",
                f"{r['approx_kl']:.5f}",
                f"{r['approx_kl_max']:.4f}",
                f"{r['clip_fraction']:.4f}",
                f"{r['grad_norm']:.3g}",
                f"{r['explained_variance']:.2f}",
                "yes" if r["finite"] else "NO",
                f"{r['steps']:,}",
                f"{r['seconds']:.0f}",
            )
        )
    return markdown_table(
        (
            "env",
            "adv_norm",
            "final return (mean ± std)",
            "worst seed",
            "approx_kl (mean)",
            "approx_kl (max)",
            "clip_fraction",
            "grad_norm (median)",
            "expl. var. (final)",
            "finite",
            "steps/seed",
            "wall s",
        ),
        out,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="PRNG key of the seed batch")
    parser.add_argument(
        "--envs",
        nargs="+",
        default=["cartpole", "pendulum", "scaled"],
        choices=["cartpole", "pendulum", "scaled"],
    )
    parser.add_argument("--cartpole-steps", type=int, default=500_000)
    parser.add_argument("--pendulum-steps", type=int, default=1_000_000)
    parser.add_argument("--scaled-steps", type=int, default=500_000)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--no-write", action="store_true", help="leave RESULTS.md alone")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rebuild the PNG, table and RESULTS.md section from the saved "
        ".json/.npz (e.g. after editing advantage_norm_ab_notes.md)",
    )
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    npz, png = args.out / "advantage_norm_ab.npz", args.out / "advantage_norm_ab.png"
    saved = args.out / "advantage_norm_ab.json"
    if args.report_only:
        record = json.loads(saved.read_text())
        curves = dict(np.load(npz))
    else:
        rows, curves = run_all(args, args.out / "advantage_norm_ab.partial.json")
        steps = dict(
            cartpole=("CartPole", args.cartpole_steps),
            pendulum=("Pendulum", args.pendulum_steps),
            scaled=("scaled CartPole", args.scaled_steps),
        )
        budget = (
            f"{args.seeds} seeds (key {args.seed}) per mode, one vmapped program each; "
            "steps per seed: "
            + ", ".join(f"{steps[e][0]} {steps[e][1]:,}" for e in args.envs)
            + "."
        )
        record = dict(header=header(), budget=budget, rows=rows)
        np.savez_compressed(npz, **curves)
        saved.write_text(json.dumps(record, indent=1))
        (args.out / "advantage_norm_ab.partial.json").unlink(missing_ok=True)  # complete
    plot(curves, png)
    notes = args.out / "advantage_norm_ab_notes.md"  # hand-written reading of the numbers
    notes = notes.read_text().strip() + "\n\n" if notes.exists() else ""
    method = (
        f"Final return = mean of the last {TAIL:.0%} of updates per seed (original "
        "units for the scaled env); approx_kl (k3) and clip_fraction averaged over all "
        "updates and seeds; grad_norm = combined actor+critic norm before clipping "
        "(median over updates). Group mode: contiguous env blocks (2 on CartPole, 4 on "
        "Pendulum). Wall time includes compilation."
    )
    text = (
        f"### Advantage normalization A/B (`benchmarks/advantage_norm_ab.py`)\n\n"
        f"{record['header']}\n\n{record['budget']} {method}\n\n"
        f"{summary(record['rows'])}\n\n{notes}{table(record['rows'])}\n\n"
        f"![curves](results/{png.name})\n"
    )
    (args.out / "advantage_norm_ab.md").write_text(text.replace("](results/", "]("))
    print(text)
    if not args.no_write:
        write_section("advantage-norm-ab", text)


if __name__ == "__main__":
    main()
