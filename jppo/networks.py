"""Actor and critic networks behind a functional boundary.

Flax linen modules live here and nowhere else. The rest of jppo sees a `Network`: plain
`init` / `actor` / `critic` functions over parameter pytrees. Every apply function takes a
time-major sequence — observations `[T, B, obs_dim]`, episode-start flags `reset [T, B]` and
a recurrent carry — so feed-forward and recurrent policies share one interface (an MLP ignores
`reset` and the carry; its carry is the empty dict).

Recurrent networks (`network="lstm"`) are MLP torso -> LSTM -> linear layer,
their parameters laid out as flax's `OptimizedLSTMCell`'s. For speed the torsos and the
LSTMs' input projections run for all steps at once, actor and critic LSTMs step together in
one `lax.scan` (`jppo.lstm.lstm_scan`, with a hand-written backward pass), and the carry is
reset to the initial (zero) state at every step whose `reset` flag is set
(benchmarks/NOTES.md measures each of these choices).

Initialization follows PPO practice: orthogonal weights (gain sqrt(2) in the torso, 0.01 on
the policy head, 1.0 on the value head), zero biases; a state-independent learnable `log_std`
for continuous actions, initialized at `log_std_init`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jppo.lstm import lstm_scan
from jppo.types import EnvSpec

_ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu, "gelu": nn.gelu, "silu": nn.silu, "elu": nn.elu}
ACTIVATIONS = tuple(_ACTIVATIONS)  # accepted names of `activation`
NETWORK_KINDS = ("mlp", "lstm")  # accepted names of `network`
CRITIC_KINDS = ("scalar", "quantile")  # accepted names of `critic`


# Output layers this narrow are computed one column at a time (see `_dot_general`).
_COLUMNWISE_MAX_OUTPUTS = 3


def _dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """`lax.dot_general` for Dense layers, with a layer of 2-3 outputs as that many
    matrix-vector products.

    XLA:CPU runs a matmul whose output has 2 or 3 columns through its general matrix-matrix
    path, and the weight gradient of such a layer (x^T g, contracting over the rows) is
    several times slower than the same work done as one matrix-vector product per column:
    a whole 64 -> 2 policy-head layer, forward and backward, is 1.4-1.8x faster this way at
    128 to 16,384 rows and ~3x at the 4 rows of a rollout step (benchmarks/NOTES.md). With
    one output XLA already takes the matrix-vector path; at 4 outputs the column-wise form
    loses at some sizes, and from 6 on the matmul is as fast or faster.
    """
    (lhs_contract, rhs_contract), batch_dims = dimension_numbers
    n = rhs.shape[-1]
    columnwise = (
        rhs.ndim == 2
        and tuple(rhs_contract) == (0,)
        and batch_dims == ((), ())
        and 2 <= n <= _COLUMNWISE_MAX_OUTPUTS
    )
    if not columnwise:
        return jax.lax.dot_general(
            lhs, rhs, dimension_numbers, precision, preferred_element_type=preferred_element_type
        )
    column = lambda j: jax.lax.dot_general(
        lhs,
        rhs[:, j],
        ((lhs_contract, (0,)), ((), ())),
        precision,
        preferred_element_type=preferred_element_type,
    )
    return jnp.stack([column(j) for j in range(n)], axis=-1)


def _dense(features: int, gain: float, orthogonal=nn.initializers.orthogonal, **kwargs) -> nn.Dense:
    return nn.Dense(
        features,
        kernel_init=orthogonal(gain),
        bias_init=nn.initializers.zeros,
        dot_general=_dot_general,
        **kwargs,
    )


def orthogonal_init(scale: float = 1.0):
    """`nn.initializers.orthogonal(scale)` for kernels [..., K], without LAPACK.

    The same Gaussian draw as jax's initializer, orthonormalized by Gram-Schmidt (each
    projection applied twice, which keeps float32 columns orthonormal to ~1e-6): Q of the QR
    with diag(R) > 0, i.e. jax's result up to rounding. Why: under `vmap` (train_seeds) jax's
    batched QR runs on XLA:CPU's intra-op thread pool, and with several QRs scheduled at once
    on a 2-thread pool each worker waits inside its QR for sub-tasks no thread is left to run
    — the program hangs (jaxlib 0.10.2, seen with the LSTM's dozen orthogonal kernels).
    """

    def init(key, shape, dtype=jnp.float32):
        rows, cols = int(np.prod(shape[:-1])), shape[-1]
        z = jax.random.normal(key, (max(rows, cols), min(rows, cols)), dtype)

        def column(j, q):
            v = jax.lax.dynamic_index_in_dim(z, j, axis=1, keepdims=False)
            for _ in range(2):
                v = v - q @ (q.T @ v)
            return q.at[:, j].set(v / jnp.linalg.norm(v))

        q = jax.lax.fori_loop(0, z.shape[1], column, jnp.zeros_like(z))
        q = q.T if rows < cols else q
        return (scale * q).reshape(shape).astype(dtype)

    return init


def _deferred_orthogonal(gain: float):
    """Kernel initializer of the MLP path: a kernel filled with `gain`, a placeholder.

    The MLP network's `init` passes every such kernel through `orthogonalize`, which makes it
    `gain` times an orthogonal matrix. The flax modules of that path are only initialized
    through it.
    """

    def init(key, shape, dtype=jnp.float32):
        del key  # the Gaussian draw happens once, in `orthogonalize`
        return jnp.full(shape, gain, dtype)

    return init


def orthogonalize(key: jax.Array, params):
    """Every `kernel` leaf K [..., k] of `params`, filled with its gain, becomes gain * Q.

    Q is distributed as `nn.initializers.orthogonal` draws it: Q of the QR of a Gaussian
    matrix [max(n, k), min(n, k)] (n = prod of K's leading axes), signs fixed so diag(R) > 0,
    transposed when n < k. All kernels' Gaussians come from one `jax.random.normal` call. Why:
    each random call (flax's per-parameter key derivation, and every initializer's draw)
    compiles to its own threefry loop on CPU; one draw instead of a dozen cut the default
    program's compile time by ~0.3 s (benchmarks/NOTES.md). Every `kernel` leaf must be
    such a placeholder (the MLP path's modules make them with `_deferred_orthogonal`).
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)

    def is_kernel(path):
        return getattr(path[-1], "key", None) == "kernel"

    kernels = [leaf for path, leaf in leaves if is_kernel(path)]
    z = jax.random.normal(key, (sum(k.size for k in kernels),), jnp.float32)
    out, offset = [], 0
    for path, leaf in leaves:
        if not is_kernel(path):
            out.append(leaf)
            continue
        rows, cols = leaf.size // leaf.shape[-1], leaf.shape[-1]
        a = z[offset : offset + leaf.size].reshape(max(rows, cols), min(rows, cols))
        offset += leaf.size
        q, r = jnp.linalg.qr(a)
        q = q * jnp.sign(jnp.diagonal(r))
        q = q.T if rows < cols else q
        gain = leaf.reshape(-1)[0]
        out.append((gain * q).reshape(leaf.shape).astype(leaf.dtype))
    return jax.tree.unflatten(treedef, out)


class MLP(nn.Module):
    hidden_sizes: tuple[int, ...]
    activation: str
    orthogonal: Callable = nn.initializers.orthogonal  # (gain) -> kernel initializer

    @nn.compact
    def __call__(self, x):
        act = _ACTIVATIONS[self.activation]
        for size in self.hidden_sizes:
            x = act(_dense(size, np.sqrt(2), self.orthogonal)(x))
        return x


class Head(nn.Module):
    """Feed-forward network: MLP torso and a linear output layer (recurrent: `RecurrentHead`).

    Input obs [T, B, D], reset [T, B] and carry {} (both ignored).
    Output [T, B, out_features] and the carry.
    """

    hidden_sizes: tuple[int, ...]
    activation: str
    out_features: int
    out_gain: float

    @nn.compact
    def __call__(self, obs, reset, carry):
        # Dense layers on 2-D rows: XLA:CPU's gradient of a matmul with several leading
        # axes is several times slower than the flat one (benchmarks/NOTES.md).
        x = MLP(self.hidden_sizes, self.activation, _deferred_orthogonal)(
            obs.reshape(-1, obs.shape[-1])
        )
        out = _dense(self.out_features, self.out_gain, _deferred_orthogonal)(x)
        return out.reshape(obs.shape[:-1] + out.shape[-1:]), carry


class Network(NamedTuple):
    """The functional boundary of actor and critic, the same for MLPs and LSTMs.

    init(key) -> params {"actor": ..., "critic": ...}
    initial_carry(batch_size) -> {"actor": carry, "critic": carry} ({} entries for an MLP)
    actor(actor_params, obs [T,B,D], reset [T,B], carry) -> (dist_params, carry);
      dist_params: {"logits": [T,B,A]} or {"mean": [T,B,A], "log_std": [T,B,A]}
    critic(critic_params, obs, reset, carry) -> (values [T,B] or quantiles [T,B,N], carry)
    actor_critic(params, obs, reset, carry) -> (dist_params, values, carry): both at once on
      the full params and carry (recurrent: one fused scan)
    value(params, obs, reset, carry) -> (values, carry): the critic on the full params and
      carry (also with `lstm_shared`, where `critic` alone is unavailable)
    step(params, obs [B,D], reset [B], carry, prev_final_obs [B,D]) -> (dist_params [B,...],
      values [B] or [B,N] or None, carry, pending): one rollout step. `prev_final_obs` is
      the previous step's true next observation; `pending` is what `bootstrap` needs to
      value it (an LSTM values it inside this step's fused scan, continuing the pre-reset
      carry; an MLP passes the observation through and values all of them in one batched
      pass). values None: the network does not value `obs` inside the step (an MLP); the
      rollout values the stored observations after its loop with `value`
    bootstrap(params, pending [T,...], final_obs [B,D], carry) -> next_values [T,B(,N)]: the
      critic's value of every step's true next observation, from the steps' `pending`
      records (record t belongs to step t − 1), the last step's `final_obs` and the carry
      after the last step
    A recurrent carry is reset to the initial (zero) state at steps whose `reset` is set,
    before the step is taken.
    """

    init: Callable[[jax.Array], Any]
    initial_carry: Callable[[int], Any]
    actor: Callable[..., tuple[Any, Any]]
    critic: Callable[..., tuple[jax.Array, Any]]
    actor_critic: Callable[..., tuple[Any, jax.Array, Any]]
    value: Callable[..., tuple[jax.Array, Any]]
    step: Callable[..., tuple[Any, jax.Array, Any, Any]]
    bootstrap: Callable[..., jax.Array]
    recurrent: bool
    discrete: bool


def make_network(
    spec: EnvSpec,
    *,
    hidden_sizes=(64, 64),
    activation="tanh",
    network="mlp",
    lstm_size=128,
    critic="scalar",
    num_quantiles=32,
    log_std_init=-0.5,
    lstm_shared=False,
    lstm_unroll=None,
    lstm_stacked=None,
) -> Network:
    """Build actor and critic for an environment spec (static settings only).

    LSTM speed settings (numerics unchanged): `lstm_unroll` is the unroll factor of the
    sequential scans and `lstm_stacked` runs the torsos of the N networks of a fused scan
    as batched matmuls; None picks by backend (CPU: 1 and False; accelerators: 8 and True).
    """
    num_values = num_quantiles if critic == "quantile" else 1
    if network == "lstm":
        on_cpu = jax.default_backend() == "cpu"
        unroll = lstm_unroll or (1 if on_cpu else 8)
        stacked = (not on_cpu) if lstm_stacked is None else lstm_stacked
        return _recurrent_network(
            spec,
            tuple(hidden_sizes),
            activation,
            lstm_size,
            num_values,
            log_std_init,
            lstm_shared,
            unroll,
            stacked,
        )
    actor_mod = Head(hidden_sizes, activation, spec.action_dim, 0.01)
    critic_mod = Head(hidden_sizes, activation, num_values, 1.0)

    def initial_carry(batch_size: int):
        return {"actor": {}, "critic": {}}

    def init(key):
        obs = jnp.zeros((1, 1, spec.obs_dim), jnp.float32)
        reset = jnp.zeros((1, 1), bool)
        carry = initial_carry(1)
        # The modules' kernels are gain placeholders (no random draw): `orthogonalize` draws
        # all of both networks' kernels at once.
        actor = actor_mod.init(key, obs, reset, carry["actor"])
        critic = critic_mod.init(key, obs, reset, carry["critic"])
        params = orthogonalize(key, {"actor": actor, "critic": critic})
        if not spec.discrete:
            log_std = jnp.full((spec.action_dim,), log_std_init, jnp.float32)
            params["actor"] = {"params": {**params["actor"]["params"], "log_std": log_std}}
        return params

    def actor(params, obs, reset, carry):
        out, carry = actor_mod.apply({"params": _without_log_std(params)}, obs, reset, carry)
        if spec.discrete:
            return {"logits": out}, carry
        log_std = jnp.broadcast_to(params["params"]["log_std"], out.shape)
        return {"mean": out, "log_std": log_std}, carry

    def critic_fn(params, obs, reset, carry):
        out, carry = critic_mod.apply(params, obs, reset, carry)
        return (out[..., 0] if num_values == 1 else out), carry

    def actor_critic(params, obs, reset, carry):
        dist_params, _ = actor(params["actor"], obs, reset, carry["actor"])
        values, _ = critic_fn(params["critic"], obs, reset, carry["critic"])
        return dist_params, values, carry

    def value(params, obs, reset, carry):
        return critic_fn(params["critic"], obs, reset, carry["critic"])[0], carry

    def step(params, obs, reset, carry, prev_final_obs):
        # Only the actor runs inside the rollout's sequential loop: the critic has no effect
        # on what is collected, so the rollout values all its observations afterwards in one
        # batched pass (values None), as it does the final observations (`bootstrap`).
        dist_params, carry_actor = actor(params["actor"], obs[None], reset[None], carry["actor"])
        dist_params = jax.tree.map(lambda x: x[0], dist_params)
        return dist_params, None, {**carry, "actor": carry_actor}, prev_final_obs

    def bootstrap(params, pending, final_obs, carry):
        next_obs = jnp.concatenate([pending[1:], final_obs[None]])  # [T, B, D]
        # Valued env-major ([B, T] rows): when the env axis is sharded across devices, each
        # device's rows are then one contiguous block and stay where they are.
        next_obs = jnp.swapaxes(next_obs, 0, 1)
        values, _ = critic_fn(
            params["critic"], next_obs, jnp.zeros(next_obs.shape[:2], bool), carry["critic"]
        )
        return jnp.swapaxes(values, 0, 1)

    return Network(
        init=init,
        initial_carry=initial_carry,
        actor=actor,
        critic=critic_fn,
        actor_critic=actor_critic,
        value=value,
        step=step,
        bootstrap=bootstrap,
        recurrent=False,
        discrete=spec.discrete,
    )


def _without_log_std(params):
    return {k: v for k, v in params["params"].items() if k != "log_std"}


# -- recurrent networks ---------------------------------------------------------------------

_GATES = ("i", "f", "g", "o")  # flax's LSTM gate order and parameter names (ii..io, hi..ho)


class RecurrentHead(nn.Module):
    """The parameters of one recurrent network, defined by a single time step.

    MLP torso -> flax `nn.OptimizedLSTMCell` -> linear output layer. Calling the module runs
    one step without reset: obs [B, D], carry (c, h) each [B, H] -> (out [B, out_features],
    carry). It creates the parameters (and is the step-by-step reference in the tests);
    sequences run through `lstm_scan` on the same parameters, much faster.
    """

    hidden_sizes: tuple[int, ...]
    activation: str
    lstm_size: int
    out_features: int
    out_gain: float

    @nn.compact
    def __call__(self, obs, carry):
        x = MLP(self.hidden_sizes, self.activation, orthogonal_init, name="torso")(obs)
        carry, h = nn.OptimizedLSTMCell(
            self.lstm_size, recurrent_kernel_init=orthogonal_init(), name="lstm"
        )(carry, x)
        out = _dense(self.out_features, self.out_gain, orthogonal_init, name="out")(h)
        return out, carry


def _gates_param(lstm, kind: str, leaf: str) -> jax.Array:
    """flax's per-gate parameters ("ii".."io" input kernels [K, H]; "hi".."ho" recurrent
    kernels [H, H] and biases [H]) concatenated in gate order i, f, g, o: [..., 4H]."""
    return jnp.concatenate([lstm[f"{kind}{g}"][leaf] for g in _GATES], axis=-1)


def _gate_inputs(params, obs: jax.Array, activation: str) -> jax.Array:
    """The input part of one LSTM's gates, x_t·W_i + b, at every step at once.

    params: a `RecurrentHead`'s "params"; obs [T, B, D] -> [T, B, 4H] (gates i, f, g, o).
    The torso and the input projection are plain matmuls over all T·B rows, outside the
    sequential scan, which keeps only h·W_h.
    """
    act = _ACTIVATIONS[activation]
    x = obs
    for i in range(len(params["torso"])):
        x = act(_linear(params["torso"][f"Dense_{i}"], x))
    lstm = params["lstm"]
    return _matmul(x, _gates_param(lstm, "i", "kernel")) + _gates_param(lstm, "h", "bias")


def _stacked_gate_inputs(nets: list, obs: jax.Array, activation: str) -> jax.Array:
    """`_gate_inputs` of N networks as batched matmuls: one kernel per layer for all N.

    nets: N `RecurrentHead` "params"; obs [N, T, B, D] -> [N, T, B, 4H]. Fewer, larger
    kernels for accelerators; on XLA:CPU the gradient of a batched matmul is slow, so the
    CPU path runs `_gate_inputs` per network.
    """
    act = _ACTIVATIONS[activation]
    stack = lambda trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees)
    x = obs
    for i in range(len(nets[0]["torso"])):
        layer = stack([p["torso"][f"Dense_{i}"] for p in nets])
        x = act(jnp.einsum("ntbd,ndk->ntbk", x, layer["kernel"]) + layer["bias"][:, None, None])
    w_in = jnp.stack([_gates_param(p["lstm"], "i", "kernel") for p in nets])
    bias = jnp.stack([_gates_param(p["lstm"], "h", "bias") for p in nets])
    return jnp.einsum("ntbk,nkg->ntbg", x, w_in) + bias[:, None, None]


def _run_lstms(
    nets: list, obs: list, reset: list, carries: list, activation: str, unroll: int, stacked: bool
):
    """Run N `RecurrentHead` bodies (torso + LSTM) with one fused scan.

    nets: their "params" dicts; obs: N arrays [T, B, D]; reset: N arrays [T, B]; carries:
    N (c, h), each [B, H]; stacked: torsos as batched matmuls (`_stacked_gate_inputs`).
    Returns (N arrays h [T, B, H], list of the N final carries).
    """
    if stacked:
        gate_x = tuple(_stacked_gate_inputs(nets, jnp.stack(obs), activation))
    else:
        gate_x = tuple(_gate_inputs(p, o, activation) for p, o in zip(nets, obs))
    w_h = jnp.stack([_gates_param(p["lstm"], "h", "kernel") for p in nets])
    carry = tuple(jnp.stack(x) for x in zip(*carries))  # (c, h), each [N, B, H]
    (c, h), hs = lstm_scan(w_h, gate_x, jnp.stack(reset, axis=1), carry, unroll)
    return hs, [(c[n], h[n]) for n in range(len(nets))]


def _linear(params, x):
    return _matmul(x, params["kernel"]) + params["bias"]


def _matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """x [..., K] @ w [K, M] as one 2-D matmul: on XLA:CPU the gradient of a matmul with
    several leading axes (dW contracting over T and B) is ~4x slower than the flat one."""
    flat = x.reshape(-1, x.shape[-1])
    out = _dot_general(flat, w, (((1,), (0,)), ((), ())))
    return out.reshape(x.shape[:-1] + w.shape[-1:])


def _recurrent_network(
    spec: EnvSpec,
    hidden_sizes,
    activation,
    lstm_size,
    num_values,
    log_std_init,
    shared: bool,
    unroll: int,
    stacked: bool,
) -> Network:
    """Actor and critic LSTMs (separate, or one shared torso + LSTM with two output layers).

    Shared: the torso and LSTM live in the actor's parameters, the critic holds only its
    output layer (so its value-loss gradient reaches the shared body through the actor's
    optimizer chain); the critic's carry is {} and `critic` alone is unavailable.
    """
    actor_mod = RecurrentHead(hidden_sizes, activation, lstm_size, spec.action_dim, 0.01)
    critic_mod = RecurrentHead(hidden_sizes, activation, lstm_size, num_values, 1.0)
    value_out = _dense(num_values, 1.0, orthogonal_init)

    def initial_carry(batch_size: int):
        zeros = jnp.zeros((batch_size, lstm_size), jnp.float32)
        return {"actor": (zeros, zeros), "critic": {} if shared else (zeros, zeros)}

    def init(key):
        k_actor, k_critic = jax.random.split(key)
        obs = jnp.zeros((1, spec.obs_dim), jnp.float32)
        carry = initial_carry(1)["actor"]
        actor = actor_mod.init(k_actor, obs, carry)
        if not spec.discrete:
            log_std = jnp.full((spec.action_dim,), log_std_init, jnp.float32)
            actor = {"params": {**actor["params"], "log_std": log_std}}
        if shared:
            critic = {"params": {"out": value_out.init(k_critic, carry[1])["params"]}}
        else:
            critic = critic_mod.init(k_critic, obs, carry)
        return {"actor": actor, "critic": critic}

    def policy(actor_params, h):
        out = _linear(actor_params["params"]["out"], h)
        if spec.discrete:
            return {"logits": out}
        return {
            "mean": out,
            "log_std": jnp.broadcast_to(actor_params["params"]["log_std"], out.shape),
        }

    def values(critic_params, h):
        out = _linear(critic_params["params"]["out"], h)
        return out[..., 0] if num_values == 1 else out

    def run(nets, obs, reset, carries):
        """nets: params with "params"; obs, reset: one for all nets, or one per net."""
        n = len(nets)
        obs, reset = (x if isinstance(x, list) else [x] * n for x in (obs, reset))
        return _run_lstms(
            [p["params"] for p in nets], obs, reset, carries, activation, unroll, stacked
        )

    def actor(params, obs, reset, carry):
        hs, (carry,) = run([params], obs, reset, [carry])
        return policy(params, hs[0]), carry

    def critic(params, obs, reset, carry):
        if shared:
            raise ValueError(
                "with lstm_shared the critic runs on the actor's LSTM: use "
                "Network.actor_critic or Network.value"
            )
        hs, (carry,) = run([params], obs, reset, [carry])
        return values(params, hs[0]), carry

    def actor_critic(params, obs, reset, carry):
        if shared:
            hs, (c_actor,) = run([params["actor"]], obs, reset, [carry["actor"]])
            return (
                policy(params["actor"], hs[0]),
                values(params["critic"], hs[0]),
                {"actor": c_actor, "critic": {}},
            )
        hs, (c_actor, c_critic) = run(
            [params["actor"], params["critic"]], obs, reset, [carry["actor"], carry["critic"]]
        )
        return (
            policy(params["actor"], hs[0]),
            values(params["critic"], hs[1]),
            {"actor": c_actor, "critic": c_critic},
        )

    def value(params, obs, reset, carry):
        if shared:
            hs, (c_actor,) = run([params["actor"]], obs, reset, [carry["actor"]])
            return values(params["critic"], hs[0]), {"actor": c_actor, "critic": {}}
        out, c_critic = critic(params["critic"], obs, reset, carry["critic"])
        return out, {**carry, "critic": c_critic}

    def step(params, obs, reset, carry, final_obs):
        if shared:
            bodies, carries = [params["actor"]] * 2, [carry["actor"]] * 2
        else:
            bodies = [params["actor"], params["critic"], params["critic"]]
            carries = [carry["actor"], carry["critic"], carry["critic"]]
        obs_in = [obs[None]] * (len(bodies) - 1) + [final_obs[None]]
        no_reset = jnp.zeros_like(reset)
        hs, new = run(bodies, obs_in, [reset[None]] * (len(bodies) - 1) + [no_reset[None]], carries)
        hs = [h[0] for h in hs]
        new_carry = {"actor": new[0], "critic": {} if shared else new[1]}
        dist = policy(params["actor"], hs[0])
        return (dist, values(params["critic"], hs[-2]), new_carry, values(params["critic"], hs[-1]))

    def bootstrap(params, pending, final_obs, carry):
        last, _ = value(params, final_obs[None], jnp.zeros((1,) + final_obs.shape[:1], bool), carry)
        return jnp.concatenate([pending[1:], last])

    return Network(
        init=init,
        initial_carry=initial_carry,
        actor=actor,
        critic=critic,
        actor_critic=actor_critic,
        value=value,
        step=step,
        bootstrap=bootstrap,
        recurrent=True,
        discrete=spec.discrete,
    )
