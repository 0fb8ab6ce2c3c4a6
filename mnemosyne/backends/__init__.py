"""Numeric kernels, defined twice behind one interface.

- [`mnemosyne.backends.numpy_backend`][]: the reference. Float64, readable, each
  function names the equation of the paper (or of the reconstruction in
  `docs/paper-to-code.md`) it implements.
- [`mnemosyne.backends.jax_backend`][]: the same kernels for `jax.jit`, written
  so XLA fuses the per-coordinate work into one elementwise loop.

`get_backend(name)` returns the module for `"numpy"` or `"jax"`. Both expose the
same functions with the same signatures; `tests/test_backends.py` checks that
they agree.
"""

from types import ModuleType

from . import _jax as jax_backend
from . import _numpy as numpy_backend

_BACKENDS = {"jax": jax_backend, "numpy": numpy_backend}


def get_backend(name: str) -> ModuleType:
    """The kernel module for `name` (`"jax"` or `"numpy"`)."""
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ValueError(
            f"unknown backend {name!r}; expected one of {sorted(_BACKENDS)}"
        ) from None


__all__ = ["get_backend", "jax_backend", "numpy_backend"]
