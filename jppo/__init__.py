"""jppo: PPO in JAX, the whole training run as one jit-compiled program.

Example:
    >>> import jax, jppo
    >>> out = jppo.train(jppo.PPOConfig(), jax.random.key(0))
    >>> out.metrics["episode_return"][-1]
"""

from jppo import advantages
from jppo import losses
from jppo import normalize
from jppo.config import PPOConfig
from jppo.trainer import evaluate
from jppo.trainer import make_train
from jppo.trainer import train
from jppo.trainer import train_seeds
from jppo.types import Hyperparams
from jppo.types import TrainResult
from jppo.types import TrainState

__version__ = "0.1.0"

__all__ = [
    "Hyperparams",
    "PPOConfig",
    "TrainResult",
    "TrainState",
    "advantages",
    "evaluate",
    "losses",
    "make_train",
    "normalize",
    "train",
    "train_seeds",
]
