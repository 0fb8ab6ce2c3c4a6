"""Prototype (not in the library): a per-tensor step-size adaptation around a θ.

    python scripts/step_adaptation_prototype.py --kappa 0.003 --inner theta0 \
        shipped --seeds 4 --first-seed 2 --out record.json

Each tensor $\\ell$ keeps a log step multiplier $\\rho_\\ell$ (start 0) and its
previous update $u^\\ell_{t-1}$; at each step, with $g^\\ell_t$ the gradient
and $v^\\ell_t$ the inner optimizer's update,
$$\\rho_\\ell \\leftarrow \\operatorname{clip}\\big(\\rho_\\ell - \\kappa
\\cos(g^\\ell_t, u^\\ell_{t-1}),\\ \\log\\tfrac14,\\ \\log 4\\big),\\qquad
u^\\ell_t = e^{\\rho_\\ell} v^\\ell_t :$$
the step grows while successive gradients keep the last step's direction and
shrinks when they turn against it (hypergradient descent on the step size,
Baydin et al. 2018, on the cosine). The inner optimizer is the default
preset's untrained θ₀ (`theta0`: Adam-like momentum, step 1e-3) or the
shipped θ (`shipped`). Every candidate, and the shipped θ alone, trains the 14
validation and stress runs of `scripts/validate_checkpoints.py` beside
Adam(1e-3), scored by the same rule and function
(`validate_checkpoints.score_candidates`: wins, mean log ratio, ruined runs);
`--long-runs 6000` trains `scripts/long_runs.py`'s three configurations
instead; `--suite 1000 --out DIR` runs the evaluation suite.
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mnemosyne
from mnemosyne import evaluation
from mnemosyne.meta import PRESETS, stress_validation_tasks, validation_tasks


def step_adaptation(inner, kappa: float, low: float = 0.25, high: float = 4.0):
    """`inner` with the per-tensor multiplier $e^{\\rho_\\ell}$ above."""

    def cosine(a, b):
        norms = jnp.linalg.norm(a.ravel()) * jnp.linalg.norm(b.ravel())
        safe = jnp.where(norms > 0, norms, 1.0)
        return jnp.where(norms > 0, jnp.vdot(a.ravel(), b.ravel()) / safe, 0.0)

    def init(params):
        rho = jax.tree.map(lambda p: jnp.zeros((), p.dtype), params)
        return inner.init(params), rho, jax.tree.map(jnp.zeros_like, params)

    def update(grads, state, params=None):
        inner_state, rho, previous = state
        updates, inner_state = inner.update(grads, inner_state, params)
        rho = jax.tree.map(
            lambda r, g, u: jnp.clip(r - kappa * cosine(g, u), np.log(low),
                                     np.log(high)),
            rho, grads, previous,
        )
        updates = jax.tree.map(lambda v, r: v * jnp.exp(r), updates, rho)
        return updates, (inner_state, rho, updates)

    return optax.GradientTransformation(init, update)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kappa", type=float, nargs="+", default=[0.003])
    parser.add_argument("--inner", nargs="+", default=["theta0"],
                        choices=["theta0", "shipped"])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--long-runs", type=int, default=None, metavar="STEPS",
                        help="train scripts/long_runs.py's configurations for "
                        "STEPS steps instead of the validation runs")
    parser.add_argument("--suite", type=int, default=None, metavar="STEPS",
                        help="run the evaluation suite (seeds 0-2, STEPS steps) "
                        "with Adam(1e-3), the shipped θ and θ₀ adapted at the "
                        "first --kappa, writing results.md and .json to --out")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    preset = PRESETS["default"]
    inners = {
        "theta0": preset.untrained(),
        "shipped": mnemosyne.load("mnemosyne/weights/default.eqx"),
    }
    inners = {k: mnemosyne.as_gradient_transformation(v) for k, v in inners.items()}
    if args.suite:
        from mnemosyne.tasks import list_tasks

        optimizers = {"adam": optax.adam(1e-3), "mnemosyne": inners["shipped"],
                      "adapted_theta0": step_adaptation(inners["theta0"],
                                                        args.kappa[0])}
        result = evaluation.evaluate(optimizers, list_tasks(), seeds=(0, 1, 2),
                                     num_steps=args.suite, progress=False)
        print(result.to_markdown())
        if args.out:
            result.save(args.out)
        return
    from validate_checkpoints import score_candidates  # scripts/ is on sys.path

    candidates = {"shipped": inners["shipped"]}
    for inner in args.inner:
        for kappa in args.kappa:
            candidates[f"adapted {inner}, kappa {kappa:g}"] = step_adaptation(
                inners[inner], kappa
            )
    factories = [lambda lr: optax.adam(1e-3)]
    factories += [lambda lr, tx=tx: tx for tx in candidates.values()]
    seeds = np.arange(args.first_seed, args.first_seed + args.seeds, dtype=np.uint32)
    keys = jnp.broadcast_to(jax.vmap(jax.random.key)(seeds),
                            (len(factories), args.seeds))
    lrs = np.zeros((len(factories), args.seeds))
    if args.long_runs:
        from long_runs import configurations

        tasks = {n: (t, args.long_runs) for n, t in configurations().items()}
    else:
        tasks = {name: (task, 1000) for name, task in validation_tasks().items()}
        tasks.update(stress_validation_tasks())
    rows = {n: (row, 0) for row, n in enumerate(candidates, start=1)}
    final_losses, scores = score_candidates(factories, lrs, keys, rows, tasks,
                                            args.seeds)
    for n in candidates:
        print(n, scores[n])
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"seeds": args.seeds, "first_seed": args.first_seed,
                       "scores": scores, "final_losses": final_losses}, f, indent=2)


if __name__ == "__main__":
    main()
