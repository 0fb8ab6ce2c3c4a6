"""Loss curves of two hand-written models over 10,000 steps at a small batch,
the shipped Mnemosyne beside Adam(1e-3) (session 22, after the floor went back
to 1/4):

    python docs/results_fifth_probe/long_curves.py wine|autoencoder OUT.png

(from the repository root). `wine`: a 13-48-48-48-3 SiLU MLP on scikit-learn's
wine at batch 4 (a SiLU net is not among the meta-training activations);
`autoencoder`: the fifth probe's digits autoencoder at batch 8 instead of 64.
Seeds 0-1, vmapped (`probe5.run`). Prints the mean loss of the 250 steps
before a few marks and each run's final window over its best, and plots the
100-step running means.
"""

import sys

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from probe5 import batch, mlp, mlp_init, run, std, xent
from sklearn import datasets

import mnemosyne
from mnemosyne.evaluation import stability_ratio

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STEPS = 10_000
MARKS = (250, 500, 1000, 2000, 3000, 4000, 6000, 8000, 10000)


def wine_silu():
    data = datasets.load_wine()
    x, y = jnp.asarray(std(data.data)), jnp.asarray(data.target)
    init = lambda k: mlp_init(k, (13, 48, 48, 48, 3))

    def loss(p, k):
        i = batch(k, len(x), 4)
        return xent(mlp(p, x[i], jax.nn.silu), y[i])

    return init, loss


def autoencoder_b8():
    x = jnp.asarray(std(datasets.load_digits().data))
    init = lambda k: mlp_init(k, (64, 32, 8, 32, 64))

    def loss(p, k):
        i = batch(k, len(x), 8)
        return jnp.mean((mlp(p, x[i], jnp.tanh) - x[i]) ** 2)

    return init, loss


MODELS = {"wine": (wine_silu, "wine 3x48 SiLU MLP, batch 4"),
          "autoencoder": (autoencoder_b8, "digits autoencoder, tanh, batch 8")}


def main() -> None:
    make, title = MODELS[sys.argv[1]]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, tx in (("Adam(1e-3)", optax.adam(1e-3)),
                     ("Mnemosyne", mnemosyne.mnemosyne())):
        losses = run(make, STEPS, tx, [0, 1])
        windows = [losses[:, max(0, t - 250):t].mean(1) for t in MARKS]
        print(name, " ".join(
            f"{t}:{'/'.join(f'{v:.3g}' for v in w)}" for t, w in zip(MARKS, windows,
                                                                     strict=True)),
            "final/best", np.round(stability_ratio(losses), 2), flush=True)
        for seed, curve in enumerate(losses):
            smooth = np.convolve(curve, np.ones(100) / 100, mode="valid")
            ax.semilogy(smooth, lw=1, label=f"{name}, seed {seed}")
    ax.set(xlabel="step", ylabel="training loss (100-step mean)",
           title=f"{title}, {STEPS:,} steps")
    ax.legend()
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=90)


if __name__ == "__main__":
    main()
