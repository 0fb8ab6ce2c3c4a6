"""`evaluate`: train every optimizer on every task over seeds, one compile per task.

All runs on one task are one jitted program (`mnemosyne._training.train_groups`,
the loop [`mnemosyne.baselines.tuned`][] also uses): the task's forward and
backward pass is vmapped over every (optimizer, run) pair, and each optimizer
updates its own slice. So the task's gradient compiles once per task, not once
per optimizer, and `*_tuned` optimizers grid-search their learning rate as a
traced argument (one more compile per task for all of them together).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from .._training import seed_keys, train_groups
from ..baselines import DEFAULT_GRID
from ..tasks import AbstractTask, get_task
from ._optimizers import (
    DEFAULT_LEARNING_RATE,
    TUNING_SEED,
    floats_per_parameter,
    num_params,
    resolve_optimizer,
    time_steps,
)
from ._result import EvaluationResult, Run

OptimizerSpec = (
    optax.GradientTransformation
    | Callable[[AbstractTask], optax.GradientTransformation]
)


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
    losses, test, acc = train_groups(
        (lambda lr: tx,),
        task,
        np.zeros((1, len(seeds))),
        seed_keys(seeds)[None],
        num_steps=num_steps,
        eval_every=eval_every,
    )
    return Run(
        losses=losses[0],
        eval_steps=tuple(range(eval_every, num_steps + 1, eval_every)),
        test_losses=None if test is None else test[0],
        accuracies=None if acc is None else acc[0],
    )


def _broadcast_keys(keys, num_groups: int):
    """`(R,)` keys -> `(num_groups, R)`, the same keys for every group."""
    data = jax.random.key_data(keys)
    return jax.random.wrap_key_data(jnp.broadcast_to(data, (num_groups, *data.shape)))


def _specs(optimizers) -> dict[str, tuple[str, Callable]]:
    """name -> `("fixed", task -> tx)` or `("tuned", learning_rate -> tx)`."""
    from ..baselines import reference_optimizers

    if not isinstance(optimizers, Mapping):
        resolved = {}
        for name in optimizers:
            base = name[: -len("_tuned")]
            if name.endswith("_tuned") and base in reference_optimizers():
                resolved[name] = ("tuned", reference_optimizers()[base])
            else:
                tx = resolve_optimizer(name)  # fail early (e.g. missing weights)
                resolved[name] = ("fixed", lambda task, tx=tx: tx)
        return resolved
    out = {}
    for name, spec in optimizers.items():
        if isinstance(spec, optax.GradientTransformation):
            out[name] = ("fixed", lambda task, tx=spec: tx)
        elif callable(spec):
            out[name] = ("fixed", spec)
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
    tuning_grid: Sequence[float] | None = None,
    tuning_seed: int = TUNING_SEED,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
) -> EvaluationResult:
    """Train every optimizer on every task for every seed and collect the curves.

    Per task, all optimizers and seeds run in one jitted program (the task's
    gradient vmapped over every run, each optimizer updating its own runs), so
    a task compiles once however many optimizers are compared. Every seed
    starts from the same parameters and sees the same minibatches for every
    optimizer. A run whose loss becomes NaN/inf or exceeds 1000x its initial
    loss is reported as diverged (final loss `inf`), not raised.

    `"<name>_tuned"` optimizers are first grid-tuned on the task: every
    learning rate of `tuning_grid` is trained for `num_steps` steps on one
    separate seed, `tuning_seed` (not an evaluation seed, so tuning does not
    flatter the baseline), all tuned optimizers and learning rates in one
    program with the learning rate traced; the best (lowest mean loss over
    the last 10% of steps, diverged runs excluded) is then evaluated on
    `seeds` like every other optimizer. The chosen learning rates are in
    `Run.learning_rate` and the whole grid in `result.tuning`.

    Args:
        optimizers: names for
            [`resolve_optimizer`][mnemosyne.evaluation.resolve_optimizer]
            (`"*_tuned"` ones are grid-tuned per task as above), or a mapping
            name -> optax transformation, or name -> callable
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
        progress: show a tqdm progress bar over tasks (and tuning phases).
        tuning_grid: learning rates tried for `*_tuned` optimizers; `None`:
            [`mnemosyne.baselines.DEFAULT_GRID`][] (1e-4 ... 1, 9 points).
        tuning_seed: the seed tuning runs use.
        checkpoint: a JSON file rewritten after each task with the results so
            far (the format of `EvaluationResult.save`'s `results.json`).
        resume: load the tasks already in `checkpoint` instead of running them
            again (only if its optimizers, seeds, steps and tuning grid and seed
            are the same; delete the file if an optimizer's weights changed).

    Returns:
        An [`EvaluationResult`][mnemosyne.evaluation.EvaluationResult].

    Raises:
        FileNotFoundError: a named learned optimizer has no pretrained weights.
    """
    from ..baselines._tuned import grid_search

    tasks = [get_task(t) if isinstance(t, str) else t for t in tasks]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"task names must be unique, got {names}")
    specs = _specs(optimizers)
    tuned = {n: f for n, (kind, f) in specs.items() if kind == "tuned"}
    runs: dict[str, dict[str, Run]] = {name: {} for name in specs}
    tuning: dict[str, dict[str, dict]] = {name: {} for name in tuned}
    txs: dict[tuple[str, str], Any] = {}
    eval_every = num_steps if eval_every is None else int(eval_every)
    eval_steps = tuple(range(eval_every, num_steps + 1, eval_every))
    keys = seed_keys(seeds)
    grid = [float(x) for x in (DEFAULT_GRID if tuning_grid is None else tuning_grid)]

    def result_so_far(done: list[str], cost=None, cost_task=None) -> EvaluationResult:
        return EvaluationResult(
            optimizers=list(specs),
            tasks=done,
            seeds=tuple(int(s) for s in seeds),
            num_steps=num_steps,
            runs={o: {t: runs[o][t] for t in done} for o in specs},
            reference=reference,
            user_targets=dict(targets or {}),
            cost=cost or {},
            cost_task=cost_task,
            kinds={t.name: getattr(t, "kind", "") for t in tasks if t.name in done},
            tuning={o: {t: tuning[o][t] for t in done} for o in tuned},
        )

    done: list[str] = []
    if resume and checkpoint is not None and os.path.exists(checkpoint):
        earlier = EvaluationResult.load(checkpoint)
        same = (
            earlier.optimizers == list(specs)
            and earlier.seeds == tuple(int(s) for s in seeds)
            and earlier.num_steps == num_steps
            and all(
                d["seed"] == tuning_seed and d["grid"] == grid
                for per_task in earlier.tuning.values()
                for d in per_task.values()
            )
        )
        for t in earlier.tasks if same else ():
            if t in names and all(
                earlier.runs[o][t].eval_steps == eval_steps for o in specs
            ):
                done.append(t)
                for o in specs:
                    runs[o][t] = earlier.runs[o][t]
                for o in tuned:
                    tuning[o][t] = earlier.tuning[o][t]
    bar = tqdm(
        total=(len(tasks) - len(done)) * (2 if tuned else 1),
        disable=not progress,
        desc="evaluate",
        unit="phase",
    )
    with bar:
        for task in tasks:
            if task.name in done:
                for name, (kind, f) in specs.items():
                    lr = runs[name][task.name].learning_rate
                    txs[name, task.name] = f(lr) if kind == "tuned" else f(task)
                continue
            chosen = {}
            if tuned:
                bar.set_postfix_str(f"tuning {len(tuned)} optimizer(s) on {task.name}")
                found = grid_search(
                    tuned,
                    tuning_grid,
                    task,
                    num_steps=num_steps,
                    key=jax.random.key(tuning_seed),
                )
                for name, r in found.items():
                    chosen[name] = r.learning_rate
                    tuning[name][task.name] = {
                        "seed": tuning_seed,
                        "grid": list(r.losses_by_lr),
                        "scores": list(r.losses_by_lr.values()),
                        "learning_rate": r.learning_rate,
                    }
                bar.update()
            bar.set_postfix_str(f"{len(specs)} optimizer(s) on {task.name}")
            factories = []
            for name, (kind, f) in specs.items():
                if kind == "tuned":
                    factories.append(f)
                    txs[name, task.name] = f(chosen[name])
                else:
                    tx = f(task)
                    factories.append(lambda lr, tx=tx: tx)
                    txs[name, task.name] = tx
            lrs = np.array([[chosen.get(n, 0.0)] * len(seeds) for n in specs])
            losses, test, acc = train_groups(
                factories,
                task,
                lrs,
                _broadcast_keys(keys, len(specs)),
                num_steps=num_steps,
                eval_every=eval_every,
            )
            for g, name in enumerate(specs):
                runs[name][task.name] = Run(
                    losses=losses[g],
                    eval_steps=eval_steps,
                    test_losses=None if test is None else test[g],
                    accuracies=None if acc is None else acc[g],
                    learning_rate=chosen.get(name),
                )
            done.append(task.name)
            if checkpoint is not None:
                result_so_far([t for t in names if t in done]).save_json(checkpoint)
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
    return result_so_far(names, cost, cost_task)
