"""The named task suite: `get_task` / `list_tasks`."""

from __future__ import annotations

from collections.abc import Callable

import jax

from ._base import AbstractTask
from ._classification import CNNClassifier, MLPClassifier, ViTClassifier
from ._data import load_dataset
from ._extra import NoisyLabelMLP, RNNClassifier, TeacherRegression
from ._sequence import MaskedLM, PromptTuning, SequenceLM
from ._synthetic import Quadratic, Rosenbrock

_SEED = 0  # every registered task is built from fixed seeds


def _mlp(
    dataset: str, hidden=(32,), activation="relu", name=None, batch_size=64
) -> MLPClassifier:
    kind = "mlp" if hidden else "logreg"
    name = name or f"{kind}_{dataset}"
    return MLPClassifier(
        load_dataset(dataset),
        hidden=tuple(hidden),
        activation=activation,
        batch_size=batch_size,
        name=name,
        kind=kind,
    )


def _lm(problem: str, **kwargs) -> SequenceLM:
    return SequenceLM(problem, name=f"lm_{problem}", **kwargs)


_TASKS: dict[str, Callable[[], AbstractTask]] = {
    "quadratic": lambda: Quadratic.random(
        jax.random.key(_SEED), dim=20, log10_cond=3.0
    ),
    "rosenbrock": lambda: Rosenbrock(dim=2),
    "logreg_breast_cancer": lambda: _mlp("breast_cancer", ()),
    "logreg_wine": lambda: _mlp("wine", ()),
    "mlp_iris": lambda: _mlp("iris", (16,), batch_size=32),
    "mlp_wine": lambda: _mlp("wine", (32,)),
    "mlp_breast_cancer": lambda: _mlp("breast_cancer", (32,)),
    "mlp_digits": lambda: _mlp("digits", (32,), batch_size=128),
    "mlp_digits_deep": lambda: _mlp(
        "digits", (64, 32, 32), "tanh", "mlp_digits_deep", 128
    ),
    "cnn_digits": lambda: CNNClassifier(load_dataset("digits")),
    "vit_digits": lambda: ViTClassifier(load_dataset("digits")),
    "lm_copy": lambda: _lm("copy"),
    "lm_reverse": lambda: _lm("reverse"),
    "lm_sort": lambda: _lm("sort"),
    "lm_recall": lambda: _lm("recall", n=4, vocab=16),
    "mlm_synthetic": lambda: MaskedLM.markov(seed=_SEED),
    "prompt_tuning": lambda: PromptTuning.random(seed=_SEED),
    # what failed in v1: tiny and huge batches, deep narrow nets, noisy labels,
    # regression, recurrence
    "mlp_digits_batch4": lambda: _mlp(
        "digits", (32,), name="mlp_digits_batch4", batch_size=4
    ),
    "mlp_digits_batch512": lambda: _mlp(
        "digits", (32,), name="mlp_digits_batch512", batch_size=512
    ),
    "mlp_digits_deep_narrow": lambda: _mlp(
        "digits", (16,) * 8, "relu", "mlp_digits_deep_narrow", 32
    ),
    "mlp_digits_noisy_labels": lambda: NoisyLabelMLP(
        load_dataset("digits"),
        hidden=(32,),
        activation="relu",
        batch_size=32,
        label_noise=0.2,
        name="mlp_digits_noisy_labels",
        kind="mlp",
    ),
    "regression_teacher": lambda: TeacherRegression.random(seed=_SEED),
    "rnn_digits": lambda: RNNClassifier(load_dataset("digits")),
}


def list_tasks() -> list[str]:
    """Names of the registered tasks."""
    return sorted(_TASKS)


def get_task(name: str) -> AbstractTask:
    """A registered task, built deterministically (cheap: no pre-training).

    The suite mixes real small data shipped with scikit-learn (digits, wine,
    iris, breast cancer) and generated problems (quadratics, Rosenbrock,
    sequence tasks for small Transformers); nothing is downloaded.

    Args:
        name: one of [`list_tasks`][mnemosyne.tasks.list_tasks]`()`.

    Returns:
        An [`AbstractTask`][mnemosyne.tasks.AbstractTask]: `init(key)`,
        `loss(params, batch)`, `sample_batch(key)`.

    Raises:
        ValueError: an unknown name (the message lists the known ones).

    Examples:
        >>> import jax, mnemosyne
        >>> task = mnemosyne.tasks.get_task("mlp_iris")
        >>> params = task.init(jax.random.key(0))
        >>> loss = task.loss(params, task.sample_batch(jax.random.key(1)))
        >>> loss.shape, bool(loss > 0)
        ((), True)

    References:
        Jain et al., "Mnemosyne: Learning to Train Transformers with
        Transformers", NeurIPS 2023: meta-trained on small MLPs, evaluated on
        Transformers (here the ViT, language-model and prompt-tuning tasks).
    """
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; known: {list_tasks()}")
    return _TASKS[name]()
