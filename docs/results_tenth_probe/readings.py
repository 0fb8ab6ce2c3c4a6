"""The shipped θ under other readings on one model of the tenth probe
(session 30), beside Adam(1e-3).

    python docs/results_tenth_probe/readings.py NAME SCALE READINGS [--windows]

Runs the probe's model NAME (`probe10.PROBES` or `probe10.ADDED`) for
SCALE times its steps on seeds 0 and 1 with each of READINGS
(comma-separated): `adam`; `shipped`; `kernel_floor_L3`, the kernel floor
(K) from three matrices on; `no_width`, without the width scaling (N);
`kernel_floor_L3_no_width`, both (what a 6-layer CNN of 16 channels
written without the stack would be read as); `stacked`, the shipped
optimizer told that the leading axis of every leaf under a key `stack`
indexes layers
(`mnemosyne.mnemosyne(stacked_axes=...)`, session 31); `ceiling_1`, the
multiplier's ceiling 1 instead of 2; `floor_half`, the depth floor ½ up to
ten matrices (session 31's diagnosis of the 8x64 MLP at batch 8). Prints probe5's line
(geometric mean of the final losses, stability ratios, time) and each
seed's final loss; with `--windows`, each run's mean loss over each
twentieth of its steps instead.
"""

import pathlib
import sys

import jax
import optax

HERE = pathlib.Path(__file__).parent
sys.path[:0] = [str(HERE), str(HERE.parent / "results_fifth_probe")]
import probe5  # noqa: E402
import probe10  # noqa: E402

import mnemosyne  # noqa: E402


def reading(**settings):
    return lambda: mnemosyne.mnemosyne(
        lopt=mnemosyne.reconfigure(mnemosyne.pretrained(), **settings))


READINGS = {
    "adam": lambda: optax.adam(1e-3),
    "shipped": mnemosyne.mnemosyne,
    "kernel_floor_L3": reading(step_kernel_floor=(1.0, 3)),
    "no_width": reading(step_width_reference=None),
    "kernel_floor_L3_no_width": reading(step_kernel_floor=(1.0, 3),
                                        step_width_reference=None),
    "stacked": lambda: mnemosyne.mnemosyne(stacked_axes=stack_axis),
    "ceiling_1": reading(step_scale_range=(0.25, 1.0)),
    "floor_half": reading(step_depth_floor=(5.0, 0.5)),
}


def stack_axis(params):
    """One stacked axis on every leaf under a key `stack`, none elsewhere."""
    in_stack = lambda path: any(getattr(k, "key", None) == "stack" for k in path)
    return jax.tree_util.tree_map_with_path(
        lambda path, _: int(in_stack(path)), params)


def main():
    name, scale, labels = sys.argv[1], float(sys.argv[2]), sys.argv[3].split(",")
    make, steps = (probe10.PROBES | probe10.ADDED)[name]
    steps, seeds = int(steps * scale), [0, 1]
    if "--windows" not in sys.argv:
        opts = {label: READINGS[label] for label in labels}
        probe5.compare(name, make, steps, opts, seeds, per_seed=True)
        return
    for label in labels:
        losses = probe5.run(make, steps, READINGS[label](), seeds)
        for seed, line in zip(seeds, probe5.twentieths(losses), strict=True):
            print(f"{name} {label} seed {seed}: {line}", flush=True)


if __name__ == "__main__":
    main()
