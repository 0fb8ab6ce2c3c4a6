"""Mnemosyne: a learned optimizer with a compact associative memory, for optax."""

from ._lopt_base import AbstractLearnedOptimizer, Frozen, trainable_filter

__all__ = ["AbstractLearnedOptimizer", "Frozen", "trainable_filter"]
