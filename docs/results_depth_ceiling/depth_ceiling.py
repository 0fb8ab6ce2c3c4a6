"""A depth-aware ceiling of the step multiplier, measured and not built
(session 32), and eight seeds of the deep small-batch models it was meant for.

    python docs/results_depth_ceiling/depth_ceiling.py probes [SCALE]
    python docs/results_depth_ceiling/depth_ceiling.py seeds NAME SCALE SEEDS READINGS
    python docs/results_depth_ceiling/depth_ceiling.py windows NAME SCALE SEEDS READINGS

The candidate: Eq. (D) lowers the ceiling with the floor,
$h_L = h\\,\\ell_L / \\ell_{max} = \\min(2, 4 \\ell_L)$ for the shipped
$(c, \\ell_{max}) = (2, \\tfrac12)$ and $h = 2$, so that the multiplier's
range is $[\\ell_L, 4\\ell_L]$ at every depth: $[\\tfrac12, 2]$ up to four
matrices, $[\\tfrac14, 1]$ from eight. It is emulated by reading the shipped
θ with `step_scale_range=(1/4, h_L)` for the model at hand, which is exact
for models without kernels of four or more axes (the spike guard's hard
floor and the depth floor both read the range's floor 1/4, which it keeps);
models with such kernels (where the kernel floor 1 of Eq. (K) would meet
the lowered ceiling) are skipped.

`probes`: every model of the fifth to tenth probes (`PROBES`, and the
tenth's `ADDED`) whose ceiling would change ($L \\ge 5$ matrices), at SCALE
times its steps (default 1), seeds 0-1, Adam(1e-3), the shipped reading and
the ceiling, with probe5's line (geometric mean of the final losses,
stability ratios, time) and each seed's final loss.

`seeds`: one model NAME at SCALE times its steps on SEEDS (comma-separated,
vmapped) with READINGS (comma-separated: `adam`, `shipped`, `ceiling`;
`ceiling1`, the range (1/4, 1) for any depth); prints the geometric mean of
the final losses and each run's final loss (mean of the last 5% of steps)
with its stability ratio (final over best window) in brackets.

`windows`: the same runs, printing for each reading the geometric mean over
the seeds of each twentieth of the run's mean loss (the curve).
"""

import pathlib
import sys

import jax
import numpy as np
import optax

DOCS = pathlib.Path(__file__).parents[1]
for folder in ("fifth", "sixth", "seventh", "eighth", "ninth", "tenth"):
    sys.path.insert(0, str(DOCS / f"results_{folder}_probe"))
import probe5  # noqa: E402
import probe6  # noqa: E402
import probe7  # noqa: E402
import probe8  # noqa: E402
import probe9  # noqa: E402
import probe10  # noqa: E402
from readings import reading  # noqa: E402

import mnemosyne  # noqa: E402
from mnemosyne._lopt import depth_floor  # noqa: E402

MODELS = {}
for module in (probe5, probe6, probe7, probe8, probe9, probe10):
    MODELS.update(module.PROBES)
MODELS.update(probe10.ADDED)


def ceiling(params) -> tuple[int, float, int]:
    """`(L, h_L, most axes of a leaf)` for a model's parameters."""
    ndims = [np.ndim(x) for x in jax.tree.leaves(params)]
    matrices = sum(d >= 2 for d in ndims)
    return matrices, min(2.0, 4 * depth_floor(matrices, 0.25, (2.0, 0.5))), max(ndims)


def probes(scale):
    for name, (make, steps) in MODELS.items():
        matrices, high, axes = ceiling(make()[0](jax.random.key(0)))
        if high >= 2.0 or axes >= 4:
            print(f"{name:32s} L={matrices} skip (high {high:g}, maxnd {axes})",
                  flush=True)
            continue
        opts = {"adam": lambda: optax.adam(1e-3), "shipped": mnemosyne.mnemosyne,
                f"ceil{high:.2g}": reading(step_scale_range=(0.25, high))}
        probe5.compare(f"{name:32s} L={matrices}", make, int(steps * scale), opts,
                       [0, 1], per_seed=True)


def seeds(name, scale, seed_list, labels, curve=False):
    make, steps = MODELS[name]
    steps = int(steps * scale)
    high = ceiling(make()[0](jax.random.key(0)))[1]
    readings = {"adam": lambda: optax.adam(1e-3), "shipped": mnemosyne.mnemosyne,
                "ceiling": reading(step_scale_range=(0.25, high)),
                "ceiling1": reading(step_scale_range=(0.25, 1.0))}
    for label in labels:
        losses = probe5.run(make, steps, readings[label](), seed_list)
        if curve:
            windows = losses[:, :steps // 20 * 20].reshape(len(seed_list), 20, -1)
            print(f"{name} {steps} {label:10s}", " ".join(
                f"{x:.3g}" for x in np.exp(np.log(windows.mean(-1)).mean(0))),
                flush=True)
            continue
        final = losses[:, -max(1, steps // 20):].mean(1)
        ratio = probe5.stability_ratio(losses)
        print(f"{name} {steps} {label:10s} geo {probe5.geo(final):.3g} | " + " ".join(
            f"{f:.3g}({r:.1f})" for f, r in zip(final, ratio, strict=True)), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "probes":
        probes(float(sys.argv[2]) if len(sys.argv) > 2 else 1.0)
    else:
        seeds(sys.argv[2], float(sys.argv[3]),
              [int(s) for s in sys.argv[4].split(",")], sys.argv[5].split(","),
              curve=sys.argv[1] == "windows")
