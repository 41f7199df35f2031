"""The `jppo` command line (`python -m jppo`)."""

import subprocess
import sys

from jppo import cli


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "jppo", *args], capture_output=True, text=True, timeout=600
    )


def test_train_prints_final_return():
    proc = _run("train", "--total-timesteps", "1024", "--num-steps", "64", "--seeds", "2")
    assert proc.returncode == 0, proc.stderr
    assert "CartPole-v1, 2 seed(s), 4 updates of 4x64 steps" in proc.stdout
    assert "final mean episode return:" in proc.stdout


def test_bad_value_names_the_field():
    proc = _run("train", "--gamma", "1.5")
    assert proc.returncode == 2
    assert "PPOConfig.gamma=1.5" in proc.stderr


def test_every_config_field_is_an_option():
    parser = cli.build_parser()
    args = parser.parse_args(
        [
            "train",
            "--hidden-sizes",
            "(32, 32)",
            "--target-kl",
            "0.02",
            "--critic-learning-rate",
            "None",
            "--normalize-obs",
            "true",
        ]
    )
    assert args.hidden_sizes == (32, 32) and args.target_kl == 0.02
    assert args.critic_learning_rate is None and args.normalize_obs is True
