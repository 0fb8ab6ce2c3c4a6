"""One θ read with several settings of its step multiplier, on hard long runs.

    python scripts/step_floor_sweep.py THETA.eqx --floors 0.25 0.0625 0.015625 \\
        [--ceilings 1 2] [--thresholds 0.05 0.02 0] [--seeds 0 1 2 3] \\
        --cases gelu16_b8_10k long_teacher --out sweep.json

Each case trains `optax.adam(1e-3)` and `THETA` read with every combination of
floor $\\ell$ and ceiling $h$ of `step_scale_range = (ℓ, h)` and agreement
threshold $a_0$ (`step_agreement_threshold`) of Eq. (A2)
(`mnemosyne.reconfigure`: θ's arrays unchanged; ceilings and thresholds default
to the file's) with `mnemosyne.evaluation.train`, one plain process per run, on
the case's seeds (or `--seeds`; the seeds of one run are vmapped, so a run's
numbers depend on which seeds share it), and prints each run's final loss (mean
of the last window, `evaluation.window_size`) and stability ratio (final window
over the best one, `evaluation.stability_ratio`). The cases are the runs where
the floor 1/4 was seen to matter: a 16-layer GELU MLP at batch 8 for 10,000
steps (the second probe's configuration, run 3.3x longer), the three
10,200-step runs of `scripts/long_runs.py`, and a few probe and stress tasks.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import optax

import mnemosyne
from mnemosyne import evaluation
from mnemosyne.meta import (
    probe_tasks,
    second_probe_tasks,
    stress_validation_tasks,
    third_probe_tasks,
)
from mnemosyne.tasks import get_task


def cases() -> dict:
    """`name -> (task, steps, seeds)`."""
    import long_runs  # scripts/long_runs.py, beside this script

    second, stress = second_probe_tasks(), stress_validation_tasks()
    first = probe_tasks()
    out = {
        "gelu16_b8_10k": (second["probe2_mlp_digits_16x32_gelu_b8"][0], 10000, [0, 1]),
        "relu12_b32": (second["probe2_mlp_digits_12x32_relu_b32"][0], 3000, [0, 1, 2]),
        "lm_sort_l6": (second["probe2_lm_sort_d64_l6_b16"][0], 1500, [0, 1, 2]),
        "relu5x24_b4": (stress["stress_mlp_digits_5x24_relu_b4"][0], 4000,
                        [2, 3, 4, 5]),
        "mlm_l3": (second["probe2_mlm_d32_l3_b32"][0], 1500, [0, 1]),
        "vit_l6": (second["probe2_vit_digits_d48_l6_b16"][0], 1000, [0, 1]),
        "mlm_suite": (get_task("mlm_synthetic"), 1000, [0, 1]),
        "rnn_b8": (first["probe_rnn_digits_h96_b8"][0], 2000, [0, 1, 2]),
        "lm_copy_b8": (stress["stress_lm_copy_d24_l2_b8"][0], 2000, [0, 1, 2]),
    }
    names = ("long_teacher", "long_iris", "long_digits6x16")
    for name, task in zip(names, long_runs.configurations().values(), strict=True):
        out[name] = (task, 10200, [0, 1])
    return out


def task_named(name) -> tuple:
    """`(task, steps, seeds)`: a case of `cases()`, a task of the third probe
    (its own steps, seeds 0-2), or a suite task for 1,000 steps on seeds 0-2;
    the lookup of the record scripts that take a task by name."""
    known, probe = cases(), third_probe_tasks()
    if name in known:
        return known[name]
    if name in probe:
        return (*probe[name], [0, 1, 2])
    return get_task(name), 1000, [0, 1, 2]


def final_and_ratio(tx, task, seeds, steps):
    """Train `tx` on `task` (seeds vmapped in one run); return each seed's final
    loss (mean of the last window), its stability ratio (final window over the
    best one) and the seconds it took."""
    start = time.time()
    losses = np.asarray(evaluation.train(tx, task, seeds, num_steps=steps).losses)
    final = losses[:, -evaluation.window_size(steps):].mean(1)
    ratio = np.asarray(evaluation.stability_ratio(losses))
    return final, ratio, time.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", help="θ file (e.g. mnemosyne/weights/default.eqx)")
    parser.add_argument("--floors", type=float, nargs="+", required=True)
    parser.add_argument(
        "--ceilings", type=float, nargs="+", default=None,
        help="ceilings h of the multiplier to read θ with (default: the file's)",
    )
    parser.add_argument(
        "--thresholds", type=float, nargs="+", default=None,
        help="agreement thresholds a0 to read θ with (default: the file's)",
    )
    parser.add_argument("--cases", nargs="+", default=None, help="default: all")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=None,
        help="seeds of every case (default: each case's own)",
    )
    parser.add_argument("--out", default=None, help="JSON record to write")
    args = parser.parse_args()
    lopt = mnemosyne.load(args.weights)
    ceilings = args.ceilings or [lopt.step_scale_range[1]]
    thresholds = args.thresholds or [lopt.step_agreement_threshold]
    optimizers = {"adam": optax.adam(1e-3)} | {
        f"floor {floor:g}" + (f" ceiling {top:g}" if args.ceilings else "")
        + (f" a0 {a0:g}" if args.thresholds else ""):
        mnemosyne.mnemosyne(lopt=mnemosyne.reconfigure(
            lopt, step_scale_range=(floor, top), step_agreement_threshold=a0
        ))
        for floor in args.floors for top in ceilings
        for a0 in thresholds
    }
    all_cases = cases()
    record = {}
    for case in args.cases or list(all_cases):
        task, steps, seeds = all_cases[case]
        seeds = args.seeds or seeds
        for name, tx in optimizers.items():
            final, ratio, seconds = final_and_ratio(tx, task, seeds, steps)
            record[f"{case}/{name}"] = {
                "seeds": seeds, "steps": steps,
                "final": final.tolist(), "ratio": ratio.tolist(),
            }
            print(f"{case:16s} {name:34s} final {np.round(final, 5)} "
                  f"ratio {np.round(ratio, 2)} ({seconds:.0f} s)", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
