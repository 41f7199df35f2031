"""Multi-agent PPO: jppo IPPO and MAPPO against JaxMARL's IPPO baseline, and a roles task.

Part 1, MPE_simple_spread_v3 with the baseline's config (baselines/IPPO/config/ippo_ff_mpe.yaml:
16 envs, 128 steps, 4 epochs, 4 minibatches, lr 2.5e-4 annealed, gamma 0.99, lambda 0.95,
clip 0.2, ent 0.01, vf 0.5, max_grad_norm 0.5, tanh 64x64). Every implementation trains the
same seeds (`jax.random.split(PRNGKey(30), num_seeds)`, vmapped in one program) for the same
env steps per seed:

- `jaxmarl-ippo`: JaxMARL's `make_train(config)` (`--peer-dir`, unmodified; wandb, hydra
  and omegaconf, which it imports at module level, are stubbed here), its per-update
  logging `io_callback` included (into a no-op `wandb.log`); its orthogonal initializer
  runs one seed at a time (same values; jaxlib's batched QR can hang on this CPU);
- `jppo-ippo`: `agent_params="independent"`, `critic_input="local"`;
- `jppo-ippo-shared`: one shared network, the baseline's architecture;
- `jppo-mappo`: independent agents, each critic on the global state.

jppo runs with its own defaults otherwise (time-limit bootstrapping, per-agent advantage
normalization, value-target normalization, per-network gradient clipping, no value clip),
which differ from the baseline's (time limits treated as terminations, minibatch advantage
normalization over all agents, value clipping at 0.2, one clip for the whole network).

Return = the team return: the sum over agents of each agent's undiscounted episode return.
The baseline logs `returned_episode_returns` per agent with rewards multiplied by the number
of agents (its MPELogWrapper), averaged over agents and steps, which is that same sum; jppo
logs it as `episode_return`. Final return = mean over the last 5 % of updates, then over
seeds. Steps/s = env steps (all seeds) / wall time of the compiled call; compile excluded
and reported separately.

Part 2, RoleSplit (jppo.envs.roles): both agents see the same cue and must answer differently
(team return at most 16; identical policies at most 8): independent networks, a shared one,
and a shared one with a one-hot agent id, same seeds and budget.

Writes benchmarks/results/marl.{md,png} and the `marl-<backend>` section of RESULTS.md.

    python benchmarks/marl.py                                   # the recorded run
    python benchmarks/marl.py --total-timesteps 40960 --seeds 1 --no-write   # smoke test
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from common import header, markdown_table, write_section  # noqa: E402

import jppo  # noqa: E402
from jppo.envs.roles import RoleSplit  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_PEER_DIR = Path(__file__).resolve().parents[2] / "shared" / "peers" / "jaxmarl"
TAIL = 0.05  # final return = mean over the last 5 % of updates
ENV = "MPE_simple_spread_v3"
BASELINE_CONFIG = {  # baselines/IPPO/config/ippo_ff_mpe.yaml
    "LR": 2.5e-4,
    "NUM_ENVS": 16,
    "NUM_STEPS": 128,
    "TOTAL_TIMESTEPS": int(1e7),
    "UPDATE_EPOCHS": 4,
    "NUM_MINIBATCHES": 4,
    "GAMMA": 0.99,
    "GAE_LAMBDA": 0.95,
    "CLIP_EPS": 0.2,
    "ENT_COEF": 0.01,
    "VF_COEF": 0.5,
    "MAX_GRAD_NORM": 0.5,
    "ACTIVATION": "tanh",
    "ENV_NAME": ENV,
    "ENV_KWARGS": {},
    "ANNEAL_LR": True,
    "SEED": 30,
}
JPPO_VARIANTS = {
    "jppo-ippo": dict(agent_params="independent", critic_input="local"),
    "jppo-ippo-shared": dict(agent_params="shared", critic_input="local"),
    "jppo-mappo": dict(agent_params="independent", critic_input="global"),
}


def jppo_config(total_timesteps: int, **kw) -> jppo.PPOConfig:
    c = BASELINE_CONFIG
    return jppo.PPOConfig(
        env=ENV,
        total_timesteps=total_timesteps,
        num_envs=c["NUM_ENVS"],
        num_steps=c["NUM_STEPS"],
        update_epochs=c["UPDATE_EPOCHS"],
        num_minibatches=c["NUM_MINIBATCHES"],
        learning_rate=c["LR"],
        anneal_lr=c["ANNEAL_LR"],
        gamma=c["GAMMA"],
        gae_lambda=c["GAE_LAMBDA"],
        clip_eps=c["CLIP_EPS"],
        ent_coef=c["ENT_COEF"],
        vf_coef=c["VF_COEF"],
        max_grad_norm=c["MAX_GRAD_NORM"],
        activation=c["ACTIVATION"],
        hidden_sizes=(64, 64),
        **kw,
    )


def load_baseline(peer_dir: Path):
    """JaxMARL's ippo_ff_mpe module, with its logging/config imports stubbed."""
    wandb = types.ModuleType("wandb")
    wandb.log = lambda *a, **k: None
    wandb.init = lambda *a, **k: None
    hydra = types.ModuleType("hydra")
    hydra.main = lambda *a, **k: lambda f: f
    omegaconf = types.ModuleType("omegaconf")
    omegaconf.OmegaConf = type("OmegaConf", (), {"to_container": staticmethod(lambda c: c)})
    for name, module in (("wandb", wandb), ("hydra", hydra), ("omegaconf", omegaconf)):
        sys.modules.setdefault(name, module)
    path = peer_dir / "IPPO" / "ippo_ff_mpe.py"
    spec = importlib.util.spec_from_file_location("jaxmarl_ippo_ff_mpe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # Its orthogonal initializer, one seed at a time under the seeds' vmap: the same values,
    # without jaxlib's batched QR, which hangs intermittently on this 2-thread CPU (see
    # jppo.networks.orthogonal_init). The training code is untouched.
    orthogonal = module.orthogonal

    def sequential_orthogonal(scale):
        init = orthogonal(scale)
        return lambda key, shape, dtype=jnp.float32: jax.custom_batching.sequential_vmap(
            lambda k: init(k, shape, dtype)
        )(key)

    module.orthogonal = sequential_orthogonal
    return module


def timed(fn, keys) -> tuple[float, float, object]:
    """(compile s, run s, output) of `jax.jit(jax.vmap(fn))(keys)`, compile excluded."""
    program = jax.jit(jax.vmap(fn))
    start = time.perf_counter()
    compiled = program.lower(keys).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(keys))
    return compile_s, time.perf_counter() - start, out


def final(returns: np.ndarray) -> np.ndarray:
    """[S, U] -> [S]: mean of the last TAIL of updates."""
    tail = max(1, int(round(returns.shape[-1] * TAIL)))
    return returns[:, -tail:].mean(axis=-1)


def run_mpe(args, keys) -> dict:
    results = {}
    if "jaxmarl-ippo" in args.variants:
        baseline = load_baseline(Path(args.peer_dir))
        config = {**BASELINE_CONFIG, "TOTAL_TIMESTEPS": args.total_timesteps}
        compile_s, run_s, out = timed(baseline.make_train(config), keys)
        returns = np.asarray(out["metrics"]["returned_episode_returns"])  # [S, U]
        results["jaxmarl-ippo"] = (returns, compile_s, run_s)
        print(f"jaxmarl-ippo: compile {compile_s:.1f}s run {run_s:.1f}s", flush=True)
    for name, kw in JPPO_VARIANTS.items():
        if name not in args.variants:
            continue
        cfg = jppo_config(args.total_timesteps, **kw)
        compile_s, run_s, out = timed(jppo.make_train(cfg), keys)
        results[name] = (np.asarray(out.metrics["episode_return"]), compile_s, run_s)
        print(f"{name}: compile {compile_s:.1f}s run {run_s:.1f}s", flush=True)
    return results


def run_speed(args, keys) -> dict:
    """Steps/s of every MPE variant in alternating rounds (the order rotates each round),
    each program compiled once at `speed_timesteps` per seed: name -> [rounds] seconds."""
    programs = {}
    for name in args.variants:
        if name == "jaxmarl-ippo":
            baseline = load_baseline(Path(args.peer_dir))
            fn = baseline.make_train({**BASELINE_CONFIG, "TOTAL_TIMESTEPS": args.speed_timesteps})
        else:
            fn = jppo.make_train(jppo_config(args.speed_timesteps, **JPPO_VARIANTS[name]))
        programs[name] = jax.jit(jax.vmap(fn)).lower(keys).compile()
    names = list(programs)
    times = {name: [] for name in names}
    for r in range(args.speed_rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            jax.block_until_ready(programs[name](keys))
            times[name].append(time.perf_counter() - start)
    return times


def run_roles(args, keys) -> dict:
    base = jppo.PPOConfig(
        env=RoleSplit(),
        num_envs=16,
        num_steps=32,
        total_timesteps=args.roles_timesteps,
        learning_rate=1e-2,
    )
    variants = {
        "independent": dict(agent_params="independent"),
        "shared": dict(agent_params="shared"),
        "shared + agent id": dict(agent_params="shared", agent_id=True),
    }
    out = {}
    for name, kw in variants.items():
        result = jppo.train_seeds(base.replace(**kw), keys)
        out[name] = np.asarray(result.metrics["episode_return"])
    return out


def env_steps(name: str, returns: np.ndarray) -> np.ndarray:
    """Env steps per seed after each update."""
    batch = BASELINE_CONFIG["NUM_ENVS"] * BASELINE_CONFIG["NUM_STEPS"]
    return (np.arange(returns.shape[1]) + 1) * batch


def report(args, mpe: dict, roles: dict, speed: dict | None = None) -> str:
    num_seeds = len(args.seed_list)
    rows = []
    for name, (returns, compile_s, run_s) in mpe.items():
        steps = returns.shape[1] * BASELINE_CONFIG["NUM_ENVS"] * BASELINE_CONFIG["NUM_STEPS"]
        f = final(returns)
        rows.append(
            (
                name,
                f"{f.mean():.1f} ± {f.std():.1f}",
                ", ".join(f"{x:.1f}" for x in f),
                f"{steps * num_seeds / run_s:,.0f}",
                f"{run_s:.1f}",
                f"{compile_s:.1f}",
            )
        )
    lines = [
        f"{header()}",
        "",
        f"MPE_simple_spread_v3, JaxMARL IPPO's config (16 envs x 128 steps, 4 epochs, 4 "
        f"minibatches, lr 2.5e-4), {args.total_timesteps:,} env steps per seed, "
        f"{num_seeds} seeds vmapped in one program (keys split from PRNGKey(30)). Final "
        "return = team return (sum over agents), mean over the last 5 % of updates; "
        "± = std over seeds. Steps/s = env steps of all seeds / wall time of this one "
        "learning run, compile excluded (the runs follow each other).",
        "",
        markdown_table(
            ("implementation", "final return", "per seed", "env steps/s", "run s", "compile s"),
            rows,
        ),
    ]
    if speed:
        base = np.median(speed["jaxmarl-ippo"]) if "jaxmarl-ippo" in speed else None
        total = args.speed_timesteps * num_seeds
        rows = []
        for name, times in speed.items():
            median = np.median(times)
            ratio = f"{base / median:.2f}" if base else "-"
            rounds = ", ".join(f"{total / t:,.0f}" for t in times)
            rows.append((name, f"{total / median:,.0f}", ratio, rounds))
        lines += [
            "",
            f"Steps/s side by side: every program compiled at {args.speed_timesteps:,} env "
            f"steps per seed ({num_seeds} seeds), then {args.speed_rounds} alternating rounds "
            "(the order rotates each round); median, compile excluded.",
            "",
            markdown_table(
                ("implementation", "env steps/s (median)", "/ jaxmarl-ippo", "per round"), rows
            ),
        ]
    if roles:
        rows = []
        for name, returns in roles.items():
            f = final(returns)
            rows.append((name, f"{f.mean():.2f} ± {f.std():.2f}", f"{returns[:, 0].mean():.2f}"))
        lines += [
            "",
            f"RoleSplit (jppo.envs.roles; 2 agents see the same cue, agent 0 must name it and "
            f"agent 1 the next one; team return at most 16, at most 8 for identical policies), "
            f"16 envs x 32 steps, lr 1e-2, {args.roles_timesteps:,} env steps, {num_seeds} seeds:",
            "",
            markdown_table(("agent_params", "final team return", "first update"), rows),
        ]
    return "\n".join(lines)


def plot(mpe: dict, roles: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if roles else 1, figsize=(12 if roles else 7, 4.5))
    axes = np.atleast_1d(axes)
    for name, (returns, _, _) in mpe.items():
        x = env_steps(name, returns)
        mean = returns.mean(axis=0)
        (line,) = axes[0].plot(x, mean, label=name)
        axes[0].fill_between(x, returns.min(0), returns.max(0), color=line.get_color(), alpha=0.2)
    axes[0].set(xlabel="env steps per seed", ylabel="team episode return", title=ENV)
    axes[0].legend()
    for name, returns in roles.items():
        x = (np.arange(returns.shape[1]) + 1) * 16 * 32
        axes[1].plot(x, returns.mean(0), label=name)
    if roles:
        axes[1].axhline(8.0, color="gray", ls="--", lw=1, label="identical-policy ceiling")
        axes[1].set(xlabel="env steps", ylabel="team episode return", title="RoleSplit")
        axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # 1.5M env steps per seed, 4 seeds: the three default runs fit in ~10 minutes on the
    # 2-core CPU (the baseline's 1e7 per seed would take ~17 minutes each there).
    parser.add_argument("--total-timesteps", type=int, default=1_500_000, help="per seed")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--roles-timesteps", type=int, default=16 * 32 * 40)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["jaxmarl-ippo", "jppo-ippo", "jppo-mappo"],
        choices=["jaxmarl-ippo", *JPPO_VARIANTS],
        help="MPE runs",
    )
    parser.add_argument("--speed-timesteps", type=int, default=2048 * 40, help="per seed")
    parser.add_argument("--speed-rounds", type=int, default=3, help="0 skips the speed table")
    parser.add_argument("--no-roles", action="store_true")
    parser.add_argument("--peer-dir", default=str(DEFAULT_PEER_DIR))
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    parser.add_argument("--no-write", action="store_true", help="skip RESULTS.md")
    args = parser.parse_args(argv)
    keys = jax.random.split(jax.random.PRNGKey(BASELINE_CONFIG["SEED"]), args.seeds)
    args.seed_list = list(range(args.seeds))
    mpe = run_mpe(args, keys)
    speed = run_speed(args, keys) if args.speed_rounds else None
    roles = {} if args.no_roles else run_roles(args, keys)
    text = report(args, mpe, roles, speed)
    print(text)
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    (results / "marl.md").write_text(text + "\n\n![curves](marl.png)\n")
    plot(mpe, roles, results / "marl.png")
    if not args.no_write:
        backend = jax.default_backend()
        write_section(
            f"marl-{backend}",
            f"## Multi-agent PPO ({backend})\n\n{text}\n\n![curves](results/marl.png)",
        )


if __name__ == "__main__":
    main()
