"""MetaTrainer: the outer loop of meta-training, with resumable checkpoints."""

from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._distributed import (
    gather_to_host,
    is_main_process,
    put_global,
    spread_devices,
)
from .._lopt_base import AbstractLearnedOptimizer, trainable_filter
from .._types import PRNGKeyArray
from ._checkpoint import (
    CheckpointError,
    IncompatibleCheckpointError,
    checkpoint_path,
    describe_settings,
    differing_settings,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    read_checkpoint_header,
    remove_stale_temporaries,
    save_checkpoint,
)
from ._estimators import AbstractGradientEstimator, TruncatedBPTT
from ._unroll import (
    AbstractTruncationSchedule,
    Task,
    TruncationState,
    _raw_key,
    as_truncation_schedule,
)

History = dict[str, list]
_HISTORY_KEYS = ("step", "meta_loss", "grad_norm", "skipped", "num_diverged", "task")

# Independent streams derived from the base key: fold_in(base, stream) then
# fold_in(., index). Nothing depends on mutable Python state, so a resumed run
# draws exactly the keys an uninterrupted one would.
_STREAM_TASK, _STREAM_STATES, _STREAM_STEP = 0, 1, 2


def _is_family(task: Any) -> bool:
    return hasattr(task, "sample") and not hasattr(task, "loss")


def task_config_key(task: Task) -> Any:
    """A hashable key identifying a task's *static* configuration.

    Two tasks with the same key share a compiled outer step: same pytree
    structure and static fields, same shapes and dtypes of array leaves
    (their values may differ), same values of non-array leaves.
    """
    leaves, treedef = jax.tree.flatten(task)
    parts = []
    for leaf in leaves:
        if eqx.is_array(leaf):
            parts.append(("array", tuple(leaf.shape), str(leaf.dtype)))
        else:
            try:
                hash(leaf)
                parts.append(("value", leaf))
            except TypeError:
                parts.append(("id", id(leaf)))
    return treedef, tuple(parts)


def _outer_step(
    trainable,
    static,
    outer_state,
    task,
    states,
    key,
    estimator,
    outer_optimizer,
    num_steps,
    schedule,
):
    lopt = eqx.combine(trainable, static)
    meta_loss, meta_grads, new_states, diagnostics = estimator.estimate(
        lopt, task, states, key=key, num_steps=num_steps, schedule=schedule
    )
    grad_norm = optax.tree.norm(meta_grads)
    ok = (
        jnp.isfinite(grad_norm)
        & jnp.isfinite(meta_loss)
        & (diagnostics["num_valid"] > 0)
    )
    # optax's own code (e.g. Adam's bias correction, `b1 ** count`) mixes Python
    # floats and int32 counts, which jax_numpy_dtype_promotion="strict" rejects.
    with jax.numpy_dtype_promotion("standard"):
        updates, new_outer_state = outer_optimizer.update(
            meta_grads, outer_state, trainable
        )
    new_trainable = eqx.apply_updates(trainable, updates)

    def keep(new, old):
        return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)

    trainable = keep(new_trainable, trainable)
    outer_state = keep(new_outer_state, outer_state)
    return trainable, outer_state, new_states, meta_loss, grad_norm, ~ok, diagnostics


# One jitted outer step shared by all trainers: its cache is keyed by the static
# parts of its arguments (task configuration, estimator, outer optimizer,
# window length, schedule) and the shapes of the array parts, so each task
# configuration compiles once, also across trainer instances (a resumed run in
# the same process does not recompile).
_JITTED_OUTER_STEPS: dict[Any, Any] = {}


def _jitted_outer_step(compiler_options: dict | None):
    options = tuple(sorted((compiler_options or {}).items()))
    if options not in _JITTED_OUTER_STEPS:
        _JITTED_OUTER_STEPS[options] = eqx.filter_jit(
            _outer_step, compiler_options=dict(options) or None
        )
    return _JITTED_OUTER_STEPS[options]


class _DefaultOuterOptimizer(eqx.Module):
    """`clip_by_global_norm` then Adam, hashable by value (a static jit argument).

    Two trainers with the same hyperparameters share one compiled outer step,
    which a fresh `optax.chain` (new closures, hashed by identity) would not.
    """

    learning_rate: float = eqx.field(static=True)
    max_grad_norm: float = eqx.field(static=True)
    max_grad_value: float | None = eqx.field(static=True, default=None)

    def _tx(self) -> optax.GradientTransformation:
        clip_values = (
            () if self.max_grad_value is None else (optax.clip(self.max_grad_value),)
        )
        return optax.chain(
            *clip_values,
            optax.clip_by_global_norm(self.max_grad_norm),
            optax.adam(self.learning_rate),
        )

    def init(self, params):
        return self._tx().init(params)

    def update(self, updates, state, params=None):
        return self._tx().update(updates, state, params)


class MetaTrainer:
    r"""Meta-trains a learned optimizer on a task or a task family.

    Each outer step takes one task (a family is sampled once per
    `task_resample_every` outer steps), advances `num_tasks` inner trajectories
    of it (different init and data keys, `vmap`ped; sharded over a 1-D
    `"tasks"` mesh when several devices exist) by `unroll_length` inner steps,
    asks the estimator for the meta-gradient and applies the outer optimizer to
    the trainable part of θ:

    $$\theta \leftarrow \theta + \mathrm{outer}(\hat g), \qquad
      \hat g \approx \nabla_\theta \tfrac1N \textstyle\sum_i L_i(\theta).$$

    The default outer optimizer is
    `optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(learning_rate))`.
    A step whose meta-gradient or meta-loss is NaN/Inf, or in which every
    trajectory diverged, is skipped (θ and the outer state are left unchanged)
    and counted in the history (`skipped`); diverged trajectories are dropped
    from the meta-gradient and counted (`num_diverged`).

    Outer step `s` uses keys derived from `(key, s)` only, and the task of
    period `j = s // task_resample_every` from `(key, j)`, so a run resumed
    from a checkpoint is bit-identical to an uninterrupted one.

    Across processes (after `jax.distributed.initialize`; see the "Scale out"
    page) every process runs the same trainer: the `"tasks"` mesh takes
    devices from every process, each holds `num_tasks / process_count`
    trajectories (and their perturbations), the meta-gradient's mean over the
    batch is a collective inside the jitted step, and every process ends the
    step with the same θ. `num_tasks` is the global batch: the trajectories'
    keys depend on their index in it, not on the process holding them.
    Checkpoints are gathered by all processes and written by process 0 alone;
    a checkpoint records the process count, and resuming with another count
    is refused.

    The jitted outer step is compiled once per task configuration
    ([`task_config_key`][mnemosyne.meta.task_config_key]); families should
    sample from a small set of configurations.

    Args:
        lopt: the learned optimizer to meta-train.
        task: a task (`init`, `loss`, `sample_batch`) or a task family
            (`sample(key) -> task`).
        estimator: the meta-gradient estimator (default
            [`TruncatedBPTT`][mnemosyne.meta.TruncatedBPTT]`()`).
        outer_optimizer: an optax optimizer over the trainable part of θ;
            overrides `learning_rate` and `max_grad_norm`.
        learning_rate: outer Adam learning rate.
        max_grad_norm: meta-gradient clipping by global norm.
        max_grad_value: element-wise meta-gradient clipping to
            `[-max_grad_value, max_grad_value]` before the global-norm clip
            (learned_optimization's VeLO recipe clips element-wise at 3).
        num_tasks: inner trajectories per outer step.
        unroll_length: inner steps per outer step (the truncation window).
        horizon: inner steps per trajectory: an int or a truncation schedule.
        task_resample_every: outer steps between draws from a family; defaults
            to `ceil(max_horizon / unroll_length)`. Ignored for a single task.
        checkpoint_dir: where to write checkpoints (`None`: none).
        checkpoint_every: outer steps between checkpoints (and one at the end
            of every `run`).
        keep_checkpoints: how many recent checkpoints to keep.
        compiler_options: XLA options for the jitted outer step (passed to
            `jax.jit`); e.g. `{"xla_backend_optimization_level": 0}` roughly
            halves compile time at some cost in run time, which suits short
            runs and tests.
        key: the base PRNG key.

    Returns:
        The trainer; [`run`][mnemosyne.meta.MetaTrainer.run]`(num_steps)`
        returns `(lopt, history)`: the meta-trained optimizer and a dict of
        per-outer-step lists (`"step"`, `"meta_loss"`, `"grad_norm"`,
        `"skipped"`, `"num_diverged"`, `"task"`).

    Examples:
        >>> import jax
        >>> from mnemosyne.baselines import LearnableSGD
        >>> from mnemosyne.meta import MetaTrainer
        >>> from mnemosyne.tasks import get_task
        >>> trainer = MetaTrainer(
        ...     LearnableSGD(0.01), get_task("quadratic"), num_tasks=2,
        ...     unroll_length=4, horizon=8, learning_rate=0.1, key=jax.random.key(0),
        ... )
        >>> lopt, history = trainer.run(3, progress=False)
        >>> history["step"]
        [0, 1, 2]
        >>> type(lopt).__name__
        'LearnableSGD'

    References:
        Andrychowicz et al., "Learning to learn by gradient descent by
        gradient descent", NeurIPS 2016 (truncated backpropagation through the
        unroll). Jain et al., "Mnemosyne: Learning to Train Transformers with
        Transformers", NeurIPS 2023 (its "simple meta-training strategy").
    """

    def __init__(
        self,
        lopt: AbstractLearnedOptimizer,
        task: Any,
        estimator: AbstractGradientEstimator | None = None,
        *,
        outer_optimizer: optax.GradientTransformation | None = None,
        learning_rate: float = 1e-3,
        max_grad_norm: float = 1.0,
        max_grad_value: float | None = None,
        num_tasks: int = 8,
        unroll_length: int = 20,
        horizon: int | AbstractTruncationSchedule = 100,
        task_resample_every: int | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 100,
        keep_checkpoints: int = 3,
        compiler_options: dict[str, Any] | None = None,
        key: PRNGKeyArray,
    ):
        if num_tasks < 1 or unroll_length < 1 or checkpoint_every < 1:
            raise ValueError(
                "num_tasks, unroll_length and checkpoint_every must be >= 1."
            )
        if num_tasks % jax.process_count():
            raise ValueError(
                f"num_tasks={num_tasks} must be a multiple of the number of "
                f"processes ({jax.process_count()}): each process holds an equal "
                "share of the task batch."
            )
        self.estimator = TruncatedBPTT() if estimator is None else estimator
        self.outer_optimizer = (
            _DefaultOuterOptimizer(
                float(learning_rate), float(max_grad_norm),
                None if max_grad_value is None else float(max_grad_value),
            )
            if outer_optimizer is None
            else outer_optimizer
        )
        self.task = task
        self.is_family = _is_family(task)
        self.num_tasks = num_tasks
        self.unroll_length = unroll_length
        self.schedule = as_truncation_schedule(horizon)
        if self.is_family:
            self.task_resample_every = task_resample_every or math.ceil(
                self.schedule.max_horizon / unroll_length
            )
        else:
            self.task_resample_every = None
        self.checkpoint_dir = (
            None if checkpoint_dir is None else os.fspath(checkpoint_dir)
        )
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = max(1, keep_checkpoints)
        self.key = _raw_key(jnp.asarray(key))
        self.compiler_options = dict(compiler_options or {})

        self._trainable, self._static = eqx.partition(lopt, trainable_filter(lopt))
        with jax.numpy_dtype_promotion("standard"):
            self._outer_state = self.outer_optimizer.init(self._trainable)
        self._states: TruncationState | None = None
        self._states_period: int | None = None
        self.step = 0
        self.history: History = {k: [] for k in _HISTORY_KEYS}
        self._task_cache: tuple[int, Any] | None = None
        self.task_configs: set[Any] = set()
        self._mesh = self._make_mesh()

    # ------------------------------------------------------------------ #
    # public
    # ------------------------------------------------------------------ #

    @property
    def lopt(self) -> AbstractLearnedOptimizer:
        """The current learned optimizer (θ after `self.step` outer steps)."""
        return eqx.combine(self._trainable, self._static)

    def run(
        self, num_outer_steps: int, resume: bool = True, progress: bool = True
    ) -> tuple[AbstractLearnedOptimizer, History]:
        """Meta-train until `num_outer_steps` outer steps have been taken in total.

        Args:
            num_outer_steps: the total outer step count to reach (a resumed run
                continues from its checkpoint's step).
            resume: continue from the latest complete checkpoint in
                `checkpoint_dir` if there is one (and this trainer has not
                taken any steps yet). A corrupted newest checkpoint is skipped,
                with a warning, for the previous complete one; temporary files
                of a write interrupted by a killed process are deleted.
            progress: show a tqdm progress bar with the meta-loss.

        Returns:
            `(lopt, history)`: the meta-trained optimizer and a dict of
            per-step lists (`step`, `meta_loss`, `grad_norm`, `skipped`,
            `num_diverged`, `task`).
        """
        if resume and self.checkpoint_dir is not None and self.step == 0:
            self._restore_latest()
        from tqdm.auto import tqdm

        bar = tqdm(
            total=num_outer_steps,
            initial=min(self.step, num_outer_steps),
            disable=not (progress and is_main_process()),
            desc="meta-train",
        )
        try:
            while self.step < num_outer_steps:
                self._one_step()
                bar.update(1)
                bar.set_postfix(meta_loss=f"{self.history['meta_loss'][-1]:.4g}")
                if (
                    self.checkpoint_dir is not None
                    and self.step % self.checkpoint_every == 0
                ):
                    self.save()
        finally:
            bar.close()
        if self.checkpoint_dir is not None and not self._saved_at_current_step():
            self.save()
        return self.lopt, self.history

    def save(self, path: str | os.PathLike | None = None) -> str:
        """Checkpoint everything needed to resume bit-identically.

        Args:
            path: the file; defaults to `checkpoint_dir/ckpt-<step>.eqx`.

        Returns:
            The path written.
        """
        in_checkpoint_dir = path is None
        if path is None:
            if self.checkpoint_dir is None:
                raise ValueError("No checkpoint_dir was given; pass a path.")
            path = checkpoint_path(self.checkpoint_dir, self.step)
        path = os.fspath(path)
        # every process takes part in the gather; process 0 alone writes
        tree = gather_to_host(
            {
                "trainable": self._trainable,
                "outer_state": self._outer_state,
                "states": self._states,
            }
        )
        header = {
            "step": self.step,
            "states_period": self._states_period,
            "base_key": np.asarray(self.key).tolist(),
            "config": self._fingerprint(),
            "history": self.history,
            "num_processes": jax.process_count(),
        }
        if is_main_process():
            if in_checkpoint_dir:
                os.makedirs(self.checkpoint_dir, exist_ok=True)
            save_checkpoint(path, tree, header)
            if in_checkpoint_dir:
                prune_checkpoints(self.checkpoint_dir, self.keep_checkpoints)
        self._last_saved_step = self.step
        return path

    def load(self, path: str | os.PathLike) -> None:
        """Restore the trainer from a checkpoint file.

        Raises:
            CheckpointError: if the file is truncated or corrupted.
            IncompatibleCheckpointError: if it was written by a differently
                configured trainer (other key, task batch, window, etc.) or
                by another number of processes (a checkpoint without that
                field was written by one).
        """
        header = read_checkpoint_header(path)
        written_by = header.get("num_processes", 1)
        if written_by != jax.process_count():
            raise IncompatibleCheckpointError(
                f"Checkpoint {os.fspath(path)!r} was written by a run of "
                f"{written_by} process(es); this run has {jax.process_count()}. "
                f"Resume it with {written_by} process(es), or start afresh "
                "(resume=False, or another checkpoint_dir)."
            )
        if header.get("base_key") != np.asarray(self.key).tolist():
            raise IncompatibleCheckpointError(
                f"Checkpoint {os.fspath(path)!r} was written with another base key."
            )
        differing = differing_settings(header.get("config"), self._fingerprint())
        if differing:
            raise IncompatibleCheckpointError(
                f"Checkpoint {os.fspath(path)!r} was written by a differently "
                "configured "
                f"trainer; resuming would silently change these settings: "
                f"{'; '.join(differing)}. Use the same settings, or start afresh "
                "(resume=False, or another checkpoint_dir)."
            )
        period = header["states_period"]
        states_like = (
            None
            if period is None
            else self._init_states(self._task_for_period(period), period)
        )
        like = {
            "trainable": self._trainable,
            "outer_state": self._outer_state,
            "states": states_like,
        }
        tree, header = load_checkpoint(path, like)
        self._trainable = tree["trainable"]
        self._outer_state = tree["outer_state"]
        self._states = tree["states"]
        self._states_period = period
        self.step = int(header["step"])
        self.history = {k: list(header["history"][k]) for k in _HISTORY_KEYS}
        self._last_saved_step = self.step

    def checkpoints(self) -> list[str]:
        """Checkpoint files in `checkpoint_dir`, oldest first."""
        return list_checkpoints(self.checkpoint_dir)

    # ------------------------------------------------------------------ #
    # internals
    # ------------------------------------------------------------------ #

    def _fingerprint(self) -> dict:
        """Every setting that changes the result of a run, as JSON
        ([`describe_settings`][mnemosyne.meta.describe_settings]): the
        estimator's fields, the outer optimizer (its fields, or the values its
        optax closures hold), the task or family, the window, horizon and
        resampling settings, the compiler options, and θ's configuration (its
        class and static fields, the shapes and dtypes of its trainable arrays,
        the values of its frozen ones, which the checkpoint does not hold)."""
        shapes = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), self._trainable
        )
        settings = {
            "lopt": eqx.combine(shapes, self._static),
            "task": self.task,
            "estimator": self.estimator,
            "outer_optimizer": self.outer_optimizer,
            "num_tasks": self.num_tasks,
            "unroll_length": self.unroll_length,
            "schedule": self.schedule,
            "task_resample_every": self.task_resample_every,
            "compiler_options": self.compiler_options,
        }
        # through JSON, as it is stored: tuples become lists, and so on
        return json.loads(json.dumps(describe_settings(settings)))

    def _saved_at_current_step(self) -> bool:
        return getattr(self, "_last_saved_step", None) == self.step

    def _restore_latest(self) -> None:
        if is_main_process():
            remove_stale_temporaries(self.checkpoint_dir)
        paths = self.checkpoints()
        for path in reversed(paths):
            try:
                self.load(path)
                return
            except IncompatibleCheckpointError:
                raise  # complete but from another configuration: refuse
            except CheckpointError as e:
                warnings.warn(
                    f"Skipping unreadable checkpoint: {e}", RuntimeWarning, stacklevel=3
                )
        if paths:
            raise CheckpointError(
                f"No readable checkpoint in {self.checkpoint_dir!r}; "
                "pass resume=False to start afresh."
            )

    def _make_mesh(self):
        # (a multiple of the process count, which divides num_tasks)
        num_devices = math.gcd(self.num_tasks, jax.device_count())
        if num_devices <= 1:
            return None
        # Auto axis types: we only place the task-batch axis of the inputs and
        # let the compiler propagate shardings through vmap/scan; Explicit mode
        # (the jax.make_mesh default in recent JAX) would require sharding-aware
        # code in every task and optimizer.
        return jax.make_mesh(
            (num_devices,),
            ("tasks",),
            axis_types=(jax.sharding.AxisType.Auto,),
            devices=spread_devices(num_devices),
        )

    def _place(self, tree, batched: bool):
        if self._mesh is None:
            return tree
        spec = (
            jax.sharding.PartitionSpec("tasks")
            if batched
            else (jax.sharding.PartitionSpec())
        )
        sharding = jax.sharding.NamedSharding(self._mesh, spec)
        return put_global(tree, sharding)

    def _stream(self, stream: int, index: int) -> PRNGKeyArray:
        return jax.random.fold_in(jax.random.fold_in(self.key, stream), index)

    def _period(self, step: int) -> int:
        return (
            0 if self.task_resample_every is None else step // self.task_resample_every
        )

    def _task_for_period(self, period: int):
        if self._task_cache is not None and self._task_cache[0] == period:
            return self._task_cache[1]
        task = (
            self.task.sample(self._stream(_STREAM_TASK, period))
            if self.is_family
            else self.task
        )
        self._task_cache = (period, task)
        return task

    def _init_states(self, task, period: int) -> TruncationState:
        # Expired placeholders: the first window of the period resets them
        # inside the compiled outer step (no separate init program to compile).
        keys = jax.random.split(self._stream(_STREAM_STATES, period), self.num_tasks)
        return self.estimator.init_states(self.lopt, task, keys)

    def _one_step(self) -> None:
        period = self._period(self.step)
        task = self._task_for_period(period)
        if self._states is None or self._states_period != period:
            self._states = self._init_states(task, period)
            self._states_period = period
        self.task_configs.add(task_config_key(task))
        (
            self._trainable,
            self._outer_state,
            self._states,
            meta_loss,
            grad_norm,
            skipped,
            diagnostics,
        ) = _jitted_outer_step(self.compiler_options)(
            self._place(self._trainable, batched=False),
            self._static,
            self._place(self._outer_state, batched=False),
            task,
            self._place(self._states, batched=True),
            self._stream(_STREAM_STEP, self.step),
            self.estimator,
            self.outer_optimizer,
            self.unroll_length,
            self.schedule,
        )
        self.history["step"].append(self.step)
        self.history["meta_loss"].append(float(meta_loss))
        self.history["grad_norm"].append(float(grad_norm))
        self.history["skipped"].append(bool(skipped))
        self.history["num_diverged"].append(int(diagnostics["num_diverged"]))
        self.history["task"].append(str(getattr(task, "name", type(task).__name__)))
        self.step += 1
