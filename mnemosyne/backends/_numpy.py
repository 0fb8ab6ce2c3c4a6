"""NumPy reference kernels (float64), each naming the equation it implements.

Layout convention shared with the JAX backend: per-coordinate quantities are
*feature-major*, shape `(features, n)`, with the coordinate axis last.
"""

from __future__ import annotations

import numpy as np

LOG_SIGN_P = 10.0


def log_sign(g: np.ndarray, p: float = LOG_SIGN_P) -> tuple[np.ndarray, np.ndarray]:
    """Gradient preprocessing of Andrychowicz et al. (2016), Sec. 3.2 / App. A.

    $$
    g \\mapsto \\begin{cases}
      (\\log|g| / p,\\ \\operatorname{sign} g) & |g| \\ge e^{-p} \\\\
      (-1,\\ e^{p} g) & \\text{otherwise}
    \\end{cases}
    $$
    """
    g = np.asarray(g, dtype=np.float64)
    big = np.abs(g) >= np.exp(-p)
    with np.errstate(divide="ignore"):
        magnitude = np.where(big, np.log(np.abs(g)) / p, -1.0)
    direction = np.where(big, np.sign(g), np.exp(p) * g)
    return magnitude, direction
