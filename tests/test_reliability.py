"""Reliability: bad gradients, odd pytrees, bad files, interrupted meta-training,
long runs. What the library promises is in docs/reliability.md; each promise
names the test here (or in test_lopt.py / test_serialisation.py / test_meta.py /
test_cli.py / test_properties.py) that checks it.

Compiles dominate the cost, so: the gradient-injection runs share one jitted
`lax.scan` (the injected values are data, not code); pytree checks trace with
`jax.eval_shape` (nothing compiled) and take values from the NumPy reference
backend; the meta-training runs share one compiled outer step.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import FAST_COMPILE, LOPTS, coordinatewise, fast_jit, tensorwise

import mnemosyne
from mnemosyne import _checks, _serialisation, meta
from mnemosyne._training import run_steps
from mnemosyne.baselines import LearnableSGD
from mnemosyne.meta import _checkpoint, _trainer

NAMES = sorted(LOPTS)


def _all_finite(tree) -> jax.Array:
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


# ----------------------------------------------------------------------------
# 1. Gradients: extreme values injected mid-run
# ----------------------------------------------------------------------------

_RNG = np.random.default_rng(0)
SHAPES = {"w": (8, 8), "b": (8,)}
CURVATURE = {
    k: jnp.asarray(np.geomspace(0.1, 10.0, int(np.prod(s))).reshape(s), jnp.float32)
    for k, s in SHAPES.items()
}
TARGET = {
    k: jnp.asarray(_RNG.standard_normal(s), jnp.float32) for k, s in SHAPES.items()
}
PARAMS0 = {k: jnp.zeros(s, jnp.float32) for k in SHAPES for s in [SHAPES[k]]}
# extreme gradients on steps 240..244, after the 200-step warm-up of the step
# (W), so that the recovery is compared with the clean run at the full step
NUM_STEPS, INJECT = 320, (240, 245)
MAX_STEP = 1.0  # bound on |update| per coordinate (learning rate 1)


def _quadratic(params):
    return sum(
        0.5 * jnp.sum(CURVATURE[k] * (params[k] - TARGET[k]) ** 2) for k in SHAPES
    )


@functools.cache
def _tx():
    """The optimizer users get: `mnemosyne.mnemosyne()` (pretrained default)."""
    return mnemosyne.mnemosyne()


@fast_jit
def _injected_run(tx, scale, offset, start, stop):
    """Train the quadratic for NUM_STEPS steps; on steps start..stop-1 the
    gradient is replaced by `scale * gradient + offset`."""

    def body(carry, t):
        params, state = carry
        loss, grads = jax.value_and_grad(_quadratic)(params)
        inject = (t >= start) & (t < stop)
        grads = jax.tree.map(
            lambda g, o: jnp.where(inject, scale * g + o, g), grads, offset
        )
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        biggest = jnp.max(
            jnp.stack([jnp.max(jnp.abs(u)) for u in jax.tree.leaves(updates)])
        )
        return (params, state), (loss, biggest, _all_finite((params, state)))

    carry = (PARAMS0, tx.init(PARAMS0))
    (params, state), (losses, biggest, finite) = jax.lax.scan(
        body, carry, jnp.arange(NUM_STEPS)
    )
    return params, state, losses, biggest, finite


def _one_coordinate(value):
    offset = {k: jnp.zeros(s, jnp.float32) for k, s in SHAPES.items()}
    offset["w"] = offset["w"].at[3, 5].set(value)
    return offset


def _constant(value):
    return {k: jnp.full(s, value, jnp.float32) for k, s in SHAPES.items()}


# name -> (scale, offset, skipped?)
INJECTIONS = {
    "zeros": (0.0, _constant(0.0), False),
    "tiny_1e-30": (1e-30, _constant(0.0), False),
    "huge_1e30": (1e30, _constant(0.0), False),
    "constant_1": (0.0, _constant(1.0), False),
    "constant_1e30": (0.0, _constant(1e30), False),
    "constant_-1e-30": (0.0, _constant(-1e-30), False),
    "outlier_1e30": (1.0, _one_coordinate(1e30), False),
    "outlier_-1e30_tiny_rest": (1e-20, _one_coordinate(-1e30), False),
    "nan": (1.0, _one_coordinate(np.nan), True),
    "inf": (1.0, _one_coordinate(np.inf), True),
    "constant_float32_max": (0.0, _constant(float(np.finfo(np.float32).max)), False),
}


@pytest.fixture(scope="module")
def clean_run():
    return _injected_run(
        _tx(), jnp.float32(1.0), _constant(0.0), jnp.int32(0), jnp.int32(0)
    )


@pytest.fixture(scope="module")
def adam_clean_run():
    return _injected_run(
        optax.adam(1e-3), jnp.float32(1.0), _constant(0.0), jnp.int32(0), jnp.int32(0)
    )


_SATURATING = pytest.mark.xfail(
    strict=True,
    reason="v2 keeps Adam's second moment: after every coordinate's gradient is "
    "~1e30 for 5 steps it saturates near the float32 ceiling and decays by 0.999 "
    "a step, so the run recovers more slowly than asked (loss 28.3 at the "
    "injection, 32.8 75 steps later) "
    "(Adam behaves the same; docs/reliability.md)",
)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, marks=_SATURATING)
        if c in ("constant_1e30", "constant_float32_max")
        else c
        for c in INJECTIONS
    ],
)
def test_extreme_gradients_mid_run(case, clean_run, adam_clean_run):
    """Params and state stay finite at every step, every step is bounded, the
    non-finite cases are skipped (zero update, counted), and training goes on
    converging afterwards: the final loss is below the loss at the injection."""
    scale, offset, skips = INJECTIONS[case]
    start, stop = INJECT
    params, state, losses, biggest, finite = _injected_run(
        _tx(), jnp.float32(scale), offset, jnp.int32(start), jnp.int32(stop)
    )
    losses, biggest, finite = (
        np.asarray(losses),
        np.asarray(biggest),
        np.asarray(finite),
    )
    assert finite.all(), np.flatnonzero(~finite)
    assert np.all(np.isfinite(losses))
    assert np.all(biggest <= MAX_STEP), biggest.max()
    mnemosyne_state = state[0]
    if skips:
        assert np.all(biggest[start:stop] == 0)
        assert int(mnemosyne_state.skipped) == stop - start
        assert np.all(losses[start:stop + 1] == losses[start])  # params untouched
    else:
        assert int(mnemosyne_state.skipped) == 0
    assert int(mnemosyne_state.step) == NUM_STEPS - int(mnemosyne_state.skipped)
    # recovery: below the loss at the injection, and below the loss right after it
    assert losses[-1] < losses[start] and losses[-1] < losses[stop]
    clean_losses = np.asarray(clean_run[2])
    # after the injection it makes at least half the progress the clean run
    # makes over the same steps (the pace is θ's; the recovery is the point)
    clean_progress = clean_losses[start] - clean_losses[-1]
    progress = losses[start] - losses[-1]
    assert progress > 0.5 * clean_progress, (losses[start], losses[-1])
    # the clean run converges at least as fast as Adam(1e-3) on the same problem
    assert clean_losses[-1] <= np.asarray(adam_clean_run[2])[-1] < clean_losses[0]


def test_gradient_scale_invariance_reference():
    """v2 normalises the gradient per coordinate by its running RMS (Adam's
    second moment, epsilon 1e-8) and per tensor by its RMS: scaling every
    gradient by 10^k leaves the step unchanged while |g| >> epsilon and g^2
    stays finite (float32: |g| < ~1e19), here k = -2 .. 9, to 1e-3 relative:
    epsilon's share at |g| ~ 1e-2 (NumPy reference)."""
    tx = mnemosyne.scale_by_mnemosyne(mnemosyne.pretrained(), backend="numpy")
    params = TARGET
    grads = {
        k: jnp.asarray(_RNG.standard_normal(s), jnp.float32) for k, s in SHAPES.items()
    }
    state = tx.init(params)
    reference, _ = tx.update(grads, state, params)
    for k in (-2, 3, 6, 9):
        scaled = jax.tree.map(lambda g, k=k: g * np.float32(10.0**k), grads)
        updates, _ = tx.update(scaled, state, params)
        for a, b in zip(
            jax.tree.leaves(updates), jax.tree.leaves(reference), strict=False
        ):
            np.testing.assert_allclose(
                np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-7, err_msg=str(k)
            )


def test_gradient_scale_invariance_tiny():
    tx = mnemosyne.scale_by_mnemosyne(mnemosyne.pretrained(), backend="numpy")
    params = TARGET
    grads = {
        k: jnp.asarray(_RNG.standard_normal(s), jnp.float32) for k, s in SHAPES.items()
    }
    state = tx.init(params)
    reference, _ = tx.update(grads, state, params)
    tiny = jax.tree.map(lambda g: g * np.float32(1e-30), grads)
    updates, _ = tx.update(tiny, state, params)
    # v2: far below epsilon = 1e-8 the Adam-normalised channel reads ~0 (as in
    # Adam) and only the tensor-normalised channels see the gradient, so the
    # step is finite and smaller than for the same gradients at unit scale
    # (v1, with tensor-RMS normalisation only, gave exactly the same step)
    biggest = lambda tree: max(
        float(np.max(np.abs(np.asarray(x)))) for x in jax.tree.leaves(tree)
    )
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(updates))
    assert 0 < biggest(updates) < biggest(reference)


def test_huge_finite_gradients_jax_matches_reference():
    """Gradients of float32 RMS above ~8.5e37 (a strict xfail until v2's running
    scale, Eq. (S): g * (1 / rms(g)) had a subnormal reciprocal that CPUs flush
    to zero). The running scale comes from the saturated second moment, whose
    reciprocal is a normal float."""
    lopt = coordinatewise()
    params = {"w": jnp.asarray(_RNG.standard_normal((3, 4)), jnp.float32)}
    grads = {"w": jnp.full((3, 4), 2e38, jnp.float32)}
    expected, _ = mnemosyne.scale_by_mnemosyne(lopt, backend="numpy").update(
        grads, lopt.init(params), params
    )
    tx = mnemosyne.scale_by_mnemosyne(lopt)
    updates, _ = fast_jit(lambda tx, g, s, p: tx.update(g, s, p))(
        tx, grads, tx.init(params), params
    )
    np.testing.assert_allclose(
        np.asarray(updates["w"]), np.asarray(expected["w"]), rtol=1e-5
    )


# ----------------------------------------------------------------------------
# 2. Pytrees
# ----------------------------------------------------------------------------


def _abstract_update(tx, grads, state, params):
    """Trace `tx.update` without compiling (errors surface at trace time)."""
    return jax.eval_shape(tx.update, grads, state, params)


@pytest.mark.parametrize("name", NAMES)
def test_errors_at_trace_time_name_the_path(name):
    tx = mnemosyne.mnemosyne(lopt=LOPTS[name]())
    params = {"dense": {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}, "scale": jnp.ones(())}
    grads = jax.tree.map(jnp.ones_like, params)
    state = tx.init(params)
    _abstract_update(tx, grads, state, params)  # fine

    other = {
        "dense": {"w": jnp.ones((3, 2)), "bias": jnp.ones(2)},
        "scale": jnp.ones(()),
    }
    with pytest.raises(ValueError, match=r"\['dense'\]\['bias'\]"):
        _abstract_update(tx, grads, state, other)
    wrong_shape = {**params, "dense": {"w": jnp.ones((2, 3)), "b": jnp.ones(2)}}
    with pytest.raises(ValueError, match=r"shape mismatch at \['dense'\]\['w'\]"):
        _abstract_update(tx, grads, state, wrong_shape)
    with pytest.raises(ValueError, match="state does not match"):
        _abstract_update(tx, {"x": jnp.ones(2)}, state, {"x": jnp.ones(2)})
    for dtype in (jnp.int32, jnp.bool_):
        bad = {**params, "scale": jnp.ones((), dtype)}
        with pytest.raises(TypeError, match=r"params\['scale'\] has dtype"):
            _abstract_update(tx, grads, state, bad)
        with pytest.raises(TypeError, match=r"grads\['scale'\] has dtype"):
            _abstract_update(tx, bad, state, params)
    # inside jit the same errors come from tracing, before any compile
    with pytest.raises(TypeError, match=r"grads\['scale'\]"):
        jax.jit(tx.update).trace(
            {**grads, "scale": jnp.ones((), jnp.int32)}, state, params
        )


@pytest.mark.parametrize("name", NAMES)
def test_state_for_other_shapes_names_the_path(name):
    lopt = LOPTS[name]()
    state = lopt.init({"w": jnp.ones(16)})
    params = {"w": jnp.ones(17)}  # 17 > chunk_len**levels: two meta-tokens
    with pytest.raises(ValueError, match=r"state\.memory\['w'\]\.numerator has shape"):
        jax.eval_shape(lopt.update, params, state, params)


def test_check_state_like():
    """The helper the fix above wires in (see its xfail reason)."""
    lopt = coordinatewise()
    params = {"a": jnp.ones(3), "b": None}
    state = lopt.init(params)
    _checks.check_update_inputs(
        params, state, params, expected_state=jax.eval_shape(lopt.init, params)
    )
    with pytest.raises(
        ValueError, match=r"state\.memory\['a'\]\.numerator has shape \(1, 2, 1, 3\)"
    ):
        _checks.check_state_like(
            state, jax.eval_shape(lopt.init, {"a": jnp.ones(4), "b": None})
        )
    with pytest.raises(ValueError, match="missing"):
        _checks.check_state_like(
            state, jax.eval_shape(lopt.init, {"a": jnp.ones(3), "b": jnp.ones(1)})
        )


@pytest.mark.parametrize("name", NAMES)
def test_optax_masked_and_none_leaves(name):
    """Integer leaves and frozen leaves masked out with `optax.masked` (the
    documented way), `None` leaves: the masked-in leaves get exactly the step
    of the optimizer on those leaves alone; masked-out updates pass through."""
    lopt = LOPTS[name]()
    params = {
        "w": jnp.asarray(_RNG.standard_normal((3, 4)), jnp.float32),
        "frozen": jnp.ones(5, jnp.float32),
        "count": jnp.asarray(7, jnp.int32),
        "nothing": None,
    }
    mask = {"w": True, "frozen": False, "count": False, "nothing": True}
    grads = {
        "w": jnp.asarray(_RNG.standard_normal((3, 4)), jnp.float32),
        "frozen": jnp.full(5, 0.5),
        "count": jnp.asarray(0, jnp.int32),
        "nothing": None,
    }
    for backend in ("numpy", "jax"):
        tx = optax.masked(mnemosyne.scale_by_mnemosyne(lopt, backend=backend), mask)
        state = tx.init(params)
        if backend == "jax":
            updates, _ = _abstract_update(tx, grads, state, params)
            assert updates["w"].shape == (3, 4) and updates["count"].dtype == jnp.int32
            continue
        updates, state = tx.update(grads, state, params)
        alone = mnemosyne.scale_by_mnemosyne(lopt, backend="numpy")
        expected, _ = alone.update(
            {"w": grads["w"]}, alone.init({"w": params["w"]}), {"w": params["w"]}
        )
        np.testing.assert_array_equal(
            np.asarray(updates["w"]), np.asarray(expected["w"])
        )
        assert (
            updates["frozen"] is grads["frozen"] and updates["count"] is grads["count"]
        )
        assert updates["nothing"] is None


@pytest.mark.parametrize("name", NAMES)
def test_empty_pytrees_and_zero_size_leaves(name):
    lopt = LOPTS[name]()
    for params in ({}, [], (), {"a": None}):
        for backend in ("numpy", "jax"):
            tx = mnemosyne.scale_by_mnemosyne(lopt, backend=backend)
            updates, state = tx.update(params, tx.init(params), params)
            assert jax.tree.structure(
                updates, is_leaf=lambda x: x is None
            ) == jax.tree.structure(params, is_leaf=lambda x: x is None)
            assert int(state.step) == 1 and int(state.skipped) == 0
    params = {
        "empty": jnp.zeros((0, 3), jnp.float32),
        "w": jnp.asarray([1.0, -2.0, 3.0]),
    }
    grads = {
        "empty": jnp.zeros((0, 3), jnp.float32),
        "w": jnp.asarray([0.5, 0.1, -1.0]),
    }
    tx = mnemosyne.scale_by_mnemosyne(lopt, backend="numpy")
    with np.errstate(invalid="ignore"):  # see test_zero_size_leaf_no_warning
        updates, state = tx.update(grads, tx.init(params), params)
    assert np.asarray(updates["empty"]).shape == (0, 3)
    alone = tx.update(
        {"w": grads["w"]}, tx.init({"w": params["w"]}), {"w": params["w"]}
    )[0]
    np.testing.assert_array_equal(np.asarray(updates["w"]), np.asarray(alone["w"]))
    jtx = mnemosyne.scale_by_mnemosyne(lopt)
    shapes = _abstract_update(jtx, grads, jtx.init(params), params)[0]
    assert shapes["empty"].shape == (0, 3)


@pytest.mark.xfail(
    strict=True,
    reason="backends/_numpy.py: the tensor-wise reference divides 0/0 for a zero-size "
    "leaf (RuntimeWarning 'invalid value encountered in divide' in the memory read); "
    "the result is right (empty) but the warning is noise (an error under -W error)",
)
def test_zero_size_leaf_no_warning():
    lopt = tensorwise()
    params = {"empty": np.zeros((0, 3), np.float32)}
    tx = mnemosyne.scale_by_mnemosyne(lopt, backend="numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tx.update(params, tx.init(params), params)


def _tiled_leaf_check(n, pattern_size=1000):
    """A leaf of `n` entries tiling a `pattern_size` pattern has the pattern's
    RMS, so its update is the pattern's update (NumPy reference), tiled."""
    lopt = coordinatewise()
    rng = np.random.default_rng(n)
    g_small = rng.standard_normal(pattern_size).astype(np.float32)
    x_small = rng.standard_normal(pattern_size).astype(np.float32)
    ref_tx = mnemosyne.scale_by_mnemosyne(lopt, backend="numpy")
    small = {"w": x_small}
    expected, _ = ref_tx.update({"w": g_small}, ref_tx.init(small), small)
    reps = n // pattern_size
    params = {"w": jnp.tile(jnp.asarray(x_small), reps)}
    grads = {"w": jnp.tile(jnp.asarray(g_small), reps)}
    tx = mnemosyne.scale_by_mnemosyne(lopt)
    state = tx.init(params)
    updates, state = fast_jit(lambda tx, g, s, p: tx.update(g, s, p))(
        tx, grads, state, params
    )
    u = np.asarray(updates["w"]).reshape(reps, pattern_size)
    assert np.all(np.isfinite(u)) and bool(_all_finite(state.memory))
    scale = float(np.max(np.abs(expected["w"])))
    for row in (0, reps // 2, reps - 1):
        np.testing.assert_allclose(
            u[row], np.asarray(expected["w"]), rtol=1e-4, atol=1e-5 * scale
        )
    assert state.memory["w"].numerator.shape[-1] == n


def test_large_leaf_1e6():
    _tiled_leaf_check(10**6)


@pytest.mark.slow
def test_large_leaf_1e7():
    _tiled_leaf_check(10**7)


def _many_scalars_check(n):
    """n scalar leaves (packed into one vector inside the optimizer) give each
    leaf the step it would get alone (NumPy reference backend)."""
    lopt = coordinatewise()
    rng = np.random.default_rng(n)
    params = [np.asarray(x, np.float32) for x in rng.standard_normal(n)]
    grads = [np.asarray(x, np.float32) for x in rng.standard_normal(n)]
    tx = mnemosyne.scale_by_mnemosyne(lopt, backend="numpy")
    updates, state = tx.update(grads, tx.init(params), params)
    assert len(updates) == n and all(np.shape(u) == () for u in updates)
    assert all(np.isfinite(u) for u in updates)
    for i in rng.choice(n, 5, replace=False):
        alone, _ = tx.update([grads[i]], tx.init([params[i]]), [params[i]])
        assert np.asarray(updates[i]) == np.asarray(alone[0]), i


def test_many_scalar_leaves_300():
    _many_scalars_check(300)


@pytest.mark.slow
def test_many_scalar_leaves_1e4():
    _many_scalars_check(10**4)


@pytest.mark.slow  # compiles a 300-leaf step: 10-19 s, run by .ci/run
def test_many_scalar_leaves_under_jit():
    """300 scalar leaves under jit (packed, then split up in two levels) match
    the NumPy reference leaf by leaf; a NaN in one leaf skips every leaf."""
    lopt = coordinatewise()
    rng = np.random.default_rng(3)
    n = 300
    params = [np.float32(x) for x in rng.standard_normal(n)]
    grads = [np.float32(x) for x in rng.standard_normal(n)]
    jitted = mnemosyne.scale_by_mnemosyne(lopt)
    reference = mnemosyne.scale_by_mnemosyne(lopt, backend="numpy")
    update = jax.jit(jitted.update)
    state = jitted.init(params)
    got, new_state = update(grads, state, params)
    want, want_state = reference.update(grads, reference.init(params), params)
    np.testing.assert_allclose(
        np.asarray(got), np.asarray(want, np.float32), rtol=1e-4, atol=1e-7
    )
    for m, w in zip(new_state.memory, want_state.memory, strict=False):
        np.testing.assert_allclose(m.numerator, w.numerator, rtol=1e-4, atol=1e-7)
    grads[n // 2] = np.float32(np.nan)
    skipped, skipped_state = update(grads, new_state, params)
    assert all(float(u) == 0.0 for u in skipped) and int(skipped_state.skipped) == 1
    for m, old in zip(skipped_state.memory, new_state.memory, strict=False):
        np.testing.assert_array_equal(m.numerator, old.numerator)
        np.testing.assert_array_equal(m.normaliser, old.normaliser)


def test_jit_program_size_independent_of_scalar_leaf_count():
    """The packed step is compiled once, not copied into each small leaf's
    output (XLA fuses a producer into every consumer it can: 10^3 scalar
    leaves took 195 s to compile when it did)."""
    lopt = coordinatewise()
    tx = mnemosyne.scale_by_mnemosyne(lopt)

    def multiplies(n):
        params = [jnp.asarray(float(i)) for i in range(n)]
        lowered = jax.jit(tx.update).trace(params, tx.init(params), params).lower()
        return lowered.compile(FAST_COMPILE).as_text().count(" multiply(")

    assert multiplies(40) <= 1.5 * multiplies(4)


# ----------------------------------------------------------------------------
# 3. Files (the basic refusals are in test_serialisation.py)
# ----------------------------------------------------------------------------

MAGIC = _serialisation.MAGIC


@pytest.fixture(scope="module")
def weights_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "w.eqx"
    mnemosyne.save(path, coordinatewise())
    return path.read_bytes()


def _with_header(data: bytes, edit) -> bytes:
    header, _, payload = data[len(MAGIC):].partition(b"\n")
    header = json.loads(header)
    edit(header)
    return MAGIC + json.dumps(header).encode() + b"\n" + payload


def _refused(tmp_path, data: bytes, match: str):
    path = tmp_path / "weights.eqx"
    path.write_bytes(data)
    with pytest.raises(mnemosyne.WeightsFileError, match=match):
        mnemosyne.load(path)


def test_every_truncation_is_refused(tmp_path, weights_bytes):
    """Cut anywhere (50 cut points over the whole file): always a WeightsFileError
    that says truncated / corrupted / not a weights file, never a wrong module."""
    cuts = np.unique(np.linspace(0, len(weights_bytes) - 1, 50).astype(int))
    for cut in cuts:
        _refused(
            tmp_path,
            weights_bytes[:cut],
            "truncated|corrupted|not a Mnemosyne weights file",
        )


def test_other_formats_are_refused(tmp_path, weights_bytes):
    """Files users confuse with weights files: a raw Equinox serialisation, a
    meta-training checkpoint, JSON, a NumPy file."""
    raw = tmp_path / "raw.eqx"
    eqx.tree_serialise_leaves(raw, coordinatewise())
    _refused(tmp_path, raw.read_bytes(), "not a Mnemosyne weights file")
    ckpt = tmp_path / "ckpt.eqx"
    meta.save_checkpoint(ckpt, {"a": jnp.ones(2)}, {"step": 1})
    _refused(
        tmp_path, ckpt.read_bytes(), "meta-training checkpoint, not a weights file"
    )
    _refused(
        tmp_path,
        json.dumps({"format_version": 1}).encode(),
        "not a Mnemosyne weights file",
    )
    _refused(tmp_path, MAGIC + b"[1, 2]\n", "header is truncated or corrupted")
    with pytest.raises(
        mnemosyne.WeightsFileError, match="not a Mnemosyne weights file"
    ):
        mnemosyne.load(mnemosyne._serialisation.WEIGHTS_DIR / "default.eqx.json")


def test_other_versions_and_configs_are_refused(tmp_path, weights_bytes):
    def set_(key, value):
        return lambda h: h.__setitem__(key, value)

    _refused(
        tmp_path,
        _with_header(weights_bytes, set_("format_version", 99)),
        r"format version 99.*upgrade mnemosyne",
    )
    _refused(
        tmp_path,
        _with_header(weights_bytes, set_("format_version", 0)),
        r"header is corrupted \(format version 0\)",
    )
    _refused(
        tmp_path,
        _with_header(weights_bytes, lambda h: h.pop("format_version")),
        r"header is corrupted \(format version None\)",
    )
    # a configuration from another version: an argument this version does not know
    _refused(
        tmp_path,
        _with_header(weights_bytes, lambda h: h["config"].update(use_rope=True)),
        r"configuration cannot be built by this version.*use_rope",
    )
    _refused(
        tmp_path,
        _with_header(weights_bytes, set_("config", None)),
        "no optimizer configuration",
    )
    # weights of a differently configured optimizer under this header
    other = tmp_path / "other.eqx"
    mnemosyne.save(
        other, mnemosyne.CoordinatewiseMnemosyne(hidden_size=4, key=jax.random.key(0))
    )
    header, _, payload = other.read_bytes()[len(MAGIC):].partition(b"\n")
    header = json.loads(header)
    header["config"] = dict(coordinatewise().config)
    header["config"]["step_timescales"] = list(header["config"]["step_timescales"])
    _refused(
        tmp_path,
        MAGIC + json.dumps(header).encode() + b"\n" + payload,
        "do not match the configuration",
    )
    # trailing bytes
    _refused(
        tmp_path,
        weights_bytes + b"extra",
        r"corrupted: \d+ payload bytes, the header says",
    )


def test_save_failing_half_way_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "weights.eqx"
    mnemosyne.save(path, coordinatewise())
    good = path.read_bytes()

    def failing_fsync(fd):
        raise OSError("I/O error (simulated) after the data was written")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="simulated"):
        mnemosyne.save(path, tensorwise())
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["weights.eqx"]
    assert type(mnemosyne.load(path)) is mnemosyne.CoordinatewiseMnemosyne
# ----------------------------------------------------------------------------
# 4. Meta-training runs: killed at any point, resumed bit-identically;
#    diverging tasks do not poison θ
# ----------------------------------------------------------------------------


class FlakyQuadratic(eqx.Module):
    """½ Σ a_i (w_i - b_i)² with b ~ N(0, 0.1²); each minibatch is NaN with
    probability `p_nan` (an array leaf: every draw shares one compile)."""

    curvature: jax.Array
    p_nan: jax.Array
    name = "flaky_quadratic"

    def init(self, key):
        return {"w": jax.random.normal(key, self.curvature.shape)}

    def sample_batch(self, key):
        k_bad, k_noise = jax.random.split(key)
        bad = jax.random.uniform(k_bad) < self.p_nan
        noise = 0.1 * jax.random.normal(k_noise, self.curvature.shape)
        return jnp.where(bad, jnp.nan, noise)

    def loss(self, params, batch):
        d = params["w"] - batch
        return 0.5 * jnp.sum(self.curvature * d * d)


class FlakyQuadraticFamily(eqx.Module):
    """Quadratics with curvatures in [0.5, 2]; a drawn task is healthy, has
    occasional NaN minibatches (some trajectories diverge), or only NaN
    minibatches (every trajectory diverges: the outer step must be skipped)."""

    def sample(self, key):
        k_curv, k_kind = jax.random.split(key)
        curvature = jnp.exp(jax.random.uniform(k_curv, (4,), minval=-0.7, maxval=0.7))
        p_nan = jnp.asarray([0.0, 0.15, 1.0])[jax.random.randint(k_kind, (), 0, 3)]
        return FlakyQuadratic(curvature, p_nan)


META_STEPS = 12


def make_trainer(checkpoint_dir=None) -> meta.MetaTrainer:
    """The trainer every run below uses (and the subprocess of the kill test).
    Its default outer optimizer is hashable by value, so all instances share
    one compiled outer step."""
    return meta.MetaTrainer(
        LearnableSGD(0.1),
        FlakyQuadraticFamily(),
        learning_rate=0.05,
        num_tasks=4,
        unroll_length=3,
        horizon=6,  # a new task every 2 outer steps
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=2,
        keep_checkpoints=2,
        compiler_options=FAST_COMPILE,
        key=jax.random.key(5),  # its first 6 tasks: healthy, flaky and all-NaN ones
    )


def _theta_bits(lopt):
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(lopt)]


@pytest.fixture(scope="module")
def uninterrupted_meta():
    lopt, history = make_trainer().run(META_STEPS, progress=False)
    return lopt, history


def test_diverging_tasks_are_counted_and_skipped(uninterrupted_meta):
    """The reference run meets all three kinds of task: steps where every
    trajectory diverged are skipped (θ unchanged), partly diverged steps use the
    healthy trajectories; both are counted in the history; θ stays finite."""
    lopt, history = uninterrupted_meta
    skipped = np.asarray(history["skipped"])
    diverged = np.asarray(history["num_diverged"])
    assert skipped.any() and not skipped.all(), skipped
    assert np.all(diverged[skipped] == 4)  # skipped <=> all 4 trajectories diverged
    assert np.any((diverged > 0) & (diverged < 4)), diverged  # partial divergence
    assert np.all(np.isfinite(history["meta_loss"])) and np.all(
        np.isfinite(np.asarray(history["grad_norm"])[~skipped])
    )
    assert np.isfinite(float(lopt.log_learning_rate))
    assert float(lopt.learning_rate) != pytest.approx(0.1)  # θ did move
    # θ after a skipped step equals θ before it: replay step by step
    trainer = make_trainer()
    for step in range(META_STEPS):
        before = _theta_bits(trainer.lopt)
        trainer.run(step + 1, progress=False)
        if skipped[step]:
            assert _theta_bits(trainer.lopt) == before, step
    assert _theta_bits(trainer.lopt) == _theta_bits(lopt)


class _Killed(BaseException):
    """Stands in for the process dying (a BaseException, like KeyboardInterrupt)."""


def _resume_and_compare(checkpoint_dir, uninterrupted_meta):
    lopt_ref, history_ref = uninterrupted_meta
    trainer = make_trainer(checkpoint_dir)
    lopt, history = trainer.run(META_STEPS, progress=False)
    assert _theta_bits(lopt) == _theta_bits(lopt_ref)
    assert history == history_ref
    leftovers = [n for n in os.listdir(checkpoint_dir) if not n.startswith("ckpt-")]
    assert leftovers == []  # no temporary files


# kill points drawn once from a seeded generator: (where, outer step / save index)
_KILLS = [
    ("outer-step", int(s))
    for s in np.random.default_rng(0).choice(np.arange(3, META_STEPS), 2, replace=False)
] + [
    ("checkpoint-write", int(k))
    for k in np.random.default_rng(1).choice(np.arange(2, 6), 2, replace=False)
]


@pytest.mark.parametrize("where,when", _KILLS, ids=[f"{w}-{n}" for w, n in _KILLS])
def test_interrupted_run_resumes_bit_identically(
    tmp_path, monkeypatch, uninterrupted_meta, where, when
):
    """Interrupt a run inside outer step `when`, or half way through writing its
    `when`-th checkpoint (the payload partly on disk), then start a new trainer
    on the same folder: it resumes from the last complete checkpoint and ends
    with bit-identical θ and history."""
    if where == "outer-step":
        original = _trainer.MetaTrainer._one_step

        def one_step(self):
            if self.step == when:
                raise _Killed
            original(self)

        monkeypatch.setattr(_trainer.MetaTrainer, "_one_step", one_step)
    else:
        original = _checkpoint.eqx.tree_serialise_leaves
        saves = []

        def half_written(f, tree, *args, **kwargs):
            saves.append(1)
            if len(saves) == when:
                f.write(b"\x00" * 100)  # part of the payload reaches the disk
                raise _Killed
            return original(f, tree, *args, **kwargs)

        monkeypatch.setattr(_checkpoint.eqx, "tree_serialise_leaves", half_written)
    with pytest.raises(_Killed):
        make_trainer(tmp_path).run(META_STEPS, progress=False)
    monkeypatch.undo()
    complete = make_trainer(tmp_path).checkpoints()
    assert complete  # something was saved before the interruption
    _resume_and_compare(tmp_path, uninterrupted_meta)


_KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from test_reliability import make_trainer
from mnemosyne.meta import _checkpoint

original = _checkpoint.eqx.tree_serialise_leaves
saves = []

def killed_mid_write(f, tree, *args, **kwargs):
    saves.append(1)
    if len(saves) == {when}:
        f.write(b"\\x00" * 100)
        getattr(f, "_f", f).flush()  # the bytes reach the file (f hashes, then
        forwards)
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally
    return original(f, tree, *args, **kwargs)

_checkpoint.eqx.tree_serialise_leaves = killed_mid_write
make_trainer({folder!r}).run({steps}, progress=False)
"""


@pytest.mark.slow  # a fresh interpreter imports JAX and compiles the outer step again
def test_sigkill_during_checkpoint_write(tmp_path, uninterrupted_meta):
    """A real process SIGKILLed in the middle of writing its 3rd checkpoint
    leaves a partial temporary file and two complete checkpoints; a new run
    deletes the temporary file, resumes, and ends bit-identical."""
    script = _KILL_SCRIPT.format(
        tests=os.path.dirname(__file__), when=3, folder=str(tmp_path), steps=META_STEPS
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    names = sorted(os.listdir(tmp_path))  # "." sorts first
    assert names[1:] == ["ckpt-00000002.eqx", "ckpt-00000004.eqx"], names
    assert names[0].startswith(".ckpt-00000006.eqx.") and names[0].endswith(".tmp"), (
        names
    )
    assert os.path.getsize(tmp_path / names[0]) >= 100  # the partial write is there
    _resume_and_compare(tmp_path, uninterrupted_meta)


# ----------------------------------------------------------------------------
# 5. Long run: 10,000 steps of the pretrained optimizer on a suite task
# ----------------------------------------------------------------------------

LONG_TASK, LONG_STEPS, CHUNK = "mlp_iris", 10_000, 1_000


@pytest.fixture(scope="module")
def long_run():
    """Train `LONG_TASK` for `LONG_STEPS` steps with `mnemosyne.mnemosyne()`,
    checking the state after every chunk of `CHUNK` steps."""
    from mnemosyne import tasks

    task = tasks.get_task(LONG_TASK)
    tx = _tx()

    @fast_jit
    def chunk(tx, params, state, key):
        (params, state), losses = run_steps(
            task, tx, params, state, jax.random.split(key, CHUNK)
        )
        return params, state, losses

    params = task.init(jax.random.key(0))
    state = tx.init(params)
    layout = [(x.shape, x.dtype) for x in jax.tree.leaves(state)]
    nbytes = sum(x.nbytes for x in jax.tree.leaves(state))
    losses, checks = [], []
    for i in range(LONG_STEPS // CHUNK):
        params, state, chunk_losses = chunk(tx, params, state, jax.random.key(i + 1))
        losses.append(np.asarray(chunk_losses))
        checks.append((
            [(x.shape, x.dtype) for x in jax.tree.leaves(state)] == layout,
            sum(x.nbytes for x in jax.tree.leaves(state)) == nbytes,
            bool(_all_finite((params, state))),
        ))
    return np.concatenate(losses), state, checks


@pytest.mark.slow
def test_long_run_10k_steps(long_run):
    """No divergence (the evaluation's definition: a NaN/Inf loss or one above
    1000x the first), no skipped step, a finite state whose shapes, dtypes and
    size never change, and a final loss well below the first."""
    from mnemosyne.evaluation import diverged

    losses, state, checks = long_run
    assert all(all(c) for c in checks), checks
    assert losses.shape == (LONG_STEPS,) and not diverged(losses)[0]
    assert losses.max() <= 3.0 * losses[0], (
        losses[0],
        losses.max(),
    )  # spikes stay small
    assert int(state[0].skipped) == 0 and int(state[0].step) == LONG_STEPS
    assert losses[-CHUNK:].mean() < 0.5 * losses[0], (losses[0], losses[-CHUNK:].mean())
    memory = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(state[0].memory))
    assert memory < 1e6, memory


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="the pretrained default degrades on long runs: on mlp_iris the mean "
    "minibatch loss per 1000 steps goes 0.069 (steps 0-999), 0.072, 0.095, ..., 0.325 "
    "(steps 9000-9999), with growing spikes; adam(1e-3) goes 0.29 -> 0.035. It was "
    "meta-trained on horizons of a few hundred steps (a meta-training issue, not a "
    "numerical one: nothing diverges)",
)
def test_long_run_keeps_improving(long_run):
    losses, _, _ = long_run
    means = losses.reshape(-1, CHUNK).mean(axis=1)
    assert means[-1] <= means[1], means
