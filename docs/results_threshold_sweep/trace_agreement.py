"""Trace the agreement $a_t$ (A1) and log multiplier $\\rho_t$ (A2) of every
tensor along one run of the shipped θ.

    python docs/results_threshold_sweep/trace_agreement.py CASE FLOOR [STEPS]

(from the repository root; CASE: a case of `scripts/step_floor_sweep.py`, seed
0; FLOOR: the floor of the step multiplier θ is read with). Prints, per
500-step window, the mean training loss, each tensor's mean agreement and its
last $\\rho_t$. The backend's Eq. (A2) is wrapped, in this process only, to
report its inputs and outputs through `jax.debug.callback`.
"""
import pathlib
import sys

import jax
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import step_floor_sweep  # noqa: E402

import mnemosyne  # noqa: E402
from mnemosyne import evaluation  # noqa: E402
from mnemosyne.backends import _jax  # noqa: E402

RECORD = []
_log_step_scale = _jax.log_step_scale


def traced(log_scale, agreement, rate, threshold, low, high):
    out = _log_step_scale(log_scale, agreement, rate, threshold, low, high)
    jax.debug.callback(
        lambda a, r: RECORD.append((np.ravel(a).copy(), np.ravel(r).copy())),
        agreement, out,
    )
    return out


_jax.log_step_scale = traced  # this process only
case, floor = sys.argv[1], float(sys.argv[2])
task, steps, _ = step_floor_sweep.cases()[case]
steps = int(sys.argv[3]) if len(sys.argv) > 3 else steps
lopt = mnemosyne.load(ROOT / "mnemosyne" / "weights" / "default.eqx")
lopt = mnemosyne.reconfigure(lopt, step_scale_range=(floor, lopt.step_scale_range[1]))
losses = np.asarray(
    evaluation.train(mnemosyne.mnemosyne(lopt=lopt), task, [0], num_steps=steps).losses
)[0]
calls = len(RECORD) // steps  # one per tensor (or packed group) per step
agreement = np.array([np.concatenate([RECORD[t * calls + k][0] for k in range(calls)])
                      for t in range(steps)])
rho = np.array([np.concatenate([RECORD[t * calls + k][1] for k in range(calls)])
                for t in range(steps)])
for w in range(0, steps, 500):
    end = min(w + 500, steps)
    print(f"{w:6d} loss {losses[w:end].mean():.3g} a "
          + " ".join(f"{x:+.3f}" for x in agreement[w:end].mean(0))
          + " | rho " + " ".join(f"{x:+.2f}" for x in rho[end - 1]))
