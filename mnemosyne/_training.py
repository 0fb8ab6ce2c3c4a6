"""The training loop: several optimizers trained on one task in one jitted program.

The loop every part of the package (and the tests and benchmarks) trains with:
[`mnemosyne.evaluation.train`][] and [`mnemosyne.evaluation.evaluate`][],
[`mnemosyne.baselines.tuned`][]'s grid search. The task's forward and backward
pass is vmapped over every (optimizer, run) pair and each optimizer updates
its own slice, so the task's gradient compiles once, not once per optimizer;
learning rates are traced arguments. Key schedule per run:
`init_key, data_key = split(key)`; one batch key per step,
`split(data_key, num_steps)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

#: A run diverged if a loss is NaN/inf or exceeds this factor times its initial loss.
DIVERGENCE_FACTOR: float = 1e3


def diverged(losses: np.ndarray, factor: float = DIVERGENCE_FACTOR) -> np.ndarray:
    """Per seed (rows of `losses`), whether the run diverged.

    A run diverged if any loss is NaN/inf or exceeds `factor * |loss_0|`.
    """
    losses = np.atleast_2d(np.asarray(losses, np.float64))
    bound = factor * np.maximum(np.abs(losses[:, :1]), 1e-12)
    with np.errstate(invalid="ignore"):
        return ~np.all(np.isfinite(losses), axis=1) | np.any(losses > bound, axis=1)


def batch_sampler(task):
    """The task's `sample_batch(key)` (or `batch(key)`); `TypeError` if it has none."""
    sample = getattr(task, "sample_batch", None) or getattr(task, "batch", None)
    if sample is None:
        raise TypeError("task must provide sample_batch(key) (or batch(key))")
    return sample


def training_step(task, tx: optax.GradientTransformation) -> Callable:
    """The `lax.scan` body of training `tx` on `task`: `((params, state),
    batch_key) -> ((params, state), loss)`, the loss at the iterate before the
    update; `tx.update` is given that minibatch loss as optax's `value=` extra
    argument (transformations without extra arguments are wrapped by
    `optax.with_extra_args_support`, which drops it)."""
    sample = batch_sampler(task)

    def step(carry, key):
        params, state = carry
        loss, grads = jax.value_and_grad(task.loss)(params, sample(key))
        updates, state = optax.with_extra_args_support(tx).update(
            grads, state, params, value=loss
        )
        return (optax.apply_updates(params, updates), state), loss

    return step


def run_steps(task, tx: optax.GradientTransformation, params, state, batch_keys):
    """One run: `lax.scan` of `training_step` over `batch_keys`.

    Returns:
        `((params, state), losses)` with `losses[t]` the minibatch loss after
        `t` updates. Call it inside `jax.jit` (or a scan of chunks).
    """
    return jax.lax.scan(training_step(task, tx), (params, state), batch_keys)


def _held_out(task, params):
    """Held-out loss and accuracy of one parameter set (`None`s where undefined)."""
    get = getattr(task, "eval_batch", None)
    batch = None if get is None else get()
    if batch is None:
        return None, None
    accuracy = getattr(task, "accuracy", None)
    return task.loss(params, batch), None if accuracy is None else accuracy(
        params, batch
    )


def _group(tree, g: int):
    return jax.tree.map(lambda x: x[g], tree)


def _train_groups(factories, task, lrs, keys, num_steps: int, eval_every: int):
    """Train `G = len(factories)` optimizers on `task`, `R` runs each, in one program.

    Args:
        factories: `G` callables `learning_rate -> optax transformation`
            (static; a fixed optimizer ignores its argument).
        lrs: `(G, R)` learning rates (traced).
        keys: `(G, R)` PRNG keys, one per run.

    Returns:
        `losses (G, R, num_steps), (test_loss, accuracy) (G, R, evals)`;
        `losses[g, r, t]` is the minibatch loss at the iterate after `t`
        updates (each update is given it as `value=`, as in `training_step`),
        the held-out batch is evaluated after every `eval_every` updates
        (`None` where the task has none).
    """
    sample = batch_sampler(task)
    vv = lambda f: jax.vmap(jax.vmap(f))  # over groups, then runs

    def start(key):
        init_key, data_key = jax.random.split(key)
        return task.init(init_key), jax.random.split(data_key, num_steps)

    params, batch_keys = vv(start)(keys)  # leaves (G, R, ...); keys (G, R, T)
    states = tuple(
        jax.vmap(lambda lr, p, f=f: f(lr).init(p))(lrs[g], _group(params, g))
        for g, f in enumerate(factories)
    )
    value_and_grad = vv(jax.value_and_grad(task.loss))

    def step(carry, step_keys):
        params, states = carry
        loss, grads = value_and_grad(params, vv(sample)(step_keys))
        new_params, new_states = [], []
        for g, f in enumerate(factories):

            def update(lr, grad, state, p, value, f=f):
                tx = optax.with_extra_args_support(f(lr))
                updates, state = tx.update(grad, state, p, value=value)
                return optax.apply_updates(p, updates), state

            p, s = jax.vmap(update)(
                lrs[g], _group(grads, g), states[g], _group(params, g), loss[g]
            )
            new_params.append(p)
            new_states.append(s)
        params = jax.tree.map(lambda *xs: jnp.stack(xs), *new_params)
        return (params, tuple(new_states)), loss

    def block(carry, block_keys):
        carry, losses = jax.lax.scan(step, carry, block_keys)
        return carry, (losses, vv(lambda p: _held_out(task, p))(carry[0]))

    # (G, R, T) -> (T / eval_every, eval_every, G, R): scanned over steps
    blocks = jnp.moveaxis(batch_keys, 2, 0).reshape(
        num_steps // eval_every, eval_every, *keys.shape
    )
    _, (losses, held_out) = jax.lax.scan(block, (params, states), blocks)
    to_runs = lambda x: None if x is None else jnp.moveaxis(x, 0, -1)  # (G, R, evals)
    losses = jnp.moveaxis(losses.reshape(num_steps, *keys.shape), 0, -1)
    return losses, tuple(to_runs(x) for x in held_out)


def train_groups(
    factories: Sequence[Callable[[Any], optax.GradientTransformation]],
    task,
    learning_rates,
    keys,
    *,
    num_steps: int,
    eval_every: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Train `G` optimizers on `task`, `R` runs each, in one jitted program.

    The task's loss and gradient are vmapped over all `G * R` runs (they
    compile once); each optimizer updates its own `R` runs, with its own
    learning rate per run passed as a traced scalar.

    Args:
        factories: `G` callables `learning_rate -> optax transformation`; a
            fixed optimizer ignores its argument (`lambda lr: tx`).
        task: the task (`init`, `loss`, `sample_batch`; optionally
            `eval_batch` and `accuracy`).
        learning_rates: `(G, R)` learning rates.
        keys: `(G, R)` PRNG keys, one per run (see the module's key schedule).
        num_steps: updates per run.
        eval_every: held-out evaluation period (must divide `num_steps`);
            `None`: only at the end.

    Returns:
        `(losses, test_losses, accuracies)`, NumPy float64 arrays of shapes
        `(G, R, num_steps)`, `(G, R, evals)`, `(G, R, evals)` (`None` where
        the task has no held-out batch or accuracy). A diverging run is not
        an error: its losses simply become large or NaN.
    """
    eval_every = num_steps if eval_every is None else int(eval_every)
    if num_steps < 1 or eval_every < 1 or num_steps % eval_every:
        raise ValueError(
            f"eval_every={eval_every} must divide num_steps={num_steps} (both >= 1)"
        )
    lrs = jnp.asarray(learning_rates, jnp.float32)
    # optax's own optimizers are not strict-promotion clean; trace with standard rules.
    with jax.numpy_dtype_promotion("standard"):
        losses, (test, acc) = eqx.filter_jit(_train_groups)(
            tuple(factories), task, lrs, keys, num_steps, eval_every
        )
    as_np = lambda x: None if x is None else np.asarray(x, np.float64)
    return as_np(losses), as_np(test), as_np(acc)


def seed_keys(seeds: Sequence[int]):
    """`(len(seeds),)` PRNG keys, `jax.random.key(s)` for each seed `s`."""
    return jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))
