"""JAX kernels: the functions of `_numpy.py`, written for `jax.jit`.

Same names and signatures. Feature-major values ("rows") are *Python lists of
arrays*, one array per feature, where the NumPy reference uses one
`(features, ...)` array. The tiny weight matrices are unrolled in Python (loops
over features, never over coordinates), so each output row is an elementwise
expression and XLA fuses a whole optimizer step into a few elementwise loops.
Stacking rows into one array, or calling small matrix products, makes XLA
materialise every intermediate layer in memory: about 15x slower on CPU at
10^6 coordinates (measured, `benchmarks/`). The equations are documented once,
on the NumPy reference.

XLA materialises an "expensive" value (division, exp, log) that feeds several
consumers rather than recomputing it, costing a write and a read per consumer.
So divisions are written as a product with a reciprocal: the reciprocal has
one user, and the cheap product is recomputed wherever it is needed (the
memory read-out alone saved 20 bytes per parameter per step this way).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

xp = jnp
LOG_SIGN_P = 10.0
#: Floor added to the running gradient scale of Eq. (S): below it float32's
#: second moment (1 - beta_2) g^2 underflows (entries below ~1e-38 flush to
#: zero on CPUs), so the scale is no longer measured; 4 orders below Adam's
#: epsilon, far below any gradient RMS seen in practice.
SCALE_FLOOR = 1e-12
#: The dtype of computations that do not follow the parameters' dtype (the
#: LSTM optimizer's): float32 under JAX, float64 in the reference.
DEFAULT_COMPUTE_DTYPE = jnp.float32


def asarray(x, dtype=None):
    x = jnp.asarray(x)
    if dtype is None or x.dtype == dtype:
        return x
    if x.dtype == jnp.float32 and dtype == jnp.bfloat16:
        return _float32_to_bfloat16(x)
    if x.dtype == jnp.bfloat16 and dtype == jnp.float32:
        widened = jax.lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32) << 16
        return jax.lax.bitcast_convert_type(widened, jnp.float32)
    return x.astype(dtype)


def _float32_to_bfloat16(x):
    """Round to nearest even with integer operations: XLA:CPU emits `astype`
    between float32 and bfloat16 as a scalar library call, which stops the
    whole fused loop around it from vectorising (about 5x slower updates with
    bfloat16 memory, measured). NaN stays NaN."""
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    rounded = jnp.where(jnp.isnan(x), 0x7FC0, rounded)
    return jax.lax.bitcast_convert_type(rounded.astype(jnp.uint16), jnp.bfloat16)


def concat_rows(*parts):
    """Rows of several feature-major values, in order."""
    return [row for part in parts for row in part]


def stack_rows(rows):
    """Feature-major rows as one `(features, ...)` array."""
    return jnp.stack(list(rows))


def reshape_rows(rows, shape):
    return [row.reshape(shape) for row in rows]


def stack_heads(values):
    """Per-head values, kept as a list indexed by head."""
    return list(values)


# ----------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------


def log_sign(g, p: float = LOG_SIGN_P):
    """Eq. (L); see the NumPy reference."""
    absg = jnp.abs(g)
    big = absg >= np.exp(-p)
    safe = jnp.where(big, absg, 1.0)
    magnitude = jnp.where(big, jnp.log(safe) * (1.0 / p), -1.0).astype(g.dtype)
    direction = jnp.where(big, jnp.sign(g), np.exp(p) * g).astype(g.dtype)
    return magnitude, direction


def _psum(x, axis_names):
    return jax.lax.psum(x, axis_names) if axis_names else x


def _pmax(x, axis_names):
    return jax.lax.pmax(x, axis_names) if axis_names else x


def _scaled_rms(x, axis_names):
    """Two passes: scale by the largest magnitude first, so nothing overflows."""
    count = _psum(jnp.asarray(x.size, x.dtype), axis_names)
    scale = _pmax(jnp.max(jnp.abs(x), initial=0.0), axis_names)
    # scale == 0: an all-zero tensor; a NaN scale must propagate (bad gradient)
    safe = jnp.where(scale == 0, 1.0, scale)
    sq = _psum(jnp.sum(jnp.square(x / safe)), axis_names)
    return jnp.where(scale == 0, 0.0, safe * jnp.sqrt(sq / jnp.maximum(count, 1)))


def tensor_rms(x, axis_names=None):
    """Overflow-safe RMS of a whole tensor; see the NumPy reference.

    Fast path: one pass, $\\sqrt{\\sum x^2 / n}$. Only when that is not finite or
    so small that squares may have underflowed (rare: huge, tiny, zero or
    non-finite tensors) is the two-pass scaled form computed, inside
    `lax.cond`. Under `shard_map`, `axis_names` are the mesh axes the tensor is
    split over and the scaled form is reduced across them with collectives.
    Non-finite inputs give a non-finite RMS (used to detect bad gradients).
    """
    if axis_names:
        return _scaled_rms(x, axis_names)
    if x.size == 0:
        return jnp.zeros((), x.dtype)
    fast = jnp.sqrt(jnp.sum(jnp.square(x)) / x.size)
    trusted = jnp.isfinite(fast) & (fast > 1e3 * np.sqrt(jnp.finfo(x.dtype).tiny))
    return jax.lax.cond(trusted, lambda: fast, lambda: _scaled_rms(x, None))


def tensor_sum(x, axis_names=None):
    """The sum of a whole tensor, reduced across `axis_names` under
    `shard_map`; see the NumPy reference."""
    return _psum(jnp.sum(x), axis_names)


def tensor_size(x, axis_names=None):
    """The number of entries of a whole tensor (all shards'); see the NumPy
    reference."""
    return _psum(jnp.asarray(x.size, x.dtype), axis_names)


def tensor_mean(x, axis_names=None):
    """The mean of a whole tensor; see the NumPy reference. Each entry is
    divided by the count before the sum, so a tensor of entries below the
    float's largest value cannot overflow it."""
    count = tensor_size(x, axis_names)
    return _psum(jnp.sum(x * (1.0 / jnp.maximum(count, 1))), axis_names)


def segment_sum(x, segment_ids, num_segments):
    """The sum of each packed tensor; see the NumPy reference."""
    return jax.ops.segment_sum(x, jnp.asarray(segment_ids), num_segments)


def segment_mean(x, segment_ids, num_segments):
    """The mean of each packed tensor; see the NumPy reference."""
    count = np.maximum(np.bincount(np.asarray(segment_ids), minlength=num_segments), 1)
    weights = jnp.asarray(1.0 / count, x.dtype)[jnp.asarray(segment_ids)]
    return segment_sum(x * weights, segment_ids, num_segments)


def segment_rms(x, segment_ids, num_segments):
    """`tensor_rms` per segment of a packed vector; see the NumPy reference."""
    count = np.bincount(np.asarray(segment_ids), minlength=num_segments)
    segment_ids = jnp.asarray(segment_ids)
    seg_sum = lambda v: jax.ops.segment_sum(v, segment_ids, num_segments)
    scale = jnp.maximum(jax.ops.segment_max(jnp.abs(x), segment_ids, num_segments), 0.0)
    safe = jnp.where(scale == 0, 1.0, scale)
    sq = seg_sum(jnp.square(x / safe[segment_ids]))
    poison = seg_sum(x * 0.0)  # NaN where a segment is not finite
    return (
        jnp.where(scale == 0, 0.0, safe * jnp.sqrt(sq / np.maximum(count, 1))) + poison
    )


def step_embedding(step, timescales, dtype=jnp.float32):
    """Eq. (F), shared block; see the NumPy reference."""
    return jnp.tanh(jnp.asarray(step, dtype) / jnp.asarray(timescales, dtype))


def normalise(x, rms):
    """`x / rms`, 0 where rms = 0; see the NumPy reference. A product with the
    reciprocal (see the module docstring). Known limit: for float32 rms above
    ~8.5e37 the reciprocal is subnormal and CPUs flush it to zero."""
    safe = jnp.where(rms > 0, rms, 1.0)
    return x * jnp.where(rms > 0, 1.0 / safe, 0.0)  # rms = 0: x is all zeros


def coordinate_features(g, x, g_rms, x_rms, clip):
    """Eq. (F); see the NumPy reference. Returns `(4, *g.shape)` in `g`'s dtype."""
    g_hat = normalise(g, g_rms)
    x_hat = normalise(x, x_rms)
    magnitude, direction = log_sign(g_hat)
    return [
        jnp.clip(g_hat, -clip, clip),
        magnitude,
        direction,
        jnp.clip(x_hat, -clip, clip),
    ]


def second_moment(nu, g, decay):
    """Eq. (V); see the NumPy reference."""
    ceiling = 0.5 * float(
        np.finfo(np.float32).max
    )  # as the reference, whatever the dtype
    return decay * nu + (1.0 - decay) * jnp.minimum(g * g, ceiling)


def warmup_factor(step, start, steps, dtype=jnp.float32):
    """Eq. (W); see the NumPy reference."""
    t = jnp.asarray(step, dtype)
    return jnp.minimum(1.0, start + (1.0 - start) * t / steps).astype(dtype)


def agreement(dot, g_square, m_square):
    """Eq. (A1); see the NumPy reference."""
    norms = jnp.sqrt(g_square * m_square)
    return jnp.where(norms > 0, dot / jnp.where(norms > 0, norms, 1.0), 0.0)


def log_step_scale(
    log_scale, agreement, rate, threshold, low, high, penalty=None, recovery=0.0,
    hard_low=None,
):
    """Eqs. (A2) and, with a spike `penalty`, (G); see the NumPy reference."""
    drift = rate * (agreement - threshold)
    log_low = np.log(low)  # a float, or one per packed tensor in their dtype
    log_low = float(log_low) if np.ndim(log_low) == 0 else jnp.asarray(
        log_low, jnp.result_type(log_scale)
    )
    if penalty is None:
        return jnp.clip(log_scale + drift, log_low, float(np.log(high)))
    raised = jnp.maximum(log_scale + drift, jnp.minimum(log_scale + recovery, log_low))
    penalty = jnp.where(raised <= log_low, penalty, 0.0)
    return jnp.clip(raised - penalty, float(np.log(hard_low)), float(np.log(high)))


def spike_penalty(g_rms, mean_nu, count, decay, limit, strength):
    """Eq. (G), the spike term; see the NumPy reference."""
    dtype = jnp.result_type(g_rms)
    correction = 1.0 / -jnp.expm1(jnp.asarray(count, dtype) * float(np.log(decay)))
    sigma = jnp.sqrt(mean_nu * correction) + SCALE_FLOOR
    return strength * jnp.log(jnp.maximum(g_rms / sigma / limit, 1.0))


def adaptive_coordinate_features(
    g, x, nu, count, g_scale, x_rms, decay, eps, clip, running_scale=True
):
    """Eq. (F2); see the NumPy reference. Returns `(4, *g.shape)` in `g`'s dtype."""
    # 1 - decay^t as -expm1(t log decay): accurate in float32 (1 - 0.999 is not)
    correction = 1.0 / -jnp.expm1(jnp.asarray(count, g.dtype) * float(np.log(decay)))
    g_tilde = g * (1.0 / (jnp.sqrt(nu * correction) + eps))
    if running_scale:
        g_scale = g_scale * jnp.sqrt(correction) + SCALE_FLOOR
    g_hat = normalise(g, g_scale)
    magnitude, _ = log_sign(g_hat)
    x_hat = normalise(x, x_rms)
    return [jnp.clip(g_tilde, -clip, clip), jnp.clip(g_hat, -clip, clip), magnitude,
            jnp.clip(x_hat, -clip, clip)]


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
    return rows


def relu(x):
    return jnp.maximum(x, 0.0)


def stop_gradient(x):
    return jax.lax.stop_gradient(x)


def matmul(a, b):
    """`a @ b` at full float32 precision, for layers too wide to unroll like
    `dense` (the LSTM optimizer's gates)."""
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


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
    return dense(omega, jnp.zeros(omega.shape[0], z[0].dtype), z)


def hyperbolic_features(z, omega):
    """Eq. (A.1); see the NumPy reference. `d` rows -> `2m` rows."""
    proj = _project(z, omega)
    half_sq = 0.5 * sum(z[i] * z[i] for i in range(len(z)))
    scale = 1.0 / np.sqrt(2 * omega.shape[0])
    return [jnp.exp(p - half_sq) * scale for p in proj] + [
        jnp.exp(-p - half_sq) * scale for p in proj
    ]


def hyperbolic_query_features(z, omega):
    """Eq. (A.1) scaled so the largest entry is 1; see the NumPy reference."""
    proj = _project(z, omega)
    if len(proj) == 1:
        # one projection (r = 2, the default): the largest of p and -p is |p|,
        # so the features are 1 and exp(-2|p|): one exp instead of two, same values
        (p,) = proj
        small = jnp.exp(-2.0 * jnp.abs(p))
        return [jnp.where(p >= 0, 1.0, small), jnp.where(p >= 0, small, 1.0)]
    both = proj + [-p for p in proj]
    largest = both[0]
    for b in both[1:]:
        largest = jnp.maximum(largest, b)
    return [jnp.exp(b - largest) for b in both]


# ----------------------------------------------------------------------------
# Compact associative memory
# ----------------------------------------------------------------------------


def cam_write(numerator, normaliser, phi_k, v, decay):
    """Eq. (4); see the NumPy reference. `phi_k[h][j]`, `v[h][c]` are rows; the
    state arrays are `(H, r, d_v, ...)` and `(H, r, ...)`.

    Written as one whole-array expression per state array, `decay * old +
    written`, never as rows sliced out of the old state: then the old state is
    only read elementwise, so XLA updates it in place (a donated buffer) rather
    than building the new state in a temporary and copying it over."""
    heads, r, d_v = numerator.shape[:3]
    written_num = stack_rows(
        [
            phi_k[h][j] * v[h][c]
            for h in range(heads)
            for j in range(r)
            for c in range(d_v)
        ]
    ).reshape(numerator.shape)
    written_norm = stack_rows([phi_k[h][j] for h in range(heads) for j in range(r)])
    decay = decay.astype(numerator.dtype)
    per_head = lambda x: decay.reshape((heads,) + (1,) * (x.ndim - 1)) * x
    return (per_head(numerator) + written_num,
            per_head(normaliser) + written_norm.reshape(normaliser.shape))


def cam_read(numerator, normaliser, phi_q, eps):
    """Eq. (5); see the NumPy reference. Takes the state arrays of `cam_write`;
    returns `heads * d_v` rows, head-major."""
    heads, r, d_v = numerator.shape[:3]
    out = []
    for h in range(heads):
        den = sum(phi_q[h][j] * normaliser[h, j] for j in range(r)) + eps
        for c in range(d_v):
            out.append(
                sum(phi_q[h][j] * numerator[h, j, c] for j in range(r)) * (1.0 / den)
            )
    return out


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
    phi_q = jnp.stack(hyperbolic_query_features(scale * (wq @ flat), omega))
    phi_k = jnp.stack(hyperbolic_features(scale * (wk @ flat), omega))
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
    return [jnp.repeat(t, chunk_len_total, axis=-1)[..., :n] for t in tokens]


# ----------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------


def learned_step(
    direction, magnitude, alpha, beta, magnitude_clip, direction_clip=None
):
    if direction_clip is not None:
        direction = jnp.clip(direction, -direction_clip, direction_clip)
    s = magnitude_clip * jnp.tanh(magnitude / magnitude_clip)
    return alpha * direction * jnp.exp(beta * s)


def cond(pred, true_fn, false_fn):
    """`true_fn()` if `pred` else `false_fn()`; outputs are materialised at the
    boundary (`lax.cond`)."""
    return jax.lax.cond(pred, true_fn, false_fn)
