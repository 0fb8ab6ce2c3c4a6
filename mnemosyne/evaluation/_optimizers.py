"""Optimizers by name, and their per-step cost: state memory and update time."""

from __future__ import annotations

import time
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import baselines
from .._transform import mnemosyne

#: Learning rate of the untuned hand-designed optimizers ("adam" is `optax.adam(1e-3)`).
DEFAULT_LEARNING_RATE: float = 1e-3

#: Seed of the runs that tune `*_tuned` optimizers (kept apart from evaluation seeds).
TUNING_SEED: int = 1000

_LEARNED = ("mnemosyne", "lstm", "lstm_multiscale", "lstm_v2", "lstm_multiscale_v2")


def optimizer_names() -> list[str]:
    """Names `resolve_optimizer` accepts (`*_tuned` ones need a task)."""
    hand = sorted(baselines.reference_optimizers())
    return [*_LEARNED, *hand, *(f"{n}_tuned" for n in hand)]


def _learned(name: str) -> optax.GradientTransformation:
    try:
        if name == "mnemosyne":
            return mnemosyne()
        return baselines.lstm(
            variant="multiscale" if "multiscale" in name else "gradient",
            recipe="v2" if name.endswith("_v2") else "v1",
        )
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"optimizer {name!r} needs pretrained meta-weights, not available: {err}"
        ) from err


def tune(
    name: str, task, *, num_steps: int, seed: int = TUNING_SEED
) -> tuple[optax.GradientTransformation, float]:
    """Grid-tune the learning rate of a reference optimizer on `task`.

    Uses [`mnemosyne.baselines.tuned`][] with its default grid (1e-4 ... 1),
    one seed (`seed`, kept apart from the evaluation seeds) and the same
    `num_steps` as the evaluation.

    Returns:
        `(transformation, learning_rate)`.
    """
    factory = baselines.reference_optimizers()[name]
    result = baselines.tuned(
        factory, None, task, num_steps=num_steps, key=jax.random.key(seed)
    )
    return factory(result.learning_rate), result.learning_rate


def resolve_optimizer(
    name: str, task=None, *, num_steps: int = 300
) -> optax.GradientTransformation:
    """An optax transformation from its name.

    - `"mnemosyne"`: `mnemosyne.mnemosyne()` (pretrained);
    - `"lstm"`, `"lstm_multiscale"`: `mnemosyne.baselines.lstm(..., recipe="v1")`
      (pretrained with the first recipe, the suite's stored LSTM column);
      `"lstm_v2"`, `"lstm_multiscale_v2"`: the same LSTMs meta-trained with the
      default Mnemosyne's recipe (`recipe="v2"`, `baselines.lstm()`'s default);
    - `"adam"`, `"adamw"`, `"sgd"` (momentum 0.9), `"lion"`, `"adafactor"`:
      [`mnemosyne.baselines.reference_optimizers`][] at learning rate 1e-3;
    - `"<one of those>_tuned"`: the learning rate grid-tuned on `task` for
      `num_steps` steps (see [`tune`][mnemosyne.evaluation.tune]).

    Raises:
        FileNotFoundError: a learned optimizer whose pretrained weights are
            missing (the message says how to produce them).
        ValueError: an unknown name, or a `_tuned` name without a task.
    """
    hand = baselines.reference_optimizers()
    if name in _LEARNED:
        return _learned(name)
    if name in hand:
        return hand[name](DEFAULT_LEARNING_RATE)
    if name.endswith("_tuned") and name[: -len("_tuned")] in hand:
        if task is None:
            raise ValueError(f"{name!r} is tuned per task: pass the task")
        return tune(name[: -len("_tuned")], task, num_steps=num_steps)[0]
    raise ValueError(f"unknown optimizer {name!r}; known: {optimizer_names()}")


def num_params(params) -> int:
    """Number of scalar parameters in a pytree."""
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def floats_per_parameter(tx: optax.GradientTransformation, params) -> float:
    """Optimizer-state memory in floats per parameter.

    Counts every element of every floating-point leaf of `tx.init(params)`,
    scalars included (so a learned optimizer's per-tensor statistics count),
    divided by the number of parameters. Integer leaves (step counters) are
    not floats and are excluded; `optax.adam` therefore gives exactly 2.
    Learned optimizers whose meta-parameters θ live in the transformation
    (not the state) do not count θ. Nothing is computed (`jax.eval_shape`).
    """
    state = jax.eval_shape(tx.init, params)
    floats = sum(
        int(np.prod(x.shape))
        for x in jax.tree.leaves(state)
        if jnp.issubdtype(x.dtype, jnp.inexact)
    )
    return floats / num_params(params)


def time_steps(
    txs: Mapping[str, optax.GradientTransformation],
    params,
    *,
    repeats: int = 21,
    inner: int = 10,
) -> dict[str, float]:
    """Median seconds of one jitted `tx.update` + `optax.apply_updates`, per optimizer.

    The gradient is a fixed array (`0.01` everywhere), so only the optimizer's
    own work is timed; the transformation is closed over (its arrays are
    compile-time constants, as inside a user's jitted train step). Compilation
    is excluded. The optimizers are timed in turn, `repeats` rounds of `inner`
    calls each, so that load on a shared machine affects all of them alike.
    """
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.01), params)
    steps, states = {}, {}
    with jax.numpy_dtype_promotion("standard"):
        for name, tx in txs.items():

            def step(grads, state, params, tx=tx):
                updates, state = tx.update(grads, state, params)
                return optax.apply_updates(params, updates), state

            steps[name], states[name] = jax.jit(step), tx.init(params)
            jax.block_until_ready(steps[name](grads, states[name], params))
    samples: dict[str, list[float]] = {name: [] for name in txs}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(inner):
                out = step(grads, states[name], params)
            jax.block_until_ready(out)
            samples[name].append((time.perf_counter() - start) / inner)
    return {name: float(np.median(s)) for name, s in samples.items()}


def time_per_step(tx: optax.GradientTransformation, params, **kwargs) -> float:
    """[`time_steps`][mnemosyne.evaluation.time_steps] of a single optimizer."""
    return time_steps({"tx": tx}, params, **kwargs)["tx"]
