"""A gated ceiling above 2 for models of four or more matrices (session 34).

    python docs/results_deep_ceiling/deep_ceiling.py suite READINGS STEPS [TASKS]
    python docs/results_deep_ceiling/deep_ceiling.py cases READINGS CASES \\
        [STEPS|-] [SEEDS|-]

The candidate extends Eq. (C) to deep models: a model of $L \\ge 4$
matrices may grow its step multiplier to D instead of 2, past 2 only while
the agreement exceeds $a_1$ = A (the shipped gate of shallow models is
0.3). Sessions 17-19 found every higher ceiling for deep models made some
climb (a 6-layer ViT, 16-layer GELU MLPs, `d_model`-256 LMs), but that was
before the width scaling of Eq. (N) (session 21) shrank the steps of wide
tensors. It is emulated exactly for a model of L matrices by the library's
`step_shallow_ceiling=(D L, A)`: $\\min(DL, \\max(2, DL/L)) = D$.

READINGS: comma-separated `adam`, `shipped`, `dD_gA` (the candidate).
`suite`: the suite tasks of four or more matrices (or the comma-separated
TASKS), STEPS steps, seeds 0-2, trained as `mnemosyne evaluate` trains.
`cases`: `docs/results_knee/knee.py`'s cases (`lm:PROBLEM:D:LAYERS:BATCH`,
`vit:D:LAYERS:BATCH`, the step-floor sweep's named cases, third-probe and
suite tasks). Each line: the geometric mean of the final losses (mean of
the last 5% of steps) and each run's final loss with its stability ratio
(final over best window) in brackets. `--guard-above`: the spike term of
Eq. (G) also lowers a multiplier above 2 (`spike_guard_above`).
"""

import pathlib
import sys

import jax
import numpy as np
import optax

DOCS = pathlib.Path(__file__).parents[1]
sys.path[:0] = [
    str(DOCS / "results_depth_ceiling"),
    str(DOCS / "results_shallow_ceiling"),
    str(DOCS / "results_knee"),
]
from depth_ceiling import probe5, reading  # noqa: E402
from shallow_ceiling import num_matrices  # noqa: E402

import mnemosyne  # noqa: E402
from mnemosyne.backends import _jax  # noqa: E402


def spike_guard_above(knee=2.0):
    """Eq. (G)'s spike term applied above the knee too (this process only):
    a multiplier above `knee` drops by the penalty of a gradient spike, as one
    at the floor does; below the knee nothing changes."""
    shipped = _jax.log_step_scale

    def log_step_scale(*args):
        new = shipped(*args)
        if len(args) < 9:  # no spike penalty: the shipped rule as it is
            return new
        log_scale, penalty, hard_low = args[0], args[6], args[8]
        above = jax.numpy.asarray(log_scale) > float(np.log(knee))
        return jax.numpy.where(
            above, jax.numpy.maximum(new - penalty, float(np.log(hard_low))), new
        )

    _jax.log_step_scale = log_step_scale


def optimizers(labels, matrices):
    """name -> optimizer factory for a model of `matrices` matrices."""
    out = {}
    for label in labels:
        if label == "adam":
            out[label] = lambda: optax.adam(1e-3)
        elif label == "shipped":
            out[label] = mnemosyne.mnemosyne
        else:
            d, a1 = (float(x) for x in label[1:].split("_g"))
            out[label] = reading(step_shallow_ceiling=(d * max(matrices, 1), a1))
    return out


def line(name, steps, label, losses):
    losses = np.asarray(losses)
    final = losses[:, -max(1, steps // 20) :].mean(1)
    ratio = np.asarray(probe5.stability_ratio(losses))
    print(
        f"{name:34s} {steps:6d} {label:10s} geo {probe5.geo(final):.3g} | "
        + " ".join(f"{f:.3g}({r:.1f})" for f, r in zip(final, ratio, strict=True)),
        flush=True,
    )


def train_task(task, steps, seeds, labels):
    from mnemosyne import evaluation

    matrices = num_matrices(task.init(jax.random.key(0)))
    for label, tx in optimizers(labels, matrices).items():
        losses = evaluation.train(tx(), task, seeds, num_steps=steps).losses
        line(f"{task.name} L={matrices}", steps, label, losses)


def suite(labels, steps, names=None):
    from mnemosyne import tasks

    for name in names or tasks.list_tasks():
        task = tasks.get_task(name)
        if names or num_matrices(task.init(jax.random.key(0))) >= 4:
            train_task(task, steps, [0, 1, 2], labels)


def cases(labels, names, overrides):
    import knee

    for name in names:
        task, steps, seeds = knee.case(name)
        if overrides and overrides[0] != "-":
            steps = int(overrides[0])
        if len(overrides) > 1 and overrides[1] != "-":
            seeds = [int(s) for s in overrides[1].split(",")]
        train_task(task, steps, seeds, labels)


if __name__ == "__main__":
    if "--guard-above" in sys.argv:
        sys.argv.remove("--guard-above")
        spike_guard_above()
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "suite":
        suite(
            args[0].split(","),
            int(args[1]),
            args[2].split(",") if len(args) > 2 else None,
        )
    elif mode == "cases":
        cases(args[0].split(","), args[1].split(","), args[2:])
    else:
        raise SystemExit(__doc__)
