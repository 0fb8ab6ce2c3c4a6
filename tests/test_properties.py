"""Property-based tests (hypothesis): random pytrees, shapes, dtypes and gradient
scales through `init`/`update` on both backends.

Cost control: the NumPy reference backend compiles nothing, so the properties
over arbitrary pytrees run there. The NumPy-vs-JAX agreement uses the one
pytree template of `helpers.ranked_params` (random values and per-leaf scales),
stepped through `helpers.jit_tx_update`, whose compiled programs are shared with
test_backends.py and test_lopt.py in a full run; the pretrained default θ has
the same configuration as `helpers.coordinatewise()`, so it reuses that program.

All tests use the `mnemosyne` settings profile below: a fixed number of
examples, no deadline (compiles and a loaded CI machine make timings
meaningless), derandomised so CI runs the same examples every time. Set
`MNEMOSYNE_HYPOTHESIS_EXAMPLES=<n>` to run more (e.g. locally, randomised).
"""

from __future__ import annotations

import functools
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    assert_allclose_tree,
    assert_tree_equal,
    cast_floating,
    coordinatewise,
    enable_x64,
    jit_tx_update,
    ranked_params,
    tensorwise,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mnemosyne

_EXAMPLES = int(os.environ.get("MNEMOSYNE_HYPOTHESIS_EXAMPLES", "0"))
settings.register_profile(
    "mnemosyne",
    max_examples=_EXAMPLES or 25,
    deadline=None,
    derandomize=not _EXAMPLES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
PROFILE = settings.get_profile("mnemosyne")
# examples per test in CI (the profile's max_examples unless a test overrides it)
EXAMPLES = {
    "test_reference_on_random_pytrees": PROFILE.max_examples,
    "test_gradient_scale_invariance": PROFILE.max_examples,
    "test_nonfinite_anywhere_skips_the_step": PROFILE.max_examples,
    "test_numpy_and_jax_agree": PROFILE.max_examples,
}

# Tolerances of test_backends.py: float32 JAX vs the float64 reference at
# rtol 1e-5 with an absolute floor rtol * max|reference|; float64 at 1e-10.
RTOL = {"float32": 1e-5, "float64": 1e-10}
MAX_STEP = 1.0  # |update| per coordinate, learning rate 1


@functools.cache
def _lopts():
    return {
        "pretrained": mnemosyne.pretrained("default"),
        "coordinatewise": coordinatewise(),
        "tensorwise": tensorwise(),
    }


# ----------------------------------------------------------------------------
# Strategies
# ----------------------------------------------------------------------------

# (70, 70) = 4900 entries > PACK_MAX_SIZE: a leaf updated on its own, not packed
SHAPES = [(), (3,), (2, 3), (0, 2), (70, 70)]
# exponent ranges of the gradient scale 10^k that stay finite and normal per dtype
DTYPES = {"float32": (-30, 30), "bfloat16": (-30, 30), "float16": (-2, 2)}


@st.composite
def leaves(draw, dtypes=tuple(DTYPES)):
    dtype = draw(st.sampled_from(dtypes))
    lo, hi = DTYPES[dtype]
    return {
        "shape": draw(st.sampled_from(SHAPES)),
        "dtype": dtype,
        "exponent": draw(st.integers(lo, hi)),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def trees(leaf=None):
    """Nested dicts / lists / tuples of leaf specs and `None`s (not `None` itself:
    `update(grads, state, None)` means "no params")."""
    if leaf is None:
        leaf = leaves()
    return st.recursive(
        st.one_of(leaf, st.none()),
        lambda children: st.one_of(
            st.lists(children, max_size=3),
            st.tuples(children, children),
            st.dictionaries(
                st.sampled_from(["a", "b", "c", "w"]), children, max_size=3
            ),
        ),
        max_leaves=6,
    ).filter(lambda tree: tree is not None)


def _is_spec(x):
    return isinstance(x, dict) and "shape" in x


def _materialise(spec_tree):
    """`(params, grads)` from a tree of leaf specs: standard normal parameters,
    gradients N(0, 1) * 10^exponent, in the leaf's dtype."""

    def make(spec, which):
        if spec is None:
            return None
        rng = np.random.default_rng([spec["seed"], which])
        values = rng.standard_normal(spec["shape"])
        if which == 1:
            values = values * 10.0 ** spec["exponent"]
        return jnp.asarray(values, getattr(jnp, spec["dtype"]))

    is_leaf = lambda x: x is None or _is_spec(x)
    params = jax.tree.map(lambda s: make(s, 0), spec_tree, is_leaf=is_leaf)
    grads = jax.tree.map(lambda s: make(s, 1), spec_tree, is_leaf=is_leaf)
    return params, grads


def _structure(tree):
    return jax.tree.structure(tree, is_leaf=lambda x: x is None)


def _np(tree):
    return jax.tree.map(np.asarray, tree)


# ----------------------------------------------------------------------------
# NumPy reference backend, arbitrary pytrees
# ----------------------------------------------------------------------------


@settings(PROFILE)
@given(
    spec=trees(), name=st.sampled_from(["pretrained", "coordinatewise", "tensorwise"])
)
def test_reference_on_random_pytrees(spec, name):
    """Any pytree of float32 / bfloat16 / float16 leaves (scalars, zero-size,
    large, `None`) at any gradient scale: updates with the params' structure,
    shapes and dtypes, finite and bounded; a finite state of the same
    structure, shapes and dtypes as `init`'s."""
    params, grads = _materialise(spec)
    tx = mnemosyne.scale_by_mnemosyne(_lopts()[name], backend="numpy")
    state = tx.init(params)
    with np.errstate(
        invalid="ignore"
    ):  # 0/0 on zero-size leaves (tensor-wise reference)
        updates, new_state = tx.update(grads, state, params)
    assert _structure(updates) == _structure(params)
    for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params), strict=False):
        u = np.asarray(u)
        assert u.shape == p.shape and u.dtype == p.dtype
        assert np.all(np.isfinite(u.astype(np.float32)))
        assert np.all(np.abs(u.astype(np.float32)) <= MAX_STEP)
    assert int(new_state.step) == 1 and int(new_state.skipped) == 0
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(state), strict=False):
        assert np.shape(a) == np.shape(b) and np.asarray(a).dtype == np.asarray(b).dtype
        assert np.all(np.isfinite(np.asarray(a, np.float64)))


@settings(PROFILE)
@given(
    spec=trees(leaves(dtypes=("float32",))),
    name=st.sampled_from(["tensorwise"]),
    power=st.integers(-8, 8),
)
def test_gradient_scale_invariance(spec, name, power):
    """Multiplying every gradient by 2^power (exact in floating point) changes
    nothing for an optimizer that sees gradients only through g / RMS(g) (v1
    features: the tensor-wise variant). Gradient scales 10^-8 .. 10^30. v2 (the
    coordinate-wise default) also reads g / (sqrt(nu) + 1e-8), Adam's
    normalisation, which is scale-free only while |g| >> 1e-8 and whose state
    scales with g^2: test_reliability.py::test_gradient_scale_invariance_reference."""
    spec = jax.tree.map(
        lambda s: {**s, "exponent": max(s["exponent"], -8)}, spec, is_leaf=_is_spec
    )
    params, grads = _materialise(spec)
    scaled = jax.tree.map(lambda g: g * np.float32(2.0**power), grads)
    tx = mnemosyne.scale_by_mnemosyne(_lopts()[name], backend="numpy")
    state = tx.init(params)
    with np.errstate(invalid="ignore"):
        expected = tx.update(grads, state, params)
        actual = tx.update(scaled, state, params)
    assert_tree_equal(_np(actual[0]), _np(expected[0]))
    assert_tree_equal(_np(actual[1].memory), _np(expected[1].memory))


@settings(PROFILE)
@given(
    spec=trees(leaves(dtypes=("float32", "bfloat16"))),
    name=st.sampled_from(["pretrained", "tensorwise"]),
    bad=st.sampled_from([np.nan, np.inf, -np.inf]),
    where=st.integers(0, 2**31 - 1),
)
def test_nonfinite_anywhere_skips_the_step(spec, name, bad, where):
    """A NaN or ±Inf in any coordinate of any leaf (after one good step): zero
    updates everywhere, memory and step unchanged, `skipped` counts it."""
    params, grads = _materialise(spec)
    nonempty = [i for i, g in enumerate(jax.tree.leaves(grads)) if g.size]
    if not nonempty:
        return
    tx = mnemosyne.scale_by_mnemosyne(_lopts()[name], backend="numpy")
    with np.errstate(invalid="ignore", over="ignore"):
        _, state = tx.update(grads, tx.init(params), params)
        leaves_, treedef = jax.tree.flatten(grads)
        i = nonempty[where % len(nonempty)]
        flat = np.asarray(leaves_[i]).reshape(-1).copy()
        flat[where % flat.size] = bad
        leaves_[i] = jnp.asarray(flat.reshape(leaves_[i].shape), leaves_[i].dtype)
        updates, new_state = tx.update(
            jax.tree.unflatten(treedef, leaves_), state, params
        )
    assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(updates))
    assert int(new_state.step) == int(state.step) == 1
    assert int(new_state.skipped) == 1
    assert_tree_equal(_np(new_state.memory), _np(state.memory))


# ----------------------------------------------------------------------------
# NumPy and JAX agree
# ----------------------------------------------------------------------------


def _random_template(dtype, seed, exponents, bad=None):
    """`ranked_params` values and gradients N(0,1) * 10^k per leaf (same pytree
    and dtype as test_backends.py, hence the same compiled step)."""
    params = ranked_params(getattr(jnp, dtype), seed=seed)
    rng = np.random.default_rng(seed + 1)
    grads = {}
    for (k, p), e in zip(
        sorted((k, v) for k, v in params.items() if v is not None),
        exponents,
        strict=False,
    ):
        grads[k] = jnp.asarray(rng.standard_normal(p.shape) * 10.0**e, p.dtype)
    if bad is not None:
        grads["matrix"] = grads["matrix"].at[1, 2].set(bad)
    grads["none"] = None
    return params, grads


@settings(PROFILE)
@given(
    name=st.sampled_from(["pretrained", "coordinatewise", "tensorwise"]),
    dtype=st.sampled_from(["float32", "float64"]),
    seed=st.integers(0, 2**20),
    exponents=st.lists(st.integers(-30, 30), min_size=4, max_size=4),
    bad=st.sampled_from([None, None, None, np.nan, np.inf]),
)
def test_numpy_and_jax_agree(name, dtype, seed, exponents, bad):
    """Two steps (random values, one gradient scale per leaf, sometimes a
    non-finite gradient in the second step) through the NumPy reference and the
    jitted JAX backend: same updates and memory, same skip decision. float64
    runs JAX under `jax_enable_x64` with θ in float64 (as test_backends.py)."""
    with enable_x64(dtype == "float64"):
        lopt = _lopts()[name]
        if dtype == "float64":
            lopt = cast_floating(lopt, jnp.float64)
        params, grads1 = _random_template(dtype, seed, exponents)
        _, grads2 = _random_template(dtype, seed + 7, exponents[::-1], bad)
        results = {}
        for backend in ("numpy", "jax"):
            tx = mnemosyne.scale_by_mnemosyne(lopt, backend=backend)
            state, p, history = tx.init(params), params, []
            for grads in (grads1, grads2):
                if backend == "jax":
                    updates, state = jit_tx_update(tx, grads, state, p)
                else:
                    with np.errstate(invalid="ignore", over="ignore"):
                        updates, state = tx.update(grads, state, p)
                history.append(_np(updates))
                p = jax.tree.map(lambda x, u: x + jnp.asarray(u, x.dtype), p, updates)
            results[backend] = (history, state)
        (ref_updates, ref_state), (jax_updates, jax_state) = (
            results["numpy"],
            results["jax"],
        )
        rtol = RTOL[dtype]
        for t, (u_ref, u_jax) in enumerate(zip(ref_updates, jax_updates, strict=False)):
            scale = max(float(np.max(np.abs(u))) for u in jax.tree.leaves(u_ref))
            assert_allclose_tree(
                u_jax, u_ref, rtol=rtol, atol=rtol * scale, err_msg=f"step {t}"
            )
        assert int(jax_state.skipped) == int(ref_state.skipped) == (bad is not None)
        assert int(jax_state.step) == int(ref_state.step)
        for m_jax, m_ref in zip(
            jax.tree.leaves(jax_state.memory),
            jax.tree.leaves(ref_state.memory),
            strict=False,
        ):
            m_ref = np.asarray(m_ref)
            scale = float(np.max(np.abs(m_ref)))
            # XLA:CPU flushes subnormals (the second moment of a 1e-17 gradient
            # is ~1e-39) to zero; the reference keeps them
            tiny = float(np.finfo(m_ref.dtype).tiny) if m_ref.dtype.kind == "f" else 0.0
            np.testing.assert_allclose(
                np.asarray(m_jax), m_ref, rtol=rtol, atol=max(rtol * scale, tiny)
            )


def test_examples_per_run():
    """Every property test of this module is counted in `EXAMPLES`, and
    docs/reliability.md quotes the profile CI runs (examples per test, total)."""
    given_tests = {
        name
        for name, fn in globals().items()
        if name.startswith("test_") and hasattr(fn, "hypothesis")
    }
    assert given_tests == set(EXAMPLES)
    if not _EXAMPLES:
        page = (
            pathlib.Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
        )
        text = " ".join(page.read_text().split())
        assert f"{PROFILE.max_examples} examples per test" in text
        assert f"run **{sum(EXAMPLES.values())} examples**" in text
        assert PROFILE.deadline is None and PROFILE.derandomize


pytestmark = pytest.mark.filterwarnings(
    "ignore:invalid value encountered:RuntimeWarning"
)
