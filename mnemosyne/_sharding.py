"""Running a learned optimizer's update with `jax.shard_map` over a device mesh.

Under plain `jax.jit`, sharded parameters already work: the optimizer is
elementwise apart from a few tensor-level reductions, XLA inserts the
collectives, and the state follows the parameters' sharding (see `init`). This
module is the *explicit* path: the update runs per shard inside `shard_map`,
and the tensor-level statistics (the RMS normalisers of Eq. (F), the
non-finite check) are reduced across the mesh axes each tensor is split over
with `psum`/`pmax`/`pmin`, so every shard computes exactly what a single device
would. The tensor-wise variant pools over whole tensors (its meta-tokens cross
shard boundaries), so for it each tensor is all-gathered, updated, and the
local block kept: correct, but without the memory savings of sharding.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ._lopt import MnemosyneState
from ._memory import MemoryState


def _spec_axes(spec) -> tuple[str, ...]:
    names = []
    for entry in tuple(spec or ()):
        if entry is None:
            continue
        names.extend([entry] if isinstance(entry, str) else list(entry))
    return tuple(names)


def _lead(spec, lead: int):
    return P(*((None,) * lead + tuple(spec or ())))


def state_specs(lopt, state, param_specs):
    """Partition specs for a Mnemosyne state: the memory of each leaf is split
    like the leaf (`lopt.memory_per_coordinate`, the coordinate-wise variant)
    or replicated (the tensor-wise variant's meta-tokens)."""

    def leaf(spec, memory):
        if memory is None:
            return None
        if not lopt.memory_per_coordinate:
            return MemoryState(P(), P())
        second = None if memory.second_moment is None else _lead(spec, 1)
        return MemoryState(_lead(spec, 3), _lead(spec, 2), second)

    is_leaf = lambda x: x is None or isinstance(x, P)
    treedef = jax.tree.structure(param_specs, is_leaf=is_leaf)
    specs = treedef.flatten_up_to(param_specs)
    memories = treedef.flatten_up_to(state.memory)
    memory = treedef.unflatten(
        [leaf(s, m) for s, m in zip(specs, memories, strict=False)]
    )
    step_scale = None  # one replicated scalar per tensor (Eq. A2), if any
    if state.step_scale is not None:
        step_scale = treedef.unflatten([None if m is None else P() for m in memories])
    return MnemosyneState(P(), memory, P(), step_scale)


def _gather(x, spec):
    for axis, entry in enumerate(tuple(spec or ())):
        if entry is not None:
            x = jax.lax.all_gather(x, entry, axis=axis, tiled=True)
    return x


def _local_block(x, spec, local_shape):
    starts = []
    for axis, entry in enumerate(tuple(spec or ())):
        if entry is None:
            starts.append(0)
        else:
            starts.append(jax.lax.axis_index(entry) * local_shape[axis])
    starts += [0] * (x.ndim - len(starts))
    return jax.lax.dynamic_slice(x, starts, local_shape)


def sharded_update(lopt, mesh, param_specs, *, stacked_axes=None) -> Any:
    """`update(grads, state, params) -> (updates, state)` under `jax.shard_map`.

    Args:
        lopt: a Mnemosyne learned optimizer.
        mesh: a `jax.sharding.Mesh`.
        param_specs: a pytree like `params` of `PartitionSpec`s (`None` leaves
            for `None` parameters); grads and updates are split the same way.
        stacked_axes: as in [`mnemosyne.mnemosyne`][]: the leading axes of
            each leaf that index stacked layers (read from global shapes).

    Returns:
        A function to call (typically inside `jax.jit`) with global arrays.
    """
    is_leaf = lambda x: x is None or isinstance(x, P)
    gather = not lopt.memory_per_coordinate  # pools across shards: whole tensors

    def per_shard(global_shapes, lopt, grads, state, params):
        if gather:
            full = lambda tree: jax.tree.map(
                _gather, tree, param_specs, is_leaf=is_leaf
            )
            updates, state = lopt.update(
                full(grads), state, full(params), stacked_axes=stacked_axes
            )
            updates = jax.tree.map(
                lambda u, s, g: _local_block(u, s, g.shape),
                updates,
                param_specs,
                grads,
                is_leaf=is_leaf,
            )
            return updates, state
        axis_names = jax.tree.map(_spec_axes, param_specs, is_leaf=is_leaf)
        return lopt.update(
            grads, state, params, axis_names=axis_names,
            global_shapes=global_shapes, stacked_axes=stacked_axes,
        )

    def update(grads, state, params):
        s_specs = state_specs(lopt, state, param_specs)
        place = lambda tree, specs: jax.tree.map(
            lambda x, s: x if x is None else jax.reshard(x, NamedSharding(mesh, s)),
            tree, specs, is_leaf=is_leaf
        )
        grads, params = place(grads, param_specs), place(params, param_specs)
        state = place(state, s_specs)
        global_shapes = jax.tree.map(lambda g: tuple(g.shape), grads)  # Eq. (N)
        fn = jax.shard_map(
            functools.partial(per_shard, global_shapes),
            mesh=mesh,
            in_specs=(P(), param_specs, s_specs, param_specs),
            out_specs=(param_specs, s_specs),
            # replicated outputs are computed from psum-reduced statistics
            check_vma=False,
        )
        return fn(lopt, grads, state, params)

    return update
