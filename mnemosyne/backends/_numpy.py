"""NumPy reference kernels (float64), each naming the equation it implements.

Equation numbers follow `docs/paper-to-code.md`: (2)-(5) are the compact
associative memory of Mnemosyne Sec. 3.3 as reconstructed in
`research/paper.md` §5; (A.1) is the hyperbolic random-feature map of its
Appendix A.1 (the Performer's SM-hyp+ estimator); (L) is the log/sign
preprocessing of Andrychowicz et al. (2016); (F), (H), (O) are this library's
feature, head and output equations (reconstruction, see the paper-to-code page).

Layout shared with the JAX backend: per-coordinate quantities are
*feature-major*, shape `(features, n)`, the coordinate axis last.
"""

from __future__ import annotations

import numpy as np

xp = np
LOG_SIGN_P = 10.0
#: Floor added to the running gradient scale of Eq. (S): below it float32's
#: second moment (1 - beta_2) g^2 underflows (entries below ~1e-38 flush to
#: zero on CPUs), so the scale is no longer measured; 4 orders below Adam's
#: epsilon, far below any gradient RMS seen in practice.
SCALE_FLOOR = 1e-12
#: The dtype of computations that do not follow the parameters' dtype (the
#: LSTM optimizer's): float64 here, the reference; float32 under JAX.
DEFAULT_COMPUTE_DTYPE = np.float64


def asarray(x, dtype=np.float64):
    return np.asarray(x, dtype=dtype)


def concat_rows(*parts):
    """Feature-major values `(f_i, ...)` joined along the feature axis."""
    return np.concatenate(parts)


def stack_rows(rows):
    """Feature-major value as one array (already one here)."""
    return np.asarray(rows)


def reshape_rows(rows, shape):
    return rows.reshape((rows.shape[0],) + tuple(shape))


def stack_heads(values):
    """Per-head values stacked on a leading head axis."""
    return np.stack(values)


# ----------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------


def log_sign(g: np.ndarray, p: float = LOG_SIGN_P) -> tuple[np.ndarray, np.ndarray]:
    """Eq. (L): gradient preprocessing of Andrychowicz et al. (2016).

    $$
    g \\mapsto \\begin{cases}
      (\\log|g| / p,\\ \\operatorname{sign} g) & |g| \\ge e^{-p} \\\\
      (-1,\\ e^{p} g) & \\text{otherwise}
    \\end{cases}
    $$
    """
    g = np.asarray(g, dtype=np.float64)
    big = np.abs(g) >= np.exp(-p)
    with np.errstate(divide="ignore"):
        magnitude = np.where(big, np.log(np.abs(g)) / p, -1.0)
    direction = np.where(big, np.sign(g), np.exp(p) * g)
    return magnitude, direction


def tensor_rms(x: np.ndarray, axis_names=None) -> np.ndarray:
    """Root mean square of a whole tensor, computed without overflow.

    $$\\operatorname{rms}(x) = \\max|x| \\sqrt{\\tfrac1n \\sum_i (x_i/\\max|x|)^2}$$

    (`axis_names` is the JAX backend's collective axes; unused here.)
    """
    del axis_names
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return np.float64(0.0)
    scale = np.max(np.abs(x))
    if scale == 0:
        return np.float64(0.0)
    return scale * np.sqrt(np.mean((x / scale) ** 2))


def tensor_sum(x, axis_names=None):
    """The sum of a whole tensor (`axis_names`: the JAX backend's collective
    axes; unused here)."""
    del axis_names
    return np.sum(np.asarray(x, dtype=np.float64))


def tensor_size(x, axis_names=None):
    """The number of entries of a whole tensor, as a float (`axis_names`: the
    JAX backend's collective axes; unused here)."""
    del axis_names
    return np.float64(np.size(x))


def tensor_mean(x, axis_names=None):
    """The mean of a whole tensor, 0 if it is empty (`axis_names`: the JAX
    backend's collective axes; unused here)."""
    del axis_names
    x = np.asarray(x, dtype=np.float64)
    return np.mean(x) if x.size else np.float64(0.0)


def segment_sum(x, segment_ids, num_segments):
    """The sum of each tensor packed into one vector: entry `s` sums
    `x[segment_ids == s]`."""
    return np.bincount(
        segment_ids, weights=np.asarray(x, np.float64).ravel(), minlength=num_segments
    )


def segment_mean(x, segment_ids, num_segments):
    """The mean of each tensor packed into one vector: entry `s` averages
    `x[segment_ids == s]`."""
    count = np.bincount(segment_ids, minlength=num_segments)
    return segment_sum(x, segment_ids, num_segments) / np.maximum(count, 1)


def segment_rms(x, segment_ids, num_segments):
    """`tensor_rms` of several tensors packed into one vector: entry `s` is the
    RMS of `x[segment_ids == s]` (overflow-safe; NaN if the segment has a NaN
    or infinite entry)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        scale = np.zeros(num_segments)
        np.maximum.at(scale, segment_ids, np.abs(x))
        safe = np.where(scale == 0, 1.0, scale)
        sq = np.zeros(num_segments)
        np.add.at(sq, segment_ids, (x / safe[segment_ids]) ** 2)
        count = np.bincount(segment_ids, minlength=num_segments)
        poison = np.zeros(num_segments)
        np.add.at(poison, segment_ids, x * 0.0)  # NaN where a segment is not finite
        return (
            np.where(scale == 0, 0.0, safe * np.sqrt(sq / np.maximum(count, 1)))
            + poison
        )


def step_embedding(step, timescales, dtype=np.float64) -> np.ndarray:
    """Eq. (F), shared block: $e_j(t) = \\tanh(t / T_j)$ for each timescale $T_j$.
    The same for every coordinate of every tensor."""
    del dtype
    return np.tanh(np.float64(step) / np.asarray(timescales, dtype=np.float64))


def warmup_factor(step, start, steps, dtype=np.float64):
    r"""Eq. (W): the factor of the step's linear warm-up at step $t$ (0 at the
    first update), $w_t = \min\big(1,\ w_0 + (1 - w_0)\, t / T\big)$, from
    $w_0$ = `start` to 1 over $T$ = `steps` steps (the warm-up of a learning
    rate that Transformers are trained with, e.g. Vaswani et al. 2017); the
    same for every coordinate of every tensor."""
    del dtype
    return np.minimum(1.0, start + (1.0 - start) * np.float64(step) / steps)


def normalise(x, rms):
    """$x / \\operatorname{rms}$, and 0 for an all-zero tensor (rms = 0)."""
    rms = np.asarray(rms, np.float64)
    return np.where(rms > 0, x / np.where(rms > 0, rms, 1.0), 0.0)


def coordinate_features(g, x, g_rms, x_rms, clip):
    """Eq. (F): the per-coordinate input features of one tensor, `(4, *g.shape)`.

    With $\\hat g = g/\\operatorname{rms}(g)$ and $\\hat x = x/\\operatorname{rms}(x)$
    (tensor-level normalisation, which makes the optimizer scale-free):

    $$f_i = [\\operatorname{clip}(\\hat g_i),\\ \\mathrm{L}(\\hat g_i),\\
    \\operatorname{clip}(\\hat x_i)]$$

    where L is the log/sign map (L) (two features). The step embedding
    `step_embedding` completes the feature vector; being shared by all
    coordinates it is kept apart (and enters as a per-tensor bias).
    """
    g = np.asarray(g, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    g_hat = normalise(g, g_rms)
    x_hat = normalise(x, x_rms)
    magnitude, direction = log_sign(g_hat)
    return np.stack(
        [np.clip(g_hat, -clip, clip), magnitude, direction, np.clip(x_hat, -clip, clip)]
    )


def second_moment(nu, g, decay):
    r"""Eq. (V): the per-coordinate second-moment estimate of Adam (Kingma & Ba
    2015), $\nu_t = \beta_2 \nu_{t-1} + (1 - \beta_2) \min(g_t^2, M/2)$, with
    $M$ the largest float32 (the storage dtype's range: a gradient beyond
    ~1e19 saturates instead of overflowing the state to infinity)."""
    g = np.asarray(g, np.float64)
    ceiling = 0.5 * float(np.finfo(np.float32).max)
    return decay * np.asarray(nu, np.float64) + (1.0 - decay) * np.minimum(
        g * g, ceiling
    )


def agreement(dot, g_square, m_square):
    r"""Eq. (A1): the cosine of a tensor's gradient $\hat g$ (normalised by its
    RMS) with the memory's momentum $m$, from their sums over the tensor (per
    tensor, per packed segment, or reduced across shards):
    $$a_t = \frac{\sum_i \hat g_i m_i}{\sqrt{\sum_i \hat g_i^2 \sum_i m_i^2}},$$
    and 0 when either is zero. (No overflow: $\hat g$ has unit RMS and $m$ is an
    average of clipped features.)"""
    dot = np.asarray(dot, np.float64)
    norms = np.sqrt(np.asarray(g_square, np.float64) * np.asarray(m_square, np.float64))
    return np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), 0.0)


def log_step_scale(
    log_scale, agreement, rate, threshold, low, high, penalty=None, recovery=0.0,
    hard_low=None,
):
    r"""Eq. (A2): the per-tensor log step multiplier,
    $\rho_t = \operatorname{clip}(\rho_{t-1} + \kappa\, (a_t - a_0),\ \log
    \ell,\ \log h)$: it grows while the gradient keeps the direction of the
    memory's momentum and shrinks when it turns against it (hypergradient
    descent on the step size, Baydin et al. 2018) or, with a threshold $a_0 > 0$,
    when the agreement is no more than noise's (a stationarity test in the
    spirit of Pflug 1983: there a smaller step lowers the noise floor).

    With a spike `penalty` $p_t$ (`spike_penalty`), Eq. (G): $\\ell$ = `low`
    becomes a soft floor that the agreement cannot cross; spikes act only
    there, pushing the multiplier below it, down to $\\ell_0$ = `hard_low`,
    and below it the multiplier recovers by $\\mu$ = `recovery` per step,
    $$\\tilde\\rho_t = \\max\\big(\\rho_{t-1} + \\kappa (a_t - a_0),\\
    \\min(\\rho_{t-1} + \\mu, \\log \\ell)\\big),\\qquad
    \\rho_t = \\operatorname{clip}\\big(\\tilde\\rho_t - p_t\\,
    [\\tilde\\rho_t \\le \\log\\ell],\\ \\log \\ell_0,\\ \\log h\\big).$$
    Without spikes ($p_t = 0$, and so $\\rho_{t-1} \\ge \\log\\ell$) this is (A2).
    `low` is a float, or one floor per tensor when `log_scale` holds several
    (a pack's, with Eq. (K))."""
    log_scale = np.asarray(log_scale, np.float64)
    drift = rate * (np.asarray(agreement, np.float64) - threshold)
    if penalty is None:
        return np.clip(log_scale + drift, np.log(low), np.log(high))
    raised = np.maximum(
        log_scale + drift, np.minimum(log_scale + recovery, np.log(low))
    )
    penalty = np.where(raised <= np.log(low), np.asarray(penalty, np.float64), 0.0)
    return np.clip(raised - penalty, np.log(hard_low), np.log(high))


def spike_penalty(g_rms, mean_nu, count, decay, limit, strength):
    r"""Eq. (G), the spike term: with the tensor's *spike ratio*
    $r_t = \operatorname{rms}(g_t) / \sigma_t$, its gradient's RMS over its
    running scale $\sigma_t = \sqrt{\operatorname{mean}_i \hat\nu_{t,i}}$ of
    (S) (so $r_t = \operatorname{rms}(\hat g_t)$, the RMS of the feature
    $\hat g$ of (F2)), the penalty $p_t = \lambda \max(0, \log(r_t / K))$
    with $K$ = `limit` and $\lambda$ = `strength`. `mean_nu` is
    $\operatorname{mean}_i \nu_{t,i}$ before bias correction, `count` the
    steps taken including this one."""
    correction = 1.0 / (1.0 - decay ** np.float64(count))
    sigma = np.sqrt(np.asarray(mean_nu, np.float64) * correction) + SCALE_FLOOR
    ratio = np.asarray(g_rms, np.float64) / sigma
    return strength * np.log(np.maximum(ratio / limit, 1.0))


def adaptive_coordinate_features(
    g, x, nu, count, g_scale, x_rms, decay, eps, clip, running_scale=True
):
    r"""Eq. (F2): the per-coordinate features of Mnemosyne v2, `(4, *g.shape)`.

    With $\hat\nu_t = \nu_t / (1 - \beta_2^t)$ (bias-corrected, Eq. (V)),
    $\tilde g = g / (\sqrt{\hat\nu_t} + \epsilon)$ (Adam's per-coordinate
    normalisation: it shrinks when the gradient is mostly noise), the gradient
    relative to its tensor's *running* scale $\hat g = g / (\sigma_t + 10^{-12})$,
    $\sigma_t = \operatorname{rms}(\sqrt{\hat\nu_t})
    = \sqrt{\operatorname{mean}_i \hat\nu_{t,i}}$ (Eq. (S)), and $\hat x =
    x/\operatorname{rms}(x)$:

    $$f_i = [\operatorname{clip}(\tilde g_i),\ \operatorname{clip}(\hat g_i),\
    \log|\hat g_i| / p,\ \operatorname{clip}(\hat x_i)]$$

    (the third is the magnitude half of (L)). $t$ = `count`, the steps taken
    including this one. `g_scale` is $\operatorname{rms}(\sqrt{\nu_t})$, before
    bias correction. Normalising by the running scale, not by the current
    gradient's RMS, keeps a small gradient small: at a noise floor, where most
    minibatch gradients are tiny, $g/\operatorname{rms}(g)$ would blow each one
    up to unit size. `running_scale=False` gives that older form (`g_scale` is
    then $\operatorname{rms}(g_t)$).
    """
    g = np.asarray(g, np.float64)
    correction = 1.0 / (1.0 - decay ** np.float64(count))
    nu_hat = np.asarray(nu, np.float64) * correction
    g_tilde = g / (np.sqrt(nu_hat) + eps)
    if running_scale:  # sigma_t + the floor (SCALE_FLOOR)
        g_scale = np.asarray(g_scale, np.float64) * np.sqrt(correction) + SCALE_FLOOR
    g_hat = normalise(g, g_scale)
    magnitude, _ = log_sign(g_hat)
    x_hat = normalise(np.asarray(x, np.float64), x_rms)
    return np.stack([np.clip(g_tilde, -clip, clip), np.clip(g_hat, -clip, clip),
                     magnitude, np.clip(x_hat, -clip, clip)])


# ----------------------------------------------------------------------------
# Small dense layers, written as matrix products
# ----------------------------------------------------------------------------


def dense(weight, bias, inputs):
    """Affine map of feature-major inputs: $W X + b$, `(out, in) @ (in, ...)`."""
    out = np.tensordot(np.asarray(weight), inputs, axes=1)
    return out + np.asarray(bias).reshape((-1,) + (1,) * (out.ndim - 1))


def relu(x):
    return np.maximum(x, 0.0)


def stop_gradient(x):
    """Identity: the NumPy reference computes no gradients."""
    return x


def matmul(a, b):
    """`a @ b` (the LSTM optimizer's gates)."""
    return a @ b


def layer_norm(x, axis=0, eps=1e-6):
    """Layer normalisation over the feature axis (no learned affine)."""
    mean = x.mean(axis=axis, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axis, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


# ----------------------------------------------------------------------------
# Random features (Appendix A.1; Performer Lemma 1)
# ----------------------------------------------------------------------------


def orthogonal_gaussian_matrix(rng: np.random.Generator, m: int, d: int):
    """$m$ rows in $\\mathbb{R}^d$: orthogonal within blocks of $d$ rows, each row's
    norm resampled from the chi distribution so rows are marginally $N(0, I)$
    (FAVOR+ "orthogonal random features")."""
    blocks = []
    for _ in range(-(-m // d)):
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        blocks.append(q.T)
    rows = np.concatenate(blocks)[:m]
    norms = np.sqrt(rng.chisquare(d, size=m))
    return rows * norms[:, None]


def hyperbolic_features(z, omega):
    """Eq. (A.1): positive hyperbolic random features of the vectors `z[:, i]`.

    $$\\phi(z) = \\frac{e^{-\\|z\\|^2/2}}{\\sqrt{r}}
    \\left[e^{\\omega_1^\\top z}, \\dots, e^{\\omega_m^\\top z},
    e^{-\\omega_1^\\top z}, \\dots, e^{-\\omega_m^\\top z}\\right],\\quad r = 2m,$$

    an unbiased estimator of the softmax kernel:
    $\\mathbb{E}_\\omega[\\phi(x)^\\top\\phi(y)] = e^{x^\\top y}$.
    Each entry is at most $e^{\\|\\omega_j\\|^2/2}/\\sqrt r$, so writes never
    overflow. `z`: `(d, n)`, `omega`: `(m, d)`; returns `(2m, n)`.
    """
    z = np.asarray(z, dtype=np.float64)
    proj = np.tensordot(np.asarray(omega, dtype=np.float64), z, axes=1)  # (m, ...)
    half_sq = 0.5 * np.sum(z * z, axis=0)
    r = 2 * proj.shape[0]
    return np.concatenate([np.exp(proj - half_sq), np.exp(-proj - half_sq)]) / np.sqrt(
        r
    )


def hyperbolic_query_features(z, omega):
    """Eq. (A.1) up to a positive per-query factor, for reading the memory.

    $\\tilde\\phi(q) = \\phi(q) / \\max_j \\phi_j(q)$: the largest entry is 1. The
    factor cancels in the read-out ratio (5), so the result is unchanged while
    large queries can no longer underflow every feature to zero.
    """
    z = np.asarray(z, dtype=np.float64)
    proj = np.tensordot(np.asarray(omega, dtype=np.float64), z, axes=1)
    both = np.concatenate([proj, -proj])
    return np.exp(both - both.max(axis=0, keepdims=True))


# ----------------------------------------------------------------------------
# Compact associative memory (Sec. 3.3, Eqs. (4)-(5))
# ----------------------------------------------------------------------------


def cam_write(numerator, normaliser, phi_k, v, decay):
    """Eq. (4): discounted write of one step into the memory.

    $$N_t = e^{-\\tau} N_{t-1} + \\phi(k_t) v_t^\\top,\\qquad
    \\Psi_t = e^{-\\tau} \\Psi_{t-1} + \\phi(k_t)$$

    Shapes (per head h, per memory slot i): `numerator` `(H, r, d_v, n)`,
    `normaliser` `(H, r, n)`, `phi_k` `(H, r, n)`, `v` `(H, d_v, n)`,
    `decay` $= e^{-\\tau_h}$ `(H,)`.
    """
    decay = np.asarray(decay, dtype=np.float64)
    decay = decay.reshape(decay.shape + (1,) * (np.ndim(normaliser) - 1))
    new_numerator = decay[:, None] * numerator + phi_k[:, :, None] * v[:, None]
    new_normaliser = decay * normaliser + phi_k
    return new_numerator, new_normaliser


def cam_read(numerator, normaliser, phi_q, eps):
    """Eq. (5): read-out of the memory by a query.

    $$o_t = \\frac{N_t^\\top \\phi(q_t)}{\\phi(q_t)^\\top \\Psi_t + \\varepsilon}$$

    returns the `H * d_v` read-out rows, head-major.
    """
    num = np.einsum("hr...,hrv...->hv...", phi_q, numerator)
    den = np.einsum("hr...,hr...->h...", phi_q, normaliser)
    out = num / (den[:, None] + eps)
    return out.reshape(
        (out.shape[0] * out.shape[1],) + out.shape[2:]
    )  # H*d_v rows, head-major


# ----------------------------------------------------------------------------
# Hierarchical pooling encoder (Fig. 1c): chunk -> bidirectional Performer -> pool
# ----------------------------------------------------------------------------


def chunk(x, chunk_len):
    """Split feature-major tokens `(d, n)` into `(d, chunks, chunk_len)`, zero-padded;
    also return the `(chunks, chunk_len)` mask of real tokens."""
    d, n = x.shape
    num_chunks = max(1, -(-n // chunk_len))
    padded = np.zeros((d, num_chunks * chunk_len), dtype=x.dtype)
    padded[:, :n] = x
    mask = np.zeros(num_chunks * chunk_len, dtype=bool)
    mask[:n] = True
    return padded.reshape(d, num_chunks, chunk_len), mask.reshape(num_chunks, chunk_len)


def chunk_attention(x, mask, wq, wk, wv, wo, omega):
    """Bidirectional FAVOR+ attention inside each chunk (Fig. 1c), padding masked.

    For one chunk with tokens $x_1..x_c$ (real ones marked by the mask $\\mu$):
    $$\\mathrm{att}(x_i) = W_O \\frac{\\sum_j \\mu_j v_j\\, \\phi(k_j)^\\top \\phi(q_i)}
    {\\sum_j \\mu_j \\phi(k_j)^\\top \\phi(q_i)},\\quad
    q = d^{-1/4} W_Q x,\\ k = d^{-1/4} W_K x,\\ v = W_V x.$$

    `x`: `(d, chunks, chunk_len)`; returns the same shape.
    """
    d, num_chunks, chunk_len = x.shape
    scale = wq.shape[0] ** -0.25
    out = np.zeros((wo.shape[0], num_chunks, chunk_len))
    for c in range(num_chunks):
        xc = x[:, c, :]
        phi_q = hyperbolic_query_features(scale * (wq @ xc), omega)
        phi_k = hyperbolic_features(scale * (wk @ xc), omega) * mask[c]
        v = wv @ xc
        num = (v @ phi_k.T) @ phi_q  # sum_j v_j phi(k_j)^T phi(q_i)
        den = phi_k.sum(axis=1) @ phi_q
        out[:, c, :] = wo @ (num / den)
    return out


def masked_mean_pool(x, mask):
    """Mean of the real tokens of each chunk: `(d, chunks, chunk_len) -> (d,
    chunks)`."""
    weights = mask / np.maximum(mask.sum(axis=1, keepdims=True), 1)
    return np.einsum("dcl,cl->dc", x, weights)


def unpool(tokens, n, chunk_len_total):
    """Give each of `n` coordinates the token of the chunk it was pooled into:
    coordinate $i$ reads token $\\lfloor i / c^L \\rfloor$."""
    return np.repeat(tokens, chunk_len_total, axis=-1)[..., :n]


# ----------------------------------------------------------------------------
# Output (O)
# ----------------------------------------------------------------------------


def learned_step(
    direction, magnitude, alpha, beta, magnitude_clip, direction_clip=None
):
    """Eq. (O): the step, $\\alpha\\, \\bar d \\exp(\\beta\\, c \\tanh(s / c))$ with
    $c$ =
    `magnitude_clip` (a smooth clip) and $\\bar d$ = $d$ clipped to
    `[-direction_clip, direction_clip]` (v2; unclipped if `None`), so every
    step is bounded by $\\alpha e^{\\beta c}$ times the direction clip."""
    if direction_clip is not None:
        direction = np.clip(direction, -direction_clip, direction_clip)
    s = magnitude_clip * np.tanh(magnitude / magnitude_clip)
    return alpha * direction * np.exp(beta * s)


def cond(pred, true_fn, false_fn):
    """`true_fn()` if `pred` else `false_fn()`."""
    return true_fn() if pred else false_fn()
