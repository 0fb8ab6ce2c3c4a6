"""Learned-optimizer behaviour: meta-gradients, input errors, non-finite skips, state
size."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    LOPTS,
    assert_allclose_tree,
    assert_tree_equal,
    fast_jit,
    jit_tx_update,
    random_like,
    ranked_params,
)

import mnemosyne
from mnemosyne._lopt import depth_floor, shallow_ceiling, width_factor

NAMES = sorted(LOPTS)


# ----------------------------------------------------------------------------
# Meta-gradients reach θ (and only the trainable part of it)
# ----------------------------------------------------------------------------

UNROLL = 3


def _unroll_loss(lopt, p0, target, curvature):
    """Sum of the quadratic loss along a short unroll driven by `lopt.update`."""

    def body(carry, _):
        p, state = carry
        grads = {"w": curvature * (p - target)}
        updates, state = lopt.update(grads, state, {"w": p})
        p = p + updates["w"]
        return (p, state), 0.5 * jnp.sum(curvature * (p - target) ** 2)

    state = lopt.init({"w": p0})
    _, losses = jax.lax.scan(body, (p0, state), None, length=UNROLL)
    return jnp.sum(losses)


@fast_jit
def _meta_grad(lopt, p0, target, curvature):
    return eqx.filter_grad(_unroll_loss)(lopt, p0, target, curvature)


# a gradient through a 3-step unroll compiles for 12-25 s a variant: slow, run
# by .ci/run (the default suite meta-trains through the same code in
# test_meta.py, test_pes.py and test_baselines.py)
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_meta_gradients_reach_theta(name):
    lopt = LOPTS[name]()
    rng = np.random.default_rng(0)
    # 20 coordinates: > chunk_len^1 so every encoder level attends over >= 2 tokens
    p0 = jnp.asarray(rng.standard_normal((4, 5)), jnp.float32)
    target = jnp.asarray(rng.standard_normal((4, 5)), jnp.float32)
    curvature = jnp.asarray(np.geomspace(0.1, 10.0, 20).reshape(4, 5), jnp.float32)
    grads = _meta_grad(lopt, p0, target, curvature)

    spec = mnemosyne.trainable_filter(lopt)
    lopt_leaves = jax.tree_util.tree_flatten_with_path(lopt)[0]
    spec_leaves = jax.tree.leaves(spec)
    grad_leaves = jax.tree.leaves(grads, is_leaf=lambda x: x is None)
    assert len(lopt_leaves) == len(spec_leaves) == len(grad_leaves)
    num_trainable = num_frozen = 0
    for (path, _), trainable, grad in zip(
        lopt_leaves, spec_leaves, grad_leaves, strict=False
    ):
        where = jax.tree_util.keystr(path)
        if trainable:
            num_trainable += 1
            assert grad is not None, where
            grad = np.asarray(grad)
            assert np.all(np.isfinite(grad)), where
            assert np.any(grad != 0), f"no meta-gradient reaches {where}"
        else:
            num_frozen += 1
            assert ".omega" in where, where  # only the random projections are frozen
            assert grad is None or np.all(np.asarray(grad) == 0), where
    assert num_trainable > 5 and num_frozen >= 1


def test_trainable_filter_marks_frozen(getkey):
    lopt = LOPTS["tensorwise"]()
    spec = mnemosyne.trainable_filter(lopt)
    assert spec.memory.features.omega.value is False
    assert all(block.features.omega.value is False for block in spec.encoder.levels)
    assert spec.memory.query is True and spec.head.w1 is True
    frozen = mnemosyne.Frozen(jnp.ones(3))
    assert jax.grad(lambda f: jnp.sum(f.get() ** 2))(frozen).value.tolist() == [0.0] * 3


# ----------------------------------------------------------------------------
# Input errors
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_input_errors(name):
    lopt = LOPTS[name]()
    params = {"a": jnp.ones(3), "b": {"c": jnp.ones((2, 2))}}
    state = lopt.init(params)
    good = jax.tree.map(jnp.ones_like, params)

    with pytest.raises(TypeError, match=r"\['b'\]\['c'\].*int32"):
        lopt.update(
            {"a": good["a"], "b": {"c": jnp.ones((2, 2), jnp.int32)}}, state, params
        )
    with pytest.raises(TypeError, match=r"\['a'\].*bool"):
        lopt.update({"a": jnp.ones(3, bool), "b": good["b"]}, state, params)
    with pytest.raises(TypeError, match=r"\['a'\] is complex"):
        lopt.update({"a": jnp.ones(3, jnp.complex64), "b": good["b"]}, state, params)
    with pytest.raises(ValueError, match=r"\['b'\]\['d'\]"):
        lopt.update(good, state, {"a": params["a"], "b": {"d": params["b"]["c"]}})
    with pytest.raises(ValueError, match=r"shape mismatch at \['b'\]\['c'\]"):
        lopt.update(good, state, {"a": params["a"], "b": {"c": jnp.ones((2, 3))}})
    with pytest.raises(ValueError, match="reads the parameters"):
        lopt.update(good, state, None)
    with pytest.raises(ValueError, match="state does not match"):
        lopt.update({"x": jnp.ones(3)}, state, {"x": jnp.ones(3)})


# ----------------------------------------------------------------------------
# Non-finite gradients: the step is skipped, training continues
# ----------------------------------------------------------------------------


def _grads(seed):
    g = random_like({k: v for k, v in ranked_params().items() if v is not None}, seed)
    g["none"] = None
    return g


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param([("matrix", np.nan)], id="nan"),
        pytest.param([("scalar", np.inf), ("tensor3", -np.inf)], id="inf"),
        pytest.param([("vector", np.nan), ("matrix", np.inf)], id="nan+inf"),
    ],
)
@pytest.mark.parametrize("name", NAMES)
def test_nonfinite_gradient_skips_step(name, bad):
    tx = mnemosyne.scale_by_mnemosyne(LOPTS[name]())
    params = ranked_params(
        jnp.float32, seed=7
    )  # the template of test_backends: same compile
    state0 = tx.init(params)
    _, state1 = jit_tx_update(tx, _grads(0), state0, params)
    expected_next, expected_state2 = jit_tx_update(tx, _grads(1), state1, params)

    grads = _grads(2)
    for leaf, value in bad:
        grads[leaf] = grads[leaf].at[(0,) * grads[leaf].ndim].set(value)
    updates, skipped = jit_tx_update(tx, grads, state1, params)
    for u in jax.tree.leaves(updates):
        assert np.all(np.asarray(u) == 0), bad
    assert int(skipped.step) == int(state1.step) == 1
    assert int(skipped.skipped) == int(state1.skipped) + 1 == 1
    assert_tree_equal(skipped.memory, state1.memory)
    # training continues exactly as if the bad step had not happened
    following, state2 = jit_tx_update(tx, _grads(1), skipped, params)
    assert_tree_equal(following, expected_next)
    assert_tree_equal(state2.memory, expected_state2.memory)
    assert int(state2.step) == 2 and int(state2.skipped) == 1


@pytest.mark.parametrize("name", NAMES)
def test_nonfinite_gradient_skips_step_reference(name):
    """The NumPy reference backend skips NaN and Inf steps alike."""
    lopt = LOPTS[name]()
    params = {"a": jnp.ones(3), "b": jnp.ones((2, 2))}
    state = lopt.init(params)
    for value in (np.nan, np.inf):
        grads = {"a": jnp.asarray([1.0, value, 2.0]), "b": jnp.ones((2, 2))}
        with np.errstate(invalid="ignore"):
            updates, new = lopt.update(grads, state, params, backend="numpy")
        assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(updates))
        assert int(new.step) == 0 and int(new.skipped) == 1
        assert_tree_equal(
            jax.tree.map(np.asarray, new.memory), jax.tree.map(np.asarray, state.memory)
        )


# ----------------------------------------------------------------------------
# State size
# ----------------------------------------------------------------------------


REALISTIC = {
    "conv": {
        "kernel": jax.ShapeDtypeStruct((3, 3, 16, 32), jnp.float32),
        "bias": jax.ShapeDtypeStruct((32,), jnp.float32),
    },
    "dense": [
        jax.ShapeDtypeStruct((512, 128), jnp.bfloat16),
        jax.ShapeDtypeStruct((128,), jnp.float32),
    ],
    "norm_scale": jax.ShapeDtypeStruct((), jnp.float32),
    "frozen": None,
}


def _measured_floats_per_parameter(lopt, params):
    state = jax.eval_shape(lopt.init, params)
    floats = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.memory))
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    return floats / n


def test_default_state_is_five_floats_per_parameter():
    """v2: 4 memory floats (1 head, r = 2, d_v = 1) + 1 second moment; v1: 4."""
    lopt = mnemosyne.CoordinatewiseMnemosyne(key=jax.random.key(1))
    assert lopt.state_floats_per_parameter(REALISTIC) == 5.0
    assert _measured_floats_per_parameter(lopt, REALISTIC) == 5.0
    v1 = mnemosyne.CoordinatewiseMnemosyne(
        second_moment_decay=None, key=jax.random.key(1)
    )
    assert v1.state_floats_per_parameter(REALISTIC) == 4.0
    assert _measured_floats_per_parameter(v1, REALISTIC) == 4.0
    state = jax.eval_shape(lopt.init, REALISTIC)
    assert state.memory["frozen"] is None
    assert (
        state.memory["dense"][0].numerator.dtype == jnp.float32
    )  # bf16 params: f32 state


@pytest.mark.parametrize("name", NAMES)
def test_state_floats_per_parameter_matches_measured(name):
    lopt = LOPTS[name]()
    expected = _measured_floats_per_parameter(lopt, REALISTIC)
    assert lopt.state_floats_per_parameter(REALISTIC) == pytest.approx(
        expected, rel=1e-12
    )
    if name == "tensorwise":
        assert expected < 1.0  # memory per meta-token, not per coordinate


def test_bfloat16_memory_storage():
    """`memory_dtype=bfloat16` stores the memory in bfloat16 but computes in
    float32: over several steps the updates stay within bfloat16 rounding of the
    float32-memory updates (relative error ~ 2^-8 per stored value), and the
    dtype is stable across steps, under jit and on the NumPy reference."""
    params = {
        **ranked_params(),
        "big": jnp.linspace(-1.0, 1.0, 80 * 64).reshape(80, 64),
    }
    grads = [random_like(params, seed) for seed in range(1, 6)]
    results = {}
    for name, dtype in [("f32", None), ("bf16", jnp.bfloat16)]:
        tx = mnemosyne.mnemosyne(memory_dtype=dtype)
        state, p = tx.init(params), params
        for g in grads:
            u, state = jit_tx_update(tx, g, state, p)
            p = jax.tree.map(lambda a, b: a + b, p, u)
        results[name] = (u, state)
    u32, _ = results["f32"]
    u16, state16 = results["bf16"]
    memory_dtypes = {x.dtype for x in jax.tree.leaves(state16[0].memory)}
    assert memory_dtypes == {jnp.dtype(jnp.bfloat16)}
    for a, b in zip(jax.tree.leaves(u32), jax.tree.leaves(u16), strict=False):
        assert a.dtype == b.dtype
        scale = float(jnp.max(jnp.abs(a))) + 1e-12
        assert float(jnp.max(jnp.abs(a - b))) / scale < 5e-2
    # the reference backend stores bfloat16 too
    tx = mnemosyne.mnemosyne(memory_dtype=jnp.bfloat16, backend="numpy")
    _, state = tx.update(grads[0], tx.init(params), params)
    assert {np.asarray(x).dtype for x in jax.tree.leaves(state[0].memory)} == {
        np.dtype(jnp.bfloat16)
    }


def test_memory_dtype_must_be_floating():
    with pytest.raises(TypeError, match="memory_dtype"):
        mnemosyne.mnemosyne(memory_dtype=jnp.int32).init({"w": jnp.ones(3)})


def test_jitted_update_reuses_temporaries_and_writes_the_memory_in_place():
    """With params and state donated, each tensor's step runs as a computation
    of its own (a conditional on the gradients being finite): XLA writes the
    new memory over the old one and reuses one tensor's temporaries (the log
    feature, two key exps) for the next. Temporaries stay under 2 floats per
    parameter here; when every tensor's were alive at once and the memory was
    rebuilt in a temporary they took 5-8 (fresh pages, page-faulted on every
    step at 1e7 parameters). Deterministic: XLA's buffer assignment, not a
    timing."""
    tx = mnemosyne.mnemosyne()
    keys = jax.random.split(jax.random.key(0), 4)
    params = [jax.random.normal(k, (128, 256)) for k in keys]
    grads = jax.tree.map(lambda p: 1e-3 * p, params)

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return jax.tree.map(jnp.add, params, updates), state

    lowered = jax.jit(step, donate_argnums=(0, 1)).lower(params, tx.init(params), grads)
    num_params = sum(p.size for p in params)
    # v1 measured 1.2 floats/param; v2 (one more state array, the second moment) 2.0;
    # keeping every tensor's temporaries alive at once measured 4.8 (v1)
    assert lowered.compile().memory_analysis().temp_size_in_bytes / 4 / num_params < 2.5


def _perturbed(lopt, seed, scale=0.3):
    """`lopt` with every float array moved by Gaussian noise: a θ with nonzero
    biases everywhere, like a meta-trained one."""
    arrays, static = eqx.partition(lopt, eqx.is_inexact_array)
    leaves, treedef = jax.tree.flatten(arrays)
    rng = np.random.default_rng(seed)  # NumPy: no compile per leaf shape
    moved = [x + jnp.asarray(scale * rng.normal(size=x.shape), x.dtype) for x in leaves]
    return eqx.combine(jax.tree.unflatten(treedef, moved), static)


@pytest.mark.parametrize("adaptation", [None, 0.1])
@pytest.mark.parametrize("backend", ["jax", "numpy"])
def test_sign_symmetric_step_is_odd_in_the_gradient_history(backend, adaptation):
    """Eq. (H±), (2±): for any θ, flipping the sign of every gradient so far
    flips the sign of the update (parameters fixed), and a zero gradient gives a
    zero step: the optimizer cannot drift at a stationary point. Without the
    symmetry (v2 `sign_symmetric=False`) the same θ drifts. With step
    adaptation too (Eq. A1's cosine is even in the history)."""
    params = {
        **ranked_params(),
        "big": jnp.linspace(-1.0, 1.0, 80 * 64).reshape(80, 64),
    }
    grads = [random_like(params, seed) for seed in range(1, 5)]
    negate = lambda t: jax.tree.map(lambda x: -x, t)
    zeros = jax.tree.map(jnp.zeros_like, params)
    rtol = 1e-5 if backend == "jax" else 1e-12
    for symmetric in (True, False):
        lopt = _perturbed(
            mnemosyne.CoordinatewiseMnemosyne(
                sign_symmetric=symmetric, step_adaptation=adaptation,
                key=jax.random.key(0),
            ),
            1,
        )
        tx = mnemosyne.mnemosyne(lopt=lopt, backend=backend)
        update = (
            jit_tx_update
            if backend == "jax"
            else (lambda tx, g, s, p: tx.update(g, s, p))
        )
        s_plus = s_minus = tx.init(params)
        for g in grads:
            u_plus, s_plus = update(tx, g, s_plus, params)
            u_minus, s_minus = update(tx, negate(g), s_minus, params)
        u_zero, _ = update(tx, zeros, tx.init(params), params)
        largest = max(
            float(np.max(np.abs(np.asarray(u)))) for u in jax.tree.leaves(u_plus)
        )
        assert largest > 1e-5  # a real step, not a vanishing one
        odd = all(
            np.allclose(np.asarray(a), -np.asarray(b), rtol=rtol, atol=rtol * largest)
            for a, b in zip(
                jax.tree.leaves(u_plus), jax.tree.leaves(u_minus), strict=False
            )
        )
        drift = max(
            float(np.max(np.abs(np.asarray(u)))) for u in jax.tree.leaves(u_zero)
        )
        if symmetric:
            assert odd and drift == 0.0
        else:
            assert not odd and drift > 1e-6


# ----------------------------------------------------------------------------
# Eq. (F2), (S): the gradient relative to its tensor's running scale
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["jax", "numpy"])
@pytest.mark.parametrize("scale", ["running", "current"])
def test_v2_gradient_feature_is_relative_to_the_tensors_running_scale(backend, scale):
    """f[1] = g / rms(sqrt(nu_hat)) (running) or g / rms(g) (current), checked
    against a direct NumPy computation: after a history of unit-size gradients,
    a gradient 1e-4 as large gives f[1] of size ~1e-4 with the running scale,
    while the current-RMS form blows it up to unit size."""
    lopt = mnemosyne.CoordinatewiseMnemosyne(
        gradient_scale=scale, key=jax.random.key(0)
    )
    B = mnemosyne.backends.get_backend(backend)
    rng = np.random.default_rng(0)
    history = rng.normal(size=(5, 6, 7))
    g = 1e-4 * rng.normal(size=(6, 7))
    decay = lopt.second_moment_decay
    nu = np.zeros((6, 7))
    for past in [*history, g]:
        nu = decay * nu + (1 - decay) * past**2
    t = len(history) + 1
    cast = (lambda x: jnp.asarray(x, jnp.float32)) if backend == "jax" else np.asarray
    f, _, _ = lopt.features(
        cast(g), cast(np.ones((6, 7))), t - 1, B, second_moment=cast(nu)
    )
    if scale == "running":
        expected = g / np.sqrt(np.mean(nu / (1 - decay**t)))
        assert np.max(np.abs(expected)) < 1e-3
    else:
        expected = g / np.sqrt(np.mean(g**2))
    np.testing.assert_allclose(np.asarray(f[1]), expected, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("adaptation", [None, 0.1])
def test_running_scale_is_per_tensor_inside_a_pack(adaptation):
    """Small leaves are packed into one vector (`_packing.Pack`); the running
    scale, and the step multiplier of Eq. (A2), are still each tensor's own:
    updating leaves of very different gradient scales together equals updating
    each on its own."""
    lopt = _perturbed(
        mnemosyne.CoordinatewiseMnemosyne(
            step_adaptation=adaptation, key=jax.random.key(0)
        ),
        1,
    )
    params = {"a": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.ones(5)}
    scales = {"a": 1.0, "b": 1e-3}
    grads = [
        {k: scales[k] * v for k, v in random_like(params, seed).items()}
        for seed in range(3)
    ]
    together = lopt.init(params)
    alone = {k: lopt.init({k: params[k]}) for k in params}
    for g in grads:  # the NumPy reference: the same packing, no compiles
        u, together = lopt.update(g, together, params, backend="numpy")
        for k in params:
            u_k, alone[k] = lopt.update(
                {k: g[k]}, alone[k], {k: params[k]}, backend="numpy"
            )
            np.testing.assert_allclose(u[k], u_k[k], rtol=1e-10, atol=1e-15)


def test_pretrained_steps_shrink_when_gradients_become_tiny():
    """At a noise floor most minibatch gradients are tiny. After steps with
    unit-size gradients, steps with gradients 1e-6 as large (random signs):
    the shipped θ's updates fade with its memory, as Adam's do; normalised by
    the current gradient's RMS instead (`gradient_scale="current"`), the same
    θ keeps taking full-size steps in random directions."""
    params = {"w": jnp.linspace(-1.0, 1.0, 64 * 80).reshape(64, 80)}
    shipped = mnemosyne.pretrained()
    current = mnemosyne.CoordinatewiseMnemosyne(
        gradient_scale="current", key=jax.random.key(0)
    )
    current = jax.tree.unflatten(jax.tree.structure(current), jax.tree.leaves(shipped))
    last = {}
    for name, lopt in {"running": shipped, "current": current}.items():
        tx = mnemosyne.mnemosyne(lopt=lopt)
        state = tx.init(params)
        for seed in range(100):
            g = random_like(params, seed)
            if seed >= 20:
                g = jax.tree.map(lambda x: 1e-6 * x, g)
            u, state = jit_tx_update(tx, g, state, params)
        last[name] = float(jnp.sqrt(jnp.mean(u["w"] ** 2)))
    assert last["running"] < 0.01 * last["current"]


# ----------------------------------------------------------------------------
# Eqs. (A1)-(A2): per-tensor step adaptation
# ----------------------------------------------------------------------------


def _adaptive_and_plain(rate=0.1, threshold=0.0):
    """The same perturbed θ with and without step adaptation."""
    plain = _perturbed(mnemosyne.CoordinatewiseMnemosyne(key=jax.random.key(0)), 1)
    adaptive = mnemosyne.CoordinatewiseMnemosyne(
        step_adaptation=rate, step_agreement_threshold=threshold,
        key=jax.random.key(0),
    )
    adaptive = jax.tree.unflatten(jax.tree.structure(adaptive), jax.tree.leaves(plain))
    return adaptive, plain


def _update_function(backend, **update_kwargs):
    """`update(lopt, grads, state, params)` on `backend`, with `update_kwargs`:
    the JAX step jitted (eager JAX dispatches the whole step op by op: minutes
    under load), the NumPy reference as it is."""
    if backend == "numpy":
        return lambda lopt, g, s, p: lopt.update(
            g, s, p, backend="numpy", **update_kwargs
        )
    if not update_kwargs:
        return jit_tx_update
    return fast_jit(lambda lopt, g, s, p: lopt.update(g, s, p, **update_kwargs))


ADAPTED_PARAMS = {  # one leaf stepped alone, two packed together
    "big": jnp.linspace(-1.0, 1.0, 80 * 64).reshape(80, 64),
    "a": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4),
    "b": jnp.ones(5),
}


def _cosine_with_momentum(lopt, state, grads, key):
    """Eq. (A1) by direct dot products, in float64: the cosine of leaf `key`'s
    gradient with the memory's momentum in `state` (0 if either is zero)."""
    m = np.asarray(lopt.memory.momentum(state.memory[key]), np.float64).ravel()
    g = np.asarray(grads[key], np.float64).ravel()
    norms = np.linalg.norm(g) * np.linalg.norm(m)
    return 0.0 if norms == 0 else float(g @ m) / norms


@pytest.mark.parametrize("threshold", [0.0, 0.2])
@pytest.mark.parametrize("backend", ["jax", "numpy"])
def test_step_scale_follows_the_cosine_of_gradient_and_momentum(backend, threshold):
    """Against a direct computation with dot products: each tensor's
    $\\rho_t = \\operatorname{clip}(\\rho_{t-1} + \\kappa (\\cos(g_t, m_{t-1})
    - a_0), \\log\\tfrac14, \\log 4)$ with $m_{t-1}$ the memory's momentum before
    the step (A1-A2), and the update is the same θ's unadapted update times
    $e^{\\rho_t}$. Gradients with a persistent component, so the cosines are
    far from zero and some tensors' multipliers grow, others shrink."""
    adaptive, plain = _adaptive_and_plain(threshold=threshold)
    rate, (low, high) = adaptive.step_adaptation, adaptive.step_scale_range
    params = ADAPTED_PARAMS
    drift = {k: (1.0 if k != "a" else -1.0) * jnp.ones_like(v)
             for k, v in params.items()}
    state = adaptive.init(params)
    update = _update_function(backend)
    rtol = 2e-5 if backend == "jax" else 1e-10
    moved = set()
    for t in range(6):
        sign = 1.0 if t % 2 == 0 else -1.0  # "a" flips its persistent part
        noise = random_like(params, t)
        g = {k: noise[k] + (sign if k == "a" else 1.0) * drift[k] for k in params}
        expected = {}
        for k in params:
            cos = _cosine_with_momentum(adaptive, state, g, k)
            rho = float(state.step_scale[k]) + rate * (cos - threshold)
            expected[k] = float(np.clip(rho, np.log(low), np.log(high)))
        plain_state = state._replace(step_scale=None)
        u_plain, _ = update(plain, g, plain_state, params)
        u, state = update(adaptive, g, state, params)
        for k in params:
            rho = float(state.step_scale[k])
            np.testing.assert_allclose(rho, expected[k], rtol=rtol, atol=1e-7)
            np.testing.assert_allclose(  # updates are float32, like the grads
                np.asarray(u[k]), np.exp(rho) * np.asarray(u_plain[k]),
                rtol=max(rtol, 1e-6), atol=1e-12,
            )
            moved.add((k, np.sign(round(rho, 6))))
    assert ("big", 1.0) in moved and ("a", -1.0) in moved


def test_momentum_read_is_the_direction_of_the_last_step():
    """The proxy of Eq. (A1): for the untrained v2 θ (momentum on Adam-normalised
    gradients), the memory's uniform-query read-out after a step points along
    that step (cosine with the negated update > 0.99) on random gradients."""
    lopt = mnemosyne.CoordinatewiseMnemosyne(key=jax.random.key(0))
    params = {"w": ADAPTED_PARAMS["big"]}
    state = lopt.init(params)
    for t in range(20):
        g = random_like(params, t)
        u, state = lopt.update(g, state, params, backend="numpy")
        m = np.asarray(lopt.memory.momentum(state.memory["w"])).ravel()
        step = -np.asarray(u["w"]).ravel()
        assert step @ m / (np.linalg.norm(step) * np.linalg.norm(m)) > 0.99


def test_step_scale_saturates_at_its_bounds():
    """A gradient that keeps its direction grows the step to `high` times the
    unadapted one; one that flips sign every step shrinks it to `low` times."""
    adaptive, plain = _adaptive_and_plain(rate=0.5)
    params = {"w": ADAPTED_PARAMS["big"]}
    g = random_like(params, 0)
    for flip, bound in ((1.0, 4.0), (-1.0, 0.25)):
        state = adaptive.init(params)
        for t in range(30):
            gt = {"w": g["w"] * flip**t}
            u_plain, _ = plain.update(gt, state._replace(step_scale=None), params,
                                      backend="numpy")
            u, state = adaptive.update(gt, state, params, backend="numpy")
        np.testing.assert_allclose(np.exp(float(state.step_scale["w"])), bound,
                                   rtol=1e-6)
        np.testing.assert_allclose(u["w"], bound * np.asarray(u_plain["w"]),
                                   rtol=1e-6)


def test_agreement_threshold_shrinks_the_step_on_pure_noise():
    """On independent Gaussian gradients (no signal: $E[a_t] = 0$), a threshold
    $a_0 > 0$ shrinks every tensor's multiplier toward `low`, while without it
    the multiplier only wanders (Eq. A2)."""
    params = {"w": ADAPTED_PARAMS["big"]}
    ends = {}
    for threshold in (0.0, 0.3):
        adaptive, _ = _adaptive_and_plain(rate=0.1, threshold=threshold)
        state = adaptive.init(params)
        update = eqx.filter_jit(adaptive.update)  # eager: minutes under load
        for t in range(40):
            _, state = update(random_like(params, t), state, params)
        ends[threshold] = np.exp(float(state.step_scale["w"]))
    assert 0.25 <= ends[0.3] < 0.4  # 40 steps of -0.1 * 0.3 reach ~0.3
    assert 0.7 < ends[0.0] < 1.4


def test_nonfinite_gradient_leaves_the_step_scale_unchanged():
    adaptive, _ = _adaptive_and_plain()
    params = ADAPTED_PARAMS
    state = adaptive.init(params)
    for t in range(3):
        _, state = jit_tx_update(adaptive, random_like(params, t), state, params)
    bad = random_like(params, 9)
    bad["a"] = bad["a"].at[0, 0].set(jnp.nan)
    u, after = jit_tx_update(adaptive, bad, state, params)
    assert int(after.skipped) == 1
    assert_tree_equal(after.step_scale, state.step_scale)
    assert all(float(jnp.max(jnp.abs(x))) == 0.0 for x in jax.tree.leaves(u))


def test_step_adaptation_needs_the_v2_memory_and_a_sane_range():
    with pytest.raises(ValueError, match="step_adaptation"):
        mnemosyne.CoordinatewiseMnemosyne(
            step_adaptation=0.01, second_moment_decay=None, key=jax.random.key(0)
        )
    with pytest.raises(ValueError, match="step_scale_range"):
        mnemosyne.CoordinatewiseMnemosyne(
            step_adaptation=0.01, step_scale_range=(2.0, 4.0), key=jax.random.key(0)
        )
    with pytest.raises(ValueError, match="step_agreement_threshold"):
        mnemosyne.CoordinatewiseMnemosyne(
            step_adaptation=0.01, step_agreement_threshold=1.5, key=jax.random.key(0)
        )


# ----------------------------------------------------------------------------
# Warm-up of the step (Eq. W)
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["jax", "numpy"])
def test_step_warmup_scales_the_update_and_nothing_else(backend):
    """With `step_warmup=(w_0, T)` the update at step $t$ is the same θ's
    update without warm-up times $w_t = \\min(1, w_0 + (1 - w_0) t / T)$ (W),
    computed here directly, and the state (memory, second moment, step
    multiplier) is bit for bit the same: the warm-up is read by nothing."""
    start, steps = 0.1, 4
    plain = mnemosyne.reconfigure(mnemosyne.pretrained(), step_warmup=None)
    warmed = mnemosyne.reconfigure(plain, step_warmup=(start, steps))
    params = ADAPTED_PARAMS
    state_p = state_w = plain.init(params)
    update = _update_function(backend)
    for t in range(7):
        g = random_like(params, t)
        u_p, state_p = update(plain, g, state_p, params)
        u_w, state_w = update(warmed, g, state_w, params)
        factor = min(1.0, start + (1.0 - start) * t / steps)
        for k in params:
            np.testing.assert_allclose(
                np.asarray(u_w[k]), factor * np.asarray(u_p[k]), rtol=1e-6, atol=0
            )
        assert_tree_equal(state_w, state_p)
    assert factor == 1.0


def test_step_warmup_must_be_a_start_factor_and_a_number_of_steps():
    for bad in ((0.0, 100), (1.5, 100), (0.1, 0), (0.1, 2.5)):
        with pytest.raises(ValueError, match="step_warmup"):
            mnemosyne.CoordinatewiseMnemosyne(step_warmup=bad, key=jax.random.key(0))
    key = jax.random.key(0)
    lopt = mnemosyne.CoordinatewiseMnemosyne(step_warmup=(1, 50.0), key=key)
    assert lopt.step_warmup == (1.0, 50)


# ----------------------------------------------------------------------------
# Width scaling of the step (Eq. N)
# ----------------------------------------------------------------------------


def test_width_factor_reads_the_width_whatever_the_layout():
    """Eq. (N): $n$ is the size over the largest axis (a matrix's smaller side,
    in either layout; a convolution kernel's fan-in in either layout); vectors,
    scalars and narrow tensors take 1; `None` switches it off."""
    assert width_factor((512, 512), 32) == pytest.approx(0.25)
    assert width_factor((128, 512), 32) == width_factor((512, 128), 32) == 0.5
    assert width_factor((3, 3, 16, 32), 16) == width_factor((32, 16, 3, 3), 16)
    assert width_factor((3, 3, 16, 32), 16) == pytest.approx(np.sqrt(16 / 144))
    assert width_factor((12, 512), 32) == 1.0  # an embedding of 12 tokens
    assert width_factor((100_000,), 32) == width_factor((), 32) == 1.0
    assert width_factor((512, 512), None) == 1.0
    assert width_factor((0, 512), 32) == 1.0  # an empty tensor: nothing to scale


@pytest.mark.parametrize("backend", ["jax", "numpy"])
def test_step_width_reference_scales_each_tensor_and_nothing_else(backend):
    """With `step_width_reference` $n_0$ the update of each tensor is the same
    θ's update times $\\min(1, \\sqrt{n_0 / n})$, computed here from the shapes
    directly (a leaf stepped alone, a matrix packed with others, a vector),
    and the state is bit for bit the same: nothing reads the factor."""
    plain = mnemosyne.reconfigure(mnemosyne.pretrained(), step_width_reference=None)
    scaled = mnemosyne.reconfigure(plain, step_width_reference=4)
    params = {**ADAPTED_PARAMS, "packed": jnp.linspace(-1.0, 1.0, 64).reshape(8, 8)}
    factors = {"big": np.sqrt(4 / 64), "a": np.sqrt(4 / 3), "b": 1.0,
               "packed": np.sqrt(4 / 8)}
    state_p = state_s = plain.init(params)
    update = _update_function(backend)
    for t in range(3):
        g = random_like(params, t)
        u_p, state_p = update(plain, g, state_p, params)
        u_s, state_s = update(scaled, g, state_s, params)
        for k in params:
            want = min(1.0, factors[k]) * np.asarray(u_p[k])
            np.testing.assert_allclose(np.asarray(u_s[k]), want, rtol=1e-6, atol=0)
        assert_tree_equal(state_s, state_p)


def test_step_width_reference_needs_global_shapes_inside_shard_map():
    """Under `shard_map` the leaves are blocks, whose shapes are not the
    tensors' widths: without `global_shapes` the update says so."""
    lopt = mnemosyne.reconfigure(mnemosyne.pretrained(), step_width_reference=4)
    params = {"w": jnp.ones((8, 8))}
    with pytest.raises(ValueError, match="global_shapes"):
        lopt.update(params, lopt.init(params), params, axis_names={"w": ()})
    update = fast_jit(  # the global shape, not the block's, is read
        lambda lopt, g, s, p: lopt.update(g, s, p, global_shapes={"w": (16, 64)})
    )
    updates, _ = update(lopt, params, lopt.init(params), params)
    plain_lopt = mnemosyne.reconfigure(lopt, step_width_reference=None)
    plain, _ = jit_tx_update(plain_lopt, params, lopt.init(params), params)
    np.testing.assert_allclose(updates["w"], 0.5 * plain["w"], rtol=1e-6)


def test_step_width_reference_must_be_a_width():
    for bad in (0, 2.5, -4):
        with pytest.raises(ValueError, match="step_width_reference"):
            mnemosyne.CoordinatewiseMnemosyne(
                step_width_reference=bad, key=jax.random.key(0)
            )
    key = jax.random.key(0)
    assert mnemosyne.CoordinatewiseMnemosyne(
        step_width_reference=64.0, key=key
    ).step_width_reference == 64


# ----------------------------------------------------------------------------
# Depth-aware floor of the step multiplier (Eq. D)
# ----------------------------------------------------------------------------


def test_depth_floor_falls_as_one_over_the_number_of_matrices():
    """Eq. (D): $\\ell_L = \\min(\\ell_{max}, \\max(\\ell, c/L))$, and
    $\\ell_{max}$ for a model without matrices."""
    setting = (2.0, 0.5)
    assert depth_floor(0, 0.25, setting) == 0.5
    assert depth_floor(1, 0.25, setting) == depth_floor(4, 0.25, setting) == 0.5
    assert depth_floor(5, 0.25, setting) == pytest.approx(0.4)
    assert depth_floor(8, 0.25, setting) == depth_floor(100, 0.25, setting) == 0.25
    assert depth_floor(100, 1 / 64, setting) == pytest.approx(0.02)


def _flip_to_the_floor(adaptive, plain, params, backend, **update_kwargs):
    """`(update, unadapted update, state)` after 12 steps of a gradient that
    flips sign every step, which drives every multiplier from 1 to its floor
    (A2) in at most 4 steps: the last step's update with `adaptive` and with
    `plain` (the same θ without step adaptation) from the same state, both
    updated with `update_kwargs`."""
    update = _update_function(backend, **update_kwargs)
    g = random_like(params, 0)
    state = adaptive.init(params)
    for t in range(12):
        gt = jax.tree.map(lambda x, t=t: x * (-1.0) ** t, g)
        u_plain, _ = update(plain, gt, state._replace(step_scale=None), params)
        u, state = update(adaptive, gt, state, params)
    return u, u_plain, state


def _assert_at_their_floors(adaptive, plain, params, floors, backend):
    """After `_flip_to_the_floor`, each tensor `k` of `floors` (a dict, or one
    floor for every tensor of `params`) has the multiplier `floors[k]` and
    the update `floors[k]` times the unadapted one."""
    if not isinstance(floors, dict):
        floors = dict.fromkeys(params, floors)
    u, u_plain, state = _flip_to_the_floor(adaptive, plain, params, backend)
    for k, floor in floors.items():
        np.testing.assert_allclose(np.exp(float(state.step_scale[k])), floor,
                                   rtol=1e-6, err_msg=k)
        np.testing.assert_allclose(u[k], floor * np.asarray(u_plain[k]), rtol=1e-5,
                                   err_msg=k)


# (the NumPy reference only: the floors are read from shapes before either
# backend runs, and the kernel floor's JAX case below runs the depth floor too)
@pytest.mark.parametrize("backend", ["numpy"])
def test_step_depth_floor_floors_every_tensor_at_the_models_depth_floor(backend):
    """A gradient that flips sign every step drives every tensor's multiplier
    to its floor (A2); with `step_depth_floor` that floor is the model's
    $\\ell_L$, counted over the leaves of two or more axes (a matrix stepped
    alone, small ones packed together, and vectors, which do not count),
    and the update is the unadapted one times it."""
    adaptive, plain = _adaptive_and_plain(rate=0.5)
    adaptive = mnemosyne.reconfigure(adaptive, step_depth_floor=(2.0, 0.5))
    base = {"big": ADAPTED_PARAMS["big"], "b": jnp.ones(5)}
    small = {f"m{i}": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4) + i for i in range(4)}
    for params, floor in ((base, 0.5), ({**base, **small}, 0.4)):
        _assert_at_their_floors(adaptive, plain, params, floor, backend)


def test_step_depth_floor_must_be_a_factor_and_a_floor():
    key = jax.random.key(0)
    for bad in ((0.0, 0.5), (2.0, 0.1), (2.0, 1.5), (2.0,), "deep"):
        with pytest.raises(ValueError, match="step_depth_floor"):
            mnemosyne.CoordinatewiseMnemosyne(
                step_adaptation=0.1, step_depth_floor=bad, key=key
            )
    lopt = mnemosyne.CoordinatewiseMnemosyne(step_depth_floor=(2, 1), key=key)
    assert lopt.step_depth_floor == (2.0, 1.0)


# (the NumPy reference: the floors are read from shapes before either backend
# runs; the JAX step runs the same bounds in the kernel floor's test)
@pytest.mark.parametrize("backend", ["numpy"])
def test_step_shallow_floor_raises_the_floor_of_shallow_models_only(backend):
    """Eq. (D2): with `step_shallow_floor` $(\\ell_S, L_S)$ beside the depth
    floor, a gradient that flips sign every step drives every tensor's
    multiplier to $\\max(\\ell_L, \\ell_S)$ in a model of at most $L_S$
    matrices (a model without matrices included) and to $\\ell_L$ in a deeper
    one; the update is the unadapted one times it."""
    adaptive, plain = _adaptive_and_plain(rate=0.5)
    adaptive = mnemosyne.reconfigure(
        adaptive, step_depth_floor=(2.0, 0.5), step_shallow_floor=(0.9, 2)
    )
    base = {"big": ADAPTED_PARAMS["big"], "b": jnp.ones(5)}
    m = {f"m{i}": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4) + i for i in range(4)}
    cases = (
        ({"b": jnp.ones(5)}, 0.9),  # L = 0
        ({**base, "m0": m["m0"]}, 0.9),  # L = 2
        ({**base, "m0": m["m0"], "m1": m["m1"]}, 0.5),  # L = 3: the depth floor
        ({**base, **m}, 0.4),  # L = 5
    )
    for params, floor in cases:
        _assert_at_their_floors(adaptive, plain, params, floor, backend)


def test_step_shallow_floor_must_be_a_floor_and_a_count():
    key = jax.random.key(0)
    for bad in ((0.1, 2), (3.0, 2), (1.0, -1), (1.0, 2.5), (1.0,), "shallow"):
        with pytest.raises(ValueError, match="step_shallow_floor"):
            mnemosyne.CoordinatewiseMnemosyne(
                step_adaptation=0.1, step_scale_range=(0.25, 2.0),
                step_shallow_floor=bad, key=key,
            )
    lopt = mnemosyne.CoordinatewiseMnemosyne(step_shallow_floor=(1, 2.0), key=key)
    assert lopt.step_shallow_floor == (1.0, 2)
    assert isinstance(lopt.step_shallow_floor[1], int)


# ----------------------------------------------------------------------------
# A ceiling of the step multiplier that rises for shallow models (Eq. C)
# ----------------------------------------------------------------------------


def test_shallow_ceiling_falls_as_one_over_the_number_of_matrices_down_to_h():
    """Eq. (C): $h_L = \\min(C, \\max(h, C/L))$, and $C$ for a model
    without matrices."""
    assert shallow_ceiling(0, 2.0, 8.0) == shallow_ceiling(1, 2.0, 8.0) == 8.0
    assert shallow_ceiling(2, 2.0, 8.0) == 4.0
    assert shallow_ceiling(3, 2.0, 8.0) == pytest.approx(8 / 3)
    assert shallow_ceiling(4, 2.0, 8.0) == shallow_ceiling(100, 2.0, 8.0) == 2.0
    assert shallow_ceiling(3, 2.0, 2.0) == 2.0  # C = h: the plain ceiling


@pytest.mark.parametrize("backend", ["jax", "numpy"])
def test_step_shallow_ceiling_caps_every_tensor_at_the_models_ceiling(backend):
    """A gradient that keeps its direction drives every tensor's multiplier up
    to its ceiling (A2); with `step_shallow_ceiling` $C$ that ceiling is the
    model's $h_L$ of Eq. (C), counted over the leaves of two or more axes (a
    matrix stepped alone, small ones packed together, and vectors, which do
    not count), and the update is the unadapted one times it."""
    adaptive, plain = _adaptive_and_plain(rate=0.5)
    adaptive = mnemosyne.reconfigure(adaptive, step_shallow_ceiling=(16.0, 0.0))
    assert adaptive.step_scale_range[1] == 4.0
    update = _update_function(backend)
    base = {"big": ADAPTED_PARAMS["big"], "b": jnp.ones(5)}
    small = {f"m{i}": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4) + i for i in range(4)}
    two = {k: small[k] for k in ("m0", "m1")}
    for params, ceiling in ((base, 16.0), ({**base, **two}, 16 / 3),
                            ({**base, **small}, 4.0)):
        g = jax.tree.map(lambda x: 0.1 * x + 0.05, params)  # the same every step
        state = adaptive.init(params)
        for _ in range(20):
            u_plain, _ = update(plain, g, state._replace(step_scale=None), params)
            u, state = update(adaptive, g, state, params)
        for k in params:
            np.testing.assert_allclose(np.exp(float(state.step_scale[k])), ceiling,
                                       rtol=1e-5)
            np.testing.assert_allclose(u[k], ceiling * np.asarray(u_plain[k]),
                                       rtol=1e-5)


@pytest.mark.parametrize("backend", ["jax", "numpy"])
def test_step_shallow_ceiling_gates_growth_above_h_by_a_stronger_agreement(backend):
    """Against a direct computation with dot products: with
    `step_shallow_ceiling` $(C, a_1)$, Eq. (A2)'s threshold is $a_1$ instead
    of $a_0$ while the multiplier is above the plain ceiling $h$, so
    $\\rho_t = \\operatorname{clip}(\\rho_{t-1} + \\kappa (\\cos(g_t, m_{t-1}) -
    a(\\rho_{t-1})), \\log\\ell, \\log h_L)$. A gradient that keeps its
    direction, with $a_1$ above its agreement: the multiplier rises past $h$
    and is pulled back to it, never reaching $h_L$."""
    adaptive, plain = _adaptive_and_plain(rate=0.5, threshold=0.05)
    adaptive = mnemosyne.reconfigure(adaptive, step_shallow_ceiling=(16.0, 0.999))
    rate, (low, knee) = adaptive.step_adaptation, adaptive.step_scale_range
    params = {"big": ADAPTED_PARAMS["big"], "b": jnp.ones(5)}  # L = 1: h_L = 16
    g = jax.tree.map(lambda x: x + 0.5, random_like(params, 0))  # every step
    state = adaptive.init(params)
    update = _update_function(backend)
    rtol = 2e-5 if backend == "jax" else 1e-10
    above = set()
    for _ in range(20):
        expected = {}
        for k in params:
            cos = _cosine_with_momentum(adaptive, state, g, k)
            assert cos < 0.999
            rho = float(state.step_scale[k])
            threshold = 0.999 if rho > np.log(knee) else 0.05
            expected[k] = float(np.clip(rho + rate * (cos - threshold),
                                        np.log(low), np.log(16.0)))
        u_plain, _ = update(plain, g, state._replace(step_scale=None), params)
        u, state = update(adaptive, g, state, params)
        for k in params:
            rho = float(state.step_scale[k])
            np.testing.assert_allclose(rho, expected[k], rtol=rtol, atol=1e-7)
            np.testing.assert_allclose(np.asarray(u[k]),
                                       np.exp(rho) * np.asarray(u_plain[k]),
                                       rtol=max(rtol, 1e-6), atol=1e-12)
            above.add(rho > np.log(knee))
    assert above == {True, False}
    assert max(float(r) for r in jax.tree.leaves(state.step_scale)) < np.log(2 * knee)


def test_step_shallow_ceiling_must_be_a_ceiling_and_a_threshold():
    key = jax.random.key(0)
    for bad in ((1.5, 0.3), (8.0, 1.0), (8.0,), 8.0, "shallow"):
        with pytest.raises(ValueError, match="step_shallow_ceiling"):
            mnemosyne.CoordinatewiseMnemosyne(
                step_adaptation=0.1, step_scale_range=(0.25, 2.0),
                step_shallow_ceiling=bad, key=key,
            )
    lopt = mnemosyne.CoordinatewiseMnemosyne(step_shallow_ceiling=(8, 0), key=key)
    assert lopt.step_shallow_ceiling == (8.0, 0.0)


@pytest.mark.parametrize(
    "backend, min_matrices, kernel_floor",  # the JAX step once: per-tensor
    # floors, a kernel's and the depth floor, applied inside one pack
    [("jax", 5, 0.8), ("numpy", 5, 0.8), ("numpy", 6, 0.4)],
)
def test_step_kernel_floor_holds_kernels_at_their_own_floor(
    backend, min_matrices, kernel_floor
):
    """Eq. (K): with `step_kernel_floor` $(\\ell_K, L_K)$ and the depth floor,
    a gradient that flips sign every step drives each kernel's multiplier (a
    tensor of four or more axes, stepped alone or packed beside a matrix)
    to $\\max(\\ell_L, \\ell_K)$ in a model of $L \\ge L_K$ matrices (kernels
    count in $L$ as matrices do) and to $\\ell_L$ in a shallower one, and
    every other tensor's, three-axis ones included, to $\\ell_L$; the update
    is the unadapted one times it."""
    adaptive, plain = _adaptive_and_plain(rate=0.5)
    adaptive = mnemosyne.reconfigure(
        adaptive, step_depth_floor=(2.0, 0.5), step_kernel_floor=(0.8, min_matrices)
    )
    params = {
        "big": ADAPTED_PARAMS["big"],  # a matrix stepped alone
        "m": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4),  # packed
        "b": jnp.ones(5),  # packed, not counted in L
        "k_small": jnp.linspace(-1.0, 1.0, 36).reshape(2, 2, 3, 3),  # packed
        "k_3": jnp.linspace(-1.0, 1.0, 24).reshape(3, 2, 4),  # packed, no kernel
        "k_big": jnp.linspace(-1.0, 1.0, 5 * 4 * 16 * 16).reshape(5, 4, 16, 16),
    }
    floors = {"big": 0.4, "m": 0.4, "b": 0.4, "k_small": kernel_floor, "k_3": 0.4,
              "k_big": kernel_floor}  # L = 5: ℓ_L = 2/5
    _assert_at_their_floors(adaptive, plain, params, floors, backend)


def test_step_kernel_floor_must_be_a_floor_and_a_depth():
    key = jax.random.key(0)
    for bad in ((0.1, 5), (1.5, 5), (1.0, 0), (1.0, 2.5), 1.0, "conv", (1.0,)):
        with pytest.raises(ValueError, match="step_kernel_floor"):
            mnemosyne.CoordinatewiseMnemosyne(
                step_adaptation=0.1, step_kernel_floor=bad, key=key
            )
    lopt = mnemosyne.CoordinatewiseMnemosyne(step_kernel_floor=(1, 5.0), key=key)
    assert lopt.step_kernel_floor == (1.0, 5)


# ----------------------------------------------------------------------------
# Layers stacked into one array: `stacked_axes`
# ----------------------------------------------------------------------------


def _stacked_cnn(stacked: bool) -> dict:
    """A stem convolution, four 3x3 convolutions of 4 channels with their
    biases, and a dense head; the four as one `(4, 3, 3, 4, 4)` kernel and one
    `(4, 4)` bias if `stacked` (as for `jax.lax.scan`)."""
    ramp = lambda *shape: jnp.linspace(-1.0, 1.0, int(np.prod(shape))).reshape(shape)
    layers = {f"conv{i}": {"w": ramp(3, 3, 4, 4) + i, "b": ramp(4) - i}
              for i in range(4)}
    if stacked:
        layers = {"stack": jax.tree.map(lambda *x: jnp.stack(x), *layers.values())}
    return {"stem": ramp(3, 3, 1, 4), **layers, "head": ramp(4, 3), "bias": ramp(3)}


def test_stacked_axes_read_each_layer_as_the_unstacked_model_does():
    """With `stacked_axes` naming the stacking axis, a CNN whose four hidden
    convolutions are one `(4, 3, 3, 4, 4)` kernel gets, on every layer, the
    floor (D)/(K) and width factor (N) of the same CNN written layer by layer:
    6 matrices, so $\\ell_L = 2/6$ and kernels at $\\ell_K$ = 0.8, and each
    kernel's width is 36, not 144. Read without it, the stack is one 3-D
    kernel among 4 matrices (the stacked bias counts as one): $\\ell_L$ =
    1/2 everywhere, and the stack's width is 144. A gradient that flips sign
    every step drives each multiplier to its floor (A2); the update is the
    unadapted one times the floor and the width factor. (The floors are read
    from shapes before either backend runs: the NumPy reference checks it;
    the next test takes the option through the jitted JAX step.)"""
    adaptive, plain = _adaptive_and_plain(rate=0.5)
    adaptive = mnemosyne.reconfigure(
        adaptive, step_depth_floor=(2.0, 0.5), step_kernel_floor=(0.8, 5),
        step_width_reference=4,
    )
    unstacked, stacked = _stacked_cnn(False), _stacked_cnn(True)
    axes = lambda params: {k: int(k == "stack") for k in params}
    backend = "numpy"
    u, u_plain, state = _flip_to_the_floor(adaptive, plain, unstacked, backend)
    assert np.exp(float(state.step_scale["conv2"]["w"])) == pytest.approx(0.8)
    np.testing.assert_allclose(u["conv2"]["w"], 0.8 * np.sqrt(4 / 36)
                               * np.asarray(u_plain["conv2"]["w"]), rtol=1e-5)
    prefix = {**axes(stacked), "stack": {"w": 1, "b": 1}}
    runs = {  # the floors of the stack's kernel, its bias and the head; the
        # stack's width factor
        "stacked_axes": ({"stacked_axes": axes}, 0.8, 1 / 3, 1 / 3, np.sqrt(4 / 36)),
        "as a prefix": ({"stacked_axes": prefix}, 0.8, 1 / 3, 1 / 3, np.sqrt(4 / 36)),
        "without": ({}, 0.5, 0.5, 0.5, np.sqrt(4 / 144)),
    }
    for what, (kwargs, kernel, bias, head, width) in runs.items():
        u, u_plain, state = _flip_to_the_floor(
            adaptive, plain, stacked, backend, **kwargs
        )
        floors = {"w": kernel, "b": bias}
        for k, floor in floors.items():
            got = np.exp(float(state.step_scale["stack"][k]))
            assert got == pytest.approx(floor), (what, k)
            factor = floor * (width if k == "w" else 1.0)
            np.testing.assert_allclose(u["stack"][k], factor * u_plain["stack"][k],
                                       rtol=1e-5, err_msg=f"{what}: {k}")
        assert np.exp(float(state.step_scale["head"])) == pytest.approx(head), what


def test_stacked_axes_reach_the_step_through_the_optax_transformation():
    """`mnemosyne.mnemosyne(stacked_axes=...)` steps under jit as the NumPy
    reference does with them, given as a prefix or as a function of `params`.
    At the first step of the shipped reading ($n_0$ = 128), a
    `(4, 3, 3, 16, 16)` stack read as four `(3, 3, 16, 16)` kernels (width
    144, not 576) steps twice as far as read as one tensor, times the ratio
    of the two readings' multipliers (the kernel floor (K) holds the six
    matrices' kernels at 1, where the three matrices' floor lets the first
    step's multiplier fall a little); every other leaf by that ratio alone."""
    params = {"stem": jnp.ones((3, 3, 1, 16)),
              "stack": jnp.linspace(-1.0, 1.0, 9216).reshape(4, 3, 3, 16, 16),
              "head": {"w": jnp.ones((16, 10)), "b": jnp.zeros(10)}}
    grads = random_like(params, 0)
    spec = {"stem": 0, "stack": 1, "head": 0}
    lopt = mnemosyne.pretrained()
    plain = lopt.update(grads, lopt.init(params), params, backend="numpy")
    stacked = lopt.update(grads, lopt.init(params), params, backend="numpy",
                          stacked_axes=lambda p: spec)
    tx = mnemosyne.mnemosyne(stacked_axes=spec)
    jitted, _ = jit_tx_update(tx, grads, tx.init(params), params)
    assert_allclose_tree(jitted, stacked[0], rtol=2e-5, atol=1e-9)
    is_leaf = lambda x: x is None
    ratio = jax.tree.map(lambda a, b: float(np.exp(a - b)), stacked[1].step_scale,
                         plain[1].step_scale, is_leaf=is_leaf)
    width = {"stem": 1.0, "stack": 2.0, "head": {"w": 1.0, "b": 1.0}}
    expected = jax.tree.map(lambda u, r, w: r * w * np.asarray(u),
                            plain[0], ratio, width)
    assert_allclose_tree(stacked[0], expected, rtol=1e-6, atol=0)
    assert ratio["stack"] > 1.0  # the first step's multiplier fell below 1


def test_stacked_axes_must_be_a_prefix_of_counts_that_fit():
    lopt = mnemosyne.pretrained()
    params = {"stack": jnp.ones((4, 8, 8)), "head": jnp.ones((8, 3))}
    state = lopt.init(params)
    for bad, match in (({"stack": 1}, "prefix of params"),
                       ({"stack": 4, "head": 0}, r"\['stack'\] is 4.*\(4, 8, 8\)"),
                       ({"stack": -1, "head": 0}, r"\['stack'\].*int >= 0"),
                       ({"stack": 1.0, "head": 0}, r"\['stack'\].*int >= 0"),
                       ({"stack": True, "head": 0}, r"\['stack'\].*int >= 0")):
        with pytest.raises(ValueError, match=match):
            lopt.update(params, state, params, stacked_axes=bad)
    unscaled = mnemosyne.reconfigure(lopt, step_width_reference=None)
    with pytest.raises(ValueError, match="stacked_axes.*global_shapes"):
        unscaled.update(params, state, params, stacked_axes=0,  # in shard_map
                        axis_names={"stack": (), "head": ()})


# ----------------------------------------------------------------------------
# Spike guard: a soft floor that only spikes cross (Eq. G)
# ----------------------------------------------------------------------------


def _spike_ratio(g, nu, count, decay):
    """The spike ratio of Eq. (G), $r_t = \\operatorname{rms}(g_t) /
    \\sqrt{\\operatorname{mean}_i \\hat\\nu_{t,i}}$, from the test's own float64
    second moment."""
    sigma = np.sqrt(nu.mean() / (1.0 - decay**count)) + 1e-12
    return np.sqrt(np.mean(np.square(g))) / sigma


@pytest.mark.parametrize("backend", ["jax", "numpy"])
def test_step_spike_guard_lowers_the_multiplier_by_the_spike_ratio(backend):
    """Eq. (G) against a direct computation. Two readings of one θ see the same
    noise: one with the guard $(K, \\lambda, \\mu)$, one whose $K$ no gradient
    crosses. A spike before $\\nu$ has seen $1/(1-\\beta_2)$ gradients changes
    nothing. After that, each tensor's log multiplier (a matrix stepped alone,
    a vector packed with another matrix) is the unguarded one minus
    $\\lambda\\log(r_t/K)$, with $r_t$ its gradient's RMS over the running scale
    computed here; below the soft floor it then recovers by at least $\\mu$ a
    step, and the update is the unadapted one times the multiplier."""
    adaptive, plain = _adaptive_and_plain(rate=0.1, threshold=0.2)
    decay, limit, strength, recovery = 0.99, 3.0, 1.0, 0.01
    read = dict(second_moment_decay=decay, step_scale_range=(0.125, 2.0),
                step_depth_floor=(2.0, 0.5))
    guarded = mnemosyne.reconfigure(
        adaptive, **read, step_spike_guard=(limit, strength, recovery))
    unguarded = mnemosyne.reconfigure(
        adaptive, **read, step_spike_guard=(1e6, strength, recovery))
    plain = mnemosyne.reconfigure(plain, second_moment_decay=decay)
    update = _update_function(backend)
    params = ADAPTED_PARAMS
    state, reference = guarded.init(params), unguarded.init(params)
    nu = {k: np.zeros(np.shape(x)) for k, x in params.items()}
    soft = np.log(0.5)  # two matrices: the floor of Eq. (D) is 1/2
    floored = {}
    for t in range(116):
        g = random_like(params, t, scale=12.0 if t in (50, 110) else 1.0)
        nu = {k: decay * nu[k] + (1 - decay) * np.square(np.asarray(g[k], np.float64))
              for k in params}
        previous = state.step_scale
        u_plain, _ = update(plain, g, state._replace(step_scale=None), params)
        u, state = update(guarded, g, state, params)
        _, reference = update(unguarded, g, reference, params)
        for k in params:
            rho, rho_ref = float(state.step_scale[k]), float(reference.step_scale[k])
            if t <= 100:
                assert rho == pytest.approx(rho_ref, abs=1e-6), (t, k)
            elif t == 110:
                r = _spike_ratio(np.asarray(g[k], np.float64), nu[k], t + 1, decay)
                assert r > 1.2 * limit
                # the spike acts where the agreement left the multiplier at the
                # soft floor (the matrix stepped alone is: checked below)
                at_floor = rho_ref <= soft + 1e-6
                floored[k] = at_floor
                penalty = strength * np.log(r / limit) if at_floor else 0.0
                assert rho == pytest.approx(rho_ref - penalty, abs=1e-5), k
            elif t > 110 and floored[k]:
                assert rho >= min(float(previous[k]) + recovery, soft) - 1e-6, (t, k)
                assert rho < soft, (t, k)
    assert floored["big"], floored
    for k in params:
        np.testing.assert_allclose(
            u[k], np.exp(float(state.step_scale[k])) * np.asarray(u_plain[k]),
            rtol=1e-5, atol=1e-9,
        )


def test_step_spike_guard_must_be_a_limit_a_strength_and_a_recovery():
    key = jax.random.key(0)
    for bad in ((0.0, 1.0, 0.0), (3.0, -1.0, 0.0), (3.0, 1.0, -0.1), (3.0, 1.0), "x"):
        with pytest.raises(ValueError, match="step_spike_guard"):
            mnemosyne.CoordinatewiseMnemosyne(
                step_adaptation=0.1, step_spike_guard=bad, key=key
            )
    lopt = mnemosyne.CoordinatewiseMnemosyne(step_spike_guard=(3, 1, 0), key=key)
    assert lopt.step_spike_guard == (3.0, 1.0, 0.0)



def test_spike_penalty_acts_only_at_the_soft_floor():
    """Eq. (G) in the reference kernel, by hand: above the soft floor $\\ell$ a
    spike changes nothing; at it, the penalty takes the multiplier below; below
    it, the multiplier first recovers by $\\mu$, then pays the penalty; and the
    hard floor $\\ell_0$ bounds it."""
    from mnemosyne.backends import numpy_backend as nb

    rate, a0, mu, low, hard, high = 0.1, 0.05, 0.01, 0.5, 0.125, 2.0
    step = lambda rho, p: float(nb.log_step_scale(
        rho, 0.0, rate, a0, low, high, penalty=p, recovery=mu, hard_low=hard))
    assert step(0.0, 1.0) == pytest.approx(-rate * a0)  # above: no effect
    assert step(np.log(low), 0.0) == pytest.approx(np.log(low))  # (A2)'s clip
    assert step(np.log(low), 0.3) == pytest.approx(np.log(low) - 0.3)
    below = np.log(low) - 0.5
    assert step(below, 0.0) == pytest.approx(below + mu)  # recovers
    assert step(below, 0.3) == pytest.approx(below + mu - 0.3)
    assert step(below, 5.0) == pytest.approx(np.log(hard))
    assert step(np.log(low) - 0.005, 0.0) == pytest.approx(np.log(low))
    assert float(nb.spike_penalty(6.0, 1.0, 10**6, 0.999, 3.0, 0.5)) == pytest.approx(
        0.5 * np.log(2.0))  # r = 6 over a running scale of 1 (bias corrected)
    assert float(nb.spike_penalty(2.0, 1.0, 10**6, 0.999, 3.0, 0.5)) == 0.0
