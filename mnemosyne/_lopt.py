"""Mnemosyne learned optimizers: coordinate-wise and tensor-wise."""

from __future__ import annotations

import abc
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Float

from ._checks import check_state_like, check_update_inputs, compute_dtype, leaf_shape_dtype
from ._encoder import HierarchicalPoolingEncoder
from ._lopt_base import AbstractLearnedOptimizer
from ._serialisation import freeze_config, register_serialisable
from ._memory import CompactAssociativeMemory, MemoryState
from ._types import OptState, Params, PRNGKeyArray, Updates
from .backends import get_backend

NUM_COORDINATE_FEATURES = 4  # clip(g^), log|g^|/p, sign-ish(g^), clip(x^)
PACK_MAX_SIZE = 4096  # leaves up to this size are updated packed together


class MnemosyneState(NamedTuple):
    """State of a Mnemosyne optimizer.

    Attributes:
        step: number of updates applied (skipped steps excluded), int32 scalar.
        memory: a pytree like `params` with one [`MemoryState`][mnemosyne.MemoryState]
            per array leaf (`None` for `None` leaves).
        skipped: number of steps skipped because a gradient was not finite.
    """

    step: Array
    memory: Any
    skipped: Array


class LearnedStepHead(eqx.Module):
    """The head (H): a small MLP with a linear skip path, then the output (O).

    With head inputs $u$ (the coordinate's features and its memory read-out):
    $$[d, s] = W_2\\,\\mathrm{relu}(W_1 u + b_1) + U u + b_2,\\qquad
      \\text{step} = \\alpha\\, d\\, \\exp(\\beta\\, c \\tanh(s / c)).$$
    Initialised with $U$ selecting the clipped normalised gradient for $d$ and
    small $W_2$, so the untrained optimizer is normalised gradient descent with
    step $\\alpha$: small and sane.
    """

    w1: Float[Array, "hidden inputs"]
    b1: Float[Array, " hidden"]
    w2: Float[Array, "2 hidden"]
    skip: Float[Array, "2 inputs"]
    b2: Float[Array, " 2"]
    alpha: float = eqx.field(static=True)
    beta: float = eqx.field(static=True)
    magnitude_clip: float = eqx.field(static=True)

    def __init__(self, num_inputs, hidden_size, *, alpha, beta, magnitude_clip=4.0, key):
        k1, k2 = jax.random.split(key)
        self.w1 = jax.random.normal(k1, (hidden_size, num_inputs)) / np.sqrt(num_inputs)
        self.b1 = jnp.zeros(hidden_size)
        self.w2 = 0.01 * jax.random.normal(k2, (2, hidden_size)) / np.sqrt(hidden_size)
        self.skip = jnp.zeros((2, num_inputs)).at[0, 0].set(1.0)
        self.b2 = jnp.zeros(2)
        self.alpha, self.beta, self.magnitude_clip = alpha, beta, magnitude_clip

    def __call__(self, coordinate, shared, read, backend):
        """Step for each coordinate from its features `(4, ...)`, the shared
        step embedding `(S,)` and its memory read-out `(H d_v, ...)`. The head
        input is $u = [f, e, o]$; $e$ is the same for every coordinate, so its
        columns are folded into the biases."""
        B = backend
        start = len(coordinate)
        inputs = B.concat_rows(coordinate, read)
        w1, b1 = fold_shared_inputs(self.w1, self.b1, shared, start, B)
        skip, b2 = fold_shared_inputs(self.skip, self.b2, shared, start, B)
        hidden = [B.relu(h) for h in B.dense(w1, b1, inputs)]
        w_out = B.xp.concatenate([self.w2, skip], axis=1)  # [W_2 | U] on [hidden; u]
        out = B.dense(w_out, b2, B.concat_rows(hidden, inputs))
        return B.learned_step(out[0], out[1], self.alpha, self.beta, self.magnitude_clip)


def fold_shared_inputs(weight, bias, shared, start, backend):
    """Split off the columns `start : start + len(shared)` of an affine map whose
    inputs there are the same for every coordinate:
    $W u + b = W_{\\setminus} u_{\\setminus} + (b + W_{:, e}\\, e)$."""
    xp = backend.xp
    stop = start + shared.shape[0]
    rest = xp.concatenate([weight[:, :start], weight[:, stop:]], axis=1)
    return rest, bias + weight[:, start:stop] @ shared


class AbstractMnemosyne(AbstractLearnedOptimizer):
    """What both Mnemosyne variants share: the features (F), the token embedding,
    the compact associative memory, the head, and the pytree-level `update`.

    Subclasses say how one tensor's features become memory slots
    (`_memory_slots`, `_leaf_step`).
    """

    embed_w: eqx.AbstractVar[Array]
    embed_b: eqx.AbstractVar[Array]
    memory: eqx.AbstractVar[CompactAssociativeMemory]
    head: eqx.AbstractVar[LearnedStepHead]
    step_timescales: eqx.AbstractVar[tuple[float, ...]]
    feature_clip: eqx.AbstractVar[float]
    skip_nonfinite: eqx.AbstractVar[bool]
    packs_small_leaves: eqx.AbstractClassVar[bool]

    @abc.abstractmethod
    def _memory_slots(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Slot shape of the memory for a parameter of this shape."""

    @abc.abstractmethod
    def _leaf_step(self, grad, param, memory: MemoryState, step, backend, axis_names, rms=None):
        """`(update, new memory, gradient RMS)` for one tensor (compute dtype);
        `rms` as in `features`."""

    def state_floats_per_parameter(self, params: Params) -> float:
        """Optimizer-state floats per parameter for `params` (memory only; the
        two int32 scalars `step` and `skipped` are not counted)."""
        leaves = [x for x in jax.tree.leaves(params) if hasattr(x, "shape")]
        n = sum(int(np.prod(x.shape)) for x in leaves)
        per_slot = self.memory.floats_per_slot()
        slots = sum(int(np.prod(self._memory_slots(tuple(x.shape)))) for x in leaves)
        return per_slot * slots / max(n, 1)

    def features(self, grad, param, step, backend, axis_names=None, rms=None):
        """Features (F): per-coordinate `(4, *shape)`, the shared step embedding
        `(S,)`, and the gradient's RMS (non-finite iff the gradient is).

        `rms = (g_rms, x_rms)`, if given, are precomputed tensor RMS values
        (scalars, or per-coordinate vectors for packed small tensors)."""
        B = backend
        if rms is None:
            rms = (B.tensor_rms(grad, axis_names), B.tensor_rms(param, axis_names))
        g_rms, x_rms = rms
        coordinate = B.coordinate_features(grad, param, g_rms, x_rms, self.feature_clip)
        shared = B.step_embedding(step, self.step_timescales, grad.dtype)
        return coordinate, shared, g_rms

    def init(self, params: Params, *, memory_dtype: Any = None) -> MnemosyneState:
        """Empty memory for `params`.

        Args:
            params: the parameters (arrays or `jax.ShapeDtypeStruct`s).
            memory_dtype: dtype to *store* the memory in, e.g. `jnp.bfloat16`
                to halve its footprint and traffic (like `mu_dtype` in
                `optax.adam`); the step is still computed in float32 (float64
                for float64 parameters). Default: that compute dtype.
        """
        if memory_dtype is not None and not jnp.issubdtype(memory_dtype, jnp.floating):
            raise TypeError(f"memory_dtype must be a floating dtype, got {memory_dtype!r}")

        def leaf_state(p):
            if p is None:
                return None
            shape, dtype = leaf_shape_dtype(p)
            store = compute_dtype(dtype) if memory_dtype is None else np.dtype(memory_dtype)
            state = self.memory.init_state(self._memory_slots(shape), store)
            return _follow_sharding(state, p, self._memory_slots(shape) == shape)

        memory = jax.tree.map(leaf_state, params, is_leaf=lambda x: x is None)
        zero = jnp.zeros((), jnp.int32)
        return MnemosyneState(step=zero, memory=memory, skipped=zero)

    def update(
        self,
        grads: Updates,
        state: OptState,
        params: Params | None = None,
        *,
        backend: str = "jax",
        axis_names: Any = None,
        **extra_args: Any,
    ) -> tuple[Updates, MnemosyneState]:
        """One optimizer step on a pytree.

        Args:
            grads: gradients, a pytree like `params`.
            state: from `init` or a previous `update`.
            params: the current parameters (required: the features read them).
            backend: `"jax"` (jittable) or `"numpy"` (the float64 reference).
            axis_names: inside `shard_map` only: a pytree like `params` giving,
                per leaf, the mesh axes it is split over (see
                [`mnemosyne.sharded_update`][]).
            **extra_args: accepted and ignored (optax convention).

        Returns:
            `(updates, new_state)`, with `params + updates` the new parameters.
            If any gradient is NaN or infinite (and `skip_nonfinite`), the step is
            skipped: zero updates, memory unchanged, `skipped` incremented.
        """
        del extra_args
        check_update_inputs(grads, state, params)
        expected = jax.eval_shape(self.init, params)
        check_state_like(state.memory, expected.memory, "state.memory", dtypes=False)
        B = get_backend(backend)
        theta = _cast_theta(self, B)
        treedef = jax.tree.structure(grads, is_leaf=lambda x: x is None)
        g_leaves = treedef.flatten_up_to(grads)
        p_leaves = treedef.flatten_up_to(params)
        m_leaves = treedef.flatten_up_to(state.memory)
        a_leaves = (
            [None] * len(g_leaves) if axis_names is None else treedef.flatten_up_to(axis_names)
        )
        step = state.step
        outputs = theta._step_leaves(g_leaves, p_leaves, m_leaves, a_leaves, step, B)
        updates = [None if o is None else o[0] for o in outputs]
        memory = [None if o is None else o[1] for o in outputs]
        grad_rms = [o[2] for o in outputs if o is not None]
        new_state = MnemosyneState(step + 1, treedef.unflatten(memory), state.skipped)
        updates = treedef.unflatten(updates)
        if theta.skip_nonfinite:
            updates, new_state = _skip_if_nonfinite(grad_rms, updates, new_state, state, B, axis_names)
        return updates, new_state

    def _step_leaves(self, g_leaves, p_leaves, m_leaves, a_leaves, step, B):
        """`(update, memory, grad RMS)` per leaf (`None` for `None` leaves).

        When the optimizer treats coordinates independently (`packs_small_leaves`),
        leaves of at most `PACK_MAX_SIZE` entries are packed into one vector per
        dtype and updated together, with per-tensor statistics computed by
        segment: identical results, but the traced program (and its compile
        time) no longer grows with the number of small leaves (biases, norms,
        scalars).
        """
        outputs: list = [None] * len(g_leaves)
        groups: dict = {}
        for i, (g, p, m, a) in enumerate(zip(g_leaves, p_leaves, m_leaves, a_leaves)):
            if g is None:
                continue
            packable = a is None and g.size <= PACK_MAX_SIZE and not _is_split(g)
            if self.packs_small_leaves and packable:
                groups.setdefault((np.dtype(g.dtype), m.numerator.dtype), []).append(i)
            else:
                outputs[i] = self._leaf_step_cast(g, p, m, step, B, a)
        for members in groups.values():
            packed = self._packed_step(
                [g_leaves[i] for i in members], [p_leaves[i] for i in members],
                [m_leaves[i] for i in members], step, B,
            )
            for i, out in zip(members, packed):
                outputs[i] = out
        return outputs

    def _packed_step(self, grads, params, memories, step, B):
        """Update several small tensors as one vector (see `_step_leaves`)."""
        store = memories[0].numerator.dtype
        dtype = _step_dtype(grads[0].dtype, store)
        sizes = [int(np.prod(g.shape)) for g in grads]
        segments = np.repeat(np.arange(len(sizes)), sizes)
        pack = lambda xs, lead: B.xp.concatenate(
            [B.asarray(x, dtype).reshape(x.shape[:lead] + (n,)) for x, n in zip(xs, sizes)],
            axis=lead,
        )
        g, x = pack(grads, 0), pack(params, 0)
        memory = MemoryState(pack([m.numerator for m in memories], 3),
                             pack([m.normaliser for m in memories], 2))
        g_rms = B.segment_rms(g, segments, len(sizes))
        x_rms = B.segment_rms(x, segments, len(sizes))
        update, memory, _ = self._leaf_step(
            g, x, memory, step, B, None, rms=(g_rms[segments], x_rms[segments])
        )
        outputs, start = [], 0
        for grad, n, i in zip(grads, sizes, range(len(sizes))):
            piece = lambda a, lead: a[..., start:start + n].reshape(a.shape[:lead] + grad.shape)
            outputs.append((
                piece(update, 0).astype(grad.dtype),
                _as_dtype(
                    MemoryState(piece(memory.numerator, 3), piece(memory.normaliser, 2)), store, B
                ),
                g_rms[i],
            ))
            start += n
        return outputs

    def _leaf_step_cast(self, grad, param, memory, step, backend, axis_names):
        B = backend
        out_dtype = grad.dtype
        store = memory.numerator.dtype
        dtype = _step_dtype(grad.dtype, store)
        update, memory, grad_rms = self._leaf_step(
            B.asarray(grad, dtype), B.asarray(param, dtype), _as_dtype(memory, dtype, B), step, B,
            axis_names,
        )
        return update.astype(out_dtype), _as_dtype(memory, store, B), grad_rms


def _follow_sharding(state: MemoryState, param, per_coordinate: bool) -> MemoryState:
    """Place a leaf's memory like the leaf: split the same way when the memory
    has one slot per coordinate, replicated on the same mesh otherwise."""
    sharding = getattr(param, "sharding", None)
    if not isinstance(sharding, jax.sharding.NamedSharding) or isinstance(param, jax.core.Tracer):
        return state
    spec = tuple(sharding.spec) + (None,) * (len(param.shape) - len(sharding.spec))

    def place(x):
        lead = x.ndim - len(param.shape)
        s = P(*((None,) * lead + spec)) if per_coordinate else P()
        return jax.device_put(x, jax.sharding.NamedSharding(sharding.mesh, s))

    return jax.tree.map(place, state)


def _cast_theta(lopt, backend):
    """θ in the backend's arrays: float64 NumPy for the reference; unchanged for JAX."""
    if backend.xp is jnp:
        return lopt
    return jax.tree.map(lambda a: np.asarray(a, np.float64) if eqx.is_array(a) else a, lopt)


def _skip_if_nonfinite(grad_rms, updates, new_state, old_state, B, axis_names):
    """Keep the old state and return zero updates if any gradient has a NaN or
    infinite entry, i.e. if any tensor's (overflow-safe) gradient RMS is not
    finite; count the skipped step."""
    # one reduction over all tensors' RMS (a chain of `&`s would be copied into
    # every per-leaf select by XLA: compile time quadratic in the leaf count)
    if grad_rms:
        stacked = B.xp.stack([B.xp.asarray(r, np.float64 if B.xp is np else None) for r in grad_rms])
        finite = B.xp.all(B.xp.isfinite(stacked))
    else:
        finite = B.xp.asarray(True)
    if axis_names is not None and B.xp is jnp:
        names = tuple(sorted({n for a in jax.tree.leaves(axis_names) for n in _as_tuple(a)}))
        if names:
            finite = jax.lax.pmin(finite.astype(jnp.int32), names).astype(bool)
    keep = lambda new, old: B.xp.where(finite, new, old)
    updates = jax.tree.map(lambda u: B.xp.where(finite, u, B.xp.zeros_like(u)), updates)
    state = MnemosyneState(
        step=keep(new_state.step, old_state.step),
        memory=jax.tree.map(keep, new_state.memory, old_state.memory),
        skipped=keep(old_state.skipped, old_state.skipped + 1),
    )
    return updates, state


def _as_tuple(a):
    if a is None:
        return ()
    return (a,) if isinstance(a, str) else tuple(a)


@register_serialisable
class CoordinatewiseMnemosyne(AbstractMnemosyne):
    """Mnemosyne with one memory slot per coordinate (the default optimizer).

    For every coordinate $i$ of every tensor, at step $t$:

    1. features $f_i$ (F): the gradient and parameter normalised by their
       tensor's RMS, the log/sign preprocessing, a step embedding;
    2. token $\\xi_i = W_{in} f_i + b_{in}$;
    3. the compact associative memory of that coordinate (2)-(5), with
       `num_heads` heads of `num_features` random features and one discount
       per head, returns $o_i$;
    4. the head maps $[f_i, o_i]$ to the step (H), (O).

    All weights are shared by every coordinate of every tensor, so one θ trains
    any architecture. Optimizer state: `num_heads * num_features * (value_size
    + 1)` floats per parameter (4 at the defaults; Adam: 2).

    Example:
        >>> import jax, mnemosyne
        >>> lopt = mnemosyne.CoordinatewiseMnemosyne(key=jax.random.key(0))
        >>> lopt.memory.floats_per_slot()
        4
    """

    packs_small_leaves: ClassVar[bool] = True
    embed_w: Float[Array, "d_model features"]
    embed_b: Float[Array, " d_model"]
    memory: CompactAssociativeMemory
    head: LearnedStepHead
    step_timescales: tuple[float, ...] = eqx.field(static=True)
    feature_clip: float = eqx.field(static=True)
    skip_nonfinite: bool = eqx.field(static=True)
    config: tuple = eqx.field(static=True)

    def __init__(
        self,
        *,
        d_model: int = 8,
        num_heads: int = 1,
        num_features: int = 2,
        key_size: int = 2,
        value_size: int = 1,
        timescales: tuple[float, ...] | None = None,
        hidden_size: int = 8,
        step_timescales: tuple[float, ...] = (10.0, 100.0, 1000.0),
        alpha: float = 1e-2,
        beta: float = 1.0,
        feature_clip: float = 10.0,
        skip_nonfinite: bool = True,
        key: PRNGKeyArray,
    ):
        self.config = freeze_config(locals())
        k_embed, k_mem, k_head = jax.random.split(key, 3)
        num_in = NUM_COORDINATE_FEATURES + len(step_timescales)
        self.embed_w = jax.random.normal(k_embed, (d_model, num_in)) / np.sqrt(num_in)
        self.embed_b = jnp.zeros(d_model)
        self.memory = CompactAssociativeMemory(
            d_model, num_heads=num_heads, num_features=num_features, key_size=key_size,
            value_size=value_size, timescales=timescales, key=k_mem,
        )
        self.head = LearnedStepHead(
            num_in + num_heads * value_size, hidden_size, alpha=alpha, beta=beta, key=k_head
        )
        self.step_timescales = tuple(float(t) for t in step_timescales)
        self.feature_clip = float(feature_clip)
        self.skip_nonfinite = skip_nonfinite

    def _memory_slots(self, shape):
        return tuple(shape)

    def _leaf_step(self, grad, param, memory, step, backend, axis_names, rms=None):
        B = backend
        f, e, g_rms = self.features(grad, param, step, B, axis_names, rms)
        embedding = fold_shared_inputs(self.embed_w, self.embed_b, e, len(f), B)
        memory, read = self.memory(memory, f, B, embedding=embedding)
        return -self.head(f, e, read, B), memory, g_rms


@register_serialisable
class TensorwiseMnemosyne(AbstractMnemosyne):
    """Mnemosyne with the hierarchical pooling encoder: memory per meta-token.

    For each tensor at step $t$: features (F) and tokens as in
    [`CoordinatewiseMnemosyne`][mnemosyne.CoordinatewiseMnemosyne]; the
    [`HierarchicalPoolingEncoder`][mnemosyne.HierarchicalPoolingEncoder] turns
    the tensor's $n$ tokens into $b = \\lceil n/c^L \\rceil$ meta-tokens (Fig. 1c);
    the compact associative memory keeps one slot per meta-token (the meta-tokens
    are its batch dimension, Fig. 1); each coordinate's head reads its own
    features and the memory read-out of the meta-token it was pooled into.
    State: $b \\cdot H r (d_v + 1)$ floats per tensor, a small fraction of a float
    per parameter.
    """

    packs_small_leaves: ClassVar[bool] = False
    embed_w: Float[Array, "d_model features"]
    embed_b: Float[Array, " d_model"]
    encoder: HierarchicalPoolingEncoder
    memory: CompactAssociativeMemory
    head: LearnedStepHead
    step_timescales: tuple[float, ...] = eqx.field(static=True)
    feature_clip: float = eqx.field(static=True)
    skip_nonfinite: bool = eqx.field(static=True)
    config: tuple = eqx.field(static=True)

    def __init__(
        self,
        *,
        d_model: int = 8,
        num_levels: int = 2,
        chunk_len: int = 16,
        encoder_features: int = 8,
        num_heads: int = 2,
        num_features: int = 8,
        key_size: int = 4,
        value_size: int = 4,
        timescales: tuple[float, ...] | None = None,
        hidden_size: int = 8,
        step_timescales: tuple[float, ...] = (10.0, 100.0, 1000.0),
        alpha: float = 1e-2,
        beta: float = 1.0,
        feature_clip: float = 10.0,
        skip_nonfinite: bool = True,
        key: PRNGKeyArray,
    ):
        self.config = freeze_config(locals())
        k_embed, k_enc, k_mem, k_head = jax.random.split(key, 4)
        num_in = NUM_COORDINATE_FEATURES + len(step_timescales)
        self.embed_w = jax.random.normal(k_embed, (d_model, num_in)) / np.sqrt(num_in)
        self.embed_b = jnp.zeros(d_model)
        self.encoder = HierarchicalPoolingEncoder(
            d_model, num_levels=num_levels, chunk_len=chunk_len,
            num_features=encoder_features, key=k_enc,
        )
        self.memory = CompactAssociativeMemory(
            d_model, num_heads=num_heads, num_features=num_features, key_size=key_size,
            value_size=value_size, timescales=timescales, key=k_mem,
        )
        self.head = LearnedStepHead(
            num_in + num_heads * value_size, hidden_size, alpha=alpha, beta=beta, key=k_head
        )
        self.step_timescales = tuple(float(t) for t in step_timescales)
        self.feature_clip = float(feature_clip)
        self.skip_nonfinite = skip_nonfinite

    def _memory_slots(self, shape):
        return (self.encoder.num_meta_tokens(int(np.prod(shape))),)

    def _leaf_step(self, grad, param, memory, step, backend, axis_names, rms=None):
        del rms  # never packed: the encoder needs each whole tensor
        if axis_names:
            raise NotImplementedError(
                "TensorwiseMnemosyne pools across a whole tensor; under shard_map "
                "use mnemosyne.sharded_update, which gathers each tensor first"
            )
        B = backend
        shape = grad.shape
        if B.xp is jnp:
            (grad, param), spec = _replicate_explicit(grad, param)
        f, e, g_rms = self.features(grad, param, step, B)
        f = B.reshape_rows(f, (grad.size,))
        embedding = fold_shared_inputs(self.embed_w, self.embed_b, e, len(f), B)
        meta_tokens = self.encoder(B.stack_rows(B.dense(*embedding, f)), B)
        memory, read = self.memory(memory, meta_tokens, B)
        pooled = self.encoder.chunk_len ** len(self.encoder.levels)
        read = B.unpool(read, grad.size, pooled)
        update = -self.head(f, e, read, B).reshape(shape)
        if B.xp is jnp and spec is not None:
            update = jax.reshard(update, spec)
        return update, memory, g_rms


def _step_dtype(grad_dtype, memory_dtype):
    """The dtype a step is computed in: at least float32, and at least the
    precision of the stored memory."""
    return np.dtype(jnp.promote_types(compute_dtype(grad_dtype), memory_dtype))


def _as_dtype(memory: MemoryState, dtype, B) -> MemoryState:
    """The memory in the state's dtype (the float64 NumPy reference computes in
    float64 but keeps the state's dtype stable across steps, as JAX does)."""
    return MemoryState(*(B.asarray(a, dtype) for a in memory))


def _is_split(x) -> bool:
    """Whether `x` is split across devices of an Explicit-axes mesh."""
    spec = getattr(getattr(jax.typeof(x), "sharding", None), "spec", None) if isinstance(
        x, jax.Array
    ) else None
    return spec is not None and any(s is not None for s in spec)


def _replicate_explicit(*arrays):
    """Under an Explicit-axes mesh, gather tensors split across devices (the
    encoder pools over a whole tensor); return them and the original spec."""
    sharding = getattr(jax.typeof(arrays[0]), "sharding", None)
    spec = getattr(sharding, "spec", None)
    if spec is None or all(s is None for s in spec):
        return arrays, None
    mesh = sharding.mesh
    replicated = jax.sharding.NamedSharding(mesh, P())
    return tuple(jax.reshard(a, replicated) for a in arrays), jax.sharding.NamedSharding(mesh, spec)
