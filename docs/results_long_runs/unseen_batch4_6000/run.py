"""Two MLPs unseen in meta-training, batch 4, 6,000 steps, beside Adam(1e-3).

    python docs/results_long_runs/unseen_batch4_6000/run.py

Prints 300-step window means (mean of seeds 0 and 1) and each run's stability
ratio, and writes `curves.png` to the working directory.
"""

import matplotlib
import numpy as np
import optax

import mnemosyne
from mnemosyne.evaluation import stability_ratio, train
from mnemosyne.tasks import MLPClassifier, load_dataset

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

WINDOW, STEPS = 300, 6000
TASKS = {
    "breast_cancer MLP 4x32 gelu, batch 4": MLPClassifier(
        load_dataset("breast_cancer"), hidden=(32,) * 4, activation="gelu",
        batch_size=4, name="bc_unseen", kind="mlp"),
    "wine MLP 3x24 tanh, batch 4": MLPClassifier(
        load_dataset("wine"), hidden=(24,) * 3, activation="tanh",
        batch_size=4, name="wine_unseen", kind="mlp"),
}


def main() -> None:
    fig, axes = plt.subplots(1, len(TASKS), figsize=(11, 3.6))
    for ax, (name, task) in zip(axes, TASKS.items(), strict=True):
        for label, tx in (("Adam(1e-3)", optax.adam(1e-3)),
                          ("Mnemosyne", mnemosyne.mnemosyne())):
            losses = np.asarray(train(tx, task, [0, 1], num_steps=STEPS).losses)
            windows = losses.reshape(len(losses), -1, WINDOW).mean(-1)
            at = ", ".join(f"{windows[:, k // WINDOW - 1].mean():.3g}"
                           for k in (1000, 2000, 4000, STEPS))
            print(f"{name} | {label} | steps 1000, 2000, 4000, {STEPS}: {at} | "
                  f"stability {np.round(stability_ratio(losses), 2)}")
            ax.plot(np.arange(1, windows.shape[1] + 1) * WINDOW, windows.mean(0),
                    label=label)
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.legend()
    axes[0].set_ylabel("training loss (300-step mean, 2 seeds)")
    fig.tight_layout()
    fig.savefig("curves.png", dpi=100)


if __name__ == "__main__":
    main()
