"""The JaxMARL adapter against JaxMARL's own dicts, and time-limit bootstrapping by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("jaxmarl")

import jppo  # noqa: E402
from jppo import marl  # noqa: E402
from jppo.envs.marl import MarlEnv, is_marl_env  # noqa: E402
from jppo.envs.roles import RoleSplit  # noqa: E402
from jppo.types import Hyperparams, Transition  # noqa: E402

NUM_ENVS, NUM_STEPS = 3, 60  # 60 steps cover two 26-step MPE episodes per env


# Float results may differ from JaxMARL's by an ulp: the same operations compiled in another
# program fuse differently in XLA. Integers and flags must be identical.
TOL = dict(rtol=1e-6, atol=1e-6)


def _assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        if np.issubdtype(x.dtype, np.floating):
            np.testing.assert_allclose(x, y, **TOL)
        else:
            np.testing.assert_array_equal(x, y)


# speaker_listener: agents with different observation (3, 11) and action (3, 5) sizes.
@pytest.mark.parametrize("name", ["MPE_simple_spread_v3", "MPE_simple_speaker_listener_v4"])
def test_adapter_equals_jaxmarl_dicts_step_for_step(name):
    menv = MarlEnv(name)
    env = menv.env
    dicts = lambda actions: {a: actions[:, i] for i, a in enumerate(menv.agents)}

    @jax.jit
    def both(reset_keys, step_keys, actions):
        """JaxMARL's own reset/step (with its auto-reset) and the adapter's, side by side
        over NUM_STEPS steps of the same keys and actions, in one program."""
        ref_obs, ref_state = jax.vmap(env.reset)(reset_keys)
        obs, state = menv.reset(reset_keys)

        def step(carry, xs):
            ref_state, state = carry
            keys, action = xs
            ref = jax.vmap(env.step)(keys, ref_state, dicts(action))
            out = menv.step(keys, state, action)
            return (ref[1], out.state), (ref, out)

        _, (ref, out) = jax.lax.scan(step, (ref_state, state), (step_keys, actions))
        return (ref_obs, ref_state, obs, state), (ref, out)

    def check_obs(arrays, dicts, lead):
        for i, a in enumerate(menv.agents):
            d = menv.obs_dims[i]
            want = np.asarray(dicts[a]).reshape(lead + (d,))
            np.testing.assert_allclose(np.asarray(arrays[..., i, :d]), want, **TOL)
            assert not np.asarray(arrays[..., i, d:]).any()  # zero padding

    rng = np.random.default_rng(0)
    # Random valid actions: each agent below its own action count. [T, B, N]
    actions = np.stack(
        [rng.integers(0, n, (NUM_STEPS, NUM_ENVS)) for n in menv.action_dims], axis=-1
    )
    step_keys = jax.random.split(jax.random.key(4), (NUM_STEPS, NUM_ENVS))
    reset_keys = jax.random.split(jax.random.key(3), NUM_ENVS)
    (ref_obs, ref_state, obs, state), (ref, out) = both(
        reset_keys, step_keys, jnp.asarray(actions, jnp.int32)
    )
    check_obs(obs, ref_obs, (NUM_ENVS,))
    _assert_same(state, ref_state)
    ref_obs, ref_states, ref_reward, ref_done, _ = ref
    check_obs(out.obs, ref_obs, (NUM_STEPS, NUM_ENVS))
    _assert_same(out.state, ref_states)
    for i, a in enumerate(menv.agents):
        np.testing.assert_allclose(np.asarray(out.reward[..., i]), np.asarray(ref_reward[a]), **TOL)
    done = np.asarray(ref_done["__all__"])  # [T, B]
    # MPE ends only at its step limit: every end is a time limit, never a termination.
    np.testing.assert_array_equal(np.asarray(out.truncated), done)
    assert not np.asarray(out.terminated).any()
    # Where no episode ended the final observation is the next one; where one ended it is
    # the pre-reset observation, not the reset one.
    same = np.all(np.asarray(out.final_obs) == np.asarray(out.obs), axis=(-2, -1))
    np.testing.assert_array_equal(same, ~done)
    # Episodes of 26 steps end at steps 26 and 52 (indices 25 and 51) in every env.
    np.testing.assert_array_equal(np.nonzero(done.all(axis=1))[0], [25, 51])
    assert done.sum() == 2 * NUM_ENVS
    assert menv.time_limit_only and menv.max_steps == 25


def test_adapter_shapes_masks_and_names():
    menv = MarlEnv("MPE_simple_speaker_listener_v4")
    assert menv.agents == ("speaker_0", "listener_0")
    assert (menv.obs_dim, menv.action_dim, menv.state_dim) == (11, 5, 22)
    np.testing.assert_array_equal(menv.action_mask, [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert is_marl_env("MPE_simple_spread_v3") and is_marl_env(RoleSplit())
    assert not is_marl_env("CartPole-v1")
    with pytest.raises(ValueError, match="JaxMARL.*MPE_simple_spread_v3"):
        jppo.PPOConfig(env="MPE_simple_spred_v3")
    with pytest.raises(ValueError, match="agent_params.*only multi-agent"):
        jppo.PPOConfig(agent_params="shared")
    with pytest.raises(ValueError, match="critic_input"):
        jppo.PPOConfig(env=RoleSplit(), critic_input="central")
    with pytest.raises(ValueError, match="agent_id.*shared"):
        jppo.PPOConfig(env=RoleSplit(), agent_id=True)
    with pytest.raises(ValueError, match="network.*multi-agent"):
        jppo.PPOConfig(env=RoleSplit(), network="lstm")


def test_time_limit_ends_bootstrap_and_terminations_do_not():
    """GAE targets by hand: gamma 0.5, lambda 1, one env, two agents, an end at t = 1.

    Agent 0: r = (1, 2, 3), V(next obs) = (10, 20, 30), V(obs) = (0, 10, 5). A time-limit
    end at t = 1
    bootstraps from V(final obs) = 20: G_2 = 3 + 0.5·30 = 18, G_1 = 2 + 0.5·20 = 12,
    G_0 = 1 + 0.5·12 = 7. As a termination: G_1 = 2, G_0 = 2. Agent 1 has rewards ×10 and
    its own values, so mixing agents would show.
    """
    cfg = jppo.PPOConfig(
        env=RoleSplit(), gamma=0.5, gae_lambda=1.0, adv_norm="none", normalize_value_targets=False
    )
    hp = Hyperparams.from_config(cfg)
    reward = jnp.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])[:, None]  # [T, B, N]
    next_value = jnp.array([[10.0, 1.0], [20.0, 2.0], [30.0, 3.0]])[:, None]
    # V(obs_t): V(obs_1) = V(next obs_0) where no episode ended; obs_2 starts a new one.
    value = jnp.array([[0.0, 0.0], [10.0, 1.0], [5.0, 7.0]])[:, None]
    done = jnp.array([False, True, False])[:, None]  # [T, B], the team's

    def targets(terminated):
        traj = Transition(
            obs={"obs": jnp.zeros((3, 1, 2, 4))},
            episode_start=jnp.zeros((3, 1), bool),
            action=jnp.zeros((3, 1, 2), jnp.int32),
            log_prob=jnp.zeros((3, 1, 2)),
            dist_params={"logits": jnp.zeros((3, 1, 2, 4))},
            value_pred=value,
            reward=reward,
            terminated=terminated,
            done=done,
            next_value_pred=next_value,
        )
        batch, _, _ = marl.make_agent_batch(cfg, traj, hp, None, 2)
        return np.asarray(batch.targets)[:, :, 0]  # [N, T]

    truncated = targets(jnp.zeros((3, 1), bool))
    np.testing.assert_allclose(truncated[0], [7.0, 12.0, 18.0])
    np.testing.assert_allclose(truncated[1], [10 + 0.5 * 21, 20 + 0.5 * 2, 30 + 0.5 * 3])
    terminated = targets(done)
    np.testing.assert_allclose(terminated[0], [2.0, 2.0, 18.0])
