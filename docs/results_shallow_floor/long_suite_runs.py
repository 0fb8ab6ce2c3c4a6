"""Suite tasks of at most two matrices over long runs, under readings of the
shallow floor (Eq. (D2), session 35).

    python docs/results_shallow_floor/long_suite_runs.py TASK STEPS SEEDS FILE...

Each FILE is a weights file read as saved (`mnemosyne.load`): the reading
before the shallow floor (`git show eb1b9b5~1:mnemosyne/weights/default.eqx >
BEFORE.eqx`) and the shipped θ read with other floors
(`mnemosyne.save(path, mnemosyne.reconfigure(mnemosyne.pretrained(),
step_shallow_floor=(1, 2)))`). Trains the suite task TASK
(`mnemosyne.tasks.get_task`) for STEPS steps on the seeds SEEDS
(comma-separated) with Adam(1e-3) and each file, and prints per reading the
final loss (mean over the last 5% of steps; per seed too), the window means
at 1/8, 1/4, 1/2 and all of the run, and each run's stability ratio (final
over best window). Record: `long_suite_runs_10000_steps.log`.
"""

import pathlib
import sys

import numpy as np
import optax

import mnemosyne
from mnemosyne.evaluation import stability_ratio, train
from mnemosyne.tasks import get_task


def main(task, steps, seeds, files):
    readings = {"adam": optax.adam(1e-3)}
    for path in files:
        lopt = mnemosyne.load(path)
        readings[pathlib.Path(path).stem] = mnemosyne.scale_by_mnemosyne(lopt)
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
    main(sys.argv[1], int(sys.argv[2]), [int(s) for s in sys.argv[3].split(",")],
         sys.argv[4:])
