"""Two read-time variants of Eq. (A2) tried on 2026-12-05 and not shipped.

    python docs/results_threshold_sweep/rule_variants.py harmonic CASES [SEEDS]
    python docs/results_threshold_sweep/rule_variants.py noise_floor CASES [SEEDS]
    python docs/results_threshold_sweep/rule_variants.py harmonic_all CASES [SEEDS]

(from the repository root; CASES: comma-separated cases of
`scripts/step_floor_sweep.py`, SEEDS: comma-separated seeds; `A0=0.1` in the
environment reads θ with that threshold). The shipped θ is read as shipped,
except that the backend's Eq. (A2) is replaced, in this process only, by

- `harmonic`: $\\rho_t = \\mathrm{clip}(\\rho_{t-1} + \\kappa(a_t - a_0
  \\min(e^{\\rho_{t-1}}, 1)))$: the threshold's pull weakens as the multiplier
  shrinks, so under pure noise ($a_t = 0$) the multiplier decays as
  $1/(1 + \\kappa a_0 t)$ instead of $e^{-\\kappa a_0 t}$;
- `noise_floor`: the threshold acts only while the multiplier is above ¼;
  below it only a negative agreement lowers it further (to the floor 1/32);
- `harmonic_all` (session 22): below 1 *every* decrease is scaled by the
  multiplier, $\rho_t = \mathrm{clip}(\rho_{t-1} + \kappa\,\delta_t
  (e^{\min(\rho_{t-1}, 0)}$ if $\delta_t < 0$ else $1))$, $\delta_t = a_t -
  a_0$: a persistent deficit anneals the multiplier as $1/t$, increases stay
  geometric.

Prints each case's final losses and stability ratios as `step_floor_sweep.py`
does. Record: `variants.log`.
"""
import os
import pathlib
import sys

import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import step_floor_sweep  # noqa: E402

import mnemosyne  # noqa: E402
from mnemosyne.backends import _jax  # noqa: E402

VARIANT = sys.argv[1]


def log_step_scale(log_scale, agreement, rate, threshold, low, high):
    if VARIANT == "harmonic_all":
        deficit = agreement - threshold
        scaled = deficit * jnp.exp(jnp.minimum(log_scale, 0.0))
        return jnp.clip(log_scale + rate * jnp.where(deficit < 0, scaled, deficit),
                        float(np.log(low)), float(np.log(high)))
    if VARIANT == "harmonic":
        threshold = threshold * jnp.exp(jnp.minimum(log_scale, 0.0))
    elif VARIANT == "noise_floor":
        threshold = jnp.where(log_scale > np.log(0.25), threshold, 0.0)
    else:
        raise SystemExit(f"unknown variant {VARIANT!r}")
    return jnp.clip(log_scale + rate * (agreement - threshold),
                    float(np.log(low)), float(np.log(high)))


_jax.log_step_scale = log_step_scale  # this process only
lopt = mnemosyne.load(ROOT / "mnemosyne" / "weights" / "default.eqx")
if os.environ.get("A0"):
    lopt = mnemosyne.reconfigure(lopt, step_agreement_threshold=float(os.environ["A0"]))
tx = mnemosyne.mnemosyne(lopt=lopt)
cases = step_floor_sweep.cases()
for case in sys.argv[2].split(","):
    task, steps, seeds = cases[case]
    if len(sys.argv) > 3:
        seeds = [int(s) for s in sys.argv[3].split(",")]
    final, ratio, seconds = step_floor_sweep.final_and_ratio(tx, task, seeds, steps)
    print(f"{case:16s} a0={lopt.step_agreement_threshold} {VARIANT} final "
          f"{np.round(final, 5)} ratio {np.round(ratio, 2)} ({seconds:.0f} s)",
          flush=True)
