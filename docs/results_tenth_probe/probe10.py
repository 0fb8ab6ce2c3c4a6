"""A tenth probe (session 30): twelve more hand-written models, written down
before any was run, aimed at what the shipped reading infers from a model's
shapes (the depth floor (D) counts matrices, the kernel floor (K) reads
tensors of four or more axes as convolution kernels, the width scaling (N)
reads a tensor's size over its largest axis) and at layouts no earlier probe
had. Run with the fifth probe's loop (`docs/results_fifth_probe/probe5.py`:
plain JAX, a plain optax loop, `mnemosyne.mnemosyne()` beside
`optax.adam(1e-3)`, seeds vmapped).

    python docs/results_tenth_probe/probe10.py [--only NAME,...] [--seeds 0,1]
        [--scale-steps 4] [--per-seed]

Models: a 6-layer CNN with batch norm; a 4-layer 3-D CNN on generated
volumes; a ViT whose patch embedding is a convolution; an 8-layer MLP and a
4-layer CNN whose hidden layers are stacked in one tensor and applied with
`lax.scan` (the layout of Equinox's and Flax's scan-over-layers idiom, which
(D) reads as a shallow model); a bag-of-words classifier over a
5,000-word vocabulary (sparse embedding gradients); a weight-tied
autoencoder; logistic regression and an MLP on the raw, unstandardised
breast-cancer features (scales 0.001 to 4,000); a 2-layer GRU language
model; a pre-LayerNorm Transformer classifier at batch 4; and an MLP
initialised at a tenth of the usual scale. Added after their first runs
(`ADDED`): one 3x64 MLP as a pytree and as one flat vector, and the
batch-norm CNN at batch 8 (for a long small-batch curve). Output as in
probe5.py.
"""

import functools
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from sklearn import datasets

DOCS = pathlib.Path(__file__).parents[1]
for folder in ("results_fifth_probe", "results_sixth_probe", "results_seventh_probe",
               "results_eighth_probe"):
    sys.path.insert(0, str(DOCS / folder))
from probe5 import batch, dense, digits, main, mlp, mlp_init, xent  # noqa: E402
from probe6 import markov_text, markov_windows  # noqa: E402
from probe7 import layer_norm  # noqa: E402
from probe8 import conv_im2col  # noqa: E402


def he_kernel(key, shape):
    """A convolution kernel `(*window, in, out)` at He's scale."""
    fan_in = int(np.prod(shape[:-1]))
    return jax.random.normal(key, shape) * np.sqrt(2.0 / fan_in)


def batch_norm(h, p):
    """Batch normalisation over every axis but the channels (batch
    statistics, as in training), then the learned scale and shift."""
    axes = tuple(range(h.ndim - 1))
    h = (h - h.mean(axes)) / jnp.sqrt(h.var(axes) + 1e-5)
    return h * p["scale"] + p["shift"]


def convnet(x, y, conv, window, layers, channels, b, norm=False):
    """`layers` 'same' convolutions of `window` (computed by `conv`) over
    the inputs `x` `(n, *space, 1)`, each followed by batch norm if `norm`
    and a ReLU, global average pooling and a dense head for the labels `y`."""
    classes = int(y.max()) + 1
    space = tuple(range(1, x.ndim - 1))

    def init(k):
        ks = jax.random.split(k, layers + 1)
        shapes = [window + (1, channels)]
        shapes += [window + (channels, channels)] * (layers - 1)
        kernels = [he_kernel(kc, s) for kc, s in zip(ks[:-1], shapes, strict=True)]
        norms = [{"scale": jnp.ones(channels), "shift": jnp.zeros(channels)}
                 for _ in range(layers)]
        return {"convs": kernels, **({"norms": norms} if norm else {}),
                "out": dense(ks[-1], channels, classes)}

    def loss(p, k):
        i = batch(k, len(x), b)
        h = x[i]
        for j, w in enumerate(p["convs"]):
            h = conv(h, w)
            h = jax.nn.relu(batch_norm(h, p["norms"][j]) if norm else h)
        return xent(h.mean(space) @ p["out"]["w"] + p["out"]["b"], y[i])

    return init, loss


def bn_cnn(layers=6, channels=16, b=32):
    """`layers` 3x3 convolutions at 8x8, each followed by batch norm and a
    ReLU, global average pooling and a dense head, on the digits."""
    x, y = digits()
    return convnet(x.reshape(-1, 8, 8, 1), y, conv_im2col, (3, 3), layers, channels,
                   b, norm=True)


@functools.cache
def blob_volumes(n=2000, size=8):
    """`n` noisy 8x8x8 volumes holding one Gaussian blob each; the label is
    the octant of the blob's centre (8 classes)."""
    rng = np.random.default_rng(10)
    centres = rng.uniform(1.0, size - 2.0, (n, 3))
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), -1)
    d2 = ((grid[None] - centres[:, None, None, None]) ** 2).sum(-1)
    volumes = np.exp(-d2 / 4.0) + 0.3 * rng.standard_normal((n, size, size, size))
    octant = (centres >= (size - 1) / 2).astype(int) @ np.array([4, 2, 1])
    return jnp.asarray(volumes[..., None], jnp.float32), jnp.asarray(octant)


def conv3d(h, w):
    """A 3x3x3 'same' convolution of `h` `(n, d, r, c, channels)` as one
    matrix product of the 27 shifted windows (as `conv_im2col` in 2-D)."""
    n, depth, rows, cols, channels = h.shape
    padded = jnp.pad(h, ((0, 0), (1, 1), (1, 1), (1, 1), (0, 0)))
    windows = [padded[:, a:a + depth, b:b + rows, c:c + cols, :]
               for a in range(3) for b in range(3) for c in range(3)]
    return jnp.concatenate(windows, -1) @ w.reshape(27 * channels, -1)


def cnn3d(layers=4, channels=8, b=16):
    """`layers` 3x3x3 convolutions with ReLU on the blob volumes, global
    average pooling and a dense head (five matrices: (K) reads the kernels)."""
    x, y = blob_volumes()
    return convnet(x, y, conv3d, (3, 3, 3), layers, channels, b)


def encoder_block_init(k, d):
    """One pre-LayerNorm encoder block: an attention (`qkv`, `proj`), a GELU
    MLP (`up`, `down`), the residual writers at half scale, two gains."""
    k1, k2, k3, k4 = jax.random.split(k, 4)
    return {"qkv": dense(k1, d, 3 * d), "proj": dense(k2, d, d, 0.5),
            "up": dense(k3, d, 4 * d), "down": dense(k4, 4 * d, d, 0.5),
            "ln1": jnp.ones(d), "ln2": jnp.ones(d)}


def encoder_block(h, blk, heads):
    """One pre-LayerNorm block of unmasked multi-head self-attention and a
    GELU MLP over `h` `(b, tokens, d)`."""
    b, t, d = h.shape
    split = lambda z: z.reshape(b, t, heads, d // heads)
    q, kk, v = jnp.split(layer_norm(h, blk["ln1"]) @ blk["qkv"]["w"]
                         + blk["qkv"]["b"], 3, -1)
    scores = jnp.einsum("bqhd,bkhd->bhqk", split(q), split(kk))
    weights = jax.nn.softmax(scores / np.sqrt(d // heads), -1)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, split(v)).reshape(b, t, d)
    h = h + out @ blk["proj"]["w"] + blk["proj"]["b"]
    z = jax.nn.gelu(layer_norm(h, blk["ln2"]) @ blk["up"]["w"] + blk["up"]["b"])
    return h + z @ blk["down"]["w"] + blk["down"]["b"]


def encoder(h, blocks, heads):
    """`encoder_block` for each of `blocks`: a list of blocks, or one block
    whose every leaf stacks the blocks along a leading axis (`scanned`),
    applied with `jax.lax.scan`."""
    if not isinstance(blocks, list):
        return jax.lax.scan(lambda h, blk: (encoder_block(h, blk, heads), None),
                            h, blocks)[0]
    for blk in blocks:
        h = encoder_block(h, blk, heads)
    return h


def conv_patch_vit(d=32, layers=4, heads=4, b=32, scanned=False):
    """A pre-LayerNorm ViT on the digits whose patch embedding is a 2x2
    convolution of stride 2 (a `(2, 2, 1, d)` kernel: 16 tokens), learned
    positions, mean pooling and a dense head; if `scanned`, its blocks are
    stacked in one pytree (`stack`, every leaf with a leading axis of
    `layers`) and applied with `jax.lax.scan`."""
    x, y = digits()
    images = x.reshape(-1, 8, 8, 1)

    def init(k):
        ks = jax.random.split(k, 3 + layers)
        blocks = [encoder_block_init(kb, d) for kb in ks[3:]]
        if scanned:  # the same initial values, stacked
            blocks = {"stack": jax.tree.map(lambda *x: jnp.stack(x), *blocks)}
        return {"patch": he_kernel(ks[0], (2, 2, 1, d)), "patch_b": jnp.zeros(d),
                "pos": 0.1 * jax.random.normal(ks[1], (16, d)),
                "blocks": blocks, "ln": jnp.ones(d), "out": dense(ks[2], d, 10)}

    def loss(p, k):
        i = batch(k, len(x), b)
        tokens = jax.lax.conv_general_dilated(
            images[i], p["patch"], (2, 2), "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        h = tokens.reshape(b, 16, d) + p["patch_b"] + p["pos"]
        blocks = p["blocks"]["stack"] if scanned else p["blocks"]
        h = encoder(h, blocks, heads)
        logits = layer_norm(h, p["ln"]).mean(1) @ p["out"]["w"] + p["out"]["b"]
        return xent(logits, y[i])

    return init, loss


def scanned_mlp(layers=8, width=64, b=8, scanned=True):
    """A stem, `layers` ReLU layers of `width` stored as one `(layers, width,
    width)` tensor and one `(layers, width)` bias applied with `lax.scan`, and
    a head, on the digits: 3 matrices to (D), 8 hidden layers in fact. If not
    `scanned`, the same layers (the same initial values) as a list, applied
    one after the other."""
    x, y = digits()

    def init(k):
        ks = jax.random.split(k, layers + 2)
        hidden = [dense(kh, width, width) for kh in ks[1:-1]]
        if scanned:
            hidden = jax.tree.map(lambda *x: jnp.stack(x), *hidden)
        return {"stem": dense(ks[0], 64, width), "stack": hidden,
                "out": dense(ks[-1], width, 10)}

    def loss(p, k):
        i = batch(k, len(x), b)
        h = jax.nn.relu(x[i] @ p["stem"]["w"] + p["stem"]["b"])
        layer = lambda h, wb: jax.nn.relu(h @ wb["w"] + wb["b"])
        if scanned:
            h, _ = jax.lax.scan(lambda h, wb: (layer(h, wb), None), h, p["stack"])
        else:
            for wb in p["stack"]:
                h = layer(h, wb)
        return xent(h @ p["out"]["w"] + p["out"]["b"], y[i])

    return init, loss


def scanned_cnn(layers=4, channels=16, b=32):
    """A stem convolution, `layers` 3x3 convolutions with ReLU stored as one
    `(layers, 3, 3, channels, channels)` tensor and applied with `lax.scan`,
    global average pooling and a dense head, on the digits: 3 matrices to (D)
    and (K), 5 convolutions in fact."""
    x, y = digits()
    images = x.reshape(-1, 8, 8, 1)

    def init(k):
        ks = jax.random.split(k, layers + 2)
        return {"stem": he_kernel(ks[0], (3, 3, 1, channels)),
                "stack": jnp.stack([he_kernel(kc, (3, 3, channels, channels))
                                    for kc in ks[1:-1]]),
                "out": dense(ks[-1], channels, 10)}

    def loss(p, k):
        i = batch(k, len(x), b)
        h = jax.nn.relu(conv_im2col(images[i], p["stem"]))
        h, _ = jax.lax.scan(lambda h, w: (jax.nn.relu(conv_im2col(h, w)), None),
                            h, p["stack"])
        return xent(h.mean((1, 2)) @ p["out"]["w"] + p["out"]["b"], y[i])

    return init, loss


@functools.cache
def topic_documents(n=4000, vocab=5000, topics=10, length=50):
    """`n` documents of `length` words, each drawn from one of `topics`
    word distributions (a shared Zipf background times a sparse topic
    boost); the label is the topic. Token ids `(n, length)`, labels `(n,)`."""
    rng = np.random.default_rng(11)
    background = 1.0 / np.arange(1, vocab + 1)
    boost = 1.0 + 30.0 * (rng.random((topics, vocab)) < 0.01)
    probs = background * boost
    probs /= probs.sum(-1, keepdims=True)
    labels = rng.integers(0, topics, n)
    docs = np.stack([rng.choice(vocab, length, p=probs[c]) for c in labels])
    return jnp.asarray(docs, jnp.int32), jnp.asarray(labels)


def bag_of_words(vocab=5000, d=32, b=16):
    """Mean-pooled word embeddings (5,000 x 32; each step touches at most
    800 rows), a tanh layer and a dense head, classifying the topic."""
    docs, labels = topic_documents(vocab=vocab)

    def init(k):
        k1, k2, k3 = jax.random.split(k, 3)
        return {"emb": 0.1 * jax.random.normal(k1, (vocab, d)),
                "hidden": dense(k2, d, d), "out": dense(k3, d, 10)}

    def loss(p, k):
        i = batch(k, len(docs), b)
        h = jnp.tanh(p["emb"][docs[i]].mean(1) @ p["hidden"]["w"] + p["hidden"]["b"])
        return xent(h @ p["out"]["w"] + p["out"]["b"], labels[i])

    return init, loss


def tied_autoencoder(code=16, b=32):
    """A tanh autoencoder of the digits whose decoder is the encoder's
    matrix transposed (one 64 x `code` matrix, two biases)."""
    x, _ = digits()

    def init(k):
        return {"w": dense(k, 64, code)["w"], "b_code": jnp.zeros(code),
                "b_out": jnp.zeros(64)}

    def loss(p, k):
        i = batch(k, len(x), b)
        h = jnp.tanh(x[i] @ p["w"] + p["b_code"])
        return jnp.mean((h @ p["w"].T + p["b_out"] - x[i]) ** 2)

    return init, loss


def raw_breast_cancer(sizes=(), b=32):
    """Logistic regression (`sizes` empty) or a ReLU MLP on the
    breast-cancer features as they come (feature means from 0.004 to 880,
    largest values over 4,000), no standardisation."""
    d = datasets.load_breast_cancer()
    x, y = jnp.asarray(d.data, jnp.float32), jnp.asarray(d.target)
    init = lambda k: mlp_init(k, (30,) + sizes + (2,))

    def loss(p, k):
        i = batch(k, len(x), b)
        return xent(mlp(p, x[i], jax.nn.relu), y[i])

    return init, loss


def gru_lm(vocab=20, h=64, layers=2, seq=32, b=16):
    """A `layers`-layer GRU language model on a second-order Markov text."""
    text = markov_text(vocab, 100_000)

    def init(k):
        ks = jax.random.split(k, 2 * layers + 2)
        cells = [{"zr": dense(ks[2 * j], (vocab if j == 0 else h) + h, 2 * h),
                  "n": dense(ks[2 * j + 1], (vocab if j == 0 else h) + h, h)}
                 for j in range(layers)]
        return {"cells": cells, "out": dense(ks[-1], h, vocab)}

    def gru(cell, inputs):
        def step(hs, xt):
            zr = jnp.concatenate([xt, hs], -1) @ cell["zr"]["w"] + cell["zr"]["b"]
            z, r = jnp.split(jax.nn.sigmoid(zr), 2, -1)
            n = jnp.concatenate([xt, r * hs], -1) @ cell["n"]["w"] + cell["n"]["b"]
            n = jnp.tanh(n)
            hs = (1 - z) * n + z * hs
            return hs, hs
        return jax.lax.scan(step, jnp.zeros((inputs.shape[1], h)), inputs)[1]

    def loss(p, k):
        tokens = markov_windows(text, k, b, seq)
        hs = jax.nn.one_hot(tokens[:, :-1], vocab).transpose(1, 0, 2)
        for cell in p["cells"]:
            hs = gru(cell, hs)
        logits = hs @ p["out"]["w"] + p["out"]["b"]
        return xent(logits, tokens[:, 1:].T)

    return init, loss


def transformer_classifier(vocab=8, seq=16, d=32, layers=4, heads=4, b=4):
    """A pre-LayerNorm Transformer (no mask) classifying sequences of
    `seq` random tokens by their most frequent token (ties to the lowest),
    at batch 4; mean pooling and a dense head."""

    def init(k):
        ks = jax.random.split(k, 3 + layers)
        return {"emb": 0.1 * jax.random.normal(ks[0], (vocab, d)),
                "pos": 0.1 * jax.random.normal(ks[1], (seq, d)),
                "blocks": [encoder_block_init(kb, d) for kb in ks[3:]],
                "ln": jnp.ones(d), "out": dense(ks[2], d, vocab)}

    def loss(p, k):
        tokens = jax.random.randint(k, (b, seq), 0, vocab)
        label = jnp.argmax(jax.nn.one_hot(tokens, vocab).sum(1), -1)
        h = encoder(p["emb"][tokens] + p["pos"], p["blocks"], heads)
        logits = layer_norm(h, p["ln"]).mean(1) @ p["out"]["w"] + p["out"]["b"]
        return xent(logits, label)

    return init, loss


def small_init_mlp(scale=0.1, b=64):
    """A 2x128 ReLU MLP on the digits initialised at `scale` times the usual
    scale (the signal starts 1,000x weaker at the output)."""
    x, y = digits()
    init = lambda k: mlp_init(k, (64, 128, 128, 10), scale)

    def loss(p, k):
        i = batch(k, len(x), b)
        return xent(mlp(p, x[i], jax.nn.relu), y[i])

    return init, loss


def flat_mlp(flat: bool, sizes=(64, 64, 64), b=16):
    """A ReLU MLP of hidden `sizes` on the digits whose parameters are, if
    `flat`, one vector (`jax.flatten_util.ravel_pytree`): no matrix to
    (D), (K) or (N), one tensor to (A2). Added after the first runs."""
    x, y = digits()
    _, unravel = ravel_pytree(mlp_init(jax.random.key(0), (64,) + sizes + (10,)))

    def init(k):
        params = mlp_init(k, (64,) + sizes + (10,))
        return ravel_pytree(params)[0] if flat else params

    def loss(p, k):
        i = batch(k, len(x), b)
        return xent(mlp(unravel(p) if flat else p, x[i], jax.nn.relu), y[i])

    return init, loss


PROBES = {
    "digits_bn_cnn6_b32": (bn_cnn, 2000),
    "blobs_cnn3d4_b16": (cnn3d, 2000),
    "digits_conv_patch_vit_l4_b32": (conv_patch_vit, 2000),
    "digits_scanned_mlp8x64_b8": (scanned_mlp, 3000),
    "digits_scanned_cnn5_b32": (scanned_cnn, 2000),
    "topics_bow_vocab5000_b16": (bag_of_words, 3000),
    "digits_tied_autoencoder_b32": (tied_autoencoder, 3000),
    "breast_cancer_raw_logreg_b32": (raw_breast_cancer, 2000),
    "breast_cancer_raw_2x32_relu_b32": (lambda: raw_breast_cancer((32, 32)), 2000),
    "markov_gru2_lm_b16": (gru_lm, 2000),
    "majority_prenorm_transformer_l4_b4": (transformer_classifier, 3000),
    "digits_2x128_relu_init_x0.1_b64": (small_init_mlp, 2000),
}
# Added after the twelve above had run once: one model in two layouts, and
# the batch-norm CNN at batch 8; in session 31, the stacked MLP written
# layer by layer, and a wider ViT layer by layer and with its blocks stacked.
ADDED = {
    "digits_3x64_relu_b16_flat": (lambda: flat_mlp(True), 3000),
    "digits_3x64_relu_b16_tree": (lambda: flat_mlp(False), 3000),
    "digits_bn_cnn6_b8": (lambda: bn_cnn(b=8), 2000),
    "digits_mlp8x64_b8": (lambda: scanned_mlp(scanned=False), 3000),
    "digits_conv_patch_vit_d64_l4_b32": (lambda: conv_patch_vit(d=64), 2000),
    "digits_scanned_vit_d64_l4_b32": (
        lambda: conv_patch_vit(d=64, scanned=True), 2000),
}


if __name__ == "__main__":
    main(PROBES | ADDED)
