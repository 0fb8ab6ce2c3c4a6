"""`evaluate`: train every optimizer on every task over seeds, one compile per pair.

Note: this module has its own training loop rather than reusing the one in
`mnemosyne.baselines._tuned`, because that loop returns only the training
losses, and evaluation also needs the final parameters (held-out loss and
accuracy, optionally every `eval_every` steps). Both loops use the same key
schedule (`init_key, data_key = split(key)`; one batch key per step).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from ..tasks import AbstractTask, get_task
from ._optimizers import (
    DEFAULT_LEARNING_RATE,
    floats_per_parameter,
    num_params,
    resolve_optimizer,
    time_steps,
    tune,
)
from ._result import EvaluationResult, Run

OptimizerSpec = (
    optax.GradientTransformation
    | Callable[[AbstractTask], optax.GradientTransformation]
)


def _held_out(task, params):
    batch = task.eval_batch()
    if batch is None:
        return None, None
    return task.loss(params, batch), task.accuracy(params, batch)


def _train(tx, task, keys, num_steps: int, eval_every: int):
    """One run per key: `losses (seeds, steps), (test_loss, accuracy) (seeds, evals)`.

    `losses[s, t]` is the minibatch loss at the iterate after `t` updates; the
    held-out batch is evaluated after every `eval_every` updates.
    """

    def one(key):
        init_key, data_key = jax.random.split(key)
        params = task.init(init_key)
        batch_keys = jax.random.split(data_key, num_steps).reshape(-1, eval_every)

        def step(carry, batch_key):
            params, state = carry
            loss, grads = jax.value_and_grad(task.loss)(
                params, task.sample_batch(batch_key)
            )
            updates, state = tx.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), loss

        def block(carry, block_keys):
            carry, losses = jax.lax.scan(step, carry, block_keys)
            return carry, (losses, _held_out(task, carry[0]))

        _, (losses, held_out) = jax.lax.scan(
            block, (params, tx.init(params)), batch_keys
        )
        return losses.reshape(-1), held_out

    return jax.vmap(one)(keys)


def train(
    tx: optax.GradientTransformation,
    task: AbstractTask,
    seeds: Sequence[int],
    *,
    num_steps: int,
    eval_every: int | None = None,
) -> Run:
    """Train `tx` on `task` once per seed (a jitted `lax.scan`, seeds vmapped).

    A diverging run is not an error: its losses simply become large or NaN.

    Args:
        tx: the optimizer.
        task: the task.
        seeds: integer seeds; seed `s` uses `jax.random.key(s)` for the
            initial parameters and the minibatches (the same for every optimizer).
        num_steps: updates per run.
        eval_every: evaluate the held-out batch every this many updates (it
            must divide `num_steps`); `None`: only at the end.

    Returns:
        A [`Run`][mnemosyne.evaluation.Run].
    """
    eval_every = num_steps if eval_every is None else int(eval_every)
    if num_steps < 1 or eval_every < 1 or num_steps % eval_every:
        raise ValueError(
            f"eval_every={eval_every} must divide num_steps={num_steps} (both >= 1)"
        )
    keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))
    # optax's own optimizers are not strict-promotion clean; trace with standard rules.
    with jax.numpy_dtype_promotion("standard"):
        losses, (test, acc) = eqx.filter_jit(_train)(
            tx, task, keys, num_steps, eval_every
        )
    as_np = lambda x: None if x is None else np.asarray(x, np.float64)
    return Run(
        losses=np.asarray(losses, np.float64),
        eval_steps=tuple(range(eval_every, num_steps + 1, eval_every)),
        test_losses=as_np(test),
        accuracies=as_np(acc),
    )


def _specs(
    optimizers, num_steps: int
) -> dict[str, Callable[[AbstractTask], tuple[Any, float | None]]]:
    """name -> (task -> (transformation, tuned learning rate or None))."""
    if not isinstance(optimizers, Mapping):
        resolved = {}
        for name in optimizers:
            if name.endswith("_tuned"):
                resolved[name] = lambda task, n=name: tune(
                    n[: -len("_tuned")], task, num_steps=num_steps
                )
            else:
                tx = resolve_optimizer(name)  # fail early (e.g. missing weights)
                resolved[name] = lambda task, tx=tx: (tx, None)
        return resolved
    out = {}
    for name, spec in optimizers.items():
        if isinstance(spec, optax.GradientTransformation):
            out[name] = lambda task, tx=spec: (tx, None)
        elif callable(spec):
            out[name] = lambda task, f=spec: (f(task), None)
        else:
            raise TypeError(
                f"optimizer {name!r}: expected an optax transformation "
                "or a callable task -> transformation"
            )
    return out


def evaluate(
    optimizers: Mapping[str, OptimizerSpec] | Sequence[str],
    tasks: Sequence[str | AbstractTask],
    *,
    seeds: Sequence[int] = (0, 1, 2),
    num_steps: int = 300,
    eval_every: int | None = None,
    targets: Mapping[str, float] | None = None,
    reference: str = "adam",
    measure_cost: bool = True,
    progress: bool = True,
) -> EvaluationResult:
    """Train every optimizer on every task for every seed and collect the curves.

    Each (optimizer, task) pair is one jitted `lax.scan` with the seeds
    vmapped (one compilation per pair). Every seed starts from the same
    parameters and sees the same minibatches for every optimizer. A run whose
    loss becomes NaN/inf or exceeds 1000x its initial loss is reported as
    diverged (final loss `inf`), not raised.

    Args:
        optimizers: names for
            [`resolve_optimizer`][mnemosyne.evaluation.resolve_optimizer]
            (`"*_tuned"` ones are grid-tuned per task for `num_steps` steps),
            or a mapping name -> optax transformation, or name -> callable
            `task -> transformation`.
        tasks: task names (see `mnemosyne.tasks.list_tasks()`) or task objects.
        seeds: integer seeds.
        num_steps: training steps per run.
        eval_every: held-out evaluation period (must divide `num_steps`);
            `None`: only at the end.
        targets: task name -> loss target for steps-to-target; tasks not given
            get the reference's mean final loss plus 5%.
        reference: the optimizer others are compared with (targets, tables,
            the relative-performance plot).
        measure_cost: measure state memory and update time of every optimizer
            (plus `optax.adam(1e-3)` as the time baseline) on the task with the
            most parameters.
        progress: show a tqdm progress bar over (optimizer, task) pairs.

    Returns:
        An [`EvaluationResult`][mnemosyne.evaluation.EvaluationResult].

    Raises:
        FileNotFoundError: a named learned optimizer has no pretrained weights.
    """
    tasks = [get_task(t) if isinstance(t, str) else t for t in tasks]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"task names must be unique, got {names}")
    specs = _specs(optimizers, num_steps)
    runs: dict[str, dict[str, Run]] = {name: {} for name in specs}
    txs: dict[tuple[str, str], Any] = {}
    bar = tqdm(
        total=len(specs) * len(tasks), disable=not progress, desc="evaluate", unit="run"
    )
    with bar:
        for task in tasks:
            for name, spec in specs.items():
                bar.set_postfix_str(f"{name} on {task.name}")
                tx, lr = spec(task)
                txs[name, task.name] = tx
                run = train(tx, task, seeds, num_steps=num_steps, eval_every=eval_every)
                runs[name][task.name] = run._replace(learning_rate=lr)
                bar.update()

    cost, cost_task = {}, None
    if measure_cost and tasks:
        sizes = {
            t.name: num_params(jax.eval_shape(t.init, jax.random.key(0))) for t in tasks
        }
        cost_task = max(sizes, key=sizes.get)
        task = tasks[names.index(cost_task)]
        params = task.init(jax.random.key(0))
        baseline = "optax.adam(1e-3)"  # a name no optimizer in `specs` can clash with
        timed = {baseline: optax.adam(DEFAULT_LEARNING_RATE)}
        timed.update({name: txs[name, cost_task] for name in specs})
        seconds = time_steps(timed, params)
        for name in specs:
            cost[name] = {
                "floats_per_parameter": floats_per_parameter(timed[name], params),
                "time_per_step_s": seconds[name],
                "time_vs_adam": seconds[name] / seconds[baseline],
            }
    return EvaluationResult(
        optimizers=list(specs),
        tasks=names,
        seeds=tuple(int(s) for s in seeds),
        num_steps=num_steps,
        runs=runs,
        reference=reference,
        user_targets=dict(targets or {}),
        cost=cost,
        cost_task=cost_task,
    )
