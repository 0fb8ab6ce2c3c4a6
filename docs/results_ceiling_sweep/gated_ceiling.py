"""A higher ceiling on the step multiplier, gated by a second agreement
threshold: tried on 2026-12-05 (evening) and not shipped.

    python docs/results_ceiling_sweep/gated_ceiling.py A1 KNEE CEILING TASKS \\
        [STEPS|-] [SEEDS]

(from the repository root; TASKS: comma-separated suite task names, trained
1,000 steps on seeds 0-2, or cases of `scripts/step_floor_sweep.py`, on their
own steps and seeds; STEPS overrides the steps, `-` keeps them; SEEDS:
comma-separated, vmapped in one run). The shipped θ is read with the ceiling
CEILING instead of 2, and the backend's Eq. (A2) is replaced, in this process
only, by

$$\\rho_t = \\mathrm{clip}(\\rho_{t-1} + \\kappa (a_t - a(\\rho_{t-1})),\\
\\log \\ell,\\ \\log h),\\qquad a(\\rho) = a_0 \\text{ if } \\rho \\le \\log
h_0 \\text{ else } a_1,$$

with $h_0$ = KNEE and $a_1$ = A1: above the knee the multiplier grows only
while the gradient keeps the momentum's direction strongly. `A1 = 0.05`
(= $a_0$) with CEILING 2 is the shipped reading; `A1 = -1` trains
`optax.adam(1e-3)` instead. Prints each task's mean final loss, the per-seed
final losses (mean of the last window) and stability ratios (final window over
the best one). Record: `gated_ceiling.log`.
"""
import pathlib
import sys

import jax.numpy as jnp
import numpy as np
import optax

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import step_floor_sweep  # noqa: E402

import mnemosyne  # noqa: E402
from mnemosyne.backends import _jax  # noqa: E402


def gated_rule(a1, knee):
    """Eq. (A2) with the threshold $a_1$ above the knee $h_0$ (the backend's
    signature)."""
    def log_step_scale(log_scale, agreement, rate, threshold, low, high):
        threshold = jnp.where(log_scale > float(np.log(knee)), a1, threshold)
        return jnp.clip(log_scale + rate * (agreement - threshold),
                        float(np.log(low)), float(np.log(high)))
    return log_step_scale


def shipped_with_ceiling(ceiling):
    """The shipped θ, read with the multiplier's ceiling `ceiling`."""
    lopt = mnemosyne.load(ROOT / "mnemosyne" / "weights" / "default.eqx")
    return mnemosyne.reconfigure(
        lopt, step_scale_range=(lopt.step_scale_range[0], ceiling)
    )


def main():
    a1, knee, ceiling = (float(x) for x in sys.argv[1:4])
    _jax.log_step_scale = gated_rule(a1, knee)  # this process only
    lopt = shipped_with_ceiling(ceiling)
    tx = optax.adam(1e-3) if a1 < 0 else mnemosyne.mnemosyne(lopt=lopt)
    for name in sys.argv[4].split(","):
        task, steps, seeds = step_floor_sweep.task_named(name)
        if len(sys.argv) > 5 and sys.argv[5] != "-":
            steps = int(sys.argv[5])
        if len(sys.argv) > 6:
            seeds = [int(s) for s in sys.argv[6].split(",")]
        final, ratio, seconds = step_floor_sweep.final_and_ratio(
            tx, task, seeds, steps
        )
        label = "adam" if a1 < 0 else f"a1={a1} knee={knee} h={ceiling}"
        print(f"{name:22s} {label} final {final.mean():.4g} "
              f"{np.array2string(final, precision=4)} ratio {np.round(ratio, 2)} "
              f"({seconds:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
