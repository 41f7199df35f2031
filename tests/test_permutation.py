"""The minibatch shuffle: a bijection for every size, and shuffled like a uniform permutation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jppo.permutation import keyed_permutation, permutation
from jppo.permutation import round_keys as round_keys_of

_perm = jax.jit(permutation, static_argnums=1)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 64, 100, 512, 1000, 4097, 65536, 100_000, 262_144])
def test_is_a_permutation_of_range_n(n):
    for seed in range(3):
        p = np.asarray(_perm(jax.random.key(seed), n))
        assert p.dtype == np.int32 and p.shape == (n,)
        np.testing.assert_array_equal(np.sort(p), np.arange(n))


def test_deterministic_in_the_key_and_different_across_keys():
    a = np.asarray(_perm(jax.random.key(0), 512))
    np.testing.assert_array_equal(a, np.asarray(_perm(jax.random.key(0), 512)))
    b = np.asarray(_perm(jax.random.key(1), 512))
    assert np.mean(a == b) < 0.05  # ~1/512 agree by chance


def _keys(count):
    return jax.random.split(jax.random.key(42), count)


@pytest.mark.parametrize("n", [48, 32, 40])
def test_positions_are_uniform(n):
    """Over many keys, element i lands in each position equally often (chi-square test).

    n = 48 (6 bits, not a power of two: cycle walking is exercised), 32 (a power of two with
    an odd number of bits: parts of 2 and 3 bits that swap widths, no walk), 40 (both). With
    100 keys per cell, the statistic has (n - 1)^2 degrees of freedom.
    """
    count = 100 * n
    perms = np.asarray(jax.jit(jax.vmap(lambda k: permutation(k, n)))(_keys(count)))
    cells = np.zeros((n, n))
    np.add.at(cells, (perms, np.broadcast_to(np.arange(n), perms.shape)), 1)
    expected = count / n
    chi2 = np.sum((cells - expected) ** 2 / expected)
    dof = (n - 1) ** 2
    # the statistic's mean is dof and its sd sqrt(2 dof): 5 sd off fails
    assert chi2 < dof + 5 * np.sqrt(2 * dof), chi2
    assert chi2 > dof - 5 * np.sqrt(2 * dof), chi2  # suspiciously regular is wrong too


def test_minibatches_mix_like_a_uniform_shuffle():
    """Pairs share a minibatch at the uniform rate, whether or not they are neighbours.

    A batch of 128 (time-major: index t * 4 + env; 7 bits, parts of 3 and 4) split into 4
    minibatches of 32: under a uniform shuffle two given elements share a minibatch with
    probability 31 / 127. A weak
    bijection (e.g. a multiplicative one) keeps neighbours or strided pairs together far more
    or less often than that.
    """
    n, mb, count = 128, 32, 4000
    perms = np.asarray(jax.jit(jax.vmap(lambda k: permutation(k, n)))(_keys(count)))
    group = np.empty_like(perms)
    np.put_along_axis(group, perms, np.arange(n)[None] // mb, axis=1)  # minibatch of element
    expected = (mb - 1) / (n - 1)
    for i, j in [(0, 1), (0, 4), (5, 6), (0, 64), (1, 127), (3, 35), (10, 74)]:
        rate = np.mean(group[:, i] == group[:, j])
        sd = np.sqrt(expected * (1 - expected) / count)
        assert abs(rate - expected) < 5 * sd, (i, j, rate)
    together = (group[:, :, None] == group[:, None, :]).mean(axis=0)
    off_diagonal = together[~np.eye(n, dtype=bool)]
    assert abs(off_diagonal.mean() - expected) < 0.005
    assert off_diagonal.std() < 3 * np.sqrt(expected * (1 - expected) / count)


def _np_permutation(round_keys, n):
    """Float-free re-derivation in numpy (uint64 arithmetic, cut to 32 bits): the Feistel
    network over the smallest power of two >= n, parts swapping widths, cycle walking."""
    u32 = np.uint64(0xFFFFFFFF)

    def mix(x):
        x = x ^ (x >> np.uint64(16))
        x = (x * np.uint64(0x7FEB352D)) & u32
        x = x ^ (x >> np.uint64(15))
        x = (x * np.uint64(0x846CA68B)) & u32
        return x ^ (x >> np.uint64(16))

    bits = (n - 1).bit_length()

    def bijection(i):
        lb, rb = bits // 2, bits - bits // 2
        left, right = i >> np.uint64(rb), i & np.uint64((1 << rb) - 1)
        for k in np.asarray(round_keys, np.uint64):
            left, right = right, left ^ (mix(right ^ k) & np.uint64((1 << lb) - 1))
            lb, rb = rb, lb
        return (left << np.uint64(rb)) | right

    y = bijection(np.arange(n, dtype=np.uint64))
    while (y >= n).any():
        y = np.where(y >= n, bijection(y), y)
    return y


@pytest.mark.parametrize("n", [2, 3, 100, 512, 8192])
def test_matches_a_numpy_rederivation(n):
    round_keys = round_keys_of(jax.random.key(n))
    ours = np.asarray(jax.jit(keyed_permutation, static_argnums=1)(round_keys, n))
    np.testing.assert_array_equal(ours, _np_permutation(np.asarray(round_keys), n))


def test_the_permutation_is_computed_once_for_all_its_gathers():
    # XLA fuses elementwise producers into their consumers; left to it, the hash would be
    # recomputed inside each gather that uses the permutation (one per batch leaf). The
    # cycle-walking loop keeps it in one place (plus the loop body's copy).
    xs = [jnp.arange(512.0) * i for i in range(4)]
    hlo = (
        jax.jit(lambda k, xs: [x[permutation(k, 512)] for x in xs])
        .lower(jax.random.key(0), xs)
        .compile()
        .as_text()
    )
    assert hlo.count("constant(2146121005)") <= 2  # 0x7FEB352D, the hash's first multiplier
