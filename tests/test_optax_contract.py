"""The optax contract every optimizer in `helpers.OPTIMIZERS` must satisfy.

Compiles dominate: each optimizer's transformation is built once (`_tx`) and
stepped through one jitted function (`_step`) on one parameter template
(`ranked_params`), so most tests share a single compile per optimizer. Checks
that need no numbers (structure, dtypes, keyword arguments) use
`jax.eval_shape`, which traces the whole update without compiling it.
"""

from __future__ import annotations

import collections
import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import OPTIMIZERS, enable_x64, fast_jit, random_like, ranked_params

import mnemosyne
import mnemosyne.baselines

NAMES = sorted(OPTIMIZERS)
LEARNED = [n for n in NAMES if OPTIMIZERS[n].lopt is not None]
TRACES: collections.Counter = collections.Counter()


@functools.cache
def _tx(name: str, wrapper: str = "plain"):
    spec = OPTIMIZERS[name]
    if wrapper == "plain":
        return spec.make()
    if wrapper == "clip":
        return optax.chain(optax.clip_by_global_norm(1.0), spec.make())
    if wrapper == "multisteps":
        return optax.MultiSteps(spec.make(), every_k_schedule=2)
    if wrapper == "inject":
        return optax.inject_hyperparams(spec.alias)(
            learning_rate=0.5, **spec.static_kwargs()
        )
    raise ValueError(wrapper)


@fast_jit
def _step(tx, key, grads, state, params):
    TRACES[key] += 1  # runs only while tracing
    return tx.update(grads, state, params)


def _params():
    return ranked_params(jnp.float32, seed=0)


def _small_params():
    """One leaf: the wrapper tests compile the whole step again, and compile time
    grows with the number of leaves (the kernels are unrolled per leaf)."""
    return {
        "w": jnp.asarray(np.random.default_rng(0).standard_normal((3, 4)), jnp.float32)
    }


def _small_grads(seed, scale=1.0):
    return random_like(_small_params(), seed, scale)


def _grads(seed, scale=1.0):
    g = random_like({k: v for k, v in _params().items() if v is not None}, seed, scale)
    g["none"] = None
    return g


def _arrays(tree):
    return [x for x in jax.tree.leaves(tree)]


def _assert_finite(tree):
    for x in _arrays(tree):
        assert np.all(np.isfinite(np.asarray(x, np.float32)))


@pytest.mark.parametrize("name", NAMES)
def test_finite_and_no_recompilation(name):
    tx = _tx(name)
    params = _params()
    state = tx.init(params)
    for seed in range(3):
        updates, state = _step(tx, (name, "plain"), _grads(seed), state, params)
        _assert_finite(updates)
        assert jax.tree.structure(
            updates, is_leaf=lambda x: x is None
        ) == jax.tree.structure(params, is_leaf=lambda x: x is None)
        assert any(np.any(np.asarray(u) != 0) for u in _arrays(updates))
    assert TRACES[(name, "plain")] == 1


@pytest.mark.parametrize("name", LEARNED)
def test_another_theta_does_not_retrace(name):
    """The one wrapper (`as_gradient_transformation`) holds θ as pytree leaves:
    stepping with another θ of the same structure reuses the compiled step."""
    lopt = OPTIMIZERS[name].lopt()
    other = jax.tree.map(lambda x: x * 1.01 if eqx.is_inexact_array(x) else x, lopt)
    params = _small_params()
    for theta in (lopt, other):
        tx = mnemosyne.as_gradient_transformation(theta)
        _step(tx, (name, "raw"), _small_grads(0), tx.init(params), params)
    assert TRACES[(name, "raw")] == 1


@pytest.mark.parametrize("name", LEARNED)
def test_shared_theta_is_float32_whichever_test_builds_it_first(name):
    """The registry's θ factories are cached and shared by every test of a
    worker process: built first inside an `x64` test, they must not hand
    float64 θ to the rest (the retrace test above then failed, depending on
    which tests pytest-xdist gave the worker first)."""
    build = OPTIMIZERS[name].lopt
    build = getattr(build, "func", build)  # a functools.partial over a cached factory
    with enable_x64():
        lopt = build.__wrapped__(*getattr(OPTIMIZERS[name].lopt, "args", ()))
    dtypes = {x.dtype for x in jax.tree.leaves(lopt) if eqx.is_inexact_array(x)}
    assert dtypes == {jnp.dtype(jnp.float32)}, dtypes


@pytest.mark.parametrize("name", NAMES)
def test_state_structure_and_dtypes_preserved(name):
    """The optax `lax.cond` trick: both branches must have identical types, which
    is what `lax.scan` over updates needs."""
    tx = _tx(name)
    params = _params()
    state = tx.init(params)
    _, new_state = jax.eval_shape(tx.update, _grads(0), state, params)

    def select(pred, a, b):
        return jax.lax.cond(pred, lambda: a, lambda: b)

    jax.eval_shape(select, True, state, new_state)  # raises on any mismatch
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(new_state), strict=False):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
    # and the cond trick does catch a mismatch
    bad = jax.tree.map(
        lambda x: x.astype(jnp.float16) if x.dtype == jnp.float32 else x, state
    )
    if any(x.dtype == jnp.float32 for x in jax.tree.leaves(state)):
        with pytest.raises(TypeError):
            jax.eval_shape(select, True, state, bad)


@pytest.mark.parametrize("name", NAMES)
def test_init_accepts_shape_dtype_struct(name):
    tx = _tx(name)
    params = _params()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    from_abstract = tx.init(abstract)
    from_concrete = tx.init(params)
    assert jax.tree.structure(from_abstract) == jax.tree.structure(from_concrete)
    for a, b in zip(
        jax.tree.leaves(from_abstract), jax.tree.leaves(from_concrete), strict=False
    ):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("name", NAMES)
def test_extra_keyword_arguments_accepted(name):
    tx = _tx(name)
    params = _params()
    state = tx.init(params)
    updates, _ = jax.eval_shape(
        lambda g, s, p: tx.update(g, s, p, loss=1.0, foo=2), _grads(0), state, params
    )
    assert all(u.dtype == jnp.float32 for u in jax.tree.leaves(updates))


@pytest.mark.parametrize("name", NAMES)
def test_chain_with_clipping(name):
    """chain(clip_by_global_norm(1), tx) equals tx on the clipped gradient."""
    params = _small_params()
    grads = _small_grads(1, scale=10.0)  # global norm ~ 35: clipping is active
    norm = optax.tree.norm(grads)
    assert norm > 1.0
    clipped = jax.tree.map(lambda g: g / norm, grads)
    chained = _tx(name, "clip")
    u_chain, _ = _step(chained, (name, "clip"), grads, chained.init(params), params)
    plain = _tx(name)
    u_plain, _ = _step(plain, (name, "small"), clipped, plain.init(params), params)
    for a, b in zip(_arrays(u_chain), _arrays(u_plain), strict=False):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_multisteps(name):
    """MultiSteps(tx, 2): zero update, then tx's update on the mean gradient."""
    params = _small_params()
    g1, g2 = _small_grads(2), _small_grads(3)
    tx = _tx(name, "multisteps")
    state = tx.init(params)
    u1, state = _step(tx, (name, "multisteps"), g1, state, params)
    assert all(np.all(np.asarray(u) == 0) for u in _arrays(u1))
    u2, state = _step(tx, (name, "multisteps"), g2, state, params)
    mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
    plain = _tx(name)
    expected, _ = _step(plain, (name, "small"), mean, plain.init(params), params)
    for a, b in zip(_arrays(u2), _arrays(expected), strict=False):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    _, state = _step(tx, (name, "multisteps"), g1, state, params)
    assert TRACES[(name, "multisteps")] == 1


@pytest.mark.parametrize("name", NAMES)
def test_inject_hyperparams_learning_rate(name):
    """The learning rate is a traced hyperparameter: changing it in the state scales
    the update proportionally, without recompiling."""
    params = _small_params()
    tx = _tx(name, "inject")
    state = tx.init(params)
    assert "learning_rate" in state.hyperparams
    grads = _small_grads(4)
    u_half, _ = _step(tx, (name, "inject"), grads, state, params)
    state_quarter = state._replace(
        hyperparams={
            **state.hyperparams,
            "learning_rate": jnp.asarray(0.125, jnp.float32),
        }
    )
    u_quarter, _ = _step(tx, (name, "inject"), grads, state_quarter, params)
    assert TRACES[(name, "inject")] == 1
    for a, b in zip(_arrays(u_half), _arrays(u_quarter), strict=False):
        np.testing.assert_allclose(
            np.asarray(b), 0.25 * np.asarray(a), rtol=1e-6, atol=1e-12
        )
    nonzero = [np.max(np.abs(np.asarray(a))) for a in _arrays(u_half)]
    assert max(nonzero) > 0


def _zoo():
    mlp = eqx.nn.MLP(2, 1, 2, 1, key=jax.random.key(0))
    return {
        "dict": {"a": jnp.linspace(-1.0, 1.0, 3, dtype=jnp.float32)},
        "list": [jnp.ones((2, 2), jnp.bfloat16), None],
        "tuple": (jnp.asarray(0.5, jnp.float32), jnp.arange(4, dtype=jnp.float16) / 4),
        "mlp": eqx.filter(mlp, eqx.is_inexact_array),
    }


def _zoo_grads(params):
    return jax.tree.map(lambda p: (0.1 * p + 0.3).astype(p.dtype), params)


@pytest.mark.parametrize("name", NAMES)
def test_pytree_kinds_and_dtypes(name):
    """dicts, lists, tuples, an Equinox model, scalars, None leaves; float32 /
    bfloat16 / float16 leaves keep their dtype (traced with eval_shape)."""
    tx = _tx(name)
    params = _zoo()
    state = tx.init(params)
    updates, new_state = jax.eval_shape(tx.update, _zoo_grads(params), state, params)
    is_none = lambda x: x is None
    assert jax.tree.structure(updates, is_leaf=is_none) == jax.tree.structure(
        params, is_leaf=is_none
    )
    for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params), strict=False):
        assert (u.shape, u.dtype) == (p.shape, p.dtype)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)


@pytest.mark.parametrize("name", LEARNED)
def test_pytree_kinds_values_reference_backend(name):
    """The same zoo through the NumPy reference backend: finite, dtype-preserving."""
    lopt = OPTIMIZERS[name].lopt()
    tx = mnemosyne.as_gradient_transformation(lopt, backend="numpy")
    params = _zoo()
    updates, _ = tx.update(_zoo_grads(params), tx.init(params), params)
    for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params), strict=False):
        assert np.asarray(u).dtype == p.dtype and np.asarray(u).shape == p.shape
        assert np.all(np.isfinite(np.asarray(u, np.float32)))
        assert np.any(np.asarray(u, np.float32) != 0)


def _loss_and_grads(params):
    """Ill-conditioned quadratic on every leaf, Rosenbrock on the vector leaf."""
    loss, grads = 0.0, {}
    for _i, (k, p) in enumerate(
        sorted((k, v) for k, v in params.items() if v is not None)
    ):
        p = np.asarray(p, np.float64)
        if k == "vector":
            x = p
            loss += np.sum(10.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
            g = np.zeros_like(x)
            g[:-1] += -40.0 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2 * (1 - x[:-1])
            g[1:] += 20.0 * (x[1:] - x[:-1] ** 2)
        else:
            curvature = np.geomspace(0.1, 10.0, p.size).reshape(p.shape)
            loss += 0.5 * np.sum(curvature * (p - 1.0) ** 2)
            g = curvature * (p - 1.0)
        grads[k] = jnp.asarray(g, jnp.float32)
    grads["none"] = None
    return loss, grads


@pytest.mark.parametrize("name", NAMES)
def test_untrained_optimizer_decreases_loss(name):
    """The untrained head is normalised gradient descent: the loss goes down."""
    tx = _tx(name)
    params = _params()
    params["vector"] = jnp.zeros(5, jnp.float32)
    state = tx.init(params)
    losses = []
    for _ in range(40):
        loss, grads = _loss_and_grads(params)
        losses.append(loss)
        updates, state = _step(tx, (name, "plain"), grads, state, params)
        params = optax.apply_updates(params, updates)
    losses.append(_loss_and_grads(params)[0])
    assert np.isfinite(losses[-1])
    # adam(1e-3) moves each coordinate by <= 0.04 in 40 steps (a few % of the loss);
    # untrained Mnemosyne v2 is momentum on Adam-normalised gradients at 1e-3
    # (so about as fast); the v1-style tensor-wise variant steps 1e-2
    fast = OPTIMIZERS[name].lopt and name != "coordinatewise_mnemosyne"
    assert losses[-1] < (0.95 if fast else 0.99) * losses[0], (losses[0], losses[-1])
    assert np.mean(np.diff(losses) < 0) > 0.8  # decreasing on most steps
    assert TRACES[(name, "plain")] == 1


LEARNING_RATES = {
    "python float": 1.0,
    "numpy float64": np.float64(0.5),
    "float32 array": jnp.asarray(0.5, jnp.float32),  # what inject_hyperparams passes
    "schedule": optax.constant_schedule(0.5),
}


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("backend", ["numpy", "jax"])
@pytest.mark.parametrize("rate", sorted(LEARNING_RATES))
def test_alias_keeps_parameter_dtype(rate, backend, dtype):
    """`mnemosyne(...)` returns updates in each parameter's dtype, whatever the
    learning rate's type and NumPy's or JAX's promotion rules (an explicit cast,
    not a consequence of promotion)."""
    lopt = OPTIMIZERS[LEARNED[0]].lopt()
    tx = mnemosyne.mnemosyne(LEARNING_RATES[rate], lopt=lopt, backend=backend)
    params = {"b": jnp.ones((2, 2), dtype), "none": None}
    updates, _ = tx.update(params, tx.init(params), params)
    assert np.asarray(updates["b"]).dtype == dtype
    assert updates["none"] is None


@pytest.mark.parametrize("rate", sorted(LEARNING_RATES))
def test_lstm_alias_keeps_parameter_dtype(rate):
    lopt = mnemosyne.baselines.LSTMOptimizer(key=jax.random.key(0))
    tx = mnemosyne.baselines.lstm(LEARNING_RATES[rate], lopt=lopt)
    params = {"b": jnp.ones((2, 2), jnp.bfloat16)}
    updates, _ = tx.update(params, tx.init(params), params)
    assert np.asarray(updates["b"]).dtype == jnp.bfloat16


@pytest.mark.parametrize("factory", [mnemosyne.mnemosyne, mnemosyne.baselines.lstm],
                         ids=["mnemosyne", "lstm"])
def test_learning_rate_annotation_is_optax_schedule_type(factory):
    """optax's own test suites decide whether an optimizer accepts schedules by
    reading the annotation, an object (not the string a
    `from __future__ import annotations` module leaves):
    `signature(f).parameters["learning_rate"].annotation in (ScalarOrSchedule,
    Schedule)`."""
    import inspect

    lr_arg = inspect.signature(factory).parameters.get("learning_rate", None)
    assert lr_arg is not None
    assert lr_arg.annotation in (optax.ScalarOrSchedule, optax.Schedule)
