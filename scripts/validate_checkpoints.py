"""Pick the meta-training checkpoint to ship on held-out validation tasks.

    python scripts/validate_checkpoints.py SNAPSHOT.eqx [...] --out record.json

Each θ file (and the untrained θ of the default preset, as `untrained`) trains
every task of `mnemosyne.meta.validation_tasks()` (configurations in neither the
meta-training distribution nor the evaluation suite) for `--steps` steps, and
every task of `mnemosyne.meta.stress_validation_tasks()` (deep narrow nets at
tiny batches, batch 512, Rosenbrock, a 2-layer LM) for its own 2,000-4,000
steps (`--no-stress` skips them), on `--seeds` seeds from `--first-seed`
(0), beside Adam(1e-3), all in one
program per task. The score of a θ is
the mean over tasks of log(final loss / Adam's final loss) (final loss: mean
over the last 5% of steps and over seeds, floored at 1e-6 as in the ablation,
since some runs reach exactly 0 in float32). A θ is ineligible if a run is
non-finite or *ruined*: it ends above 1.5x its own best window-mean loss
(`evaluation.stability_ratio`) and above Adam's final loss on that task (a
rise that still ends below Adam's loss, typically a fluctuation near zero
loss at tiny batches, is recorded as `literal_stability_failures` but does
not disqualify). Among eligible θ the most wins against Adam is best, ties
broken by the mean log ratio. The record lists every score.

`--probe` runs the generality probe (`mnemosyne.meta.probe_tasks()`: 16
configurations in none of those sets, each for its own 1,000-3,000 steps)
instead, with the same scores; `--probe 2` the second, blind one
(`mnemosyne.meta.second_probe_tasks()`: 24 configurations further out, 1,000-4,000
steps); `--probe 3` the third (`mnemosyne.meta.third_probe_tasks()`: 24 more,
1,500-8,000 steps), blind to the step multiplier's range chosen on the second;
`--probe 4` the fourth (`mnemosyne.meta.fourth_probe_tasks()`: 8 wider models,
up to 1.1 million parameters, 1,000-2,000 steps).
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
from mnemosyne.evaluation._ablation import LOSS_FLOOR
from mnemosyne.meta import (
    PRESETS,
    fourth_probe_tasks,
    probe_tasks,
    second_probe_tasks,
    stress_validation_tasks,
    third_probe_tasks,
    validation_tasks,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="*", help="θ files to compare")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=2, help="how many seeds")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="the first seed (a later range confirms a choice)")
    parser.add_argument("--no-stress", action="store_true",
                        help="skip stress_validation_tasks()")
    parser.add_argument("--preset", default="default",
                        help="preset whose untrained θ joins the candidates (default)")
    parser.add_argument("--probe", nargs="?", const="1", choices=["1", "2", "3", "4"],
                        help="a generality probe instead: 1 (the default when the "
                        "flag has no value) meta.probe_tasks(), 2 "
                        "meta.second_probe_tasks(), 3 meta.third_probe_tasks(), 4 "
                        "meta.fourth_probe_tasks()")
    parser.add_argument("--only", nargs="+", default=None, metavar="PART",
                        help="only the tasks whose name contains one of these")
    parser.add_argument("--out", default=None, help="JSON record to write")
    args = parser.parse_args()

    preset = PRESETS[args.preset]
    candidates = {
        "untrained": preset.untrained()
    }
    candidates.update({path: mnemosyne.load(path) for path in args.weights})
    names = list(candidates)
    # One program per task and θ structure: candidates of one structure (the
    # same constructor settings) are stacked on a leading axis, each run
    # picking its θ by index (passed where train_groups passes learning rates),
    # so Mnemosyne's step compiles once per structure whatever the candidate
    # count. Groups smaller than the largest repeat their last θ (padding runs,
    # not scored).
    groups = {}
    for n in names:
        groups.setdefault(jax.tree.structure(candidates[n]), []).append(n)
    groups = list(groups.values())
    width = max(len(g) for g in groups)
    factories, rows, lrs = [lambda lr: optax.adam(1e-3)], {}, [np.zeros(width)]
    for g in groups:
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *(candidates[n] for n in g))
        factories.append(
            lambda index, stacked=stacked: mnemosyne.as_gradient_transformation(
                jax.tree.map(lambda x: x[index.astype(jnp.int32)], stacked)
            )
        )
        lrs.append(np.minimum(np.arange(width), len(g) - 1))
        rows.update({n: (len(factories) - 1, i) for i, n in enumerate(g)})
    runs = width * args.seeds
    seeds = np.tile(
        np.arange(args.first_seed, args.first_seed + args.seeds, dtype=np.uint32), width
    )
    keys = jnp.broadcast_to(jax.vmap(jax.random.key)(seeds), (len(factories), runs))
    lrs = np.repeat(np.stack(lrs).astype(np.float64), args.seeds, axis=1)
    if args.probe:
        probes = {"1": probe_tasks, "2": second_probe_tasks, "3": third_probe_tasks,
                  "4": fourth_probe_tasks}
        tasks = probes[args.probe]()
    else:
        tasks = {n: (task, args.steps) for n, task in validation_tasks().items()}
        if not args.no_stress:
            tasks.update(stress_validation_tasks())
    if args.only:
        tasks = {n: t for n, t in tasks.items() if any(p in n for p in args.only)}
    per_task, scores = score_candidates(factories, lrs, keys, rows, tasks, args.seeds)
    eligible = [n for n in names if scores[n]["eligible"]]
    rank = lambda n: (-scores[n]["wins_vs_adam"], scores[n]["mean_log_ratio_vs_adam"])
    best = min(eligible, key=rank) if eligible else None
    for n in names:
        print(n, scores[n], flush=True)
    print("best:", best)
    if args.out:
        with open(args.out, "w") as f:
            record = {"steps": {name: steps for name, (_, steps) in tasks.items()},
                      "seeds": args.seeds, "first_seed": args.first_seed,
                      "scores": scores,
                      "final_losses": per_task, "best": best}
            json.dump(record, f, indent=2)


def score_candidates(factories, lrs, keys, rows, tasks, num_seeds: int):
    """Train `factories` (row 0: Adam(1e-3), the reference) on every task of
    `tasks` (`name -> (task, steps)`) in one program per task and score each
    candidate `name -> (row, i)` (its runs: `num_seeds` columns from `i *
    num_seeds` in that row) against Adam. Returns `(final losses per task,
    scores)`, printing each task's line as it finishes."""
    names = list(rows)
    log_ratio = {n: [] for n in names}
    stability = {n: [] for n in names}
    ruined = {n: [] for n in names}
    per_task = {}
    for task_name, (task, steps) in tasks.items():
        losses, _, _ = evaluation.train_groups(
            factories, task, lrs, keys, num_steps=steps
        )
        w = evaluation.window_size(steps)
        adam = max(losses[0, :num_seeds, -w:].mean(), LOSS_FLOOR)
        per_task[task_name] = {  # Adam's own worst run, for comparison
            "adam": float(adam),
            "adam stability": float(np.max(evaluation.stability_ratio(
                losses[0, :num_seeds]))),
        }
        for n in names:
            row, i = rows[n]
            mine = losses[row, i * num_seeds : (i + 1) * num_seeds]
            final = max(mine[:, -w:].mean(), LOSS_FLOOR)
            log_ratio[n].append(float(np.log(final / adam)))
            stability[n].append(float(np.max(evaluation.stability_ratio(mine))))
            if np.any(evaluation.ruined(mine, adam, floor=LOSS_FLOOR)):
                ruined[n].append(task_name)
            per_task[task_name][n] = float(final)
            per_task[task_name][f"{n} stability"] = stability[n][-1]
        print(
            task_name,
            {k: round(v, 5) for k, v in per_task[task_name].items()},
            flush=True,
        )
    scores = {
        n: {
            "mean_log_ratio_vs_adam": float(np.mean(log_ratio[n])),
            "wins_vs_adam": int(np.sum(np.asarray(log_ratio[n]) <= 0)),
            "worst_stability_ratio": float(np.max(stability[n])),
            "literal_stability_failures": int(np.sum(np.asarray(stability[n]) > 1.5)),
            "ruined_runs_on": ruined[n],
            "eligible": bool(np.all(np.isfinite(log_ratio[n])) and not ruined[n]),
        }
        for n in names
    }
    return per_task, scores


if __name__ == "__main__":
    main()
