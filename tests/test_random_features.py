"""Positive hyperbolic random features (Appendix A.1 / Performer SM-hyp+)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mnemosyne
from mnemosyne.backends import jax_backend as jb
from mnemosyne.backends import numpy_backend as nb

D = 4


def _pair(seed=0, norm=0.6):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((2, D))
    return norm * x / np.linalg.norm(x), norm * y / np.linalg.norm(y)


def _estimates(x, y, m, draws, seed, fixed_norms=False):
    """`draws` independent estimates phi(x)^T phi(y), each with fresh omega (m rows).

    `fixed_norms`: rows of omega rescaled to norm sqrt(d) instead of the
    chi-distributed norms of Gaussian rows (a plausible bug: orthogonal
    features without the norm draw are biased for the softmax kernel)."""
    rng = np.random.default_rng(seed)
    z = np.stack([x, y], axis=1)  # (d, 2)
    out = np.empty(draws)
    for i in range(draws):
        omega = nb.orthogonal_gaussian_matrix(rng, m, D)
        if fixed_norms:
            omega = omega / np.linalg.norm(omega, axis=1, keepdims=True) * np.sqrt(D)
        phi = nb.hyperbolic_features(z, omega)
        out[i] = phi[:, 0] @ phi[:, 1]
    return out


def _within_4_standard_errors(est, exact) -> bool:
    """The unbiasedness test: the sample mean is within 4 standard errors."""
    standard_error = est.std(ddof=1) / np.sqrt(len(est))
    return abs(est.mean() - exact) < 4 * standard_error


def test_unbiased_for_softmax_kernel():
    """E[phi(x)^T phi(y)] = exp(x^T y): the sample mean is within 4 standard errors."""
    x, y = _pair()
    est = _estimates(x, y, m=D, draws=4000, seed=1)
    exact = np.exp(x @ y)
    assert _within_4_standard_errors(est, exact)
    standard_error = est.std(ddof=1) / np.sqrt(len(est))
    assert standard_error < 0.01 * exact  # the test has power: SE is small


def test_biased_features_are_detected():
    """Power check of the test above on a real bug: the same draws with the
    projection rows' norms fixed (no chi-distributed norms) are biased, and
    the 4-standard-error test rejects them."""
    x, y = _pair()
    est = _estimates(x, y, m=D, draws=4000, seed=1, fixed_norms=True)
    assert not _within_4_standard_errors(est, np.exp(x @ y))


def test_error_shrinks_like_inverse_sqrt_r():
    """RMS error at r and 4r: ratio 2. With m a multiple of d, the estimator at 4m
    is the mean of 4 i.i.d. copies of the one at m (independent orthogonal
    blocks), so its variance is exactly 1/4: ratio of RMS errors = 2. The band is
    4 standard errors of the sample ratio (delta method on the two mean squared
    errors, each with relative SE std(e^2) / (sqrt(n) mean(e^2)))."""
    x, y = _pair(seed=3, norm=0.8)
    exact = np.exp(x @ y)
    draws = 3000
    err_1 = _estimates(x, y, m=D, draws=draws, seed=5) - exact
    err_4 = _estimates(x, y, m=4 * D, draws=draws, seed=6) - exact
    mse_1, mse_4 = np.mean(err_1**2), np.mean(err_4**2)
    rel_se_1 = np.std(err_1**2) / (np.sqrt(draws) * mse_1)
    rel_se_4 = np.std(err_4**2) / (np.sqrt(draws) * mse_4)
    ratio = np.sqrt(mse_1 / mse_4)
    ratio_rel_se = 0.5 * np.sqrt(rel_se_1**2 + rel_se_4**2)
    assert abs(ratio - 2.0) < 4 * ratio_rel_se * ratio, (ratio, ratio_rel_se)
    assert 4 * ratio_rel_se < 0.25  # the band excludes 1 (no shrinkage) and 4 (1/r)


@pytest.mark.parametrize("m", [3, 4, 9])
def test_orthogonal_gaussian_matrix_numpy(m):
    rng = np.random.default_rng(m)
    omega = nb.orthogonal_gaussian_matrix(rng, m, D)
    assert omega.shape == (m, D)
    for start in range(0, m, D):
        block = omega[start : start + D]
        gram = block @ block.T
        np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0.0, atol=1e-12)


def test_orthogonal_gaussian_matrix_jax(getkey):
    omega = jb.orthogonal_gaussian_matrix(getkey(), 6, D)
    assert omega.shape == (6, D)
    for start in (0, 4):
        block = np.asarray(omega[start : start + D], np.float64)
        gram = block @ block.T
        np.testing.assert_allclose(
            gram - np.diag(np.diag(gram)), 0.0, atol=1e-5 * gram.max()
        )


def test_row_norms_are_chi_distributed():
    """Rows are marginally N(0, I): E|w|^2 = d, Var|w|^2 = 2d (4 standard errors)."""
    omega = nb.orthogonal_gaussian_matrix(np.random.default_rng(0), 4000, D)
    sq = np.sum(omega**2, axis=1)
    assert abs(sq.mean() - D) < 4 * np.sqrt(2 * D / len(sq))
    assert abs(sq.var() - 2 * D) < 0.15 * 2 * D


@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0, 1e4, 1e30])
def test_features_positive_and_bounded(scale):
    """phi_j(z) <= exp(|w_j|^2 / 2) / sqrt(r) (w^T z - |z|^2/2 <= |w|^2/2), even for
    huge |z| where a naive exp(w^T z) overflows; no NaN or Inf in either backend."""
    rng = np.random.default_rng(1)
    omega = nb.orthogonal_gaussian_matrix(rng, 3, D)
    z = scale * rng.standard_normal((D, 5))
    bound = np.exp(0.5 * np.sum(omega**2, axis=1)) / np.sqrt(6)
    bound = np.concatenate([bound, bound])[:, None]
    with np.errstate(over="ignore"):
        phi = nb.hyperbolic_features(z, omega)
    assert (
        np.all(np.isfinite(phi))
        and np.all(phi >= 0)
        and np.all(phi <= bound * (1 + 1e-12))
    )
    if scale <= 1.0:  # |z|^2/2 >~ 745 underflows to exactly 0 (allowed)
        assert np.all(phi > 0)
    phi32 = np.asarray(
        jax.jit(jb.hyperbolic_features)(
            jnp.asarray(z, jnp.float32), jnp.asarray(omega, jnp.float32)
        )
    )
    assert np.all(np.isfinite(phi32)) and np.all(phi32 >= 0)
    assert np.all(phi32 <= bound * (1 + 1e-5))


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_query_features_max_one(scale):
    rng = np.random.default_rng(2)
    omega = nb.orthogonal_gaussian_matrix(rng, 3, D)
    z = scale * rng.standard_normal((D, 5))
    phi = nb.hyperbolic_query_features(z, omega)
    np.testing.assert_allclose(phi.max(axis=0), 1.0)
    assert np.all(phi >= 0) and np.all(np.isfinite(phi))
    # proportional to the exact features wherever those do not underflow
    if scale == 1.0:
        exact = nb.hyperbolic_features(z, omega)
        np.testing.assert_allclose(phi, exact / exact.max(axis=0), rtol=1e-12)


def test_random_feature_map_module(getkey):
    fmap = mnemosyne.RandomFeatureMap(2, 6, D, key=getkey())
    assert fmap.omega.value.shape == (2, 3, D)
    assert isinstance(fmap.omega, mnemosyne.Frozen)
    spec = mnemosyne.trainable_filter(fmap)
    assert not any(jax.tree.leaves(spec))
    z = np.random.default_rng(0).standard_normal((2, D, 3))
    keys = fmap.keys(z, nb)
    omega = np.asarray(fmap.omega.value, np.float64)
    np.testing.assert_allclose(
        keys[1], nb.hyperbolic_features(z[1], omega[1]), rtol=1e-6
    )
    for bad in (0, 3):
        with pytest.raises(ValueError, match="even"):
            mnemosyne.RandomFeatureMap(1, bad, D, key=getkey())
