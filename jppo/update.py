"""The update: `update_epochs` passes of minibatch gradient steps over one rollout batch.

Feed-forward policies shuffle single transitions; recurrent ones shuffle whole env
sequences (minibatches split the env axis) and re-run the LSTM from the carry saved at the
rollout's start, resetting it wherever an episode starts.

KL early stopping (`target_kl`, Stable-Baselines3's rule): each minibatch's KL estimate is
measured before its step; once one exceeds 1.5·target_kl, that minibatch and every later one
of every epoch is skipped — parameters and optimizer state stay exactly as they were.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jppo import advantages as adv_lib
from jppo import losses, networks, policy, sharding
from jppo.config import PPOConfig
from jppo.optim import check_opt_state, global_norm, make_optimizer_for
from jppo.permutation import keyed_permutation, round_keys
from jppo.types import Batch, Coefs, Hyperparams


def loss_fn(
    params,
    mb: Batch,
    carry0,
    cfg: PPOConfig,
    network: networks.Network,
    hp: Hyperparams,
    coefs: Coefs,
):
    """Total PPO loss of a minibatch [T', B', ...] and its metrics.

    `carry0` holds the recurrent carries ([B', H] leaves) before the minibatch's first step.
    """
    dist_params, value_pred, _ = network.actor_critic(params, mb.obs, mb.episode_start, carry0)
    dist = policy.make_dist(dist_params)
    log_prob = dist.log_prob(mb.action)
    entropy = jnp.mean(dist.entropy())

    adv = mb.advantages
    if cfg.adv_norm == "minibatch":
        adv = adv_lib.normalize(adv, "minibatch", std_floor=hp.adv_std_floor, clip=hp.adv_clip)
    policy_loss, aux = losses.clipped_surrogate(
        log_prob, mb.log_prob, adv, hp.clip_eps, hp.log_ratio_clip
    )
    old_dist = policy.make_dist(mb.dist_params)
    # The surrogate treats a sample with a non-finite log-ratio as unchanged (ratio 1), so
    # the KL estimates do too: one NaN log-prob must not turn the whole minibatch's KL NaN.
    unchanged = ~jnp.isfinite(log_prob - mb.log_prob)
    for name in ("k1", "k3", "exact"):
        per_sample = losses.kl(old_dist, dist, mb.log_prob, log_prob, name)
        aux[f"kl_{name}"] = jnp.mean(jnp.where(unchanged, 0.0, per_sample))

    if cfg.critic == "quantile":
        value_loss = losses.quantile_value_loss(
            value_pred,
            mb.value_pred,
            mb.targets[..., None],
            hp.quantile_kappa,
            hp.vf_clip,
            cfg.quantile_vf_clip,
        )
    else:
        value_loss = losses.value_loss(
            value_pred, mb.value_pred, mb.targets, cfg.value_loss, hp.vf_clip, hp.huber_delta
        )
    entropy_loss = -coefs.ent_coef * entropy
    total = policy_loss + entropy_loss + coefs.vf_coef * value_loss
    if cfg.bc_coef is not None:
        # AWR weights come from the same (normalized) advantages as the surrogate, here after
        # any per-minibatch normalization, unless raw advantages are asked for.
        bc_adv = mb.raw_advantages if cfg.awr_raw_advantages else adv
        bc_loss, _ = losses.awr_bc_loss(log_prob, bc_adv, hp.awr_beta, hp.awr_max_weight)
        total = total + coefs.bc_coef * bc_loss
        aux["bc_loss"] = bc_loss
        aux["bc_ppo_ratio"] = jnp.abs(coefs.bc_coef * bc_loss) / (jnp.abs(policy_loss) + 1e-8)
    aux.update(
        policy_loss=policy_loss,
        value_loss=value_loss,
        entropy=entropy,
        entropy_loss=entropy_loss,
        loss=total,
    )
    return total, aux


def _sequences(batch: Batch, chunk_carries, cfg: PPOConfig):
    """Recurrent batch as sequences of one chunk each: leaves [L, C·B, ...], carries [C·B, H].

    The rollout kept the carry at the start of each of the C = T / L chunks ([C, B, H]
    leaves); chunk c of env b becomes sequence c·B + b, re-evaluated from its stored carry
    (truncated BPTT over chunks). With one chunk (the default) this is the batch itself.
    """
    num_chunks = jax.tree.leaves(chunk_carries)[0].shape[0]
    if num_chunks == 1:
        return batch, jax.tree.map(lambda x: x[0], chunk_carries)
    length = cfg.num_steps // num_chunks

    def split(x):  # [T, B, ...] -> [L, C*B, ...]
        x = x.reshape((num_chunks, length) + x.shape[1:])
        return jnp.swapaxes(x, 0, 1).reshape((length, -1) + x.shape[3:])

    merge = lambda x: x.reshape((-1,) + x.shape[2:])  # [C, B, H] -> [C*B, H]
    return jax.tree.map(split, batch), jax.tree.map(merge, chunk_carries)


def _block_perms(round_keys: jax.Array, size: int) -> jax.Array:
    """One permutation of range(size) per device block, from round keys [D, rounds]:
    [D, size]."""
    if round_keys.shape[0] == 1:  # no vmap: a batched while loop (the cycle walk) costs more
        return keyed_permutation(round_keys[0], size)[None]
    return jax.vmap(lambda k: keyed_permutation(k, size))(round_keys)


def _shuffle_blocks(x, perms, axis: int, num_minibatches: int):
    """x [D, ..., n, ...] (the sample axis `axis` counted without D): each block's samples
    permuted by its row of perms [D, n] and split into minibatches; the minibatch axis comes
    first and each minibatch holds the D blocks' shares side by side:
    [M, ..., D * n / M, ...]."""
    d, n = perms.shape
    x = jax.vmap(lambda xb, p: jnp.take(xb, p, axis=axis))(x, perms)
    x = x.reshape(
        x.shape[: axis + 1] + (num_minibatches, n // num_minibatches) + x.shape[axis + 2 :]
    )
    x = jnp.moveaxis(x, axis + 1, 0)  # [M, D, ..., n/M, ...]
    x = jnp.moveaxis(x, 1, axis + 1)  # [M, ..., D, n/M, ...]
    return x.reshape(x.shape[: axis + 1] + (d * (n // num_minibatches),) + x.shape[axis + 3 :])


def _minibatches(batch: Batch, carry0, keys, cfg: PPOConfig, recurrent: bool, mesh=None):
    """Shuffle and split one epoch: leaves [M, T', B', ...] and carries [M, B', H].

    Each of the `num_devices` contiguous blocks of envs is shuffled on its own, and every
    minibatch takes an equal share of each block, so with the env axis sharded (one block
    per device) the shuffle moves no data between devices. With one device this is a plain
    shuffle of the whole batch. Recurrent: `batch` and `carry0` come from `_sequences`;
    minibatches are whole sequences. `keys`: the epoch's shuffle round keys, uint32
    [num_devices, rounds] (`permutation.round_keys`).
    """
    d, m = cfg.num_devices, cfg.num_minibatches
    pin = lambda x: sharding.constrain(x, mesh, 0)  # the block axis lies across devices
    if recurrent:  # whole sequences: split the sequence (env) axis
        length, num_seqs = batch.obs.shape[:2]  # sequence c * B + b is chunk c of env b
        chunks = num_seqs // cfg.num_envs
        per_block = num_seqs // d
        perms = _block_perms(keys, per_block)

        def blocks(x, axis):  # [..., C * B, ...] -> [D, ..., C * B / D, ...]
            shape = x.shape[:axis] + (chunks, d, cfg.num_envs // d) + x.shape[axis + 1 :]
            x = jnp.moveaxis(x.reshape(shape), axis + 1, 0)
            return x.reshape(
                x.shape[:1] + x.shape[1 : axis + 1] + (per_block,) + x.shape[axis + 3 :]
            )

        split = lambda x: _shuffle_blocks(pin(blocks(x, 1)), perms, 1, m)
        split_carry = lambda x: _shuffle_blocks(pin(blocks(x, 0)), perms, 0, m)
        mbs = jax.tree.map(split, batch), jax.tree.map(split_carry, carry0)
        return sharding.constrain(mbs[0], mesh, 2), sharding.constrain(mbs[1], mesh, 1)

    per_block = cfg.batch_size // d
    perms = _block_perms(keys, per_block)

    def split(x):  # [T, B, ...] -> [D, T * B / D, ...] (block-local index t * B / D + b)
        x = x.reshape((cfg.num_steps, d, cfg.num_envs // d) + x.shape[2:])
        x = jnp.moveaxis(x, 1, 0).reshape((d, per_block) + x.shape[3:])
        return _shuffle_blocks(pin(x), perms, 0, m)[:, None]

    return sharding.constrain(jax.tree.map(split, batch), mesh, 2), carry0


# Minibatch metrics that are not averaged over the applied steps, and how they are reduced.
_EXTREMES = {"ratio_max": jnp.max, "ratio_min": jnp.min}
_TOTALS = ("nonfinite_ratio_count",)


def _reduce_metrics(aux: dict, weight: jax.Array) -> dict:
    """One value per metric from [epochs, minibatches] values: the weighted mean over the
    reported steps (weight 1), their extreme for ratio_max/ratio_min, their sum for counts."""
    reported = weight > 0
    total = jnp.maximum(jnp.sum(weight), 1.0)
    out = {}
    for k, v in aux.items():
        if k in _EXTREMES:
            fill = -jnp.inf if k == "ratio_max" else jnp.inf
            out[k] = _EXTREMES[k](jnp.where(reported, v, fill))
        elif k in _TOTALS:
            out[k] = jnp.sum(jnp.where(reported, v, 0.0))
        else:
            out[k] = jnp.sum(jnp.where(reported, v * weight, 0.0)) / total
    return out


class _EpochCarry(NamedTuple):
    params: Any
    opt_state: Any
    stopped: jax.Array  # [] bool, KL early stop triggered
    applied: jax.Array  # [] float32, minibatch steps taken


def update(
    cfg: PPOConfig,
    network: networks.Network,
    params,
    opt_state,
    batch: Batch,
    carry0,
    hp: Hyperparams,
    coefs: Coefs,
    key: jax.Array,
    mesh=None,
):
    """All epochs of minibatch steps on one batch.

    `mesh`: the env-axis mesh of a sharded run (`jppo.sharding`), or None.

    Returns:
      (params, opt_state, metrics): metrics are averages over the applied minibatch steps,
      except `ratio_max` / `ratio_min` (the extremes over those steps) and
      `nonfinite_ratio_count` (their total: non-finite ratios replaced during this update);
      plus `epochs_completed` (float) and `grad_norm` (actor and critic norms before
      clipping, combined).
    """
    tx = make_optimizer_for(cfg, hp, coefs.learning_rate, coefs.critic_learning_rate)
    check_opt_state(tx, params, opt_state)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    early_stop = cfg.target_kl is not None

    def minibatch_step(c: _EpochCarry, xs):
        mb, mb_carry = xs
        (_, aux), grads = grad_fn(c.params, mb, mb_carry, cfg, network, hp, coefs)
        aux["grad_norm"] = global_norm(grads)
        updates, opt_state = tx.update(grads, c.opt_state, c.params)
        params = optax.apply_updates(c.params, updates)
        if not early_stop:
            new = _EpochCarry(
                params=params, opt_state=opt_state, stopped=c.stopped, applied=c.applied + 1.0
            )
            return new, (aux, 1.0)
        # Written as "not within the bound" so that a NaN KL stops too (NaN > x is False).
        skip = c.stopped | ~(aux[f"kl_{cfg.kl_estimator}"] <= 1.5 * hp.target_kl)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(skip, o, n), new, old)
        # Metrics average the applied steps; if the very first step is skipped, report it.
        weight = jnp.where(skip, jnp.where(c.stopped | (c.applied > 0), 0.0, 1.0), 1.0)
        new = _EpochCarry(
            params=keep(params, c.params),
            opt_state=keep(opt_state, c.opt_state),
            stopped=skip,
            applied=c.applied + jnp.where(skip, 0.0, 1.0),
        )
        return new, (aux, weight)

    if network.recurrent:
        batch, carry0 = _sequences(batch, carry0, cfg)

    def epoch(c: _EpochCarry, k):
        mbs = _minibatches(batch, carry0, k, cfg, network.recurrent, mesh)
        return jax.lax.scan(minibatch_step, c, mbs)

    init = _EpochCarry(
        params=params,
        opt_state=opt_state,
        stopped=jnp.zeros((), bool),
        applied=jnp.zeros((), jnp.float32),
    )
    # Every epoch's shuffle keys in one random call (each call is a threefry loop on CPU).
    epoch_keys = round_keys(key, (cfg.update_epochs, cfg.num_devices))
    c, (aux, weight) = jax.lax.scan(epoch, init, epoch_keys)
    weight = jnp.broadcast_to(
        jnp.asarray(weight, jnp.float32), (cfg.update_epochs, cfg.num_minibatches)
    )
    metrics = _reduce_metrics(aux, weight)
    metrics["approx_kl"] = metrics[f"kl_{cfg.kl_estimator}"]
    metrics["epochs_completed"] = c.applied / cfg.num_minibatches
    return c.params, c.opt_state, metrics
