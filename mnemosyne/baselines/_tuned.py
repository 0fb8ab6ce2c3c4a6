"""Hand-designed reference optimizers and a learning-rate grid search."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

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
            diverged (a NaN or infinite loss on any seed at any step).
        curves: per grid point, the loss at each step, averaged over seeds
            (`(num_steps,)` NumPy arrays; may contain NaN/inf where diverged).
    """

    learning_rate: float
    final_loss: float
    losses_by_lr: dict[float, float]
    curves: dict[float, np.ndarray]


def _sampler(task):
    sample = getattr(task, "sample_batch", None) or getattr(task, "batch", None)
    if sample is None:
        raise TypeError("task must provide sample_batch(key) (or batch(key))")
    return sample


def _make_run(factory: OptimizerFactory, num_steps: int):
    """`run(task, learning_rate, keys) -> losses (seeds, num_steps)`: one inner
    training run per key, the loss recorded at each iterate before its update.

    The task is an argument (not a closure) so that its data arrays are traced
    inputs of the compiled function rather than embedded constants."""

    def run_one(task, learning_rate, key):
        sample = _sampler(task)
        init_key, data_key = jax.random.split(key)
        params = task.init(init_key)
        opt = factory(learning_rate)
        opt_state = opt.init(params)

        def step(carry, batch_key):
            params, opt_state = carry
            batch = sample(batch_key)
            loss, grads = jax.value_and_grad(task.loss)(params, batch)
            updates, opt_state = opt.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return (params, opt_state), loss

        keys = jax.random.split(data_key, num_steps)
        _, losses = jax.lax.scan(step, (params, opt_state), keys)
        return losses

    return jax.vmap(run_one, in_axes=(None, None, 0))


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

    the loss averaged over the last $w$ = `final_window` steps; a run with any
    NaN/inf loss counts as $L = \\infty$. Returns the $\\eta$ of lowest $L$.

    The learning rate is passed to the factory as a traced scalar, so the whole
    grid compiles once; a factory that needs a Python float (calls `float()` on
    it) is detected and compiled once per grid point instead.

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
    grid = DEFAULT_GRID if grid is None else tuple(float(lr) for lr in grid)
    if not grid:
        raise ValueError("grid must contain at least one learning rate")
    if num_steps < 1 or num_seeds < 1:
        raise ValueError("num_steps and num_seeds must be at least 1")
    window = max(1, num_steps // 10) if final_window is None else int(final_window)
    window = min(max(window, 1), num_steps)
    keys = jax.random.split(key, num_seeds)

    _sampler(task)  # fail early on a task without a batch sampler
    run = _make_run(optimizer_factory, num_steps)
    traced_run = eqx.filter_jit(run)

    def losses_at(lr):
        nonlocal traced_run
        if traced_run is not None:
            try:
                return traced_run(task, jnp.asarray(lr, jnp.float32), keys)
            except (
                jax.errors.ConcretizationTypeError,
                jax.errors.TracerIntegerConversionError,
            ):
                traced_run = None  # the factory needs a concrete learning rate
        return eqx.filter_jit(lambda t, k: run(t, lr, k))(task, keys)

    losses_by_lr: dict[float, float] = {}
    curves: dict[float, np.ndarray] = {}
    for lr in grid:
        # optax's own optimizers are not strict-promotion clean (e.g. adam's
        # `decay**count` with an int32 count): trace them with standard rules.
        with jax.numpy_dtype_promotion("standard"):
            losses = np.asarray(losses_at(lr), dtype=np.float64)  # (seeds, steps)
        curves[lr] = losses.mean(axis=0)
        if not np.all(np.isfinite(losses)):
            losses_by_lr[lr] = math.inf
        else:
            score = float(losses[:, -window:].mean())
            losses_by_lr[lr] = score if math.isfinite(score) else math.inf

    best = min(grid, key=lambda lr: losses_by_lr[lr])
    if math.isinf(losses_by_lr[best]):
        warnings.warn(
            "tuned: every learning rate in the grid diverged; returning the smallest",
            RuntimeWarning,
            stacklevel=2,
        )
        best = min(grid)
    return TunedResult(best, losses_by_lr[best], losses_by_lr, curves)
