"""What a run shows per tensor while it trains (docs/results.md, "Width"):

    python docs/results_width/trace_run.py CASE [STEPS] [CASE ...]

(from the repository root). CASE as in `docs/results_knee/knee.py`
(`lm:PROBLEM:D:LAYERS:BATCH`, `vit:D:LAYERS:BATCH`, suite and probe tasks);
STEPS defaults to 600; seed 0, the shipped θ read as it was shipped until
session 21, without the width scaling of Eq. (N) (the reading these traces
examined: `step_width_reference=None`). For each case, every
step's per-tensor step multiplier $e^{\\rho_t}$ (Eq. (A2)), gradient RMS and
update-to-parameter RMS ratio are recorded through `jax.debug.callback`, and
the loss and the geometric means over the Transformer blocks' weight matrices
are printed at a few steps (20-step windows around them).
"""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "docs" / "results_knee"))

import knee  # noqa: E402

import mnemosyne  # noqa: E402
from mnemosyne import evaluation  # noqa: E402
from mnemosyne._lopt import MnemosyneState  # noqa: E402

STEPS_SHOWN = (25, 75, 125, 175, 250, 350, 450, 599)


def _rms(x):
    return jnp.sqrt(jnp.mean(jnp.square(x)))


def traced(inner: optax.GradientTransformation, record: list):
    """`inner`, appending `(step, update/param RMS, log multiplier, gradient
    RMS)` per tensor to `record` at every update."""

    def update(grads, state, params=None, **extra):
        updates, state = inner.update(grads, state, params, **extra)
        found = jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, MnemosyneState))
        inner_state = next(x for x in found if isinstance(x, MnemosyneState))
        pairs = zip(jax.tree.leaves(updates), jax.tree.leaves(params), strict=True)
        ratio = jnp.stack([_rms(u) / (_rms(p) + 1e-12) for u, p in pairs])
        scale = jnp.stack(
            [jnp.reshape(s, ()) for s in jax.tree.leaves(inner_state.step_scale)]
        )
        g_rms = jnp.stack([_rms(g) for g in jax.tree.leaves(grads)])
        jax.debug.callback(
            lambda *xs: record.append([np.asarray(x) for x in xs]),
            inner_state.step, ratio, scale, g_rms,
        )
        return updates, state

    return optax.GradientTransformation(inner.init, update)


def trace(name: str, steps: int) -> None:
    task, _, _ = knee.case(name)
    record: list = []
    lopt = mnemosyne.reconfigure(mnemosyne.pretrained(), step_width_reference=None)
    tx = traced(mnemosyne.mnemosyne(lopt=lopt), record)
    loss = np.asarray(evaluation.train(tx, task, [0], num_steps=steps).losses)[0]
    order = np.argsort([int(np.ravel(r[0])[0]) for r in record], kind="stable")
    ratio, log_scale, g_rms = (np.stack([np.ravel(record[i][k]) for i in order])
                               for k in (1, 2, 3))
    paths = jax.tree_util.tree_flatten_with_path(task.init(jax.random.key(0)))[0]
    names = [jax.tree_util.keystr(path) for path, _ in paths]
    blocks = [i for i, n in enumerate(names) if "body" in n and n.endswith("['w']")]
    window = lambda x, s: x[max(0, s - 10): s + 10]
    geo = lambda x: float(np.exp(np.log(x).mean()))
    shown = [s for s in STEPS_SHOWN if s < steps]
    rows = {
        "loss": [window(loss, s).mean() for s in shown],
        "gradient RMS": [geo(window(g_rms, s)[:, blocks]) for s in shown],
        "multiplier": [geo(np.exp(log_scale[s, blocks])) for s in shown],
        "update / param": [geo(window(ratio, s)[:, blocks]) for s in shown],
    }
    print(f"{name} (steps {shown})")
    for label, values in rows.items():
        print(f"  {label:15s}", " ".join(f"{v:.2g}" for v in values), flush=True)


def main() -> None:
    args = sys.argv[1:]
    steps = 600
    if len(args) > 1 and args[1].isdigit():
        steps = int(args.pop(1))
    for name in args:
        trace(name, steps)


if __name__ == "__main__":
    main()
