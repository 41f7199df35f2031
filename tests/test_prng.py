"""`jppo.prng`: the straight-line threefry gives JAX's bits, and the env step has no loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import environment, spaces

import jppo
from jppo import envs, prng


def test_hash_matches_the_published_known_answers():
    # Threefry-2x32, 20 rounds: the known-answer vectors that come with the Random123
    # reference implementation (key, counter -> output), independent of JAX.
    cases = [
        ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
        ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
        ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
    ]
    for (k0, k1), (x0, x1), expected in cases:
        u = lambda v: jnp.asarray(v, jnp.uint32)
        out = prng.threefry2x32(u(k0), u(k1), u(x0), u(x1))
        assert tuple(int(v) for v in out) == expected


DRAWS = {
    "split": lambda k: jax.random.key_data(jax.random.split(k, (3, 5))),
    "split2": lambda k: jax.random.key_data(jax.random.split(k)),
    "fold_in": lambda k: jax.random.key_data(jax.random.fold_in(k, 12345)),
    "bits8": lambda k: jax.random.bits(k, (7,), jnp.uint8),
    "bits16": lambda k: jax.random.bits(k, (4, 3), jnp.uint16),
    "bits32": lambda k: jax.random.bits(k, (2, 3, 5), jnp.uint32),
    "scalar": lambda k: jax.random.uniform(k, ()),
    "uniform": lambda k: jax.random.uniform(k, (4,), minval=-0.05, maxval=0.05),
    "normal": lambda k: jax.random.normal(k, (1000,)),
    "randint": lambda k: jax.random.randint(k, (100,), 0, 10),
    "bernoulli": lambda k: jax.random.bernoulli(k, 0.3, (50,)),
    "choice": lambda k: jax.random.choice(k, 9, (4,), p=jnp.arange(9.0) / 36.0),
    "permutation": lambda k: jax.random.permutation(k, 300),
}


@pytest.mark.parametrize("draw", sorted(DRAWS))
def test_same_bits_as_the_default_threefry(draw):
    fn = DRAWS[draw]
    key = jax.random.key(20261206)
    fast = prng.straight_line(key)
    assert jax.random.key_impl(fast) == prng.IMPL
    np.testing.assert_array_equal(jax.jit(fn)(fast), jax.jit(fn)(key))
    keys = jax.random.split(key, 3)  # batched, as the env step sees them
    np.testing.assert_array_equal(jax.vmap(fn)(prng.straight_line(keys)), jax.vmap(fn)(keys))


def test_same_64_bit_draws_with_x64():
    if not hasattr(jax, "enable_x64"):
        pytest.skip("this JAX has no jax.enable_x64 context")
    with jax.enable_x64(True):
        key = jax.random.key(7)
        fn = lambda k: jax.random.bits(k, (5,), jnp.uint64)
        np.testing.assert_array_equal(fn(prng.straight_line(key)), fn(key))


def test_other_keys_pass_through_and_standard_undoes_it():
    rbg = jax.random.key(0, impl="rbg")
    assert prng.straight_line(rbg) is rbg
    raw = jax.random.PRNGKey(0)
    assert prng.straight_line(raw) is raw
    key = jax.random.split(jax.random.key(1), 4)
    back = prng.standard({"k": prng.straight_line(key), "x": jnp.ones(2)})
    assert jax.random.key_impl(back["k"]) == jax.random.key_impl(key)
    np.testing.assert_array_equal(jax.random.key_data(back["k"]), jax.random.key_data(key))


def _while_loops(fn, *args) -> int:
    return jax.jit(fn).lower(*args).as_text().count("stablehlo.while")


def test_the_env_step_has_no_loop():
    # XLA:CPU gets JAX's threefry as a 5-iteration while loop per call, and gymnax's auto-reset
    # step calls it twice per step; the rollout's scan body runs that step.
    env, env_params = envs.make_env("CartPole-v1")
    keys = jax.random.split(jax.random.key(0), 4)
    obs, state = envs.reset(env, env_params, keys)
    action = jnp.zeros(4, jnp.int32)
    assert _while_loops(lambda k: envs.step(env, env_params, k, state, action), keys) == 0
    # the same step with JAX's own keys (what the fix removes) has them
    raw_step = lambda k: jax.vmap(env.step, in_axes=(0, 0, 0, None))(k, state, action, env_params)
    assert _while_loops(raw_step, keys) > 0


def test_the_marl_env_step_has_no_loop():
    pytest.importorskip("jaxmarl")
    from jppo.envs.marl import MarlEnv

    menv = MarlEnv("MPE_simple_spread_v3")
    keys = jax.random.split(jax.random.key(0), 2)
    _, state = menv.reset(keys)
    action = jnp.zeros((2, menv.num_agents), jnp.int32)
    assert _while_loops(lambda k: menv.step(k, state, action), keys) == 0


@struct.dataclass
class KeyState(environment.EnvState):
    key: jax.Array
    time: int


class KeyKeeper(environment.Environment):
    """An env that carries a PRNG key in its state and draws its observation from it."""

    @property
    def default_params(self):
        return environment.EnvParams(max_steps_in_episode=5)

    def step_env(self, key, state, action, params):
        carried, draw = jax.random.split(state.key)
        state = KeyState(key=carried, time=state.time + 1)
        obs = jax.random.normal(draw, (2,))
        return obs, state, jnp.float32(1.0), jnp.bool_(False), {}

    def reset_env(self, key, params):
        return jnp.zeros(2), KeyState(key=key, time=0)

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params):
        return spaces.Box(-jnp.inf, jnp.inf, (2,), jnp.float32)


def test_env_state_keys_keep_their_type_and_values():
    # A key kept in the state must come back as the default type (the scan's carry keeps one
    # type) and must hold what JAX's own keys would have produced.
    env = KeyKeeper()
    params = env.default_params
    keys = jax.random.split(jax.random.key(3), 2)
    _, state = envs.reset(env, params, keys)
    action = jnp.zeros(2, jnp.int32)
    out = envs.step(env, params, jax.random.split(jax.random.key(4), 2), state, action)
    assert jax.random.key_impl(out.state.key) == jax.random.key_impl(keys)
    ref = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
        jax.random.split(jax.random.key(4), 2), state, action, params
    )
    np.testing.assert_array_equal(
        jax.random.key_data(out.state.key), jax.random.key_data(ref[1].key)
    )
    np.testing.assert_array_equal(out.obs, ref[0])
    cfg = jppo.PPOConfig(env=env, env_params=params, num_envs=2, num_steps=8, total_timesteps=32)
    out = jppo.train(cfg, jax.random.key(0))  # the scan accepts the carried key
    assert np.isfinite(np.asarray(out.metrics["loss"])).all()


def test_the_non_partitionable_layout_keeps_jaxs_own_keys():
    # IMPL reproduces only the partitionable counter layout; under the other one the keys
    # must stay JAX's, whose bits then differ.
    if not hasattr(jax, "threefry_partitionable"):
        pytest.skip("this JAX has only the partitionable layout")
    key = jax.random.key(5)
    with jax.threefry_partitionable(False):
        assert prng.straight_line(key) is key
    assert jax.random.key_impl(prng.straight_line(key)) == prng.IMPL
