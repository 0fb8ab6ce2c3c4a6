"""Memory ablation: what Mnemosyne's associative memory buys.

Every variant is a `CoordinatewiseMnemosyne` meta-trained with the `default`
preset's task distribution, estimator, trainer settings and seed, only fewer
outer steps (`dataclasses.replace(PRESETS["default"], make_lopt=...,
num_outer_steps=N)`), shipped by the preset's rule (iterate averaging over
the same fraction of the run, then the shrinkage toward the untrained θ), then
evaluated beside `optax.adam(1e-3)` on a fixed subset of the suite that
includes kinds held out of meta-training.

The "no memory" variant keeps the architecture but fixes the head's weights on
the memory read-out at zero (they start at zero and the outer optimizer zeroes
their meta-gradients), so the learned step is a function of the current
gradient, parameter and step embedding only. (The memory state is still
computed and stored; it is never read.)
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import numpy as np
import optax

from ..tasks import get_task
from ._evaluate import evaluate
from ._result import EvaluationResult, _jsonable

#: Tasks of the ablation: four kinds seen in meta-training, three held out.
ABLATION_TASKS: tuple[str, ...] = (
    "quadratic",
    "rosenbrock",
    "logreg_wine",
    "mlp_digits",
    "vit_digits",
    "lm_copy",
    "prompt_tuning",
)

#: Outer steps per variant (the shipped `default` weights take the preset's 600).
ABLATION_OUTER_STEPS: int = 100

#: Floor applied to final losses before taking ratios (some runs reach 0).
LOSS_FLOOR: float = 1e-6


@dataclasses.dataclass(frozen=True)
class AblationVariant:
    """One Mnemosyne configuration of the ablation.

    Attributes:
        name: short identifier (a column of the tables).
        description: what it is, in words.
        kwargs: keyword arguments of `CoordinatewiseMnemosyne` (besides `key`).
        read_out: `False` for the no-memory variant (head weights on the
            memory read-out fixed at zero).
        estimator: a meta-gradient estimator replacing the preset's (`None`:
            the preset's).
    """

    name: str
    description: str
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    read_out: bool = True
    estimator: Any = None

    def make_lopt(self, key):
        from .._lopt import CoordinatewiseMnemosyne

        lopt = CoordinatewiseMnemosyne(**self.kwargs, key=key)
        return lopt if self.read_out else _zero_read_out(lopt, _read_start(lopt))

    def floats_per_parameter(self) -> float:
        """State floats per parameter a dedicated implementation would need."""
        import jax

        if not self.read_out:
            return 0.0
        lopt = self.make_lopt(jax.random.key(0))
        return lopt.state_floats_per_parameter(
            {"w": jax.ShapeDtypeStruct((64, 64), "float32")}
        )


#: The variants: no memory; one head (the default, r = 2 random features);
#: three heads with discounts at time scales 10, 100 and 1000 steps; r = 4, 8.
ABLATION_VARIANTS: tuple[AblationVariant, ...] = (
    AblationVariant(
        "no_memory", "no memory read-out (head sees f and e only)", {}, False
    ),
    AblationVariant("h1_r2", "1 head, r=2, time scale 10 (the default)", {}),
    AblationVariant(
        "h3_r2",
        "3 heads, r=2, time scales 10/100/1000",
        {"num_heads": 3, "timescales": (10.0, 100.0, 1000.0)},
    ),
    AblationVariant("h1_r4", "1 head, r=4, time scale 10", {"num_features": 4}),
    AblationVariant("h1_r8", "1 head, r=8, time scale 10", {"num_features": 8}),
)


def design_variants() -> tuple[AblationVariant, ...]:
    """The v2 design ablation (issue: each choice justified): v2 as shipped
    (per-tensor step adaptation with its agreement threshold, read with the
    shipped floor), v2 without step adaptation (`v2_fixed_step`), v2 without
    the agreement threshold, v1's features and head, v2 without the sign
    symmetry, without the memory read-out, without the second-moment inputs,
    with no step embedding (a constant learned schedule), and v2 meta-trained by
    truncated BPTT instead of PES.

    Step adaptation reads the memory's momentum channel, which v1, the
    no-read-out and the no-second-moment variants do not have: they are
    fixed-step variants, to be compared with `v2_fixed_step`."""
    from ..meta import TruncatedBPTT
    from ..meta._presets import STEP_ADAPTATION_SETTINGS

    adaptive = dict(STEP_ADAPTATION_SETTINGS)
    return (
        AblationVariant("v2", "v2 as shipped (step adaptation, threshold)", adaptive),
        AblationVariant(
            "v2_fixed_step", "v2 without step adaptation (A1)-(A2)", {}
        ),
        AblationVariant(
            "v2_no_threshold",
            "v2 without the agreement threshold (a0 = 0)",
            adaptive | {"step_agreement_threshold": None},
        ),
        AblationVariant(
            "v1",
            "v1 features and head (no second moment, alpha 1e-2, c 4), fixed step",
            {
                "second_moment_decay": None,
                "alpha": 1e-2,
                "magnitude_clip": 4.0,
                "direction_clip": None,
                "step_timescales": (10.0, 100.0, 1000.0),
                "sign_symmetric": False,
            },
        ),
        AblationVariant(
            "v2_asymmetric",
            "v2 without the sign symmetry (H±), (2±)",
            adaptive | {"sign_symmetric": False},
        ),
        AblationVariant(
            "v2_no_read_out",
            "v2 without the memory read-out, fixed step",
            {"read_out": False},
        ),
        AblationVariant(
            "v2_no_second_moment",
            "v2 without the second-moment inputs, fixed step",
            {"second_moment_decay": None},
        ),
        AblationVariant(
            "v2_constant_schedule",
            "v2 without the step embedding",
            adaptive | {"step_timescales": ()},
        ),
        AblationVariant(
            "v2_bptt",
            "v2 meta-trained by truncated BPTT",
            adaptive,
            estimator=TruncatedBPTT(stop_gradient_features=True),
        ),
    )


def _read_start(lopt) -> int:
    """First column of the head's input that is the memory read-out."""
    return lopt.head.w1.shape[1] - lopt.memory.num_heads * lopt.memory.value_size


def _zero_read_out(tree, start: int):
    """`tree` (a Mnemosyne or its meta-gradient), head read-out columns set to 0."""
    return eqx.tree_at(
        lambda m: (m.head.w1, m.head.skip),
        tree,
        replace_fn=lambda w: w.at[:, start:].set(0.0),
    )


class _NoReadOutOuterOptimizer(eqx.Module):
    """The preset's outer optimizer with the read-out columns' meta-gradients
    zeroed first (so those weights stay exactly 0). Hashable by value."""

    inner: Any
    start: int = eqx.field(static=True)

    def init(self, params):
        return self.inner.init(params)

    def update(self, updates, state, params=None):
        return self.inner.update(_zero_read_out(updates, self.start), state, params)


def variant_preset(variant: AblationVariant, preset, num_outer_steps: int):
    """`preset` with the variant's constructor, estimator (if any) and
    `num_outer_steps`; a variant without step adaptation is read as trained
    (`read_with=None`: it has no multiplier to re-read)."""
    changes = dict(
        name=f"ablation_{variant.name}",
        make_lopt=variant.make_lopt,
        lopt_description=f"CoordinatewiseMnemosyne(**{dict(variant.kwargs)!r})",
        num_outer_steps=num_outer_steps,
    )
    if variant.estimator is not None:
        changes["estimator"] = variant.estimator
    if variant.kwargs.get("step_adaptation") is None:
        changes["read_with"] = None
    return dataclasses.replace(preset, **changes)


def _meta_train(
    variant: AblationVariant,
    preset_name: str,
    num_outer_steps: int,
    checkpoint_dir,
    progress,
):
    """Meta-train one variant exactly as `train_preset(preset_name)` does, with
    its own constructor and `num_outer_steps` outer steps, and ship θ by the
    preset's rule (iterate averaging over the same fraction of the run, then the
    shrinkage; `run_recipe`); resumes from `checkpoint_dir`."""
    import jax

    from ..meta import PRESETS, MetaTrainer
    from ..meta._presets import run_recipe
    from ..meta._trainer import _DefaultOuterOptimizer

    preset = variant_preset(variant, PRESETS[preset_name], num_outer_steps)
    k_lopt, k_train = jax.random.split(jax.random.key(preset.seed))
    lopt = preset.make_lopt(k_lopt)
    outer = None
    if not variant.read_out:
        settings = preset.trainer
        outer = _NoReadOutOuterOptimizer(
            _DefaultOuterOptimizer(
                float(settings.get("learning_rate", 1e-3)),
                float(settings.get("max_grad_norm", 1.0)),
            ),
            _read_start(lopt),
        )
    trainer = MetaTrainer(
        lopt,
        preset.family,
        preset.estimator,
        checkpoint_dir=checkpoint_dir,
        key=k_train,
        outer_optimizer=outer,
        **preset.trainer,
    )
    start = time.perf_counter()
    lopt, history = run_recipe(trainer, preset, num_outer_steps, progress=progress)
    return lopt, history, time.perf_counter() - start, preset.config()


def _geo_mean_ratio(a: dict[str, float], b: dict[str, float], tasks) -> float:
    """Geometric mean over `tasks` of `max(a, floor) / max(b, floor)`."""
    logs = []
    for t in tasks:
        x, y = a[t], b[t]
        if not (math.isfinite(x) and math.isfinite(y)):
            return math.inf if not math.isfinite(x) else 0.0
        logs.append(math.log(max(x, LOSS_FLOOR) / max(y, LOSS_FLOOR)))
    return math.exp(float(np.mean(logs))) if logs else math.nan


def summarize_ablation(
    result: EvaluationResult,
    variants: Sequence[AblationVariant],
    training: dict[str, dict],
    *,
    baseline: str = "h1_r2",
    held_out_kinds=None,
) -> list[dict]:
    """One row per variant: cost, meta-training, and final losses relative to
    `baseline` and to Adam (geometric means over tasks; also split into kinds
    seen in meta-training and held-out kinds)."""
    from ..tasks import HELD_OUT_KINDS

    held_out_kinds = HELD_OUT_KINDS if held_out_kinds is None else held_out_kinds
    kinds = {t: get_task(t).kind for t in result.tasks}
    seen = [t for t in result.tasks if kinds[t] not in held_out_kinds]
    held = [t for t in result.tasks if kinds[t] in held_out_kinds]
    finals = {o: result.final_losses(o) for o in result.optimizers}
    base = baseline if baseline in finals else None
    rows = []
    for v in variants:
        f = finals[v.name]
        cmp = result.compare("adam", v.name) if "adam" in finals else None
        rows.append(
            {
                "variant": v.name,
                "description": v.description,
                "floats_per_parameter": v.floats_per_parameter(),
                **training.get(v.name, {}),
                "vs_baseline_all": _geo_mean_ratio(f, finals[base], result.tasks)
                if base
                else None,
                "vs_baseline_seen": _geo_mean_ratio(f, finals[base], seen)
                if base
                else None,
                "vs_baseline_held_out": _geo_mean_ratio(f, finals[base], held)
                if base
                else None,
                "vs_adam_all": _geo_mean_ratio(f, finals["adam"], result.tasks)
                if cmp
                else None,
                "wins_vs_adam": cmp.wins if cmp else None,
                "num_tasks": len(result.tasks),
            }
        )
    return rows


def _summary_markdown(rows, baseline, steps) -> str:
    fmt = lambda x: "–" if x is None else f"{x:.3g}"
    lines = [
        f"| variant | state floats / param | meta-train s | final meta-loss | "
        f"loss / {baseline} (all) | seen kinds | held-out kinds | loss / adam | "
        "wins vs adam |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']}: {r['description']} | {r['floats_per_parameter']:g} | "
            f"{fmt(r.get('wall_time_s'))} | {fmt(r.get('final_meta_loss'))} | "
            f"{fmt(r['vs_baseline_all'])} | {fmt(r['vs_baseline_seen'])} | "
            f"{fmt(r['vs_baseline_held_out'])} | {fmt(r['vs_adam_all'])} | "
            f"{r['wins_vs_adam']}/{r['num_tasks']} |"
        )
    return "\n".join(lines) + "\n"


def plot_ablation(
    result: EvaluationResult, histories: dict[str, dict], rows, baseline: str = "h1_r2"
):
    """Left: meta-training, each variant's meta-loss minus `baseline`'s at the
    same outer step (every variant sees the same task sequence, so the
    difference is not the task's difficulty), running mean over 10 steps.
    Right: per task, final loss of each variant relative to Adam (log scale)."""
    from ._plots import _figure

    fig = _figure(13.0, 4.6)
    ax_meta, ax_rel = fig.subplots(1, 2, width_ratios=[1, 1.6])
    base = np.asarray(histories.get(baseline, {}).get("meta_loss", []), float)
    for name, h in histories.items():
        loss = np.asarray(h["meta_loss"], float)
        n = min(len(loss), len(base))
        if n == 0:
            continue
        diff = loss[:n] - base[:n]
        w = min(10, n)
        smooth = np.convolve(np.nan_to_num(diff), np.ones(w) / w, "valid")
        ax_meta.plot(np.arange(w - 1, n), smooth, label=name)
    ax_meta.axhline(0.0, color="k", lw=0.8)
    ax_meta.set_xlabel("outer step")
    ax_meta.set_ylabel(f"meta-loss − {baseline}'s (running mean of 10)")
    ax_meta.set_title("meta-training (lower is better)")
    ax_meta.grid(alpha=0.3)
    ax_meta.legend(fontsize=8)

    variants = [r["variant"] for r in rows]
    adam = result.final_losses("adam")
    width = 0.8 / max(1, len(variants))
    x = np.arange(len(result.tasks))
    for i, name in enumerate(variants):
        f = result.final_losses(name)
        ratio = [
            max(f[t], LOSS_FLOOR) / max(adam[t], LOSS_FLOOR)
            if math.isfinite(f[t])
            else np.nan
            for t in result.tasks
        ]
        ax_rel.bar(x + (i - (len(variants) - 1) / 2) * width, ratio, width, label=name)
    ax_rel.axhline(1.0, color="k", lw=0.8)
    ax_rel.set_yscale("log")
    ax_rel.set_xticks(x, result.tasks, rotation=30, ha="right", fontsize=8)
    ax_rel.set_ylabel("final loss / adam(1e-3) (lower is better)")
    ax_rel.set_title(
        f"evaluation ({len(result.seeds)} seeds, {result.num_steps} steps)"
    )
    ax_rel.grid(alpha=0.3, axis="y")
    ax_rel.legend(fontsize=8, ncols=2)
    return fig


def memory_ablation(
    out_dir,
    *,
    variants: Sequence[AblationVariant] = ABLATION_VARIANTS,
    num_outer_steps: int = ABLATION_OUTER_STEPS,
    tasks: Sequence[str] = ABLATION_TASKS,
    seeds: Sequence[int] = (0, 1),
    num_steps: int = 300,
    preset: str = "default",
    progress: bool = True,
    title: str = "Memory ablation",
) -> dict:
    """Meta-train every variant with the same reduced budget, evaluate them beside
    `optax.adam(1e-3)`, and write the outputs.

    Writes into `out_dir`: `ablation.md` (summary and per-task tables),
    `ablation.json` (settings, summary, meta-training histories, the full
    evaluation), `ablation.png`, and per variant `<name>.eqx` (the trained
    weights) and `checkpoints/<name>/` (so an interrupted run resumes).

    Args:
        out_dir: output folder (created).
        variants: the [`AblationVariant`][mnemosyne.evaluation.AblationVariant]s.
        num_outer_steps: meta-training outer steps per variant.
        tasks: evaluation tasks.
        seeds: evaluation seeds.
        num_steps: training steps per evaluation run.
        preset: the meta-training preset the variants follow (`"quick"` for a
            seconds-long smoke run).
        progress: progress bars.
        title: the heading of `ablation.md`.

    Returns:
        The dict written to `ablation.json`.
    """
    from .._serialisation import save
    from .._transform import mnemosyne
    from ..meta import PRESETS

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    lopts, histories, training, config = {}, {}, {}, None
    for v in variants:
        record_path = out / f"{v.name}.json"
        earlier = json.loads(record_path.read_text()) if record_path.exists() else {}
        lopt, history, wall, config = _meta_train(
            v, preset, num_outer_steps, out / "checkpoints" / v.name, progress
        )
        if earlier.get("config") == _jsonable(config) and earlier.get(
            "num_outer_steps"
        ) == len(history["step"]):
            wall = earlier[
                "wall_time_s"
            ]  # finished earlier; resumed from its checkpoint
        save(out / f"{v.name}.eqx", lopt)
        losses = [x for x in history["meta_loss"] if math.isfinite(x)]
        tail = losses[-max(1, len(losses) // 10) :]
        lopts[v.name], histories[v.name] = lopt, history
        training[v.name] = {
            "wall_time_s": round(wall, 1),
            "final_meta_loss": float(np.mean(tail)) if tail else None,
            "skipped_steps": int(np.sum(history["skipped"])),
        }
        record_path.write_text(
            json.dumps(
                _jsonable(
                    {
                        "config": config,
                        "num_outer_steps": len(history["step"]),
                        **training[v.name],
                    }
                )
            )
        )
    meta_wall = time.perf_counter() - start
    optimizers = {v.name: mnemosyne(lopt=lopts[v.name]) for v in variants}
    optimizers["adam"] = optax.adam(1e-3)
    result = evaluate(
        optimizers,
        list(tasks),
        seeds=seeds,
        num_steps=num_steps,
        reference="adam",
        measure_cost=False,
        progress=progress,
    )
    wall = time.perf_counter() - start
    baseline = "h1_r2" if any(v.name == "h1_r2" for v in variants) else variants[0].name
    rows = summarize_ablation(
        result, variants, training, baseline=baseline,
        held_out_kinds=PRESETS[preset].held_out_kinds,
    )
    md = [
        f"### {title} ({num_outer_steps} outer steps of the `{preset}` preset "
        f"per variant; {len(seeds)} seeds, {num_steps} steps; geometric means of "
        f"final-loss ratios, losses floored at {LOSS_FLOOR:g})",
        "",
        _summary_markdown(rows, baseline, num_steps),
        result.to_markdown(),
        f"Wall time of this run: {wall:.0f} s ({meta_wall:.0f} s of it meta-training; "
        f"the variants' recorded meta-training times sum to "
        f"{sum(t['wall_time_s'] for t in training.values()):.0f} s).",
    ]
    (out / "ablation.md").write_text("\n".join(md) + "\n")
    record = _jsonable(
        {
            "preset": preset,
            "preset_config": config,
            "num_outer_steps": num_outer_steps,
            "variants": [dataclasses.asdict(v) for v in variants],
            "summary": rows,
            "histories": {
                k: {kk: list(vv) for kk, vv in h.items()} for k, h in histories.items()
            },
            "wall_time_s": round(wall, 1),
            "meta_training_wall_time_s": round(meta_wall, 1),
            "evaluation": result.to_dict(),
        }
    )
    (out / "ablation.json").write_text(json.dumps(record, indent=1, allow_nan=False))
    plot_ablation(result, histories, rows, baseline).savefig(
        out / "ablation.png", dpi=110
    )
    return record
