"""The learned-optimizer contract shared by Mnemosyne and the baselines."""

from __future__ import annotations

import abc
from typing import Any

import equinox as eqx
import jax

from ._types import OptState, Params, Updates


class AbstractLearnedOptimizer(eqx.Module):
    """A learned optimizer: an Equinox module whose array fields are θ.

    Subclasses implement the optax contract on pytrees:

    - `init(params) -> state`: the optimizer state for `params` (arrays or
      `jax.ShapeDtypeStruct`s);
    - `update(grads, state, params=None, *, backend="jax", **extra_args) ->
      (updates, state)`, with the optax sign convention: the new parameters are
      `optax.apply_updates(params, updates)`.

    θ lives in the module's inexact-array fields, so `eqx.filter_grad` with
    respect to the module gives meta-gradients. Fields that hold frozen arrays
    (for example fixed random projections) are wrapped in
    [`mnemosyne.Frozen`][] and excluded from [`mnemosyne.trainable_filter`][].
    """

    @abc.abstractmethod
    def init(self, params: Params) -> OptState:
        """Return the optimizer state for `params`."""

    @abc.abstractmethod
    def update(
        self,
        grads: Updates,
        state: OptState,
        params: Params | None = None,
        *,
        backend: str = "jax",
        **extra_args: Any,
    ) -> tuple[Updates, OptState]:
        """Return `(updates, new_state)`; `params + updates` is the new iterate."""


class Frozen(eqx.Module):
    """Wraps arrays that are part of the optimizer but not meta-trained.

    The value is read through `jax.lax.stop_gradient`, so meta-gradients with
    respect to it are exactly zero, and [`mnemosyne.trainable_filter`][] marks it
    `False` so outer optimizers leave it untouched.
    """

    value: Any

    def get(self):
        """The wrapped value, with gradients stopped."""
        return jax.tree.map(jax.lax.stop_gradient, self.value)


def trainable_filter(lopt: eqx.Module):
    """Filter spec (a pytree of bools like `lopt`): True for every trainable θ leaf.

    Inexact arrays are trainable unless they sit inside a [`mnemosyne.Frozen`][]
    wrapper. Use with `eqx.partition(lopt, trainable_filter(lopt))`.
    """

    def mark(node):
        if isinstance(node, Frozen):
            return jax.tree.map(lambda _: False, node)
        return eqx.is_inexact_array(node)

    return jax.tree.map(mark, lopt, is_leaf=lambda x: isinstance(x, Frozen))
