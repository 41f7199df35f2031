"""Population-based training against a sweep of the same members, on two tasks.

For each task, P members start with learning rates spread log-uniformly around the preset's
(from lr/spread to lr*spread) and member p's seed `jppo.pbt.member_keys(key(0), P)[0][p]`.
PBT (`jppo.pbt.train_pbt`, `--intervals` exploit intervals over the run) is compared with
the same P (seed, learning rate) members trained independently — a sweep, one vmapped
program — with the same per-member budget, so both spend P x total_timesteps env steps.
Final return = mean episode return of the last 5 % of updates; "PBT best" is the member
`train_pbt` reports as best, the sweep's best and median are over its members. With
`--eval-episodes`, the greedy policies of the PBT best and the sweep best are also
evaluated (`jppo.evaluate`).

Tasks: `pendulum` (the Pendulum-v1 preset; explores learning_rate and clip_eps, its
ent_coef being 0) and `cartpole-masked` (`PPOConfig.preset("CartPole-masked",
normalize_obs=True)`, the LSTM on the POMDP; explores learning_rate and ent_coef).
Writes benchmarks/results/pbt.{md,png} and the `pbt-<backend>` section of RESULTS.md.

    python benchmarks/pbt.py                                              # full run
    python benchmarks/pbt.py --total-timesteps 20000 --population 4 \\
        --no-write --results-dir /tmp/pbt                                 # smoke test
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from common import header, markdown_table, write_section  # noqa: E402

import jppo  # noqa: E402
from jppo.pbt import PBTConfig, member_keys, train_pbt  # noqa: E402
from jppo.sweep import check_values, stack_hyperparams  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TAIL = 0.05  # final return = mean over the last 5 % of updates
TASKS = {
    "pendulum": ("Pendulum-v1", dict(), ("learning_rate", "clip_eps")),
    "cartpole-masked": ("CartPole-masked", dict(normalize_obs=True), ("learning_rate", "ent_coef")),
}


def final_returns(returns: np.ndarray) -> np.ndarray:
    """[P, U] -> [P]: mean of the last TAIL of updates."""
    tail = max(1, int(returns.shape[-1] * TAIL))
    return returns[..., -tail:].mean(axis=-1)


def task_setup(name: str, args):
    preset, overrides, explore = TASKS[name]
    if args.total_timesteps:
        overrides = {**overrides, "total_timesteps": args.total_timesteps}
    cfg = jppo.PPOConfig.preset(preset, **overrides)
    interval = max(1, cfg.num_updates // args.intervals)
    pbt_cfg = PBTConfig(population_size=args.population, interval=interval, explore=explore)
    spread = args.lr_spread
    lrs = np.geomspace(cfg.learning_rate / spread, cfg.learning_rate * spread, args.population)
    return cfg, pbt_cfg, lrs


def run_task(name: str, args) -> dict:
    cfg, pbt_cfg, lrs = task_setup(name, args)
    key = jax.random.key(args.seed)
    start = time.perf_counter()
    pbt_out = jax.block_until_ready(train_pbt(cfg, pbt_cfg, key, learning_rate=lrs))
    pbt_wall = time.perf_counter() - start

    # The sweep: the same members, trained independently.
    check_values(cfg, {"learning_rate": lrs}, "benchmark")
    hps = stack_hyperparams(cfg, args.population, learning_rate=lrs)
    keys, _ = member_keys(key, args.population)
    start = time.perf_counter()
    sweep_out = jax.block_until_ready(jax.jit(jax.vmap(jppo.make_train(cfg)))(keys, hps))
    sweep_wall = time.perf_counter() - start

    pbt_returns = np.asarray(pbt_out.metrics["episode_return"])
    sweep_returns = np.asarray(sweep_out.metrics["episode_return"])
    sweep_final = final_returns(sweep_returns)
    result = dict(
        name=name,
        cfg=cfg,
        pbt_cfg=pbt_cfg,
        lrs=lrs,
        timesteps=np.asarray(pbt_out.metrics["timesteps"][0]),
        # Returns are only defined once an episode has ended (Pendulum: after 200 steps).
        started=np.cumsum(np.asarray(sweep_out.metrics["episodes_completed"]).min(0)) > 0,
        pbt_returns=pbt_returns,
        sweep_returns=sweep_returns,
        best_index=int(pbt_out.best_index),
        pbt_final=final_returns(pbt_returns),
        sweep_final=sweep_final,
        history={k: np.asarray(v) for k, v in pbt_out.hyperparams.items()},
        copies=int((np.asarray(pbt_out.lineage) != np.arange(args.population)).sum()),
        walls=(pbt_wall, sweep_wall),
    )
    if args.eval_episodes:
        k_eval = jax.random.key(args.seed + 1)
        sweep_best = jax.tree.map(lambda x: x[int(np.argmax(sweep_final))], sweep_out.state)
        evaluations = [
            jppo.evaluate(cfg, state, k_eval, num_episodes=args.eval_episodes)
            for state in (pbt_out.best, sweep_best)
        ]
        result["eval"] = tuple(float(np.mean(r)) for r in evaluations)
    return result


def table(results, args) -> str:
    head = ["task", "PBT best", "sweep best", "sweep median", "PBT median", "copies"]
    if args.eval_episodes:
        head += ["PBT best (greedy eval)", "sweep best (greedy eval)"]
    head += ["wall s PBT / sweep"]
    rows = []
    for r in results:
        row = [
            r["cfg"].env_name + (" (LSTM)" if r["cfg"].network == "lstm" else ""),
            f"{r['pbt_final'][r['best_index']]:.1f}",
            f"{r['sweep_final'].max():.1f}",
            f"{np.median(r['sweep_final']):.1f}",
            f"{np.median(r['pbt_final']):.1f}",
            str(r["copies"]),
        ]
        if args.eval_episodes:
            row += [f"{r['eval'][0]:.1f}", f"{r['eval'][1]:.1f}"]
        row.append(f"{r['walls'][0]:.0f} / {r['walls'][1]:.0f}")
        rows.append(row)
    return markdown_table(head, rows)


def describe(results, args) -> str:
    lines = []
    for r in results:
        cfg, p = r["cfg"], r["pbt_cfg"]
        lines.append(
            f"- {cfg.env_name}: {cfg.total_timesteps:,} steps per member, {cfg.num_updates} "
            f"updates of {cfg.num_envs} envs x {cfg.num_steps} steps; P = {p.population_size}, "
            f"interval {p.interval} updates, exploit fraction {p.exploit_fraction}, factors "
            f"{p.perturb_factors}, explore {', '.join(p.explore)} (bounds "
            + ", ".join(f"{k} {v}" for k, v in p.bounds.items())
            + f"); initial learning rates {', '.join(f'{x:.2g}' for x in r['lrs'])}."
        )
    return "\n".join(lines)


def plot(results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, len(results), figsize=(6 * len(results), 10), squeeze=False)
    for col, r in enumerate(results):
        t, best, ok = r["timesteps"], r["best_index"], r["started"]
        ax = axes[0, col]
        ax.plot(t[ok], r["pbt_returns"][best][ok], label=f"PBT best (member {best})", lw=2)
        ax.plot(t[ok], r["sweep_returns"][np.argmax(r["sweep_final"])][ok], label="sweep best")
        ax.plot(t[ok], np.median(r["sweep_returns"], axis=0)[ok], label="sweep median", ls="--")
        ax.set(title=r["cfg"].env_name, xlabel="env steps per member", ylabel="episode return")
        ax.legend()
        num_intervals = r["history"][r["pbt_cfg"].explore[0]].shape[1]
        starts = np.arange(num_intervals) * r["pbt_cfg"].interval * r["cfg"].batch_size
        edges = np.append(starts, t[-1])  # each value holds until the next interval starts
        for row, name in enumerate(r["pbt_cfg"].explore[:2], start=1):
            ax, h = axes[row, col], r["history"][name]
            for p in range(h.shape[0]):
                width = 2.5 if p == best else 0.8
                ax.step(edges, np.append(h[p], h[p, -1]), where="post", lw=width)
            ax.set(xlabel="env steps per member", ylabel=f"PBT {name} (bold: best)")
            if name.endswith("learning_rate"):
                ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--total-timesteps", type=int, default=None, help="per member (preset)")
    parser.add_argument("--intervals", type=int, default=20, help="exploit intervals per run")
    parser.add_argument("--lr-spread", type=float, default=10.0)
    parser.add_argument("--eval-episodes", type=int, default=32, help="0: no greedy eval")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--no-write", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args(argv)

    results = []
    for name in args.tasks:
        results.append(run_task(name, args))
        print(name, "done", flush=True)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    plot(results, args.results_dir / "pbt.png")
    text = (
        f"### PBT vs a sweep of the same members ({jax.default_backend()})\n\n{header()} "
        f"`benchmarks/pbt.py`: the same initial learning rates, seeds and per-member budget "
        f"for PBT and the sweep; final return = mean of the last 5 % of updates; copies = "
        f"exploits over the run.\n\n{describe(results, args)}\n\n{table(results, args)}\n\n"
        f"![pbt](results/pbt.png)\n"
    )
    (args.results_dir / "pbt.md").write_text(text)
    print(text)
    if not args.no_write:
        write_section(f"pbt-{jax.default_backend()}", text)


if __name__ == "__main__":
    main()
