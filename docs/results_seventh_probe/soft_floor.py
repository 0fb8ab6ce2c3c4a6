"""A soft floor of ½ at every depth, on the runs where depth mattered.

    python docs/results_seventh_probe/soft_floor.py LOW[,LOW...] CASE[@SEEDS] ...

Trains Adam(1e-3), the shipped reading and, for each LOW, the shipped θ read
with the depth floor (D) at ½ for every model (`step_depth_floor=(100, ½)`:
$\\min(\\tfrac12, \\max(\\ell, 100/L)) = \\tfrac12$ for any model of up to
200 matrices) and `step_scale_range=(LOW, 2)`, so that the spike guard (G)
pushes a tensor from ½ down to LOW only when its gradients spike (from step
1,000 on, as shipped). CASE is a case of `scripts/step_floor_sweep.py` or a
task of the third probe (`task_named`: its steps and seeds, or SEEDS as
`0,1,2`); runs go through `mnemosyne.evaluation.train`, seeds vmapped. Prints
each run's final losses (mean of the last window) and stability ratios.
"""

import pathlib
import sys

import optax

sys.path.insert(0, str(pathlib.Path(__file__).parents[2] / "scripts"))
from step_floor_sweep import final_and_ratio, task_named  # noqa: E402

import mnemosyne  # noqa: E402


def readings(lows):
    """`label -> θ`: the shipped reading and one soft floor ½ per LOW."""
    shipped = mnemosyne.pretrained()
    out = {"shipped": shipped}
    for low in lows:
        out[f"soft 1/2, low {low:g}"] = mnemosyne.reconfigure(
            shipped, step_scale_range=(low, 2.0), step_depth_floor=(100.0, 0.5)
        )
    return out


def main():
    lows = [float(x) for x in sys.argv[1].split(",")]
    optimizers = {"adam": optax.adam(1e-3)} | {
        label: mnemosyne.mnemosyne(lopt=lopt) for label, lopt in readings(lows).items()
    }
    for case in sys.argv[2:]:
        name, _, seeds = case.partition("@")
        task, steps, default_seeds = task_named(name)
        seeds = [int(s) for s in seeds.split(",")] if seeds else default_seeds
        for label, tx in optimizers.items():
            final, ratio, seconds = final_and_ratio(tx, task, seeds, steps)
            print(f"{name} {steps} {label:18s} final "
                  f"{' '.join(f'{x:.3g}' for x in final)} mean {final.mean():.4g} | "
                  f"ratio {' '.join(f'{r:.2f}' for r in ratio)} ({seconds:.0f}s)",
                  flush=True)


if __name__ == "__main__":
    main()
