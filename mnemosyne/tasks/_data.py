"""Real data from scikit-learn's bundled datasets (no network), standardised."""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from sklearn import datasets
from sklearn.model_selection import train_test_split

_LOADERS = {
    "iris": datasets.load_iris,
    "wine": datasets.load_wine,
    "breast_cancer": datasets.load_breast_cancer,
    "digits": datasets.load_digits,
}
DATASETS = tuple(_LOADERS)
_SPLIT_SEED = 0


@functools.cache
def _load_numpy(name: str) -> tuple[np.ndarray, ...]:
    """Deterministic stratified 75/25 split, standardised with training statistics."""
    x, y = _LOADERS[name](return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=0.25, random_state=_SPLIT_SEED, stratify=y
    )
    mean, std = x_tr.mean(0), x_tr.std(0)
    std = np.where(std > 0, std, 1.0)
    standardise = lambda a: ((a - mean) / std).astype(np.float32)  # noqa: E731
    return (
        standardise(x_tr),
        y_tr.astype(np.int32),
        standardise(x_te),
        y_te.astype(np.int32),
    )


class ClassificationData(eqx.Module):
    """Train/test arrays of one dataset; minibatches are drawn by index."""

    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array
    num_classes: int = eqx.field(static=True)

    @property
    def num_features(self) -> int:
        return self.x_train.shape[1]

    def sample(self, key, batch_size: int) -> dict:
        idx = jax.random.randint(key, (batch_size,), 0, self.x_train.shape[0])
        return {"x": self.x_train[idx], "y": self.y_train[idx]}

    def test(self) -> dict:
        return {"x": self.x_test, "y": self.y_test}

    def subset(self, fraction: float, seed: int) -> ClassificationData:
        """A random fraction of the training rows (test set unchanged)."""
        n = self.x_train.shape[0]
        keep = np.random.default_rng(seed).permutation(n)[: max(1, round(fraction * n))]
        keep = np.sort(keep)
        return ClassificationData(
            self.x_train[keep],
            self.y_train[keep],
            self.x_test,
            self.y_test,
            self.num_classes,
        )


def load_dataset(name: str) -> ClassificationData:
    """One of `"iris"`, `"wine"`, `"breast_cancer"`, `"digits"`."""
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(_LOADERS)}")
    x_tr, y_tr, x_te, y_te = _load_numpy(name)
    num_classes = int(max(y_tr.max(), y_te.max())) + 1
    return ClassificationData(
        jnp.asarray(x_tr),
        jnp.asarray(y_tr),
        jnp.asarray(x_te),
        jnp.asarray(y_te),
        num_classes,
    )
