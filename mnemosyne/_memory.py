"""Compact associative memory (CAM): Mnemosyne's temporal module (Sec. 3.3)."""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._random_features import RandomFeatureMap
from ._types import PRNGKeyArray


def split_by_parity(rows, odd_mask):
    """`((odd indices, odd rows), (even indices, even rows))` of feature-major
    `rows` under the static mask of which rows flip sign with the gradient."""
    odd = np.flatnonzero(odd_mask)
    even = np.flatnonzero(~np.asarray(odd_mask))
    return (odd, [rows[i] for i in odd]), (even, [rows[i] for i in even])


class MemoryState(NamedTuple):
    """The memory of one parameter tensor (or of its meta-tokens).

    `numerator` is $N_t$, `(heads, r, d_v, *slots)`; `normaliser` is $\\Psi_t$,
    `(heads, r, *slots)`. A slot is a coordinate (coordinate-wise Mnemosyne) or
    a meta-token (tensor-wise Mnemosyne). `second_moment` is $\nu_t$ of Eq. (V),
    `(1, *shape)`, one per coordinate, when the optimizer keeps one (Mnemosyne
    v2, the default), else `None`.
    """

    numerator: Array
    normaliser: Array
    second_moment: Array | None = None


class CompactAssociativeMemory(eqx.Module):
    """Multi-head compact associative memory with a discount per head.

    Per head $h$, with token $\\xi_t$:

    $$q = W_Q \\xi_t,\\ k = W_K \\xi_t,\\ v = W_V \\xi_t \\qquad (2)$$

    $$N_t = e^{-\\tau_h} N_{t-1} + \\phi(k) v^\\top,\\quad
      \\Psi_t = e^{-\\tau_h} \\Psi_{t-1} + \\phi(k) \\qquad (4)$$

    $$o_t = \\frac{N_t^\\top \\phi(q)}{\\phi(q)^\\top \\Psi_t + \\varepsilon} \\qquad
    (5)$$

    i.e. causal linear (Performer) attention over the optimisation history with
    exponential forgetting, computed recurrently in $O(r\\,d_v)$ memory per slot.
    Each head has its own learned discount $\\tau_h = e^{\\text{log\\_tau}_h}$ so the
    heads cover several time scales.
    """

    query: Float[Array, "heads d_k d_model"]
    key_proj: Float[Array, "heads d_k d_model"]
    value: Float[Array, "heads d_v d_model"]
    log_tau: Float[Array, " heads"]
    features: RandomFeatureMap
    eps: float = eqx.field(static=True)

    def __init__(
        self,
        token_size: int,
        *,
        num_heads: int = 1,
        num_features: int = 2,
        key_size: int = 2,
        value_size: int = 1,
        timescales: tuple[float, ...] | None = None,
        eps: float = 1e-12,
        key: PRNGKeyArray,
    ):
        kq, kk, kv, kf = jax.random.split(key, 4)
        scale = 1.0 / np.sqrt(token_size)
        self.query = scale * jax.random.normal(kq, (num_heads, key_size, token_size))
        self.key_proj = scale * jax.random.normal(kk, (num_heads, key_size, token_size))
        self.value = scale * jax.random.normal(kv, (num_heads, value_size, token_size))
        if timescales is None:
            timescales = (
                tuple(np.geomspace(10.0, 100.0, num_heads))
                if num_heads > 1
                else (10.0,)
            )
        if len(timescales) != num_heads:
            raise ValueError(
                f"need one timescale per head, got {len(timescales)} for {num_heads}"
            )
        self.log_tau = -jnp.log(jnp.asarray(timescales, jnp.float32))  # tau = 1/T
        self.features = RandomFeatureMap(num_heads, num_features, key_size, key=kf)
        self.eps = eps

    @property
    def num_heads(self) -> int:
        return self.query.shape[0]

    @property
    def num_features(self) -> int:
        return 2 * self.features.omega.value.shape[1]

    @property
    def value_size(self) -> int:
        return self.value.shape[1]

    def init_state(self, slots: tuple[int, ...], dtype, xp=jnp) -> MemoryState:
        """Empty memory ($N_0 = 0$, $\\Psi_0 = 0$) for the given slot shape."""
        h, r, dv = self.num_heads, self.num_features, self.value_size
        return MemoryState(
            xp.zeros((h, r, dv) + slots, dtype), xp.zeros((h, r) + slots, dtype)
        )

    def floats_per_slot(self) -> int:
        return self.num_heads * self.num_features * (self.value_size + 1)

    def momentum(self, state: MemoryState) -> Array:
        """Head 0's first value channel read with a uniform query,
        $\\sum_j N_{t,j} / (\\sum_j \\Psi_{t,j} + \\varepsilon)$ (Eq. 5 with
        $\\phi(q) = 1$), shape `slots`: the discounted average of what that
        channel stores. Initialised v2 θ stores $\\tilde g$ there and steps
        along it (momentum, see `CoordinatewiseMnemosyne`), so this is the
        direction of the last step, read from the state alone."""
        numerator, normaliser = _head0_sums(state.numerator, state.normaliser)
        return numerator / (normaliser + self.eps)

    def __call__(
        self, state: MemoryState, inputs, backend, *, embedding=None, odd_inputs=None,
        previous_momentum: bool = False,
    ) -> tuple:
        """Write the tokens (Eq. 4), then read (Eq. 5).

        Args:
            state: the memory.
            inputs: the tokens $\\xi$ `(d_model, *slots)`; or, if `embedding =
                (W, b)` is given, the inputs $u$ of the token embedding
                $\\xi = W u + b$. The projections (2) are then composed with it,
                $q = (W_Q W) u + W_Q b$, so per-slot tokens are never materialised.
            backend: the kernel module.
            odd_inputs: optional static mask over the inputs $u$ (needs
                `embedding`): the values then read only the odd inputs $u_o$,
                linearly and with no bias, and the queries and keys only the
                others, $u_e$: $v = (W_V W)_o u_o$, $q = (W_Q W)_e u_e + W_Q b$
                (Eq. 2±). The read-out (5) is then odd in $u_o$: flipping the
                sign of every past gradient flips the read-out's sign.
            previous_momentum: also return `momentum(state)`, the momentum of
                the memory *before* this write, recovered from the new memory
                by removing the write: with $s_t = \\sum_j \\phi_j(k_t)$ (head
                0), $(\\sum_j N_{t,j} - v_t s_t) / (\\sum_j \\Psi_{t,j} - s_t)$ (the
                discount cancels). Reading the old memory in a reduction of its
                own keeps XLA on CPU from updating it in place (1.6x slower
                updates at 10^7 parameters); the new memory is read freely.
                Exact up to rounding where the old sum exceeds 1e-4 of the write
                (elsewhere float32 cannot recover it: read as 0), and except
                on the first write, where both differences are rounding noise:
                callers mask it.

        Returns:
            The new state and the read-out, `heads * d_v` rows of shape
            `slots`; and, with `previous_momentum`, that momentum.
        """
        B = backend
        heads = range(self.num_heads)
        no_bias = lambda w: B.xp.zeros(w.shape[0], inputs[0].dtype)
        if embedding is None:
            project_context = project_value = lambda w: B.dense(w, no_bias(w), inputs)
        elif odd_inputs is None:
            embed_w, embed_b = embedding
            project_context = project_value = lambda w: B.dense(
                w @ embed_w, w @ embed_b, inputs
            )
        else:  # Eq. (2±)
            embed_w, embed_b = embedding
            (odd, u_odd), (even, u_even) = split_by_parity(inputs, odd_inputs)
            project_value = lambda w: B.dense((w @ embed_w)[:, odd], no_bias(w), u_odd)
            project_context = lambda w: B.dense(
                (w @ embed_w)[:, even], w @ embed_b, u_even
            )
        q = B.stack_heads([project_context(self.query[h]) for h in heads])
        k = B.stack_heads([project_context(self.key_proj[h]) for h in heads])
        v = B.stack_heads([project_value(self.value[h]) for h in heads])
        decay = B.xp.exp(-B.xp.exp(self.log_tau))
        phi_k = self.features.keys(k, B)
        numerator, normaliser = B.cam_write(
            state.numerator, state.normaliser, phi_k, v, decay
        )
        read = B.cam_read(numerator, normaliser, self.features.queries(q, B), self.eps)
        new_state = MemoryState(numerator, normaliser, state.second_moment)
        if not previous_momentum:
            return new_state, read
        # the new memory's sums over the features of head 0, less this write;
        # where the old sum is below 1e-4 of the write, float32 cannot recover
        # it (cancellation): it reads as 0, i.e. no history there
        new_numerator, new_normaliser = _head0_sums(numerator, normaliser)
        written = sum(phi_k[0][j] for j in range(self.num_features))  # heads: a list
        removed = v[0][0] * written
        old = new_numerator - removed
        old = B.xp.where(B.xp.abs(old) > 1e-4 * B.xp.abs(removed), old, 0.0)
        return new_state, read, old / (new_normaliser - written + self.eps)


def _head0_sums(numerator, normaliser):
    """Head 0's first value channel of $N$ and its $\\Psi$, each summed over
    the random features: a sum of planes, not a reduction over the feature
    axis, which XLA on CPU does not fuse into its consumers."""
    features = range(numerator.shape[1])
    return (
        sum(numerator[0, j, 0] for j in features),
        sum(normaliser[0, j] for j in features),
    )
