"""A loss guard fed optax's `value=` (the minibatch loss), on top of the shipped
reading: measured, not shipped (docs/results.md, "The loss as an input").

    python docs/results_loss_guard/loss_guard.py CASES VARIANTS [SEEDS|-] [OUT.json]

CASES: comma-separated names for `scripts/step_floor_sweep.py`'s `task_named`;
VARIANTS: comma-separated `adam`, `shipped` or `guard[:TOL:SHRINK:GROW:BETA]`;
SEEDS: comma-separated, or `-` for each case's own. The guard keeps an
exponential average of the loss (decay BETA, bias-corrected) and its lowest
value after 100 steps; while the average is above TOL times that lowest value
it multiplies a global step factor by exp(-SHRINK) per step, else by
exp(GROW), within [1/32, 1]. `evaluation.train` passes the loss as `value=`.
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts"))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from step_floor_sweep import final_and_ratio, task_named  # noqa: E402

import mnemosyne  # noqa: E402


def loss_guard(
    inner, beta=0.99, tol=1.25, shrink=0.01, grow=0.002, start=100, low=1 / 32
):
    inner = optax.with_extra_args_support(inner)

    def init(params):
        z = jnp.zeros((), jnp.float32)
        return (
            inner.init(params),
            z,
            jnp.full((), jnp.inf),
            z,
            jnp.zeros((), jnp.int32),
        )

    def update(g, s, params=None, *, value=None, **kw):
        istate, ema, best, logf, t = s
        t = t + 1
        ema = beta * ema + (1 - beta) * value
        ema_hat = ema / (1 - beta ** t.astype(jnp.float32))
        best = jnp.where(t >= start, jnp.minimum(best, ema_hat), best)
        rising = ema_hat > tol * best
        logf = jnp.clip(logf + jnp.where(rising, -shrink, grow), np.log(low), 0.0)
        u, istate = inner.update(g, istate, params, **kw)
        u = jax.tree.map(lambda x: x * jnp.exp(logf).astype(x.dtype), u)
        return u, (istate, ema, best, logf, t)

    return optax.GradientTransformationExtraArgs(init, update)


if __name__ == "__main__":
    cases = sys.argv[1].split(",")
    variants = sys.argv[2].split(",")  # adam, shipped, guard[:tol:shrink:grow:beta]
    seeds_arg = sys.argv[3] if len(sys.argv) > 3 else "-"
    out = {}
    for case in cases:
        task, steps, seeds = task_named(case)
        if seeds_arg != "-":
            seeds = [int(s) for s in seeds_arg.split(",")]
        for v in variants:
            if v == "adam":
                tx = optax.adam(1e-3)
            elif v == "shipped":
                tx = mnemosyne.mnemosyne()
            else:
                parts = v.split(":")[1:]
                kw = dict(
                    zip(
                        ["tol", "shrink", "grow", "beta"],
                        map(float, parts),
                        strict=False,
                    )
                )
                tx = loss_guard(mnemosyne.mnemosyne(), **kw)
            final, ratio, sec = final_and_ratio(tx, task, seeds, steps)
            out[f"{case}/{v}"] = dict(
                seeds=seeds, final=final.tolist(), ratio=ratio.tolist()
            )
            print(
                f"{case:22s} {v:26s} final {np.array2string(final, precision=3)} "
                f"ratio {np.round(ratio, 2)} mean {final.mean():.4g} ({sec:.0f}s)",
                flush=True,
            )
    if len(sys.argv) > 4:
        json.dump(out, open(sys.argv[4], "w"), indent=1)
