"""Pick the meta-training checkpoint to ship on held-out validation tasks.

    python scripts/validate_checkpoints.py SNAPSHOT.eqx [...] --out record.json

Each θ file (and the untrained θ of the default preset, as `untrained`) trains
every task of `mnemosyne.meta.validation_tasks()` (configurations in neither the
meta-training distribution nor the evaluation suite) for `--steps` steps on
`--seeds`, beside Adam(1e-3), all in one program per task. The score of a θ is
the mean over tasks of log(final loss / Adam's final loss) (final loss: mean
over the last 5% of steps and over seeds, floored at 1e-6 as in the ablation,
since some runs reach exactly 0 in float32); a θ with any run ending above 1.5x
its own best window-mean loss (`evaluation.stability_ratio`) or non-finite is
ineligible. The best eligible θ is reported; the record lists every score.
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np
import optax

import mnemosyne
from mnemosyne import evaluation
from mnemosyne.evaluation._ablation import LOSS_FLOOR
from mnemosyne.meta import PRESETS, validation_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="*", help="θ files to compare")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", default=None, help="JSON record to write")
    args = parser.parse_args()

    preset = PRESETS["default"]
    candidates = {"untrained": preset.make_lopt(jax.random.split(jax.random.key(preset.seed))[0])}
    candidates.update({path: mnemosyne.load(path) for path in args.weights})
    names = list(candidates)
    factories = [lambda lr: optax.adam(1e-3)] + [
        (lambda lr, lopt=candidates[n]: mnemosyne.scale_by_mnemosyne(lopt)) for n in names
    ]
    keys = jax.vmap(jax.random.key)(np.arange(args.seeds, dtype=np.uint32))
    keys = jax.numpy.broadcast_to(keys, (len(factories), args.seeds))
    lrs = np.zeros((len(factories), args.seeds))
    log_ratio = {n: [] for n in names}
    stability = {n: [] for n in names}
    per_task = {}
    w = evaluation.window_size(args.steps)
    for task_name, task in validation_tasks().items():
        losses, _, _ = evaluation.train_groups(factories, task, lrs, keys, num_steps=args.steps)
        final = np.maximum(losses[:, :, -w:].mean(axis=(1, 2)), LOSS_FLOOR)
        per_task[task_name] = {"adam": float(final[0])}
        for i, n in enumerate(names, start=1):
            log_ratio[n].append(float(np.log(final[i] / final[0])))
            stability[n].append(float(np.max(evaluation.stability_ratio(losses[i]))))
            per_task[task_name][n] = float(final[i])
        print(task_name, {k: round(v, 4) for k, v in per_task[task_name].items()}, flush=True)
    scores = {
        n: {
            "mean_log_ratio_vs_adam": float(np.mean(log_ratio[n])),
            "wins_vs_adam": int(np.sum(np.asarray(log_ratio[n]) <= 0)),
            "worst_stability_ratio": float(np.max(stability[n])),
            "eligible": bool(np.all(np.isfinite(log_ratio[n])) and np.max(stability[n]) <= 1.5),
        }
        for n in names
    }
    eligible = [n for n in names if scores[n]["eligible"]]
    best = min(eligible, key=lambda n: scores[n]["mean_log_ratio_vs_adam"]) if eligible else None
    for n in names:
        print(n, scores[n], flush=True)
    print("best:", best)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"steps": args.steps, "seeds": args.seeds, "scores": scores,
                       "final_losses": per_task, "best": best}, f, indent=2)


if __name__ == "__main__":
    main()
