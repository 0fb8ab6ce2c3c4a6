"""Sharded updates on 8 host CPU devices equal the single-device update."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    SHAPES_AND_SPECS,
    assert_allclose_tree,
    coordinatewise,
    sharded_problem,
    tensorwise,
)
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import mnemosyne

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8,
    reason="needs XLA_FLAGS=--xla_force_host_platform_device_count=8",
)


def _same_spec(sharding, spec, ndim):
    pad = lambda t: tuple(t) + (None,) * (ndim - len(tuple(t)))
    return pad(sharding.spec) == pad(spec)


# float32 sums in a different order across shards: a few ulps of the O(1)
# normalised features, amplified by at most a few exps in the head.
RTOL = 2e-5


def _problem():
    params, grads, specs = sharded_problem()
    return (
        jax.tree.map(jnp.asarray, params), jax.tree.map(jnp.asarray, grads), specs
    )


@pytest.fixture(scope="module")
def mesh():
    return jax.make_mesh((8,), ("d",), axis_types=(AxisType.Explicit,))


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(AxisType.Explicit, id="explicit"),
        # Auto axes: slow, run by .ci/run (the default suite keeps Explicit,
        # `jax.make_mesh`'s default)
        pytest.param(AxisType.Auto, id="auto", marks=pytest.mark.slow),
    ],
)
def any_mesh(request):
    """Explicit axes (`jax.make_mesh`'s default in current JAX: shardings are
    part of the types) and Auto axes (the compiler propagates them)."""
    return jax.make_mesh((8,), ("d",), axis_types=(request.param,))


def _width_scaled():
    """`coordinatewise` with the width scaling (N) at a width every sharded
    matrix exceeds, globally and by block, with different factors."""
    return mnemosyne.reconfigure(coordinatewise(), step_width_reference=2)


def _spike_guarded():
    """`coordinatewise` with the spike guard (G) active from the third step
    ($\\beta_2 = 1/2$) and a limit $K$ = 1/2 that these gradients cross, so
    the ratio's reductions across shards decide the multipliers."""
    return mnemosyne.reconfigure(
        coordinatewise(), second_moment_decay=0.5, step_spike_guard=(0.5, 1.0, 0.01)
    )


# The tensor-wise variant compiles its encoder per leaf (about a minute per
# program on 2 cores): slow, run by .ci/run.
VARIANTS = [
    pytest.param(coordinatewise, id="coordinatewise"),
    pytest.param(_width_scaled, id="width_scaled", marks=pytest.mark.slow),
    pytest.param(_spike_guarded, id="spike_guarded", marks=pytest.mark.slow),
    pytest.param(tensorwise, id="tensorwise", marks=pytest.mark.slow),
]


def _place(tree, specs, mesh):
    return jax.tree.map(
        lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), tree, specs
    )


@pytest.mark.slow  # (the docs' sharded example checks it too) run by .ci/run
@pytest.mark.parametrize("make", VARIANTS)
def test_shard_map_update_equals_single_device(make, mesh):
    lopt = make()
    params, grads, specs = _problem()
    state = lopt.init(params)
    step = jax.jit(lambda g, s, p: lopt.update(g, s, p))
    sharded = jax.jit(mnemosyne.sharded_update(lopt, mesh, specs))
    g_sh, p_sh = _place(grads, specs, mesh), _place(params, specs, mesh)
    s1, s2 = state, state
    for _ in range(3):
        u1, s1 = step(grads, s1, params)
        u2, s2 = sharded(g_sh, s2, p_sh)
    assert_allclose_tree(u2, u1, rtol=RTOL, atol=1e-7)
    assert_allclose_tree(s2.memory, s1.memory, rtol=RTOL, atol=1e-6)
    assert_allclose_tree(s2.step_scale, s1.step_scale, rtol=RTOL, atol=1e-7)
    for k, (_, spec) in SHAPES_AND_SPECS.items():
        assert _same_spec(u2[k].sharding, spec, u2[k].ndim), k


@pytest.mark.slow  # compiles two more shard_map programs: run by .ci/run
def test_shard_map_update_reads_stacked_layers_from_global_shapes(mesh):
    """`sharded_update(..., stacked_axes=...)` equals the single-device step
    with them: the `(8, 5, 3)` leaf split over its first axis reads as 8
    stacked `(5, 3)` layers from its global shape, not as its block's one
    layer. Its width factor (N) is $\\sqrt{5}$ times that of the whole
    `(8, 5, 3)` tensor, and after ten gradients of alternating sign its
    multiplier sits below the floor (D) of the four-matrix reading, ½: the
    model has 11 layers."""
    lopt = mnemosyne.reconfigure(_width_scaled(), step_depth_floor=(2.0, 0.5))
    params, grads, specs = _problem()
    stacked_axes = {k: int(k == "tensor3") for k in params}
    step = jax.jit(lambda g, s, p: lopt.update(g, s, p, stacked_axes=stacked_axes))
    whole = jax.jit(lambda g, s, p: lopt.update(g, s, p))
    sharded = jax.jit(mnemosyne.sharded_update(lopt, mesh, specs,
                                               stacked_axes=stacked_axes))
    p_sh = _place(params, specs, mesh)
    s1 = s2 = s3 = lopt.init(params)
    for t in range(10):
        g = jax.tree.map(lambda x, t=t: x * (-1.0) ** t, grads)
        u1, s1 = step(g, s1, params)
        u2, s2 = sharded(_place(g, specs, mesh), s2, p_sh)
        u3, s3 = whole(g, s3, params)
    assert_allclose_tree(u2, u1, rtol=RTOL, atol=1e-7)
    assert_allclose_tree(s2.step_scale, s1.step_scale, rtol=RTOL, atol=1e-7)
    rho_stacked, rho_whole = (float(s.step_scale["tensor3"]) for s in (s1, s3))
    assert np.exp(rho_whole) == pytest.approx(0.5) and np.exp(rho_stacked) < 0.48
    ratio = jnp.asarray(u1["tensor3"]) / jnp.asarray(u3["tensor3"])
    want = np.sqrt(15 / 3) * np.exp(rho_stacked - rho_whole)
    assert float(jnp.median(ratio)) == pytest.approx(want, rel=1e-4)


@functools.cache
def _single_device_update(make):
    tx = mnemosyne.scale_by_mnemosyne(make())
    params, grads, _ = _problem()
    return jax.device_get(jax.jit(tx.update)(grads, tx.init(params), params)[0])


def _explicit(mesh) -> bool:
    return AxisType.Explicit in tuple(mesh.axis_types)


def _assert_same_placement(got, want, what):
    """Same structure, and per leaf the same type (shardings included, under
    Explicit axes) and an equivalent sharding."""
    assert jax.tree.structure(got) == jax.tree.structure(want), what
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=False):
        assert jax.typeof(a) == jax.typeof(b), (what, jax.typeof(a), jax.typeof(b))
        assert a.sharding.is_equivalent_to(b.sharding, a.ndim), (
            what,
            a.sharding,
            b.sharding,
        )


# a jitted init compiles one more program per variant: slow, run by .ci/run
@pytest.mark.parametrize(
    "init", ["eager", pytest.param("jit", marks=pytest.mark.slow)]
)
@pytest.mark.parametrize("make", VARIANTS)
def test_jit_with_sharded_params_equals_single_device(make, init, any_mesh):
    """With parameters sharded on an Explicit or Auto mesh, `init` and the
    jitted `update` give states with identical structure, shapes, dtypes and
    shardings (the sharding in the type, under Explicit axes), so a
    `lax.scan` (and the skip conditional inside `update`) can carry the state;
    the update equals the single-device one. `init` runs eagerly (no mesh
    context), or under `jit` inside `jax.set_mesh` (the only way a jitted init
    can place arrays on a mesh: JAX refuses it otherwise, for optax's own
    optimizers too)."""
    mesh = any_mesh
    if init == "jit" and not _explicit(mesh):
        pytest.skip(
            "under Auto axes a traced init cannot see the parameters' shardings"
        )
    lopt = make()
    tx = mnemosyne.scale_by_mnemosyne(lopt)
    params, grads, specs = _problem()
    expected = _single_device_update(make)
    p_sh, g_sh = _place(params, specs, mesh), _place(grads, specs, mesh)
    if init == "eager":  # no mesh context needed
        state = tx.init(p_sh)
    else:
        with jax.set_mesh(mesh):
            state = jax.jit(tx.init)(p_sh)
    for k, (
        shape,
        spec,
    ) in SHAPES_AND_SPECS.items():  # the memory is placed like its leaf
        want = spec if isinstance(lopt, mnemosyne.CoordinatewiseMnemosyne) else P()
        for mem in jax.tree.leaves(state.memory[k]):  # (a None field has no leaf)
            assert _same_spec(
                mem.sharding, P(*(None,) * (mem.ndim - len(shape)), *want), mem.ndim
            ), k

    updates, new_state = jax.jit(tx.update)(g_sh, state, p_sh)
    assert_allclose_tree(updates, expected, rtol=RTOL, atol=1e-7)
    _assert_same_placement(new_state, state, "state after update")
    if isinstance(lopt, mnemosyne.CoordinatewiseMnemosyne) or _explicit(mesh):
        # (Auto: the compiler places the tensor-wise step, computed from whole tensors)
        for k, (_, spec) in SHAPES_AND_SPECS.items():
            assert _same_spec(updates[k].sharding, spec, updates[k].ndim), k

    if _explicit(mesh):  # (Auto axes keep shardings out of the types: nothing to check)
        def two_steps(grads, params, state):
            def body(state, _):
                return tx.update(grads, state, params)[1], None
            return jax.lax.scan(body, state, None, length=2)[0]

        _assert_same_placement(
            jax.jit(two_steps)(g_sh, p_sh, state), state, "state after scan"
        )
