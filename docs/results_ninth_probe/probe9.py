"""A ninth probe (session 28): ten more hand-written models, written down
before any was run, in the regimes the issue names for the held-out suite
(deep and narrow nets, tiny batches, regression, recurrent nets, a causal
Transformer LM) but built on generated data and architectures no earlier
probe had, run with the fifth probe's loop (`docs/results_fifth_probe/probe5.py`:
plain JAX, a plain optax loop, `mnemosyne.mnemosyne()` beside
`optax.adam(1e-3)`, seeds vmapped).

    python docs/results_ninth_probe/probe9.py [--only NAME,...] [--seeds 0,1]
        [--scale-steps 4] [--per-seed]

Models: an 8x16 ReLU MLP on a generated 4-class problem at batch 4; a 3x64
tanh regression of Friedman's first function with raw targets; two
concentric circles; a 2-layer post-LayerNorm causal Transformer; an LSTM
reading the digit images row by row; a digits autoencoder through a
2-unit bottleneck; a 3x256 GELU MLP on the breast-cancer data at full batch;
a 10-block residual MLP without normalisation (the eighth probe's residual
CNN had none either); a plain 4-layer CNN without normalisation; and a
noisy 50-feature linear regression at batch 8. Output as in probe5.py.
"""

import functools
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
from sklearn import datasets

DOCS = pathlib.Path(__file__).parents[1]
for folder in ("results_fifth_probe", "results_sixth_probe", "results_seventh_probe",
               "results_eighth_probe"):
    sys.path.insert(0, str(DOCS / folder))
from probe5 import batch, dense, digits, main, mlp, mlp_init, std, xent  # noqa: E402
from probe6 import markov_text, markov_windows  # noqa: E402
from probe7 import causal_attention, layer_norm, transformer_lm_init  # noqa: E402
from probe8 import conv_im2col  # noqa: E402


@functools.cache
def generated(name):
    """`(x, y)` of a scikit-learn generator with a fixed seed, `x`
    standardised, as device arrays."""
    if name == "classification":
        x, y = datasets.make_classification(
            2000, 20, n_informative=10, n_classes=4, random_state=0)
    elif name == "friedman1":
        x, y = datasets.make_friedman1(2000, noise=1.0, random_state=0)
    elif name == "circles":
        x, y = datasets.make_circles(1000, noise=0.1, factor=0.5, random_state=0)
    else:  # "regression"
        x, y = datasets.make_regression(1000, 50, noise=10.0, random_state=0)
    dtype = jnp.int32 if name in ("classification", "circles") else jnp.float32
    return jnp.asarray(std(x)), jnp.asarray(y, dtype)


def classifier(name, sizes, act, b):
    """An MLP of hidden `sizes` on a generated classification problem."""
    x, y = generated(name)
    classes = int(y.max()) + 1
    init = lambda k: mlp_init(k, (x.shape[1],) + sizes + (classes,))

    def loss(p, k):
        i = batch(k, len(x), b)
        return xent(mlp(p, x[i], act), y[i])

    return init, loss


def regressor(name, sizes, act, b):
    """An MLP of hidden `sizes` (a linear model if empty) fitting the raw
    targets of a generated regression problem by squared error."""
    x, y = generated(name)
    init = lambda k: mlp_init(k, (x.shape[1],) + sizes + (1,))

    def loss(p, k):
        i = batch(k, len(x), b)
        return jnp.mean((mlp(p, x[i], act)[:, 0] - y[i]) ** 2)

    return init, loss


def postln_transformer_lm(vocab=16, d=64, layers=2, seq=32, b=16):
    """A 2-layer post-LayerNorm causal Transformer (4 heads, ReLU MLP,
    learned positions) on a second-order Markov text."""
    text = markov_text(vocab, 100_000)
    heads = 4
    init = lambda k: transformer_lm_init(k, vocab, d, layers, seq, 1.0)
    def loss(p, k):
        tokens = markov_windows(text, k, b, seq)
        h = p["emb"][tokens[:, :-1]] + p["pos"]
        for blk in p["blocks"]:
            attended = causal_attention(h, blk["qkv"], heads) @ blk["proj"]["w"]
            h = layer_norm(h + attended + blk["proj"]["b"], blk["ln1"])
            z = jax.nn.relu(h @ blk["up"]["w"] + blk["up"]["b"])
            h = layer_norm(h + z @ blk["down"]["w"] + blk["down"]["b"], blk["ln2"])
        return xent(h @ p["out"]["w"] + p["out"]["b"], tokens[:, 1:])

    return init, loss


def digits_row_lstm(h=64, b=32):
    """An LSTM reading each 8x8 digit image as 8 rows of 8 pixels; a dense
    head on its last state."""
    x, y = digits()
    rows = x.reshape(-1, 8, 8)

    def init(k):
        k1, k2 = jax.random.split(k)
        return {"w": dense(k1, 8 + h, 4 * h), "out": dense(k2, h, 10)}

    def loss(p, k):
        i = batch(k, len(x), b)

        def cell(carry, row):
            hs, cs = carry
            z = jnp.concatenate([row, hs], -1) @ p["w"]["w"] + p["w"]["b"]
            gi, gf, go, gg = jnp.split(z, 4, -1)
            cs = jax.nn.sigmoid(gf + 1.0) * cs + jax.nn.sigmoid(gi) * jnp.tanh(gg)
            return (jax.nn.sigmoid(go) * jnp.tanh(cs), cs), None

        (hs, _), _ = jax.lax.scan(cell, (jnp.zeros((b, h)),) * 2,
                                  rows[i].transpose(1, 0, 2))
        return xent(hs @ p["out"]["w"] + p["out"]["b"], y[i])

    return init, loss


def bottleneck_autoencoder(b=32):
    """A ReLU autoencoder of the digits through a 2-unit code."""
    x, _ = digits()
    init = lambda k: mlp_init(k, (64, 32, 16, 2, 16, 32, 64))

    def loss(p, k):
        i = batch(k, len(x), b)
        return jnp.mean((mlp(p, x[i], jax.nn.relu) - x[i]) ** 2)

    return init, loss


def breast_cancer_full():
    """A 3x256 GELU MLP on all 569 breast-cancer examples every step."""
    d = datasets.load_breast_cancer()
    x, y = jnp.asarray(std(d.data)), jnp.asarray(d.target)
    init = lambda k: mlp_init(k, (30, 256, 256, 256, 2))
    return init, lambda p, k: xent(mlp(p, x, jax.nn.gelu), y)


def residual_mlp_no_norm(blocks=10, width=64, b=32):
    """`blocks` residual blocks x + W2 relu(W1 x) without normalisation (W2
    at half the usual scale), between a dense stem and head, on the digits."""
    x, y = digits()

    def init(k):
        ks = jax.random.split(k, 2 * blocks + 2)
        return {"stem": dense(ks[0], 64, width),
                "blocks": [{"a": dense(ks[1 + 2 * j], width, width),
                            "b": dense(ks[2 + 2 * j], width, width, 0.5)}
                           for j in range(blocks)],
                "out": dense(ks[-1], width, 10)}

    def loss(p, k):
        i = batch(k, len(x), b)
        h = jax.nn.relu(x[i] @ p["stem"]["w"] + p["stem"]["b"])
        for blk in p["blocks"]:
            inner = jax.nn.relu(h @ blk["a"]["w"] + blk["a"]["b"])
            h = h + inner @ blk["b"]["w"] + blk["b"]["b"]
        return xent(h @ p["out"]["w"] + p["out"]["b"], y[i])

    return init, loss


def plain_cnn(layers=4, channels=16, b=32):
    """`layers` 3x3 convolutions with ReLU at 8x8, no skips and no
    normalisation, global average pooling and a dense head."""
    x, y = digits()
    images = x.reshape(-1, 8, 8, 1)

    def init(k):
        ks = jax.random.split(k, layers + 1)
        shapes = [(3, 3, 1, channels)] + [(3, 3, channels, channels)] * (layers - 1)
        return {"convs": [jax.random.normal(kc, s) * np.sqrt(2.0 / (9 * s[2]))
                          for kc, s in zip(ks[:-1], shapes, strict=True)],
                "out": dense(ks[-1], channels, 10)}

    def loss(p, k):
        i = batch(k, len(x), b)
        h = images[i]
        for w in p["convs"]:
            h = jax.nn.relu(conv_im2col(h, w))
        return xent(h.mean((1, 2)) @ p["out"]["w"] + p["out"]["b"], y[i])

    return init, loss


PROBES = {
    "classification_8x16_relu_b4": (
        lambda: classifier("classification", (16,) * 8, jax.nn.relu, 4), 4000),
    "friedman1_raw_3x64_tanh_b32": (
        lambda: regressor("friedman1", (64,) * 3, jnp.tanh, 32), 3000),
    "circles_2x32_relu_b16": (
        lambda: classifier("circles", (32, 32), jax.nn.relu, 16), 2000),
    "markov_postln_transformer_l2_b16": (postln_transformer_lm, 3000),
    "digits_row_lstm_h64_b32": (digits_row_lstm, 2000),
    "digits_autoencoder_code2_b32": (bottleneck_autoencoder, 3000),
    "breast_cancer_3x256_gelu_full": (breast_cancer_full, 2000),
    "digits_resmlp10x64_no_norm_b32": (residual_mlp_no_norm, 3000),
    "digits_plain_cnn4_b32": (plain_cnn, 2000),
    "linreg_50d_noisy_b8": (lambda: regressor("regression", (), None, 8), 3000),
}


if __name__ == "__main__":
    main(PROBES)
