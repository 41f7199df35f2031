"""Actor and critic networks behind a functional boundary, and the policy distributions.

Flax linen modules live here and nowhere else. The rest of jppo sees a `Network`: plain
`init` / `actor` / `critic` functions over parameter pytrees. Every apply function takes a
time-major sequence — observations `[T, B, obs_dim]`, episode-start flags `reset [T, B]` and
a recurrent carry — so feed-forward and recurrent policies share one interface (an MLP ignores
`reset` and the carry; its carry is the empty dict).

Initialization follows PPO practice: orthogonal weights (gain sqrt(2) in the torso, 0.01 on
the policy head, 1.0 on the value head), zero biases; a state-independent learnable `log_std`
for continuous actions, initialized at `log_std_init`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jppo.envs import EnvSpec

_ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu, "gelu": nn.gelu, "silu": nn.silu,
                "elu": nn.elu}


def _dense(features: int, gain: float) -> nn.Dense:
    return nn.Dense(features, kernel_init=nn.initializers.orthogonal(gain),
                    bias_init=nn.initializers.zeros)


class MLP(nn.Module):
    hidden_sizes: tuple[int, ...]
    activation: str

    @nn.compact
    def __call__(self, x):
        act = _ACTIVATIONS[self.activation]
        for size in self.hidden_sizes:
            x = act(_dense(size, np.sqrt(2))(x))
        return x


class ResetLSTMCell(nn.Module):
    """One LSTM step whose carry returns to the initial (zero) state where `reset` is set."""

    features: int

    @nn.compact
    def __call__(self, carry, inputs):
        x, reset = inputs  # [B, D], [B]
        carry = jax.tree.map(lambda c: jnp.where(reset[:, None], jnp.zeros_like(c), c), carry)
        carry, y = nn.OptimizedLSTMCell(self.features)(carry, x)
        return carry, y


class Head(nn.Module):
    """MLP torso (optionally followed by a reset-aware LSTM) and a linear output layer.

    Input obs [T, B, D], reset [T, B], carry (c, h) each [B, H] (LSTM) or {} (MLP).
    Output [T, B, out_features] and the new carry.
    """

    hidden_sizes: tuple[int, ...]
    activation: str
    out_features: int
    out_gain: float
    lstm_size: int | None = None

    @nn.compact
    def __call__(self, obs, reset, carry):
        x = MLP(self.hidden_sizes, self.activation)(obs)
        if self.lstm_size is not None:
            scan = nn.scan(ResetLSTMCell, variable_broadcast="params",
                           split_rngs={"params": False}, in_axes=0, out_axes=0)
            carry, x = scan(self.lstm_size)(carry, (x, reset))
        return _dense(self.out_features, self.out_gain)(x), carry


class Network(NamedTuple):
    """The functional boundary of actor and critic.

    init(key) -> params {"actor": ..., "critic": ...}
    initial_carry(batch_size) -> {"actor": carry, "critic": carry} ({} entries for an MLP)
    actor(actor_params, obs [T,B,D], reset [T,B], carry) -> (dist_params, carry);
      dist_params: {"logits": [T,B,A]} or {"mean": [T,B,A], "log_std": [T,B,A]}
    critic(critic_params, obs, reset, carry) -> (values [T,B] or quantiles [T,B,N], carry)
    """

    init: Callable[[jax.Array], Any]
    initial_carry: Callable[[int], Any]
    actor: Callable[..., tuple[Any, Any]]
    critic: Callable[..., tuple[jax.Array, Any]]
    recurrent: bool
    discrete: bool


def make_network(spec: EnvSpec, *, hidden_sizes=(64, 64), activation="tanh",
                 network="mlp", lstm_size=128, critic="scalar", num_quantiles=32,
                 log_std_init=-0.5) -> Network:
    """Build actor and critic for an environment spec (static settings only)."""
    recurrent = network == "lstm"
    lstm = lstm_size if recurrent else None
    actor_mod = Head(hidden_sizes, activation, spec.action_dim, 0.01, lstm)
    num_values = num_quantiles if critic == "quantile" else 1
    critic_mod = Head(hidden_sizes, activation, num_values, 1.0, lstm)

    def initial_carry(batch_size: int):
        if not recurrent:
            return {"actor": {}, "critic": {}}
        zeros = jnp.zeros((batch_size, lstm_size), jnp.float32)
        return {"actor": (zeros, zeros), "critic": (zeros, zeros)}

    def init(key):
        k_actor, k_critic = jax.random.split(key)
        obs = jnp.zeros((1, 1, spec.obs_dim), jnp.float32)
        reset = jnp.zeros((1, 1), bool)
        carry = initial_carry(1)
        actor = actor_mod.init(k_actor, obs, reset, carry["actor"])
        if not spec.discrete:
            log_std = jnp.full((spec.action_dim,), log_std_init, jnp.float32)
            actor = {"params": {**actor["params"], "log_std": log_std}}
        return {"actor": actor, "critic": critic_mod.init(k_critic, obs, reset, carry["critic"])}

    def actor(params, obs, reset, carry):
        out, carry = actor_mod.apply({"params": _without_log_std(params)}, obs, reset, carry)
        if spec.discrete:
            return {"logits": out}, carry
        log_std = jnp.broadcast_to(params["params"]["log_std"], out.shape)
        return {"mean": out, "log_std": log_std}, carry

    def critic_fn(params, obs, reset, carry):
        out, carry = critic_mod.apply(params, obs, reset, carry)
        return (out[..., 0] if num_values == 1 else out), carry

    return Network(init, initial_carry, actor, critic_fn, recurrent, spec.discrete)


def _without_log_std(params):
    return {k: v for k, v in params["params"].items() if k != "log_std"}


def make_dist(dist_params: dict) -> distrax.Distribution:
    """The policy distribution: Categorical from logits, or a diagonal Gaussian."""
    if "logits" in dist_params:
        return distrax.Categorical(logits=dist_params["logits"])
    return distrax.MultivariateNormalDiag(dist_params["mean"], jnp.exp(dist_params["log_std"]))


def deterministic_action(dist_params: dict) -> jax.Array:
    """The distribution's mode: argmax of the logits, or the Gaussian mean."""
    if "logits" in dist_params:
        return jnp.argmax(dist_params["logits"], axis=-1)
    return dist_params["mean"]


def env_action(action: jax.Array, spec: EnvSpec) -> jax.Array:
    """The action sent to the environment: continuous samples clipped to the space's bounds.

    The unclipped sample is what the log-probability is computed for.
    """
    if spec.discrete:
        return action
    return jnp.clip(action, spec.action_low, spec.action_high)
