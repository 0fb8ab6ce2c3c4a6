"""Trace the agreement $a_t$ (A1) and the multiplier $e^{\\rho_t}$ (A2) of
every tensor along one run (seed 0) of the shipped θ read with a gated
ceiling (as `gated_ceiling.py`).

    python docs/results_ceiling_sweep/trace_gated.py A1 KNEE CEILING TASK [STEPS|-]

(from the repository root; TASK: a suite task, 1,000 steps, or a case of
`scripts/step_floor_sweep.py`). Prints, per tenth of the run, the mean
training loss, the 10/50/90% quantiles of the per-step agreements of all
tensors, the fraction above 0.5, and the smallest, median and largest
multiplier at the end of the window. Record: `traces.log`.
"""
import pathlib
import sys

import jax
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import gated_ceiling  # noqa: E402  (beside this script)
import step_floor_sweep  # noqa: E402

import mnemosyne  # noqa: E402
from mnemosyne import evaluation  # noqa: E402
from mnemosyne.backends import _jax  # noqa: E402

A1, KNEE, CEILING = (float(x) for x in sys.argv[1:4])
RECORD = []
_gated = gated_ceiling.gated_rule(A1, KNEE)


def traced(*args):
    out = _gated(*args)
    jax.debug.callback(
        lambda a, r: RECORD.append((np.ravel(a).copy(), np.ravel(r).copy())),
        args[1], out,
    )
    return out


_jax.log_step_scale = traced  # this process only
tx = mnemosyne.mnemosyne(lopt=gated_ceiling.shipped_with_ceiling(CEILING))
name = sys.argv[4]
task, steps, _ = step_floor_sweep.task_named(name)
if len(sys.argv) > 5 and sys.argv[5] != "-":
    steps = int(sys.argv[5])
losses = np.asarray(evaluation.train(tx, task, [0], num_steps=steps).losses)[0]
calls = len(RECORD) // steps  # packed groups of tensors report separately
per_step = [RECORD[i * calls:(i + 1) * calls] for i in range(steps)]
agree = np.array([np.concatenate([a for a, _ in r]) for r in per_step])
rho = np.array([np.concatenate([r for _, r in rs]) for rs in per_step])
print(f"{name} a1={A1} knee={KNEE} h={CEILING}: {agree.shape[1]} tensors")
window = max(1, steps // 10)
for s in range(0, steps, window):
    a, last = agree[s:s + window], np.exp(rho[min(s + window, steps) - 1])
    print(f"{s:6d} loss {losses[s:s + window].mean():.3e} agreement q10/50/90 "
          f"{np.quantile(a, .1):+.2f} {np.median(a):+.2f} {np.quantile(a, .9):+.2f}"
          f" above 0.5 {np.mean(a > 0.5):.2f} multiplier min/median/max "
          f"{last.min():.3f} {np.median(last):.3f} {last.max():.3f}")
