"""Synthetic objectives: ill-conditioned quadratics and the Rosenbrock function."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ._base import AbstractTask


class Quadratic(AbstractTask):
    """`0.5 (x - x*)ᵀ A (x - x*)` with a random rotation and log-uniform spectrum.

    The eigenvalues of `A` are log-uniform in `[10^-log10_cond, 1]`, so the
    condition number is about `10^log10_cond`. With `noise > 0` each batch
    adds `noise · ξᵀx` (`ξ ~ N(0, I)`): the gradient is exact plus Gaussian
    noise. A classic sanity check for learned optimizers (Andrychowicz et al.
    2016; the Mnemosyne paper's synthetic experiments).
    """

    matrix: jax.Array
    optimum: jax.Array
    noise: float = eqx.field(static=True)
    name: str = eqx.field(static=True, kw_only=True)
    kind: str = eqx.field(static=True, default="quadratic", kw_only=True)

    @classmethod
    def random(
        cls,
        key,
        dim: int = 20,
        log10_cond: float = 3.0,
        noise: float = 0.0,
        name: str = "quadratic",
    ):
        k_rot, k_eig, k_opt = jax.random.split(key, 3)
        rotation, _ = jnp.linalg.qr(jax.random.normal(k_rot, (dim, dim), jnp.float32))
        eig = 10.0 ** -jax.random.uniform(k_eig, (dim,), jnp.float32, 0.0, log10_cond)
        eig = (
            eig.at[0].set(1.0).at[1].set(10.0**-log10_cond)
        )  # pin the condition number
        matrix = (rotation * eig) @ rotation.T
        optimum = jax.random.normal(k_opt, (dim,), jnp.float32)
        return cls(matrix, optimum, noise, name=name)

    def init(self, key):
        return {"x": jax.random.normal(key, self.optimum.shape, jnp.float32)}

    def loss(self, params, batch):
        delta = params["x"] - self.optimum
        return (
            0.5 * delta @ self.matrix @ delta + self.noise * batch["xi"] @ params["x"]
        )

    def sample_batch(self, key):
        return {"xi": jax.random.normal(key, self.optimum.shape, jnp.float32)}


class Rosenbrock(AbstractTask):
    """The chained Rosenbrock function `Σ 100 (x_{i+1} - x_i²)² + (1 - x_i)²`.

    Starts near the customary point `(-1.2, 1, -1.2, 1, ...)` (jittered by
    0.1 given the key); minimum 0 at all-ones. A curved-valley stress test.
    Deterministic: the batch is empty.
    """

    dim: int = eqx.field(static=True, default=2)
    name: str = eqx.field(static=True, default="rosenbrock", kw_only=True)
    kind: str = eqx.field(static=True, default="rosenbrock", kw_only=True)

    def init(self, key):
        start = jnp.tile(jnp.array([-1.2, 1.0], jnp.float32), (self.dim + 1) // 2)[
            : self.dim
        ]
        return {"x": start + 0.1 * jax.random.normal(key, (self.dim,), jnp.float32)}

    def loss(self, params, batch):
        x = params["x"]
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

    def sample_batch(self, key):
        return {}
