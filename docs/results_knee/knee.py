"""A higher ceiling on the step multiplier, gated and with a faster rate above
a knee (Eq. A3 of docs/results.md, "A gated ceiling with a faster rate"):
tried in session 19 and not shipped (the library code is on the branch
`step-scale-gate`).

    python docs/results_knee/knee.py A1 KNEE CEILING FACTOR CASES [STEPS|-] \\
        [SEEDS|-] [OUT.json] [--after-warmup]

(from the repository root). The shipped θ is read with the ceiling CEILING
instead of 2, and the backend's Eq. (A2) is replaced, in this process only, by

$$\\rho_t = \\mathrm{clip}(\\rho_{t-1} + \\kappa_t (a_t - a_{0,t}),\\ \\log\\ell,\\
\\log h),\\qquad (\\kappa_t, a_{0,t}) = (\\kappa, a_0) \\text{ if } \\rho_{t-1} \\le
\\log h_0 \\text{ else } (m\\kappa, a_1)$$

with $h_0$ = KNEE, $a_1$ = A1 and $m$ = FACTOR (with `--after-warmup`, the
multiplier is held at most $h_0$ until the end of the shipped warm-up, $T$ =
200). `CEILING 0` trains the shipped reading as it is (at `learning_rate`
FACTOR if not 0), `A1 -1` `optax.adam(KNEE)` (1e-3 if 0). CASES:
comma-separated names for `scripts/step_floor_sweep.py`'s `task_named` (its
cases, third-probe tasks, suite tasks), or `lm:PROBLEM:D_MODEL:LAYERS:BATCH` /
`vit:D_MODEL:LAYERS:BATCH` for a causal LM or a ViT on digits (4 heads, 600
steps, seed 0). Prints each case's mean and geometric-mean final loss, the
per-seed final losses (mean of the last window) and stability ratios (final
window over the best one).
"""

import json
import pathlib
import sys

import jax.numpy as jnp
import numpy as np
import optax

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import step_floor_sweep  # noqa: E402

import mnemosyne  # noqa: E402
from mnemosyne import _lopt  # noqa: E402
from mnemosyne.backends import _jax  # noqa: E402
from mnemosyne.tasks import SequenceLM, ViTClassifier, load_dataset  # noqa: E402

TRACED = {}  # the step being traced (set by `_with_step`), for `--after-warmup`


def gated_rule(a1, knee, factor, after=None):
    """Eq. (A2) with the threshold $a_1$ and the rate $m\\kappa$ above the knee
    $h_0$ (the backend's signature); with `after` = T, the multiplier is held
    at most $h_0$ before step T (the end of the warm-up)."""

    def log_step_scale(log_scale, agreement, rate, threshold, low, high):
        above = log_scale > float(np.log(knee))
        drift = jnp.where(
            above, factor * rate * (agreement - a1), rate * (agreement - threshold)
        )
        top = float(np.log(high))
        if after is not None:
            top = jnp.where(TRACED["step"] >= after, top, float(np.log(knee)))
        return jnp.clip(log_scale + drift, float(np.log(low)), top)

    return log_step_scale


def case(name):
    """`(task, steps, seeds)` for a case name (see the module docstring)."""
    spec = name.split(":")
    if spec[0] == "lm":
        problem, d, layers, batch = spec[1], *map(int, spec[2:])
        task = SequenceLM(
            problem,
            d_model=d,
            num_layers=layers,
            num_heads=4,
            batch_size=batch,
            name=name,
        )
        return task, 600, [0]
    if spec[0] == "vit":
        d, layers, batch = map(int, spec[1:])
        task = ViTClassifier(
            load_dataset("digits"),
            d_model=d,
            num_layers=layers,
            batch_size=batch,
            name=name,
        )
        return task, 600, [0]
    return step_floor_sweep.task_named(name)


def _with_step(method):
    """`AbstractMnemosyne._log_step_scale`, recording the traced step first."""

    def wrapped(self, grad, momentum, log_scale, rms, step, B):
        TRACED["step"] = step
        return method(self, grad, momentum, log_scale, rms, step, B)

    return wrapped


def main():
    after = None
    if "--after-warmup" in sys.argv:
        sys.argv.remove("--after-warmup")
        after = mnemosyne.pretrained().step_warmup[1]
        _lopt.AbstractMnemosyne._log_step_scale = _with_step(
            _lopt.AbstractMnemosyne._log_step_scale
        )
    a1, knee, ceiling, factor = (float(x) for x in sys.argv[1:5])
    if a1 == -1:
        tx = optax.adam(knee or 1e-3)
    elif ceiling == 0:
        tx = mnemosyne.mnemosyne(factor or 1.0)
    else:
        _jax.log_step_scale = gated_rule(a1, knee, factor, after)  # this process
        lopt = mnemosyne.pretrained()
        lopt = mnemosyne.reconfigure(
            lopt, step_scale_range=(lopt.step_scale_range[0], ceiling)
        )
        tx = mnemosyne.mnemosyne(lopt=lopt)
    record = run_cases(tx, sys.argv[5], sys.argv[6:8], case)
    if len(sys.argv) > 8:
        pathlib.Path(sys.argv[8]).write_text(json.dumps(record, indent=1))


def run_cases(tx, names: str, overrides, lookup, label: str = "") -> dict:
    """Train `tx` on each comma-separated case of `names` (`lookup(name) ->
    (task, steps, seeds)`; `overrides`: `[STEPS, SEEDS]`, either `-` or
    missing for the case's own), print a line per case and return the record
    (per case: seeds, steps, final losses, stability ratios)."""
    record = {}
    for name in names.split(","):
        task, steps, seeds = lookup(name)
        if len(overrides) > 0 and overrides[0] != "-":
            steps = int(overrides[0])
        if len(overrides) > 1 and overrides[1] != "-":
            seeds = [int(s) for s in overrides[1].split(",")]
        final, ratio, seconds = step_floor_sweep.final_and_ratio(tx, task, seeds, steps)
        record[name] = {
            "seeds": seeds,
            "steps": steps,
            "final": final.tolist(),
            "ratio": ratio.tolist(),
        }
        print(
            f"{label}{name:34s} mean {final.mean():.4g} "
            f"geo {np.exp(np.log(final).mean()):.4g} "
            f"final {np.array2string(final, precision=4)} "
            f"ratio {np.round(ratio, 2)} ({seconds:.0f} s)",
            flush=True,
        )
    return record

if __name__ == "__main__":
    main()
