"""The shallow floor at 3/4 beside 1 on the probe models it moves most
(session 35).

    python docs/results_shallow_floor/shallow_floor_075.py NAME[,NAME...]

`shallow_floor.py`'s comparison at four times the models' steps, seeds 0-1,
with Adam(1e-3), the reading with `step_shallow_floor=(1, 2)` (labelled
`shipped`: the shipped reading when this ran) and the shipped θ read with
`step_shallow_floor=(0.75, 2)`. Record: `floor_075_4x_seeds_0_1.log`.
"""

import pathlib
import sys

import optax

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import shallow_floor  # noqa: E402

READINGS = {
    "adam": lambda: optax.adam(1e-3),
    "shipped": shallow_floor.reading(step_shallow_floor=(1.0, 2)),
    "floor_075": shallow_floor.reading(step_shallow_floor=(0.75, 2)),
}

if __name__ == "__main__":
    shallow_floor.main(4, 0, 1, 3, sys.argv[1].split(","), [0, 1], READINGS)
