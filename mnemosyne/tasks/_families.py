"""Task families: distributions over task configurations for meta-training."""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import numpy as np

from ._base import AbstractTask, AbstractTaskFamily, ScaledTask
from ._classification import MLPClassifier
from ._data import DATASETS, load_dataset
from ._suite import get_task
from ._synthetic import Quadratic, Rosenbrock


# Host-side sampling helpers (called outside jit; return Python values).
def _choice(key, options: Sequence):
    return options[int(jax.random.randint(key, (), 0, len(options)))]


def _uniform(key, lo: float, hi: float) -> float:
    return float(jax.random.uniform(key, (), minval=lo, maxval=hi))


def _log_uniform(key, lo: float, hi: float) -> float:
    return float(np.exp(_uniform(key, np.log(lo), np.log(hi))))


def _seed(key) -> int:
    return int(jax.random.randint(key, (), 0, 2**31 - 1))


def _augment(
    key,
    task: AbstractTask,
    init_scale: tuple[float, float],
    loss_scale: tuple[float, float],
) -> AbstractTask:
    """Parameter-scale augmentation, log-uniform factors (none if both are (1, 1))."""
    if init_scale == (1.0, 1.0) and loss_scale == (1.0, 1.0):
        return task
    k_init, k_loss = jax.random.split(key)
    return ScaledTask(
        task, _log_uniform(k_init, *init_scale), _log_uniform(k_loss, *loss_scale)
    )


class MLPFamily(AbstractTaskFamily):
    """MLP classifiers on the bundled datasets: random dataset, widths, depth,
    activation, training subset and parameter/loss scales. With `depths=(0,)`
    it is logistic regression."""

    name: str = eqx.field(static=True, default="mlp_family", kw_only=True)
    datasets: tuple[str, ...] = eqx.field(static=True, default=DATASETS)
    widths: tuple[int, ...] = eqx.field(static=True, default=(16, 32, 64))
    depths: tuple[int, ...] = eqx.field(static=True, default=(1, 2))
    activations: tuple[str, ...] = eqx.field(
        static=True, default=("relu", "tanh", "gelu")
    )
    subset: tuple[float, float] = eqx.field(static=True, default=(0.5, 1.0))
    init_scale: tuple[float, float] = eqx.field(static=True, default=(0.5, 2.0))
    loss_scale: tuple[float, float] = eqx.field(static=True, default=(0.1, 10.0))
    batch_size: int = eqx.field(static=True, default=64)

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset("logreg" if d == 0 else "mlp" for d in self.depths)

    def sample(self, key) -> AbstractTask:
        k_data, k_depth, k_width, k_act, k_frac, k_seed, k_aug = jax.random.split(
            key, 7
        )
        dataset = _choice(k_data, self.datasets)
        depth = _choice(k_depth, self.depths)
        hidden = tuple(
            _choice(k, self.widths) for k in jax.random.split(k_width, depth)
        )
        activation = _choice(k_act, self.activations)
        fraction = _uniform(k_frac, *self.subset)
        data = load_dataset(dataset).subset(fraction, _seed(k_seed))
        kind = "mlp" if depth else "logreg"
        shape = "x".join(map(str, hidden)) or "linear"
        name = f"{kind}_{dataset}_{shape}_{activation}_sub{fraction:.2f}"
        task = MLPClassifier(
            data,
            hidden=hidden,
            activation=activation,
            batch_size=self.batch_size,
            name=name,
            kind=kind,
        )
        return _augment(k_aug, task, self.init_scale, self.loss_scale)


def logreg_family() -> MLPFamily:
    """Logistic regression on the bundled datasets (subsets, scale augmentation)."""
    return MLPFamily(name="logreg_family", depths=(0,))


class QuadraticFamily(AbstractTaskFamily):
    """Random quadratics: dimension, log-condition number and gradient noise."""

    name: str = eqx.field(static=True, default="quadratic_family", kw_only=True)
    dims: tuple[int, ...] = eqx.field(static=True, default=(10, 20, 50))
    log10_cond: tuple[float, float] = eqx.field(static=True, default=(0.5, 4.0))
    noises: tuple[float, ...] = eqx.field(static=True, default=(0.0, 0.0, 0.1, 1.0))
    kinds: frozenset[str] = eqx.field(static=True, default=frozenset({"quadratic"}))

    def sample(self, key) -> AbstractTask:
        k_dim, k_cond, k_noise, k_task = jax.random.split(key, 4)
        dim, noise = _choice(k_dim, self.dims), _choice(k_noise, self.noises)
        cond = _uniform(k_cond, *self.log10_cond)
        name = f"quadratic_d{dim}_c{cond:.1f}_n{noise:g}"
        return Quadratic.random(k_task, dim, cond, noise, name)


class RosenbrockFamily(AbstractTaskFamily):
    """Chained Rosenbrock functions of a few dimensions, loss-scale augmented."""

    name: str = eqx.field(static=True, default="rosenbrock_family", kw_only=True)
    dims: tuple[int, ...] = eqx.field(static=True, default=(2, 3, 4, 5))
    loss_scale: tuple[float, float] = eqx.field(static=True, default=(0.01, 1.0))
    kinds: frozenset[str] = eqx.field(static=True, default=frozenset({"rosenbrock"}))

    def sample(self, key) -> AbstractTask:
        k_dim, k_aug = jax.random.split(key)
        dim = _choice(k_dim, self.dims)
        task = Rosenbrock(dim=dim, name=f"rosenbrock_d{dim}")
        return _augment(k_aug, task, (1.0, 1.0), self.loss_scale)


class FixedTasksFamily(AbstractTaskFamily):
    """Uniform over named registered tasks (e.g. the held-out Transformer tasks)."""

    names: tuple[str, ...] = eqx.field(static=True)
    name: str = eqx.field(static=True, default="fixed_tasks", kw_only=True)

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(get_task(n).kind for n in self.names)

    def sample(self, key) -> AbstractTask:
        return get_task(_choice(key, self.names))


class MixedFamily(AbstractTaskFamily):
    """A weighted mixture of families; `without(kinds)` drops those producing them."""

    families: tuple[AbstractTaskFamily, ...]
    weights: tuple[float, ...] = eqx.field(static=True)
    name: str = eqx.field(static=True, default="mixed_family", kw_only=True)

    def __check_init__(self):
        if (
            len(self.families) != len(self.weights)
            or not self.families
            or min(self.weights) <= 0
        ):
            raise ValueError(
                "MixedFamily needs a family and one positive weight per family"
            )

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset().union(*(f.kinds for f in self.families))

    def sample(self, key) -> AbstractTask:
        k_pick, k_task = jax.random.split(key)
        p = np.asarray(self.weights) / sum(self.weights)
        index = int(jax.random.choice(k_pick, len(p), p=p))
        return self.families[index].sample(k_task)

    def without(self, kinds) -> MixedFamily:
        """The mixture restricted to families that produce none of `kinds`."""
        keep = [
            (f, w)
            for f, w in zip(self.families, self.weights, strict=True)
            if not f.kinds & set(kinds)
        ]
        families, weights = zip(*keep, strict=True) if keep else ((), ())
        return MixedFamily(
            tuple(families),
            tuple(weights),
            name=f"{self.name}_without_{'_'.join(sorted(kinds))}",
        )
