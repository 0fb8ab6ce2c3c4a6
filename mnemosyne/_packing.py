"""Pytree orchestration of a Mnemosyne step: small leaves packed into one
vector, the dtype each step is computed in, and the non-finite check.

`AbstractMnemosyne.update` works leaf by leaf; a coordinate-wise optimizer
packs the leaves of at most `PACK_MAX_SIZE` entries into one vector per dtype
(`Pack`), so the traced program does not grow with the number of small
leaves, and unpacks the result (`Pack.unpack`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ._checks import compute_dtype
from ._memory import MemoryState

PACK_MAX_SIZE = 4096  # leaves up to this size are updated packed together


def cast_leaf(grad, param, memory: MemoryState, B):
    """A leaf's gradient, parameter and memory in the dtype its step is computed in."""
    dtype = step_dtype(grad.dtype, memory.numerator.dtype)
    return B.asarray(grad, dtype), B.asarray(param, dtype), as_dtype(memory, dtype, B)


class TensorStatistics(NamedTuple):
    """Per-tensor statistics of one leaf, or of the tensors packed in a `Pack`:
    the gradient's and the parameter's RMS (scalars, or one per packed
    coordinate); `mean_of(y)`, the mean of another array of the same layout
    over the same tensors (collectives under `shard_map`, segments in a pack),
    broadcast like `g_rms`; `sum_of(y)`, its sum over each tensor (a scalar,
    or one per packed tensor: not broadcast); `g_hat_square_sum`, the sum
    of $\\hat g^2 = (g / \\operatorname{rms}(g))^2$ over each tensor, laid
    out like `sum_of`: the tensor's size, or 0 where the gradient is all zero
    (exact: $\\hat g$ has unit RMS, so it costs no pass over the tensor);
    and `per_tensor(y)`, which takes a per-tensor value laid out like
    `g_rms` (in a pack, repeated over each tensor's coordinates) to the
    layout of `sum_of` (one entry per tensor)."""

    g_rms: Array
    x_rms: Array
    mean_of: Callable[[Array], Array]
    sum_of: Callable[[Array], Array]
    g_hat_square_sum: Array
    per_tensor: Callable[[Array], Array]

    @classmethod
    def of_leaf(cls, grad, param, B, axis_names=None) -> TensorStatistics:
        g_rms = B.tensor_rms(grad, axis_names)
        size = B.tensor_size(grad, axis_names)
        return cls(
            g_rms,
            B.tensor_rms(param, axis_names),
            lambda y: B.tensor_mean(y, axis_names),
            lambda y: B.tensor_sum(y, axis_names),
            B.xp.where(g_rms > 0, size, 0.0),
            lambda y: y,
        )


class Pack(NamedTuple):
    """Small tensors of one dtype as one vector (see `AbstractMnemosyne._step_leaves`):
    gradients, parameters and memory packed along the coordinate axis, in the
    compute dtype, with each tensor's RMS computed by segment."""

    grad: Array
    param: Array
    memory: MemoryState
    g_rms: Array  # one per tensor
    x_rms: Array
    segments: np.ndarray  # tensor index of each packed coordinate
    shapes: tuple
    dtypes: tuple
    store: Any  # the memory's storage dtype

    def statistics(self, B) -> TensorStatistics:
        """The packed tensors' statistics, one value per coordinate (sums:
        one per tensor)."""
        count = len(self.g_rms)
        sizes = np.bincount(self.segments, minlength=count).astype(np.float64)
        return TensorStatistics(
            self.g_rms[self.segments],
            self.x_rms[self.segments],
            lambda y: B.segment_mean(y, self.segments, count)[self.segments],
            lambda y: B.segment_sum(y, self.segments, count),
            B.xp.where(self.g_rms > 0, B.asarray(sizes, self.g_rms.dtype), 0.0),
            lambda y: self._first_of_each_tensor(y, count, B),
        )

    def _first_of_each_tensor(self, y, count, B):
        """`y` (one value per packed coordinate) at each tensor's first
        coordinate: one entry per tensor. A zero-size tensor has no coordinate
        and takes its neighbour's entry (nothing of it is updated); a pack of
        zero-size tensors gives zeros."""
        if len(self.segments) == 0:
            return B.xp.zeros(count, y.dtype)
        starts = np.searchsorted(self.segments, np.arange(count))
        return y[np.minimum(starts, len(self.segments) - 1)]

    @classmethod
    def of(cls, grads, params, memories, B) -> Pack:
        store = memories[0].numerator.dtype
        dtype = step_dtype(grads[0].dtype, store)
        sizes = [int(np.prod(g.shape)) for g in grads]
        pack = lambda xs, lead: B.xp.concatenate(
            [
                B.asarray(x, dtype).reshape(x.shape[:lead] + (n,))
                for x, n in zip(xs, sizes, strict=False)
            ],
            axis=lead,
        )
        grad, param = pack(grads, 0), pack(params, 0)
        segments = np.repeat(np.arange(len(sizes)), sizes)
        second = memories[0].second_moment
        return cls(
            grad,
            param,
            MemoryState(
                pack([m.numerator for m in memories], 3),
                pack([m.normaliser for m in memories], 2),
                None
                if second is None
                else pack([m.second_moment for m in memories], 1),
            ),
            B.segment_rms(grad, segments, len(sizes)),
            B.segment_rms(param, segments, len(sizes)),
            segments,
            tuple(g.shape for g in grads),
            tuple(g.dtype for g in grads),
            store,
        )

    def unpack(
        self, update, memory: MemoryState, finite, skip_nonfinite: bool, B
    ) -> list:
        """Each tensor's `(update, memory)`, in its own shape and dtypes; if
        `skip_nonfinite` and not `finite`, zero updates and the old memory.

        In two levels, through conditionals on `finite`, whose outputs XLA
        must materialise: the packed vectors into about sqrt(#tensors) chunks,
        each chunk into its tensors. Slicing every tensor straight out of the
        packed step makes XLA copy the whole step into each slice, and many
        slices of one buffer compile superlinearly (10^3 scalar leaves: 195 s
        to compile before, 3000 slices of one buffer 48 s flat vs 4 s in two
        levels, measured on 2 CPU cores).
        """
        count = len(self.shapes)
        sizes = [int(np.prod(shape)) for shape in self.shapes]
        bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        per_chunk = max(1, int(np.ceil(np.sqrt(count))))
        outputs = []
        for first in range(0, count, per_chunk):
            last = min(first + per_chunk, count)
            lo, hi = bounds[first], bounds[last]
            def take(u, m, lo=lo, hi=hi):
                return u[lo:hi], map_memory(lambda x: x[..., lo:hi], m)

            kept = lambda take=take: take(update, memory)
            dropped = lambda take=take: take(B.xp.zeros_like(update), self.memory)
            chunk_update, chunk_memory = B.cond(
                finite, kept, dropped if skip_nonfinite else kept
            )
            for k in range(first, last):
                a, b, shape = bounds[k] - lo, bounds[k + 1] - lo, self.shapes[k]
                def piece(x, lead, a=a, b=b, shape=shape):
                    return x[..., a:b].reshape(x.shape[:lead] + shape)

                outputs.append((
                    piece(chunk_update, 0).astype(self.dtypes[k]),
                    as_dtype(map_memory(lambda m: piece(m, m.ndim - 1), chunk_memory),
                              self.store, B),
                ))
        return outputs


def cast_theta(lopt, backend):
    """θ in the backend's arrays (`backend.asarray`): float64 NumPy for the
    reference; unchanged for JAX."""
    return jax.tree.map(lambda a: backend.asarray(a) if eqx.is_array(a) else a, lopt)


def all_finite(grad_rms, B, axis_names):
    """Whether every gradient is finite, i.e. every tensor's (overflow-safe)
    gradient RMS is: one reduction over all of them (a chain of `&`s would be
    copied into every per-leaf select by XLA: compile time quadratic in the
    leaf count). Under `shard_map`, agreed across the mesh axes in use."""
    if not grad_rms:
        return B.xp.asarray(True)
    flat = [B.xp.reshape(B.asarray(r), (-1,)) for r in grad_rms]
    finite = B.xp.all(B.xp.isfinite(B.xp.concatenate(flat)))
    # mesh axes exist only under `shard_map` (the JAX backend)
    names = tuple(
        sorted({n for a in jax.tree.leaves(axis_names) for n in _as_tuple(a)})
    )
    if names:
        finite = jax.lax.pmin(finite.astype(jnp.int32), names).astype(bool)
    return finite


def _as_tuple(a):
    if a is None:
        return ()
    return (a,) if isinstance(a, str) else tuple(a)


def step_dtype(grad_dtype, memory_dtype):
    """The dtype a step is computed in: at least float32, and at least the
    precision of the stored memory."""
    return np.dtype(jnp.promote_types(compute_dtype(grad_dtype), memory_dtype))


def as_dtype(memory: MemoryState, dtype, B) -> MemoryState:
    """The memory in the state's dtype (the float64 NumPy reference computes in
    float64 but keeps the state's dtype stable across steps, as JAX does)."""
    return map_memory(lambda a: B.asarray(a, dtype), memory)


def map_memory(fn, memory: MemoryState) -> MemoryState:
    """`fn` applied to each array of a leaf's memory (`None` fields stay `None`)."""
    return MemoryState(*(None if a is None else fn(a) for a in memory))
