"""The shipped θ with a fixed floor on its step multiplier, on one probe model.

    python docs/results_seventh_probe/fixed_floors.py NAME STEPS LOW,HIGH ... \\
        [--seeds 0,1]

Runs Adam(1e-3), the shipped reading and, for each `LOW,HIGH`, θ read with
`step_scale_range=(LOW, HIGH)` and neither the depth floor (D) nor the spike
guard (G) (`mnemosyne.reconfigure`: θ's arrays unchanged), on a model of the
fifth to ninth probes, seeds 0-1 (or `--seeds`) vmapped, with the fifth probe's
loop and output line (`probe5.compare`).
"""

import pathlib
import sys

import optax

DOCS = pathlib.Path(__file__).parents[1]
for folder in ("results_fifth_probe", "results_sixth_probe", "results_seventh_probe",
               "results_eighth_probe", "results_ninth_probe"):
    sys.path.insert(0, str(DOCS / folder))
import probe5  # noqa: E402
import probe6  # noqa: E402
import probe7  # noqa: E402
import probe8  # noqa: E402
import probe9  # noqa: E402

import mnemosyne  # noqa: E402


def fixed_floor(low, high):
    """A factory of the shipped θ read with the multiplier in `[low, high]`."""
    lopt = mnemosyne.reconfigure(
        mnemosyne.pretrained(), step_scale_range=(low, high),
        step_depth_floor=None, step_spike_guard=None,
    )
    return lambda: mnemosyne.mnemosyne(lopt=lopt)


def main():
    args, seeds = sys.argv[1:], [0, 1]
    if "--seeds" in args:
        at = args.index("--seeds")
        seeds = [int(s) for s in args[at + 1].split(",")]
        args = args[:at] + args[at + 2:]
    name, steps = args[0], int(args[1])
    opts = {"adam": lambda: optax.adam(1e-3), "shipped": lambda: mnemosyne.mnemosyne()}
    for spec in args[2:]:
        low, high = (float(x) for x in spec.split(","))
        opts[f"[{low:g},{high:g}]"] = fixed_floor(low, high)
    probes = {**probe5.PROBES, **probe6.PROBES, **probe7.PROBES, **probe8.PROBES,
              **probe9.PROBES}
    probe5.compare(name, probes[name][0], steps, opts, seeds, per_seed=True)


if __name__ == "__main__":
    main()
