"""The eleventh probe's two losses at 4x their steps (session 34) under the
shipped reading, with the step multiplier held at or above 1 (the range
(1, 2), no depth floor, no spike guard: no annealing below the learned
step), with the range (1/2, 2) and without the spike guard, beside
Adam(1e-3): is the shipped multiplier's annealing what costs them?

    python docs/results_eleventh_probe/floor_readings.py

Prints probe5's line (geometric mean of the final losses over seeds 0-1,
stability ratios, time) and each seed's final loss.
"""

import pathlib
import sys

HERE = pathlib.Path(__file__).parent
sys.path[:0] = [str(HERE), str(HERE.parent / "results_fifth_probe")]
import optax  # noqa: E402
import probe5  # noqa: E402
import probe11  # noqa: E402

import mnemosyne  # noqa: E402


def reading(**settings):
    return lambda: mnemosyne.mnemosyne(
        lopt=mnemosyne.reconfigure(mnemosyne.pretrained(), **settings)
    )


def fixed_range(low):
    """The multiplier within (low, 2): no depth floor, no spike guard."""
    return reading(
        step_scale_range=(low, 2.0), step_depth_floor=None, step_spike_guard=None
    )


if __name__ == "__main__":
    opts = {
        "adam": lambda: optax.adam(1e-3),
        "shipped": mnemosyne.mnemosyne,
        "floor 1": fixed_range(1.0),
        "floor 1/2": fixed_range(0.5),
        "no guard": reading(step_spike_guard=None),
    }
    for name in ("polynomial_deg9_full", "ratings_mf_dim16_b64"):
        make, steps = probe11.PROBES[name]
        probe5.compare(name, make, 4 * steps, opts, [0, 1], per_seed=True)
