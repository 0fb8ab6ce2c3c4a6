"""Long runs at tiny batches on configurations outside meta-training and the suite.

    python scripts/long_runs.py --steps 6000 --out long_runs

The shipped Mnemosyne (`mnemosyne.mnemosyne()`, no tuning) beside
`optax.adam(1e-3)`, each trained with `mnemosyne.evaluation.train` for
`--steps` constant-learning-rate steps on seeds 0 and 1. Prints a Markdown
table of window-mean training losses (300-step windows, mean over seeds) at a
few points of the run, each run's stability ratio (final window over its best
window, `evaluation.stability_ratio`), and writes `long_runs.png` and
`long_runs.json` to `--out`. This is where a learned optimizer trained on
horizons of at most 2,000 steps shows whether it keeps training or climbs.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np
import optax

import mnemosyne
from mnemosyne.evaluation import stability_ratio, train
from mnemosyne.tasks import MLPClassifier, TeacherRegression, load_dataset

WINDOW = 300


def configurations() -> dict:
    """Unseen configurations: tiny batches, tanh, a deep narrow net."""
    return {
        "teacher regression 64x64 tanh, batch 4": TeacherRegression.random(
            seed=0, hidden=(64, 64), activation="tanh", batch_size=4, noise=0.1),
        "iris MLP 32x32 tanh, batch 4": MLPClassifier(
            load_dataset("iris"), hidden=(32, 32), activation="tanh", batch_size=4,
            name="iris_long", kind="mlp"),
        "digits MLP 6x16 relu, batch 8": MLPClassifier(
            load_dataset("digits"), hidden=(16,) * 6, activation="relu", batch_size=8,
            name="digits_long", kind="mlp"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--out", default="long_runs")
    args = parser.parse_args()
    if args.steps % WINDOW:
        parser.error(f"--steps must be a multiple of {WINDOW}")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    optimizers = {"Adam(1e-3)": optax.adam(1e-3), "Mnemosyne": mnemosyne.mnemosyne()}
    curves = {}
    for name, task in configurations().items():
        for opt, tx in optimizers.items():
            losses = np.asarray(train(tx, task, [0, 1], num_steps=args.steps).losses)
            curves[(name, opt)] = losses
    marks = [
        m for m in (1000, 2000, 4000, args.steps) if m <= args.steps and m >= WINDOW
    ]
    lines = ["| configuration | optimizer | " + " | ".join(f"step {m}" for m in marks)
             + " | stability (final / best window) |",
             "|---|---|" + "---|" * len(marks) + "---|"]
    record = {}
    for (name, opt), losses in curves.items():
        windows = losses.reshape(losses.shape[0], -1, WINDOW).mean(-1).mean(0)
        at = [windows[m // WINDOW - 1] for m in marks]
        ratios = stability_ratio(losses)
        lines.append(f"| {name} | {opt} | " + " | ".join(f"{x:.3g}" for x in at)
                     + " | " + ", ".join(f"{r:.2f}" for r in ratios) + " |")
        record[f"{name} / {opt}"] = {"window_means": windows.tolist(),
                                     "stability": np.asarray(ratios).tolist()}
    table = "\n".join(lines)
    print(table)
    (out / "long_runs.json").write_text(
        json.dumps(
            {"steps": args.steps, "window": WINDOW, "seeds": [0, 1], "runs": record},
            indent=1,
        )
    )
    _plot(curves, out / "long_runs.png")


def _plot(curves, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(name for name, _ in curves))
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6))
    for ax, name in zip(np.atleast_1d(axes), names, strict=False):
        for (n, opt), losses in curves.items():
            if n == name:
                windows = losses.reshape(losses.shape[0], -1, WINDOW).mean(-1).mean(0)
                steps = WINDOW * np.arange(1, len(windows) + 1)
                ax.plot(steps, windows, label=opt)
        ax.set(title=name, xlabel="step", yscale="log")
        ax.legend()
    np.atleast_1d(axes)[0].set_ylabel(f"training loss ({WINDOW}-step mean)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
