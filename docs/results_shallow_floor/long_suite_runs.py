"""Suite tasks of at most two matrices over long runs, before and after the
shallow floor (Eq. (D2), session 35).

    python docs/results_shallow_floor/long_suite_runs.py BEFORE.eqx TASK STEPS SEEDS

BEFORE.eqx: the weights file of the reading before (`git show
eb1b9b5~1:mnemosyne/weights/default.eqx > BEFORE.eqx`). Trains the suite task
TASK (`mnemosyne.tasks.get_task`) for STEPS steps on the seeds SEEDS
(comma-separated) with Adam(1e-3), that reading and the shipped one
(`mnemosyne.mnemosyne()`), and prints per reading the final loss (mean over
the last 5% of steps; per seed too), the window means at 1/8, 1/4, 1/2 and
all of the run, and each run's stability ratio (final over best window).
Record: `long_suite_runs_10000_steps.log`.
"""

import sys

import numpy as np
import optax

import mnemosyne
from mnemosyne.evaluation import stability_ratio, train
from mnemosyne.tasks import get_task


def main(before, task, steps, seeds):
    readings = {
        "adam": optax.adam(1e-3),
        "before": mnemosyne.scale_by_mnemosyne(mnemosyne.load(before)),
        "shipped_now": mnemosyne.mnemosyne(),
    }
    window = max(1, steps // 20)
    for name, tx in readings.items():
        losses = np.asarray(train(tx, get_task(task), seeds, num_steps=steps).losses)
        final = losses[:, -window:].mean(1)
        marks = [losses[:, m - window : m].mean() for m in
                 (steps // 8, steps // 4, steps // 2, steps)]
        print(f"{task} {name:12s} final {final.mean():.4g} per seed "
              f"{np.round(final, 6).tolist()} windows {[f'{x:.3g}' for x in marks]} "
              f"stab {np.round(stability_ratio(losses), 2).tolist()}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]),
         [int(s) for s in sys.argv[4].split(",")])
