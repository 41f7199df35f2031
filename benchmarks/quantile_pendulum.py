"""Pendulum-v1 preset: the quantile critic's final return vs the scalar critic's.

Both run the preset (1M steps, 4 seeds in one vmapped program each, the same keys); the final
return is the mean episode return of the last 5 % of updates over the seeds. The check is
|quantile − scalar| ≤ 10 % of |scalar|. Too slow for CI on 2 CPU cores (minutes), hence a
benchmark script rather than a test.

    python benchmarks/quantile_pendulum.py               # writes benchmarks/RESULTS.md
    python benchmarks/quantile_pendulum.py --seeds 8 --no-write
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


def run(critic: str, seeds: int, key: int):
    """(per-seed final returns [seeds], wall seconds incl. compile) for one critic."""
    cfg = jppo.PPOConfig.preset("Pendulum-v1", critic=critic)
    start = time.perf_counter()
    out = jppo.train_seeds(cfg, jax.random.split(jax.random.key(key), seeds))
    returns = np.asarray(jax.device_get(out.metrics["episode_return"]))
    wall = time.perf_counter() - start
    tail = max(1, int(returns.shape[-1] * 0.05))
    return returns[:, -tail:].mean(axis=1), wall


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--key", type=int, default=0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    finals, rows = {}, []
    for critic in ("scalar", "quantile"):
        per_seed, wall = run(critic, args.seeds, args.key)
        finals[critic] = float(per_seed.mean())
        rows.append(
            (
                critic,
                f"{finals[critic]:.1f}",
                ", ".join(f"{x:.1f}" for x in per_seed),
                f"{wall:.0f}",
            )
        )
        print(
            f"{critic}: final {finals[critic]:.1f} per seed {np.round(per_seed, 1)} "
            f"({wall:.0f} s incl. compile)",
            flush=True,
        )
    gap = abs(finals["quantile"] - finals["scalar"]) / abs(finals["scalar"])
    verdict = "PASS" if gap <= 0.10 else "FAIL"
    table = markdown_table(("critic", "final return (mean)", "per seed", "wall s"), rows)
    text = (
        f"### Quantile vs scalar critic, Pendulum-v1 preset ({jax.default_backend()})\n\n"
        f"{header()} Preset settings (1M steps, normalize_reward), {args.seeds} seeds "
        f"vmapped (keys split from key({args.key})), final return = mean of the last 5 % "
        f"of updates; wall time includes compile.\n\n{table}\n\n"
        f"|quantile − scalar| / |scalar| = {100 * gap:.1f} % (≤ 10 % required): "
        f"**{verdict}**.\n"
    )
    print(text)
    if not args.no_write:
        write_section(f"quantile-pendulum-{jax.default_backend()}", text)
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
