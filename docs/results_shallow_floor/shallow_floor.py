"""A higher floor for shallow models over long runs, measured (session 34).

    python docs/results_shallow_floor/shallow_floor.py SCALE PART PARTS [MAX_L]
        [--only NAME,...] [--seeds 0,1]

The eleventh probe's rating model (two matrices) ends 13% above Adam(1e-3)
at four times its steps because the multiplier of (A2) anneals to the depth
floor 1/2 of Eq. (D); held at or above 1 it ends at half Adam's loss
(`docs/results_eleventh_probe/floor_readings.py`). The candidate raises the
cap of (D): `step_depth_floor=(2, 1)`, so $\\ell_L = \\min(1, \\max(1/4,
2/L))$ is 1 for one or two matrices, 2/3 for three and as shipped from four
on (the spike guard (G) still lowers it on spikes).

Runs every model of the fifth to eleventh probes with at most MAX_L (default
3) matrices (or the models named by `--only`), at SCALE times its steps, on
the seeds of `--seeds` (default 0-1), with Adam(1e-3), the reading shipped
then (`shipped`: today's without the shallow floor of Eq. (D2), which
session 35 added) and `floor2_1` (the candidate); the models whose index is
PART modulo PARTS, so that processes can share the list. Each model's line
is probe5's (geometric mean of the final losses, stability ratios, time, and
whether each reading ends at most at Adam's loss), then each seed's final
loss.
"""

import argparse
import pathlib
import sys

import jax
import optax

DOCS = pathlib.Path(__file__).parents[1]
sys.path[:0] = [
    str(DOCS / "results_depth_ceiling"),
    str(DOCS / "results_shallow_ceiling"),
    str(DOCS / "results_eleventh_probe"),
]
import probe11  # noqa: E402
from depth_ceiling import MODELS, probe5, reading  # noqa: E402
from shallow_ceiling import num_matrices  # noqa: E402

READINGS = {
    "adam": lambda: optax.adam(1e-3),
    "shipped": reading(step_shallow_floor=None),
    "floor2_1": reading(step_depth_floor=(2.0, 1.0)),
}


def main(scale, part, parts, max_matrices=3, only=None, seeds=(0, 1),
         readings=READINGS):
    models = {**MODELS, **probe11.PROBES}
    counts = {
        name: num_matrices(make()[0](jax.random.key(0)))
        for name, (make, _) in models.items()
    }
    shallow = [
        name
        for name in models
        if (name in only if only else counts[name] <= max_matrices)
    ]
    for name in shallow[part::parts]:
        make, steps = models[name]
        matrices = counts[name]
        probe5.compare(
            f"{name:32s} L={matrices}",
            make,
            int(steps * scale),
            readings,
            list(seeds),
            per_seed=True,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("scale", type=float)
    parser.add_argument("part", type=int)
    parser.add_argument("parts", type=int)
    parser.add_argument("max_matrices", type=int, nargs="?", default=3)
    parser.add_argument("--only", default=None)
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    main(
        args.scale,
        args.part,
        args.parts,
        args.max_matrices,
        args.only.split(",") if args.only else None,
        [int(x) for x in args.seeds.split(",")],
    )
