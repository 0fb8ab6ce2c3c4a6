"""Sharded updates on 8 host CPU devices equal the single-device update."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import mnemosyne
from helpers import assert_allclose_tree, coordinatewise, tensorwise

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8, reason="needs XLA_FLAGS=--xla_force_host_platform_device_count=8"
)

# Leaves of several ranks; the split ones divide by 8, the others (10,), (5, 7)
# and the scalar do not and are replicated.
SHAPES_AND_SPECS = {
    "matrix_rows": ((64, 12), P("d", None)),
    "vector": ((24,), P("d")),
    "tensor3": ((8, 5, 3), P("d", None, None)),
    "matrix_cols": ((3, 16), P(None, "d")),
    "odd_vector": ((10,), P()),
    "odd_matrix": ((5, 7), P()),
    "scalar": ((), P()),
}

def _same_spec(sharding, spec, ndim):
    pad = lambda t: tuple(t) + (None,) * (ndim - len(tuple(t)))
    return pad(sharding.spec) == pad(spec)


# float32 sums in a different order across shards: a few ulps of the O(1)
# normalised features, amplified by at most a few exps in the head.
RTOL = 2e-5


def _problem():
    rng = np.random.default_rng(0)
    params = {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, (s, _) in SHAPES_AND_SPECS.items()}
    grads = {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, (s, _) in SHAPES_AND_SPECS.items()}
    specs = {k: spec for k, (_, spec) in SHAPES_AND_SPECS.items()}
    return params, grads, specs


@pytest.fixture(scope="module")
def mesh():
    return jax.make_mesh((8,), ("d",), axis_types=(AxisType.Explicit,))


def _place(tree, specs, mesh):
    return jax.tree.map(lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), tree, specs)


@pytest.mark.parametrize("make", [coordinatewise, tensorwise], ids=["coordinatewise", "tensorwise"])
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
    for k, (_, spec) in SHAPES_AND_SPECS.items():
        assert _same_spec(u2[k].sharding, spec, u2[k].ndim), k


@pytest.mark.parametrize("make", [coordinatewise, tensorwise], ids=["coordinatewise", "tensorwise"])
def test_jit_with_sharded_params_equals_single_device(make, mesh):
    lopt = make()
    params, grads, specs = _problem()
    u1, s1 = jax.jit(lambda g, s, p: lopt.update(g, s, p))(grads, lopt.init(params), params)
    p_sh = _place(params, specs, mesh)
    state = lopt.init(p_sh)
    u2, s2 = jax.jit(lambda g, s, p: lopt.update(g, s, p))(_place(grads, specs, mesh), state, p_sh)
    assert_allclose_tree(u2, u1, rtol=RTOL, atol=1e-7)
    per_coordinate = isinstance(lopt, mnemosyne.CoordinatewiseMnemosyne)
    for k, (shape, spec) in SHAPES_AND_SPECS.items():
        assert _same_spec(u2[k].sharding, spec, u2[k].ndim), k
        if per_coordinate:  # the memory is split like its parameter, after init and update
            want = tuple(P(None, None, None, *spec)) + (None,) * (len(shape) - len(spec))
            for mem in (state.memory[k].numerator, s2.memory[k].numerator):
                got = tuple(mem.sharding.spec) + (None,) * (mem.ndim - len(mem.sharding.spec))
                assert got == want, (k, got, want)
