"""The fifth and sixth probes' models read with and without the depth-aware
floor of Eq. (D) (session 24), beside Adam(1e-3).

    python docs/results_depth_floor/depth_floor_probes.py --probe 5|6
        [--only NAME,...] [--seeds 0,1] [--scale-steps 4] [--skip-unchanged]
        [--c 2] [--cap 0.5] [--no-adam]

For each model: its number of matrices $L$ (parameter leaves of two or more
axes), its floor $\\min(\\text{cap}, \\max(\\tfrac14, c/L))$, and the final loss
(geometric mean over seeds of the mean of the last 5% of steps) with each
run's stability ratio and wall time (`probe5.compare`), for
`optax.adam(1e-3)`, the shipped θ read without the depth floor ("quarter":
the floor 1/4 of sessions 22-23) and with `step_depth_floor=(c, cap)`
("depth"). `--skip-unchanged` skips models whose floor stays 1/4. Uses the
probes' own loop (`probe5.run`).
"""

import argparse
import pathlib
import sys

import jax
import numpy as np
import optax

DOCS = pathlib.Path(__file__).parents[1]
sys.path.insert(0, str(DOCS / "results_fifth_probe"))
sys.path.insert(0, str(DOCS / "results_sixth_probe"))
import probe5  # noqa: E402

import mnemosyne  # noqa: E402
from mnemosyne._lopt import depth_floor  # noqa: E402


def num_matrices(params) -> int:
    return sum(1 for x in jax.tree.leaves(params) if np.ndim(x) >= 2)


def main():
    p = argparse.ArgumentParser()
    probe5.add_probe_arguments(p)
    p.add_argument("--c", type=float, default=2.0)
    p.add_argument("--cap", type=float, default=0.5)
    p.add_argument("--no-adam", action="store_true")
    p.add_argument("--skip-unchanged", action="store_true")
    a = p.parse_args()
    probes, names, seeds = probe5.selected_probes(a)
    # the reading of session 24: without the spike guard shipped since
    shipped = mnemosyne.reconfigure(mnemosyne.pretrained(), step_spike_guard=None)
    for name in names:
        make, steps = probes[name]
        steps = int(steps * a.scale_steps)
        L = num_matrices(make()[0](jax.random.key(0)))
        floor = depth_floor(L, 0.25, (a.c, a.cap))
        if a.skip_unchanged and floor == 0.25:
            print(f"{name:32s} L={L} floor {floor:g}: unchanged, skipped", flush=True)
            continue
        opts = {} if a.no_adam else {"adam": lambda: optax.adam(1e-3)}
        opts["quarter"] = lambda: mnemosyne.mnemosyne(
            lopt=mnemosyne.reconfigure(shipped, step_depth_floor=None))
        opts[f"depth {floor:.3g}"] = lambda: mnemosyne.mnemosyne(
            lopt=mnemosyne.reconfigure(shipped, step_depth_floor=(a.c, a.cap)))
        label = f"{name:32s} L={L}"
        probe5.compare(label, make, steps, opts, seeds, per_seed=True)


if __name__ == "__main__":
    main()
