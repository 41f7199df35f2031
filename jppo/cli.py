"""Command line: `jppo train`, `jppo bench`, `jppo eval`, `jppo plot` (also `python -m jppo`).

`jppo train [--preset NAME] [--config FILE] [--<field> VALUE ...] [--seeds N] [--out DIR]`
trains with every `PPOConfig` field available as an option (underscores become dashes; help
texts come from the config's field declarations) and writes a run directory (see
`jppo.runs`). Later sources win: preset, then the config file, then the flags.
`jppo train --resume DIR` continues an interrupted run exactly.

Errors in the command line or the config print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import json
import os
import sys
from pathlib import Path

from jppo.compile import jit
from jppo.config import PPOConfig, field_help

_SKIP = {"env_params"}  # not expressible on a command line
CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(PPOConfig) if f.name not in _SKIP)


class UsageError(Exception):
    """A bad command line or config: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (plus a close-match suggestion for unknown options).

    Abbreviated options are refused: with ~80 options a typo is too often some option's
    prefix (`--num-env` would silently mean `--num-envs`).
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        if message.startswith("unrecognized arguments:"):
            words = message.split(":", 1)[1].split()
            options = [o for a in self._actions for o in a.option_strings]
            for action in self._actions:  # unknown options of a subcommand surface here
                if isinstance(action, argparse._SubParsersAction):
                    for sub in action.choices.values():
                        options += [o for a in sub._actions for o in a.option_strings]
            for word in words:
                if word.startswith("--"):
                    match = difflib.get_close_matches(word.split("=")[0], options, n=1)
                    if match:
                        message += f" (did you mean {match[0]}?)"
                        break
        raise UsageError(f"{self.prog}: {message}")


def _parse_value(text: str):
    if text.lower() in ("none", "null"):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("config fields (PPOConfig; default in parentheses)")
    for name in CONFIG_FIELDS:
        default = PPOConfig.__dataclass_fields__[name].default
        group.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=_parse_value,
            default=argparse.SUPPRESS,
            metavar="V",
            help=f"{field_help(name)} (default: {default!r})",
        )


DEFAULT_COMPILE_CACHE = "~/.cache/jppo/xla"


def _use_compile_cache(choice: str | None) -> None:
    """Turn on JAX's persistent compilation cache for this process (before any compile).

    Compiling the training and evaluation programs takes seconds to tens of seconds on a
    CPU, and the same config structure compiles to the same programs: kept on disk, a
    second `jppo train` of it starts at once. JAX_COMPILATION_CACHE_DIR, when set, wins:
    jax reads it when it starts, and its cache, once open, keeps that directory.
    """
    import jax

    if choice == "off" or jax.config.jax_compilation_cache_dir:
        return
    path = Path(os.path.expanduser(choice or DEFAULT_COMPILE_CACHE))
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jppo", description="PPO in JAX: the whole run is compiled.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train, showing progress; writes a run directory")
    run = train.add_argument_group("run")
    run.add_argument("--preset", default=None, help="start from PPOConfig.preset(NAME)")
    run.add_argument("--config", default=None, metavar="FILE", help="JSON or YAML config fields")
    run.add_argument("--seeds", type=_positive_int, default=1, help="seeds, vmapped (default 1)")
    run.add_argument("--seed", type=int, default=0, help="base PRNG seed (default 0)")
    run.add_argument(
        "--out", default=None, metavar="DIR", help="run directory (default: new, under runs/)"
    )
    run.add_argument("--resume", default=None, metavar="DIR", help="continue the run in DIR")
    run.add_argument(
        "--eval-every",
        type=_positive_int,
        default=None,
        metavar="K",
        help="deterministic evaluation every K updates (default: at the end)",
    )
    run.add_argument(
        "--eval-episodes",
        type=_positive_int,
        default=16,
        metavar="N",
        help="episodes per seed in each evaluation (default 16)",
    )
    run.add_argument(
        "--target-return",
        type=float,
        default=None,
        metavar="R",
        help="stop once the mean evaluation return reaches R (needs --eval-every)",
    )
    run.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=None,
        metavar="K",
        help="checkpoint every K updates (default: every 10 minutes and at the end)",
    )
    run.add_argument(
        "--chunk-updates",
        type=_positive_int,
        default=None,
        metavar="K",
        help="updates per compiled chunk (default: about 1/20 of the run)",
    )
    run.add_argument(
        "--tensorboard",
        action="store_true",
        help="write TensorBoard scalars (mean over seeds) to DIR/tensorboard",
    )
    run.add_argument("--plain", action="store_true", help="plain progress lines even in a terminal")
    run.add_argument(
        "--compile-cache",
        default=None,
        metavar="DIR",
        help=f"persistent XLA compilation cache: a rerun of the same config structure loads "
        f"its programs instead of compiling them (default {DEFAULT_COMPILE_CACHE}; "
        f"$JAX_COMPILATION_CACHE_DIR, when set, wins; 'off' disables)",
    )
    _add_config_options(train)

    bench = sub.add_parser("bench", help="steps/s of compiled runs at several env counts")
    opts = bench.add_argument_group("bench")
    opts.add_argument("--preset", default=None, help="start from PPOConfig.preset(NAME)")
    opts.add_argument("--config", default=None, metavar="FILE", help="JSON or YAML config fields")
    opts.add_argument(
        "--num-envs-list",
        "--sizes",
        dest="sizes",
        default="4,64,512,2048",
        metavar="N,N,...",
        help="env counts to time (default 4,64,512,2048; --num-envs N times one)",
    )
    opts.add_argument("--seeds", type=_positive_int, default=1, help="seeds, vmapped")
    opts.add_argument(
        "--updates",
        type=_positive_int,
        default=None,
        help="updates per timed run (default: 32; on CPU fewer at large sizes)",
    )
    opts.add_argument("--repeats", type=_positive_int, default=3, help="timed calls (median)")
    _add_config_options(bench)

    ev = sub.add_parser("eval", help="evaluate the policy saved in a run directory")
    ev.add_argument("run_dir", metavar="RUN_DIR")
    ev.add_argument("--episodes", type=_positive_int, default=64, help="episodes per seed")
    ev.add_argument("--seed", type=int, default=0, help="evaluation PRNG seed")

    plot = sub.add_parser("plot", help="overlay the learning curves of run directories")
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    plot.add_argument(
        "-o",
        "--output",
        default=None,
        metavar="FILE",
        help="PNG path (default: RUN_DIR/curves.png for one run, else curves.png)",
    )
    return parser


def _read_config_file(path: str) -> dict:
    try:
        with open(path) as f:
            text = f.read()
    except OSError as err:
        raise UsageError(f"--config: cannot read {path!r}: {err.strerror}") from None
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as err:  # json and yaml raise their own error types
        first = str(err).splitlines()[0]
        raise UsageError(f"--config: {path!r} is not valid JSON/YAML: {first}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--config: {path!r} must hold a mapping of config fields")
    for name in data:
        if name not in CONFIG_FIELDS:
            match = difflib.get_close_matches(str(name), CONFIG_FIELDS, n=1)
            hint = f" (did you mean {match[0]!r}?)" if match else ""
            raise UsageError(f"--config: {path!r}: unknown config field {name!r}{hint}")
    return data


def config_from_args(args: argparse.Namespace) -> PPOConfig:
    """The config of a `train` command line: preset, then the config file, then the flags."""
    fields = _read_config_file(args.config) if args.config else {}
    fields.update({name: getattr(args, name) for name in CONFIG_FIELDS if hasattr(args, name)})
    if isinstance(fields.get("hidden_sizes"), int):
        fields["hidden_sizes"] = (fields["hidden_sizes"],)
    try:
        if args.preset:
            return PPOConfig.preset(args.preset, **fields)
        return PPOConfig(**fields)
    except (TypeError, ValueError) as err:
        raise UsageError(str(err).splitlines()[0]) from None


def run_train(args: argparse.Namespace) -> int:
    from jppo import runs
    from jppo.progress import make_display

    _use_compile_cache(args.compile_cache)
    display = make_display(False if args.plain else None)
    if args.resume:
        given = [n for n in CONFIG_FIELDS if hasattr(args, n)]
        if given or args.preset or args.config or args.out:
            names = (
                ", ".join("--" + n.replace("_", "-") for n in given) or "--preset/--config/--out"
            )
            raise UsageError(f"--resume continues the saved config and options; drop {names}")
        if not os.path.isfile(os.path.join(args.resume, "run.json")):
            raise UsageError(f"--resume: {args.resume!r} is not a jppo run directory")
        run = runs.Run.resume(args.resume, display)
    else:
        cfg = config_from_args(args)
        try:
            opts = runs.RunOptions(
                seeds=args.seeds,
                seed=args.seed,
                chunk_updates=args.chunk_updates,
                eval_every=args.eval_every,
                eval_episodes=args.eval_episodes,
                target_return=args.target_return,
                checkpoint_every=args.checkpoint_every,
                tensorboard=args.tensorboard,
            )
        except ValueError as err:
            raise UsageError(str(err)) from None
        if cfg.num_updates < 1:
            raise UsageError(
                f"total_timesteps={cfg.total_timesteps} is less than one update "
                f"(num_envs*num_steps = {cfg.batch_size})"
            )
        out = args.out or runs.new_run_dir(cfg)
        if os.path.exists(os.path.join(out, "run.json")):
            raise UsageError(
                f"--out: {out!r} already holds a run; use --resume {out} or another --out"
            )
        run = runs.Run(cfg, opts, out, display)
    summary = run.train()
    return 130 if summary["interrupted"] else 0


def run_bench(args: argparse.Namespace) -> int:
    import jax

    from jppo import bench

    if hasattr(args, "num_envs"):  # one size given as the config field
        sizes = [args.num_envs]
        del args.num_envs
    else:
        try:
            sizes = [int(n) for n in str(args.sizes).split(",") if n.strip()]
        except ValueError:
            raise UsageError(
                f"--sizes: expected comma-separated integers, got {args.sizes!r}"
            ) from None
    base = config_from_args(args)
    configs = []
    for n in sizes:
        try:
            configs.append(base.replace(num_envs=n))
        except ValueError as err:
            raise UsageError(str(err).splitlines()[0]) from None
    print(f"jppo bench on {jax.default_backend()}: {base.env_name}", flush=True)
    rows = []
    for cfg in configs:
        row = bench.measure(cfg, seeds=args.seeds, updates=args.updates, repeats=args.repeats)
        rows.append(row)
        print(
            f"num_envs={row['num_envs']}: {row['steps_per_second']:,.0f} steps/s "
            f"(compile {row['compile_seconds']:.1f}s)",
            flush=True,
        )
    print()
    print(bench.table(base, rows, args.repeats))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from jppo import checkpoint
    from jppo.evaluation import evaluate, make_evaluate

    try:
        state, cfg, _ = checkpoint.load(args.run_dir)
    except checkpoint.CheckpointError as err:
        raise UsageError(str(err)) from None
    key = jax.random.key(args.seed)
    if np.ndim(state.step) == 0:
        returns = np.asarray(evaluate(cfg, state, key, num_episodes=args.episodes))[None]
    else:  # a seed batch: one evaluation per seed, vmapped
        keys = jax.random.split(key, np.shape(state.step)[0])
        learner = state.learner
        batched = jit(jax.vmap(make_evaluate(cfg, args.episodes)))
        returns = np.asarray(batched(learner.params, learner.norm.obs, learner.hyperparams, keys))
    print(f"{cfg.env_name}, update {int(np.max(state.step))}, {args.episodes} episodes per seed")
    for i, r in enumerate(returns):
        print(f"  seed {i}: mean return {r.mean():.2f} (std {r.std():.2f})")
    print(f"mean return: {returns.mean():.2f}")
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from jppo.plots import plot_runs
    from jppo.runs import load_run_dir

    runs = []
    for path in args.run_dirs:
        try:
            runs.append((os.path.basename(os.path.normpath(path)), load_run_dir(path)))
        except (OSError, ValueError, KeyError) as err:
            raise UsageError(f"plot: cannot read metrics of {path!r}: {err}") from None
    output = args.output
    if output is None:
        output = os.path.join(args.run_dirs[0], "curves.png") if len(runs) == 1 else "curves.png"
    plot_runs(runs, output)
    print(output)
    return 0


def main(argv=None) -> int:
    args = None
    try:
        args = build_parser().parse_args(argv)
        commands = {"train": run_train, "bench": run_bench, "eval": run_eval, "plot": run_plot}
        command = commands[args.command]
        return command(args)
    except UsageError as err:
        message = str(err)
        if not message.startswith("jppo"):
            message = f"jppo {getattr(args, 'command', '')}: {message}".replace("  ", " ")
        print(message, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
