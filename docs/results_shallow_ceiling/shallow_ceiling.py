"""A ceiling of the step multiplier that rises for shallow models (session 33).

    cd docs/results_shallow_ceiling
    python shallow_ceiling.py probes C[,C...] [SCALE]
    python shallow_ceiling.py seeds NAME SCALE SEEDS READINGS
    python shallow_ceiling.py suite READINGS STEPS

The candidate mirrors the depth floor of Eq. (D) at the other end of the
range: the ceiling of the multiplier (A2) is
$h_L = \\min(C, \\max(h, C / L))$ for a model of $L$ matrices, with the
shipped $h = 2$: a model of $L \\ge C/2$ matrices keeps 2, shallower ones
may grow their step further while their gradients keep agreeing with the
momentum (smooth problems: against grid-tuned Adam the shipped reading is
slowest there, "A higher ceiling on the multiplier"). It is emulated
exactly by reading the shipped θ with `step_scale_range=(1/4, h_L)` for
the model at hand: the depth floor, the spike guard's hard floor and the
kernel floor read only the range's floor 1/4, which it keeps, and the
kernel floor 1 stays below $h_L \\ge 2$.

`probes`: every model of the fifth to tenth probes (the same `MODELS` as
`depth_ceiling.py`) whose ceiling changes for the largest C given, at SCALE
times its steps (default 1), seeds 0-1, Adam(1e-3), the shipped reading and
each C, with probe5's line (geometric mean of the final losses, stability
ratios, time) and each seed's final loss.

`seeds`: one model NAME at SCALE times its steps on SEEDS (comma-separated,
vmapped) with READINGS (comma-separated: `adam`, `shipped`, `cC` for the
candidate with constant C, `cC_gA` for it gated by $a_1$ = A above 2, the
library's `step_shallow_ceiling=(C, A)`); prints the geometric mean of the final losses
and each run's final loss with its stability ratio in brackets.

`suite`: every suite task of at most three matrices (whose ceiling
changes with C = 8), STEPS steps on seeds 0-2 (`mnemosyne.evaluation.train`,
as `mnemosyne evaluate` trains) with READINGS, in the same format.
"""

import pathlib
import sys

import jax
import numpy as np
import optax

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "results_depth_ceiling"))
from depth_ceiling import MODELS, probe5, reading  # noqa: E402

import mnemosyne  # noqa: E402


def num_matrices(params) -> int:
    return sum(np.ndim(x) >= 2 for x in jax.tree.leaves(params))


def shallow_ceiling(matrices: int, c: float, high: float = 2.0) -> float:
    """$h_L = \\min(C, \\max(h, C / L))$; C for a model without matrices."""
    return c if matrices == 0 else min(c, max(high, c / matrices))


def optimizers(labels, matrices):
    out = {}
    for label in labels:
        if label == "adam":
            out[label] = lambda: optax.adam(1e-3)
        elif label == "shipped":
            out[label] = mnemosyne.mnemosyne
        elif "_g" in label:  # the library's Eq. (C), gated above 2 by a_1
            c, a1 = label[1:].split("_g")
            out[label] = reading(step_shallow_ceiling=(float(c), float(a1)))
        else:  # ungated: emulated by the range (the gate a_1 = a_0)
            high = shallow_ceiling(matrices, float(label[1:]))
            out[label] = reading(step_scale_range=(0.25, high))
    return out


def probes(cs, scale):
    for name, (make, steps) in MODELS.items():
        matrices = num_matrices(make()[0](jax.random.key(0)))
        if shallow_ceiling(matrices, max(cs)) <= 2.0:
            continue
        labels = ["adam", "shipped"] + [f"c{c:g}" for c in cs]
        probe5.compare(f"{name:32s} L={matrices}", make, int(steps * scale),
                       optimizers(labels, matrices), [0, 1], per_seed=True)


def seeds(name, scale, seed_list, labels):
    make, steps = MODELS[name]
    steps = int(steps * scale)
    matrices = num_matrices(make()[0](jax.random.key(0)))
    for label, tx in optimizers(labels, matrices).items():
        losses = probe5.run(make, steps, tx(), seed_list)
        final = losses[:, -max(1, steps // 20):].mean(1)
        ratio = probe5.stability_ratio(losses)
        print(f"{name} {steps} {label:8s} geo {probe5.geo(final):.3g} | " + " ".join(
            f"{f:.3g}({r:.1f})" for f, r in zip(final, ratio, strict=True)), flush=True)


def suite(labels, steps):
    from mnemosyne import evaluation, tasks

    for name in tasks.list_tasks():
        task = tasks.get_task(name)
        matrices = num_matrices(task.init(jax.random.key(0)))
        if matrices >= 4:  # every candidate leaves these as they are
            continue
        for label, tx in optimizers(labels, matrices).items():
            losses = np.asarray(evaluation.train(tx(), task, [0, 1, 2],
                                                 num_steps=steps).losses)
            final = losses[:, -evaluation.window_size(steps):].mean(1)
            ratio = np.asarray(evaluation.stability_ratio(losses))
            print(f"{name:24s} L={matrices} {steps} {label:8s} geo "
                  f"{probe5.geo(final):.3g} | " + " ".join(
                      f"{f:.3g}({r:.1f})" for f, r in zip(final, ratio, strict=True)),
                  flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "suite":
        suite(sys.argv[2].split(","), int(sys.argv[3]))
    elif sys.argv[1] == "probes":
        probes([float(c) for c in sys.argv[2].split(",")],
               float(sys.argv[3]) if len(sys.argv) > 3 else 1.0)
    else:
        seeds(sys.argv[2], float(sys.argv[3]),
              [int(s) for s in sys.argv[4].split(",")], sys.argv[5].split(","))
