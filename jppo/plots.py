"""Learning-curve figures: one run's return and key diagnostics, or several runs overlaid.

Each panel plots a metric against env steps: the mean over seeds as a line and, with more
than one seed, a band of ± one standard deviation across seeds. matplotlib's non-interactive
backend is used, so this works on machines without a display.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

# The metrics that say most about a PPO run, in panel order.
PANELS = (
    ("episode_return", "episode return"),
    ("approx_kl", "approx KL"),
    ("clip_fraction", "clip fraction"),
    ("entropy", "entropy"),
    ("explained_variance", "explained variance"),
    ("value_loss", "value loss"),
)


def _per_seed(x) -> np.ndarray:
    """[num_seeds, num_updates] from a [num_updates] or [num_seeds, num_updates] array."""
    x = np.asarray(x, np.float64)
    return x[None] if x.ndim == 1 else x.reshape(-1, x.shape[-1])


def plot_runs(
    runs: Sequence[tuple[str, Mapping[str, np.ndarray]]],
    path: str,
    *,
    title: str | None = None,
) -> str:
    """Write a PNG of `runs` [(label, metrics)] overlaid, one panel per metric in `PANELS`.

    `metrics` maps names to [num_updates] or [num_seeds, num_updates] arrays and must hold
    `timesteps`; panels whose metric no run has are left out. Returns `path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, label) for k, label in PANELS if any(k in m for _, m in runs)]
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, metrics) in enumerate(runs):
        color = colors[i % len(colors)]
        steps = _per_seed(metrics["timesteps"])[0]
        for ax, (key, _) in zip(axes.flat, panels):
            if key not in metrics:
                continue
            values = _per_seed(metrics[key])
            if key == "episode_return" and "episodes_completed" in metrics:
                # Before a seed's first finished episode its return is a placeholder 0.
                started = np.cumsum(_per_seed(metrics["episodes_completed"]), axis=1) > 0
                values = np.where(started, values, np.nan)
            with warnings.catch_warnings():
                # Updates before any seed's first finished episode are all NaN: left blank.
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(values, axis=0)
                std = np.nanstd(values, axis=0)
            ax.plot(steps, mean, color=color, lw=1.5, label=label)
            if values.shape[0] > 1:
                ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2, lw=0)
    for ax, (_, label) in zip(axes.flat, panels):
        ax.set_title(label)
        ax.set_xlabel("env steps")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    if len(runs) > 1 or runs[0][0]:
        axes.flat[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
