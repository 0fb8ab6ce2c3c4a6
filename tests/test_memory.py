"""The compact associative memory: recurrence = prefix sum = quadratic attention."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mnemosyne
from mnemosyne.backends import get_backend
from mnemosyne.backends import numpy_backend as nb

H, M, D_K, D_V, N, T = (
    2,
    3,
    2,
    2,
    3,
    10,
)  # heads, omega rows (r = 2M), widths, slots, steps


def _sequence(seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((T, H, D_K, N))
    k = rng.standard_normal((T, H, D_K, N))
    v = rng.standard_normal((T, H, D_V, N))
    omega = np.stack([nb.orthogonal_gaussian_matrix(rng, M, D_K) for _ in range(H)])
    tau = np.asarray([0.05, 0.4])
    return q, k, v, omega, tau


def _features(fn, z, omega):
    """Per-head features `(H, r, N)` of `z` `(H, D_K, N)`."""
    return np.stack([fn(z[h], omega[h]) for h in range(H)])


def _recurrent(B, q, k, v, omega, tau, query_fn):
    numerator = np.zeros((H, 2 * M, D_V, N))
    normaliser = np.zeros((H, 2 * M, N))
    reads = []
    for t in range(T):
        phi_k = _features(nb.hyperbolic_features, k[t], omega)
        phi_q = _features(query_fn, q[t], omega)
        numerator, normaliser = B.cam_write(
            B.asarray(numerator),
            B.asarray(normaliser),
            B.asarray(phi_k),
            B.asarray(v[t]),
            B.asarray(np.exp(-tau)),
        )
        read = B.cam_read(numerator, normaliser, B.asarray(phi_q), 0.0)  # H * D_V rows
        reads.append(np.asarray(read).reshape(H, D_V, N))
    return np.stack(reads)  # (T, H, D_V, N)


def _prefix_sum(q, k, v, omega, tau):
    """Causal linear attention: N_t = e^{-tau t} sum_{s<=t} e^{tau s} phi(k_s) v_s^T."""
    phi_k = np.stack([_features(nb.hyperbolic_features, k[t], omega) for t in range(T)])
    phi_q = np.stack([_features(nb.hyperbolic_features, q[t], omega) for t in range(T)])
    t = np.arange(T)[:, None]
    up = np.exp(tau[None, :] * t)[..., None, None]  # (T, H, 1, 1)
    numerator = np.cumsum(up[..., None] * phi_k[:, :, :, None] * v[:, :, None], axis=0)
    normaliser = np.cumsum(up * phi_k, axis=0)
    numerator, normaliser = numerator / up[..., None], normaliser / up
    num = np.einsum("thrn,thrvn->thvn", phi_q, numerator)
    den = np.einsum("thrn,thrn->thn", phi_q, normaliser)
    return num / den[:, :, None]


def _quadratic(q, k, v, omega, tau):
    """Masked quadratic attention: explicit T x T weights phi(q_t)^T phi(k_s)
    e^{-tau(t-s)} [s<=t]."""
    out = np.zeros((T, H, D_V, N))
    for h in range(H):
        for n in range(N):
            phi_q = np.stack(
                [
                    nb.hyperbolic_features(q[t, h, :, n : n + 1], omega[h])[:, 0]
                    for t in range(T)
                ]
            )
            phi_k = np.stack(
                [
                    nb.hyperbolic_features(k[t, h, :, n : n + 1], omega[h])[:, 0]
                    for t in range(T)
                ]
            )
            lag = np.arange(T)[:, None] - np.arange(T)[None, :]
            a = (phi_q @ phi_k.T) * np.exp(-tau[h] * np.maximum(lag, 0)) * (lag >= 0)
            a = a / a.sum(axis=1, keepdims=True)
            out[:, h, :, n] = a @ v[:, h, :, n]
    return out


def test_prefix_sum_equals_quadratic():
    seq = _sequence()
    np.testing.assert_allclose(
        _prefix_sum(*seq), _quadratic(*seq), rtol=1e-10, atol=1e-12
    )


def test_recurrent_equals_quadratic(backend, x64):
    seq = _sequence(1)
    recurrent = _recurrent(get_backend(backend), *seq, query_fn=nb.hyperbolic_features)
    np.testing.assert_allclose(recurrent, _quadratic(*seq), rtol=1e-10, atol=1e-12)


def test_stabilised_query_features_cancel(backend, x64):
    """phi~(q) = phi(q) / max_j phi_j(q): the per-query factor cancels in the read."""
    seq = _sequence(2)
    exact = _recurrent(get_backend(backend), *seq, query_fn=nb.hyperbolic_features)
    stable = _recurrent(
        get_backend(backend), *seq, query_fn=nb.hyperbolic_query_features
    )
    np.testing.assert_allclose(stable, exact, rtol=1e-10, atol=1e-12)


def test_stabilised_read_survives_large_queries():
    """Where exact query features underflow to 0 (0/0 read), the stabilised read is
    still the convex combination of the stored values given by the quadratic form."""
    q, k, v, omega, tau = _sequence(3)
    q = 60.0 * q  # |q|^2/2 ~ 3600: exp(-|q|^2/2) underflows in float64
    with np.errstate(invalid="ignore"):
        exact = _recurrent(nb, q, k, v, omega, tau, query_fn=nb.hyperbolic_features)
    assert not np.all(np.isfinite(exact))  # the failure the stabilisation prevents
    stable = _recurrent(nb, q, k, v, omega, tau, query_fn=nb.hyperbolic_query_features)
    assert np.all(np.isfinite(stable))
    # reads are convex combinations of the values written so far
    for t in range(T):
        assert np.all(stable[t] <= v[: t + 1].max(axis=0) + 1e-12)
        assert np.all(stable[t] >= v[: t + 1].min(axis=0) - 1e-12)


def test_module_is_quadratic_attention(getkey):
    """`CompactAssociativeMemory.__call__` (numpy backend) over T steps equals
    quadratic discounted attention with its own W_Q, W_K, W_V, features and tau."""
    d_model = 3
    memory = mnemosyne.CompactAssociativeMemory(
        d_model, num_heads=H, num_features=2 * M, key_size=D_K, value_size=D_V,
        timescales=(5.0, 50.0), eps=0.0, key=getkey(),
    )
    theta = jax.tree.map(
        lambda a: np.asarray(a, np.float64) if isinstance(a, jax.Array) else a, memory
    )
    rng = np.random.default_rng(4)
    tokens = rng.standard_normal((T, d_model, N))
    state = memory.init_state((N,), np.float64, xp=np)
    reads = []
    for t in range(T):
        state, read = theta(state, tokens[t], nb)
        reads.append(read.reshape(H, D_V, N))
    q = np.einsum("hkd,tdn->thkn", theta.query, tokens)
    k = np.einsum("hkd,tdn->thkn", theta.key_proj, tokens)
    v = np.einsum("hvd,tdn->thvn", theta.value, tokens)
    tau = np.exp(theta.log_tau)
    np.testing.assert_allclose(tau, [1 / 5.0, 1 / 50.0], rtol=1e-6)
    expected = _quadratic(q, k, v, theta.features.omega.value, tau)
    np.testing.assert_allclose(np.stack(reads), expected, rtol=1e-10, atol=1e-12)
    assert memory.floats_per_slot() == H * 2 * M * (D_V + 1)
    assert state.numerator.shape == (H, 2 * M, D_V, N)


def test_module_backends_agree(getkey, x64):
    memory = mnemosyne.CompactAssociativeMemory(
        3, num_heads=H, num_features=2 * M, key_size=D_K, value_size=D_V, key=getkey()
    )
    memory64 = jax.tree.map(
        lambda a: a.astype(jnp.float64) if isinstance(a, jax.Array) else a, memory
    )
    tokens = np.random.default_rng(5).standard_normal((3, 3, N))
    step = jax.jit(lambda m, s, x: m(s, x, get_backend("jax")))
    s_np = memory.init_state((N,), np.float64, xp=np)
    s_jx = memory64.init_state((N,), jnp.float64)
    for t in range(3):
        s_np, r_np = memory64(s_np, tokens[t], nb)
        s_jx, r_jx = step(memory64, s_jx, jnp.asarray(tokens[t]))
        np.testing.assert_allclose(r_jx, r_np, rtol=1e-10)


def test_bad_timescales(getkey):
    with pytest.raises(ValueError, match="timescale per head"):
        mnemosyne.CompactAssociativeMemory(
            3, num_heads=2, timescales=(1.0,), key=getkey()
        )
