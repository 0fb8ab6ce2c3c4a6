"""The named task families: `get_family` / `list_families`."""

from __future__ import annotations

from collections.abc import Callable

from ._base import AbstractTaskFamily
from ._families import (
    FixedTasksFamily,
    MixedFamily,
    MLPFamily,
    QuadraticFamily,
    RosenbrockFamily,
    logreg_family,
)

HELD_OUT_KINDS = frozenset({"cnn", "vit", "lm", "mlm", "prompt"})
"""Architectures kept out of the default meta-training mixture (the paper
meta-trains on MLPs and evaluates on Transformers)."""

_TRANSFORMER_TASKS = (
    "vit_digits",
    "lm_copy",
    "lm_reverse",
    "lm_sort",
    "lm_recall",
    "mlm_synthetic",
    "prompt_tuning",
)


def _mixed() -> MixedFamily:
    families = (MLPFamily(), logreg_family(), QuadraticFamily(), RosenbrockFamily())
    return MixedFamily(families, (0.5, 0.2, 0.15, 0.15), name="mixed_family")


def _full() -> MixedFamily:
    families = (_mixed(), _FAMILIES["cnn_family"](), _FAMILIES["transformer_family"]())
    return MixedFamily(families, (0.6, 0.1, 0.3), name="full_family")


_FAMILIES: dict[str, Callable[[], AbstractTaskFamily]] = {
    "mlp_family": MLPFamily,
    "logreg_family": logreg_family,
    "quadratic_family": QuadraticFamily,
    "rosenbrock_family": RosenbrockFamily,
    "cnn_family": lambda: FixedTasksFamily(("cnn_digits",), name="cnn_family"),
    "transformer_family": lambda: FixedTasksFamily(
        _TRANSFORMER_TASKS, name="transformer_family"
    ),
    "mixed_family": _mixed,
    "full_family": _full,
}


def list_families() -> list[str]:
    """Names of the registered task families."""
    return sorted(_FAMILIES)


def get_family(name: str) -> AbstractTaskFamily:
    """A registered family. `mixed_family` (the meta-training default) holds
    out `HELD_OUT_KINDS`; `full_family` includes every kind."""
    if name not in _FAMILIES:
        raise ValueError(f"unknown family {name!r}; known: {list_families()}")
    return _FAMILIES[name]()
