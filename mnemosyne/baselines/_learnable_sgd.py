"""LearnableSGD: the trivial learned optimizer (θ = log learning rate)."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .._lopt_base import AbstractLearnedOptimizer
from .._types import OptState, Params, Updates

_BACKENDS = ("jax", "numpy")


class LearnableSGDState(eqx.Module):
    """State of [`LearnableSGD`][mnemosyne.baselines.LearnableSGD]: a step count."""

    count: Int[Array, ""]


def _check_real(leaf) -> None:
    dtype = getattr(leaf, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(
            "LearnableSGD supports real floating-point parameters only; got a "
            f"leaf of dtype {leaf.dtype}."
        )


class LearnableSGD(AbstractLearnedOptimizer):
    r"""SGD whose learning rate is the only meta-parameter.

    $$u_t = -e^{\theta} g_t, \qquad \theta = \log \eta .$$

    It is the smallest learned optimizer that satisfies the contract, so the
    meta-training machinery ([`mnemosyne.meta`][]) can be tested on problems
    whose optimal $\eta$ is known.

    Args:
        learning_rate: the initial learning rate $\eta = e^\theta$.

    Examples:
        >>> import jax.numpy as jnp
        >>> from mnemosyne.baselines import LearnableSGD
        >>> lopt = LearnableSGD(learning_rate=0.1)
        >>> params = {"w": jnp.ones(3)}
        >>> state = lopt.init(params)
        >>> updates, state = lopt.update({"w": jnp.ones(3)}, state, params)
        >>> updates["w"].round(6)  # -exp(log 0.1) * 1, in float32
        Array([-0.1, -0.1, -0.1], dtype=float32)
    """

    log_learning_rate: Float[Array, ""]

    def __init__(self, learning_rate: float = 1e-2):
        self.log_learning_rate = jnp.log(jnp.asarray(learning_rate, jnp.float32))

    @property
    def learning_rate(self) -> Float[Array, ""]:
        """$\\eta = e^\\theta$."""
        return jnp.exp(self.log_learning_rate)

    def init(self, params: Params) -> OptState:
        """The state: a step count (no per-parameter memory)."""
        jax.tree.map(_check_real, params)
        return LearnableSGDState(count=jnp.zeros((), jnp.int32))

    def update(
        self,
        grads: Updates,
        state: OptState,
        params: Params | None = None,
        *,
        backend: str = "jax",
        **extra_args: Any,
    ) -> tuple[Updates, OptState]:
        """$u = -e^\\theta g$, leaf by leaf, keeping each leaf's dtype.

        Args:
            grads: the gradient pytree; `None` leaves pass through.
            state: the [`LearnableSGDState`][mnemosyne.baselines.LearnableSGDState].
            params: unused.
            backend: `"jax"` or `"numpy"` (identical arithmetic here).
            **extra_args: ignored (optax convention).

        Returns:
            `(updates, new_state)`.
        """
        del params, extra_args
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}.")
        jax.tree.map(_check_real, grads)
        learning_rate = jnp.exp(self.log_learning_rate)

        def step(g):
            if g is None:
                return None
            return -learning_rate.astype(g.dtype) * g

        updates = jax.tree.map(step, grads, is_leaf=lambda x: x is None)
        return updates, LearnableSGDState(count=state.count + 1)
