"""An eighth probe (session 27): ten more hand-written models, written down
before any was run, from regimes no earlier probe or meta-training task had,
run with the fifth probe's loop (`docs/results_fifth_probe/probe5.py`: plain
JAX, a plain optax loop, `mnemosyne.mnemosyne()` beside `optax.adam(1e-3)`,
seeds vmapped).

    python docs/results_eighth_probe/probe8.py [--only NAME,...] [--seeds 0,1]
        [--scale-steps 4] [--per-seed]

Models: fine-tuning a digits MLP pre-trained (by Adam, inside its
initialisation) on the digits 0-4 to the digits 5-9; the two-dimensional
Beale function; a physics-informed tanh network solving a 1-D Poisson
equation through its second derivative; a digits MLP at batch 1,024; a
residual CNN of six blocks on the digit images; a one-layer causal attention
LM over 64-token windows at batch 8; a three-factor deep matrix
factorisation from a small initialisation (saddles); logistic regression
with one positive in fifty; an MLP with sigmoid outputs fitted to one-hot
labels by squared error; and a 1x1,024 tanh regression of the diabetes
targets at batch 16. Losses are kept positive so that the fifth probe's
geometric means and windows apply. Output as in probe5.py.
"""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn import datasets

DOCS = pathlib.Path(__file__).parents[1]
sys.path.insert(0, str(DOCS / "results_fifth_probe"))
sys.path.insert(0, str(DOCS / "results_sixth_probe"))
sys.path.insert(0, str(DOCS / "results_seventh_probe"))
from probe5 import batch, dense, digits, main, mlp, mlp_init, std, xent  # noqa: E402
from probe6 import markov_text, markov_windows  # noqa: E402
from probe7 import causal_attention  # noqa: E402


def finetune_digits(b=32, pretrain_steps=300):
    """A 2x64 ReLU digits MLP trained by Adam(1e-3) for `pretrain_steps` on
    the digits 0-4 inside `init`, then trained on the digits 5-9 only."""
    x, y = digits()
    labels = np.asarray(y)
    first, second = np.flatnonzero(labels < 5), np.flatnonzero(labels >= 5)
    xa, ya, xb, yb = x[first], y[first], x[second], y[second]

    def init(k):
        params = mlp_init(k, (64, 64, 64, 10))
        adam = optax.adam(1e-3)

        def step(carry, t):
            p, s = carry
            i = batch(jax.random.fold_in(k, t + 1), len(xa), b)
            g = jax.grad(lambda p: xent(mlp(p, xa[i], jax.nn.relu), ya[i]))(p)
            u, s = adam.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (params, _), _ = jax.lax.scan(
            step, (params, adam.init(params)), jnp.arange(pretrain_steps)
        )
        return params

    def loss(p, k):
        i = batch(k, len(xb), b)
        return xent(mlp(p, xb[i], jax.nn.relu), yb[i])

    return init, loss


def beale():
    """The Beale function from (1, 1) (minimum 0 at (3, 0.5))."""
    init = lambda k: jnp.ones(2)

    def loss(p, k):
        x, y = p[0], p[1]
        return ((1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2
                + (2.625 - x + x * y**3) ** 2)

    return init, loss


def poisson_pinn(points=64):
    """u'' = -pi^2 sin(pi x) on [-1, 1], u(+-1) = 0 (solution sin(pi x)):
    a 3x32 tanh network, the residual at fixed collocation points plus the
    boundary values, full batch."""
    xs = jnp.linspace(-1.0, 1.0, points)
    init = lambda k: mlp_init(k, (1, 32, 32, 32, 1))

    def loss(p, k):
        u = lambda x: mlp(p, x[None, None], jnp.tanh)[0, 0]
        u_xx = jax.vmap(jax.grad(jax.grad(u)))(xs)
        residual = u_xx + np.pi**2 * jnp.sin(np.pi * xs)
        boundary = u(jnp.array(-1.0)) ** 2 + u(jnp.array(1.0)) ** 2
        return jnp.mean(residual**2) / np.pi**4 + boundary

    return init, loss


def large_batch_digits(b=1024):
    """A 2x128 ReLU digits MLP at batch 1,024 (of 1,797 examples)."""
    x, y = digits()
    init = lambda k: mlp_init(k, (64, 128, 128, 10))

    def loss(p, k):
        i = batch(k, len(x), b)
        return xent(mlp(p, x[i], jax.nn.relu), y[i])

    return init, loss


def xla_conv(h, w):
    """A 3x3 "SAME" convolution of NHWC `h` by the HWIO kernel `w`."""
    return jax.lax.conv_general_dilated(
        h, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def conv_im2col(h, w):
    """`xla_conv` as one matrix product: the nine shifted windows of the
    padded input side by side, times `w` reshaped (the same function, about
    8x faster on a CPU inside a vmapped scan; session 28)."""
    n, rows, cols, channels = h.shape
    padded = jnp.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))
    windows = [padded[:, dy:dy + rows, dx:dx + cols, :]
               for dy in range(3) for dx in range(3)]
    return jnp.concatenate(windows, -1) @ w.reshape(9 * channels, -1)


def residual_cnn(blocks=6, channels=16, b=32, conv=xla_conv):
    """A stem convolution, `blocks` residual blocks (conv-ReLU-conv plus the
    skip, then ReLU) at 8x8, global average pooling and a dense head; `conv`
    computes each convolution."""
    x, y = digits()
    images = x.reshape(-1, 8, 8, 1)

    def init(k):
        keys = jax.random.split(k, 2 * blocks + 2)
        fan = 9 * channels
        return {
            "stem": jax.random.normal(keys[0], (3, 3, 1, channels)) / 3.0,
            "blocks": [
                {"a": jax.random.normal(keys[1 + 2 * j], (3, 3, channels, channels))
                 * np.sqrt(2.0 / fan),
                 "b": jax.random.normal(keys[2 + 2 * j], (3, 3, channels, channels))
                 * np.sqrt(2.0 / fan) * 0.5,
                 "bias": jnp.zeros(channels)}
                for j in range(blocks)
            ],
            "out": dense(keys[-1], channels, 10),
        }

    def loss(p, k):
        i = batch(k, len(x), b)
        h = jax.nn.relu(conv(images[i], p["stem"]))
        for blk in p["blocks"]:
            h = jax.nn.relu(h + conv(jax.nn.relu(conv(h, blk["a"]) + blk["bias"]),
                                     blk["b"]))
        return xent(h.mean((1, 2)) @ p["out"]["w"] + p["out"]["b"], y[i])

    return init, loss


def attention_lm_long_windows(vocab=16, d=32, seq=64, b=8):
    """One causal self-attention layer (2 heads, learned positions, no MLP)
    over 64-token windows of a second-order Markov text, at batch 8."""
    text = markov_text(vocab, 50_000)
    heads = 2

    def init(k):
        k1, k2, k3, k4 = jax.random.split(k, 4)
        return {
            "emb": jax.random.normal(k1, (vocab, d)) * 0.3,
            "pos": jax.random.normal(k2, (seq, d)) * 0.3,
            "qkv": dense(k3, d, 3 * d),
            "out": dense(k4, 2 * d, vocab),
        }

    def loss(p, k):
        tokens = markov_windows(text, k, b, seq)
        h = p["emb"][tokens[:, :-1]] + p["pos"]
        att = causal_attention(h, p["qkv"], heads)
        logits = jnp.concatenate([h, att], -1) @ p["out"]["w"] + p["out"]["b"]
        return xent(logits, tokens[:, 1:])

    return init, loss


def deep_matrix_factorisation(n=30, rank=3, scale=0.05):
    """W3 W2 W1 fitted to a rank-3 30x30 target, full batch, from a small
    initialisation (the product starts near a saddle at 0)."""
    rng = np.random.default_rng(7)
    target = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, n)) / n**0.5
    target = jnp.asarray(target, jnp.float32)

    def init(k):
        return [jax.random.normal(kk, (n, n)) * scale for kk in jax.random.split(k, 3)]

    def loss(p, k):
        return jnp.mean((p[2] @ p[1] @ p[0] - target) ** 2)

    return init, loss


def imbalanced_logreg(dim=20, b=64, positive=0.02):
    """Logistic regression on a synthetic problem with one positive in
    fifty (positives shifted along a random direction), at batch 64."""
    rng = np.random.default_rng(8)
    n = 20_000
    labels = (rng.random(n) < positive).astype(np.float32)
    direction = rng.normal(size=dim) / np.sqrt(dim)
    features = rng.normal(size=(n, dim)) + 2.0 * labels[:, None] * direction
    x, y = jnp.asarray(features, jnp.float32), jnp.asarray(labels)
    init = lambda k: {"w": jnp.zeros(dim), "b": jnp.zeros(())}

    def loss(p, k):
        i = batch(k, n, b)
        logits = x[i] @ p["w"] + p["b"]
        return optax.sigmoid_binary_cross_entropy(logits, y[i]).mean()

    return init, loss


def sigmoid_mse_onehot(b=32):
    """A 2x64 tanh digits MLP with sigmoid outputs fitted to one-hot labels by
    squared error (saturating outputs, small gradients)."""
    x, y = digits()
    onehot = jax.nn.one_hot(y, 10)
    init = lambda k: mlp_init(k, (64, 64, 64, 10))

    def loss(p, k):
        i = batch(k, len(x), b)
        return jnp.mean((jax.nn.sigmoid(mlp(p, x[i], jnp.tanh)) - onehot[i]) ** 2)

    return init, loss


def wide_tanh_regression(width=1024, b=16):
    """A 1x1,024 tanh network regressing the standardised diabetes targets at
    batch 16."""
    d = datasets.load_diabetes()
    x = jnp.asarray(std(d.data))
    y = jnp.asarray(std(d.target[:, None])[:, 0])
    init = lambda k: mlp_init(k, (10, width, 1))

    def loss(p, k):
        i = batch(k, len(x), b)
        return jnp.mean((mlp(p, x[i], jnp.tanh)[:, 0] - y[i]) ** 2)

    return init, loss


PROBES = {
    "finetune_digits_0to4_then_5to9_b32": (finetune_digits, 2000),
    "beale_2d": (beale, 3000),
    "poisson_pinn_tanh_3x32_full": (poisson_pinn, 3000),
    "digits_2x128_relu_b1024": (large_batch_digits, 3000),
    "digits_rescnn_6blocks_b32": (residual_cnn, 2000),
    "markov_attention_T64_b8": (attention_lm_long_windows, 3000),
    "deep_matrix_factorisation_small_init": (deep_matrix_factorisation, 3000),
    "imbalanced_logreg_1in50_b64": (imbalanced_logreg, 3000),
    "digits_sigmoid_mse_onehot_b32": (sigmoid_mse_onehot, 3000),
    "diabetes_tanh_1x1024_b16": (wide_tanh_regression, 3000),
}

if __name__ == "__main__":
    main(PROBES)
