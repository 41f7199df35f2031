"""Training as a Python loop over compiled chunks of updates, writing a run directory.

This is what `jppo train` runs. Seeds are vmapped; each chunk of `chunk_updates` updates is
one compiled call, so between chunks the loop can show progress, evaluate, checkpoint and
stop, and a run resumed from its checkpoint continues exactly where it stopped (same
program, same state: the metrics are bit-identical on CPU).

The next chunk is dispatched before the previous one's metrics are brought to the host (JAX
dispatches asynchronously), so the host's work — progress, files, TensorBoard — overlaps
the device's; the loop waits only where it must decide something (evaluation, checkpoint,
the end).

A run directory holds:

- `config.json`: the config (the checkpoint holds it too); `run.json`: the loop's options;
- `metrics.csv` (one row per update and seed) and `metrics.json` (name -> [seed][update]);
- `evaluations.csv` (update, seed, mean deterministic return) when evaluating;
- `curves.png`: return and key diagnostics, mean ± std over seeds;
- `summary.txt`: final and evaluation returns, steps/s, compile time, health-check findings;
- `checkpoint/`: the latest two checkpoints (`jppo.load(run_dir)` reads the newest);
- `tensorboard/`: event files, with `tensorboard=True`.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import math
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jppo import checkpoint
from jppo.compile import jit
from jppo.config import PPOConfig
from jppo.diagnostics import health_check
from jppo.evaluation import make_evaluate
from jppo.plots import plot_runs
from jppo.trainer import make_trainer
from jppo.types import Hyperparams

# A chunk aims at this share of the run, so progress moves in visible steps...
CHUNKS_PER_RUN = 20
# ...but a chunk is at least one update and at most this many env steps (all seeds).
MAX_CHUNK_STEPS = 1 << 18
# Without an explicit cadence, a checkpoint is written when this much time has passed.
CHECKPOINT_SECONDS = 600.0
# The final return averages the last 5 % of updates.
FINAL_FRACTION = 0.05


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How the loop runs (the config says what is trained)."""

    seeds: int = 1
    seed: int = 0
    chunk_updates: int | None = None  # None: chosen from the run's size
    eval_every: int | None = None  # updates between evaluations; None: only at the end
    eval_episodes: int = 16
    target_return: float | None = None  # stop once the mean evaluation return reaches it
    checkpoint_every: int | None = None  # updates; None: every CHECKPOINT_SECONDS and at end
    tensorboard: bool = False

    def __post_init__(self):
        for name in ("seeds", "eval_episodes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("chunk_updates", "eval_every", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        if self.target_return is not None and self.eval_every is None:
            raise ValueError("target_return needs eval_every (the return is checked then)")


def choose_chunk(cfg: PPOConfig, opts: RunOptions) -> int:
    """Updates per compiled chunk (see CHUNKS_PER_RUN, MAX_CHUNK_STEPS)."""
    if opts.chunk_updates is not None:
        chunk = opts.chunk_updates
    else:
        by_run = math.ceil(cfg.num_updates / CHUNKS_PER_RUN)
        by_steps = MAX_CHUNK_STEPS // (cfg.batch_size * opts.seeds)
        chunk = max(1, min(by_run, by_steps))
    for every in (opts.eval_every, opts.checkpoint_every):
        if every is not None:
            # Chunk boundaries must fall on every evaluation / checkpoint update.
            chunk = max(d for d in range(1, min(chunk, every) + 1) if every % d == 0)
    return max(1, min(chunk, cfg.num_updates))


def new_run_dir(cfg: PPOConfig, base: str = "runs") -> str:
    """A fresh directory `base/<env>-<UTC time>` (suffixed if it exists)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in cfg.env_name)
    path = os.path.join(base, f"{name}-{stamp}")
    candidate, n = path, 1
    while os.path.exists(candidate):
        n += 1
        candidate = f"{path}-{n}"
    return candidate


class ChunkPrograms:
    """The compiled pieces of a chunked run: init, one chunk, evaluation (vmapped over seeds)."""

    def __init__(self, cfg: PPOConfig, opts: RunOptions, chunk: int):
        self.cfg, self.chunk = cfg, chunk
        trainer = make_trainer(cfg)
        self.trainer = trainer
        key0 = jax.random.key(0)
        example = jax.eval_shape(trainer.init, key0)
        _, metrics_shape = jax.eval_shape(trainer.step, example)

        def skip(state):
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metrics_shape)
            return state, zeros

        def run_chunk(state, n_valid):
            # A fixed-length scan whose steps past `n_valid` pass the state through: the last,
            # shorter chunk reuses the same compiled program. `n_valid` is the same for every
            # seed, so under vmap this stays a real branch.
            def body(s, i):
                return jax.lax.cond(i < n_valid, trainer.step, skip, s)

            return jax.lax.scan(body, state, jnp.arange(chunk))

        self.init = jit(jax.vmap(trainer.init, in_axes=(0, None)))
        self._run = jit(jax.vmap(run_chunk, in_axes=(0, None)))
        self._compiled = None
        # Every run ends with a deterministic evaluation, so this is always compiled.
        self._evaluate = jit(jax.vmap(make_evaluate(cfg, opts.eval_episodes, trainer.setup)))
        self._compiled_eval = None

    def compile(self, state) -> float:
        """Compile the chunk and evaluation for `state`'s shapes (once); seconds taken."""
        if self._compiled is not None:
            return self.compile_s
        start = time.perf_counter()
        self._compiled = self._run.lower(state, np.int32(self.chunk)).compile()
        keys = jax.random.split(jax.random.key(0), np.shape(state.step)[0])
        learner = state.learner
        self._compiled_eval = self._evaluate.lower(
            learner.params, learner.norm.obs, learner.hyperparams, keys
        ).compile()
        self.compile_s = time.perf_counter() - start
        return self.compile_s

    def run(self, state, n: int):
        return self._compiled(state, np.int32(n))

    def evaluate(self, state, key) -> np.ndarray:
        """Mean deterministic return per seed, [num_seeds]."""
        keys = jax.random.split(key, np.shape(state.step)[0])
        learner = state.learner
        returns = self._compiled_eval(learner.params, learner.norm.obs, learner.hyperparams, keys)
        return np.asarray(returns).mean(axis=-1)


def _write_json(path: str, data: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=str)
    os.replace(tmp, path)


def load_run_dir(path: str) -> dict[str, np.ndarray]:
    """The metrics of a run directory as name -> [num_seeds, num_updates] arrays."""
    with open(os.path.join(path, "metrics.json")) as f:
        data = json.load(f)
    return {k: np.asarray(v) for k, v in data["metrics"].items()}


class Run:
    """One chunked training run writing `out_dir` (see the module doc).

    `Run(cfg, opts, out_dir, display).train()` starts fresh; `Run.resume(out_dir, display)`
    continues from the run directory's checkpoint with its saved config and options.
    """

    def __init__(
        self,
        cfg: PPOConfig,
        opts: RunOptions,
        out_dir: str,
        display,
        *,
        programs: ChunkPrograms | None = None,
        _state=None,
        _history=None,
    ):
        self.cfg, self.opts, self.dir, self.display = cfg, opts, out_dir, display
        self.chunk = choose_chunk(cfg, opts)
        # Compiled programs may be shared by runs of one config and options (benchmarks).
        self.programs = programs
        self.state = _state
        self.history: dict[str, list[np.ndarray]] = {}
        self.evals: list[tuple[int, np.ndarray]] = []
        if _history:
            eval_update = _history.pop("eval_update", None)
            eval_return = _history.pop("eval_return", None)
            self.history = {k: [np.asarray(v)] for k, v in _history.items()}
            if eval_update is not None:
                self.evals = [(int(u), r) for u, r in zip(eval_update[0], eval_return.T)]
        self.interrupted = False
        self.stopped_early = False
        self.compile_s = 0.0
        self.train_s = 0.0
        self.steps_this_session = 0
        self.writer = None

    @classmethod
    def resume(cls, out_dir: str, display) -> Run:
        with open(os.path.join(out_dir, "run.json")) as f:
            opts = RunOptions(**json.load(f)["options"])
        state, cfg, history = checkpoint.load(out_dir)
        return cls(cfg, opts, out_dir, display, _state=state, _history=history)

    # -- bookkeeping ----------------------------------------------------------------------

    def _step(self) -> int:
        return int(np.asarray(self.state.step).reshape(-1)[0])

    def _concat(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v, axis=1) for k, v in self.history.items()}

    def _consume(self, metrics, n: int) -> None:
        """Bring a chunk's metrics to the host (waits for it) and report them."""
        host = jax.device_get(metrics)
        chunk = {k: np.asarray(v)[:, :n].reshape(v.shape[0], n) for k, v in host.items()}
        for k, v in chunk.items():
            self.history.setdefault(k, []).append(v)
        if self.writer is not None:
            steps = chunk["timesteps"][0]
            for k, v in chunk.items():
                for j in range(n):
                    self.writer.add_scalar(k, float(np.mean(v[:, j])), int(steps[j]))
        return chunk

    def _save(self) -> None:
        history = self._concat()
        if self.evals:
            history["eval_update"] = np.tile(
                np.array([u for u, _ in self.evals], np.int64), (self.opts.seeds, 1)
            )
            history["eval_return"] = np.stack([r for _, r in self.evals], axis=1)
        checkpoint.save(os.path.join(self.dir, "checkpoint"), self.state, self.cfg, history)
        self._write_metrics()

    def _write_metrics(self) -> None:
        history = self._concat()
        if not history:
            return
        names = ["timesteps"] + sorted(k for k in history if k != "timesteps")
        seeds, updates = history["timesteps"].shape
        tmp = os.path.join(self.dir, "metrics.csv.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["update", "seed", *names])
            for u in range(updates):
                for s in range(seeds):
                    # Exact in Python; the compiled metric is a float (no int32 wrap).
                    steps = (u + 1) * self.cfg.batch_size
                    rest = (_fmt(history[k][s, u]) for k in names[1:])
                    w.writerow([u + 1, s, steps, *rest])
        os.replace(tmp, os.path.join(self.dir, "metrics.csv"))
        _write_json(
            os.path.join(self.dir, "metrics.json"),
            {"num_seeds": seeds, "metrics": {k: history[k].tolist() for k in names}},
        )
        if self.evals:
            tmp = os.path.join(self.dir, "evaluations.csv.tmp")
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["update", "seed", "mean_return"])
                for u, r in self.evals:
                    for s, value in enumerate(r):
                        w.writerow([u, s, _fmt(value)])
            os.replace(tmp, os.path.join(self.dir, "evaluations.csv"))

    # -- the loop -------------------------------------------------------------------------

    def _on_sigint(self, signum, frame):
        if self.interrupted:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.interrupted = True
        self.display.message(
            "interrupted: finishing the current chunk and saving (Ctrl-C again "
            "to quit without saving)"
        )

    def train(self) -> dict:
        """Run to the end (or the target return, or Ctrl-C); returns the summary dict."""
        cfg, opts = self.cfg, self.opts
        os.makedirs(self.dir, exist_ok=True)
        _write_json(os.path.join(self.dir, "config.json"), checkpoint.config_to_json(cfg))
        _write_json(
            os.path.join(self.dir, "run.json"),
            {
                "options": dataclasses.asdict(opts),
                "chunk_updates": self.chunk,
                "jax": jax.__version__,
                "backend": jax.default_backend(),
            },
        )
        if opts.tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                raise RuntimeError(
                    "--tensorboard needs tensorboardX: pip install 'jppo[tensorboard]'"
                ) from None

            self.writer = SummaryWriter(os.path.join(self.dir, "tensorboard"))
        programs = self.programs or ChunkPrograms(cfg, opts, self.chunk)
        if self.state is None:
            keys = jax.random.split(jax.random.key(opts.seed), opts.seeds)
            self.state = programs.init(keys, Hyperparams.from_config(cfg))
        total = cfg.num_updates
        start_step = self._step()
        from jppo import __version__

        self.display.begin(
            f"jppo {__version__}: {cfg.env_name}, {opts.seeds} seed(s), {total} updates of "
            f"{cfg.num_envs}x{cfg.num_steps} steps, {self.chunk} per chunk, on "
            f"{jax.default_backend()}; run directory {self.dir}",
            total,
            start_step,
        )
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            self.compile_s = programs.compile(self.state)
            self.display.compiled(self.compile_s)
            self._loop(programs, total)
        except BaseException:
            self.display.abort()
            raise
        finally:
            signal.signal(signal.SIGINT, previous)
        if self.interrupted:
            self._save()
            self.display.message(
                f"interrupted at update {self._step()}; checkpoint saved. Resume with: "
                f"jppo train --resume {self.dir}"
            )
        else:
            if not self.evals or self.evals[-1][0] != self._step():
                self._evaluate(programs)
            self._save()
        summary = self._summary()
        self._finish(summary)
        return summary

    def _evaluate(self, programs) -> float:
        step = self._step()
        key = jax.random.fold_in(jax.random.key(self.opts.seed), step)
        returns = programs.evaluate(self.state, key)
        self.evals.append((step, returns))
        self.display.message(f"evaluation at update {step}: mean return {returns.mean():.2f}")
        return float(returns.mean())

    def _loop(self, programs: ChunkPrograms, total: int) -> None:
        opts = self.opts
        last_save = time.monotonic()
        step = self._step()

        def dispatch(state, step):
            n = min(self.chunk, total - step)
            new_state, metrics = programs.run(state, n)
            return new_state, metrics, step + n

        def sync_at(boundary):
            due = boundary >= total
            if opts.eval_every is not None and boundary % opts.eval_every == 0:
                due = True
            if opts.checkpoint_every is not None and boundary % opts.checkpoint_every == 0:
                due = True
            return due or time.monotonic() - last_save > CHECKPOINT_SECONDS

        if step >= total:
            return
        begin = time.perf_counter()
        inflight = dispatch(self.state, step)
        while inflight is not None:
            new_state, metrics, boundary = inflight
            nxt = None
            if not sync_at(boundary) and not self.interrupted:
                nxt = dispatch(new_state, boundary)
            n = boundary - step
            chunk = self._consume(metrics, n)
            self.state, step = new_state, boundary
            self.steps_this_session += n * self.cfg.batch_size * opts.seeds
            self.train_s = time.perf_counter() - begin
            sps = self.steps_this_session / max(self.train_s, 1e-9)
            remaining = (total - step) * self.cfg.batch_size * opts.seeds
            self.display.advance(
                step,
                step * self.cfg.batch_size,
                sps,
                float(np.mean(chunk["episode_return"][:, -1])),
                remaining / sps if sps > 0 else float("nan"),
            )
            if nxt is None:
                if opts.eval_every is not None and step % opts.eval_every == 0:
                    mean = self._evaluate(programs)
                    if opts.target_return is not None and mean >= opts.target_return:
                        self.stopped_early = True
                        self.display.message(
                            f"target return {opts.target_return} reached at update {step}"
                        )
                        return
                if self.interrupted:
                    return
                if step < total:
                    self._save()
                    last_save = time.monotonic()
                    nxt = dispatch(self.state, step)
            inflight = nxt

    # -- the end ----------------------------------------------------------------------------

    def _summary(self) -> dict:
        history = self._concat()
        returns = history["episode_return"]
        tail = max(1, int(math.ceil(returns.shape[1] * FINAL_FRACTION)))
        final = returns[:, -tail:].mean(axis=1)
        findings = [str(f) for f in health_check(history, self.cfg)]
        summary = {
            "env": self.cfg.env_name,
            "seeds": self.opts.seeds,
            "updates": self._step(),
            "env_steps_per_seed": self._step() * self.cfg.batch_size,
            "final_return": float(final.mean()),
            "final_return_per_seed": [float(x) for x in final],
            "eval_return": None if not self.evals else float(self.evals[-1][1].mean()),
            "eval_return_per_seed": None
            if not self.evals
            else [float(x) for x in self.evals[-1][1]],
            "steps_per_second": self.steps_this_session / self.train_s if self.train_s else None,
            "compile_seconds": self.compile_s,
            "train_seconds": self.train_s,
            "interrupted": self.interrupted,
            "stopped_at_target": self.stopped_early,
            "findings": findings,
        }
        return summary

    def _finish(self, summary: dict) -> None:
        if self.writer is not None:
            self.writer.close()
        history = self._concat()
        plot_runs(
            [("", history)],
            os.path.join(self.dir, "curves.png"),
            title=f"{self.cfg.env_name}, {self.opts.seeds} seed(s)",
        )
        rows = summary_rows(summary)
        with open(os.path.join(self.dir, "summary.txt"), "w") as f:
            for key, value in rows:
                f.write(f"{key}: {value}\n")
            f.write("health check: " + ("no findings\n" if not summary["findings"] else "\n"))
            for finding in summary["findings"]:
                f.write(f"  {finding}\n")
        _write_json(os.path.join(self.dir, "summary.json"), summary)
        self.display.end(rows, summary["findings"])


def summary_rows(summary: dict) -> list[tuple[str, str]]:
    """The summary as (label, text) rows, for the terminal and summary.txt."""
    per_seed = ", ".join(f"{x:.2f}" for x in summary["final_return_per_seed"])
    rows = [
        ("env", summary["env"]),
        ("seeds", str(summary["seeds"])),
        ("updates", str(summary["updates"])),
        ("env steps per seed", f"{summary['env_steps_per_seed']:,}"),
        ("final return (mean of last 5% of updates)", f"{summary['final_return']:.2f}"),
        ("final return per seed", per_seed),
    ]
    if summary["eval_return"] is not None:
        per_seed = ", ".join(f"{x:.2f}" for x in summary["eval_return_per_seed"])
        rows.append(("evaluation return (deterministic)", f"{summary['eval_return']:.2f}"))
        rows.append(("evaluation return per seed", per_seed))
    sps = summary["steps_per_second"]
    rows += [
        ("steps/s (compile excluded)", "-" if sps is None else f"{sps:,.0f}"),
        ("compile time", f"{summary['compile_seconds']:.1f}s"),
        ("training time", f"{summary['train_seconds']:.1f}s"),
    ]
    if summary["interrupted"]:
        rows.append(("status", "interrupted (checkpoint saved)"))
    elif summary["stopped_at_target"]:
        rows.append(("status", "stopped at the target return"))
    return rows


def _fmt(x) -> str:
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.bool_):
        return str(int(x))
    return repr(float(x))
