"""The README's table: pretrained Mnemosyne against Adam(1e-3) and grid-tuned
Adam on every suite task, from the result of the documented suite command
(`mnemosyne evaluate ... --out results_out`, see docs/results.md).

    python scripts/headline_table.py docs/results_suite/results.json

Prints Markdown; `tests/test_docs.py` checks that the README holds exactly
this output for the committed result, so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

from mnemosyne.evaluation import EvaluationResult, stability_ratio

WEIGHTS_RECORD = (
    pathlib.Path(__file__).parents[1] / "mnemosyne" / "weights" / "default.eqx.json"
)


def _number(x: float) -> str:
    return "0" if x == 0 else f"{x:.3g}"


def headline_table(result: EvaluationResult, record: dict) -> str:
    held_out = set(record["held_out_kinds"])
    tuning = result.tuning.get("adam_tuned", {})
    lines = [
        "| task | kind | Adam 1e-3 | **Mnemosyne** (no tuning) | tuned Adam (learning "
        "rate) |",
        "|---|---|---|---|---|",
    ]
    for task in result.tasks:
        kind = result.kinds.get(task, "")
        losses = {
            o: result.stats(o, task).final_loss_mean
            for o in ("adam", "mnemosyne", "adam_tuned")
        }
        best = min(losses.values())

        def cell(o, losses=losses, best=best):
            number = _number(losses[o])
            return f"**{number}**" if losses[o] == best else number

        lr = tuning.get(task, {}).get("learning_rate")
        lr = "" if lr is None else f" ({lr:.3g})"
        label = f"{kind} (held out)" if kind in held_out else kind
        lines.append(
            f"| {task} | {label} | {cell('adam')} | {cell('mnemosyne')} | "
            f"{cell('adam_tuned')}{lr} |"
        )
    n = len(result.tasks)
    vs_adam, vs_tuned = result.compare("adam"), result.compare("adam_tuned")
    lines += ["", *target_table(result)]
    lines += [
        "",
        f"Mean final training loss over seeds {', '.join(map(str, result.seeds))} "
        f"after {result.num_steps} steps (lowest in bold). Mnemosyne's loss is at most "
        f"Adam(1e-3)'s on **{vs_adam.wins} of {n}** tasks, at most tuned Adam's on "
        f"**{vs_tuned.wins} of {n}**, within 10% of tuned Adam's on "
        f"{vs_tuned.within_10pct} "
        f"of {n}. "
        f"Held out of meta-training: {', '.join(sorted(held_out))}. Meta-training of "
        f"the shipped weights: {record['wall_time_s']:.0f} s on 2 CPU cores "
        f"({record['num_outer_steps']} outer steps, preset `{record['preset']}`).",
    ]
    return "\n".join(lines) + "\n"


def target_table(result: EvaluationResult) -> list[str]:
    """The design targets, counted on `result`: final loss against Adam(1e-3),
    grid-tuned Adam and the LSTM optimizer, and the stability rule on every
    run (final window-mean loss at most 1.5x the run's best window, no NaN)."""
    n = len(result.tasks)
    ours = result.final_losses("mnemosyne")
    tuned = result.final_losses("adam_tuned")
    within_2x = sum(ours[t] <= 2 * tuned[t] for t in result.tasks)
    runs = [result.runs["mnemosyne"][t].losses for t in result.tasks]
    ratios = np.concatenate([stability_ratio(np.asarray(r)) for r in runs])
    stable = int(np.sum(ratios <= 1.5))
    worst = max(
        zip(
            result.tasks,
            [float(np.max(stability_ratio(np.asarray(r)))) for r in runs],
            strict=False,
        ),
        key=lambda x: x[1],
    )
    pct = lambda k, m: f"**{k} of {m}** ({100 * k / m:.0f}%)"
    rows = [
        "| target | measured | goal |",
        "|---|---|---|",
        f"| final loss <= Adam(1e-3)'s | {pct(result.compare('adam').wins, n)} | >= "
        "90% |",
        f"| final loss <= 2x grid-tuned Adam's | {pct(within_2x, n)} | >= 75% |",
        "| final loss <= grid-tuned Adam's | "
        f"{pct(result.compare('adam_tuned').wins, n)} | >= 35% |",
    ]
    lstms = {
        "lstm": "the LSTM optimizer's (v1 recipe, `lstm`)",
        "lstm_v2": "the LSTM optimizer's (same recipe and budget, `lstm_v2`)",
    }
    for name, label in lstms.items():
        if name in result.optimizers:
            rows.append(
                f"| final loss <= {label} | {pct(result.compare(name).wins, n)} "
                "| >= 75% |"
            )
    rows.append(
        f"| runs ending <= 1.5x their best window, no NaN | {pct(stable, len(ratios))} "
        f"(worst: {worst[0]}, {worst[1]:.2f}x) | 100% |"
    )
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="results.json written by `mnemosyne evaluate`")
    args = parser.parse_args(argv)
    record = json.loads(WEIGHTS_RECORD.read_text())
    print(headline_table(EvaluationResult.load(args.results), record), end="")


if __name__ == "__main__":
    main()
