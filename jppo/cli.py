"""Command line: `jppo train [--env NAME] [--total-timesteps N] [--seeds N] [--<field> V ...]`.

Every `PPOConfig` field is an option (underscores become dashes). Training runs as one
compiled program; the summary is printed after it returns (nothing prints from inside jit).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import sys
import time

from jppo.config import PPOConfig, field_help

_SKIP = {"env_params"}


def _parse_value(text: str):
    if text.lower() in ("none", "null"):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jppo", description="PPO in JAX, one compiled run.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a policy and print the final return")
    train.add_argument("--seeds", type=int, default=1, help="seeds trained in one program")
    train.add_argument("--seed", type=int, default=0, help="base PRNG seed")
    train.add_argument("--preset", default=None, help="start from PPOConfig.preset(NAME)")
    for field in dataclasses.fields(PPOConfig):
        if field.name in _SKIP:
            continue
        train.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            type=_parse_value,
            default=argparse.SUPPRESS,
            help=f"{field_help(field.name)} (default: {field.default!r})",
        )
    return parser


def run_train(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    import jppo

    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(PPOConfig)
        if hasattr(args, f.name)
    }
    if isinstance(overrides.get("hidden_sizes"), int):
        overrides["hidden_sizes"] = (overrides["hidden_sizes"],)
    try:
        cfg = PPOConfig.preset(args.preset, **overrides) if args.preset else PPOConfig(**overrides)
    except ValueError as err:
        print(f"jppo: {err}", file=sys.stderr)
        return 2
    print(
        f"jppo {jppo.__version__}: {cfg.env_name}, {args.seeds} seed(s), "
        f"{cfg.num_updates} updates of {cfg.num_envs}x{cfg.num_steps} steps "
        f"on {jax.default_backend()}",
        flush=True,
    )
    keys = jax.random.split(jax.random.key(args.seed), args.seeds)
    start = time.perf_counter()
    out = jppo.train_seeds(cfg, keys)
    returns = np.asarray(jax.block_until_ready(out.metrics["episode_return"]))
    elapsed = time.perf_counter() - start
    tail = max(1, returns.shape[1] // 20)
    final = returns[:, -tail:].mean(axis=1)
    steps = cfg.num_updates * cfg.batch_size * args.seeds
    print(f"done in {elapsed:.1f}s (compile included), {steps / elapsed:,.0f} steps/s")
    for i, r in enumerate(final):
        print(f"  seed {i}: final mean episode return {r:.1f}")
    print(f"final mean episode return: {final.mean():.1f}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "train":
        return run_train(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
