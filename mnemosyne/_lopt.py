"""Mnemosyne learned optimizers: the shared step (`AbstractMnemosyne`) and its
two variants, coordinate-wise and tensor-wise.

The head is in `_head.py`, the packing of small leaves and dtype handling in
`_packing.py`, state placement on meshes in `_placement.py`.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._checks import (
    check_state_like,
    check_update_inputs,
    compute_dtype,
    key_path,
    leaf_shape_dtype,
)
from ._encoder import HierarchicalPoolingEncoder
from ._head import LearnedStepHead, fold_shared_inputs
from ._lopt_base import AbstractLearnedOptimizer
from ._memory import CompactAssociativeMemory, MemoryState
from ._packing import (
    PACK_MAX_SIZE,
    Pack,
    TensorStatistics,
    all_finite,
    as_dtype,
    cast_leaf,
    cast_theta,
    step_dtype,
)
from ._placement import (
    follow_sharding,
    match_sharding,
    may_be_split,
    place_step,
    replicate_explicit,
    replicate_like_params,
)
from ._serialisation import freeze_config, register_serialisable
from ._types import OptState, Params, PRNGKeyArray, Updates
from .backends import get_backend

NUM_COORDINATE_FEATURES = 4  # clip(g^), log|g^|/p, sign-ish(g^), clip(x^)
#: Which coordinate features flip sign with the gradient: Eq. (F2)'s g~ and g^
#: (v2), or Eq. (F)'s clipped g^ and the sign half of (L) (v1).
ODD_FEATURES = {True: (True, True, False, False), False: (True, False, True, False)}


class MnemosyneState(NamedTuple):
    """State of a Mnemosyne optimizer.

    Attributes:
        step: number of updates applied (skipped steps excluded), int32 scalar.
        memory: a pytree like `params` with one [`MemoryState`][mnemosyne.MemoryState]
            per array leaf (`None` for `None` leaves).
        skipped: number of steps skipped because a gradient was not finite.
        step_scale: with step adaptation (`step_adaptation`), a pytree like
            `params` with each tensor's log step multiplier $\\rho$ of Eq. (A2),
            a scalar (`None` for `None` leaves); `None` without it.
    """

    step: Array
    memory: Any
    skipped: Array
    step_scale: Any = None


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
    second_moment_decay: eqx.AbstractVar[float | None]
    gradient_scale: eqx.AbstractVar[str]
    epsilon: eqx.AbstractVar[float]
    read_out: eqx.AbstractVar[bool]
    step_adaptation: eqx.AbstractVar[float | None]
    step_scale_range: eqx.AbstractVar[tuple[float, float]]
    step_agreement_threshold: eqx.AbstractVar[float | None]
    step_width_reference: eqx.AbstractVar[int | None]
    step_depth_floor: eqx.AbstractVar[tuple[float, float] | None]
    step_shallow_ceiling: eqx.AbstractVar[tuple[float, float] | None]
    step_kernel_floor: eqx.AbstractVar[tuple[float, int] | None]
    step_shallow_floor: eqx.AbstractVar[tuple[float, int] | None]
    step_spike_guard: eqx.AbstractVar[tuple[float, float, float] | None]
    packs_small_leaves: eqx.AbstractClassVar[bool]
    #: Whether a leaf's memory has one slot per coordinate (so, under sharding,
    #: it is split like the leaf and updated shard by shard).
    memory_per_coordinate: eqx.AbstractClassVar[bool]

    @abc.abstractmethod
    def _memory_slots(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Slot shape of the memory for a parameter of this shape."""

    @abc.abstractmethod
    def _leaf_step(
        self, grad, param, memory: MemoryState, step, backend, axis_names, rms
    ):
        """`(update, new memory, momentum)` for one tensor, in the compute
        dtype: `momentum` is the memory's momentum before this step's write
        (`CompactAssociativeMemory.momentum`) with step adaptation, else
        `None`; `rms` as in `features`."""

    def state_floats_per_parameter(self, params: Params) -> float:
        """Optimizer-state floats per parameter for `params` (memory only; the
        two int32 scalars `step` and `skipped`, and the one scalar per tensor
        of step adaptation, are not counted)."""
        leaves = [x for x in jax.tree.leaves(params) if hasattr(x, "shape")]
        n = sum(int(np.prod(x.shape)) for x in leaves)
        per_slot = self.memory.floats_per_slot()
        slots = sum(int(np.prod(self._memory_slots(tuple(x.shape)))) for x in leaves)
        second_moment = n if self.second_moment_decay is not None else 0
        return (per_slot * slots + second_moment) / max(n, 1)

    def features(
        self, grad, param, step, backend, axis_names=None, rms=None, second_moment=None
    ):
        """Features: per-coordinate `(4, *shape)`, the shared step embedding
        `(S,)`, and the gradient's RMS (non-finite iff the gradient is).

        Eq. (F2) when `second_moment` ($\\nu_t$ of Eq. (V), already updated with
        this gradient) is given (v2), else Eq. (F) (v1). `rms`, if given, is the
        tensor's precomputed `TensorStatistics` (per-coordinate values for packed
        small tensors)."""
        B = backend
        if rms is None:
            rms = TensorStatistics.of_leaf(grad, param, B, axis_names)
        if second_moment is None:
            coordinate = B.coordinate_features(
                grad, param, rms.g_rms, rms.x_rms, self.feature_clip
            )
        else:
            running = self.gradient_scale == "running"
            # (S): rms(sqrt(nu)) = sqrt(mean(nu)), one read of nu
            g_scale = B.xp.sqrt(rms.mean_of(second_moment)) if running else rms.g_rms
            coordinate = B.adaptive_coordinate_features(
                grad, param, second_moment, step + 1, g_scale, rms.x_rms,
                self.second_moment_decay, self.epsilon, self.feature_clip, running,
            )
        shared = B.step_embedding(step, self.step_timescales, grad.dtype)
        return coordinate, shared, rms.g_rms

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
            raise TypeError(
                f"memory_dtype must be a floating dtype, got {memory_dtype!r}"
            )

        def leaf_state(p):
            if p is None:
                return None
            shape, dtype = leaf_shape_dtype(p)
            store = (
                compute_dtype(dtype) if memory_dtype is None else np.dtype(memory_dtype)
            )
            state = self.memory.init_state(self._memory_slots(shape), store)
            if self.second_moment_decay is not None:
                state = state._replace(second_moment=jnp.zeros((1,) + shape, store))
            return follow_sharding(state, p, self._memory_slots(shape) == shape)

        memory = jax.tree.map(leaf_state, params, is_leaf=lambda x: x is None)
        zero = replicate_like_params(jnp.zeros((), jnp.int32), params)
        step_scale = None
        if self.step_adaptation is not None:
            step_scale = jax.tree.map(
                lambda p: None if p is None else replicate_like_params(
                    jnp.zeros((), compute_dtype(leaf_shape_dtype(p)[1])), params
                ),
                params, is_leaf=lambda x: x is None,
            )
        return MnemosyneState(zero, memory, zero, step_scale)

    def update(
        self,
        grads: Updates,
        state: OptState,
        params: Params | None = None,
        *,
        backend: str = "jax",
        axis_names: Any = None,
        global_shapes: Any = None,
        stacked_axes: Any = None,
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
            global_shapes: inside `shard_map` only: a pytree like `params` of
                each leaf's global shape, which the width scaling (N) reads
                (`sharded_update` passes it); by default, the leaves' shapes.
            stacked_axes: for layers stacked into one array (to apply them with
                `jax.lax.scan`): a pytree prefix of `params` (or a function
                of `params` returning one) of ints, the number of leading
                axes of each leaf that index stacked layers (0: none). The
                depth (D), kernel (K) and width (N) rules then read each
                layer's shape: a `(4, 3, 3, c, c)` stack counts as four
                kernels of shape `(3, 3, c, c)`, not one 3-D kernel. See
                `layer_shapes`. The statistics of the step stay per leaf.
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
        check_state_like(state.step_scale, expected.step_scale, "state.step_scale")
        B = get_backend(backend)
        theta = cast_theta(self, B)
        treedef = jax.tree.structure(grads, is_leaf=lambda x: x is None)
        g_leaves = treedef.flatten_up_to(grads)
        p_leaves = treedef.flatten_up_to(params)
        m_leaves = treedef.flatten_up_to(state.memory)
        a_leaves = (
            [None] * len(g_leaves)
            if axis_names is None
            else treedef.flatten_up_to(axis_names)
        )
        r_leaves = (
            [None] * len(g_leaves)
            if state.step_scale is None
            else treedef.flatten_up_to(state.step_scale)
        )
        step = state.step
        layers = layer_shapes(
            theta._global_shapes(g_leaves, treedef, axis_names, global_shapes,
                                 stacked_axes),
            _stacked_axes_per_leaf(stacked_axes, grads, params, treedef),
        )
        outputs, finite, scales = theta._step_leaves(
            g_leaves, p_leaves, m_leaves, a_leaves, r_leaves, step, B,
            *theta._step_bounds(layers),
        )
        reference = theta.step_width_reference
        updates = treedef.unflatten([
            None if o is None else _width_scaled(o[0], layer[1], reference)
            for o, layer in zip(outputs, layers, strict=True)
        ])
        memory = treedef.unflatten([None if o is None else o[1] for o in outputs])
        if not theta.skip_nonfinite:
            count = lambda taken, skipped: taken
        else:
            count = lambda taken, skipped: B.xp.where(finite, taken, skipped)
        step_scale = None
        if state.step_scale is not None:
            step_scale = treedef.unflatten([
                None if old is None else B.asarray(count(new, old), old.dtype)
                for new, old in zip(scales, r_leaves, strict=True)
            ])
        return updates, MnemosyneState(
            count(step + 1, step), memory, count(state.skipped, state.skipped + 1),
            step_scale,
        )

    def _global_shapes(
        self, g_leaves, treedef, axis_names, global_shapes, stacked_axes
    ) -> list:
        """Each leaf's global shape (`None` for `None` leaves): `global_shapes`
        flattened, or the leaves' own shapes, which under `shard_map` are
        local ones: a `ValueError` there if the width scaling (N) or the
        layer count of `stacked_axes` needs them."""
        if global_shapes is not None:
            return [None if s is None else tuple(s)
                    for s in treedef.flatten_up_to(global_shapes)]
        if axis_names is not None and self.step_width_reference is not None:
            raise ValueError(
                "step_width_reference scales each tensor's step by its global "
                "width (Eq. (N)); inside shard_map pass global_shapes= (a pytree "
                "like params of each leaf's global shape), as "
                "mnemosyne.sharded_update does"
            )
        if axis_names is not None and stacked_axes is not None:
            raise ValueError(
                "stacked_axes counts the layers of each stack from its global "
                "shape; inside shard_map pass global_shapes= as well, as "
                "mnemosyne.sharded_update does"
            )
        return [None if g is None else tuple(np.shape(g)) for g in g_leaves]

    def _step_leaves(
        self, g_leaves, p_leaves, m_leaves, a_leaves, r_leaves, step, B, lows, high
    ):
        """`(update, memory)` per leaf (`None` for `None` leaves), whether
        every gradient is finite, and each leaf's new log step multiplier
        (Eq. A2, floored at its entry of `lows`, capped at `high`; `None`
        without step adaptation). If a gradient is not finite, and `skip_nonfinite`, the
        updates are zero and the memory unchanged.

        When the optimizer treats coordinates independently (`packs_small_leaves`),
        leaves of at most `PACK_MAX_SIZE` entries are packed into one vector per
        dtype and updated together, with per-tensor statistics computed by
        segment: identical results, but the traced program no longer grows with
        the number of small leaves (biases, norms, scalars); see `Pack.unpack`
        for how it is split up again.
        """
        outputs: list = [None] * len(g_leaves)
        groups: dict = {}
        single = []
        for i, (g, m, a) in enumerate(zip(g_leaves, m_leaves, a_leaves, strict=False)):
            if g is None:
                continue
            packable = a is None and g.size <= PACK_MAX_SIZE and not may_be_split(g)
            if self.packs_small_leaves and packable:
                groups.setdefault((np.dtype(g.dtype), m.numerator.dtype), []).append(i)
            else:
                single.append(i)
        rms = {}
        for i in single:
            dtype = step_dtype(g_leaves[i].dtype, m_leaves[i].numerator.dtype)
            rms[i] = TensorStatistics.of_leaf(
                B.asarray(g_leaves[i], dtype), B.asarray(p_leaves[i], dtype), B,
                a_leaves[i],
            )
        packs = [
            Pack.of([g_leaves[i] for i in members], [p_leaves[i] for i in members],
                     [m_leaves[i] for i in members], B)
            for members in groups.values()
        ]
        finite = all_finite(
            [rms[i][0] for i in single] + [pack.g_rms for pack in packs], B, a_leaves
        )
        scales: list = [None] * len(g_leaves)
        for i in single:
            *outputs[i], scales[i] = self._step_unless_skipped(
                g_leaves[i],
                p_leaves[i],
                m_leaves[i],
                step,
                B,
                a_leaves[i],
                rms[i],
                finite,
                r_leaves[i],
                lows[i],
                high,
            )
        for members, pack in zip(groups.values(), packs, strict=False):
            update, memory, momentum = self._packed_step(pack, step, B)
            if self.step_adaptation is not None:  # one multiplier per packed tensor
                log_scale = B.xp.stack([B.asarray(r_leaves[i]) for i in members])
                low = np.array([lows[i] for i in members])  # one per tensor
                low = float(low[0]) if np.all(low == low[0]) else low
                log_scale = self._log_step_scale(
                    pack.grad, momentum, log_scale, pack.statistics(B), step, B, low,
                    high, memory.second_moment,
                )
                update = update * B.xp.exp(log_scale)[pack.segments]
                for k, i in enumerate(members):
                    scales[i] = log_scale[k]
            unpacked = pack.unpack(update, memory, finite, self.skip_nonfinite, B)
            for i, out in zip(members, unpacked, strict=False):
                outputs[i] = out
        return outputs, finite, scales

    def _step_bounds(self, layers) -> tuple[list[float | None], float]:
        """The bounds of the step multipliers, from `layer_shapes`'
        `(count, shape)` per leaf: the floor $\\ell$ of each leaf's (`None`
        for `None` leaves) and the model's ceiling $h$.

        The floor is `step_scale_range`'s, raised for the whole model by Eq.
        (D) if `step_depth_floor` is set (`depth_floor`, over the layers of
        two or more axes) and for a shallow model by Eq. (D2) if
        `step_shallow_floor` is, and for kernels (layers of four or more axes) of
        a deep enough model by Eq. (K) if `step_kernel_floor` is. The ceiling
        is `step_scale_range`'s, raised for a shallow model by Eq. (C) if
        `step_shallow_ceiling` is set (`shallow_ceiling`)."""
        low, high = self.step_scale_range
        matrices = sum(n for n, shape in filter(None, layers) if len(shape) >= 2)
        if self.step_depth_floor is not None:
            low = depth_floor(matrices, low, self.step_depth_floor)
        if self.step_shallow_floor is not None:
            floor, max_matrices = self.step_shallow_floor
            low = max(low, floor) if matrices <= max_matrices else low
        if self.step_shallow_ceiling is not None:
            high = shallow_ceiling(matrices, high, self.step_shallow_ceiling[0])
        kernel = low
        if self.step_kernel_floor is not None:
            floor, min_matrices = self.step_kernel_floor
            kernel = max(low, floor) if matrices >= min_matrices else low
        lows = [None if layer is None else kernel if len(layer[1]) >= 4 else low
                for layer in layers]
        return lows, high

    def _log_step_scale(
        self, grad, momentum, log_scale, rms, step, B, low, high, second_moment
    ):
        """Eqs. (A1)-(A2): the tensor's new log step multiplier $\\rho_t$ from
        the agreement $a_t = \\cos(g_t, m_{t-1})$ of the gradient with
        `momentum`, the memory's momentum before this step's write (the
        direction of the last step; none before the first step), within
        $[\\log$ `low`$, \\log$ `high`$]$; `None` without step adaptation. `rms` as in
        `features`; for packs, `log_scale` and the result have one entry per
        packed tensor. With `step_spike_guard`, Eq. (G): `low` is a soft floor
        below which only spikes of the gradient over its running scale (read
        from `second_moment`, $\\nu_t$ already updated, in the state's
        shape `(1, *shape)`) push the multiplier."""
        if self.step_adaptation is None:
            return None
        m = B.xp.where(step > 0, momentum, 0.0)
        g_hat = B.normalise(grad, rms.g_rms)
        agreement = B.agreement(
            rms.sum_of(g_hat * m), rms.g_hat_square_sum, rms.sum_of(m * m)
        )
        hard_low, knee = self.step_scale_range
        threshold = self.step_agreement_threshold or 0.0
        if self.step_shallow_ceiling is not None and high > knee:
            # Eq. (C): above the plain ceiling, grow only on a strong agreement
            threshold = B.xp.where(
                B.xp.asarray(log_scale) > float(np.log(knee)),
                self.step_shallow_ceiling[1], threshold,
            )
        if self.step_spike_guard is None:
            return B.log_step_scale(
                log_scale, agreement, self.step_adaptation, threshold, low, high
            )
        limit, strength, recovery = self.step_spike_guard
        penalty = B.spike_penalty(
            rms.per_tensor(rms.g_rms), rms.per_tensor(rms.mean_of(second_moment[0])),
            step + 1, self.second_moment_decay, limit, strength,
        )
        # read once nu has seen its own timescale 1/(1 - beta_2) of gradients:
        # before that a gradient growing as training starts reads as a spike
        start = round(1.0 / (1.0 - self.second_moment_decay))
        penalty = B.xp.where(step >= start, penalty, 0.0)
        return B.log_step_scale(
            log_scale, agreement, self.step_adaptation, threshold, low, high,
            penalty, recovery, hard_low,
        )

    def _step_unless_skipped(
        self, grad, param, memory, step, B, axis_names, rms, finite, log_scale=None,
        low=None, high=None,
    ):
        """`(update, memory, log_scale)`: `_leaf_step` (cast to the compute
        dtype and back) and, with step adaptation, the new log multiplier
        $\\rho_t$ (`_log_step_scale`, within `low` and `high`) times which the update
        is taken, inside a conditional on `finite`: if not `finite` (and
        `skip_nonfinite`), a zero update and `memory` and `log_scale` unchanged.

        The conditional is also what makes the step fast: the step of each
        tensor becomes a computation of its own, so XLA reuses
        one tensor's temporaries (the log feature, the key exps) for the next
        instead of keeping every tensor's alive at once (at 10^7 parameters
        that was 284 MB of fresh pages, page-faulted on every step), and it
        writes the memory in place: 2.3x faster at 10^7
        parameters, 1.2x at 10^6 (docs/performance.md)."""
        def taken():  # in the compute dtype inside, the leaf's own dtypes outside
            g, p, m = cast_leaf(grad, param, memory, B)
            update, new_memory, momentum = self._leaf_step(
                g, p, m, step, B, axis_names, rms
            )
            new_scale = self._log_step_scale(
                g, momentum, log_scale, rms, step, B, low, high,
                new_memory.second_moment,
            )
            if new_scale is not None:
                update = update * B.xp.exp(new_scale)
                new_scale = match_sharding(B.asarray(new_scale, log_scale.dtype),
                                           log_scale)
            update = update.astype(grad.dtype)
            new_memory = as_dtype(new_memory, memory.numerator.dtype, B)
            # the skipped branch's types, shardings included (Explicit axes);
            # NumPy arrays (the reference) pass through unchanged
            per_coordinate = self._memory_slots(tuple(grad.shape)) == tuple(grad.shape)
            placed = place_step(update, new_memory, grad, memory, per_coordinate)
            return *placed, new_scale

        if not self.skip_nonfinite:
            return taken()
        return B.cond(finite, taken, lambda: (B.xp.zeros_like(grad), memory, log_scale))

    def _packed_step(self, pack: Pack, step, B):
        """`(update, memory, momentum)` of a packed group, still packed (the
        skip is applied by `Pack.unpack`)."""
        return self._leaf_step(
            pack.grad, pack.param, pack.memory, step, B, None, pack.statistics(B)
        )


@register_serialisable
class CoordinatewiseMnemosyne(AbstractMnemosyne):
    """Mnemosyne with one memory slot per coordinate (the default optimizer).

    For every coordinate $i$ of every tensor, at step $t$ (v2, the default):

    1. the second-moment estimate $\\nu_t$ (V) and the features $f_i$ (F2):
       the gradient normalised per coordinate by $\\sqrt{\\hat\\nu_t}$ (so steps
       shrink where the gradient is mostly noise, as Adam's do), the gradient and
       parameter normalised by their tensor's RMS, a log magnitude, and a step
       embedding;
    2. token $\\xi_i = W_{in} f_i + b_{in}$;
    3. the compact associative memory of that coordinate (2)-(5), with
       `num_heads` heads of `num_features` random features and one discount
       per head, returns $o_i$: an attention-weighted average of the
       coordinate's past values;
    4. the head maps $[f_i, e_t, o_i]$ to a direction $d$ and a log-magnitude
       $s$ (H), and the step is $-\\alpha\\, d\\, e^{\\beta c \\tanh(s/c)}$ (O),
       so no step exceeds $\\alpha e^{\\beta c}$ times a clipped direction;
    5. with `step_adaptation` $\\kappa$, each tensor's step is multiplied by
       $e^{\\rho_t}$, a log multiplier that grows while the tensor's gradient
       keeps the direction of the memory's momentum and shrinks when it turns
       against it or the agreement falls below `step_agreement_threshold`
       (mostly noise), within `step_scale_range` (A1)-(A2);
    6. with `step_warmup` $(w_0, T)$, the step is also multiplied by
       $w_t = \\min(1, w_0 + (1 - w_0)\\, t/T)$ (W): a linear warm-up over the
       first $T$ steps, which nothing in the state reads;
    7. with `step_width_reference` $n_0$, the step of a tensor of width
       $n > n_0$ (its size over its largest axis) is multiplied by
       $\\sqrt{n_0 / n}$ (N), so wide Transformers take the smaller steps
       they need (the state does not read this factor either);
    8. with `step_depth_floor` $(c, \\ell_{max})$, the floor of the multiplier
       of step 5 is $\\ell_L = \\min(\\ell_{max}, \\max(\\ell, c/L))$ for a model
       of $L$ matrices (D): a shallow model keeps a larger step once its
       gradient is mostly noise, a deep one the smaller step it needs;
       with `step_kernel_floor` $(\\ell_K, L_K)$, in a model of $L \\ge L_K$
       matrices the floor of a kernel (a tensor of four or more axes: a 2-D
       or 3-D convolution's) is $\\max(\\ell_L, \\ell_K)$ (K): deep CNNs keep
       their step; with `step_shallow_floor` $(\\ell_S, L_S)$, in a model of
       $L \\le L_S$ matrices the floor is $\\max(\\ell_L, \\ell_S)$ (D2): a
       shallow model's long noisy run keeps descending; with
       `step_shallow_ceiling` $(C, a_1)$, its ceiling is
       $h_L = \\min(C, \\max(h, C/L))$ (C), and above $h$ it grows only while
       the agreement exceeds $a_1$: a shallow model whose gradients keep
       agreeing may take larger steps than a deep one;
    9. with `step_spike_guard` $(K, \\lambda, \\mu)$, that floor is soft: only
       spikes (a gradient RMS above $K$ times its running scale) push the
       multiplier below it, down to the floor of `step_scale_range`, and it
       recovers by $\\mu$ per step (G).

    Untrained (initialised) v2 θ is already a sane optimizer: the token's first
    channel and the memory's value select $\\tilde g = g/(\\sqrt{\\hat\\nu}+\\epsilon)$,
    the memory's keys and queries are small, so $o_t$ is the bias-corrected
    exponential average of $\\tilde g$ with discount $e^{-1/10}$ (momentum
    0.9), and the head passes $d = o$, $s = 0$: momentum on Adam-normalised
    gradients with step $\\alpha = 10^{-3}$. Meta-training learns corrections.
    `second_moment_decay=None` gives v1 (Eq. (F), no second moment; then
    pass the v1 constants `alpha=1e-2, magnitude_clip=4.0, direction_clip=None,
    sign_symmetric=False`).

    `sign_symmetric` (default) makes the step odd in the gradient history
    (Eq. (H±), (2±)): the direction flips with the sign of every past
    gradient, the magnitude does not, and a zero gradient gives a zero step, so
    no θ can make a parameter drift where it sees no gradient.

    All weights are shared by every coordinate of every tensor, so one θ trains
    any architecture. Optimizer state: `num_heads * num_features * (value_size
    + 1)` memory floats per parameter, plus one for $\\nu$ (5 at the defaults;
    Adam: 2).

    Args:
        d_model: token width (the embedding $W_{in}$ has `d_model` rows).
        num_heads: memory heads $H$, each with its own discount.
        num_features: random features per head ($r$; $2r$ positive features).
        key_size: width of the queries and keys.
        value_size: width of each head's values ($d_v$).
        timescales: per-head memory timescales $1/\\tau_h$ (default: spread
            geometrically over 10 to 100 steps).
        hidden_size: width of the head's hidden layer.
        step_timescales: timescales of the step embedding (a constant schedule
            if empty).
        alpha: step scale $\\alpha$ of (O).
        beta: magnitude scale $\\beta$ of (O).
        magnitude_clip: the smooth clip $c$ of the log-magnitude.
        direction_clip: clip of the direction (`None`: unclipped, v1).
        feature_clip: clip of the normalised features.
        second_moment_decay: decay of $\\nu$ (V); `None` gives v1's features.
        gradient_scale: what v2 divides the gradient by for $\\hat g$ (F2):
            `"running"` (default), the tensor's running scale
            $\\operatorname{rms}(\\sqrt{\\hat\\nu_t})$ (S), so a small gradient
            gives a small step; `"current"`, the current gradient's RMS (before
            December 2026), which blows a tiny gradient up to unit size.
        epsilon: $\\epsilon$ of the second-moment normalisation.
        read_out: feed the memory read-out to the head (`False`: no memory).
        sign_symmetric: make the step odd in the gradient history (H±), (2±).
        step_adaptation: the rate $\\kappa$ of the per-tensor step multiplier
            (A2), or `None` (no multiplier); needs v2 with the read-out.
        step_scale_range: the bounds $(\\ell, h)$ of that multiplier.
        step_agreement_threshold: the agreement $a_0$ of (A2) below which the
            multiplier shrinks (`None`, i.e. 0: only when the gradient turns
            against the momentum; above 0, also when the gradient is mostly
            noise).
        step_warmup: `(w_0, T)`: the step is multiplied by $w_t = \\min(1, w_0 +
            (1 - w_0) t / T)$ (W), a linear warm-up from $w_0$ to 1 over the
            first $T$ steps; `None` (default): no warm-up.
        step_width_reference: the width $n_0$ of Eq. (N) above which a
            tensor's step shrinks as $\\sqrt{n_0 / n}$; `None` (default): no
            width scaling.
        step_depth_floor: `(c, ℓ_max)` of Eq. (D): the multiplier's floor
            becomes $\\min(\\ell_{max}, \\max(\\ell, c/L))$ for a model of $L$
            matrices (`depth_floor`); `None` (default): the floor $\\ell$ of
            `step_scale_range` for every model.
        step_shallow_ceiling: $(C, a_1)$ of Eq. (C): the multiplier's ceiling
            becomes $\\min(C, \\max(h, C/L))$ for a model of $L$ matrices
            (`shallow_ceiling`), at least `step_scale_range`'s ceiling $h$,
            and above $h$ the agreement threshold of (A2) is $a_1$ instead
            of $a_0$; `None` (default): $h$ for every model.
        step_kernel_floor: `(ℓ_K, L_K)` of Eq. (K): in a model of at least
            $L_K$ matrices, the multiplier's floor for tensors of four or
            more axes (2-D and 3-D convolution kernels, in any layout) is at
            least $\\ell_K$, between `step_scale_range`'s floor and 1.
            Three-axis tensors are left out: they are as often multi-head
            attention kernels (Flax's `DenseGeneral`, shaped `(d, heads,
            d_head)`) or layers stacked for `jax.lax.scan` as 1-D
            convolutions, and a 4-axis stack of such layers is read as a
            kernel. `None` (default): the same floor as every other tensor.
        step_shallow_floor: `(ℓ_S, L_S)` of Eq. (D2): in a model of at most
            $L_S$ matrices (counted as in (D); a model without matrices
            included), the multiplier's floor for every tensor is at least
            $\\ell_S$, between `step_scale_range`'s floor and ceiling. `None`
            (default): the floor of (A2) (or (D)) for every model.
        step_spike_guard: `(K, λ, μ)` of Eq. (G): the floor of (A2) (or (D))
            becomes a soft one that only spikes cross: once $\\nu$ has seen
            $1/(1 - \\beta_2)$ gradients, a tensor whose multiplier sits at
            it and whose gradient RMS is $r_t$ times its running scale (S),
            $r_t$ above $K$, has its log multiplier lowered by
            $\\lambda \\log(r_t / K)$, down to `step_scale_range`'s floor,
            and below the soft floor it recovers by $\\mu$ per step
            (`spike_penalty`, `log_step_scale`); `None` (default): no spike
            guard.
        skip_nonfinite: skip a step whose gradient is not finite.
        key: PRNG key for θ.

    Returns:
        The learned optimizer, an `eqx.Module` whose array fields are θ; use it
        with [`mnemosyne.mnemosyne`][]`(lopt=...)` or meta-train it.

    Examples:
        >>> import jax, jax.numpy as jnp, mnemosyne
        >>> lopt = mnemosyne.CoordinatewiseMnemosyne(key=jax.random.key(0))
        >>> lopt.memory.floats_per_slot()
        4
        >>> params = {"w": jnp.ones((4, 3))}
        >>> lopt.state_floats_per_parameter(params)  # memory + second moment
        5.0
        >>> tx = mnemosyne.mnemosyne(lopt=lopt)
        >>> updates, state = tx.update(params, tx.init(params), params)
        >>> updates["w"].shape
        (4, 3)

    References:
        Jain, Choromanski, Dubey, Singh, Sindhwani, Zhang, Tan, "Mnemosyne:
        Learning to Train Transformers with Transformers", NeurIPS 2023
        (arXiv 2302.01128): the compact associative memory and the two
        variants. Choromanski et al., "Rethinking Attention with Performers",
        ICLR 2021 (arXiv 2009.14794): the positive random features.
    """

    packs_small_leaves: ClassVar[bool] = True
    memory_per_coordinate: ClassVar[bool] = True
    embed_w: Float[Array, "d_model features"]
    embed_b: Float[Array, " d_model"]
    memory: CompactAssociativeMemory
    head: LearnedStepHead
    step_timescales: tuple[float, ...] = eqx.field(static=True)
    feature_clip: float = eqx.field(static=True)
    skip_nonfinite: bool = eqx.field(static=True)
    second_moment_decay: float | None = eqx.field(static=True)
    gradient_scale: str = eqx.field(static=True)
    epsilon: float = eqx.field(static=True)
    read_out: bool = eqx.field(static=True)
    sign_symmetric: bool = eqx.field(static=True)
    step_adaptation: float | None = eqx.field(static=True)
    step_scale_range: tuple[float, float] = eqx.field(static=True)
    step_agreement_threshold: float | None = eqx.field(static=True)
    step_warmup: tuple[float, int] | None = eqx.field(static=True)
    step_width_reference: int | None = eqx.field(static=True)
    step_depth_floor: tuple[float, float] | None = eqx.field(static=True)
    step_shallow_ceiling: tuple[float, float] | None = eqx.field(static=True)
    step_kernel_floor: tuple[float, int] | None = eqx.field(static=True)
    step_shallow_floor: tuple[float, int] | None = eqx.field(static=True)
    step_spike_guard: tuple[float, float, float] | None = eqx.field(static=True)
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
        step_timescales: tuple[float, ...] = (10.0, 100.0, 1000.0, 10000.0),
        alpha: float = 1e-3,
        beta: float = 1.0,
        magnitude_clip: float = 2.0,
        direction_clip: float | None = 5.0,
        feature_clip: float = 10.0,
        second_moment_decay: float | None = 0.999,
        gradient_scale: str = "running",
        epsilon: float = 1e-8,
        read_out: bool = True,
        sign_symmetric: bool = True,
        step_adaptation: float | None = None,
        step_scale_range: tuple[float, float] = (0.25, 4.0),
        step_agreement_threshold: float | None = None,
        step_warmup: tuple[float, int] | None = None,
        step_width_reference: int | None = None,
        step_depth_floor: tuple[float, float] | None = None,
        step_shallow_ceiling: tuple[float, float] | None = None,
        step_kernel_floor: tuple[float, int] | None = None,
        step_shallow_floor: tuple[float, int] | None = None,
        step_spike_guard: tuple[float, float, float] | None = None,
        skip_nonfinite: bool = True,
        key: PRNGKeyArray,
    ):
        self.config = freeze_config(locals())
        k_embed, k_mem, k_head = jax.random.split(key, 3)
        num_in = NUM_COORDINATE_FEATURES + len(step_timescales)
        adaptive = second_moment_decay is not None
        self.embed_w, self.embed_b = _token_embedding(k_embed, d_model, num_in)
        self.memory = CompactAssociativeMemory(
            d_model, num_heads=num_heads, num_features=num_features, key_size=key_size,
            value_size=value_size, timescales=timescales, key=k_mem,
        )
        if adaptive:  # token channel 0 is g~, every head's first value reads it
            self.embed_w = self.embed_w.at[0].set(jnp.zeros(num_in).at[0].set(1.0))
            self.memory = _momentum_initialised(self.memory)
        num_read = num_heads * value_size if read_out else 0
        odd = ODD_FEATURES[adaptive] + (True,) * num_read if sign_symmetric else None
        self.head = LearnedStepHead(
            num_in + num_read, hidden_size, alpha=alpha, beta=beta,
            magnitude_clip=magnitude_clip, direction_clip=direction_clip,
            direction_input=num_in if adaptive and read_out else 0, odd_inputs=odd,
            key=k_head,
        )
        self.step_timescales = tuple(float(t) for t in step_timescales)
        self.feature_clip = float(feature_clip)
        self.second_moment_decay = None if not adaptive else float(second_moment_decay)
        if gradient_scale not in ("running", "current"):
            raise ValueError(
                f"gradient_scale must be 'running' or 'current', got {gradient_scale!r}"
            )
        self.gradient_scale = gradient_scale
        self.epsilon = float(epsilon)
        self.read_out = bool(read_out)
        self.sign_symmetric = bool(sign_symmetric)
        if step_adaptation is not None and not (adaptive and read_out):
            raise ValueError(
                "step_adaptation reads the memory's momentum channel, which only "
                "v2 with the memory read-out has (second_moment_decay set and "
                "read_out=True)"
            )
        low, high = (float(b) for b in step_scale_range)
        if not 0.0 < low <= 1.0 <= high:
            raise ValueError(
                f"step_scale_range must satisfy 0 < low <= 1 <= high, got "
                f"{step_scale_range!r}"
            )
        self.step_adaptation = None if step_adaptation is None else float(
            step_adaptation
        )
        self.step_scale_range = (low, high)
        if step_agreement_threshold is not None:
            if not -1.0 < step_agreement_threshold < 1.0:
                raise ValueError(
                    "step_agreement_threshold is a cosine's threshold and must lie "
                    f"in (-1, 1), got {step_agreement_threshold!r}"
                )
            step_agreement_threshold = float(step_agreement_threshold)
        self.step_agreement_threshold = step_agreement_threshold
        self.step_warmup = _checked_warmup(step_warmup)
        self.step_width_reference = _checked_width_reference(step_width_reference)
        self.step_depth_floor = _checked_depth_floor(step_depth_floor, low)
        self.step_shallow_ceiling = _checked_shallow_ceiling(step_shallow_ceiling, high)
        self.step_kernel_floor = _checked_floor_and_count(
            "step_kernel_floor", "min_matrices", step_kernel_floor, low, 1.0, 1
        )
        self.step_shallow_floor = _checked_floor_and_count(
            "step_shallow_floor", "max_matrices", step_shallow_floor, low, high, 0
        )
        self.step_spike_guard = _checked_spike_guard(step_spike_guard)
        self.skip_nonfinite = skip_nonfinite

    def _memory_slots(self, shape):
        return tuple(shape)

    def _leaf_step(self, grad, param, memory, step, backend, axis_names, rms):
        B = backend
        nu = None
        if self.second_moment_decay is not None:
            # in the state's own shape (1, *shape): a reshape of the result
            # would make XLA on CPU copy it into the state instead of
            # writing it in place
            stored = B.second_moment(
                memory.second_moment, grad[None], self.second_moment_decay
            )
            memory, nu = memory._replace(second_moment=stored), stored[0]
        f, e, _ = self.features(grad, param, step, B, axis_names, rms, nu)
        if not self.read_out:
            return self._warmed_up(-self.head(f, e, f[:0], B), step, B), memory, None
        embedding = fold_shared_inputs(self.embed_w, self.embed_b, e, len(f), B)
        odd = ODD_FEATURES[nu is not None] if self.sign_symmetric else None
        adapts = self.step_adaptation is not None
        memory, read, *momentum = self.memory(
            memory, f, B, embedding=embedding, odd_inputs=odd, previous_momentum=adapts
        )
        update = self._warmed_up(-self.head(f, e, read, B), step, B)
        return update, memory, momentum[0] if adapts else None

    def _warmed_up(self, update, step, B):
        """`update` times the warm-up factor $w_t$ of Eq. (W), if `step_warmup`."""
        if self.step_warmup is None:
            return update
        start, steps = self.step_warmup
        return update * B.warmup_factor(step, start, steps, update.dtype)


def layer_shapes(shapes, stacked) -> list[tuple[int, tuple[int, ...]] | None]:
    """`(count, shape)` of the layers in each leaf (`None` for `None` leaves),
    the view of the model that the depth (D), kernel (K) and width (N) rules
    read: a leaf of global shape `shape` whose leading `k` axes (its entry of
    `stacked`) index stacked layers holds `prod(shape[:k])` layers of shape
    `shape[k:]`; an unstacked leaf (`k = 0`) is one layer of its own shape."""
    return [
        None if shape is None else (int(np.prod(shape[:k])), tuple(shape[k:]))
        for shape, k in zip(shapes, stacked, strict=True)
    ]


def _stacked_axes_per_leaf(stacked_axes, grads, params, treedef) -> list[int]:
    """`stacked_axes` (a prefix of `grads`' structure, or a function of
    `params` returning one) as one checked int per leaf, 0 everywhere if
    `None`; a `ValueError` naming what is wrong otherwise."""
    if stacked_axes is None:
        return [0] * treedef.num_leaves
    if callable(stacked_axes):
        stacked_axes = stacked_axes(params)
    is_none = lambda x: x is None
    try:
        full = jax.tree.map(
            lambda k, sub: jax.tree.map(lambda _: k, sub, is_leaf=is_none),
            stacked_axes, grads, is_leaf=is_none,
        )
        axes = treedef.flatten_up_to(full)
    except (ValueError, TypeError) as error:
        raise ValueError(
            "stacked_axes must be a pytree prefix of params (one int per leaf "
            f"or per subtree) or a function of params returning one: {error}"
        ) from None
    leaves = jax.tree_util.tree_flatten_with_path(grads, is_leaf=is_none)[0]
    for (path, g), k in zip(leaves, axes, strict=True):
        if g is None:
            continue
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
            raise ValueError(
                f"stacked_axes at {key_path(path)} must be a number of leading axes "
                f"(an int >= 0), got {k!r}"
            )
        if k > np.ndim(g):
            raise ValueError(
                f"stacked_axes at {key_path(path)} is {k}, but the leaf has shape "
                f"{tuple(np.shape(g))}: more stacked axes than axes"
            )
    return [0 if g is None else int(k) for (_, g), k in zip(leaves, axes, strict=True)]


def width_factor(shape: tuple[int, ...], reference: int | None) -> float:
    r"""Eq. (N): the factor of a tensor's step for its width,
    $\min\big(1, \sqrt{n_0 / n}\big)$ with $n_0$ = `reference` and $n$ the
    tensor's size over its largest axis (a matrix's smaller side, whatever its
    layout; `d_model` for a Transformer's matrices; a convolution kernel's
    fan-in when its output channels are its largest axis). Vectors and scalars
    (biases, norms), and every tensor when `reference` is `None`, take 1.

    Adam's update has the same size per coordinate at every width, so a
    matrix's output moves $n$ times as far when its $n$ inputs move together,
    and the learning rate that suits a wide Transformer is smaller (Yang et
    al. 2022, muP, take it as $1/n$). The shipped reading uses $n_0 = 128$
    (since session 21; docs/results.md, "Width").
    """
    if reference is None or len(shape) < 2 or 0 in shape:  # (empty: nothing to scale)
        return 1.0
    width = int(np.prod(shape)) // max(shape)
    return min(1.0, float(np.sqrt(reference / width)))


def _width_scaled(update, shape, reference):
    """`update` times its tensor's width factor (N), if not 1."""
    factor = width_factor(shape, reference)
    return update if factor == 1.0 else update * factor


def _checked_width_reference(reference) -> int | None:
    """`step_width_reference` as an int, or a `ValueError` naming what is wrong."""
    if reference is None:
        return None
    if not (int(reference) == reference and reference >= 1):
        raise ValueError(
            f"step_width_reference is a width n_0 >= 1 (or None), got {reference!r}"
        )
    return int(reference)


def depth_floor(num_matrices: int, low: float, setting: tuple[float, float]) -> float:
    r"""Eq. (D): the floor of the step multiplier (A2) for a model of
    $L$ = `num_matrices` matrices (gradient leaves of two or more axes:
    dense and convolution kernels, embeddings),
    $\ell_L = \min\big(\ell_{max}, \max(\ell, c / L)\big)$ with $\ell$ = `low`
    and $(c, \ell_{max})$ = `setting`; $\ell_{max}$ for a model without
    matrices.

    Once a tensor's gradient is mostly noise, (A2) shrinks its multiplier to
    the floor. A deep network needs that small step: its output moves by
    about the sum of its $L$ layers' relative changes (Bernstein et al. 2020,
    "On the distance between two neural networks and the stability of
    learning"), so the per-layer step that keeps the function's change fixed
    falls as $1/L$ (automatic gradient descent, Bernstein et al. 2023, takes
    $\eta / L$). A shallow model at the same floor is slowed for no gain:
    long noisy runs of models of at most four matrices ended 0.5-6% above
    Adam(1e-3) at the floor 1/4 and below it at 1/2, while spiky runs near
    zero loss (a full-batch sine fit, batch norm) did better at 1/4
    (docs/results.md, "A depth-aware floor"); models of at most two
    matrices gain from a higher floor still (Eq. (D2), `step_shallow_floor`).
    The count is over the pytree the optimizer updates: layers stacked into
    one array (for `jax.lax.scan`) count once, unless `update`'s
    `stacked_axes` names their stacking axes (`layer_shapes`).
    """
    c, ceiling = setting
    if num_matrices == 0:
        return ceiling
    return min(ceiling, max(low, c / num_matrices))


def shallow_ceiling(num_matrices: int, high: float, largest: float) -> float:
    r"""Eq. (C): the ceiling of the step multiplier (A2) for a model of
    $L$ = `num_matrices` matrices (counted as in `depth_floor`),
    $h_L = \min\big(C, \max(h, C / L)\big)$ with $h$ = `high` and $C$ =
    `largest`; $C$ for a model without matrices.

    The depth floor's argument from the other end of the range: the
    multiplier grows only while a tensor's gradients keep agreeing with its
    momentum (a smooth problem), and there the function's change per step is
    about the sum of its $L$ layers' relative changes, so a shallow model can
    take larger steps than a deep one before it crosses the edge of
    stability. Models of $L \ge C/h$ matrices keep $h$: a ceiling above 2
    made a 6-layer ViT and 16-layer GELU MLPs climb (docs/results.md, "A
    higher ceiling on the multiplier") and a 7-matrix sigmoid MLP end 3x
    higher ("A ceiling that rises for shallow models"). Above $h$ the
    multiplier grows only on an agreement above $a_1$
    (`AbstractMnemosyne._log_step_scale`): the single-example gradients of
    a logistic regression agree with the momentum above $a_0$ but seldom
    above 0.3; without that gate they took it to the ceiling and the run
    ended 1.4x higher over 32,000 steps.
    """
    if num_matrices == 0:
        return largest
    return min(largest, max(high, largest / num_matrices))


def _checked_shallow_ceiling(setting, high) -> tuple[float, float] | None:
    """`step_shallow_ceiling` as floats, or a `ValueError` naming what is wrong."""
    if setting is None:
        return None
    try:
        largest, gate = (float(x) for x in setting)
    except (TypeError, ValueError):
        raise ValueError(
            f"step_shallow_ceiling is a pair (C, a_1), got {setting!r}"
        ) from None
    if not (largest >= high and -1.0 < gate < 1.0):
        raise ValueError(
            "step_shallow_ceiling = (C, a_1) needs C >= step_scale_range's ceiling "
            f"and -1 < a_1 < 1, got {setting!r} with ceiling {high!r}"
        )
    return (largest, gate)


def _checked_depth_floor(setting, low) -> tuple[float, float] | None:
    """`step_depth_floor` as floats, or a `ValueError` naming what is wrong."""
    if setting is None:
        return None
    try:
        c, ceiling = (float(x) for x in setting)
    except (TypeError, ValueError):
        raise ValueError(
            f"step_depth_floor is a pair (c, max_floor), got {setting!r}"
        ) from None
    if not (c > 0 and low <= ceiling <= 1.0):
        raise ValueError(
            "step_depth_floor = (c, max_floor) needs c > 0 and step_scale_range's "
            f"floor <= max_floor <= 1, got {setting!r} with floor {low!r}"
        )
    return (c, ceiling)


def _checked_floor_and_count(
    name: str, count: str, setting, low: float, high: float, least_count: int
) -> tuple[float, int] | None:
    """A `(floor, count)` setting (`step_kernel_floor`, `step_shallow_floor`)
    as `(float, int)`, or a `ValueError` naming what is wrong: `low <= floor
    <= high` and a whole count of at least `least_count`."""
    if setting is None:
        return None
    try:
        floor, whole = setting
        floor, whole = float(floor), float(whole)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} is a pair (floor, {count}), got {setting!r}"
        ) from None
    if not (low <= floor <= high and whole == int(whole) and whole >= least_count):
        raise ValueError(
            f"{name} = (floor, {count}) needs {low!r} <= floor <= {high!r} and "
            f"a whole {count} >= {least_count}, got {setting!r}"
        )
    return (floor, int(whole))


def _checked_spike_guard(setting) -> tuple[float, float, float] | None:
    """`step_spike_guard` as floats, or a `ValueError` naming what is wrong."""
    if setting is None:
        return None
    try:
        limit, strength, recovery = (float(v) for v in setting)
    except (TypeError, ValueError):
        raise ValueError(
            f"step_spike_guard is a triple (K, strength, recovery), got {setting!r}"
        ) from None
    if not (limit > 0 and strength >= 0 and recovery >= 0):
        raise ValueError(
            "step_spike_guard = (K, strength, recovery) needs K > 0, strength >= 0 "
            f"and recovery >= 0, got {setting!r}"
        )
    return limit, strength, recovery


def _checked_warmup(step_warmup) -> tuple[float, int] | None:
    """`step_warmup` as `(w_0, T)`, or a `ValueError` naming what is wrong."""
    if step_warmup is None:
        return None
    start, steps = step_warmup
    if not (0.0 < float(start) <= 1.0 and int(steps) == steps and steps >= 1):
        raise ValueError(
            "step_warmup is (start, steps): a start factor in (0, 1] and a whole "
            f"number of steps >= 1, got {step_warmup!r}"
        )
    return float(start), int(steps)


def _token_embedding(key, d_model: int, num_inputs: int):
    """The token embedding $\\xi = W_{in} f + b_{in}$ of both variants:
    $W_{in} \\sim \\mathcal N(0, 1/\\text{inputs})$, $b_{in} = 0$."""
    weight = jax.random.normal(key, (d_model, num_inputs)) / np.sqrt(num_inputs)
    return weight, jnp.zeros(d_model)


def _momentum_initialised(memory: CompactAssociativeMemory) -> CompactAssociativeMemory:
    """The memory with every head's first value reading token channel 0 and
    small queries and keys, so its read-out starts as a discounted average of
    that channel (momentum)."""
    value = jnp.zeros_like(memory.value).at[:, 0, 0].set(1.0)
    return eqx.tree_at(
        lambda m: (m.value, m.query, m.key_proj),
        memory, (value, 0.1 * memory.query, 0.1 * memory.key_proj),
    )


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

    Args:
        d_model: token width.
        num_levels: levels $L$ of the hierarchical pooling encoder.
        chunk_len: tokens per chunk $c$ (each level pools $c$ tokens into one).
        encoder_features: random features of the encoder's Performer blocks.
        num_heads: memory heads $H$.
        num_features: random features per memory head ($r$).
        key_size: width of the memory's queries and keys.
        value_size: width of each head's values ($d_v$).
        timescales: per-head memory timescales (default: spread
            geometrically over 10 to 100 steps).
        hidden_size: width of the head's hidden layer.
        step_timescales: timescales of the step embedding.
        alpha: step scale $\\alpha$ of (O).
        beta: magnitude scale $\\beta$ of (O).
        feature_clip: clip of the normalised features.
        skip_nonfinite: skip a step whose gradient is not finite.
        key: PRNG key for θ.

    Returns:
        The learned optimizer, an `eqx.Module` whose array fields are θ.

    Examples:
        >>> import jax, jax.numpy as jnp, mnemosyne
        >>> lopt = mnemosyne.TensorwiseMnemosyne(key=jax.random.key(0))
        >>> lopt.encoder.num_meta_tokens(1000)  # 1000 coordinates, 16**2 pooled
        4
        >>> params = {"w": jnp.ones((10, 100))}
        >>> tx = mnemosyne.mnemosyne(lopt=lopt)
        >>> updates, _ = tx.update(params, tx.init(params), params)
        >>> updates["w"].shape
        (10, 100)
        >>> lopt.init(params).memory["w"].numerator.shape[-1]  # one slot a meta-token
        4

    References:
        The hierarchical pooling encoder and the memory per meta-token: Jain et
        al., NeurIPS 2023, "Mnemosyne: Learning to Train Transformers with
        Transformers" (arXiv 2302.01128), Fig. 1. The encoder's and the
        memory's positive random features: Choromanski et al., ICLR 2021,
        "Rethinking Attention with Performers" (arXiv 2009.14794).
    """

    packs_small_leaves: ClassVar[bool] = False
    memory_per_coordinate: ClassVar[bool] = False
    embed_w: Float[Array, "d_model features"]
    embed_b: Float[Array, " d_model"]
    encoder: HierarchicalPoolingEncoder
    memory: CompactAssociativeMemory
    head: LearnedStepHead
    step_timescales: tuple[float, ...] = eqx.field(static=True)
    feature_clip: float = eqx.field(static=True)
    skip_nonfinite: bool = eqx.field(static=True)
    second_moment_decay: None = eqx.field(static=True)
    gradient_scale: str = eqx.field(static=True)
    epsilon: float = eqx.field(static=True)
    read_out: bool = eqx.field(static=True)
    step_adaptation: None = eqx.field(static=True)
    step_scale_range: tuple[float, float] = eqx.field(static=True)
    step_agreement_threshold: None = eqx.field(static=True)
    step_width_reference: None = eqx.field(static=True)
    step_depth_floor: None = eqx.field(static=True)
    step_shallow_ceiling: None = eqx.field(static=True)
    step_kernel_floor: None = eqx.field(static=True)
    step_shallow_floor: None = eqx.field(static=True)
    step_spike_guard: None = eqx.field(static=True)
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
        self.embed_w, self.embed_b = _token_embedding(k_embed, d_model, num_in)
        self.encoder = HierarchicalPoolingEncoder(
            d_model, num_levels=num_levels, chunk_len=chunk_len,
            num_features=encoder_features, key=k_enc,
        )
        self.memory = CompactAssociativeMemory(
            d_model, num_heads=num_heads, num_features=num_features, key_size=key_size,
            value_size=value_size, timescales=timescales, key=k_mem,
        )
        self.head = LearnedStepHead(
            num_in + num_heads * value_size,
            hidden_size,
            alpha=alpha,
            beta=beta,
            key=k_head,
        )
        self.step_timescales = tuple(float(t) for t in step_timescales)
        self.feature_clip = float(feature_clip)
        self.second_moment_decay = None
        self.gradient_scale = "current"  # v1 features (F): no running scale
        self.epsilon = 0.0
        self.read_out = True
        self.step_adaptation = None  # per-tensor step adaptation: coordinate-wise only
        self.step_scale_range = (1.0, 1.0)
        self.step_agreement_threshold = None
        self.step_width_reference = None  # width scaling (N): coordinate-wise only
        self.step_depth_floor = None
        self.step_shallow_ceiling = None
        self.step_kernel_floor = None
        self.step_shallow_floor = None
        self.step_spike_guard = None
        self.skip_nonfinite = skip_nonfinite

    def _memory_slots(self, shape):
        return (self.encoder.num_meta_tokens(int(np.prod(shape))),)

    def _leaf_step(self, grad, param, memory, step, backend, axis_names, rms):
        if axis_names:
            raise NotImplementedError(
                "TensorwiseMnemosyne pools across a whole tensor; under shard_map "
                "use mnemosyne.sharded_update, which gathers each tensor first"
            )
        B = backend
        shape = grad.shape
        # whole tensors (a NumPy reference leaf is one already: spec None)
        (grad, param), spec = replicate_explicit(grad, param)
        f, e, _ = self.features(grad, param, step, B, rms=rms)
        f = B.reshape_rows(f, (grad.size,))
        embedding = fold_shared_inputs(self.embed_w, self.embed_b, e, len(f), B)
        meta_tokens = self.encoder(B.stack_rows(B.dense(*embedding, f)), B)
        memory, read = self.memory(memory, meta_tokens, B)
        pooled = self.encoder.chunk_len ** len(self.encoder.levels)
        read = B.unpool(read, grad.size, pooled)
        update = -self.head(f, e, read, B).reshape(shape)
        if spec is not None:
            update = jax.reshard(update, spec)
        return update, memory, None


