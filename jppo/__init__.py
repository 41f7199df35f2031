"""jppo: PPO in JAX, the whole training run as one jit-compiled program.

Example:
    >>> import jax, jppo
    >>> out = jppo.train(jppo.PPOConfig(), jax.random.key(0))
    >>> out.metrics["episode_return"][-1]
"""

from jppo import advantages, diagnostics, losses, normalize, pbt
from jppo.checkpoint import CheckpointError, load, save
from jppo.config import PPOConfig
from jppo.diagnostics import Finding, health_check
from jppo.evaluation import evaluate
from jppo.export import make_policy
from jppo.pbt import PBTConfig, PBTResult, train_pbt
from jppo.sweep import sweep
from jppo.trainer import Trainer, make_train, make_trainer, train, train_seeds
from jppo.types import Actors, Hyperparams, Learner, TrainResult, TrainState

__version__ = "0.1.0"

__all__ = [
    "Actors",
    "CheckpointError",
    "Finding",
    "Hyperparams",
    "Learner",
    "PBTConfig",
    "PBTResult",
    "PPOConfig",
    "TrainResult",
    "TrainState",
    "Trainer",
    "advantages",
    "diagnostics",
    "evaluate",
    "health_check",
    "load",
    "losses",
    "make_policy",
    "make_train",
    "make_trainer",
    "normalize",
    "pbt",
    "save",
    "sweep",
    "train",
    "train_pbt",
    "train_seeds",
]
