"""JAX kernels: the same functions as `_numpy.py`, written for `jax.jit`.

Per-coordinate work is expressed as elementwise arithmetic on `(n,)` arrays with
the tiny weight matrices unrolled in Python (loops over features, never over
coordinates), so XLA fuses a whole step into a few elementwise loops instead of
materialising `(features, n)` intermediates.
"""

from __future__ import annotations

import jax.numpy as jnp

LOG_SIGN_P = 10.0


def log_sign(g, p: float = LOG_SIGN_P):
    """Andrychowicz et al. (2016) log/sign preprocessing; see the NumPy reference."""
    absg = jnp.abs(g)
    big = absg >= jnp.exp(-p)
    safe = jnp.where(big, absg, 1.0)
    magnitude = jnp.where(big, jnp.log(safe) / p, -1.0).astype(g.dtype)
    direction = jnp.where(big, jnp.sign(g), jnp.exp(p) * g).astype(g.dtype)
    return magnitude, direction
