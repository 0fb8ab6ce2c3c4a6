"""The task suite: what (learned) optimizers train.

Real data comes only from scikit-learn's bundled datasets (digits, breast
cancer, wine, iris); everything else is generated. Nothing is downloaded.

- `get_task(name)` / `list_tasks()`: the registered suite (quadratic,
  Rosenbrock, logistic regression, MLPs, a CNN, a ViT, tiny causal and masked
  Transformer LMs, soft-prompt tuning);
- `get_family(name)` / `list_families()`: task distributions for
  meta-training; `MixedFamily.without(HELD_OUT_KINDS)` keeps Transformers and
  CNNs out.
"""

from ._base import AbstractTask, AbstractTaskFamily, Batch, ScaledTask
from ._classification import (
    AbstractClassificationTask,
    CNNClassifier,
    MLPClassifier,
    ViTClassifier,
)
from ._data import DATASETS, ClassificationData, load_dataset
from ._extra import NoisyLabelMLP, RNNClassifier, TeacherRegression
from ._families import (
    FixedTasksFamily,
    MixedFamily,
    MLPFamily,
    QuadraticFamily,
    RosenbrockFamily,
    logreg_family,
)
from ._registry import HELD_OUT_KINDS, get_family, list_families
from ._sequence import MaskedLM, PromptTuning, SequenceLM
from ._suite import get_task, list_tasks
from ._synthetic import Quadratic, Rosenbrock

__all__ = [
    "AbstractClassificationTask",
    "AbstractTask",
    "AbstractTaskFamily",
    "Batch",
    "ClassificationData",
    "CNNClassifier",
    "DATASETS",
    "FixedTasksFamily",
    "HELD_OUT_KINDS",
    "MaskedLM",
    "MixedFamily",
    "MLPClassifier",
    "MLPFamily",
    "NoisyLabelMLP",
    "PromptTuning",
    "Quadratic",
    "QuadraticFamily",
    "Rosenbrock",
    "RNNClassifier",
    "RosenbrockFamily",
    "ScaledTask",
    "SequenceLM",
    "TeacherRegression",
    "ViTClassifier",
    "get_family",
    "get_task",
    "list_families",
    "list_tasks",
    "load_dataset",
    "logreg_family",
]
