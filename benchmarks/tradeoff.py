"""Time and memory against quality for the memory-ablation variants (no asv needed).

    python benchmarks/tradeoff.py [--ablation docs/results_ablation/ablation.json]
    [--size 1e6]

For each variant of `mnemosyne ablation` (no memory; 1 or 3 heads; r = 2, 4,
8 random features): its state floats per parameter, its update+apply time
relative to `optax.adam` on the benchmark pytree (measured here, interleaved;
the time depends on the configuration, not on the weights, so untrained
modules are timed), and, from the ablation's JSON, its final loss relative
to the default variant (geometric mean over the ablation's tasks, and over
its held-out Transformer tasks alone). A last row
times the default's features and head alone, the cost floor of the update
without any memory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as c  # noqa: E402

import mnemosyne  # noqa: E402
from mnemosyne.backends import get_backend  # noqa: E402
from mnemosyne.evaluation import ABLATION_VARIANTS  # noqa: E402

WITHOUT_MEMORY = "features_and_head"


def features_and_head_only(lopt) -> optax.GradientTransformation:
    """The step of `lopt` without its memory: features (F) and head (H, O) on
    a zero read-out, no state, at step 0 (times its warm-up factor, Eq. (W),
    if it has one). The ablation's no-memory variant runs the
    default program with zero read-out weights (XLA does not know they are
    zero), so only this program measures what the update costs without the
    memory."""
    B = get_backend("jax")
    width = lopt.memory.num_heads * lopt.memory.value_size

    def leaf_step(grad, param):
        nu = None  # v2: the second moment after this (first) gradient
        if lopt.second_moment_decay is not None:
            nu = B.second_moment(jnp.zeros_like(grad), grad, lopt.second_moment_decay)
        step = jnp.zeros((), jnp.int32)
        f, e, _ = lopt.features(grad, param, step, B, second_moment=nu)
        update = -lopt.head(f, e, [jnp.zeros_like(grad)] * width, B)
        return lopt._warmed_up(update, step, B)  # Eq. (W), as `_leaf_step`

    def update(grads, state, params=None):
        return jax.tree.map(leaf_step, grads, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ablation", default="docs/results_ablation_v1/ablation.json")
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
    default = mnemosyne.pretrained("default")
    runners[WITHOUT_MEMORY] = c.UpdateRunner(
        WITHOUT_MEMORY, size, tx=features_and_head_only(default)
    )
    times = c.interleaved_times(
        runners, repeats=args.repeats, number=c.auto_number(runners["adam"])
    )

    print(f"| variant | state floats / param | update / Adam ({args.size:.0e} params) "
          "| final loss / default | held-out tasks: final loss / default | meta-loss |")
    print("|---|---|---|---|---|---|")
    for variant in ABLATION_VARIANTS:
        row = quality.get(variant.name, {})
        loss, held_out, meta = (
            (f"{row['vs_baseline_all']:.3g}", f"{row['vs_baseline_held_out']:.3g}",
             f"{row['final_meta_loss']:.3g}") if row else ("–", "–", "–")
        )
        print(
            f"| {variant.name}: {variant.description} | "
            f"{variant.floats_per_parameter():g} "
            f"| {times[variant.name] / times['adam']:.2f}x | {loss} | {held_out} | "
            f"{meta} |"
        )
    print(
        f"| {WITHOUT_MEMORY}: the default's features and head alone, no memory (a "
        "dedicated "
        f"program, timing only) | 0 | {times[WITHOUT_MEMORY] / times['adam']:.2f}x | – "
        "| – | – |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
