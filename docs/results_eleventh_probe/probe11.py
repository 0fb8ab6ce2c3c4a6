"""An eleventh probe (session 34): twelve more hand-written models, written
down before any was run, of kinds no earlier probe had: a non-smooth loss,
label noise, parameters stored in bfloat16, a graph network, a denoising
score model, a mixture of experts, a plain tanh RNN that must remember, a
Transformer with RMSNorm and SwiGLU, a recurrent forecaster, an
ill-conditioned polynomial fit, a deep MLP at batch 2 and a rating model with
sparse embedding gradients. Run with the fifth probe's loop
(`docs/results_fifth_probe/probe5.py`: plain JAX, a plain optax loop,
`mnemosyne.mnemosyne()` beside `optax.adam(1e-3)`, seeds vmapped).

    python docs/results_eleventh_probe/probe11.py [--only NAME,...] [--seeds 0,1]
        [--scale-steps 4] [--per-seed]

Output as in probe5.py.
"""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
from sklearn import datasets

DOCS = pathlib.Path(__file__).parents[1]
for folder in ("results_fifth_probe", "results_sixth_probe", "results_seventh_probe"):
    sys.path.insert(0, str(DOCS / folder))
from probe5 import batch, dense, digits, main, mlp, mlp_init, std, xent  # noqa: E402
from probe6 import markov_text, markov_windows  # noqa: E402
from probe7 import causal_attention  # noqa: E402


def quantile_regression(tau=0.9, b=32):
    """A 2x64 ReLU MLP fitting the 0.9-quantile of the standardised diabetes
    target with the pinball loss (piecewise linear: no curvature anywhere)."""
    d = datasets.load_diabetes()
    x, y = jnp.asarray(std(d.data)), jnp.asarray(std(d.target[:, None])[:, 0])
    init = lambda k: mlp_init(k, (10, 64, 64, 1))

    def loss(p, k):
        i = batch(k, len(x), b)
        r = y[i] - mlp(p, x[i], jax.nn.relu)[:, 0]
        return jnp.mean(jnp.maximum(tau * r, (tau - 1) * r))

    return init, loss


def label_noise_mlp(fraction=0.3, b=32):
    """A 2x128 ReLU MLP on digits whose labels are replaced, for a fixed 30%
    of the examples, by uniformly drawn ones (it can only memorise them)."""
    x, y = digits()
    rng = np.random.default_rng(0)
    noisy = np.asarray(y).copy()
    flip = rng.random(len(noisy)) < fraction
    noisy[flip] = rng.integers(0, 10, flip.sum())
    y = jnp.asarray(noisy)
    init = lambda k: mlp_init(k, (64, 128, 128, 10))

    def loss(p, k):
        i = batch(k, len(x), b)
        return xent(mlp(p, x[i], jax.nn.relu), y[i])

    return init, loss


def bfloat16_mlp(b=32):
    """A 3x64 ReLU MLP on digits whose parameters, and so gradients and
    updates, are bfloat16 (pure low-precision training, no float32 copy)."""
    x, y = digits()

    def init(k):
        return jax.tree.map(
            lambda a: a.astype(jnp.bfloat16), mlp_init(k, (64, 64, 64, 64, 10))
        )

    def loss(p, k):
        i = batch(k, len(x), b)
        logits = mlp(p, x[i].astype(jnp.bfloat16), jax.nn.relu)
        return xent(logits.astype(jnp.float32), y[i])

    return init, loss


def block_graph(nodes=300, classes=3, p_in=0.05, p_out=0.005, features=16):
    """A stochastic block model: the symmetric normalised adjacency with
    self-loops, noisy class features and the labels (generated once)."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, classes, nodes)
    same = y[:, None] == y[None, :]
    a = np.triu(rng.random((nodes, nodes)) < np.where(same, p_in, p_out), 1)
    a = a + a.T + np.eye(nodes)
    deg = a.sum(1)
    a_hat = a / np.sqrt(deg[:, None] * deg[None, :])
    centres = rng.normal(size=(classes, features))
    x = centres[y] * 0.5 + rng.normal(size=(nodes, features))
    return jnp.asarray(a_hat, jnp.float32), jnp.asarray(x, jnp.float32), jnp.asarray(y)


def graph_network(hidden=32):
    """A 2-layer graph convolutional network (Kipf and Welling) classifying
    the nodes of a generated block-model graph, full batch, trained on the
    first half of the nodes."""
    a_hat, x, y = block_graph()
    train = jnp.arange(len(y)) < len(y) // 2

    def init(k):
        k1, k2 = jax.random.split(k)
        return [dense(k1, x.shape[1], hidden), dense(k2, hidden, 3)]

    def loss(p, k):
        h = jax.nn.relu(a_hat @ (x @ p[0]["w"]) + p[0]["b"])
        logits = a_hat @ (h @ p[1]["w"]) + p[1]["b"]
        per_node = jax.vmap(lambda z, t: xent(z[None], t[None]))(logits, y)
        return jnp.sum(jnp.where(train, per_node, 0.0)) / train.sum()

    return init, loss


def score_matching(sigma=0.1, b=128):
    """Denoising score matching on two moons: a 3x64 softplus MLP `s` is fit
    so that `sigma * s(x + sigma * e)` predicts `-e` (a loss with a noise
    floor well above zero)."""
    x, _ = datasets.make_moons(2000, noise=0.05, random_state=0)
    x = jnp.asarray(std(x))
    init = lambda k: mlp_init(k, (2, 64, 64, 64, 2))

    def loss(p, k):
        k1, k2 = jax.random.split(k)
        i = batch(k1, len(x), b)
        e = jax.random.normal(k2, (b, 2))
        s = mlp(p, x[i] + sigma * e, jax.nn.softplus)
        return jnp.mean(jnp.sum((sigma * s + e) ** 2, -1))

    return init, loss


def mixture_of_experts(experts=4, b=32):
    """Four 64-32-10 tanh experts on digits mixed by a softmax gate on the
    input (multiplicative interactions between gate and experts)."""
    x, y = digits()

    def init(k):
        ks = jax.random.split(k, experts + 1)
        return {
            "gate": dense(ks[0], 64, experts, 0.1),
            "experts": [mlp_init(ke, (64, 32, 10)) for ke in ks[1:]],
        }

    def loss(p, k):
        i = batch(k, len(x), b)
        g = jax.nn.softmax(x[i] @ p["gate"]["w"] + p["gate"]["b"], -1)
        outs = jnp.stack(
            [jax.nn.softmax(mlp(e, x[i], jnp.tanh), -1) for e in p["experts"]], 1
        )
        probs = jnp.einsum("be,bec->bc", g, outs)
        return -jnp.mean(jnp.log(probs[jnp.arange(b), y[i]] + 1e-9))

    return init, loss


def elman_recall(length=15, hidden=32, b=32):
    """A plain tanh RNN (recurrent matrix at spectral scale about 1) reading
    `length` random bits and classifying the first one at the end: a
    long-range dependency with vanishing and exploding gradients."""

    def init(k):
        k1, k2, k3 = jax.random.split(k, 3)
        return {
            "in": dense(k1, 1, hidden),
            "rec": dense(k2, hidden, hidden),
            "out": dense(k3, hidden, 2),
        }

    def loss(p, k):
        bits = jax.random.bernoulli(k, 0.5, (b, length)).astype(jnp.int32)

        def cell(h, u):
            return jnp.tanh(
                u[:, None] @ p["in"]["w"] + h @ p["rec"]["w"] + p["rec"]["b"]
            ), None

        h, _ = jax.lax.scan(cell, jnp.zeros((b, hidden)), bits.T.astype(jnp.float32))
        return xent(h @ p["out"]["w"] + p["out"]["b"], bits[:, 0])

    return init, loss


def rms_norm(h, g):
    """RMSNorm over the last axis with gain `g`."""
    return g * h / jnp.sqrt((h * h).mean(-1, keepdims=True) + 1e-6)


def swiglu_lm(vocab=16, d=64, layers=2, seq=32, b=16, heads=4):
    """A 2-layer causal Transformer of today's LM kind: RMSNorm before each
    sublayer, a SwiGLU MLP of hidden width 160, no biases,
    learned positions, on a second-order Markov text."""
    text = markov_text(vocab, 100_000)
    hidden = 160

    def init(k):
        ks = jax.random.split(k, 3 + layers)
        w = lambda kk, i, o, s=1.0: s * jax.random.normal(kk, (i, o)) / np.sqrt(i)
        blocks = []
        for kb in ks[3:]:
            k1, k2, k3, k4, k5 = jax.random.split(kb, 5)
            blocks.append(
                {
                    "qkv": w(k1, d, 3 * d),
                    "proj": w(k2, d, d, 0.5),
                    "gate": w(k3, d, hidden),
                    "up": w(k4, d, hidden),
                    "down": w(k5, hidden, d, 0.5),
                    "n1": jnp.ones(d),
                    "n2": jnp.ones(d),
                }
            )
        return {
            "emb": 0.1 * jax.random.normal(ks[0], (vocab, d)),
            "pos": 0.1 * jax.random.normal(ks[1], (seq, d)),
            "blocks": blocks,
            "norm": jnp.ones(d),
            "out": w(ks[2], d, vocab),
        }

    def loss(p, k):
        tokens = markov_windows(text, k, b, seq)
        h = p["emb"][tokens[:, :-1]] + p["pos"]
        for blk in p["blocks"]:
            qkv = {"w": blk["qkv"], "b": jnp.zeros(3 * d)}
            h = h + causal_attention(rms_norm(h, blk["n1"]), qkv, heads) @ blk["proj"]
            z = rms_norm(h, blk["n2"])
            h = h + (jax.nn.silu(z @ blk["gate"]) * (z @ blk["up"])) @ blk["down"]
        return xent(rms_norm(h, p["norm"]) @ p["out"], tokens[:, 1:])

    return init, loss


def lstm_forecast(window=24, hidden=32, b=16):
    """An LSTM reading 24 values of a noisy sum of two sines and regressing
    the next value (mean squared error; noise floor 0.01)."""
    t = np.arange(20_000)
    rng = np.random.default_rng(2)
    series = (
        np.sin(0.07 * t) + 0.5 * np.sin(0.31 * t + 1.0) + 0.1 * rng.normal(size=len(t))
    )
    series = jnp.asarray(series, jnp.float32)

    def init(k):
        k1, k2 = jax.random.split(k)
        return {"w": dense(k1, 1 + hidden, 4 * hidden), "out": dense(k2, hidden, 1)}

    def loss(p, k):
        starts = jax.random.randint(k, (b,), 0, len(series) - window - 1)
        seqs = jax.vmap(lambda s: jax.lax.dynamic_slice(series, (s,), (window + 1,)))(
            starts
        )

        def cell(carry, u):
            h, c = carry
            z = jnp.concatenate([u[:, None], h], -1) @ p["w"]["w"] + p["w"]["b"]
            i, f, g, o = jnp.split(z, 4, -1)
            c = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            return (jax.nn.sigmoid(o) * jnp.tanh(c), c), None

        zeros = jnp.zeros((b, hidden))
        (h, _), _ = jax.lax.scan(cell, (zeros, zeros), seqs[:, :-1].T)
        return jnp.mean(((h @ p["out"]["w"] + p["out"]["b"])[:, 0] - seqs[:, -1]) ** 2)

    return init, loss


def polynomial_fit(degree=9, points=200):
    """The ten coefficients of a degree-9 polynomial fit, full batch, to
    `sin(3x)` plus noise on [0, 2] in the raw monomial basis (columns from 1
    to 512: a badly conditioned least-squares problem)."""
    rng = np.random.default_rng(3)
    x = np.linspace(0.0, 2.0, points)
    v = jnp.asarray(np.vander(x, degree + 1, increasing=True), jnp.float32)
    y = jnp.asarray(np.sin(3 * x) + 0.05 * rng.normal(size=points), jnp.float32)
    init = lambda k: {"c": jnp.zeros(degree + 1)}

    def loss(p, k):
        return jnp.mean((v @ p["c"] - y) ** 2)

    return init, loss


def ratings(users=1000, items=500, rank=4, dim=16, observed=20_000, b=64):
    """Matrix factorisation of generated ratings (a rank-4 truth plus noise,
    20,000 observed pairs) with user and item embeddings and biases, at
    batch 64: each step touches at most 64 rows of each embedding."""
    rng = np.random.default_rng(5)
    u_true, v_true = rng.normal(size=(users, rank)), rng.normal(size=(items, rank))
    us, vs = rng.integers(0, users, observed), rng.integers(0, items, observed)
    r = (u_true[us] * v_true[vs]).sum(-1) / np.sqrt(rank) + 0.3 * rng.normal(
        size=observed
    )
    us, vs, r = jnp.asarray(us), jnp.asarray(vs), jnp.asarray(r, jnp.float32)

    def init(k):
        k1, k2 = jax.random.split(k)
        return {
            "u": 0.1 * jax.random.normal(k1, (users, dim)),
            "v": 0.1 * jax.random.normal(k2, (items, dim)),
            "bu": jnp.zeros(users),
            "bv": jnp.zeros(items),
            "mu": jnp.zeros(()),
        }

    def loss(p, k):
        i = batch(k, observed, b)
        pred = (
            (p["u"][us[i]] * p["v"][vs[i]]).sum(-1)
            + p["bu"][us[i]]
            + p["bv"][vs[i]]
            + p["mu"]
        )
        return jnp.mean((pred - r[i]) ** 2)

    return init, loss


def deep_tiny_batch(b=2):
    """A 6x32 leaky-ReLU MLP on digits at batch 2."""
    x, y = digits()
    init = lambda k: mlp_init(k, (64,) + (32,) * 6 + (10,))

    def loss(p, k):
        i = batch(k, len(x), b)
        return xent(mlp(p, x[i], jax.nn.leaky_relu), y[i])

    return init, loss


PROBES = {
    "diabetes_quantile_2x64_b32": (quantile_regression, 3000),
    "digits_label_noise30_2x128_b32": (label_noise_mlp, 4000),
    "digits_bf16_3x64_b32": (bfloat16_mlp, 3000),
    "block_graph_gcn2_full": (graph_network, 1500),
    "moons_score_matching_3x64_b128": (score_matching, 3000),
    "digits_moe4_b32": (mixture_of_experts, 3000),
    "bits_elman_recall_T15_b32": (elman_recall, 3000),
    "markov_swiglu_rmsnorm_l2_b16": (swiglu_lm, 2000),
    "sines_lstm_forecast_b16": (lstm_forecast, 3000),
    "polynomial_deg9_full": (polynomial_fit, 3000),
    "digits_6x32_leaky_b2": (deep_tiny_batch, 6000),
    "ratings_mf_dim16_b64": (ratings, 4000),
}


if __name__ == "__main__":
    main(PROBES)
