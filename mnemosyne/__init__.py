"""Mnemosyne: a learned optimizer with a compact associative memory, for optax.

A reconstruction of Jain et al., "Mnemosyne: Learning to Train Transformers with
Transformers" (NeurIPS 2023). The public API is re-exported here; implementation
lives in private modules. The subpackages `baselines`, `tasks`, `meta` and
`evaluation` are imported on first attribute access (`mnemosyne.baselines.lstm()`
works after a bare `import mnemosyne`), so that import stays fast.
"""

import importlib as _importlib

from ._encoder import HierarchicalPoolingEncoder, PerformerBlock
from ._head import LearnedStepHead
from ._lopt import (
    AbstractMnemosyne,
    CoordinatewiseMnemosyne,
    MnemosyneState,
    TensorwiseMnemosyne,
)
from ._lopt_base import AbstractLearnedOptimizer, Frozen, trainable_filter
from ._memory import CompactAssociativeMemory, MemoryState
from ._random_features import RandomFeatureMap
from ._serialisation import WeightsFileError, load, pretrained, reconfigure, save
from ._sharding import sharded_update, state_specs
from ._transform import as_gradient_transformation, mnemosyne, scale_by_mnemosyne

__version__ = "0.1.0"

_SUBPACKAGES = ("baselines", "evaluation", "meta", "tasks")


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return _importlib.import_module(f"{__name__}.{name}")  # also sets the attribute
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBPACKAGES))


__all__ = [
    "AbstractLearnedOptimizer",
    "AbstractMnemosyne",
    "CompactAssociativeMemory",
    "CoordinatewiseMnemosyne",
    "Frozen",
    "HierarchicalPoolingEncoder",
    "LearnedStepHead",
    "MemoryState",
    "MnemosyneState",
    "PerformerBlock",
    "RandomFeatureMap",
    "TensorwiseMnemosyne",
    "WeightsFileError",
    "as_gradient_transformation",
    "load",
    "mnemosyne",
    "pretrained",
    "reconfigure",
    "save",
    "scale_by_mnemosyne",
    "sharded_update",
    "state_specs",
    "trainable_filter",
]
