"""Meta-objectives: how an unroll's inner losses become one meta-loss."""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

MetaLoss = Callable[[Float[Array, " steps"]], Float[Array, ""]]
"""A meta-objective: inner losses of one unroll window -> scalar."""

_LOG_FLOOR = 1e-30


def mean_log_loss(losses: Float[Array, " steps"]) -> Float[Array, ""]:
    r"""Mean log inner loss over the unroll (the default meta-objective).

    $$L(\theta) = \frac{1}{K} \sum_{t=1}^{K} \log \ell_t ,$$

    where $\ell_t$ is the inner loss at step $t$ of a window of $K$ steps. The
    log makes the objective invariant to the scale of the inner loss, so tasks
    of different loss scales weigh alike. Losses are floored at `1e-30` before
    the log (a task solved exactly does not give $-\infty$); inner losses must
    be non-negative.

    Args:
        losses: the inner losses of one unroll window.

    Returns:
        The scalar meta-loss.
    """
    return jnp.mean(jnp.log(jnp.maximum(losses, _LOG_FLOOR)))


def mean_loss(losses: Float[Array, " steps"]) -> Float[Array, ""]:
    r"""Mean inner loss over the unroll, $\frac{1}{K}\sum_t \ell_t$.

    Args:
        losses: the inner losses of one unroll window.

    Returns:
        The scalar meta-loss.
    """
    return jnp.mean(losses)


def last_loss(losses: Float[Array, " steps"]) -> Float[Array, ""]:
    r"""Inner loss at the last step of the unroll, $\ell_K$.

    Args:
        losses: the inner losses of one unroll window.

    Returns:
        The scalar meta-loss.
    """
    return losses[-1]


_META_LOSSES: dict[str, MetaLoss] = {
    "mean_log": mean_log_loss,
    "mean": mean_loss,
    "last": last_loss,
}


def get_meta_loss(meta_loss: str | MetaLoss) -> MetaLoss:
    """Resolve a meta-objective by name (`"mean_log"`, `"mean"`, `"last"`).

    Args:
        meta_loss: a name, or a callable `losses -> scalar`, returned unchanged.

    Returns:
        The meta-objective callable.
    """
    if callable(meta_loss):
        return meta_loss
    try:
        return _META_LOSSES[meta_loss]
    except KeyError:
        raise ValueError(
            f"Unknown meta-loss {meta_loss!r}; choose from {sorted(_META_LOSSES)} "
            "or pass a callable."
        ) from None


def is_diverged(
    losses: Float[Array, " steps"], meta_loss: Float[Array, ""]
) -> Bool[Array, ""]:
    """Whether an unroll diverged: any inner loss or the meta-loss is NaN/Inf.

    Args:
        losses: the inner losses of one unroll window.
        meta_loss: the meta-loss computed from them.

    Returns:
        A boolean scalar.
    """
    return ~(jnp.all(jnp.isfinite(losses)) & jnp.isfinite(meta_loss))


def guard_meta_loss(
    losses: Float[Array, " steps"],
    meta_loss: Float[Array, ""],
    penalty: float = 1e3,
) -> tuple[Float[Array, ""], Bool[Array, ""]]:
    """Replace the meta-loss of a diverged unroll by a finite penalty.

    The estimators use the returned flag to drop diverged samples from the
    meta-gradient (a `where` alone would not stop NaNs in the backward pass) and
    count them; the penalty keeps reported values finite.

    Args:
        losses: the inner losses of one unroll window.
        meta_loss: the meta-loss computed from them.
        penalty: the finite value reported for a diverged unroll.

    Returns:
        `(guarded_meta_loss, diverged)`.
    """
    diverged = is_diverged(losses, meta_loss)
    value = jnp.where(diverged, jnp.asarray(penalty, meta_loss.dtype), meta_loss)
    return value, diverged
