"""Small neural-network layers as plain functions over parameter dicts.

One implementation per idea, shared by every task: dense layers and MLPs,
convolutions, layer norm, multi-head attention and the pre-norm Transformer
block (used by the ViT, the causal LM, the masked LM and prompt tuning).
All parameters are float32; functions act on one example (vmap for batches).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "gelu": jax.nn.gelu}


def dense_init(key, d_in: int, d_out: int) -> dict:
    """LeCun-normal weights, zero bias."""
    w = jax.random.normal(key, (d_in, d_out), jnp.float32) / jnp.sqrt(d_in)
    return {"w": w, "b": jnp.zeros((d_out,), jnp.float32)}


def dense(p: dict, x: jax.Array) -> jax.Array:
    return x @ p["w"] + p["b"]


def mlp_init(key, sizes: tuple[int, ...]) -> dict:
    """Layers `layer_0 ... layer_{k-1}` mapping `sizes[i] -> sizes[i+1]`."""
    keys = jax.random.split(key, len(sizes) - 1)
    return {
        f"layer_{i}": dense_init(k, a, b)
        for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True))
    }


def mlp(p: dict, x: jax.Array, activation: str) -> jax.Array:
    """Dense layers with `activation` between them (none after the last)."""
    for i in range(len(p)):
        if i:
            x = ACTIVATIONS[activation](x)
        x = dense(p[f"layer_{i}"], x)
    return x


def conv_init(key, c_in: int, c_out: int, size: int = 3) -> dict:
    """An OIHW kernel (LeCun-normal) and a zero bias."""
    w = jax.random.normal(key, (c_out, c_in, size, size), jnp.float32)
    return {
        "w": w / jnp.sqrt(c_in * size * size),
        "b": jnp.zeros((c_out,), jnp.float32),
    }


def conv(p: dict, x: jax.Array, stride: int = 1) -> jax.Array:
    """'SAME' 2-D convolution of a CHW image."""
    y = jax.lax.conv_general_dilated(
        x[None],
        p["w"],
        (stride, stride),
        "SAME",
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
    )
    return y[0] + p["b"][:, None, None]


def layer_norm_init(d: int) -> dict:
    return {"scale": jnp.ones((d,), jnp.float32), "bias": jnp.zeros((d,), jnp.float32)}


def layer_norm(p: dict, x: jax.Array, eps: float = 1e-5) -> jax.Array:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def attention(p: dict, x: jax.Array, num_heads: int, causal: bool) -> jax.Array:
    """Multi-head softmax self-attention over a `(seq, d)` sequence."""
    seq, d = x.shape
    q, k, v = (
        t.reshape(seq, num_heads, d // num_heads)
        for t in jnp.split(dense(p["qkv"], x), 3, -1)
    )
    scores = jnp.einsum("qhd,khd->hqk", q, k) / jnp.sqrt(d // num_heads)
    if causal:
        scores = jnp.where(jnp.tril(jnp.ones((seq, seq), bool)), scores, -1e9)
    out = jnp.einsum("hqk,khd->qhd", jax.nn.softmax(scores, -1), v)
    return dense(p["out"], out.reshape(seq, d))


def block_init(key, d: int, mlp_ratio: int = 2) -> dict:
    k_qkv, k_out, k_mlp = jax.random.split(key, 3)
    return {
        "ln_1": layer_norm_init(d),
        "attn": {"qkv": dense_init(k_qkv, d, 3 * d), "out": dense_init(k_out, d, d)},
        "ln_2": layer_norm_init(d),
        "mlp": mlp_init(k_mlp, (d, mlp_ratio * d, d)),
    }


def block(p: dict, x: jax.Array, num_heads: int, causal: bool) -> jax.Array:
    """Pre-norm Transformer block: attention then a GELU MLP, both residual."""
    x = x + attention(p["attn"], layer_norm(p["ln_1"], x), num_heads, causal)
    return x + mlp(p["mlp"], layer_norm(p["ln_2"], x), "gelu")


def transformer_init(key, num_layers: int, d: int) -> dict:
    keys = jax.random.split(key, num_layers)
    p = {f"block_{i}": block_init(k, d) for i, k in enumerate(keys)}
    return p | {"ln_f": layer_norm_init(d)}


def transformer(p: dict, x: jax.Array, num_heads: int, causal: bool) -> jax.Array:
    """A stack of blocks followed by a final layer norm."""
    for i in range(len(p) - 1):
        x = block(p[f"block_{i}"], x, num_heads, causal)
    return layer_norm(p["ln_f"], x)


def sequence_model_init(key, vocab: int, seq_len: int, d: int, num_layers: int) -> dict:
    """Token and position embeddings, a Transformer, and a vocabulary readout."""
    k_emb, k_pos, k_body, k_head = jax.random.split(key, 4)
    return {
        "embed": jax.random.normal(k_emb, (vocab, d), jnp.float32),
        "pos": 0.1 * jax.random.normal(k_pos, (seq_len, d), jnp.float32),
        "body": transformer_init(k_body, num_layers, d),
        "head": dense_init(k_head, d, vocab),
    }


def sequence_model(
    p: dict, tokens: jax.Array, num_heads: int, causal: bool, prefix=None
) -> jax.Array:
    """Logits `(len(prefix) + len(tokens), vocab)`; `prefix` are soft embeddings."""
    x = (
        jax.nn.one_hot(tokens, p["embed"].shape[0], dtype=jnp.float32) @ p["embed"]
        + p["pos"][: tokens.shape[0]]
    )
    if prefix is not None:
        x = jnp.concatenate([prefix, x])
    return dense(p["head"], transformer(p["body"], x, num_heads, causal))
