"""The shipped θ with a fixed floor on its step multiplier, on one probe model.

    python docs/results_seventh_probe/fixed_floors.py NAME STEPS LOW,HIGH ...

Runs Adam(1e-3), the shipped reading and, for each `LOW,HIGH`, θ read with
`step_scale_range=(LOW, HIGH)` and neither the depth floor (D) nor the spike
guard (G) (`mnemosyne.reconfigure`: θ's arrays unchanged), on a model of the
fifth, sixth or seventh probe, seeds 0-1 vmapped, with the fifth probe's
loop and output line (`probe5.compare`).
"""

import pathlib
import sys

import optax

DOCS = pathlib.Path(__file__).parents[1]
for folder in ("results_fifth_probe", "results_sixth_probe", "results_seventh_probe"):
    sys.path.insert(0, str(DOCS / folder))
import probe5  # noqa: E402
import probe6  # noqa: E402
import probe7  # noqa: E402

import mnemosyne  # noqa: E402


def fixed_floor(low, high):
    """A factory of the shipped θ read with the multiplier in `[low, high]`."""
    lopt = mnemosyne.reconfigure(
        mnemosyne.pretrained(), step_scale_range=(low, high),
        step_depth_floor=None, step_spike_guard=None,
    )
    return lambda: mnemosyne.mnemosyne(lopt=lopt)


def main():
    name, steps = sys.argv[1], int(sys.argv[2])
    opts = {"adam": lambda: optax.adam(1e-3), "shipped": lambda: mnemosyne.mnemosyne()}
    for spec in sys.argv[3:]:
        low, high = (float(x) for x in spec.split(","))
        opts[f"[{low:g},{high:g}]"] = fixed_floor(low, high)
    make, _ = {**probe5.PROBES, **probe6.PROBES, **probe7.PROBES}[name]
    probe5.compare(name, make, steps, opts, [0, 1], per_seed=True)


if __name__ == "__main__":
    main()
