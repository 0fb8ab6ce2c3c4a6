"""Time and memory against quality for the memory-ablation variants (no asv needed).

    python benchmarks/tradeoff.py [--ablation docs/results_ablation/ablation.json] [--size 1e6]

For each variant of `mnemosyne ablation` (no memory; 1 or 3 heads; r = 2, 4,
8 random features): its state floats per parameter, its update+apply time
relative to `optax.adam` on the benchmark pytree (measured here, interleaved;
the time depends on the configuration, not on the weights, so untrained
modules are timed), and, from the ablation's JSON, its final loss relative
to the default variant (geometric mean over the ablation's tasks).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as c  # noqa: E402
import mnemosyne  # noqa: E402
from mnemosyne.evaluation import ABLATION_VARIANTS  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ablation", default="docs/results_ablation/ablation.json")
    parser.add_argument("--size", type=float, default=1e6)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)

    quality = {}
    if os.path.exists(args.ablation):
        with open(args.ablation) as f:
            quality = {row["variant"]: row for row in json.load(f)["summary"]}
    size = int(args.size)
    runners = {"adam": c.UpdateRunner("adam", size)}
    for variant in ABLATION_VARIANTS:
        tx = mnemosyne.scale_by_mnemosyne(variant.make_lopt(jax.random.key(0)))
        runners[variant.name] = c.UpdateRunner(variant.name, size, tx=tx)
    times = c.interleaved_times(runners, repeats=args.repeats, number=c.auto_number(runners["adam"]))

    print(f"| variant | state floats / param | update / Adam ({args.size:.0e} params) "
          "| final loss / default | meta-loss |")
    print("|---|---|---|---|---|")
    for variant in ABLATION_VARIANTS:
        row = quality.get(variant.name, {})
        loss = f"{row['vs_baseline_all']:.3g}" if row else "–"
        meta = f"{row['final_meta_loss']:.3g}" if row else "–"
        print(f"| {variant.name}: {variant.description} | {variant.floats_per_parameter():g} "
              f"| {times[variant.name] / times['adam']:.2f}x | {loss} | {meta} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
