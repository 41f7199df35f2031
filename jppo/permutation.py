"""A pseudo-random permutation of `range(n)` without sorting: the minibatch shuffle.

`jax.random.permutation` sorts n random keys (twice for large n). XLA:CPU's sort is a
comparison sort through a compiled comparator, so at n = 65,536 (512 envs x 128 steps) one
permutation costs about as much as 4 minibatch gradient steps, and PPO draws one per epoch.
Here every index is mapped on its own through a keyed bijection, which is a handful of
elementwise integer operations per element.

The bijection is a Feistel network over the smallest number of bits b with 2^b >= n: an
index splits into a left part L of floor(b/2) bits and a right part R of the other bits, and
each of `rounds` rounds maps (L, R) -> (R, L xor F_k(R)) with a keyed integer hash F_k cut to
L's width (for odd b the two parts swap widths every round). Every round is invertible, so
the composition permutes [0, 2^b), which for a power of two n (PPO's batches mostly are)
is the answer. Otherwise indices that land at or beyond n are mapped again ("cycle
walking") until they fall inside: following the permutation's own cycles, this restricts it
to a permutation of [0, n). Since 2^b < 2n, each walk step leaves the range with probability
below 1/2, and the loop runs until the slowest index is inside. (A domain of an even number
of bits, 4^h, needs no width swaps but can be nearly 4n: at n = 2^13 its walk made the
permutation 7x slower than at 2^14.)

It is not a uniformly random permutation (there are far fewer keys than n! orders), but each
index's image is a keyed hash of it, which is what minibatch shuffling needs: every
minibatch a spread of time steps and envs, different at every epoch (tests check positions
and pair co-occurrence against the uniform shuffle's statistics).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_ROUNDS = 6


def _mix(x: jax.Array) -> jax.Array:
    """A 32-bit integer finalizer (multiply-xorshift; uint32 arithmetic wraps)."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def permutation(key: jax.Array, n: int, rounds: int = _ROUNDS) -> jax.Array:
    """A keyed pseudo-random permutation of `range(n)` (`n` static): int32 [n].

    Deterministic in `key`; a bijection for every n >= 1 (tests check n up to 2^18 and
    sizes that are not powers of two).
    """
    return keyed_permutation(round_keys(key, (), rounds), n)


def round_keys(key: jax.Array, shape: tuple[int, ...] = (), rounds: int = _ROUNDS) -> jax.Array:
    """The round keys of `prod(shape)` permutations, uint32 `shape + (rounds,)`, in one
    random call (on CPU each call is a threefry loop; PPO's update draws all its epochs'
    shuffles at once)."""
    return jax.random.bits(key, tuple(shape) + (rounds,), jnp.uint32)


def keyed_permutation(round_keys: jax.Array, n: int) -> jax.Array:
    """The permutation of `range(n)` that the round keys uint32 [rounds] select: int32 [n]."""
    if n <= 1:
        return jnp.zeros((n,), jnp.int32)
    rounds = round_keys.shape[-1]
    bits = (n - 1).bit_length()  # 2**bits >= n
    mask = lambda width: jnp.uint32((1 << width) - 1)

    def bijection(i):  # a permutation of [0, 2**bits)
        left_bits, right_bits = bits // 2, bits - bits // 2
        left, right = i >> right_bits, i & mask(right_bits)
        for r in range(rounds):
            left, right = right, left ^ (_mix(right ^ round_keys[r]) & mask(left_bits))
            left_bits, right_bits = right_bits, left_bits
        return (left << right_bits) | right

    def walk(state):
        y, _ = state
        outside = y >= n
        y = jnp.where(outside, bijection(y), y)
        return y, jnp.any(y >= n)

    y = bijection(jnp.arange(n, dtype=jnp.uint32))
    # Also when n is a power of two (no index lies outside, the loop body never runs): the
    # loop makes XLA compute the permutation once. Without it XLA fuses the hash into every
    # gather that uses it (one per batch leaf) and recomputes it there, which cost more than
    # the loop (an optimization barrier does not stop that fusion on CPU).
    y, _ = jax.lax.while_loop(lambda s: s[1], walk, (y, jnp.any(y >= n)))
    return y.astype(jnp.int32)
