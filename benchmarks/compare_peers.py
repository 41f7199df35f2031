"""Steps per second of jppo's defaults against PureJaxRL and rejax at matched settings.

CartPole-v1, 128 steps per env per update, 4 epochs x 4 minibatches, 64x64 tanh actor and
critic, Adam 2.5e-4 annealed linearly to 0, gamma 0.99, lambda 0.95, clip 0.2, entropy 0.01,
value 0.5, gradient clip 0.5. Stable-Baselines3 (PyTorch, CPU) at 4 envs is a reference.

Each implementation lives in one long-lived worker process (the peers under the venv that
`benchmarks/setup_peers.sh` builds, since they need gymnax 0.0.9; jppo under this
interpreter), which compiles each size once (`jax.jit(train).lower(rng).compile()`, timed
apart and followed by an untimed warm-up call). The driver then asks the workers in turn, one
computing at a time, for `--repeats` timed calls (`block_until_ready`), round after round, in
an order that rotates, so that load drift on the machine hits every implementation alike.
Reported: per num_envs the median over rounds of each one's steps/s (steps / median call),
and the median over rounds of the per-round ratio jppo / fastest JAX peer.

What still differs, on purpose (users compare the defaults) or because a peer cannot be set:
- jppo (defaults): value targets normalized, advantages normalized over the whole batch (not
  per minibatch) and clipped at 10, log-ratio clamped at 10, no value clipping (the peers clip
  the value at 0.2), gradient clip per network (PureJaxRL: one global norm over both), updates
  skipped on non-finite gradients, per-update metrics, truncated episodes bootstrapped from
  V(final observation) (gymnax 1.0 reports it; gymnax 0.0.9 only says done). jppo's program is
  compiled as `jppo.train` compiles it (`jppo.compile.jit`: on CPU, LLVM optimization level 1,
  which shortens the compile and leaves steps/s unchanged); the peers' with plain `jax.jit`.
- rejax: `max_grad_norm` is element-wise value clipping (`optax.clip`), and its learning rate
  is a scalar: the anneal is given as an optax linear schedule per minibatch step (PureJaxRL
  and jppo step it per update). Its periodic evaluation is replaced by a no-op.
- SB3: its own defaults otherwise (advantages per minibatch, no value clipping).

    benchmarks/setup_peers.sh                                   # once
    python benchmarks/compare_peers.py                          # writes RESULTS.md
    python benchmarks/compare_peers.py --num-envs 4,64 --rounds 1 --repeats 1 \\
        --total-timesteps 16384 --sb3-timesteps 2048 --no-write # quick check
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Nothing outside the standard library at module level: the peer workers import this file
# under the peer venv, where jppo (and its gymnax 1.0) are not installed.

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_VENV = HERE / ".peers-venv"
DEFAULT_PUREJAXRL = ROOT.parent / "shared" / "peers" / "purejaxrl"
# Stand-ins for brax and navix, which PureJaxRL's wrappers.py imports but CartPole never uses.
SHIMS = ROOT.parent / "shared" / "peers" / "shims"
JAX_IMPLS = ("jppo", "purejaxrl", "rejax")
PEERS = ("purejaxrl", "rejax", "sb3")
NAMES = {"jppo": "jppo", "purejaxrl": "PureJaxRL", "rejax": "rejax", "sb3": "SB3"}
VERSIONED = ("jax", "jaxlib", "gymnax", "rejax", "flax", "optax", "distrax", "chex", "torch")
VERSIONED += ("stable-baselines3", "gymnasium")
SETTINGS = dict(
    num_steps=128,
    epochs=4,
    minibatches=4,
    hidden=(64, 64),
    lr=2.5e-4,
    gamma=0.99,
    gae_lambda=0.95,
    clip=0.2,
    ent=0.01,
    vf=0.5,
    max_grad_norm=0.5,
)
S = SETTINGS


def default_timesteps(num_envs: int) -> int:
    """Steps per timed call: 2**19 (2-4 s at the peers' speed on a 2-core CPU), >= 8 updates.

    At 2048 envs the 8 updates are 2.1M steps, about 10 s a call on that CPU.
    """
    return max(num_envs * S["num_steps"] * 8, 2**19)


# ---------------------------------------------------------------- workers (one per program)


def build_jppo(num_envs: int, total_timesteps: int):
    import jax

    import jppo

    cfg = jppo.PPOConfig(num_envs=num_envs, total_timesteps=total_timesteps)
    # Hyperparameters as an argument, as `jppo.train` and `jppo bench` pass them (traced).
    hp = jppo.Hyperparams.from_config(cfg)
    # Compiled as jppo's entry points compile it (`jppo.compile.jit`: its XLA options); the
    # peers' programs get plain `jax.jit`, as their own code does.
    train = jppo.compile.jit(jppo.make_train(cfg))
    return train, (jax.random.key(0), hp), cfg.num_updates * cfg.batch_size


def build_purejaxrl(num_envs: int, total_timesteps: int, purejaxrl_dir: str):
    import jax

    # ppo.py imports `wrappers` from its own folder; the shims go first (see SHIMS).
    for path in (str(Path(purejaxrl_dir).resolve()), str(SHIMS)):
        if path not in sys.path:
            sys.path.insert(0, path)
    import ppo

    config = {
        "LR": S["lr"],
        "NUM_ENVS": num_envs,
        "NUM_STEPS": S["num_steps"],
        "TOTAL_TIMESTEPS": total_timesteps,
        "UPDATE_EPOCHS": S["epochs"],
        "NUM_MINIBATCHES": S["minibatches"],
        "GAMMA": S["gamma"],
        "GAE_LAMBDA": S["gae_lambda"],
        "CLIP_EPS": S["clip"],
        "ENT_COEF": S["ent"],
        "VF_COEF": S["vf"],
        "MAX_GRAD_NORM": S["max_grad_norm"],
        "ACTIVATION": "tanh",
        "ENV_NAME": "CartPole-v1",
        "ANNEAL_LR": True,
        "DEBUG": False,
    }
    train = ppo.make_train(config)
    return train, (jax.random.PRNGKey(0),), config["NUM_UPDATES"] * num_envs * S["num_steps"]


def build_rejax(num_envs: int, total_timesteps: int):
    import jax
    import jax.numpy as jnp
    import optax
    import rejax

    updates = total_timesteps // (num_envs * S["num_steps"])
    algo = rejax.get_algo("ppo").create(
        env="CartPole-v1",
        num_envs=num_envs,
        num_steps=S["num_steps"],
        num_epochs=S["epochs"],
        num_minibatches=S["minibatches"],
        # rejax takes a scalar; optax also accepts a schedule (stepped per minibatch).
        learning_rate=optax.linear_schedule(S["lr"], 0.0, updates * S["epochs"] * S["minibatches"]),
        gamma=S["gamma"],
        gae_lambda=S["gae_lambda"],
        clip_eps=S["clip"],
        ent_coef=S["ent"],
        vf_coef=S["vf"],
        max_grad_norm=S["max_grad_norm"],
        agent_kwargs={"activation": "tanh", "hidden_layer_sizes": S["hidden"]},
        total_timesteps=updates * num_envs * S["num_steps"],
        # One evaluation slot for the whole run, and that one a no-op: rejax otherwise plays
        # 128 evaluation episodes every 4096 steps, which is no part of training speed.
        eval_freq=updates * num_envs * S["num_steps"],
        skip_initial_evaluation=True,
    )
    algo = algo.replace(eval_callback=lambda algo, ts, rng: jnp.zeros(()))
    return algo.train, (jax.random.PRNGKey(0),), updates * num_envs * S["num_steps"]


class JaxWorker:
    """Holds one compiled program per num_envs; times calls of it on request."""

    def __init__(self, build):
        self.build, self.programs = build, {}

    def compile(self, num_envs: int, total_timesteps: int) -> dict:
        import jax

        train, args, steps = self.build(num_envs, total_timesteps)
        start = time.perf_counter()
        jitted = train if hasattr(train, "lower") else jax.jit(train)
        compiled = jitted.lower(*args).compile()
        compile_s = time.perf_counter() - start
        jax.block_until_ready(compiled(*args))  # warm-up call, untimed
        self.programs[num_envs] = (compiled, args)
        return {"compile_s": compile_s, "steps": steps}

    def time(self, num_envs: int, repeats: int) -> dict:
        import jax

        compiled, args = self.programs[num_envs]
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            times.append(time.perf_counter() - start)
        return {"times": times}


class SB3Worker:
    """Stable-Baselines3 PPO on the CPU: `model.learn` timed, the model built fresh each call."""

    def __init__(self):
        import torch  # noqa: F401 - fail at start, not at the first request, without torch

        self.total_timesteps = None

    def model(self, num_envs: int):
        import gymnasium as gym
        import torch
        from stable_baselines3 import PPO
        from stable_baselines3.common.vec_env import DummyVecEnv

        env = DummyVecEnv([lambda: gym.make("CartPole-v1")] * num_envs)
        return PPO(
            "MlpPolicy",
            env,
            n_steps=S["num_steps"],
            batch_size=num_envs * S["num_steps"] // S["minibatches"],
            n_epochs=S["epochs"],
            learning_rate=lambda remaining: S["lr"] * remaining,
            gamma=S["gamma"],
            gae_lambda=S["gae_lambda"],
            clip_range=S["clip"],
            ent_coef=S["ent"],
            vf_coef=S["vf"],
            max_grad_norm=S["max_grad_norm"],
            policy_kwargs=dict(
                net_arch=dict(pi=list(S["hidden"]), vf=list(S["hidden"])),
                activation_fn=torch.nn.Tanh,
            ),
            device="cpu",
            seed=0,
            verbose=0,
        )

    def compile(self, num_envs: int, total_timesteps: int, threads: int) -> dict:
        import torch

        torch.set_num_threads(threads)
        # Nothing to compile; a short learn warms up torch and the environments.
        self.total_timesteps = total_timesteps
        self.model(num_envs).learn(2 * num_envs * S["num_steps"])
        batch = num_envs * S["num_steps"]  # learn stops after the rollout that reaches it
        return {"compile_s": None, "steps": -(-total_timesteps // batch) * batch}

    def time(self, num_envs: int, repeats: int) -> dict:
        times = []
        for _ in range(repeats):
            model = self.model(num_envs)  # construction excluded
            start = time.perf_counter()
            model.learn(self.total_timesteps)
            times.append(time.perf_counter() - start)
        return {"times": times}


def environment_info() -> dict:
    info = {"python": platform.python_version(), "versions": {}}
    for name in VERSIONED:
        try:
            info["versions"][name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        import jax

        dev = jax.devices()[0]
        info["backend"] = dev.platform
        info["device"] = getattr(dev, "device_kind", dev.platform)
    except ImportError:
        pass
    return info


def worker_main(impl: str, purejaxrl_dir: str) -> None:
    """Answer JSON requests from stdin, one JSON line each on the real stdout."""
    # Whatever the libraries print goes to stderr: stdout carries the protocol alone.
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def reply(obj):
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        if impl == "sb3":
            worker = SB3Worker()
        elif impl == "purejaxrl":
            worker = JaxWorker(lambda n, t: build_purejaxrl(n, t, purejaxrl_dir))
        else:
            worker = JaxWorker({"jppo": build_jppo, "rejax": build_rejax}[impl])
        reply({"ok": environment_info()})
    except Exception as e:  # reported to the driver, which stops
        reply({"error": f"{type(e).__name__}: {e}"})
        return
    for line in sys.stdin:
        request = json.loads(line)
        cmd = request.pop("cmd")
        try:
            reply({"ok": getattr(worker, cmd)(**request)})
        except Exception as e:
            reply({"error": f"{cmd} {request}: {type(e).__name__}: {e}"})


# ---------------------------------------------------------------- driver


class Worker:
    """The driver's handle on one worker process."""

    def __init__(self, impl: str, python: str, purejaxrl_dir: Path):
        env = dict(os.environ)
        if impl != "jppo":
            # A PYTHONPATH set for jppo (e.g. its gymnax 1.0) must not reach the peer venv.
            env.pop("PYTHONPATH", None)
        cmd = [python, str(Path(__file__).resolve()), "--worker", impl]
        cmd += ["--purejaxrl-dir", str(purejaxrl_dir)]
        self.impl = impl
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.info = self._read()

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"{self.impl} worker exited ({self.proc.wait()}); see its stderr")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.impl} worker: {answer['error']}")
        return answer["ok"]

    def request(self, cmd: str, **kwargs):
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kwargs}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def start_workers(args) -> dict:
    venv_python = args.venv / "bin" / "python"
    wanted = [p for p in args.peers if p != "sb3" or 4 in args.num_envs]
    if "sb3" in args.peers and "sb3" not in wanted:
        print("SB3 runs at num_envs=4 only, which --num-envs lacks: skipped", file=sys.stderr)
    if wanted and not venv_python.exists():
        raise SystemExit(
            f"no peer environment at {args.venv}: run benchmarks/setup_peers.sh "
            f"{'' if args.venv == DEFAULT_VENV else args.venv}".rstrip()
        )
    if "purejaxrl" in wanted and not (args.purejaxrl_dir / "ppo.py").exists():
        raise SystemExit(f"no PureJaxRL ppo.py in {args.purejaxrl_dir} (see --purejaxrl-dir)")
    workers = {"jppo": Worker("jppo", sys.executable, args.purejaxrl_dir)}
    for impl in wanted:
        try:
            workers[impl] = Worker(impl, str(venv_python), args.purejaxrl_dir)
        except RuntimeError as e:
            if impl != "sb3":
                msg = f"{e}\n(re)build the peer environment: benchmarks/setup_peers.sh"
                raise SystemExit(msg) from None
            # SB3 is optional: setup_peers.sh skips it where torch cannot be installed.
            print(f"{e}: SB3 skipped (setup_peers.sh installs it where torch installs)")
    return workers


def run(args, workers: dict) -> dict:
    """Compile everything, then time rounds; returns {(impl, n): {...}}."""
    res = {}
    at = {n: [i for i in workers if i != "sb3" or n == 4] for n in args.num_envs}
    for n in args.num_envs:
        for impl in at[n]:
            steps = args.sb3_timesteps if impl == "sb3" else args.timesteps(n)
            extra = {"threads": args.sb3_threads} if impl == "sb3" else {}
            out = workers[impl].request("compile", num_envs=n, total_timesteps=steps, **extra)
            res[impl, n] = {**out, "rounds": []}
            compile_s = f"{out['compile_s']:.1f} s" if out["compile_s"] is not None else "-"
            print(f"compiled {NAMES[impl]:9s} num_envs={n:5d}: {compile_s}", flush=True)
    for r in range(args.rounds):
        for k, n in enumerate(args.num_envs):
            shift = (r + k) % len(at[n])
            for impl in at[n][shift:] + at[n][:shift]:
                times = workers[impl].request("time", num_envs=n, repeats=args.repeats)["times"]
                sps = res[impl, n]["steps"] / statistics.median(times)
                res[impl, n]["rounds"].append(sps)
                print(
                    f"round {r + 1} num_envs={n:5d} {NAMES[impl]:9s} {sps:>11,.0f} steps/s "
                    f"(calls {', '.join(f'{t:.2f}' for t in times)} s)",
                    flush=True,
                )
    return res


def ratios(res, n, peers) -> list[float]:
    """Per round: jppo's steps/s over the fastest of `peers` in that round."""
    rounds = zip(*(res[p, n]["rounds"] for p in peers), strict=True)
    return [j / max(best) for j, best in zip(res["jppo", n]["rounds"], rounds, strict=True)]


def tables(args, res, impls) -> tuple[str, str]:
    from common import markdown_table

    med = statistics.median
    jax_peers = [i for i in impls if i in JAX_IMPLS and i != "jppo"]
    head = ["num_envs", "steps/call"] + [f"{NAMES[i]} steps/s" for i in impls if i in JAX_IMPLS]
    if jax_peers:
        head += ["jppo / best JAX peer", "per round"]
    head += ["compile s (" + " / ".join(NAMES[i] for i in impls if i in JAX_IMPLS) + ")"]
    rows = []
    for n in args.num_envs:
        row = [n, f"{res['jppo', n]['steps']:,}"]
        row += [f"{med(res[i, n]['rounds']):,.0f}" for i in impls if i in JAX_IMPLS]
        if jax_peers:
            rs = ratios(res, n, jax_peers)
            row += [f"**{med(rs):.2f}**", ", ".join(f"{x:.2f}" for x in rs)]
        row += [" / ".join(f"{res[i, n]['compile_s']:.1f}" for i in impls if i in JAX_IMPLS)]
        rows.append(row)
    main = markdown_table(head, rows)
    if "sb3" not in impls:
        return main, ""
    rs = ratios(res, 4, ["sb3"])
    sb3 = markdown_table(
        ["num_envs", "SB3 steps/call", "SB3 steps/s", "jppo steps/s", "jppo / SB3", "per round"],
        [
            [
                4,
                f"{res['sb3', 4]['steps']:,}",
                f"{med(res['sb3', 4]['rounds']):,.0f}",
                f"{med(res['jppo', 4]['rounds']):,.0f}",
                f"**{med(rs):.1f}**",
                ", ".join(f"{x:.1f}" for x in rs),
            ]
        ],
    )
    return main, sb3


def describe_env(info: dict) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    return f"{versions}, Python {info['python']}"


def report(args, argv, workers, res) -> str:
    from common import header

    impls = list(workers)
    main, sb3 = tables(args, res, impls)
    peer_env = next((w.info for i, w in workers.items() if i != "jppo"), None)
    lines = [
        f"### compare-peers on {workers['jppo'].info['backend']}: jppo defaults vs "
        + ", ".join(NAMES[i] for i in impls if i != "jppo"),
        "",
        header(),
        f"- jppo environment: {describe_env(workers['jppo'].info)}.",
    ]
    if peer_env:
        lines.append(
            f"- peer environment ({args.venv.name}, device {peer_env.get('device', '?')}): "
            f"{describe_env(peer_env)}."
        )
    lines += [
        f"- Settings: CartPole-v1, {S['num_steps']} steps x num_envs per update, "
        f"{S['epochs']} epochs x {S['minibatches']} minibatches, 64x64 tanh actor and critic, "
        f"Adam {S['lr']} annealed linearly, gamma {S['gamma']}, lambda {S['gae_lambda']}, "
        f"clip {S['clip']}, entropy {S['ent']}, value {S['vf']}, gradient clip "
        f"{S['max_grad_norm']}; jppo with its defaults (`PPOConfig(num_envs=N, "
        "total_timesteps=...)`); what still differs is listed in "
        "`benchmarks/compare_peers.py`.",
        f"- Timing: one compiled call of the whole run, compile excluded (timed apart, then a "
        f"warm-up call); steps/s = steps / median of {args.repeats} calls; {args.rounds} "
        "rounds in rotating order, one program computing at a time; steps/s columns are "
        "medians over rounds, ratios the median of the per-round ratios.",
        "",
        main,
    ]
    if sb3:
        lines += [
            "",
            f"Stable-Baselines3 PPO on the CPU (torch threads: {args.sb3_threads}), DummyVecEnv "
            f"of 4 gymnasium CartPole-v1, n_steps 128, batch_size 128, n_epochs 4, same "
            f"network and coefficients; `model.learn` timed, construction excluded:",
            "",
            sb3,
        ]
    command = shlex.join(["python", "benchmarks/compare_peers.py", *argv])
    lines += ["", f"Command: `{command}`"]
    return "\n".join(lines)


def parse_args(argv):
    def ints(text):
        return [int(x) for x in text.split(",") if x]

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=ints, default=[4, 64, 512, 2048])
    parser.add_argument(
        "--total-timesteps",
        type=ints,
        default=None,
        help="steps per timed call: one number for every size or one per size "
        "(default: max(num_envs*128*8, 2**19)); rounded down to whole updates",
    )
    parser.add_argument("--sb3-timesteps", type=int, default=20_480)
    # Note: with 2 threads on a 2-core machine that something else also loads, torch's
    # OpenMP threads wait on each other: measured here 50-60 steps/s against 5-7k with 1.
    parser.add_argument(
        "--sb3-threads", type=int, default=os.cpu_count(), help="torch threads (default: cores)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--peers", type=lambda s: [p for p in s.split(",") if p], default=list(PEERS)
    )
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the peer environment")
    parser.add_argument("--purejaxrl-dir", type=Path, default=DEFAULT_PUREJAXRL)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--worker", choices=JAX_IMPLS + ("sb3",), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if unknown := set(args.peers) - set(PEERS):
        parser.error(f"--peers: unknown {sorted(unknown)}; choose from {','.join(PEERS)}")
    given = args.total_timesteps
    if given and len(given) not in (1, len(args.num_envs)):
        parser.error("--total-timesteps: one number, or one per --num-envs size")

    def timesteps(n):
        steps = default_timesteps(n) if not given else given[args.num_envs.index(n) % len(given)]
        batch = n * S["num_steps"]
        return max(steps // batch, 1) * batch

    args.timesteps = timesteps
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker, str(args.purejaxrl_dir))
    sys.path.insert(0, str(HERE))
    workers = start_workers(args)
    try:
        res = run(args, workers)
    finally:
        for w in workers.values():
            w.close()
    backends = {w.info.get("backend") for i, w in workers.items() if i != "sb3"}
    if len(backends) > 1:
        print(f"warning: the JAX workers run on different backends: {backends}", file=sys.stderr)
    main_table, sb3_table = tables(args, res, list(workers))
    print("\n" + main_table + ("\n\n" + sb3_table if sb3_table else ""))
    text = report(args, argv, workers, res)
    if args.no_write:
        print("\n" + text)
    else:
        from common import write_section

        write_section(f"compare-peers-{workers['jppo'].info['backend']}", text)
        print(
            "\nwrote benchmarks/RESULTS.md section compare-peers-" + workers["jppo"].info["backend"]
        )


if __name__ == "__main__":
    main()
