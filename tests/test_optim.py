"""The optimizer: per-network clip + Adam, raveled into one vector per network for speed."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jppo
from jppo.optim import init_opt_state, make_optimizer_for, nonfinite_grad_count
from tests.helpers import primitive_count


def _tree(key, scale=1.0):
    ks = jax.random.split(key, 4)
    return {
        "actor": {
            "w": scale * jax.random.normal(ks[0], (4, 3)),
            "b": jax.random.normal(ks[1], (3,)),
        },
        "critic": {
            "w": 30 * scale * jax.random.normal(ks[2], (4, 1)),
            "b": jax.random.normal(ks[3], (1,)),
        },
    }


def test_matches_a_per_tensor_optax_chain_for_each_network():
    """Same updates as optax's clip_by_global_norm + Adam(eps=1e-5) + learning rate, built
    per tensor and applied to actor and critic separately (the critic's gradient is large, so
    its clip must not touch the actor's step)."""
    cfg = jppo.PPOConfig()
    hp = jppo.Hyperparams.from_config(cfg)
    tx = make_optimizer_for(cfg, hp, 1e-3, 3e-3)
    ref = {
        net: optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(lr, eps=1e-5))
        for net, lr in (("actor", 1e-3), ("critic", 3e-3))
    }
    params = _tree(jax.random.key(0))
    state = init_opt_state(params, cfg)
    ref_state = {net: ref[net].init(params[net]) for net in ref}
    ref_params = params
    for i in range(5):
        grads = _tree(jax.random.key(i + 1), scale=0.1 * (i + 1))
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        for net in ref:
            u, ref_state[net] = ref[net].update(grads[net], ref_state[net], ref_params[net])
            ref_params = {**ref_params, net: optax.apply_updates(ref_params[net], u)}
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), params, ref_params
        )
    assert float(nonfinite_grad_count(state)) == 0


def test_a_nonfinite_gradient_skips_the_step_and_is_counted():
    cfg = jppo.PPOConfig()
    tx = make_optimizer_for(cfg, jppo.Hyperparams.from_config(cfg), 1e-3, 1e-3)
    params = _tree(jax.random.key(0))
    state = init_opt_state(params, cfg)
    grads = _tree(jax.random.key(1))
    grads["critic"]["w"] = grads["critic"]["w"].at[0, 0].set(jnp.nan)
    updates, new_state = tx.update(grads, state, params)
    jax.tree.map(lambda u: np.testing.assert_array_equal(u, 0.0), updates)
    assert float(nonfinite_grad_count(new_state)) == 1


def test_the_finiteness_check_and_the_chain_see_one_vector_per_network():
    """The skip test runs on each network's raveled gradient (one check per network), not
    on every tensor: per tensor it cost three kernels each in every minibatch step."""
    cfg = jppo.PPOConfig()
    tx = make_optimizer_for(cfg, jppo.Hyperparams.from_config(cfg), 1e-3, 1e-3)
    params = _tree(jax.random.key(0))
    state = init_opt_state(params, cfg)
    assert {x.ndim for x in jax.tree.leaves(state.inner_state) if x.ndim} == {1}
    jaxpr = jax.make_jaxpr(lambda g: tx.update(g, state, params))(params).jaxpr
    assert primitive_count(jaxpr, "is_finite") == 2  # actor, critic (4 tensors)


def test_global_norm_matches_optax_tree_norm():
    from jppo.optim import global_norm

    grads = _tree(jax.random.key(3), scale=2.0)
    np.testing.assert_allclose(global_norm(grads), optax.tree.norm(grads), rtol=1e-6)
