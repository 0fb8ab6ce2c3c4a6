"""What an optimizer does beside a reference, on the same gradients."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from .._training import batch_sampler


class UpdateComparison(NamedTuple):
    """Per-step measurements along one run of the compared optimizer.

    Attributes:
        losses: `(num_steps,)` minibatch loss before each update.
        rms: `(num_steps,)` RMS of the optimizer's update over all parameters.
        reference_rms: `(num_steps,)` RMS of the reference's update.
        cosine: `(num_steps,)` cosine between the two updates.
    """

    losses: np.ndarray
    rms: np.ndarray
    reference_rms: np.ndarray
    cosine: np.ndarray

    @property
    def ratio(self) -> np.ndarray:
        """`rms / reference_rms`: an effective learning-rate multiplier when the
        cosine is near 1."""
        return self.rms / np.maximum(self.reference_rms, np.finfo(np.float32).tiny)


def compare_updates(
    tx: optax.GradientTransformation,
    reference: optax.GradientTransformation,
    task,
    seed: int = 0,
    *,
    num_steps: int,
) -> UpdateComparison:
    """Train `tx` on `task` and, at every step, also compute `reference`'s
    update for the same gradient from its own state (fed the same gradients,
    never applied).

    For two learned optimizers whose untrained θ₀ is Adam-like momentum, a
    cosine near 1 and a steady ratio say that meta-training changed the step
    size and little else. The key schedule is the training loop's
    (`init_key, data_key = split(key(seed))`, one batch key per step), so the
    compared run is the one [`train`][mnemosyne.evaluation.train] gives.

    Args:
        tx: the optimizer that trains.
        reference: the optimizer compared with it.
        task: the task.
        seed: the run's seed.
        num_steps: updates.

    Returns:
        An [`UpdateComparison`][mnemosyne.evaluation.UpdateComparison].

    Examples:
        >>> import optax
        >>> from mnemosyne import evaluation, tasks
        >>> task = tasks.get_task("quadratic")
        >>> c = evaluation.compare_updates(
        ...     optax.adam(2e-3), optax.adam(1e-3), task, num_steps=10)
        >>> round(float(c.ratio.mean()), 3), round(float(c.cosine.mean()), 3)
        (2.0, 1.0)
    """
    sample = batch_sampler(task)
    init_key, data_key = jax.random.split(jax.random.key(seed))
    params = task.init(init_key)

    def step(carry, key):
        params, state, reference_state = carry
        loss, grads = jax.value_and_grad(task.loss)(params, sample(key))
        update, state = tx.update(grads, state, params)
        reference_update, reference_state = reference.update(
            grads, reference_state, params
        )
        u, r = ravel_pytree(update)[0], ravel_pytree(reference_update)[0]
        norms = jnp.linalg.norm(u) * jnp.linalg.norm(r)
        cosine = jnp.where(norms > 0, u @ r / jnp.where(norms > 0, norms, 1), 0)
        rms = lambda x: jnp.sqrt(jnp.mean(jnp.square(x)))
        carry = (optax.apply_updates(params, update), state, reference_state)
        return carry, (loss, rms(u), rms(r), cosine)

    carry = (params, tx.init(params), reference.init(params))
    run = jax.jit(lambda c, keys: jax.lax.scan(step, c, keys)[1])
    out = run(carry, jax.random.split(data_key, num_steps))
    return UpdateComparison(*(np.asarray(x) for x in out))
