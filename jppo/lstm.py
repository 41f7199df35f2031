"""The fused LSTM kernel: N stacked LSTM cells stepped by one `lax.scan`, with resets at
episode starts and a hand-written backward pass.

Why a kernel of its own: the rollout and the re-evaluation of a recurrent policy spend their
time in the sequential scan. Stacking actor and critic cells on a leading axis N halves the
sequential kernel launches of two separate scans, and the custom backward keeps only dh·W_hᵀ
inside the reverse scan, computing dW_h afterwards as one matmul over all steps instead of
accumulating it step by step. The equations are flax's `OptimizedLSTMCell`'s, so parameters
laid out by flax run here unchanged.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


def _cell(c, h, x, w_h):
    """One step of N stacked LSTM cells (flax's OptimizedLSTMCell equations).

    c, h [N, B, H]; x [N, B, 4H] input part of the gates; w_h [N, H, 4H]. Returns the new
    (c, h) and, for the backward pass, [σ(i) σ(f) tanh(g) σ(o) tanh(c') c] as one
    [N, B, 6H] array (one stacked scan output instead of six).
    """
    gates = x + jnp.einsum("nbh,nhg->nbg", h, w_h)
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    i, f, g, o = nn.sigmoid(i), nn.sigmoid(f), jnp.tanh(g), nn.sigmoid(o)
    c_new = f * c + i * g
    tanh_c = jnp.tanh(c_new)
    return c_new, o * tanh_c, jnp.concatenate([i, f, g, o, tanh_c, c], axis=-1)


def _lstm_forward(w_h, gate_x, reset, carry, unroll: int, residuals: bool):
    def step(carry, inputs):
        x_t, reset_t = inputs
        keep = ~reset_t[..., None]  # [N, B, 1]
        c, h = (jnp.where(keep, v, 0.0) for v in carry)
        c_new, h_new, saved = _cell(c, h, jnp.stack(x_t), w_h)
        return (c_new, h_new), (tuple(h_new), saved if residuals else None)

    return jax.lax.scan(step, carry, (gate_x, reset), unroll=unroll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def lstm_scan(w_h: jax.Array, gate_x, reset: jax.Array, carry, unroll: int = 1):
    """Step N stacked LSTMs through a sequence with `lax.scan`, resetting at episode starts.

    Per step, for each network: (c, h) <- (0, 0) where reset_t (the initial state), then
    [i f g o] = gate_x_t + h·W_h, c' = σ(f)·c + σ(i)·tanh(g), h' = σ(o)·tanh(c') — flax's
    `OptimizedLSTMCell`. Stacking actor and critic on N runs both in one batched matmul per
    step: half the sequential kernels of two scans. The hand-written backward pass keeps
    only dh·W_hᵀ in its reverse scan and computes dW_h = Σ_t h_{t-1}ᵀ·dgates_t afterwards
    as one matmul over all T·B rows (autodiff would accumulate it step by step).

    Args:
      w_h: [N, H, 4H] recurrent kernels.
      gate_x: N arrays [T, B, 4H], the input part of the gates (`_gate_inputs`).
      reset: [T, N, B] bool, episode starts (per network: the rollout's bootstrap copy of
        the critic continues its carry where the others reset).
      carry: (c, h), each [N, B, H], the carry before step 0 (not yet reset).
      unroll: `lax.scan` unroll factor (static).
    Returns:
      (carry after the last step, N arrays h [T, B, H]).
    """
    carry, (hs, _) = _lstm_forward(w_h, gate_x, reset, carry, unroll, False)
    return carry, hs


def _lstm_scan_fwd(w_h, gate_x, reset, carry, unroll):
    new_carry, (hs, saved) = _lstm_forward(w_h, gate_x, reset, carry, unroll, True)
    return (new_carry, hs), (w_h, reset, carry[1], hs, saved)


def _lstm_scan_bwd(unroll, residuals, cotangents):
    w_h, reset, h0, hs, saved = residuals
    (dc, dh), dhs = cotangents

    def step(carry, inputs):
        dc, dh = carry
        dh_t, act, reset_t = inputs
        i, f, g, o, tanh_c, c_prev = jnp.split(act, 6, axis=-1)
        dh = dh + jnp.stack(dh_t)
        dc = dc + dh * o * (1.0 - tanh_c * tanh_c)
        dgates = jnp.concatenate(
            [
                dc * g * i * (1.0 - i),
                dc * c_prev * f * (1.0 - f),
                dc * i * (1.0 - g * g),
                dh * tanh_c * o * (1.0 - o),
            ],
            -1,
        )
        keep = ~reset_t[..., None]
        dh_prev = jnp.einsum("nbg,nhg->nbh", dgates, w_h)
        return (jnp.where(keep, dc * f, 0.0), jnp.where(keep, dh_prev, 0.0)), tuple(dgates)

    carry, dgate_x = jax.lax.scan(step, (dc, dh), (dhs, saved, reset), reverse=True, unroll=unroll)
    # dW_h = Σ_t h_{t-1}ᵀ·dgates_t with h_{t-1} the (reset) carry entering step t: one plain
    # [H, T·B] x [T·B, 4H] matmul per network (2-D: see _matmul).
    dw_h = []
    for n, (h_n, dg_n) in enumerate(zip(hs, dgate_x)):
        keep = ~reset[:, n, :, None]
        h_prev = jnp.where(keep, jnp.concatenate([h0[n][None], h_n[:-1]]), 0.0)
        dw_h.append(h_prev.reshape(-1, h_prev.shape[-1]).T @ dg_n.reshape(-1, dg_n.shape[-1]))
    return jnp.stack(dw_h), dgate_x, None, carry


lstm_scan.defvjp(_lstm_scan_fwd, _lstm_scan_bwd)
