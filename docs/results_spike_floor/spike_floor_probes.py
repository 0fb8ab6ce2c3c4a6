"""The fifth and sixth probes' models read with and without the spike guard
of Eq. (G) (session 25), beside Adam(1e-3).

    python docs/results_spike_floor/spike_floor_probes.py --probe 5|6
        [--only NAME,...] [--seeds 0,1] [--scale-steps 4]
        [--guard 3,1,0.0005] [--no-adam] [--no-shipped]

For each model: the final loss (geometric mean over seeds of the mean of the
last 5% of steps) with each run's stability ratio and wall time
(`probe5.compare`), for `optax.adam(1e-3)`, the shipped θ read without the
guard ("depth": the reading of session 24, floor of Eq. (D)) and with
`step_spike_guard=GUARD` ("guard"). Uses the probes' own loop (`probe5.run`).
"""

import argparse
import pathlib
import sys

import optax

DOCS = pathlib.Path(__file__).parents[1]
sys.path.insert(0, str(DOCS / "results_fifth_probe"))
sys.path.insert(0, str(DOCS / "results_sixth_probe"))
import probe5  # noqa: E402

import mnemosyne  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    probe5.add_probe_arguments(p)
    p.add_argument("--guard", default="3,1,0.0005")
    p.add_argument("--no-adam", action="store_true")
    p.add_argument("--no-shipped", action="store_true")
    a = p.parse_args()
    probes, names, seeds = probe5.selected_probes(a)
    guard = tuple(float(v) for v in a.guard.split(","))
    shipped = mnemosyne.reconfigure(mnemosyne.pretrained(), step_spike_guard=None)
    opts = {} if a.no_adam else {"adam": lambda: optax.adam(1e-3)}
    if not a.no_shipped:
        opts["depth"] = lambda: mnemosyne.mnemosyne(lopt=shipped)
    opts["guard"] = lambda: mnemosyne.mnemosyne(
        lopt=mnemosyne.reconfigure(shipped, step_spike_guard=guard))
    for name in names:
        make, steps = probes[name]
        probe5.compare(name, make, int(steps * a.scale_steps), opts, seeds,
                       per_seed=True)


if __name__ == "__main__":
    main()
