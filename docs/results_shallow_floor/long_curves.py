"""Loss curves of two models no meta-training task had, at tiny batches over
six times the longest meta-training horizon, under the shallow floor
(session 35).

    python docs/results_shallow_floor/long_curves.py BEFORE.eqx OUT_DIR

A 1x48 tanh MLP on breast cancer at batch 4 and a 1x96 tanh teacher
regression (noise 0.1) at batch 2, 12,000 steps each, seeds 0-2, with
Adam(1e-3), the shipped reading (floor 3/4 for these two-matrix models) and
BEFORE.eqx (`git show eb1b9b5~1:mnemosyne/weights/default.eqx`, floor 1/2).
Prints the 600-step window means (mean over seeds), each run's stability
ratio and the final window, and writes one PNG per model to OUT_DIR. Record:
`long_curves.log`, `long_curves_*.png`.
"""

import pathlib
import sys

import matplotlib
import numpy as np
import optax

import mnemosyne
from mnemosyne.evaluation import stability_ratio, train
from mnemosyne.tasks import MLPClassifier, TeacherRegression, load_dataset

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STEPS, WINDOW, SEEDS = 12000, 600, [0, 1, 2]


def models():
    return {
        "breast_cancer_1x48_tanh_b4": MLPClassifier(
            load_dataset("breast_cancer"), hidden=(48,), activation="tanh",
            batch_size=4, name="bc_1x48_tanh_b4", kind="mlp",
        ),
        "teacher_1x96_tanh_noise0.1_b2": TeacherRegression.random(
            seed=3, hidden=(96,), activation="tanh", batch_size=2, noise=0.1
        ),
    }


def main(before, out):
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    readings = {
        "Adam(1e-3)": lambda: optax.adam(1e-3),
        "shipped (floor 3/4)": mnemosyne.mnemosyne,
        "before (floor 1/2)": lambda: mnemosyne.scale_by_mnemosyne(
            mnemosyne.load(before)
        ),
    }
    for model, task in models().items():
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, make in readings.items():
            losses = np.asarray(train(make(), task, SEEDS, num_steps=STEPS).losses)
            windows = losses.reshape(len(SEEDS), -1, WINDOW).mean(-1)
            print(f"{model} | {name:20s} | windows "
                  f"{' '.join(f'{x:.3g}' for x in windows.mean(0))} | stability "
                  f"{np.round(stability_ratio(losses), 2).tolist()} | final "
                  f"{windows[:, -1].mean():.4g}", flush=True)
            steps = np.arange(1, windows.shape[1] + 1) * WINDOW
            ax.semilogy(steps, windows.mean(0), label=name)
        ax.set(xlabel="step", ylabel=f"training loss ({WINDOW}-step windows, "
               f"{len(SEEDS)} seeds)", title=model)
        ax.legend()
        fig.savefig(out / f"long_curves_{model}.png", dpi=80, bbox_inches="tight")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
