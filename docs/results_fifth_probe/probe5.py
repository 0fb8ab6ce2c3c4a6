"""A fifth probe (session 22), written as an outsider would write one: twelve
hand-written models and losses (no `mnemosyne.tasks`), a plain optax loop,
`mnemosyne.mnemosyne()` beside `optax.adam(1e-3)`.

    python docs/results_fifth_probe/probe5.py [--only NAME,...] [--seeds 0,1]
        [--scale-steps 4] [--floor 0.03125] [--per-seed]

Models: raw-target diabetes regression, a digits autoencoder, a 2,000-token
next-token model, a 6-layer sigmoid MLP, an 8-block residual MLP with layer
norm, full-batch matrix factorisation, a GRU on the adding problem, a
4,096-wide MLP, full-batch ill-conditioned linear regression, an iris MLP
initialised at 10x scale, a batch-1 MLP, a batch-256 ELU MLP; 1,500-4,000
steps each (times `--scale-steps`). Data: scikit-learn's bundled datasets or
generated. Seeds are vmapped in one program per optimizer. `--floor F` adds
the shipped θ read with the step multiplier's range (F, 2).

Prints, per model: the number of steps, then per optimizer the geometric mean
over seeds of the final loss (mean of the last 5% of steps), each run's final
window over its best (`evaluation.stability_ratio`) and the wall time, and
whether each Mnemosyne column ends at most at Adam's loss ("win");
`--per-seed` adds a line per optimizer with each seed's final loss.
"""
import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn import datasets

import mnemosyne
from mnemosyne.evaluation import stability_ratio


def std(x):
    x = np.asarray(x, np.float32)
    return (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1)


def dense(key, i, o, scale=1.0):
    return {"w": scale * jax.random.normal(key, (i, o)) / np.sqrt(i), "b": jnp.zeros(o)}


def mlp_init(key, sizes, scale=1.0):
    ks = jax.random.split(key, len(sizes) - 1)
    pairs = zip(ks, sizes[:-1], sizes[1:], strict=True)
    return [dense(k, a, b, scale) for k, a, b in pairs]


def mlp(ps, x, act):
    for p in ps[:-1]:
        x = act(x @ p["w"] + p["b"])
    return x @ ps[-1]["w"] + ps[-1]["b"]


def batch(key, n, b):
    return jax.random.randint(key, (b,), 0, n)


def xent(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@functools.cache
def digits():
    """scikit-learn's digits, standardised, as device arrays (loaded once per
    process; every model and optimizer that needs them shares them)."""
    data = datasets.load_digits()
    return jnp.asarray(std(data.data)), jnp.asarray(data.target)


def digits_mlp(sizes, act, b, scale=1.0):
    x, y = digits()
    init = lambda k: mlp_init(k, (64,) + sizes + (10,), scale)
    def loss(p, k):
        i = batch(k, len(x), b)
        return xent(mlp(p, x[i], act), y[i])
    return init, loss


def diabetes_raw():
    d = datasets.load_diabetes()
    x, y = jnp.asarray(std(d.data)), jnp.asarray(d.target, jnp.float32)
    init = lambda k: mlp_init(k, (10, 64, 64, 1))
    def loss(p, k):
        i = batch(k, len(x), 32)
        return jnp.mean((mlp(p, x[i], jax.nn.relu)[:, 0] - y[i]) ** 2)
    return init, loss


def autoencoder():
    x, _ = digits()
    init = lambda k: mlp_init(k, (64, 32, 8, 32, 64))
    def loss(p, k):
        i = batch(k, len(x), 64)
        return jnp.mean((mlp(p, x[i], jnp.tanh) - x[i]) ** 2)
    return init, loss


def big_vocab_lm(vocab=2000, d=64):
    rng = np.random.default_rng(0)
    succ = rng.integers(0, vocab, (vocab, 4))
    def init(k):
        k1, k2, k3 = jax.random.split(k, 3)
        return {"emb": jax.random.normal(k1, (vocab, d)) * 0.1,
                "h": dense(k2, 2 * d, 128), "out": dense(k3, 128, vocab)}
    succ_j = jnp.asarray(succ)
    def loss(p, k):
        k1, k2, k3 = jax.random.split(k, 3)
        a = jax.random.randint(k1, (64,), 0, vocab)
        b = succ_j[a, jax.random.randint(k2, (64,), 0, 4)]
        c = succ_j[b, jax.random.randint(k3, (64,), 0, 4)]
        h = jnp.concatenate([p["emb"][a], p["emb"][b]], -1)
        h = jax.nn.relu(h @ p["h"]["w"] + p["h"]["b"])
        return xent(h @ p["out"]["w"] + p["out"]["b"], c)
    return init, loss


def resmlp(blocks=8, width=64, b=16):
    x, y = digits()
    def init(k):
        ks = jax.random.split(k, blocks + 2)
        return {"in": dense(ks[0], 64, width), "out": dense(ks[1], width, 10),
                "blocks": [{"g": jnp.ones(width), "f1": dense(kk, width, 2 * width),
                            "f2": dense(jax.random.fold_in(kk, 1), 2 * width, width)}
                           for kk in ks[2:]]}
    def loss(p, k):
        i = batch(k, len(x), b)
        h = x[i] @ p["in"]["w"] + p["in"]["b"]
        for q in p["blocks"]:
            z = h - h.mean(-1, keepdims=True)
            z = z / (h.std(-1, keepdims=True) + 1e-5) * q["g"]
            z = jax.nn.gelu(z @ q["f1"]["w"] + q["f1"]["b"])
            h = h + z @ q["f2"]["w"] + q["f2"]["b"]
        return xent(h @ p["out"]["w"] + p["out"]["b"], y[i])
    return init, loss


def matrix_factorisation(n=100, m=80, rank=5, k=10):
    rng = np.random.default_rng(0)
    target = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, m))
    mask = jnp.asarray(rng.random((n, m)) < 0.3, jnp.float32)
    target = jnp.asarray(target, jnp.float32)
    init = lambda key: {
        "u": 0.1 * jax.random.normal(key, (n, k)),
        "v": 0.1 * jax.random.normal(jax.random.fold_in(key, 1), (m, k)),
    }
    def loss(p, key):
        return jnp.sum(mask * (p["u"] @ p["v"].T - target) ** 2) / jnp.sum(mask)
    return init, loss


def gru_adding(T=20, h=32, b=32):
    def init(k):
        ks = jax.random.split(k, 4)
        return {"wx": dense(ks[0], 2, 3 * h), "wh": dense(ks[1], h, 3 * h),
                "out": dense(ks[2], h, 1)}
    def loss(p, k):
        k1, k2 = jax.random.split(k)
        vals = jax.random.uniform(k1, (b, T))
        pick = lambda kk: jax.random.choice(kk, T, (2,), replace=False)
        idx = jax.vmap(pick)(jax.random.split(k2, b))
        marks = jnp.zeros((b, T)).at[jnp.arange(b)[:, None], idx].set(1.0)
        target = jnp.sum(vals * marks, 1)
        xs = jnp.stack([vals, marks], -1).transpose(1, 0, 2)
        def cell(hs, x):
            gx = x @ p["wx"]["w"] + p["wx"]["b"]
            gh = hs @ p["wh"]["w"] + p["wh"]["b"]
            z = jax.nn.sigmoid(gx[:, :h] + gh[:, :h])
            r = jax.nn.sigmoid(gx[:, h:2*h] + gh[:, h:2*h])
            n_ = jnp.tanh(gx[:, 2*h:] + r * gh[:, 2*h:])
            return (1 - z) * n_ + z * hs, None
        hs, _ = jax.lax.scan(cell, jnp.zeros((b, h)), xs)
        return jnp.mean((mlp([p["out"]], hs, None)[:, 0] - target) ** 2)
    return init, loss


def linreg_full():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 50)) * np.geomspace(0.1, 10, 50)
    w = rng.normal(size=50) * 3
    y = x @ w + 10 * rng.normal(size=500)
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    init = lambda k: {"w": jnp.zeros(50), "b": jnp.zeros(())}
    def loss(p, k):
        return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)
    return init, loss


def iris_softmax_big_init():
    d = datasets.load_iris()
    x, y = jnp.asarray(std(d.data)), jnp.asarray(d.target)
    init = lambda k: mlp_init(k, (4, 32, 3), scale=10.0)
    def loss(p, k):
        i = batch(k, len(x), 16)
        return xent(mlp(p, x[i], jax.nn.relu), y[i])
    return init, loss


PROBES = {
    "diabetes_raw_2x64_b32": (diabetes_raw, 2000),
    "digits_autoencoder_tanh_b64": (autoencoder, 3000),
    "lm_vocab2000_b64": (big_vocab_lm, 2000),
    "digits_6x64_sigmoid_b32": (
        lambda: digits_mlp((64,) * 6, jax.nn.sigmoid, 32), 3000),
    "digits_resmlp8x64_ln_b16": (resmlp, 3000),
    "matrix_factorisation_full": (matrix_factorisation, 3000),
    "gru_adding_T20_b32": (gru_adding, 3000),
    "digits_1x4096_relu_b64": (lambda: digits_mlp((4096,), jax.nn.relu, 64), 1500),
    "linreg_illcond_full": (linreg_full, 2000),
    "iris_init_x10_b16": (iris_softmax_big_init, 2000),
    "digits_3x32_relu_b1": (lambda: digits_mlp((32,) * 3, jax.nn.relu, 1), 4000),
    "digits_2x256_elu_b256": (lambda: digits_mlp((256,) * 2, jax.nn.elu, 256), 2000),
}


def run(make, steps, tx, seeds):
    init, loss = make()
    def one(seed):
        key = jax.random.key(seed)
        params = init(jax.random.fold_in(key, 0))
        state = tx.init(params)
        def step(carry, t):
            params, state = carry
            value, g = jax.value_and_grad(loss)(params, jax.random.fold_in(key, t + 1))
            u, state = tx.update(g, state, params)
            return (optax.apply_updates(params, u), state), value
        _, losses = jax.lax.scan(step, (params, state), jnp.arange(steps))
        return losses
    return np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(seeds)))


def main(probes=PROBES):
    """Parse the command line and compare the optimizers on `probes`
    (name -> (model maker, steps))."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default=None, help="comma-separated model names")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--scale-steps", type=float, default=1.0)
    parser.add_argument("--floor", type=float, default=None)
    parser.add_argument("--per-seed", action="store_true")
    args = parser.parse_args()
    names = list(probes) if args.only is None else args.only.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    opts = {"adam": lambda: optax.adam(1e-3),
            "mnemosyne": lambda: mnemosyne.mnemosyne()}
    if args.floor is not None:
        opts[f"floor {args.floor:g}"] = lambda: mnemosyne.mnemosyne(
            lopt=mnemosyne.reconfigure(
                mnemosyne.pretrained(), step_scale_range=(args.floor, 2.0)))
    for name in names:
        make, steps = probes[name]
        compare(name, make, int(steps * args.scale_steps), opts, seeds, args.per_seed)


def geo(x):
    """Geometric mean (losses floored at 1e-30)."""
    return float(np.exp(np.log(np.maximum(x, 1e-30)).mean()))


def twentieths(losses):
    """Per run (rows of `losses`), the mean loss over each twentieth of the
    steps, then the best of those windows, the last and their ratio, as
    one line of text each."""
    losses = np.asarray(losses)
    w = losses.shape[1] // 20
    windows = losses[:, :20 * w].reshape(len(losses), 20, w).mean(-1)
    return [" ".join(f"{x:.3g}" for x in row) + f" | best {row.min():.3g} "
            f"last {row[-1]:.3g} ratio {row[-1] / row.min():.2f}" for row in windows]


def add_probe_arguments(parser):
    """The options of the scripts that compare readings on the fifth or sixth
    probe's models: `--probe 5|6`, `--only NAME,...`, `--seeds`,
    `--scale-steps`."""
    parser.add_argument("--probe", choices=("5", "6"), default="6")
    parser.add_argument("--only", default=None)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--scale-steps", type=float, default=1.0)


def selected_probes(args):
    """`(probes, names, seeds)` from the options of `add_probe_arguments`:
    the probe's `PROBES` (name -> (model maker, steps)), the models to run and
    the seeds."""
    if args.probe == "5":
        probes = PROBES
    else:
        import probe6  # beside this file, on the path of every script using it

        probes = probe6.PROBES
    names = list(probes) if args.only is None else args.only.split(",")
    return probes, names, [int(s) for s in args.seeds.split(",")]


def compare(label, make, steps, opts, seeds, per_seed=False):
    """Run every optimizer of `opts` (name -> factory) on one model and print
    its line: final loss, stability ratios and wall time per optimizer, then
    whether each ends at most at Adam's loss (when `opts` has "adam")."""
    out = {}
    for o, tx in opts.items():
        t0 = time.time()
        losses = run(make, steps, tx(), seeds)
        w = max(1, steps // 20)
        out[o] = (losses[:, -w:].mean(1), stability_ratio(losses), time.time() - t0)
    line = f"{label:32s} {steps:6d} " + " | ".join(
        f"{o} {geo(v[0]):.3g} [{' '.join(f'{r:.2f}' for r in v[1])}] ({v[2]:.0f}s)"
        for o, v in out.items())
    if "adam" in out:
        adam = geo(out["adam"][0])
        line += " | " + " ".join("win" if geo(v[0]) <= adam else "LOSE"
                                 for o, v in out.items() if o != "adam")
    print(line, flush=True)
    for o, v in out.items() if per_seed else ():
        print(f"  {o} per seed:", " ".join(f"{x:.3g}" for x in v[0]), flush=True)

if __name__ == "__main__":
    main()
