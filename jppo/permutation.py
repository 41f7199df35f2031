"""A pseudo-random permutation of `range(n)` without sorting: the minibatch shuffle.

`jax.random.permutation` sorts n random keys (twice for large n). XLA:CPU's sort is a
comparison sort through a compiled comparator, so at n = 65,536 (512 envs x 128 steps) one
permutation costs about as much as 4 minibatch gradient steps, and PPO draws one per epoch.
Here every index is mapped on its own through a keyed bijection, which is a handful of
elementwise integer operations per element.

The bijection is a balanced Feistel network over the smallest even number of bits 2h with
4^h >= n: an index splits into halves (L, R) of h bits, and each of `rounds` rounds maps
(L, R) -> (R, L xor F_k(R)) with a keyed integer hash F_k. Every round is invertible, so the
composition permutes [0, 4^h). Indices that land at or beyond n are mapped again ("cycle
walking") until they fall inside: following the permutation's own cycles, this restricts it
to a permutation of [0, n). Since 4^h < 4n, each walk step leaves the range with probability
below 3/4, and the loop runs until the slowest index is inside.

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
    if n <= 1:
        return jnp.zeros((n,), jnp.int32)
    half = max(1, ((n - 1).bit_length() + 1) // 2)  # 4**half >= n
    mask = jnp.uint32((1 << half) - 1)
    round_keys = jax.random.bits(key, (rounds,), jnp.uint32)

    def bijection(i):  # a permutation of [0, 4**half)
        left, right = i >> half, i & mask
        for r in range(rounds):
            left, right = right, left ^ (_mix(right ^ round_keys[r]) & mask)
        return (left << half) | right

    def walk(state):
        y, _ = state
        outside = y >= n
        y = jnp.where(outside, bijection(y), y)
        return y, jnp.any(y >= n)

    y = bijection(jnp.arange(n, dtype=jnp.uint32))
    y, _ = jax.lax.while_loop(lambda s: s[1], walk, (y, jnp.any(y >= n)))
    return y.astype(jnp.int32)
