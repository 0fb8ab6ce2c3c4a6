"""Baselines: LSTM learned optimizers and tuned hand-designed optimizers."""

from ._learnable_sgd import LearnableSGD, LearnableSGDState
from ._lstm import LSTMOptimizer, LSTMOptimizerState, lstm
from ._tuned import DEFAULT_GRID, TunedResult, grid_search, reference_optimizers, tuned

__all__ = [
    "DEFAULT_GRID",
    "LearnableSGD",
    "LearnableSGDState",
    "LSTMOptimizer",
    "LSTMOptimizerState",
    "TunedResult",
    "grid_search",
    "lstm",
    "reference_optimizers",
    "tuned",
]
