"""Side-by-side steps/s of two source trees of `jppo` (a baseline and a candidate).

Each measurement runs in a fresh `sys.executable` subprocess whose PYTHONPATH starts with one
tree's root, so `import jppo` picks that tree (checked in the child via `jppo.__file__`). The
child times `jppo.make_train(cfg)(jax.random.key(0))` with `common.time_compiled` (compile
excluded, median of `--repeats` after a warm-up) at throughput.py's settings (PureJaxRL's
CartPole ones) and prints one JSON line. Rounds alternate the order (B,C then C,B, ...) so
load drift hits both trees alike; the report gives per-round candidate/baseline ratios.

    python benchmarks/compare_revisions.py                  # /work/baseline vs this tree
    python benchmarks/compare_revisions.py --baseline ../old --candidate . --rounds 3
    python benchmarks/compare_revisions.py --sizes 4 --updates 2 --repeats 1 --rounds 1 --no-write
    python benchmarks/compare_revisions.py --config-overrides '{"network": "lstm"}'
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from common import header, markdown_table, time_compiled, write_section

HERE = Path(__file__).resolve().parent

# throughput.py's settings; `--config-overrides` is applied on top.
BASE_CONFIG = {"env": "CartPole-v1", "network": "mlp", "critic": "scalar"}


def default_updates(num_envs: int, backend: str) -> int:
    """throughput.py's updates per timed run: fewer at large sizes on CPU."""
    return max(2, min(32, 16384 // num_envs)) if backend == "cpu" else 32


# ---------------------------------------------------------------- child (one measurement)


def import_jppo_from(tree: Path):
    """Import `jppo` and fail loudly unless it comes from `tree`."""
    import jppo

    found = Path(jppo.__file__).resolve()
    if not found.is_relative_to(tree.resolve()):
        raise SystemExit(f"jppo imported from {found}, not from the requested tree {tree}")
    return jppo


def child_main(tree: Path, num_envs: int, updates: int | None, repeats: int, overrides: dict):
    import jax

    jppo = import_jppo_from(tree)
    backend = jax.default_backend()
    updates = updates or default_updates(num_envs, backend)
    cfg = jppo.PPOConfig(
        num_envs=num_envs, total_timesteps=updates * num_envs * 128, **BASE_CONFIG, **overrides
    )
    compile_s, run_s = time_compiled(jppo.make_train(cfg), jax.random.key(0), repeats=repeats)
    result = {
        "jppo_file": jppo.__file__,
        "backend": backend,
        "header": header(),
        "num_envs": num_envs,
        "updates": updates,
        "sps": cfg.num_updates * cfg.batch_size / run_s,
        "run_s": run_s,
        "compile_s": compile_s,
    }
    print(json.dumps(result), flush=True)


# ---------------------------------------------------------------- parent (orchestration)


def git_revision(tree: Path) -> str:
    """Short HEAD of `tree`, plus "+dirty" if its jppo/ has uncommitted changes."""

    def git(*args):
        out = subprocess.run(
            ["git", "-C", str(tree), *args], check=False, capture_output=True, text=True
        )
        return out.stdout.strip() if out.returncode == 0 else None

    rev = git("rev-parse", "--short", "HEAD") or "unknown"
    return rev + ("+dirty" if git("status", "--porcelain", "--", "jppo") else "")


def measure(tree: Path, num_envs: int, args) -> dict:
    """Run one measurement of `tree` in a fresh subprocess; return its JSON result."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(tree)]
    cmd += ["--sizes", str(num_envs), "--repeats", str(args.repeats)]
    cmd += ["--config-overrides", json.dumps(args.config_overrides)]
    if args.updates:
        cmd += ["--updates", str(args.updates)]
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"measurement of {tree} at num_envs={num_envs} failed ({proc.returncode})")
    result = json.loads(lines[-1])
    if not Path(result["jppo_file"]).resolve().is_relative_to(tree):
        raise SystemExit(f"child imported {result['jppo_file']}, not from {tree}")
    return result


def run_rounds(trees: dict, args) -> dict:
    """{(name, num_envs): [result per round]}, order alternating B,C / C,B by round."""
    results = {}
    for r in range(1, args.rounds + 1):
        order = ("baseline", "candidate") if r % 2 else ("candidate", "baseline")
        for n in args.sizes:
            for name in order:
                res = measure(trees[name], n, args)
                results.setdefault((name, n), []).append(res)
                print(
                    f"round {r} {name:9s} num_envs={n:5d} updates={res['updates']:3d} "
                    f"SPS={res['sps']:>13,.0f} run={res['run_s']:.3f}s "
                    f"compile={res['compile_s']:.2f}s",
                    flush=True,
                )
    return results


def table_row(n: int, base: list, cand: list) -> tuple:
    ratios = [c["sps"] / b["sps"] for b, c in zip(base, cand, strict=True)]

    def med(runs, key):
        return statistics.median(run[key] for run in runs)

    return (
        n,
        base[0]["updates"],
        f"{med(base, 'sps'):,.0f}",
        f"{med(cand, 'sps'):,.0f}",
        ", ".join(f"{x:.3f}" for x in ratios),
        f"{statistics.median(ratios):.3f}",
        f"{med(base, 'compile_s'):.2f}",
        f"{med(cand, 'compile_s'):.2f}",
    )


def report(trees: dict, results: dict, args) -> tuple[str, str]:
    """(backend, markdown section text) of the comparison."""
    first = results[("baseline", args.sizes[0])][0]
    rows = [table_row(n, results[("baseline", n)], results[("candidate", n)]) for n in args.sizes]
    columns = ("num_envs", "updates", "baseline steps/s", "candidate steps/s")
    columns += ("candidate/baseline per round", "median ratio")
    columns += ("baseline compile s", "candidate compile s")
    revs = {name: f"`{git_revision(tree)}` ({tree})" for name, tree in trees.items()}
    overrides = f", config overrides {json.dumps(args.config_overrides)}"
    text = (
        f"### compare-revisions on {first['backend']}: baseline {revs['baseline']} vs "
        f"candidate {revs['candidate']}\n\n"
        f"{first['header']} CartPole-v1, 128 steps, 4 epochs x 4 minibatches, 64x64 tanh"
        f"{overrides if args.config_overrides else ''}; each run in a fresh subprocess; "
        f"{args.rounds} round(s) alternating the order, each a median of {args.repeats} after "
        f"a warm-up; steps/s are medians over rounds; compile excluded from steps/s.\n\n"
        f"{markdown_table(columns, rows)}\n"
    )
    return first["backend"], text


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, default=Path("/work/baseline"))
    parser.add_argument("--candidate", type=Path, default=HERE.parent)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 64, 512, 2048])
    parser.add_argument(
        "--updates",
        type=int,
        default=None,
        help="updates per timed run (default as throughput.py: 32 on GPU, fewer at large "
        "sizes on CPU)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--config-overrides",
        type=json.loads,
        default={},
        help='JSON dict passed to both trees\' PPOConfig, e.g. \'{"network": "lstm"}\'',
    )
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.child is not None:
        child_main(args.child, args.sizes[0], args.updates, args.repeats, args.config_overrides)
        return
    trees = {"baseline": args.baseline.resolve(), "candidate": args.candidate.resolve()}
    results = run_rounds(trees, args)
    backend, text = report(trees, results, args)
    print(text)
    if not args.no_write:
        write_section(f"compare-revisions-{backend}", text)


if __name__ == "__main__":
    main()
