"""Evaluation: train optimizers on tasks over seeds and compare them.

- [`evaluate`][mnemosyne.evaluation.evaluate] runs every (optimizer, task, seed)
  as a jitted `lax.scan` (seeds vmapped, one compile per pair) and returns an
  [`EvaluationResult`][mnemosyne.evaluation.EvaluationResult] holding the raw
  curves;
- statistics over seeds ([`summarize`][mnemosyne.evaluation.summarize]): final
  loss, loss at 25/50/100% of the budget, steps to a target loss, held-out
  loss and accuracy, diverged seeds;
- cost per optimizer: state floats per parameter and update time relative to
  `optax.adam`;
- `*_tuned` hand-designed optimizers: the learning rate grid-searched per task
  on a separate tuning seed, all of them in one program per task;
- [`memory_ablation`][mnemosyne.evaluation.memory_ablation]: Mnemosyne's
  memory variants meta-trained with one reduced budget and compared;
- outputs: `result.to_markdown()` (Transformer tasks in their own table),
  `result.save(out_dir)` (JSON, markdown, PNG loss curves and a
  relative-performance chart), and
  [`compare`][mnemosyne.evaluation.compare] (wins / within 10% / losses);
- [`compare_updates`][mnemosyne.evaluation.compare_updates]: an optimizer's
  update beside a reference's on the same gradients (RMS ratio, cosine).

Example:
    >>> from mnemosyne import evaluation
    >>> result = evaluation.evaluate(["adam", "sgd"], ["quadratic"], seeds=(0,),
    ...                              num_steps=20, progress=False)
    >>> print(evaluation.compare(result, "adam", "sgd").summary())  # doctest: +SKIP
"""

from ._ablation import (
    ABLATION_OUTER_STEPS,
    ABLATION_TASKS,
    ABLATION_VARIANTS,
    AblationVariant,
    memory_ablation,
)
from ._evaluate import evaluate, train, train_groups
from ._optimizers import (
    DEFAULT_LEARNING_RATE,
    TUNING_SEED,
    floats_per_parameter,
    num_params,
    optimizer_names,
    resolve_optimizer,
    time_per_step,
    time_steps,
    tune,
)
from ._plots import plot_loss_curves, plot_relative
from ._result import TRANSFORMER_KINDS, EvaluationResult, Run
from ._stats import (
    DIVERGENCE_FACTOR,
    FRACTIONS,
    Comparison,
    RunStats,
    compare_final_losses,
    default_target,
    diverged,
    ruined,
    stability_ratio,
    summarize,
    window_size,
)
from ._updates import UpdateComparison, compare_updates


def compare(
    result: EvaluationResult, reference: str = "adam", candidate: str = "mnemosyne"
) -> Comparison:
    """Count the tasks where `candidate`'s mean final loss beats `reference`'s.

    Returns:
        A [`Comparison`][mnemosyne.evaluation.Comparison]: `wins` (candidate
        `<=` reference, or the reference diverged), `within_10pct`
        (candidate `<=` reference + 10%), `losses`, diverged counts and
        per-task ratios. A candidate that diverged never wins.
    """
    return result.compare(reference, candidate)


__all__ = [
    "ABLATION_OUTER_STEPS",
    "ABLATION_TASKS",
    "ABLATION_VARIANTS",
    "AblationVariant",
    "DEFAULT_LEARNING_RATE",
    "DIVERGENCE_FACTOR",
    "FRACTIONS",
    "Comparison",
    "EvaluationResult",
    "Run",
    "RunStats",
    "TRANSFORMER_KINDS",
    "TUNING_SEED",
    "UpdateComparison",
    "compare",
    "compare_final_losses",
    "compare_updates",
    "default_target",
    "diverged",
    "evaluate",
    "floats_per_parameter",
    "memory_ablation",
    "num_params",
    "optimizer_names",
    "plot_loss_curves",
    "plot_relative",
    "resolve_optimizer",
    "ruined",
    "stability_ratio",
    "summarize",
    "time_per_step",
    "time_steps",
    "train",
    "train_groups",
    "tune",
    "window_size",
]
