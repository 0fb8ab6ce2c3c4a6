"""What a learned θ does beside its untrained θ₀, measured on the same gradients.

    python scripts/effective_step.py [WEIGHTS.eqx ...] --out record.json

The untrained θ₀ of the default preset is momentum on Adam-normalised
gradients with step 1e-3 (close to `optax.adam(1e-3)`). Each θ (default: the
shipped `mnemosyne/weights/default.eqx`) trains every task of
`mnemosyne.meta.validation_tasks()` (1,000 steps) and
`stress_validation_tasks()` (their own 2,000-4,000 steps) on seed 0; at every
step θ₀'s update for the same gradient is computed from its own state (fed
the same gradients, never applied: `evaluation.compare_updates`). Per
quarter of each run it prints the median ratio of the update RMS to θ₀'s (an
effective learning-rate multiplier) and the median cosine. A cosine near 1
with a near-constant ratio means the learned rule acts as Adam-like momentum
at a larger or smaller step size.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

import mnemosyne
from mnemosyne import evaluation
from mnemosyne.meta import PRESETS, stress_validation_tasks, validation_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="*", default=["mnemosyne/weights/default.eqx"])
    parser.add_argument("--steps", type=int, default=1000,
                        help="steps of the validation tasks")
    parser.add_argument("--out", default=None, help="JSON record to write")
    args = parser.parse_args()
    preset = PRESETS["default"]
    theta0 = preset.untrained()
    reference = mnemosyne.as_gradient_transformation(theta0)
    tasks = {name: (task, args.steps) for name, task in validation_tasks().items()}
    tasks.update(stress_validation_tasks())
    record = {}
    print("| θ | task | ratio by quarter | cosine by quarter |")
    print("|---|---|---|---|")
    for path in args.weights:
        tx = mnemosyne.as_gradient_transformation(mnemosyne.load(path))
        record[path] = {}
        for name, (task, steps) in tasks.items():
            c = evaluation.compare_updates(tx, reference, task, num_steps=steps)
            quarters = np.array_split(np.arange(steps), 4)
            ratio = [float(np.median(c.ratio[q])) for q in quarters]
            cos = [float(np.median(c.cosine[q])) for q in quarters]
            record[path][name] = {"ratio": ratio, "cosine": cos}
            fmt = lambda xs: " / ".join(f"{x:.2f}" for x in xs)
            print(f"| {path} | {name} | {fmt(ratio)} | {fmt(cos)} |", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(record, f, indent=2)


if __name__ == "__main__":
    main()
