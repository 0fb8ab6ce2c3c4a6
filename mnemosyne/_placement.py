"""Where the optimizer state lives on a device mesh: the state follows the parameters.

Two kinds of mesh axes (`jax.sharding.AxisType`) behave differently:

- **Explicit** (what `jax.make_mesh` gives by default in current JAX): an
  array's sharding is part of its *type* (`float32[64@x,12]`), also inside
  `jit`. Both branches of a `lax.cond`, and the carry of a `lax.scan`, must
  have equal types, shardings included. So every array the optimizer returns
  is given, explicitly, the sharding type its counterpart had: the new memory
  that of the old memory, an update that of its gradient.
- **Auto**: shardings are not in the types; inside `jit` the compiler
  propagates them. Concrete parameters tell `init` where to place the memory;
  traced ones (`jax.jit(init)`) do not, and the compiler chooses.

Policy: a leaf's memory is split like the leaf when it has one slot per
coordinate, and replicated on the leaf's mesh otherwise; the step counters are
replicated on the parameters' mesh.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def _padded(spec, ndim: int) -> tuple:
    spec = tuple(spec)
    return spec + (None,) * (ndim - len(spec))


def _is_explicit(mesh) -> bool:
    types = getattr(mesh, "axis_types", ()) or ()
    return any(t == jax.sharding.AxisType.Explicit for t in types)


def _is_auto(mesh) -> bool:
    types = getattr(mesh, "axis_types", ()) or ()
    return any(t == jax.sharding.AxisType.Auto for t in types)


def _typed_sharding(x):
    """The sharding in `x`'s type (a `NamedSharding`, possibly on an abstract
    mesh), or `None`."""
    if not isinstance(x, jax.Array):
        return None
    sharding = getattr(jax.typeof(x), "sharding", None)
    return sharding if isinstance(sharding, NamedSharding) else None


def param_sharding(param) -> NamedSharding | None:
    """Where `param` lives, if it says: a concrete array's `NamedSharding`, or,
    for a traced one, the sharding in its type under Explicit axes."""
    if isinstance(
        param, jax.core.Tracer
    ):  # (and first: `.sharding` of a tracer is slow)
        sharding = _typed_sharding(param)
        if sharding is None or not _is_explicit(sharding.mesh):
            return None
        return sharding
    sharding = getattr(param, "sharding", None)
    return sharding if isinstance(sharding, NamedSharding) else None


def follow_sharding(state: Any, param, per_coordinate: bool) -> Any:
    """Place a leaf's memory like the leaf: split the same way when the memory
    has one slot per coordinate (its trailing axes are the leaf's), replicated
    on the same mesh otherwise."""
    sharding = param_sharding(param)
    if sharding is None:
        return state
    no_mesh_context = getattr(jax.sharding.get_abstract_mesh(), "empty", True)
    if isinstance(param, jax.core.Tracer) and no_mesh_context:
        # `jax.jit(init)` outside `jax.set_mesh`: the zeros do not depend on the
        # parameters' values, so the program runs on one device and cannot place
        # them on the mesh; `update` then keeps the state's types as they are.
        return state
    spec = _padded(sharding.spec, len(param.shape))

    def place(x):
        lead = x.ndim - len(param.shape)
        s = P(*((None,) * lead + spec)) if per_coordinate else P()
        target = NamedSharding(sharding.mesh, s)
        if isinstance(param, jax.core.Tracer):
            return jax.reshard(x, target)
        return jax.device_put(x, target)

    return jax.tree.map(place, state)


def replicate_like_params(x, params) -> Any:
    """`x` (e.g. a step counter) replicated on the mesh of the first parameter
    that lives on one, as `jit` returns such values; unchanged otherwise."""
    for leaf in jax.tree.leaves(params):
        if isinstance(leaf, jax.core.Tracer):
            return x  # inside `jit`, which returns it replicated on the mesh already
        sharding = param_sharding(leaf)
        if sharding is not None:
            return jax.device_put(x, NamedSharding(sharding.mesh, P()))
    return x


def place_step(update, new_memory, grad, memory, per_coordinate: bool):
    """A leaf's update and new memory placed as its gradient and old memory
    are (see `match_sharding`); under Auto axes, a memory that is not per
    coordinate is constrained to stay replicated, as `init` placed it (the
    compiler would otherwise split it along its meta-tokens)."""
    update, new_memory = match_sharding((update, new_memory), (grad, memory))
    if not per_coordinate:
        new_memory = jax.tree.map(_replicated_on_auto_mesh, new_memory)
    return update, new_memory


def _replicated_on_auto_mesh(x):
    sharding = _typed_sharding(x)
    if sharding is None or not _is_auto(sharding.mesh):
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(sharding.mesh, P()))


def match_sharding(new: Any, old: Any) -> Any:
    """`new` (a pytree like `old`) with the sharding type of `old`, leaf by
    leaf, where the two differ under Explicit axes: the new memory gets the old
    memory's type, so the skip conditional's branches, and the states of `init`
    and `update`, have equal types. Leaves that are not JAX arrays, and Auto
    axes, are left to the compiler."""

    def one(n, o):
        have, want = _typed_sharding(n), _typed_sharding(o)
        if have is None or want is None:
            return n
        if not (_is_explicit(have.mesh) or _is_explicit(want.mesh)):
            return n
        if _padded(have.spec, n.ndim) == _padded(want.spec, o.ndim):
            return n
        mesh = have.mesh if getattr(want.mesh, "empty", False) else want.mesh
        return jax.reshard(n, NamedSharding(mesh, P(*_padded(want.spec, o.ndim))))

    return jax.tree.map(one, new, old)


def is_split(x) -> bool:
    """Whether `x` is split across devices of an Explicit-axes mesh."""
    sharding = _typed_sharding(x)
    return sharding is not None and any(s is not None for s in sharding.spec)


def may_be_split(x) -> bool:
    """Whether `x` is, or may be, split across devices: split in its type
    (Explicit axes), or on a mesh of Auto axes, whose types do not say."""
    sharding = _typed_sharding(x)
    if sharding is None:
        return False
    return any(s is not None for s in sharding.spec) or _is_auto(sharding.mesh)


def replicate_explicit(*arrays):
    """Under an Explicit-axes mesh, gather tensors split across devices (the
    encoder pools over a whole tensor); return them and the original sharding
    (`None` if they were not split)."""
    sharding = _typed_sharding(arrays[0])
    if sharding is None or all(s is None for s in sharding.spec):
        return arrays, None
    replicated = NamedSharding(sharding.mesh, P())
    return tuple(jax.reshard(a, replicated) for a in arrays), NamedSharding(
        sharding.mesh, sharding.spec
    )
