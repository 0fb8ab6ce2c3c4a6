"""An unseen model (wine MLP 3x48 tanh, batch 4) for 8,000 steps, 4x the
longest meta-training horizon: Adam(1e-3), the shipped Mnemosyne and the
shipped LSTM (v2 recipe) on seeds 0-1; prints 200-step window means and each
run's stability ratio, writes the curves beside this file.

    python docs/results_lstm_v2/long_check.py
"""

import pathlib

import matplotlib
import numpy as np
import optax

import mnemosyne

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from mnemosyne import baselines, evaluation
from mnemosyne.tasks import MLPClassifier, load_dataset

task = MLPClassifier(
    load_dataset("wine"),
    hidden=(48,) * 3,
    activation="tanh",
    batch_size=4,
    name="wine_3x48_tanh_b4",
    kind="mlp",
)
steps, seeds = 8000, [0, 1]
txs = {
    "adam(1e-3)": optax.adam(1e-3),
    "mnemosyne": mnemosyne.mnemosyne(),
    "lstm (v2 recipe)": baselines.lstm(),
}
plt.figure(figsize=(7, 4))
for name, tx in txs.items():
    L = np.asarray(evaluation.train(tx, task, seeds, num_steps=steps).losses)
    w = L[:, : steps // 200 * 200].reshape(len(seeds), -1, 200).mean(2)
    r = np.asarray(evaluation.stability_ratio(L))
    print(
        f"{name:18s} windows(200) at 1k/2k/4k/6k/8k:",
        " ".join(f"{w.mean(0)[k]:.3g}" for k in (4, 9, 19, 29, 39)),
        "| final",
        np.round(L[:, -evaluation.window_size(steps) :].mean(1), 5),
        "ratio",
        np.round(r, 2),
        flush=True,
    )
    plt.semilogy(np.arange(w.shape[1]) * 200 + 100, w.mean(0), label=name)
plt.xlabel("step")
plt.ylabel("train loss (200-step window, mean of 2 seeds)")
plt.legend()
plt.title(task.name)
plt.savefig(
    str(pathlib.Path(__file__).with_suffix(".png")), dpi=90, bbox_inches="tight"
)
