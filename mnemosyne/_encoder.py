"""Hierarchical pooling encoder (HPE): Mnemosyne's spatial module (Fig. 1c)."""

from __future__ import annotations

import equinox as eqx
import jax
import numpy as np
from jaxtyping import Array, Float

from ._random_features import RandomFeatureMap
from ._types import PRNGKeyArray


def _init_matrix(key, out_dim, in_dim, scale=1.0):
    return scale * jax.random.normal(key, (out_dim, in_dim)) / np.sqrt(in_dim)


class PerformerBlock(eqx.Module):
    """A pre-norm Transformer block whose attention is bidirectional FAVOR+
    inside each chunk: $x \\leftarrow x + \\mathrm{att}(\\mathrm{LN}(x))$, then
    $x \\leftarrow x + W_2\\,\\mathrm{relu}(W_1 \\mathrm{LN}(x) + b_1) + b_2$."""

    wq: Float[Array, "d_k d_model"]
    wk: Float[Array, "d_k d_model"]
    wv: Float[Array, "d_model d_model"]
    wo: Float[Array, "d_model d_model"]
    w1: Float[Array, "d_ff d_model"]
    b1: Float[Array, " d_ff"]
    w2: Float[Array, "d_model d_ff"]
    b2: Float[Array, " d_model"]
    features: RandomFeatureMap

    def __init__(
        self, d_model: int, *, key_size: int, num_features: int, key: PRNGKeyArray
    ):
        ks = jax.random.split(key, 7)
        d_ff = 2 * d_model
        self.wq = _init_matrix(ks[0], key_size, d_model)
        self.wk = _init_matrix(ks[1], key_size, d_model)
        self.wv = _init_matrix(ks[2], d_model, d_model)
        self.wo = _init_matrix(ks[3], d_model, d_model, scale=0.5)
        self.w1 = _init_matrix(ks[4], d_ff, d_model)
        self.b1 = jax.numpy.zeros(d_ff)
        self.w2 = _init_matrix(ks[5], d_model, d_ff, scale=0.5)
        self.b2 = jax.numpy.zeros(d_model)
        self.features = RandomFeatureMap(1, num_features, key_size, key=ks[6])

    def __call__(self, x, mask, backend):
        """`x`: `(d_model, chunks, chunk_len)`; `mask`: `(chunks, chunk_len)`."""
        B = backend
        omega = B.stop_gradient(self.features.omega.value)[0]
        x = x + B.chunk_attention(
            B.layer_norm(x), mask, self.wq, self.wk, self.wv, self.wo, omega
        )
        hidden = B.relu(B.stack_rows(B.dense(self.w1, self.b1, B.layer_norm(x))))
        return x + B.stack_rows(B.dense(self.w2, self.b2, hidden))


class HierarchicalPoolingEncoder(eqx.Module):
    """Turns the tokens of one tensor into a few meta-tokens.

    Each level chunks the token sequence into runs of `chunk_len`, encodes each
    chunk with a bidirectional [`PerformerBlock`][mnemosyne.PerformerBlock]
    (padding masked out) and mean-pools it to one token, so $n$ tokens become
    $\\lceil n / c \\rceil$. After $L$ levels a tensor of $n$ coordinates has
    $b = \\lceil n / c^L \\rceil$ meta-tokens $\\xi \\in \\mathbb{R}^{b \\times N}$,
    the input of the memory. Weights are shared across tensors, not across levels.
    """

    levels: tuple[PerformerBlock, ...]
    chunk_len: int = eqx.field(static=True)

    def __init__(
        self,
        d_model: int,
        *,
        num_levels: int = 2,
        chunk_len: int = 16,
        key_size: int = 4,
        num_features: int = 8,
        key: PRNGKeyArray,
    ):
        keys = jax.random.split(key, num_levels)
        self.levels = tuple(
            PerformerBlock(d_model, key_size=key_size, num_features=num_features, key=k)
            for k in keys
        )
        self.chunk_len = chunk_len

    def num_meta_tokens(self, n: int) -> int:
        """$b = \\lceil n / c^L \\rceil$ (at least 1)."""
        return max(1, -(-n // self.chunk_len ** len(self.levels)))

    def __call__(self, tokens, backend):
        """`tokens`: `(d_model, n)` -> meta-tokens `(d_model, b)`."""
        B = backend
        for block in self.levels:
            chunks, mask = B.chunk(tokens, self.chunk_len)
            tokens = B.masked_mean_pool(block(chunks, mask, B), mask)
        return tokens
