"""A sixth probe (session 23): fifteen more hand-written models from families
no earlier probe or meta-training task had, run with the fifth probe's loop
(`docs/results_fifth_probe/probe5.py`: plain JAX, a plain optax loop,
`mnemosyne.mnemosyne()` beside `optax.adam(1e-3)`, seeds vmapped).

    python docs/results_sixth_probe/probe6.py [--only NAME,...] [--seeds 0,1]
        [--scale-steps 4] [--floor 0.03125]

Models: a 1-D CNN finding motifs in noise, a VAE on digits, L2 logistic
regression (full batch), a tanh MLP fitting a high-frequency sine, an 8-layer
deep linear net, a contrastive (InfoNCE) digits encoder, self-attention over
sets (predict the maximum), Poisson regression, the two scalar parameters of
a damped oscillator fitted through its simulated trajectory, heteroscedastic
Gaussian regression (mean and log-variance heads), a batch-normalised MLP, an
LSTM language model on a generated Markov text, a digits MLP with its loss
scaled by 1e-3 and by 1e3, and a linear SVM (hinge loss) at batch 16.
Losses are kept positive (a constant added where one is needed) so that the
fifth probe's geometric means and windows apply. Output as in probe5.py.
"""

import functools
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn import datasets

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "results_fifth_probe"))
from probe5 import batch, dense, digits, main, mlp, mlp_init, std, xent  # noqa: E402


def conv1d_motifs(length=64, motifs=4, width=8, b=32):
    """Which of four fixed motifs is hidden, at a random place, in noise."""
    shapes = jnp.asarray(
        np.random.default_rng(0).normal(size=(motifs, width)), jnp.float32
    )

    def init(k):
        k1, k2, k3 = jax.random.split(k, 3)
        return {
            "c1": jax.random.normal(k1, (5, 1, 16)) / np.sqrt(5),
            "b1": jnp.zeros(16),
            "c2": jax.random.normal(k2, (5, 16, 32)) / np.sqrt(80),
            "b2": jnp.zeros(32),
            "out": dense(k3, 32, motifs),
        }

    def conv(x, w, bias):
        y = jax.lax.conv_general_dilated(
            x, w, (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC")
        )
        return jax.nn.relu(y + bias)

    def loss(p, k):
        k1, k2, k3 = jax.random.split(k, 3)
        y = jax.random.randint(k1, (b,), 0, motifs)
        at = jax.random.randint(k2, (b,), 0, length - width)
        x = jax.random.normal(k3, (b, length))

        def hide(row, m, a):  # the motif, over a little of the noise it replaces
            old = jax.lax.dynamic_slice(row, (a,), (width,))
            return jax.lax.dynamic_update_slice(row, 1.5 * shapes[m] + 0.3 * old, (a,))

        x = jax.vmap(hide)(x, y, at)
        h = conv(conv(x[..., None], p["c1"], p["b1"]), p["c2"], p["b2"]).max(1)
        return xent(h @ p["out"]["w"] + p["out"]["b"], y)

    return init, loss


def vae_digits(latent=8, b=64):
    x, _ = digits()

    def init(k):
        k1, k2 = jax.random.split(k)
        return {
            "enc": mlp_init(k1, (64, 128, 2 * latent)),
            "dec": mlp_init(k2, (latent, 128, 64)),
        }

    def loss(p, k):
        k1, k2 = jax.random.split(k)
        xb = x[batch(k1, len(x), b)]
        stats = mlp(p["enc"], xb, jax.nn.relu)
        mu, logvar = stats[:, :latent], jnp.clip(stats[:, latent:], -10, 10)
        z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(k2, mu.shape)
        recon = 0.5 * jnp.sum((mlp(p["dec"], z, jax.nn.relu) - xb) ** 2, 1)
        kl = 0.5 * jnp.sum(jnp.exp(logvar) + mu**2 - 1 - logvar, 1)
        return jnp.mean(recon + kl)

    return init, loss


def logreg_l2_full():
    d = datasets.load_breast_cancer()
    x, y = jnp.asarray(std(d.data)), jnp.asarray(d.target, jnp.float32)
    init = lambda k: {"w": jnp.zeros(x.shape[1]), "b": jnp.zeros(())}

    def loss(p, k):
        z = x @ p["w"] + p["b"]
        return jnp.mean(optax.sigmoid_binary_cross_entropy(z, y)) + 1e-3 * jnp.sum(
            p["w"] ** 2
        )

    return init, loss


def sine_fit(n=256):
    x = jnp.linspace(-1, 1, n)[:, None]
    y = jnp.sin(6 * jnp.pi * x) + 0.5 * jnp.sin(2 * jnp.pi * 3.3 * x + 1.0)
    init = lambda k: mlp_init(k, (1, 64, 64, 64, 1))
    loss = lambda p, k: jnp.mean((mlp(p, x, jnp.tanh) - y) ** 2)
    return init, loss


def deep_linear(depth=8, d=32, rank=4, b=32):
    rng = np.random.default_rng(2)
    a = jnp.asarray(
        rng.normal(size=(d, rank)) @ rng.normal(size=(rank, d)) / np.sqrt(d),
        jnp.float32,
    )
    init = lambda k: mlp_init(k, (d,) * (depth + 1))

    def loss(p, k):
        k1, k2 = jax.random.split(k)
        xb = jax.random.normal(k1, (b, d))
        yb = xb @ a + 0.01 * jax.random.normal(k2, (b, d))
        return jnp.mean((mlp(p, xb, lambda h: h) - yb) ** 2)

    return init, loss


def contrastive_digits(b=64, temperature=0.1):
    x, _ = digits()
    init = lambda k: mlp_init(k, (64, 128, 32))

    def view(k, xb):
        k1, k2 = jax.random.split(k)
        keep = jax.random.bernoulli(k1, 0.8, xb.shape)
        return xb * keep + 0.3 * jax.random.normal(k2, xb.shape)

    def embed(p, xb):
        z = mlp(p, xb, jax.nn.relu)
        return z / (jnp.linalg.norm(z, axis=1, keepdims=True) + 1e-6)

    def loss(p, k):
        k1, k2, k3 = jax.random.split(k, 3)
        xb = x[batch(k1, len(x), b)]
        za, zb = embed(p, view(k2, xb)), embed(p, view(k3, xb))
        return xent(za @ zb.T / temperature, jnp.arange(b))

    return init, loss


def set_max_attention(n=10, d=32, b=32):
    def init(k):
        ks = jax.random.split(k, 5)
        return {
            "in": dense(ks[0], 1, d),
            "q": dense(ks[1], d, d),
            "k": dense(ks[2], d, d),
            "v": dense(ks[3], d, d),
            "out": mlp_init(ks[4], (d, d, 1)),
        }

    def loss(p, k):
        xs = jax.random.normal(k, (b, n, 1))
        h = xs @ p["in"]["w"] + p["in"]["b"]
        q, kk, v = (h @ p[s]["w"] + p[s]["b"] for s in "qkv")
        att = jax.nn.softmax(q @ kk.transpose(0, 2, 1) / np.sqrt(d), -1)
        h = (h + att @ v).mean(1)
        return jnp.mean((mlp(p["out"], h, jax.nn.relu)[:, 0] - xs.max((1, 2))) ** 2)

    return init, loss


def poisson_regression(n=1000, d=20):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, d)).astype(np.float32)
    counts = rng.poisson(np.exp(0.3 * x @ rng.normal(size=d) + 1.0)).astype(np.float32)
    x, y = jnp.asarray(x), jnp.asarray(counts)
    log_factorial = jax.scipy.special.gammaln(y + 1)
    init = lambda k: {"w": jnp.zeros(d), "b": jnp.zeros(())}

    def loss(p, k):
        eta = x @ p["w"] + p["b"]
        return jnp.mean(jnp.exp(eta) - y * eta + log_factorial)

    return init, loss


def oscillator_parameters(steps=200, dt=0.05):
    """Fit the stiffness and damping (two scalars) of x'' = -k x - c x'."""

    def simulate(k, c):
        def f(s, _):
            x, v = s
            v = v + dt * (-k * x - c * v)
            x = x + dt * v
            return (x, v), x

        return jax.lax.scan(f, (jnp.ones(()), jnp.zeros(())), None, steps)[1]

    target = simulate(4.0, 0.3)
    init = lambda key: {"k": jnp.ones(()), "c": jnp.ones(())}
    loss = lambda p, key: jnp.mean((simulate(p["k"], p["c"]) - target) ** 2)
    return init, loss


def heteroscedastic(b=32):
    """Gaussian NLL with mean and log-variance heads (+3 keeps it positive)."""
    init = lambda k: mlp_init(k, (1, 64, 64, 2))

    def loss(p, k):
        k1, k2 = jax.random.split(k)
        xb = jax.random.uniform(k1, (b, 1), minval=-2, maxval=2)
        yb = jnp.sin(3 * xb) + (0.05 + 0.3 * jnp.abs(xb)) * jax.random.normal(
            k2, xb.shape
        )
        out = mlp(p, xb, jax.nn.relu)
        mean, logvar = out[:, :1], jnp.clip(out[:, 1:], -10, 10)
        return jnp.mean(0.5 * (logvar + (yb - mean) ** 2 / jnp.exp(logvar))) + 3.0

    return init, loss


def batchnorm_mlp(sizes=(128,) * 4, b=32):
    x, y = digits()

    def init(k):
        layers = mlp_init(k, (64,) + sizes + (10,))
        for layer, n in zip(layers[:-1], sizes, strict=True):
            layer["g"] = jnp.ones(n)
        return layers

    def loss(p, k):
        i = batch(k, len(x), b)
        h = x[i]
        for layer in p[:-1]:
            z = h @ layer["w"]
            z = (z - z.mean(0)) / jnp.sqrt(z.var(0) + 1e-5)
            h = jax.nn.relu(z * layer["g"] + layer["b"])
        return xent(h @ p[-1]["w"] + p[-1]["b"], y[i])

    return init, loss


@functools.cache
def markov_text(vocab: int, length: int):
    """A text drawn from a random second-order Markov chain, generated once
    per process (a Python loop; every optimizer's run reuses it)."""
    rng = np.random.default_rng(4)
    table = rng.dirichlet(np.full(vocab, 0.2), size=(vocab, vocab))
    text = np.zeros(length, np.int32)
    text[:2] = [0, 1]
    u = rng.random(length)
    cdf = np.cumsum(table, -1)
    for t in range(2, length):
        text[t] = min(np.searchsorted(cdf[text[t - 2], text[t - 1]], u[t]), vocab - 1)
    return jnp.asarray(text)


def markov_windows(text, key, b: int, seq: int):
    """`b` windows of `seq + 1` consecutive tokens of `text` at random starts,
    `(b, seq + 1)`: inputs `[:, :-1]`, next-token targets `[:, 1:]`."""
    starts = jax.random.randint(key, (b,), 0, len(text) - seq - 1)
    return jax.vmap(lambda s: jax.lax.dynamic_slice(text, (s,), (seq + 1,)))(starts)


def lstm_markov_lm(vocab=20, h=64, seq=32, b=16):
    text = markov_text(vocab, 100_000)

    def init(k):
        ks = jax.random.split(k, 3)
        return {
            "emb": 0.1 * jax.random.normal(ks[0], (vocab, 32)),
            "w": dense(ks[1], 32 + h, 4 * h),
            "out": dense(ks[2], h, vocab),
        }

    def loss(p, k):
        tokens = markov_windows(text, k, b, seq)
        xs = p["emb"][tokens[:, :-1]].transpose(1, 0, 2)

        def cell(carry, x):
            hs, cs = carry
            z = jnp.concatenate([x, hs], -1) @ p["w"]["w"] + p["w"]["b"]
            i, f, o, g = jnp.split(z, 4, -1)
            cs = jax.nn.sigmoid(f + 1.0) * cs + jax.nn.sigmoid(i) * jnp.tanh(g)
            hs = jax.nn.sigmoid(o) * jnp.tanh(cs)
            return (hs, cs), hs

        _, hs = jax.lax.scan(cell, (jnp.zeros((b, h)),) * 2, xs)
        logits = hs.transpose(1, 0, 2) @ p["out"]["w"] + p["out"]["b"]
        return xent(logits, tokens[:, 1:])

    return init, loss


def scaled_loss(scale, b=32):
    x, y = digits()
    init = lambda k: mlp_init(k, (64, 64, 64, 10))

    def loss(p, k):
        i = batch(k, len(x), b)
        return scale * xent(mlp(p, x[i], jax.nn.relu), y[i])

    return init, loss


def hinge_svm(b=16):
    d = datasets.load_breast_cancer()
    x, y = jnp.asarray(std(d.data)), jnp.asarray(2.0 * d.target - 1.0, jnp.float32)
    init = lambda k: {"w": jnp.zeros(x.shape[1]), "b": jnp.zeros(())}

    def loss(p, k):
        i = batch(k, len(x), b)
        margin = y[i] * (x[i] @ p["w"] + p["b"])
        return jnp.mean(jax.nn.relu(1 - margin)) + 1e-3 * jnp.sum(p["w"] ** 2)

    return init, loss


PROBES = {
    "conv1d_motifs_b32": (conv1d_motifs, 2000),
    "vae_digits_b64": (vae_digits, 3000),
    "logreg_l2_breast_cancer_full": (logreg_l2_full, 1000),
    "sine_fit_tanh_3x64_full": (sine_fit, 3000),
    "deep_linear_8x32_b32": (deep_linear, 3000),
    "contrastive_digits_b64": (contrastive_digits, 2000),
    "set_max_attention_b32": (set_max_attention, 2000),
    "poisson_regression_full": (poisson_regression, 1500),
    "oscillator_two_scalars": (oscillator_parameters, 2000),
    "heteroscedastic_nll_b32": (heteroscedastic, 3000),
    "digits_batchnorm_4x128_b32": (batchnorm_mlp, 2000),
    "lstm_markov_lm_b16": (lstm_markov_lm, 2000),
    "digits_mlp_loss_x1e-3": (lambda: scaled_loss(1e-3), 1500),
    "digits_mlp_loss_x1e3": (lambda: scaled_loss(1e3), 1500),
    "hinge_svm_breast_cancer_b16": (hinge_svm, 2000),
}


if __name__ == "__main__":
    main(PROBES)
