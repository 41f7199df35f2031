"""The `jppo` command line end to end (`python -m jppo` in subprocesses)."""

import csv
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jppo
from jppo import cli
from jppo.config import PPOConfig, field_help
from tests.helpers import cli_env as _env
from tests.helpers import interrupt_cli
from tests.helpers import run_cli as _run

# -- the command line ---------------------------------------------------------------------


def test_help_lists_every_config_field_with_its_help_and_default():
    proc = _run("train", "--help")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())  # argparse wraps lines
    for name in cli.CONFIG_FIELDS:
        default = PPOConfig.__dataclass_fields__[name].default
        option = "--" + name.replace("_", "-")
        assert f"{option} V {field_help(name)} (default: {default!r})" in text, name
    assert "env_params" not in cli.CONFIG_FIELDS  # not expressible as a flag
    assert {"--seeds", "--out", "--resume", "--eval-every", "--target-return"} <= set(text.split())


@pytest.mark.parametrize(
    "args, expected",
    [
        (["train", "--gama", "0.9"], "unrecognized arguments: --gama 0.9 (did you mean --gamma?)"),
        (["train", "--gamma", "1.5"], "PPOConfig.gamma=1.5"),
        (["train", "--seeds", "0"], "--seeds: expected a positive integer"),
        (["train", "--network", "gru"], "PPOConfig.network"),
        (["train", "--target-return", "100"], "target_return needs eval_every"),
        (["train", "--total-timesteps", "100"], "PPOConfig.total_timesteps=100"),
        (["train", "--resume", "/nonexistent/run"], "not a jppo run directory"),
        (["train", "--config", "/nonexistent.yaml"], "--config: cannot read"),
        (["eval", "/nonexistent/run"], "no checkpoint"),
        (["plot", "/nonexistent/run"], "cannot read metrics"),
        (["fly"], "invalid choice: 'fly'"),
    ],
)
def test_bad_command_lines_exit_2_with_one_line(args, expected, capsys):
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert expected in err


def test_bad_flag_exits_2_from_the_shell():
    proc = _run("train", "--num-env", "8")
    assert proc.returncode == 2
    assert proc.stderr == ("jppo: unrecognized arguments: --num-env 8 (did you mean --num-envs?)\n")


def test_config_file_and_flag_precedence(tmp_path):
    yaml_file = tmp_path / "cfg.yaml"
    yaml_file.write_text("env: Pendulum-v1\nnum_envs: 8\nhidden_sizes: [32, 32]\ngamma: 0.9\n")
    args = cli.build_parser().parse_args(
        ["train", "--preset", "Pendulum-v1", "--config", str(yaml_file), "--gamma", "0.95"]
    )
    cfg = cli.config_from_args(args)
    preset = PPOConfig.preset("Pendulum-v1")
    assert cfg.num_envs == 8 and cfg.hidden_sizes == (32, 32)  # the file over the preset
    assert cfg.gamma == 0.95  # the flag over the file
    assert cfg.gae_lambda == preset.gae_lambda  # the preset where neither says
    json_file = tmp_path / "cfg.json"
    json_file.write_text(json.dumps({"gama": 0.9}))
    args = cli.build_parser().parse_args(["train", "--config", str(json_file)])
    with pytest.raises(cli.UsageError, match="unknown config field 'gama' .*'gamma'"):
        cli.config_from_args(args)


# -- a whole run directory ------------------------------------------------------------------


def _read_events(path):
    """Scalars (tag -> [(step, value)]) from a TensorBoard event file, parsed by hand."""
    from tensorboardX.proto import event_pb2

    scalars = {}
    data = Path(path).read_bytes()
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        record = data[pos + 12 : pos + 12 + length]
        pos += 12 + length + 4  # length, its crc, the record, its crc
        event = event_pb2.Event.FromString(record)
        for value in event.summary.value:
            scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


@pytest.fixture(scope="module")
def pendulum_run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "pendulum"
    proc = _run(
        "train",
        "--env",
        "Pendulum-v1",
        "--seeds",
        "4",
        "--total-timesteps",
        "50000",
        "--out",
        str(out),
        "--tensorboard",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


def test_run_directory_is_complete(pendulum_run_dir):
    out, proc = pendulum_run_dir
    cfg = PPOConfig(env="Pendulum-v1", total_timesteps=50000)
    updates, seeds = cfg.num_updates, 4
    assert updates == 97
    for name in (
        "config.json",
        "run.json",
        "metrics.csv",
        "metrics.json",
        "evaluations.csv",
        "curves.png",
        "summary.txt",
    ):
        assert (out / name).is_file(), name
    # The non-interactive progress: one plain line per chunk, compile time separate.
    lines = [line for line in proc.stdout.splitlines() if line.startswith("update ")]
    assert lines[-1].startswith(f"update {updates}/{updates}  steps 49,664")
    assert re.search(r"compiled in \d+\.\d+s", proc.stdout)
    # One CSV row per update and seed.
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == updates * seeds
    assert sorted((int(r["update"]), int(r["seed"])) for r in rows) == [
        (u, s) for u in range(1, updates + 1) for s in range(seeds)
    ]
    assert {"episode_return", "approx_kl", "clip_fraction", "entropy"} <= set(rows[0])
    assert int(rows[-1]["timesteps"]) == updates * cfg.batch_size
    metrics = jppo.runs.load_run_dir(out)
    assert metrics["episode_return"].shape == (seeds, updates)
    by_csv = np.array([float(r["entropy"]) for r in rows]).reshape(updates, seeds).T
    np.testing.assert_array_equal(by_csv, metrics["entropy"])
    # The summary: final and evaluation returns, steps/s, compile time, health check.
    summary = (out / "summary.txt").read_text()
    for key in ("final return", "evaluation return", "steps/s", "compile time", "health check"):
        assert key in summary
    final = json.loads((out / "summary.json").read_text())["final_return"]
    tail = int(np.ceil(updates * 0.05))
    np.testing.assert_allclose(final, metrics["episode_return"][:, -tail:].mean(), rtol=1e-6)
    assert f"{final:.2f}" in proc.stdout  # the final summary printed
    # The checkpoint holds the four seeds' states at the last update.
    state, loaded_cfg, history = jppo.load(str(out))
    assert loaded_cfg == cfg
    assert np.asarray(state.step).tolist() == [updates] * seeds
    np.testing.assert_array_equal(history["episode_return"], metrics["episode_return"])


def test_curves_png_is_a_real_plot(pendulum_run_dir):
    import matplotlib.image

    out, _ = pendulum_run_dir
    image = matplotlib.image.imread(out / "curves.png")
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600
    rgb = image[..., :3].reshape(-1, 3)
    white = np.all(rgb > 0.99, axis=1)
    assert 0.05 < 1 - white.mean() < 0.9  # ink on the page, but not a filled block
    # Lines and bands in more than the axis colours: there are curves.
    colours = np.unique(np.round(rgb[~white] * 20), axis=0)
    assert len(colours) > 50


def test_tensorboard_scalars_read_back(pendulum_run_dir):
    out, _ = pendulum_run_dir
    files = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1
    scalars = _read_events(files[0])
    metrics = jppo.runs.load_run_dir(out)
    steps, values = zip(*scalars["episode_return"])
    assert list(steps) == metrics["timesteps"][0].tolist()
    np.testing.assert_allclose(values, metrics["episode_return"].mean(axis=0), rtol=1e-5)
    assert "approx_kl" in scalars and "entropy" in scalars


def test_eval_and_plot_commands(pendulum_run_dir, tmp_path):
    out, _ = pendulum_run_dir
    proc = _run("eval", str(out), "--episodes", "4")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("seed ") == 4 and "mean return:" in proc.stdout
    target = tmp_path / "both.png"
    proc = _run("plot", str(out), str(out), "-o", str(target))
    assert proc.returncode == 0, proc.stderr
    assert target.stat().st_size > 10_000


# -- interrupt and resume ---------------------------------------------------------------------

RESUME_ARGS = ("--total-timesteps", "600000", "--chunk-updates", "10", "--seeds", "2", "--plain")


@pytest.mark.slow
def test_sigint_then_resume_equals_uninterrupted_run(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    proc = _run("train", *RESUME_ARGS, "--out", str(whole))
    assert proc.returncode == 0, proc.stderr
    # The same run, interrupted by Ctrl-C once it is under way...
    code, rest, err = interrupt_cli("train", *RESUME_ARGS, "--out", str(parts), at="update 200/")
    assert code == 130, err
    assert "Traceback" not in err
    assert "checkpoint saved" in rest
    state, _, _ = jppo.load(str(parts))
    stopped = int(np.asarray(state.step)[0])
    assert 200 <= stopped < 1171
    with open(parts / "metrics.csv") as f:
        assert sum(1 for _ in f) == 1 + 2 * stopped
    # ...and resumed: the metrics are those of the uninterrupted run, bit for bit.
    proc = _run("train", "--resume", str(parts), "--plain")
    assert proc.returncode == 0, proc.stderr
    assert f"resuming at update {stopped}/1171" in proc.stdout
    assert (parts / "metrics.csv").read_text() == (whole / "metrics.csv").read_text()
    assert (parts / "evaluations.csv").read_text() == (whole / "evaluations.csv").read_text()


def test_resume_refuses_config_flags(tmp_path):
    (tmp_path / "run.json").write_text("{}")
    proc = _run("train", "--resume", str(tmp_path), "--num-envs", "8")
    assert proc.returncode == 2
    assert "--resume continues the saved config and options; drop --num-envs" in proc.stderr


# -- a real terminal ------------------------------------------------------------------------


def test_progress_bar_renders_in_a_pseudo_terminal(tmp_path):
    import pty

    env = _env()
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # as a user's shell: jppo's own cache
    env.update(TERM="xterm-256color", COLUMNS="160", LINES="40")
    leader, follower = pty.openpty()  # jppo's stdout and stderr are a terminal
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jppo",
            "train",
            "--total-timesteps",
            "20480",
            "--out",
            str(tmp_path / "tty"),
            "--compile-cache",
            str(tmp_path / "xla"),
        ],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    child.wait(timeout=600)
    os.close(leader)
    text = b"".join(chunks).decode(errors="replace")
    assert child.returncode == 0, text
    assert "\x1b[" in text  # rich drew with terminal control codes
    assert "━" in text  # the bar
    assert re.search(r"40/40 updates", text)
    assert "steps/s" in text and "ETA" in text
    assert "summary" in text and "final return" in text
    assert not re.search(r"^update \d+/", text, re.M)  # not the plain lines
    assert any((tmp_path / "xla").iterdir())  # the compiled programs were kept


def test_bench_prints_a_throughput_table(capsys):
    argv = ["bench", "--num-envs", "4", "--updates", "1", "--repeats", "1", "--hidden-sizes", "8"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "Device: CPU" in out and "jax 0.1" in out
    rows = [line for line in out.splitlines() if line.startswith("| 4 |")]
    assert len(rows) == 1
    num_envs, seeds, updates, sps, run_s, compile_s = (c.strip() for c in rows[0][1:-1].split("|"))
    assert (seeds, updates) == ("1", "1")
    # Run seconds are printed to 4 significant digits, so steps/s agrees to ~1e-3 even for
    # a run of a few milliseconds (4 decimals would round 1.857 ms to 0.0019, 2.3 % off).
    assert float(sps.replace(",", "")) == pytest.approx(512 / float(run_s), rel=1e-3)
    assert "network mlp (8,)" in out


def test_bench_rejects_sizes_the_config_refuses(capsys):
    assert cli.main(["bench", "--sizes", "4,6", "--num-minibatches", "4", "--num-steps", "5"]) == 2
    assert "PPOConfig" in capsys.readouterr().err
