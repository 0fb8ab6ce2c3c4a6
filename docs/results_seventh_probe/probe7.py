"""A seventh probe (session 26): twelve more hand-written models, written down
before any was run, from families no earlier probe or meta-training task had,
run with the fifth probe's loop (`docs/results_fifth_probe/probe5.py`: plain
JAX, a plain optax loop, `mnemosyne.mnemosyne()` beside `optax.adam(1e-3)`,
seeds vmapped).

    python docs/results_seventh_probe/probe7.py [--only NAME,...] [--seeds 0,1]
        [--scale-steps 4]

Models: a 2-D CNN on the digit images at batch 16; an MLP with dropout; an
MLP with an L2 penalty in its loss; a 4-layer tanh MLP on two moons at batch
8; raw-scale multi-output regression (Linnerud, targets in the hundreds);
soft k-means centroids of the digits; skip-gram embeddings of a Markov text
(sparse rows of two 2,000 x 32 tables); a 10-layer tanh MLP with Glorot
initialisation; Huber regression with heavy-tailed (Student-t) noise;
logistic regression at batch 1 for 8,000 steps; a wine MLP at batch 2 for
6,000 steps; and a 3-layer pre-LayerNorm causal Transformer on a Markov text.
Losses are kept positive so that the fifth probe's geometric means and
windows apply. Output as in probe5.py.
"""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
from sklearn import datasets

DOCS = pathlib.Path(__file__).parents[1]
sys.path.insert(0, str(DOCS / "results_fifth_probe"))
sys.path.insert(0, str(DOCS / "results_sixth_probe"))
from probe5 import batch, dense, digits, main, mlp, mlp_init, std, xent  # noqa: E402
from probe6 import markov_text, markov_windows  # noqa: E402


def cnn2d_digits(b=16):
    """Two 3x3 convolutions over the 8x8 digit images, then a dense head."""
    x, y = digits()
    images = x.reshape(-1, 8, 8, 1)

    def init(k):
        k1, k2, k3 = jax.random.split(k, 3)
        return {
            "c1": jax.random.normal(k1, (3, 3, 1, 16)) / 3.0,
            "b1": jnp.zeros(16),
            "c2": jax.random.normal(k2, (3, 3, 16, 32)) / 12.0,
            "b2": jnp.zeros(32),
            "out": dense(k3, 4 * 4 * 32, 10),
        }

    def conv(h, w, bias, stride):
        h = jax.lax.conv_general_dilated(
            h, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return jax.nn.relu(h + bias)

    def loss(p, k):
        i = batch(k, len(x), b)
        h = conv(conv(images[i], p["c1"], p["b1"], 1), p["c2"], p["b2"], 2)
        return xent(h.reshape(b, -1) @ p["out"]["w"] + p["out"]["b"], y[i])

    return init, loss


def dropout_mlp(rate=0.3, b=64):
    """A 2x256 ReLU digits MLP with dropout on both hidden layers."""
    x, y = digits()
    init = lambda k: mlp_init(k, (64, 256, 256, 10))

    def loss(p, k):
        k1, k2 = jax.random.split(k)
        i = batch(k1, len(x), b)
        h = x[i]
        for layer, kd in zip(p[:-1], jax.random.split(k2, 2), strict=True):
            h = jax.nn.relu(h @ layer["w"] + layer["b"])
            h = h * jax.random.bernoulli(kd, 1 - rate, h.shape) / (1 - rate)
        return xent(h @ p[-1]["w"] + p[-1]["b"], y[i])

    return init, loss


def l2_penalised_mlp(decay=1e-3, b=32):
    """A 2x64 ReLU digits MLP with `decay` times the squared weights in its
    loss (a loss that cannot reach zero)."""
    x, y = digits()
    init = lambda k: mlp_init(k, (64, 64, 64, 10))

    def loss(p, k):
        i = batch(k, len(x), b)
        penalty = sum(jnp.sum(layer["w"] ** 2) for layer in p)
        return xent(mlp(p, x[i], jax.nn.relu), y[i]) + decay * penalty

    return init, loss


def moons_tanh(b=8):
    """A 4x16 tanh MLP on 1,000 points of two noisy moons, at batch 8."""
    xs, ys = datasets.make_moons(1000, noise=0.2, random_state=0)
    x, y = jnp.asarray(std(xs)), jnp.asarray(ys)
    init = lambda k: mlp_init(k, (2, 16, 16, 16, 16, 2))

    def loss(p, k):
        i = batch(k, len(x), b)
        return xent(mlp(p, x[i], jnp.tanh), y[i])

    return init, loss


def linnerud_raw(b=20):
    """A 1x32 ReLU MLP from standardised exercises to the raw physiological
    targets (weight, waist, pulse: tens to hundreds), full batch of 20."""
    d = datasets.load_linnerud()
    x, y = jnp.asarray(std(d.data)), jnp.asarray(d.target, jnp.float32)
    init = lambda k: mlp_init(k, (3, 32, 3))

    def loss(p, k):
        return jnp.mean((mlp(p, x, jax.nn.relu) - y) ** 2)

    return init, loss


def soft_kmeans(centroids=10, temperature=1.0, b=128):
    """Soft k-means of the digits: the softmin-weighted squared distance of a
    batch to 10 learned centroids, started at random points."""
    x, _ = digits()

    def init(k):
        return {"c": x[jax.random.choice(k, len(x), (centroids,), replace=False)]
                + 0.1 * jax.random.normal(k, (centroids, 64))}

    def loss(p, k):
        h = x[batch(k, len(x), b)]
        d = jnp.sum((h[:, None] - p["c"][None]) ** 2, -1) / 64
        return jnp.mean(-temperature * jax.nn.logsumexp(-d / temperature, -1)) + 3.0

    return init, loss


def skipgram(vocab=2000, d=32, b=64, negatives=5):
    """Skip-gram with negative sampling on a Markov text over 2,000 words:
    each step touches a few rows of two 2,000 x 32 tables (sparse gradients)."""
    length = 200_000
    rng = np.random.default_rng(5)  # a first-order chain: 8 successors per word
    successors = rng.integers(0, vocab, (vocab, 8))
    weights = np.cumsum(rng.dirichlet(np.full(8, 0.5), vocab), -1)
    words, u = np.zeros(length, np.int32), rng.random(length)
    for t in range(1, length):
        pick = min(np.searchsorted(weights[words[t - 1]], u[t]), 7)
        words[t] = successors[words[t - 1], pick]
    text = jnp.asarray(words)

    def init(k):
        k1, k2 = jax.random.split(k)
        return {"in": 0.1 * jax.random.normal(k1, (vocab, d)),
                "out": 0.1 * jax.random.normal(k2, (vocab, d))}

    def loss(p, k):
        k1, k2 = jax.random.split(k)
        at = jax.random.randint(k1, (b,), 0, length - 1)
        centre, context = text[at], text[at + 1]
        noise = jax.random.randint(k2, (b, negatives), 0, vocab)
        u = p["in"][centre]
        positive = jax.nn.log_sigmoid(jnp.sum(u * p["out"][context], -1))
        negative = jax.nn.log_sigmoid(-jnp.einsum("bd,bnd->bn", u, p["out"][noise]))
        return -jnp.mean(positive + negative.sum(-1))

    return init, loss


def deep_tanh_glorot(depth=10, width=32, b=64):
    """A 10-layer tanh digits MLP with Glorot-normal weights."""
    x, y = digits()
    sizes = (64,) + (width,) * depth + (10,)

    def init(k):
        keys = jax.random.split(k, len(sizes) - 1)
        return [
            {"w": jax.random.normal(kk, (i, o)) * np.sqrt(2.0 / (i + o)),
             "b": jnp.zeros(o)}
            for kk, i, o in zip(keys, sizes[:-1], sizes[1:], strict=True)
        ]

    def loss(p, k):
        i = batch(k, len(x), b)
        return xent(mlp(p, x[i], jnp.tanh), y[i])

    return init, loss


def huber_student_t(n=2000, dim=20, b=32):
    """A 2x64 ReLU MLP on a random teacher's outputs plus Student-t noise (3
    degrees of freedom), with the Huber loss."""
    rng = np.random.default_rng(7)
    xs = rng.normal(size=(n, dim)).astype(np.float32)
    w1 = rng.normal(size=(dim, 16)) / np.sqrt(dim)
    w2 = rng.normal(size=(16,)) / 4.0
    ys = np.tanh(xs @ w1) @ w2 + 0.3 * rng.standard_t(3, size=n)
    x, y = jnp.asarray(xs), jnp.asarray(ys, jnp.float32)
    init = lambda k: mlp_init(k, (dim, 64, 64, 1))

    def loss(p, k):
        i = batch(k, n, b)
        r = mlp(p, x[i], jax.nn.relu)[:, 0] - y[i]
        return jnp.mean(jnp.where(jnp.abs(r) < 1, 0.5 * r**2, jnp.abs(r) - 0.5))

    return init, loss


def logreg_batch1():
    """Logistic regression on the standardised breast-cancer data, batch 1."""
    d = datasets.load_breast_cancer()
    x, y = jnp.asarray(std(d.data)), jnp.asarray(d.target)
    init = lambda k: {"w": jnp.zeros((x.shape[1], 2)), "b": jnp.zeros(2)}

    def loss(p, k):
        i = batch(k, len(x), 1)
        return xent(x[i] @ p["w"] + p["b"], y[i])

    return init, loss


def wine_mlp_batch2():
    """A 2x32 ReLU MLP on the standardised wine data, batch 2."""
    d = datasets.load_wine()
    x, y = jnp.asarray(std(d.data)), jnp.asarray(d.target)
    init = lambda k: mlp_init(k, (13, 32, 32, 3))

    def loss(p, k):
        i = batch(k, len(x), 2)
        return xent(mlp(p, x[i], jax.nn.relu), y[i])

    return init, loss


def causal_attention(h, qkv, heads: int):
    """Multi-head causal self-attention of `h` `(b, seq, d)` with the fused
    query-key-value layer `qkv` (`dense(d, 3d)`), before any output
    projection: `(b, seq, d)`."""
    b, seq, d = h.shape
    q, k, v = jnp.split(h @ qkv["w"] + qkv["b"], 3, -1)
    split = lambda z: z.reshape(b, seq, heads, d // heads)
    scores = jnp.einsum("bqhd,bkhd->bhqk", split(q), split(k)) / np.sqrt(d // heads)
    mask = jnp.tril(jnp.ones((seq, seq), bool))
    weights = jax.nn.softmax(jnp.where(mask, scores, -1e9), -1)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, split(v)).reshape(b, seq, d)


def transformer_lm_init(k, vocab, d, layers, seq, residual_scale):
    """Parameters of a causal Transformer LM: token and position embeddings,
    per block an attention (`qkv`, `proj`), an MLP (`up`, `down`) and two
    LayerNorm gains, and the output layer; the layers that write to the
    residual stream (`proj`, `down`) at `residual_scale` times the usual
    scale."""
    ks = jax.random.split(k, 3 + layers)
    blocks = []
    for kb in ks[3:]:
        k1, k2, k3, k4 = jax.random.split(kb, 4)
        blocks.append({
            "qkv": dense(k1, d, 3 * d), "proj": dense(k2, d, d, residual_scale),
            "up": dense(k3, d, 4 * d), "down": dense(k4, 4 * d, d, residual_scale),
            "ln1": jnp.ones(d), "ln2": jnp.ones(d),
        })
    return {"emb": 0.1 * jax.random.normal(ks[0], (vocab, d)),
            "pos": 0.1 * jax.random.normal(ks[1], (seq, d)),
            "blocks": blocks, "out": dense(ks[2], d, vocab)}


def layer_norm(h, g):
    """LayerNorm over the last axis with gain `g` and no bias."""
    h = h - h.mean(-1, keepdims=True)
    return g * h / jnp.sqrt((h * h).mean(-1, keepdims=True) + 1e-5)


def prenorm_transformer_lm(vocab=16, d=48, layers=3, seq=32, b=32):
    """A 3-layer pre-LayerNorm causal Transformer (one 4-head attention and a
    GELU MLP per block, learned positions) on a second-order Markov text."""
    text = markov_text(vocab, 100_000)
    heads = 4

    def init(k):
        return {**transformer_lm_init(k, vocab, d, layers, seq, 0.5), "ln": jnp.ones(d)}

    def attend(h, blk):
        out = causal_attention(h, blk["qkv"], heads)
        return out @ blk["proj"]["w"] + blk["proj"]["b"]

    def loss(p, k):
        tokens = markov_windows(text, k, b, seq)
        h = p["emb"][tokens[:, :-1]] + p["pos"]
        for blk in p["blocks"]:
            h = h + attend(layer_norm(h, blk["ln1"]), blk)
            z = jax.nn.gelu(layer_norm(h, blk["ln2"]) @ blk["up"]["w"] + blk["up"]["b"])
            h = h + z @ blk["down"]["w"] + blk["down"]["b"]
        logits = layer_norm(h, p["ln"]) @ p["out"]["w"] + p["out"]["b"]
        return xent(logits, tokens[:, 1:])

    return init, loss


PROBES = {
    "digits_cnn2d_b16": (cnn2d_digits, 2000),
    "digits_dropout_2x256_b64": (dropout_mlp, 3000),
    "digits_l2_penalty_2x64_b32": (l2_penalised_mlp, 3000),
    "moons_tanh_4x16_b8": (moons_tanh, 4000),
    "linnerud_raw_targets_full": (linnerud_raw, 2000),
    "digits_soft_kmeans_b128": (soft_kmeans, 2000),
    "skipgram_vocab2000_b64": (skipgram, 3000),
    "digits_tanh_10x32_glorot_b64": (deep_tanh_glorot, 3000),
    "huber_student_t_2x64_b32": (huber_student_t, 3000),
    "logreg_breast_cancer_b1": (logreg_batch1, 8000),
    "wine_mlp_2x32_b2": (wine_mlp_batch2, 6000),
    "markov_prenorm_transformer_l3_b32": (prenorm_transformer_lm, 2000),
}

if __name__ == "__main__":
    main(PROBES)
