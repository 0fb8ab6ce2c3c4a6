"""Hierarchical pooling encoder: chunked FAVOR+ attention, masking, pooling."""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mnemosyne
from mnemosyne.backends import get_backend
from mnemosyne.backends import numpy_backend as nb

D, D_K, M, C = 3, 2, 3, 4  # d_model, key width, omega rows, chunk_len


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((D_K, D)) / np.sqrt(D),
        rng.standard_normal((D_K, D)) / np.sqrt(D),
        rng.standard_normal((D, D)) / np.sqrt(D),
        rng.standard_normal((D, D)) / np.sqrt(D),
        nb.orthogonal_gaussian_matrix(rng, M, D_K),
    )


def _attention(backend, x, mask, weights):
    """`chunk_attention` in the given backend (JAX: jitted, float64)."""
    if backend == "numpy":
        return nb.chunk_attention(x, mask, *weights)
    B = get_backend("jax")
    fn = jax.jit(lambda x, *w: B.chunk_attention(x, mask, *w))
    return np.asarray(fn(jnp.asarray(x), *map(jnp.asarray, weights)))


def _dense_reference(x, mask, wq, wk, wv, wo, omega):
    """A_ij = phi~(q_i)^T phi(k_j) mu_j, rows normalised, times v, then W_O; per
    chunk."""
    scale = D_K**-0.25
    out = np.zeros_like(x)
    for c in range(x.shape[1]):
        xc = x[:, c, :]
        phi_q = nb.hyperbolic_query_features(scale * wq @ xc, omega)  # (r, L)
        phi_k = nb.hyperbolic_features(scale * wk @ xc, omega)
        a = (phi_q.T @ phi_k) * mask[c][None, :]  # (L, L)
        a = a / a.sum(axis=1, keepdims=True)
        v = wv @ xc  # (D, L)
        out[:, c, :] = wo @ (v @ a.T)
    return out


def _mask(num_chunks, n):
    return (np.arange(num_chunks * C) < n).reshape(num_chunks, C)


def test_chunk_attention_equals_dense_matrix(backend, x64):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((D, 3, C))
    mask = _mask(3, 10)
    weights = _weights()
    expected = _dense_reference(x, mask, *weights)
    np.testing.assert_allclose(
        _attention(backend, x, mask, weights), expected, rtol=1e-10, atol=1e-12
    )


def test_chunk_attention_approximates_softmax_attention():
    """With many random features the estimate approaches exact softmax attention
    exp(q_i^T k_j / sqrt(d_k)) (Performer Lemma 1): at m = 20000 the error is a
    small fraction of how far softmax attention is from uniform attention."""
    rng = np.random.default_rng(2)
    x = 0.4 * rng.standard_normal((D, 1, C))  # moderate |q + k|: light-tailed estimator
    mask = _mask(1, C)
    wq, wk, wv, wo, _ = _weights(3)
    scale = D_K**-0.25
    q, k, v = scale * wq @ x[:, 0], scale * wk @ x[:, 0], wv @ x[:, 0]
    a = np.exp(q.T @ k)
    exact = wo @ (v @ (a / a.sum(axis=1, keepdims=True)).T)
    uniform = wo @ (v @ np.full_like(a, 1.0 / C).T)
    gap = np.max(np.abs(uniform - exact))
    errors = []
    for m in (2, 20000):
        omega = nb.orthogonal_gaussian_matrix(np.random.default_rng(m), m, D_K)
        approx = nb.chunk_attention(x, mask, wq, wk, wv, wo, omega)[:, 0]
        errors.append(np.max(np.abs(approx - exact)))
    assert errors[1] < 0.1 * gap
    assert errors[1] < errors[0]


@pytest.mark.parametrize("n", [5, 8])
def test_padding_does_not_change_real_tokens(backend, x64, n):
    """Same real tokens; pads of zeros, of garbage, and one extra chunk of garbage."""
    rng = np.random.default_rng(n)
    weights = _weights()
    num_chunks = math.ceil(n / C)
    chunks, mask = nb.chunk(rng.standard_normal((D, n)), C)
    np.testing.assert_array_equal(mask, _mask(num_chunks, n))
    garbage = chunks.copy().reshape(D, -1)
    garbage[:, n:] = 1e3 * rng.standard_normal((D, num_chunks * C - n))
    garbage = garbage.reshape(chunks.shape)
    extra = np.concatenate([garbage, 3.0 * rng.standard_normal((D, 1, C))], axis=1)
    extra_mask = np.concatenate([mask, np.zeros((1, C), bool)])
    extra_mask[-1, 0] = True  # the extra chunk has one real token of its own

    def real(out, k):
        return out.reshape(D, -1)[:, :k]

    base = _attention(backend, chunks, mask, weights)
    np.testing.assert_allclose(
        real(_attention(backend, garbage, mask, weights), n),
        real(base, n),
        rtol=1e-10,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        real(_attention(backend, extra, extra_mask, weights), n),
        real(base, n),
        rtol=1e-10,
        atol=1e-12,
    )
    # the pooled tokens ignore pad contents too
    pool = get_backend(backend).masked_mean_pool
    np.testing.assert_allclose(
        np.asarray(pool(garbage, mask)), np.asarray(pool(chunks, mask)), rtol=1e-12
    )
    np.testing.assert_allclose(
        np.asarray(pool(chunks, mask))[:, -1],
        chunks.reshape(D, -1)[:, (num_chunks - 1) * C : n].mean(axis=1),
        rtol=1e-12,
    )


@functools.cache
def _encoder():
    enc = mnemosyne.HierarchicalPoolingEncoder(
        D,
        num_levels=2,
        chunk_len=C,
        key_size=D_K,
        num_features=2 * M,
        key=jax.random.key(0),
    )
    # θ as float64 NumPy arrays: exact in the NumPy backend, float64 under jit+x64
    return jax.tree.map(
        lambda a: np.asarray(a, np.float64) if eqx.is_array(a) else a, enc
    )


@pytest.mark.parametrize("n", [1, 4, 15, 16, 17, 33, 64])
def test_number_of_meta_tokens(n):
    enc = _encoder()
    expected = math.ceil(n / C**2)
    assert enc.num_meta_tokens(n) == expected
    tokens = np.random.default_rng(n).standard_normal((D, n))
    out = enc(tokens, nb)
    assert out.shape == (D, expected)
    assert np.all(np.isfinite(out))


def test_meta_token_depends_only_on_its_tokens():
    """Meta-token b reads only coordinates b*c^L .. (b+1)*c^L - 1 (locality)."""
    enc = _encoder()
    rng = np.random.default_rng(0)
    tokens = rng.standard_normal((D, 40))  # 3 meta-tokens: 16 + 16 + 8
    changed = tokens.copy()
    changed[:, 16:32] = rng.standard_normal((D, 16))
    a, b = enc(tokens, nb), enc(changed, nb)
    np.testing.assert_array_equal(a[:, 0], b[:, 0])
    np.testing.assert_array_equal(a[:, 2], b[:, 2])
    assert np.max(np.abs(a[:, 1] - b[:, 1])) > 1e-6


def test_permutation_within_chunk_is_invisible():
    """Bidirectional attention + mean pooling is permutation invariant inside a
    chunk."""
    enc = _encoder()
    tokens = np.random.default_rng(1).standard_normal((D, 20))
    permuted = tokens.copy()
    permuted[:, 4:8] = tokens[:, [6, 4, 7, 5]]
    np.testing.assert_allclose(
        enc(permuted, nb), enc(tokens, nb), rtol=1e-10, atol=1e-12
    )
    swapped = tokens.copy()
    swapped[:, [3, 4]] = tokens[:, [4, 3]]  # across chunks: changes the result
    assert np.max(np.abs(enc(swapped, nb) - enc(tokens, nb))) > 1e-8


def test_encoder_backends_agree(x64):
    enc = _encoder()
    tokens = np.random.default_rng(2).standard_normal((D, 21))
    fn = jax.jit(lambda e, t: e(t, get_backend("jax")))
    np.testing.assert_allclose(
        np.asarray(fn(enc, jnp.asarray(tokens))),
        enc(tokens, nb),
        rtol=1e-10,
        atol=1e-12,
    )
