"""Hand-designed reference optimizers and a learning-rate grid search."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._training import batch_sampler, diverged, train_groups
from .._types import PRNGKeyArray

OptimizerFactory = Callable[[Any], optax.GradientTransformation]

#: Nine log-spaced learning rates, 1e-4 ... 1 (two points per decade).
DEFAULT_GRID: tuple[float, ...] = tuple(float(x) for x in np.logspace(-4.0, 0.0, 9))


def reference_optimizers() -> dict[str, OptimizerFactory]:
    """Factories `learning_rate -> optax transformation` of the hand-designed baselines.

    Keys: `"adam"`, `"adamw"`, `"sgd"` (heavy-ball momentum 0.9), `"lion"`,
    `"adafactor"`; otherwise optax's defaults. Each factory accepts a float, a
    schedule or a traced scalar.
    """
    return {
        "adam": lambda lr: optax.adam(lr),
        "adamw": lambda lr: optax.adamw(lr),
        "sgd": lambda lr: optax.sgd(lr, momentum=0.9),
        "lion": lambda lr: optax.lion(lr),
        "adafactor": lambda lr: optax.adafactor(lr),
    }


class TunedResult(NamedTuple):
    """Outcome of [`mnemosyne.baselines.tuned`][].

    Attributes:
        learning_rate: the grid point with the lowest final loss.
        final_loss: its final loss (mean over the last steps and the seeds).
        losses_by_lr: final loss of every grid point; `inf` marks a run that
            diverged on any seed (a NaN/inf loss, or one above 1000x its
            initial loss).
        curves: per grid point, the loss at each step, averaged over seeds
            (`(num_steps,)` NumPy arrays; may contain NaN/inf where diverged).
    """

    learning_rate: float
    final_loss: float
    losses_by_lr: dict[float, float]
    curves: dict[float, np.ndarray]


def _score(losses: np.ndarray, window: int) -> float:
    """Mean loss over the last `window` steps and the seeds of `(seeds, steps)`
    losses; `inf` if any seed diverged (a NaN/inf loss, or one above 1000x its
    initial loss: the rule of [`mnemosyne.evaluation.diverged`][])."""
    if np.any(diverged(losses)):
        return math.inf
    score = float(losses[:, -window:].mean())
    return score if math.isfinite(score) else math.inf


def _pick(grid: tuple[float, ...], losses: np.ndarray, window: int) -> TunedResult:
    """The best learning rate from `(len(grid), seeds, steps)` losses."""
    losses_by_lr = {lr: _score(losses[i], window) for i, lr in enumerate(grid)}
    curves = {lr: losses[i].mean(axis=0) for i, lr in enumerate(grid)}
    best = min(grid, key=lambda lr: losses_by_lr[lr])
    if math.isinf(losses_by_lr[best]):
        warnings.warn(
            "tuned: every learning rate in the grid diverged; returning the smallest",
            RuntimeWarning,
            stacklevel=3,
        )
        best = min(grid)
    return TunedResult(best, losses_by_lr[best], losses_by_lr, curves)


_NEEDS_CONCRETE = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerIntegerConversionError,
)


def grid_search(
    optimizer_factories: Mapping[str, OptimizerFactory],
    grid: Sequence[float] | None,
    task,
    *,
    num_steps: int,
    key: PRNGKeyArray,
    num_seeds: int = 1,
    final_window: int | None = None,
) -> dict[str, TunedResult]:
    """[`tuned`][mnemosyne.baselines.tuned] for several optimizers at once.

    Every (optimizer, learning rate, seed) run is part of one jitted program
    (the task's gradient vmapped over all runs, the learning rate a traced
    argument), so the task compiles once for all of them. A factory that
    needs a Python float learning rate is detected and run once per grid point.

    Returns:
        name -> [`TunedResult`][mnemosyne.baselines.TunedResult].
    """
    grid = DEFAULT_GRID if grid is None else tuple(float(lr) for lr in grid)
    if not grid:
        raise ValueError("grid must contain at least one learning rate")
    if num_steps < 1 or num_seeds < 1:
        raise ValueError("num_steps and num_seeds must be at least 1")
    window = max(1, num_steps // 10) if final_window is None else int(final_window)
    window = min(max(window, 1), num_steps)
    batch_sampler(task)  # fail early on a task without a batch sampler
    seed_keys = jax.random.key_data(jax.random.split(key, num_seeds))
    factories = tuple(optimizer_factories.values())
    L, S = len(grid), num_seeds

    def run(factories, lrs, num_groups):
        """losses `(groups, L, S, steps)` for `lrs` of shape (groups, L * S)."""
        data = jnp.broadcast_to(jnp.tile(seed_keys, (L, 1)), (num_groups, L * S, 2))
        keys = jax.random.wrap_key_data(data)
        losses = train_groups(factories, task, lrs, keys, num_steps=num_steps)[0]
        return losses.reshape(num_groups, L, S, num_steps)

    traced_lrs = np.repeat(np.asarray(grid), S)[None]  # grid-major, seeds minor

    def one(factory):
        try:
            return run((factory,), traced_lrs, 1)[0]
        except _NEEDS_CONCRETE:  # the factory needs a concrete learning rate
            per_lr = [
                run((lambda _, lr=lr: factory(lr),), np.zeros((1, L * S)), 1)[0, i]
                for i, lr in enumerate(grid)
            ]
            return np.stack(per_lr)

    try:
        losses = run(
            factories, np.repeat(traced_lrs, len(factories), 0), len(factories)
        )
    except _NEEDS_CONCRETE:
        losses = np.stack([one(f) for f in factories])
    return {
        name: _pick(grid, losses[g], window)
        for g, name in enumerate(optimizer_factories)
    }


def tuned(
    optimizer_factory: OptimizerFactory,
    grid: Sequence[float] | None,
    task,
    *,
    num_steps: int,
    key: PRNGKeyArray,
    num_seeds: int = 1,
    final_window: int | None = None,
) -> TunedResult:
    """Grid-search the learning rate of `optimizer_factory` on `task`.

    For each learning rate $\\eta$ in `grid`, train `num_seeds` runs of
    `num_steps` steps (a jitted `lax.scan` over `task.sample_batch`, the same
    seeds for every $\\eta$) and score

    $$L(\\eta) = \\operatorname{mean}_{\\text{seeds}}\\ \\operatorname{mean}_{t > T-w}
    \\ \\ell_t(\\eta),$$

    the loss averaged over the last $w$ = `final_window` steps; a diverged run
    (any NaN/inf loss, or a loss above 1000x its initial loss, as in
    [`mnemosyne.evaluation.diverged`][]) counts as $L = \\infty$. Returns the
    $\\eta$ of lowest $L$.

    The learning rate is passed to the factory as a traced scalar and the grid
    is vmapped, so the whole grid is one compile and one call; a factory that
    needs a Python float (calls `float()` on it) is detected and compiled once
    per grid point instead. [`grid_search`][mnemosyne.baselines.grid_search]
    tunes several factories in one program.

    Args:
        optimizer_factory: `learning_rate -> optax.GradientTransformation`, e.g. a
            value of [`mnemosyne.baselines.reference_optimizers`][].
        grid: learning rates to try; `None` for `DEFAULT_GRID` (1e-4 ... 1, 9
            log-spaced points).
        task: an object with `init(key) -> params`, `loss(params, batch) -> scalar`
            and `sample_batch(key) -> batch`.
        num_steps: inner training steps per run.
        key: PRNG key; split into the seeds' keys.
        num_seeds: runs per learning rate.
        final_window: steps averaged at the end; default `max(1, num_steps // 10)`.

    Returns:
        A [`mnemosyne.baselines.TunedResult`][].
    """
    return grid_search(
        {"tuned": optimizer_factory},
        grid,
        task,
        num_steps=num_steps,
        key=key,
        num_seeds=num_seeds,
        final_window=final_window,
    )["tuned"]
