"""The environments' PRNG keys as threefry-2x32 with a straight-line lowering: same bits, no loop.

JAX lowers its `threefry2x32` hash on CPU as a `fori_loop` over the hash's five groups of
rounds (it keeps large programs quick to compile). Inside the rollout's scan that loop runs
for every environment step: gymnax's auto-resetting `step` splits its key and the reset draws
a fresh state, so each step executes two 5-iteration while loops whose bodies are one tiny
fusion and a copy per loop-carried buffer. At 4 CartPole envs removing them makes a whole
training run ~6 % faster (benchmarks/NOTES.md).

`straight_line(tree)` re-labels the threefry keys in a pytree with the PRNG implementation
below, which computes the same hash with plain `jnp` integer ops. XLA fuses the 20 rounds into the
surrounding elementwise code, so the env's randomness costs a few fused instructions. The
bits are the ones `jax.random` gives for the default threefry keys (the counter layout of
`jax_threefry_partitionable`, JAX's default), which tests check for split, fold_in and every
bit width; nothing about a run's trajectory changes. Keys of any other implementation, and
threefry keys under the non-partitionable layout, pass through untouched.

`standard(tree)` turns such keys back into the default implementation. The env step converts
its state both ways, so an env that keeps a key in its state (and mixes it with the step's
keys, as gymnax's auto-reset does) sees one key type, and the scan's carry keeps the default.

Threefry-2x32 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011):
20 rounds of (x0 += x1; x1 = rotl(x1, r); x1 ^= x0), with the key schedule (k0, k1,
k0 ^ k1 ^ 0x1BD11BDA) injected before the first round and after every fourth.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import random as jex_random

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def threefry2x32(k0, k1, x0, x1):
    """The Threefry-2x32 (20-round) block cipher of counters (x0, x1) under key (k0, k1).

    All arguments uint32 and broadcastable; returns two uint32 arrays of the broadcast shape.
    """
    ks = (k0, k1, k0 ^ k1 ^ _PARITY)
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for group in range(5):
        for r in _ROTATIONS[group % 2]:
            x0 = x0 + x1
            x1 = (x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))
            x1 = x1 ^ x0
        s = group + 1
        x0 = x0 + ks[s % 3]
        x1 = x1 + ks[(s + 1) % 3] + np.uint32(s)
    return x0, x1


def _counters(shape: tuple[int, ...]):
    """The flat index of every position of `shape` as a 64-bit counter (high, low words)."""
    n = math.prod(shape)
    if n >= 2**32:
        raise NotImplementedError(f"jppo.prng: {n} random values in one draw (limit 2**32)")
    low = jax.lax.iota(jnp.uint32, n).reshape(shape)
    return jnp.zeros(shape, jnp.uint32), low


def _hash_counters(key: jax.Array, shape: tuple[int, ...]):
    return threefry2x32(key[0], key[1], *_counters(shape))


def _split(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """key [2] -> keys [*shape, 2]: the hash of each position's counter."""
    return jnp.stack(_hash_counters(key, tuple(shape)), axis=-1)


def _fold_in(key: jax.Array, data) -> jax.Array:
    """key [2] -> key [2]: the hash of the counter (0, data)."""
    data = jnp.asarray(data).astype(jnp.uint32)
    return jnp.stack(threefry2x32(key[0], key[1], jnp.zeros((), jnp.uint32), data))


def _random_bits(key: jax.Array, bit_width: int, shape: tuple[int, ...]) -> jax.Array:
    """key [2] -> uint{bit_width} [*shape]: one hash per position, its two words combined."""
    hi, lo = _hash_counters(key, tuple(shape))
    if bit_width == 64:
        return (hi.astype(jnp.uint64) << jnp.uint64(32)) | lo.astype(jnp.uint64)
    dtype = {8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32}[bit_width]
    return (hi ^ lo).astype(dtype)


def _seed(seed: jax.Array) -> jax.Array:
    return jax.random.key_data(jax.random.key(seed, impl="threefry2x32"))


IMPL = jex_random.define_prng_impl(
    key_shape=(2,),
    seed=_seed,
    split=_split,
    random_bits=_random_bits,
    fold_in=_fold_in,
    name="jppo_threefry2x32_straight",
    tag="jfs",
)


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_impl(x):
    if not _is_key(x) or str(jax.random.key_impl(x)) != "threefry2x32":
        return x
    return jax.random.wrap_key_data(jax.random.key_data(x), impl=IMPL)


def straight_line(tree):
    """Every typed threefry key in `tree` as a key of `IMPL`: the same random bits, loop-free.

    Anything else (other implementations, raw uint32 keys, non-key leaves) is returned as it
    is, and so is everything under the non-partitionable counter layout, whose bits `IMPL`
    does not reproduce.
    """
    # (A JAX without the switch has only the partitionable layout.)
    if not getattr(jax.config, "jax_threefry_partitionable", True):
        return tree
    return jax.tree.map(_to_impl, tree)


def standard(tree):
    """Every `IMPL` key in `tree` back as a default threefry key (same data)."""

    def back(x):
        if _is_key(x) and jax.random.key_impl(x) == IMPL:
            return jax.random.wrap_key_data(jax.random.key_data(x), impl="threefry2x32")
        return x

    return jax.tree.map(back, tree)
