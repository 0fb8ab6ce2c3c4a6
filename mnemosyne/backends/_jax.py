"""JAX kernels: the functions of `_numpy.py`, written for `jax.jit`.

Same names, signatures and layout (feature-major `(features, n)`). The
per-coordinate kernels are elementwise arithmetic with the tiny weight matrices
unrolled in Python (loops over features, never over coordinates), so XLA fuses
the step into a few elementwise loops instead of calling small matrix products
that would materialise `(features, n)` intermediates in memory. The equations
are documented once, on the NumPy reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

xp = jnp
LOG_SIGN_P = 10.0


def asarray(x, dtype=None):
    return jnp.asarray(x, dtype=dtype)


# ----------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------


def log_sign(g, p: float = LOG_SIGN_P):
    """Eq. (L); see the NumPy reference."""
    absg = jnp.abs(g)
    big = absg >= np.exp(-p)
    safe = jnp.where(big, absg, 1.0)
    magnitude = jnp.where(big, jnp.log(safe) / p, -1.0).astype(g.dtype)
    direction = jnp.where(big, jnp.sign(g), np.exp(p) * g).astype(g.dtype)
    return magnitude, direction


def _psum(x, axis_names):
    return jax.lax.psum(x, axis_names) if axis_names else x


def _pmax(x, axis_names):
    return jax.lax.pmax(x, axis_names) if axis_names else x


def tensor_rms(x, axis_names=None):
    """Overflow-safe RMS of a whole tensor. Under `shard_map`, `axis_names` are
    the mesh axes the tensor is split over; the statistics are reduced across
    them with collectives, so every shard sees the global RMS."""
    count = _psum(jnp.asarray(x.size, x.dtype), axis_names)
    scale = _pmax(jnp.max(jnp.abs(x), initial=0.0), axis_names)
    safe = jnp.where(scale > 0, scale, 1.0)
    sq = _psum(jnp.sum(jnp.square(x / safe)), axis_names)
    return jnp.where(scale > 0, safe * jnp.sqrt(sq / jnp.maximum(count, 1)), 0.0)


def step_embedding(step, timescales):
    return jnp.tanh(jnp.asarray(step, jnp.float32) / jnp.asarray(timescales, jnp.float32))


def coordinate_features(g, x, step, timescales, clip, axis_names=None):
    """Eq. (F); see the NumPy reference. Returns `(F, *g.shape)` in `g`'s dtype."""
    g_hat = g / (tensor_rms(g, axis_names) + 1e-30)
    x_hat = x / (tensor_rms(x, axis_names) + 1e-30)
    magnitude, direction = log_sign(g_hat)
    rows = [jnp.clip(g_hat, -clip, clip), magnitude, direction, jnp.clip(x_hat, -clip, clip)]
    embedding = step_embedding(step, timescales).astype(g.dtype)
    rows += [jnp.broadcast_to(embedding[j], g.shape) for j in range(len(timescales))]
    return jnp.stack(rows)


# ----------------------------------------------------------------------------
# Small dense layers, unrolled
# ----------------------------------------------------------------------------


def dense(weight, bias, inputs):
    """$W X + b$ for feature-major `inputs` `(in, n)`, unrolled over the tiny
    `in` and `out` dimensions so it fuses with its neighbours."""
    out_dim, in_dim = weight.shape
    rows = []
    for o in range(out_dim):
        acc = bias[o] + weight[o, 0] * inputs[0]
        for i in range(1, in_dim):
            acc = acc + weight[o, i] * inputs[i]
        rows.append(acc)
    return jnp.stack(rows)


def relu(x):
    return jnp.maximum(x, 0.0)


def stop_gradient(x):
    return jax.lax.stop_gradient(x)


def layer_norm(x, axis=0, eps=1e-6):
    mean = x.mean(axis=axis, keepdims=True)
    var = jnp.square(x - mean).mean(axis=axis, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


# ----------------------------------------------------------------------------
# Random features
# ----------------------------------------------------------------------------


def orthogonal_gaussian_matrix(key, m: int, d: int):
    """FAVOR+ orthogonal random features; see the NumPy reference."""
    num_blocks = -(-m // d)
    block_key, norm_key = jax.random.split(key)
    keys = jax.random.split(block_key, num_blocks)
    blocks = [jnp.linalg.qr(jax.random.normal(k, (d, d)))[0].T for k in keys]
    rows = jnp.concatenate(blocks)[:m]
    norms = jnp.sqrt(2.0 * jax.random.gamma(norm_key, d / 2.0, (m,)))  # chi_d
    return rows * norms[:, None]


def _project(z, omega):
    """`omega @ z` for `z` `(d, n)`, unrolled over the tiny `d` and `m`."""
    return dense(omega, jnp.zeros(omega.shape[0], z.dtype), z)


def hyperbolic_features(z, omega):
    """Eq. (A.1); see the NumPy reference. `z` `(d, n)` -> `(2m, n)`."""
    proj = _project(z, omega)
    half_sq = 0.5 * sum(z[i] * z[i] for i in range(z.shape[0]))
    r = 2 * omega.shape[0]
    feats = jnp.concatenate([jnp.exp(proj - half_sq), jnp.exp(-proj - half_sq)])
    return feats * (1.0 / np.sqrt(r))


def hyperbolic_query_features(z, omega):
    """Eq. (A.1) scaled so the largest entry is 1; see the NumPy reference."""
    proj = _project(z, omega)
    both = jnp.concatenate([proj, -proj])
    return jnp.exp(both - both.max(axis=0, keepdims=True))


# ----------------------------------------------------------------------------
# Compact associative memory
# ----------------------------------------------------------------------------


def cam_write(numerator, normaliser, phi_k, v, decay):
    """Eq. (4); see the NumPy reference."""
    decay = decay.reshape(decay.shape + (1,) * (normaliser.ndim - 1))
    new_numerator = decay[:, None] * numerator + phi_k[:, :, None] * v[:, None]
    new_normaliser = decay * normaliser + phi_k
    return new_numerator, new_normaliser


def cam_read(numerator, normaliser, phi_q, eps):
    """Eq. (5); see the NumPy reference. Sums over the tiny `r` axis unrolled."""
    r = phi_q.shape[1]
    num = sum(phi_q[:, j, None] * numerator[:, j] for j in range(r))
    den = sum(phi_q[:, j] * normaliser[:, j] for j in range(r))
    return num / (den[:, None] + eps)


# ----------------------------------------------------------------------------
# Hierarchical pooling encoder
# ----------------------------------------------------------------------------


def chunk(x, chunk_len):
    d, n = x.shape
    num_chunks = max(1, -(-n // chunk_len))
    pad = num_chunks * chunk_len - n
    padded = jnp.pad(x, ((0, 0), (0, pad)))
    mask = np.arange(num_chunks * chunk_len) < n
    return padded.reshape(d, num_chunks, chunk_len), mask.reshape(num_chunks, chunk_len)


def chunk_attention(x, mask, wq, wk, wv, wo, omega):
    """Bidirectional FAVOR+ attention within chunks; see the NumPy reference."""
    d, num_chunks, chunk_len = x.shape
    scale = wq.shape[0] ** -0.25
    flat = x.reshape(d, -1)
    phi_q = hyperbolic_query_features(scale * (wq @ flat), omega)
    phi_k = hyperbolic_features(scale * (wk @ flat), omega)
    r = phi_q.shape[0]
    phi_q = phi_q.reshape(r, num_chunks, chunk_len)
    phi_k = phi_k.reshape(r, num_chunks, chunk_len) * mask
    v = (wv @ flat).reshape(-1, num_chunks, chunk_len)
    kv = jnp.einsum("rcl,vcl->rvc", phi_k, v)
    num = jnp.einsum("rcl,rvc->vcl", phi_q, kv)
    den = jnp.einsum("rcl,rc->cl", phi_q, phi_k.sum(axis=2))
    return jnp.einsum("ov,vcl->ocl", wo, num / den)


def masked_mean_pool(x, mask):
    weights = mask / np.maximum(mask.sum(axis=1, keepdims=True), 1)
    return jnp.einsum("dcl,cl->dc", x, weights.astype(x.dtype))


def unpool(tokens, n, chunk_len_total):
    return jnp.repeat(tokens, chunk_len_total, axis=-1)[..., :n]


# ----------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------


def learned_step(direction, magnitude, alpha, beta, magnitude_clip):
    s = magnitude_clip * jnp.tanh(magnitude / magnitude_clip)
    return alpha * direction * jnp.exp(beta * s)
