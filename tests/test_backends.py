"""NumPy (float64 reference) <-> JAX conformance, kernel by kernel and end to end.

Tolerances:

- float64: JAX under `jax_enable_x64` against the NumPy reference at
  `rtol=1e-10`. Both compute in IEEE double; they differ only in the order of
  a handful of additions (unrolled `dense` vs `tensordot`) and in `rsqrt` vs
  `1/sqrt`, i.e. a few ulps (~1e-15), five orders of magnitude below 1e-10.
- float32: JAX on float32 inputs against NumPy float64 on the *same* (rounded)
  inputs at `rtol=1e-5`. float32 unit roundoff is u = 6e-8; every kernel is a
  short chain of O(10) operations whose worst relative condition number is
  `exp`'s, |argument| <= ~10 for these inputs, so the forward error is
  <= ~10 * 10 * u ~ 6e-6 < 1e-5. Entries produced by cancellation (sums of
  mixed signs, layer-norm outputs near 0) have no relative accuracy, so both
  variants add an absolute floor `atol = rtol * max|reference|` (normwise
  error, the standard backward-stable bound).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    LOPTS,
    assert_allclose_tree,
    cast_floating,
    enable_x64,
    jit_tx_update,
    random_like,
    ranked_params,
)

import mnemosyne
from mnemosyne._packing import PACK_MAX_SIZE, Pack, TensorStatistics
from mnemosyne.backends import get_backend
from mnemosyne.backends import jax_backend as jb
from mnemosyne.backends import numpy_backend as nb

RTOL = {"float64": 1e-10, "float32": 1e-5}

DTYPES = ["float64", "float32"]


def _rng(name: str) -> np.random.Generator:
    """A generator seeded from the case name (stable across runs, unlike `hash`)."""
    return np.random.default_rng(sum(map(ord, name)))


def _log_sign_inputs(rng):
    # magnitudes 1e-8 .. 1e2 on both sides of the branch point e^-10 = 4.5e-5,
    # none within 1% of it (the two dtypes could take different branches there)
    g = rng.choice([-1.0, 1.0], 40) * 10.0 ** rng.uniform(-8, 2, 40)
    g[np.abs(np.log(np.abs(g)) + 10.0) < 0.01] = 1.0
    g[:3] = [0.0, 3e-5, -7e-5]
    return (g.reshape(5, 8),), {}


def _rms_inputs(scale):
    def make(rng):
        return (scale * rng.standard_normal((3, 4, 2)),), {}

    return make


def _cam_state(rng, h=2, r=4, dv=3, n=5):
    numerator = rng.standard_normal((h, r, dv, n))
    normaliser = rng.uniform(0.1, 2.0, (h, r, n))
    return numerator, normaliser


def _chunk_attention_inputs(rng):
    d, dk, m, chunks, chunk_len = 3, 2, 3, 2, 4
    x = rng.standard_normal((d, chunks, chunk_len))
    mask = np.ones((chunks, chunk_len), bool)
    mask[1, 2:] = False
    arrays = (
        x,
        rng.standard_normal((dk, d)) / np.sqrt(d),
        rng.standard_normal((dk, d)) / np.sqrt(d),
        rng.standard_normal((d, d)) / np.sqrt(d),
        rng.standard_normal((d, d)) / np.sqrt(d),
        nb.orthogonal_gaussian_matrix(rng, m, dk),
    )
    # the mask is a static NumPy array in both backends (it comes from `chunk`)
    return arrays, {"mask": mask}


def _coordinate_inputs(rng):
    g = rng.standard_normal((3, 4)) * 1e-3
    x = rng.standard_normal((3, 4)) * 5.0
    g[0, 0] = 0.3  # one coordinate > clip * rms: exercises the clip
    return (g, x, nb.tensor_rms(g), nb.tensor_rms(x)), {"clip": 2.0}


def _chunk_mask(rng):
    mask = np.ones((3, 4), bool)
    mask[2, 1:] = False
    return mask


# name -> (kernel, builder(rng) -> (array args, static kwargs), argument order)
# Statics are passed by keyword; `order` says where the mask goes for chunk_attention.
KERNELS = {
    "log_sign": ("log_sign", _log_sign_inputs),
    "tensor_rms": ("tensor_rms", _rms_inputs(1.0)),
    "tensor_rms_tiny": ("tensor_rms", _rms_inputs(1e-30)),
    "tensor_rms_huge": ("tensor_rms", _rms_inputs(1e30)),
    "tensor_rms_zeros": ("tensor_rms", lambda rng: ((np.zeros((3, 4)),), {})),
    "tensor_mean": ("tensor_mean", _rms_inputs(1.0)),
    "tensor_mean_huge": (  # 1.4e38 per entry: a plain sum would overflow float32
        "tensor_mean",
        lambda rng: ((np.full((3, 4), 1.4e38) * rng.uniform(0.5, 1.0, (3, 4)),), {}),
    ),
    "tensor_size": ("tensor_size", _rms_inputs(1.0)),
    "segment_mean": (
        "segment_mean",
        lambda rng: (
            (rng.standard_normal(7),),
            {"segment_ids": np.asarray([0, 0, 1, 2, 2, 2, 2]), "num_segments": 3},
        ),
    ),
    "step_embedding": (
        "step_embedding",
        lambda rng: (
            (np.asarray(37),),
            {"timescales": (10.0, 100.0, 1000.0), "dtype": None},
        ),
    ),
    "warmup_factor": (
        "warmup_factor",
        lambda rng: ((np.asarray(37),), {"start": 0.1, "steps": 200, "dtype": None}),
    ),
    "warmup_factor_done": (
        "warmup_factor",
        lambda rng: ((np.asarray(250),), {"start": 0.1, "steps": 200, "dtype": None}),
    ),
    "log_step_scale": (
        "log_step_scale",
        lambda rng: (
            (rng.uniform(-1.5, 0.5, 6), rng.uniform(-1.0, 1.0, 6)),
            {"rate": 0.5, "threshold": 0.05, "low": 0.5, "high": 2.0},
        ),
    ),
    "log_step_scale_spike": (  # Eq. (G): below and above the soft floor
        "log_step_scale",
        lambda rng: (
            (rng.uniform(-1.5, 0.5, 6), rng.uniform(-1.0, 1.0, 6)),
            {"rate": 0.5, "threshold": 0.05, "low": 0.5, "high": 2.0,
             "penalty": np.asarray([0.0, 0.0, 0.3, 1.5, 0.0, 0.7]),
             "recovery": 0.01, "hard_low": 0.125},
        ),
    ),
    "spike_penalty": (  # ratios on both sides of K
        "spike_penalty",
        lambda rng: (
            (rng.uniform(0.5, 4.0, 8), rng.uniform(0.2, 1.0, 8)),
            {"count": 150, "decay": 0.99, "limit": 3.0, "strength": 0.7},
        ),
    ),
    "coordinate_features": ("coordinate_features", _coordinate_inputs),
    "dense": (
        "dense",
        lambda rng: (
            (
                rng.standard_normal((3, 5)),
                rng.standard_normal(3),
                rng.standard_normal((5, 7)),
            ),
            {},
        ),
    ),
    "layer_norm": (
        "layer_norm",
        lambda rng: ((3.0 + rng.standard_normal((6, 7)),), {}),
    ),
    "hyperbolic_features": (
        "hyperbolic_features",
        lambda rng: (
            (
                0.7 * rng.standard_normal((3, 7)),
                nb.orthogonal_gaussian_matrix(rng, 4, 3),
            ),
            {},
        ),
    ),
    "hyperbolic_query_features": (
        "hyperbolic_query_features",
        lambda rng: (
            (
                2.0 * rng.standard_normal((3, 7)),
                nb.orthogonal_gaussian_matrix(rng, 4, 3),
            ),
            {},
        ),
    ),
    "cam_write": (
        "cam_write",
        lambda rng: (
            (
                *_cam_state(rng),
                rng.uniform(0.0, 1.0, (2, 4, 5)),
                rng.standard_normal((2, 3, 5)),
                np.asarray([0.9, 0.99]),
            ),
            {},
        ),
    ),
    "cam_read": (
        "cam_read",
        lambda rng: (
            (*_cam_state(rng), rng.uniform(0.0, 1.0, (2, 4, 5))),
            {"eps": 1e-12},
        ),
    ),
    "chunk": ("chunk", lambda rng: ((rng.standard_normal((3, 7)),), {"chunk_len": 3})),
    "chunk_attention": ("chunk_attention", _chunk_attention_inputs),
    "masked_mean_pool": (
        "masked_mean_pool",
        lambda rng: ((rng.standard_normal((2, 3, 4)),), {"mask": _chunk_mask(rng)}),
    ),
    "unpool": (
        "unpool",
        lambda rng: ((rng.standard_normal((2, 3)),), {"n": 10, "chunk_len_total": 4}),
    ),
    "learned_step": (
        "learned_step",
        lambda rng: (
            (rng.standard_normal(9), 3.0 * rng.standard_normal(9)),
            {"alpha": 0.01, "beta": 1.0, "magnitude_clip": 4.0},
        ),
    ),
}


def _as_arrays(out):
    """JAX kernels return feature-major values as (nested) lists of rows, where
    NumPy returns one array; tuples are several outputs."""
    if isinstance(out, list):
        return np.stack([_as_arrays(o) for o in out])
    if isinstance(out, tuple):
        return tuple(_as_arrays(o) for o in out)
    return np.asarray(out)


def _call(module, fname, arrays, statics, dtype=None):
    fn = getattr(module, fname)
    if fname == "step_embedding":
        # computed in the working dtype (the optimizer passes the gradient's)
        return fn(*arrays, statics["timescales"], dtype)
    if fname == "warmup_factor":
        return fn(*arrays, statics["start"], statics["steps"], dtype)
    if fname == "chunk_attention":
        x, *weights = arrays
        return fn(x, statics["mask"], *weights)
    if fname == "masked_mean_pool":
        return fn(arrays[0], statics["mask"])
    return fn(*arrays, **statics)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(KERNELS))
def test_kernel_conformance(case, dtype):
    fname, build = KERNELS[case]
    arrays, statics = build(_rng(case))
    with enable_x64(dtype == "float64"):
        # round the inputs to the test dtype first; the reference sees the same values
        rounded = tuple(
            a.astype(dtype) if np.issubdtype(a.dtype, np.floating) else a
            for a in arrays
        )
        expected = _call(nb, fname, tuple(np.asarray(a) for a in rounded), statics)
        fn = jax.jit(
            functools.partial(
                _call, jb, fname, statics=statics, dtype=getattr(jnp, dtype)
            )
        )
        actual = _as_arrays(fn(tuple(jnp.asarray(a) for a in rounded)))
        expected = _as_arrays(expected)
        assert len(jax.tree.leaves(actual)) == len(jax.tree.leaves(expected))
        for a, e in zip(
            jax.tree.leaves(actual), jax.tree.leaves(expected), strict=False
        ):
            assert np.shape(a) == np.shape(e)
            a = np.asarray(a)
            if a.dtype == bool:
                np.testing.assert_array_equal(a, e)
                continue
            if (
                np.issubdtype(e.dtype, np.floating)
                and np.size(e)
                and dtype == "float32"
            ):
                # JAX keeps the working dtype (float32 here)
                assert a.dtype == np.float32, a.dtype
            scale = float(np.max(np.abs(e))) if np.size(e) else 0.0
            rtol = RTOL[dtype]
            np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * scale)


def test_running_scale_and_agreement_identities():
    """What the step reads instead of a pass over the tensor: the running scale
    (S) $\\operatorname{rms}(\\sqrt{\\nu}) = \\sqrt{\\operatorname{mean}(\\nu)}$,
    and $\\sum_i \\hat g_i^2$ (A1) = the tensor's size (0 for a zero gradient),
    per leaf and per packed tensor, in both backends."""
    rng = _rng("identities")
    nu = rng.uniform(0.0, 3.0, (5, 4))
    assert np.sqrt(nb.tensor_mean(nu)) == pytest.approx(nb.tensor_rms(np.sqrt(nu)))
    lopt = mnemosyne.CoordinatewiseMnemosyne(key=jax.random.key(0))
    grads = [rng.standard_normal((5, 4)), np.zeros(3), rng.standard_normal(6)]
    grads = [g.astype(np.float32) for g in grads]
    for B in (nb, jb):
        for g in grads:
            stats = TensorStatistics.of_leaf(B.asarray(g), B.asarray(g), B)
            g_hat = B.normalise(B.asarray(g), stats.g_rms)
            assert float(stats.g_hat_square_sum) == pytest.approx(
                float(np.sum(np.square(g_hat))), rel=1e-6
            )
        memories = [lopt.init(g).memory for g in grads]
        pack = Pack.of([B.asarray(g) for g in grads], [B.asarray(g) for g in grads],
                       memories, B)
        stats = pack.statistics(B)
        g_hat = B.normalise(pack.grad, stats.g_rms)
        np.testing.assert_allclose(
            stats.g_hat_square_sum, stats.sum_of(g_hat * g_hat), rtol=1e-6
        )
        np.testing.assert_allclose(
            np.sqrt(stats.mean_of(B.asarray(np.abs(pack.grad)))),
            np.concatenate([np.full(g.size, np.sqrt(np.abs(g).mean())) for g in grads]),
            rtol=1e-6,
        )


def test_tensor_rms_extremes():
    """The overflow-safe RMS is exact at scales where squaring over/underflows."""
    base = np.asarray([3.0, -4.0, 0.0, 12.0])  # rms = sqrt(169/4) = 6.5
    for scale in (1e-30, 1e30, 1e-200, 1e200):
        assert nb.tensor_rms(scale * base) == pytest.approx(6.5 * scale, rel=1e-14)
    for scale in (1e-30, 1e30):  # float32: x**2 would underflow / overflow
        x = jnp.asarray(scale * base, jnp.float32)
        assert float(jax.jit(jb.tensor_rms)(x)) == pytest.approx(6.5 * scale, rel=1e-6)
    assert float(jax.jit(jb.tensor_rms)(jnp.zeros(4))) == 0.0
    assert nb.tensor_rms(np.zeros(4)) == 0.0
    assert nb.tensor_rms(np.zeros(0)) == 0.0


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_tensor_rms_nonfinite_reference(bad):
    """The reference RMS of a tensor with a NaN/Inf entry is not finite (the
    optimizer detects bad gradients from it)."""
    x = np.asarray([1.0, bad, 2.0])
    with np.errstate(invalid="ignore"):
        assert not np.isfinite(nb.tensor_rms(x))


@pytest.mark.parametrize(
    "bad",
    [
        np.inf,
        -np.inf,
        np.nan,
    ],
)
def test_tensor_rms_nonfinite_jax(bad):
    """`jax_backend.tensor_rms` documents: non-finite inputs give a non-finite RMS."""
    x = jnp.asarray([1.0, bad, 2.0], jnp.float32)
    assert not np.isfinite(float(jax.jit(jb.tensor_rms)(x)))


# ----------------------------------------------------------------------------
# Whole optimizer: init + several updates, NumPy backend vs jitted JAX backend
# ----------------------------------------------------------------------------

NUM_STEPS = 4


def _run(tx, params, num_steps, jit):
    state = tx.init(params)
    history = []
    for t in range(num_steps):
        grads = random_like(
            {k: v for k, v in params.items() if v is not None}, seed=100 + t
        )
        grads["none"] = None
        if jit:
            updates, state = jit_tx_update(tx, grads, state, params)
        else:
            updates, state = tx.update(grads, state, params)
        history.append(updates)
        params = jax.tree.map(lambda p, u: p + u.astype(p.dtype), params, updates)
    return history, state


def _conformance(name, dtype, num_steps):
    lopt = LOPTS[name]()
    if dtype == "float64":
        # θ in float64 too, so JAX computes e.g. the discounts exp(-exp(log_tau)) in
        # float64 like the reference (which casts θ to float64 itself)
        lopt = cast_floating(lopt, jnp.float64)
    params = ranked_params(getattr(jnp, dtype), seed=7)
    if dtype == "float64":
        # a leaf over PACK_MAX_SIZE entries: updated on its own, not packed with
        # the small ones, so the per-leaf path is held to 1e-10 too
        large = (PACK_MAX_SIZE // 64 + 1, 64)
        params["large"] = jnp.asarray(
            np.random.default_rng(8).standard_normal(large), jnp.float64
        )
    ref_updates, ref_state = _run(
        mnemosyne.scale_by_mnemosyne(lopt, backend="numpy"),
        params,
        num_steps,
        jit=False,
    )
    jax_updates, jax_state = _run(
        mnemosyne.scale_by_mnemosyne(lopt, backend="jax"), params, num_steps, jit=True
    )
    rtol = RTOL[dtype]
    for t, (u_ref, u_jax) in enumerate(zip(ref_updates, jax_updates, strict=False)):
        for leaf in jax.tree.leaves(u_jax):
            assert leaf.dtype == np.dtype(dtype)
        scale = max(
            float(np.max(np.abs(np.asarray(u)))) for u in jax.tree.leaves(u_ref)
        )
        assert_allclose_tree(
            u_jax, u_ref, rtol=rtol, atol=rtol * scale, err_msg=f"step {t}"
        )
    assert int(jax_state.step) == int(ref_state.step) == num_steps
    for m_jax, m_ref in zip(
        jax.tree.leaves(jax_state.memory),
        jax.tree.leaves(ref_state.memory),
        strict=False,
    ):
        assert m_jax.dtype == np.dtype(dtype)
        scale = float(np.max(np.abs(m_ref)))
        np.testing.assert_allclose(m_jax, m_ref, rtol=rtol, atol=rtol * scale)


# The tensor-wise float32 run repeats what its float64 run checks at a looser
# tolerance and compiles the encoder once more (9 s under the default suite's
# two workers): slow, run by .ci/run.
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if n == "tensorwise" else n
        for n in sorted(LOPTS)
    ],
)
def test_optimizer_conformance_float32(name):
    _conformance(name, "float32", NUM_STEPS)


# The full float64 test below checks the first step too; this one, which
# isolates it for diagnosis, runs in the slow list of .ci/run.
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LOPTS))
def test_optimizer_conformance_float64_first_step(name, x64):
    _conformance(name, "float64", 1)


# The tensor-wise variant compiles its encoder under x64 (9-13 s under the
# default suite's two workers): slow, run by .ci/run.
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if n == "tensorwise" else n
        for n in sorted(LOPTS)
    ],
)
def test_optimizer_conformance_float64(name, x64):
    _conformance(name, "float64", NUM_STEPS)


def test_get_backend():
    assert get_backend("numpy") is nb and get_backend("jax") is jb
    with pytest.raises(ValueError, match="unknown backend"):
        get_backend("torch")


def test_jax_bfloat16_conversion_matches_astype():
    """The JAX backend converts float32 <-> bfloat16 with integer operations
    (vectorisable on CPU); it must round exactly as `astype` does (nearest
    even), keep NaN and infinities, and widen exactly."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(20000).astype(np.float32) * np.float32(1e3)
    special = [
        np.nan,
        np.inf,
        -np.inf,
        0.0,
        -0.0,
        3.3895314e38,
        1e-40,
        1.00390625,
        1.01171875,
    ]
    x = jnp.asarray(np.concatenate([x, np.asarray(special, np.float32)]))
    ours, ref = jb.asarray(x, jnp.bfloat16), x.astype(jnp.bfloat16)
    assert ours.dtype == jnp.bfloat16
    same = (ours == ref) | (jnp.isnan(ours) & jnp.isnan(ref))
    assert bool(jnp.all(same))
    wide = jb.asarray(ref, jnp.float32)
    assert wide.dtype == jnp.float32
    assert bool(jnp.all((wide == ref.astype(jnp.float32)) | jnp.isnan(ref)))
