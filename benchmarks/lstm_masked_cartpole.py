"""The recurrent policy on the POMDP: LSTM vs MLP on CartPole-masked.

CartPole with the velocities hidden (observation [x, theta]). The `CartPole-masked` preset
(LSTM) and the MLP with the same settings and budget (1M steps), 4 seeds vmapped in one
program each; final return = mean of the last 5 % of updates over the seeds. The LSTM runs
with exact re-evaluation (`lstm_chunk_len=None`) and with the chunk lengths given (the
preset's is 16).
Pass: LSTM >= 400 and >= 2x the MLP.

    python benchmarks/lstm_masked_cartpole.py                 # writes RESULTS.md
    python benchmarks/lstm_masked_cartpole.py --chunks 16 8
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


def run(cfg: jppo.PPOConfig, seeds: int):
    start = time.perf_counter()
    out = jppo.train_seeds(cfg, jax.random.split(jax.random.key(0), seeds))
    returns = np.asarray(out.metrics["episode_return"])  # [seeds, updates]
    wall = time.perf_counter() - start
    tail = max(1, returns.shape[1] // 20)
    per_seed = returns[:, -tail:].mean(axis=1)
    at_100k = returns[:, max(0, 100_000 // cfg.batch_size - 1)].mean()
    return per_seed, at_100k, wall


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, nargs="*", default=[16, 8])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    lstm = jppo.PPOConfig.preset("CartPole-masked")
    settings = [("MLP", lstm.replace(network="mlp", lstm_chunk_len=None))]
    settings += [("LSTM, exact", lstm.replace(lstm_chunk_len=None))]
    settings += [(f"LSTM, chunk={c}", lstm.replace(lstm_chunk_len=c)) for c in args.chunks]
    rows, finals = [], {}
    for name, cfg in settings:
        per_seed, at_100k, wall = run(cfg, args.seeds)
        finals[name] = per_seed.mean()
        rows.append(
            (
                name,
                f"{per_seed.mean():.1f}",
                ", ".join(f"{r:.1f}" for r in per_seed),
                f"{at_100k:.1f}",
                f"{wall:.0f}",
            )
        )
        print(name, rows[-1], flush=True)
    mlp = finals["MLP"]
    verdicts = [
        f"- {name}: {value:.1f} vs MLP {mlp:.1f} ({value / max(mlp, 1e-9):.1f}x): "
        f"**{'PASS' if value >= 400 and value >= 2 * mlp else 'FAIL'}**"
        for name, value in finals.items()
        if name != "MLP"
    ]
    table = markdown_table(
        (
            "policy",
            "final return (mean)",
            "per seed",
            "return at 100k steps",
            "wall s (incl. compile)",
        ),
        rows,
    )
    text = (
        f"### LSTM vs MLP on CartPole-masked ({jax.default_backend()})\n\n{header()} "
        f'`PPOConfig.preset("CartPole-masked")` ({lstm.total_timesteps:,} steps, '
        f"{lstm.num_envs} envs x {lstm.num_steps} steps, {lstm.update_epochs} epochs x "
        f"{lstm.num_minibatches} minibatches, lr {lstm.learning_rate}, chunk "
        f"{lstm.lstm_chunk_len}); the MLP with the "
        f"same settings; {args.seeds} seeds vmapped (keys split from key(0)); final return "
        f"= mean of the last 5 % of updates. Pass: >= 400 and >= 2x the MLP.\n\n{table}\n\n"
        + "\n".join(verdicts)
        + "\n"
    )
    print(text)
    if not args.no_write:
        write_section(f"lstm-masked-cartpole-{jax.default_backend()}", text)


if __name__ == "__main__":
    main()
