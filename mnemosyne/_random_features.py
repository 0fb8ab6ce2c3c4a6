"""Positive hyperbolic random features with frozen orthogonal projections."""

from __future__ import annotations

import equinox as eqx
import jax
from jaxtyping import Array, Float

from ._lopt_base import Frozen
from ._types import PRNGKeyArray
from .backends import jax_backend


class RandomFeatureMap(eqx.Module):
    """The map $\\phi$ of Appendix A.1 (Performer SM-hyp+), for `num_maps` heads.

    Holds `omega` (`(num_maps, m, d)`, $r = 2m$ features per head), drawn once
    as orthogonal Gaussian blocks and frozen: it is not meta-trained, and
    meta-gradients with respect to it are zero.
    """

    omega: Frozen

    def __init__(
        self, num_maps: int, num_features: int, dim: int, *, key: PRNGKeyArray
    ):
        if num_features < 2 or num_features % 2:
            raise ValueError(
                f"num_features (r) must be a positive even number, got {num_features}: "
                "hyperbolic features come in (exp(w.z), exp(-w.z)) pairs"
            )
        keys = jax.random.split(key, num_maps)
        m = num_features // 2
        omega = jax.numpy.stack(
            [jax_backend.orthogonal_gaussian_matrix(k, m, dim) for k in keys]
        )
        self.omega = Frozen(omega)

    def keys(
        self, z: Float[Array, "maps d ..."], backend
    ) -> Float[Array, "maps r ..."]:
        """Exact features $\\phi(k)$ for writing (Eq. A.1), one map per head."""
        omega = backend.stop_gradient(self.omega.value)
        return backend.stack_heads(
            [backend.hyperbolic_features(z[h], omega[h]) for h in range(len(omega))]
        )

    def queries(self, z, backend):
        """Stabilised features $\\tilde\\phi(q)$ for reading (Eq. A.1 up to scale)."""
        omega = backend.stop_gradient(self.omega.value)
        return backend.stack_heads(
            [
                backend.hyperbolic_query_features(z[h], omega[h])
                for h in range(len(omega))
            ]
        )
