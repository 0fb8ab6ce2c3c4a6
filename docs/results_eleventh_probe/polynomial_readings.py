"""The eleventh probe's polynomial fit (session 34) under other readings:
Adam at three rates, the shipped optimizer at `learning_rate` 0.5, 1 and 2,
and without the shallow ceiling of Eq. (C); 4x the probe's steps, seed 0.
Prints each run's mean loss over every second twentieth of the run and the
last twentieth.

    python docs/results_eleventh_probe/polynomial_readings.py
"""

import pathlib
import sys

HERE = pathlib.Path(__file__).parent
sys.path[:0] = [str(HERE), str(HERE.parent / "results_fifth_probe")]
import optax  # noqa: E402
import probe5  # noqa: E402
import probe11  # noqa: E402

import mnemosyne  # noqa: E402

READINGS = {
    "adam": lambda: optax.adam(1e-3),
    "adam3e-3": lambda: optax.adam(3e-3),
    "adam1e-2": lambda: optax.adam(1e-2),
    "shipped": mnemosyne.mnemosyne,
    "lr2": lambda: mnemosyne.mnemosyne(learning_rate=2.0),
    "lr0.5": lambda: mnemosyne.mnemosyne(learning_rate=0.5),
    "no_ceiling": lambda: mnemosyne.mnemosyne(
        lopt=mnemosyne.reconfigure(mnemosyne.pretrained(), step_shallow_ceiling=None)
    ),
}

if __name__ == "__main__":
    make, steps = probe11.PROBES["polynomial_deg9_full"]
    steps *= 4
    for label, tx in READINGS.items():
        losses = probe5.run(make, steps, tx(), [0])
        windows = losses[:, : steps // 20 * 20].reshape(20, -1).mean(-1)
        print(
            f"{label:10s}",
            " ".join(f"{x:.3g}" for x in windows[::2]),
            f"| last {windows[-1]:.4g}",
            flush=True,
        )
