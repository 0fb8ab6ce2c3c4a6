"""The task contract: what a (learned) optimizer trains, and families of tasks."""

import abc
from typing import Any

import equinox as eqx
import jax
from equinox import AbstractVar

from .._types import Params, PRNGKeyArray

Batch = Any  # a pytree of arrays with fixed shapes


class AbstractTask(eqx.Module):
    """A training problem: parameters, a loss and a stream of minibatches.

    - `init(key) -> params`: a dict of float32 arrays;
    - `loss(params, batch) -> scalar`: float32, differentiable, pure, jittable;
    - `sample_batch(key) -> batch`: a training minibatch with fixed shapes,
      deterministic given the key (traced keys are fine: use it inside
      `jax.lax.scan`);
    - `eval_batch() -> batch | None`: a fixed held-out set, `None` for
      synthetic objectives;
    - `accuracy(params, batch) -> scalar | None`: classification accuracy
      where it is defined.

    `name` identifies the task (e.g. `"mlp_digits"`); `kind` is one of
    `"quadratic"`, `"rosenbrock"`, `"logreg"`, `"mlp"`, `"cnn"`, `"vit"`,
    `"lm"`, `"mlm"`, `"prompt"`, so meta-training can hold kinds out.
    Data arrays are fields of the task and therefore pytree leaves.
    """

    name: AbstractVar[str]
    kind: AbstractVar[str]

    # Identity hashing (as for ordinary Python objects), so that bound methods
    # holding data arrays can be jitted directly: `jax.jit(task.loss)`.
    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other) -> bool:
        return self is other

    @abc.abstractmethod
    def init(self, key: PRNGKeyArray) -> Params:
        """Initial parameters (a dict of float32 arrays)."""

    @abc.abstractmethod
    def loss(self, params: Params, batch: Batch) -> jax.Array:
        """The float32 scalar training loss on `batch`."""

    @abc.abstractmethod
    def sample_batch(self, key: PRNGKeyArray) -> Batch:
        """A training minibatch (fixed shapes), deterministic given `key`."""

    def eval_batch(self) -> Batch | None:
        """A fixed held-out batch, or `None` where there is none."""
        return None

    def accuracy(self, params: Params, batch: Batch) -> jax.Array | None:
        """Classification accuracy on `batch`, or `None` where undefined."""
        return None


class AbstractScaledTask(AbstractTask):
    """Parameter- and loss-scale augmentation of another task.

    The initial parameters are multiplied by `init_scale` and the loss by
    `loss_scale`, so a learned optimizer meets parameters and gradients of many
    magnitudes (the augmentation learned_optimization and VeLO use). The two
    final classes differ only in where the factors live: static Python floats
    ([`ScaledTask`][mnemosyne.tasks.ScaledTask], part of the compiled program)
    or array leaves (`ArrayScaledTask`, one compile for every draw).
    """

    task: AbstractVar[AbstractTask]
    init_scale: AbstractVar[Any]
    loss_scale: AbstractVar[Any]

    def init(self, key):
        return jax.tree.map(lambda p: p * self.init_scale, self.task.init(key))

    def loss(self, params, batch):
        return self.loss_scale * self.task.loss(params, batch)

    def sample_batch(self, key):
        return self.task.sample_batch(key)

    def eval_batch(self):
        return self.task.eval_batch()

    def accuracy(self, params, batch):
        return self.task.accuracy(params, batch)


class ScaledTask(AbstractScaledTask):
    """Parameter-scale augmentation of another task, with static factors.

    The initial parameters are multiplied by `init_scale` and the loss by
    `loss_scale`, so a learned optimizer meets parameters and gradients of many
    magnitudes (the augmentation learned_optimization and VeLO use).
    """

    task: AbstractTask
    init_scale: float = eqx.field(static=True)
    loss_scale: float = eqx.field(static=True)
    name: str = eqx.field(static=True)
    kind: str = eqx.field(static=True)

    def __init__(
        self, task: AbstractTask, init_scale: float = 1.0, loss_scale: float = 1.0
    ):
        self.task, self.init_scale, self.loss_scale = (
            task,
            float(init_scale),
            float(loss_scale),
        )
        self.name = f"{task.name}_x{self.init_scale:.2g}_l{self.loss_scale:.2g}"
        self.kind = task.kind


class ArrayScaledTask(AbstractScaledTask):
    """[`ScaledTask`][mnemosyne.tasks.ScaledTask] with the factors as array
    leaves: tasks drawn with different factors share one compiled program
    (static factors force one compile per draw)."""

    task: AbstractTask
    init_scale: jax.Array
    loss_scale: jax.Array

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def kind(self) -> str:
        return self.task.kind


class AbstractTaskFamily(eqx.Module):
    """A distribution over tasks, for meta-training.

    `sample(key)` runs in Python (outside `jit`) and returns a concrete task.
    `kinds` lists the task kinds it can produce, so held-out kinds (for
    example Transformers and CNNs) can be left out deliberately.
    """

    name: AbstractVar[str]
    kinds: AbstractVar[frozenset[str]]

    @abc.abstractmethod
    def sample(self, key: PRNGKeyArray) -> AbstractTask:
        """A task drawn from the family."""
