"""The head (H) and output (O): a coordinate's features and memory read-out to its
step."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._memory import split_by_parity


class LearnedStepHead(eqx.Module):
    """The head (H): a small MLP with a linear skip path, then the output (O).

    With head inputs $u$ (the coordinate's features and its memory read-out):
    $$[d, s] = W_2\\,\\mathrm{relu}(W_1 u + b_1) + U u + b_2,\\qquad
      \\text{step} = \\alpha\\, d\\, \\exp(\\beta\\, c \\tanh(s / c)).$$
    Initialised with $U$ selecting one input for $d$ (`direction_input`) and
    small $W_2$: in v2 (the default) the memory read-out, so the untrained
    optimizer is momentum on Adam-normalised gradients with step $\\alpha =
    10^{-3}$, a sane hand-designed optimizer that meta-training corrects; in v1
    the clipped tensor-normalised gradient (normalised gradient descent).
    """

    w1: Float[Array, "hidden inputs"]
    b1: Float[Array, " hidden"]
    w2: Float[Array, "2 hidden"]
    skip: Float[Array, "2 inputs"]
    b2: Float[Array, " 2"]
    alpha: float = eqx.field(static=True)
    beta: float = eqx.field(static=True)
    magnitude_clip: float = eqx.field(static=True)
    direction_clip: float | None = eqx.field(static=True, default=None)
    odd_inputs: tuple[bool, ...] | None = eqx.field(static=True, default=None)

    def __init__(
        self, num_inputs, hidden_size, *, alpha, beta, magnitude_clip=4.0,
        direction_clip=None, direction_input=0, output_scale=0.01, odd_inputs=None, key,
    ):
        k1, k2 = jax.random.split(key)
        self.w1 = jax.random.normal(k1, (hidden_size, num_inputs)) / np.sqrt(num_inputs)
        self.b1 = jnp.zeros(hidden_size)
        self.w2 = (
            output_scale
            * jax.random.normal(k2, (2, hidden_size))
            / np.sqrt(hidden_size)
        )
        self.skip = jnp.zeros((2, num_inputs)).at[0, direction_input].set(1.0)
        self.b2 = jnp.zeros(2)
        self.alpha, self.beta, self.magnitude_clip = alpha, beta, magnitude_clip
        self.direction_clip = direction_clip
        self.odd_inputs = (
            None if odd_inputs is None else tuple(bool(o) for o in odd_inputs)
        )

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
        if self.odd_inputs is None:
            hidden = [B.relu(h) for h in B.dense(w1, b1, inputs)]
            w_out = B.xp.concatenate(
                [self.w2, skip], axis=1
            )  # [W_2 | U] on [hidden; u]
            direction, magnitude = B.dense(w_out, b2, B.concat_rows(hidden, inputs))
        else:
            direction, magnitude = self._symmetric_outputs(inputs, w1, b1, skip, b2, B)
        return B.learned_step(
            direction, magnitude, self.alpha, self.beta, self.magnitude_clip,
            self.direction_clip,
        )

    def _symmetric_outputs(self, inputs, w1, b1, skip, b2, B):
        r"""Eq. (H±): the head's odd part for the direction and its even part for
        the log-magnitude, under the sign flip $S$ of the odd inputs $u_o$ (the
        signed gradient features and the memory read-out); $u_e$ are the rest.
        With $a = W_1^e u_e + b_1$ and $c = W_1^o u_o$:
        $$d = W_2^d\,\tfrac{1}{2}[\mathrm{relu}(a + c) - \mathrm{relu}(a - c)] + U^d_o
        u_o,$$
        $$s = W_2^s\,\tfrac{1}{2}[\mathrm{relu}(a + c) + \mathrm{relu}(a - c)] + U^s_e
        u_e + b_2^s,$$
        so $d(Su) = -d(u)$ and $s(Su) = s(u)$: no gradient, no step (no drift
        at a stationary point), and the step's size never depends on a sign."""
        (odd, u_odd), (even, u_even) = split_by_parity(inputs, self.odd_inputs)
        a = B.dense(w1[:, even], b1, u_even)
        c = B.dense(w1[:, odd], B.xp.zeros_like(b1), u_odd)
        plus = [B.relu(x + y) for x, y in zip(a, c, strict=True)]
        minus = [B.relu(x - y) for x, y in zip(a, c, strict=True)]
        odd_hidden = [0.5 * (p - m) for p, m in zip(plus, minus, strict=True)]
        even_hidden = [0.5 * (p + m) for p, m in zip(plus, minus, strict=True)]
        xp = B.xp
        w_d = xp.concatenate([self.w2[:1], skip[:1, odd]], axis=1)
        w_s = xp.concatenate([self.w2[1:], skip[1:, even]], axis=1)
        (direction,) = B.dense(
            w_d, xp.zeros_like(b2[:1]), B.concat_rows(odd_hidden, u_odd)
        )
        (magnitude,) = B.dense(w_s, b2[1:], B.concat_rows(even_hidden, u_even))
        return direction, magnitude


def fold_shared_inputs(weight, bias, shared, start, backend):
    """Split off the columns `start : start + len(shared)` of an affine map whose
    inputs there are the same for every coordinate:
    $W u + b = W_{\\setminus} u_{\\setminus} + (b + W_{:, e}\\, e)$."""
    xp = backend.xp
    stop = start + shared.shape[0]
    rest = xp.concatenate([weight[:, :start], weight[:, stop:]], axis=1)
    return rest, bias + weight[:, start:stop] @ shared
