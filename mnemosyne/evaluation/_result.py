"""`EvaluationResult`: raw curves, statistics on demand, markdown, JSON and plots."""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Any, NamedTuple

import numpy as np

from ._stats import (
    Comparison,
    RunStats,
    compare_final_losses,
    default_target,
    summarize,
)

#: Task kinds that are Transformers (reported in their own table).
TRANSFORMER_KINDS: frozenset[str] = frozenset({"vit", "lm", "mlm", "prompt"})


def _registered_kind(task: str) -> str:
    """The kind of a registered task (`""` for a name that is not registered)."""
    from ..tasks import get_task, list_tasks

    return get_task(task).kind if task in list_tasks() else ""


class Run(NamedTuple):
    """Raw outcome of one (optimizer, task) pair over seeds.

    Attributes:
        losses: `(num_seeds, num_steps)` training (minibatch) losses;
            `losses[s, t]` is at the iterate after `t` updates.
        eval_steps: the update counts at which the held-out batch was evaluated.
        test_losses: `(num_seeds, len(eval_steps))` held-out losses, or `None`.
        accuracies: `(num_seeds, len(eval_steps))` held-out accuracies, or `None`.
        learning_rate: the tuned learning rate for `*_tuned` optimizers, else `None`.
    """

    losses: np.ndarray
    eval_steps: tuple[int, ...] = ()
    test_losses: np.ndarray | None = None
    accuracies: np.ndarray | None = None
    learning_rate: float | None = None


def _fmt(x: float | None, std: float | None = None) -> str:
    if x is None:
        return "–"
    s = f"{x:.3g}"
    return s if std is None else f"{s} ± {std:.2g}"


def _jsonable(x: Any) -> Any:
    """NumPy arrays to lists; non-finite floats to `None` (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _array(x) -> np.ndarray | None:
    return None if x is None else np.array(x, dtype=np.float64)  # None entries -> nan


@dataclasses.dataclass
class EvaluationResult:
    """The outcome of [`evaluate`][mnemosyne.evaluation.evaluate].

    Raw per-seed curves are kept in `runs[optimizer][task]`; statistics are
    computed from them on demand by `stats`, so a result can be built by hand
    (or loaded from `results.json`) and summarised the same way.

    Attributes:
        optimizers: optimizer names, in column order.
        tasks: task names, in row order.
        seeds: the seeds run.
        num_steps: steps per run.
        runs: optimizer -> task -> [`Run`][mnemosyne.evaluation.Run].
        reference: the optimizer others are compared with (default `"adam"`).
        user_targets: task -> loss target given by the user.
        cost: optimizer -> `{"floats_per_parameter", "time_per_step_s",
            "time_vs_adam"}` measured on `cost_task` (empty if not measured).
        cost_task: the task (the one with most parameters) the costs were measured on.
        kinds: task -> kind (`"mlp"`, `"vit"`, ...); Transformer kinds
            ([`TRANSFORMER_KINDS`][mnemosyne.evaluation.TRANSFORMER_KINDS]) get
            their own table and win counts.
        tuning: for `*_tuned` optimizers, optimizer -> task -> `{"seed",
            "grid", "scores", "learning_rate"}` (the tuning runs' scores per
            grid point, `inf` where diverged).
    """

    optimizers: list[str]
    tasks: list[str]
    seeds: tuple[int, ...]
    num_steps: int
    runs: dict[str, dict[str, Run]]
    reference: str = "adam"
    user_targets: dict[str, float] = dataclasses.field(default_factory=dict)
    cost: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    cost_task: str | None = None
    kinds: dict[str, str] = dataclasses.field(default_factory=dict)
    tuning: dict[str, dict[str, dict]] = dataclasses.field(default_factory=dict)

    # ------------------------------------------------------------------ stats

    def transformer_tasks(self) -> list[str]:
        """The tasks whose kind is in `TRANSFORMER_KINDS`, in row order."""
        return [t for t in self.tasks if self.kinds.get(t) in TRANSFORMER_KINDS]

    def target(self, task: str) -> float | None:
        """The steps-to-target loss for `task`: the user's, else the reference's
        mean final loss plus 5% (`None` if there is no reference or it diverged)."""
        if task in self.user_targets:
            return float(self.user_targets[task])
        if self.reference not in self.runs:
            return None
        return default_target(
            summarize(self.runs[self.reference][task].losses).final_loss_mean
        )

    def stats(self, optimizer: str, task: str) -> RunStats:
        """[`RunStats`][mnemosyne.evaluation.RunStats] of one pair."""
        run = self.runs[optimizer][task]
        last = lambda a: None if a is None else a[:, -1]
        return summarize(
            run.losses,
            target=self.target(task),
            test_loss=last(run.test_losses),
            accuracy=last(run.accuracies),
        )

    def final_losses(self, optimizer: str) -> dict[str, float]:
        """task -> mean final loss of `optimizer` (`inf` if any seed diverged)."""
        return {t: self.stats(optimizer, t).final_loss_mean for t in self.tasks}

    def compare(
        self,
        reference: str | None = None,
        candidate: str = "mnemosyne",
        tasks: list[str] | None = None,
    ) -> Comparison:
        """Head-to-head final losses on `tasks` (default: all); see
        [`compare`][mnemosyne.evaluation.compare]."""
        reference = reference or self.reference
        keep = set(self.tasks if tasks is None else tasks)
        pick = lambda o: {t: v for t, v in self.final_losses(o).items() if t in keep}
        return compare_final_losses(
            pick(candidate), pick(reference), candidate=candidate, reference=reference
        )

    # ----------------------------------------------------------------- output

    def _loss_table(self, tasks: list[str], title: str) -> list[str]:
        n = len(self.seeds)
        lines = [
            f"### {title} (mean ± std over {n} seeds, last 5% of "
            f"{self.num_steps} steps; best in bold)",
            "",
            "| task | " + " | ".join(self.optimizers) + " |",
            "|---|" + "---|" * len(self.optimizers),
        ]
        for task in tasks:
            stats = {o: self.stats(o, task) for o in self.optimizers}
            best = min(s.final_loss_mean for s in stats.values())
            cells = []
            for s in stats.values():
                if s.num_diverged:
                    cells.append(f"diverged ({s.num_diverged}/{n})")
                    continue
                cell = _fmt(s.final_loss_mean, s.final_loss_std)
                cells.append(f"**{cell}**" if s.final_loss_mean == best else cell)
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
        return lines

    def _wins_table(self, references: list[str]) -> list[str]:
        transformer = self.transformer_tasks()
        other = [t for t in self.tasks if t not in transformer]
        groups = [("all", self.tasks), ("Transformer", transformer), ("other", other)]
        groups = [(g, ts) for g, ts in groups if ts]
        head = [f"vs {r}: {g} ({len(ts)})" for r in references for g, ts in groups]
        lines = [
            "### Wins / losses (final training loss, candidate <= reference is a win)",
            "",
            "| optimizer | " + " | ".join(head) + " |",
            "|---|" + "---|" * len(head),
        ]
        for o in self.optimizers:
            cells = []
            for r in references:
                for _, ts in groups:
                    if o == r:
                        cells.append("–")
                        continue
                    c = self.compare(r, o, ts)
                    cells.append(f"{c.wins}/{c.losses}")
            lines.append(f"| {o} | " + " | ".join(cells) + " |")
        return lines

    def _tuning_table(self) -> list[str]:
        tuned = [o for o in self.optimizers if self.tuning.get(o)]
        if not tuned:
            return []
        seeds = sorted({d["seed"] for o in tuned for d in self.tuning[o].values()})
        lines = [
            "### Tuned learning rates (grid search on seed "
            f"{', '.join(map(str, seeds))}, not an evaluation seed; "
            "* marks an edge of the grid)",
            "",
            "| task | " + " | ".join(tuned) + " |",
            "|---|" + "---|" * len(tuned),
        ]
        for task in self.tasks:
            cells = []
            for o in tuned:
                d = self.tuning[o].get(task)
                if d is None:
                    cells.append("–")
                    continue
                lr, grid = d["learning_rate"], d["grid"]
                edge = "*" if lr in (min(grid), max(grid)) else ""
                cells.append(f"{lr:.3g}{edge}")
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
        return lines

    def to_markdown(self, reference: str | None = None) -> str:
        """Markdown tables: final training loss (mean ± std over seeds, best per
        task in bold; Transformer tasks in a separate table), held-out accuracy
        where defined, the tuned learning rates, optimizer cost, wins/losses of
        every optimizer against `reference` and (if present) `adam_tuned`, split
        into Transformer and other tasks, and one summary line per optimizer."""
        reference = reference or self.reference
        transformer = self.transformer_tasks()
        other = [t for t in self.tasks if t not in transformer]
        lines = []
        if other and transformer:
            lines += self._loss_table(
                other, "Final training loss, non-Transformer tasks"
            )
            lines += [""]
            lines += self._loss_table(
                transformer, "Final training loss, Transformer tasks"
            )
        else:
            lines += self._loss_table(self.tasks, "Final training loss")
        header = "| task | " + " | ".join(self.optimizers) + " |"
        rule = "|---|" + "---|" * len(self.optimizers)
        acc_rows = []
        for task in self.tasks:
            stats = [self.stats(o, task) for o in self.optimizers]
            if any(s.accuracy_mean is not None for s in stats):
                accs = [_fmt(s.accuracy_mean, s.accuracy_std) for s in stats]
                acc_rows.append(f"| {task} | " + " | ".join(accs) + " |")
        if acc_rows:
            lines += [
                "",
                "### Held-out accuracy at the end",
                "",
                header,
                rule,
                *acc_rows,
            ]
        tuning = self._tuning_table()
        if tuning:
            lines += ["", *tuning]
        if self.cost:
            lines += [
                "",
                f"### Cost (on `{self.cost_task}`; state floats per parameter count "
                "every floating state leaf, scalars included, integer step counters "
                "excluded)",
                "",
                "| optimizer | state floats / parameter | update time / `optax.adam` |",
                "|---|---|---|",
            ]
            for o, c in self.cost.items():
                floats, ratio = c["floats_per_parameter"], c["time_vs_adam"]
                lines.append(f"| {o} | {floats:.3g} | {ratio:.2f}× |")
        references = [r for r in (reference, "adam_tuned") if r in self.runs]
        references = list(dict.fromkeys(references))
        if references and len(self.optimizers) > 1:
            lines += ["", *self._wins_table(references)]
        if reference in self.runs:
            lines += [""] + [
                f"- {self.compare(reference, o).summary()}"
                for o in self.optimizers
                if o != reference
            ]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        """A JSON-ready dict: settings, statistics per pair, costs and raw curves."""
        stats = {
            o: {t: self.stats(o, t)._asdict() for t in self.tasks}
            for o in self.optimizers
        }
        runs = {
            o: {t: {k: v for k, v in r._asdict().items()} for t, r in rs.items()}
            for o, rs in self.runs.items()
        }
        return _jsonable(
            {
                "optimizers": self.optimizers,
                "tasks": self.tasks,
                "seeds": list(self.seeds),
                "num_steps": self.num_steps,
                "reference": self.reference,
                "user_targets": self.user_targets,
                "cost": self.cost,
                "cost_task": self.cost_task,
                "kinds": self.kinds,
                "tuning": self.tuning,
                "stats": stats,
                "runs": runs,
            }
        )

    @classmethod
    def load(cls, path) -> EvaluationResult:
        """Read a `results.json` written by `save` (non-finite values read as NaN)."""
        d = json.loads(pathlib.Path(path).read_text())
        runs = {
            o: {
                t: Run(
                    losses=_array(r["losses"]),
                    eval_steps=tuple(r["eval_steps"]),
                    test_losses=_array(r["test_losses"]),
                    accuracies=_array(r["accuracies"]),
                    learning_rate=r["learning_rate"],
                )
                for t, r in rs.items()
            }
            for o, rs in d["runs"].items()
        }
        return cls(
            optimizers=d["optimizers"],
            tasks=d["tasks"],
            seeds=tuple(d["seeds"]),
            num_steps=d["num_steps"],
            runs=runs,
            reference=d["reference"],
            user_targets=d["user_targets"],
            cost=d["cost"],
            cost_task=d["cost_task"],
            kinds=d.get("kinds") or {t: _registered_kind(t) for t in d["tasks"]},
            tuning={
                o: {
                    t: {
                        **v,
                        "scores": [math.inf if x is None else x for x in v["scores"]],
                    }
                    for t, v in per_task.items()
                }
                for o, per_task in d.get("tuning", {}).items()
            },
        )

    def save_json(self, path) -> pathlib.Path:
        """Write `to_dict()` as strict JSON to `path` (atomically: a temporary
        file renamed over it)."""
        path = pathlib.Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False))
        tmp.replace(path)
        return path

    def save(self, out_dir) -> dict[str, pathlib.Path]:
        """Write `results.json`, `results.md`, `loss_curves.png` and
        `relative_performance.png` into `out_dir` (created if needed).

        Returns:
            name -> path of each file written.
        """
        from ._plots import plot_loss_curves, plot_relative

        out = pathlib.Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "json": out / "results.json",
            "markdown": out / "results.md",
            "loss_curves": out / "loss_curves.png",
            "relative": out / "relative_performance.png",
        }
        self.save_json(paths["json"])
        paths["markdown"].write_text(self.to_markdown())
        plot_loss_curves(self).savefig(paths["loss_curves"], dpi=110)
        plot_relative(self).savefig(paths["relative"], dpi=110)
        return paths
