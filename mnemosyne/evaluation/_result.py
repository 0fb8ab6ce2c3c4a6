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

    # ------------------------------------------------------------------ stats

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
        self, reference: str | None = None, candidate: str = "mnemosyne"
    ) -> Comparison:
        """Head-to-head final losses; see [`compare`][mnemosyne.evaluation.compare]."""
        reference = reference or self.reference
        return compare_final_losses(
            self.final_losses(candidate),
            self.final_losses(reference),
            candidate=candidate,
            reference=reference,
        )

    # ----------------------------------------------------------------- output

    def to_markdown(self, reference: str | None = None) -> str:
        """Markdown tables: final training loss (mean ± std over seeds, best per
        task in bold), held-out accuracy where defined, optimizer cost, and a
        wins/losses line of every optimizer against `reference`."""
        reference = reference or self.reference
        n = len(self.seeds)
        header = "| task | " + " | ".join(self.optimizers) + " |"
        rule = "|---|" + "---|" * len(self.optimizers)
        lines = [
            f"### Final training loss (mean ± std over {n} seeds, last 5% of "
            f"{self.num_steps} steps; best in bold)",
            "",
            header,
            rule,
        ]
        acc_rows = []
        for task in self.tasks:
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
            if any(s.accuracy_mean is not None for s in stats.values()):
                accs = [_fmt(s.accuracy_mean, s.accuracy_std) for s in stats.values()]
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
        )

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
        paths["json"].write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False))
        paths["markdown"].write_text(self.to_markdown())
        plot_loss_curves(self).savefig(paths["loss_curves"], dpi=110)
        plot_relative(self).savefig(paths["relative"], dpi=110)
        return paths
