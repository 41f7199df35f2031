"""The minibatch shuffle: a bijection for every size, and shuffled like a uniform permutation."""

import jax
import numpy as np
import pytest

from jppo.permutation import permutation

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


def test_positions_are_uniform():
    """Over many keys, element i lands in each position equally often (chi-square test).

    With n = 48 (not a power of two: cycle walking is exercised) and 4800 keys, each of the
    48 x 48 cells expects 100 counts; the statistic has 47 x 47 degrees of freedom.
    """
    n, count = 48, 4800
    perms = np.asarray(jax.jit(jax.vmap(lambda k: permutation(k, n)))(_keys(count)))
    cells = np.zeros((n, n))
    np.add.at(cells, (perms, np.broadcast_to(np.arange(n), perms.shape)), 1)
    expected = count / n
    chi2 = np.sum((cells - expected) ** 2 / expected)
    dof = (n - 1) ** 2
    # mean dof, sd sqrt(2 dof) ~ 66: 5 sd above the mean fails
    assert chi2 < dof + 5 * np.sqrt(2 * dof), chi2
    assert chi2 > dof - 5 * np.sqrt(2 * dof), chi2  # suspiciously regular is wrong too


def test_minibatches_mix_like_a_uniform_shuffle():
    """Pairs share a minibatch at the uniform rate, whether or not they are neighbours.

    A batch of 128 (time-major: index t * 4 + env) split into 4 minibatches of 32: under a
    uniform shuffle two given elements share a minibatch with probability 31 / 127. A weak
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
