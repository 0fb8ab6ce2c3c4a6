"""Statistics over seeds of raw training curves, and head-to-head comparisons."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .._training import DIVERGENCE_FACTOR, diverged

#: Fractions of the step budget at which `loss_at` is reported.
FRACTIONS: tuple[float, ...] = (0.25, 0.5, 1.0)



class RunStats(NamedTuple):
    """Statistics of one (optimizer, task) pair over seeds.

    A diverged seed has final loss `inf`, so any divergence makes the means
    `inf` (and the pair rank last); `num_diverged` says how many seeds.

    Attributes:
        num_seeds: seeds run.
        num_diverged: seeds whose loss became NaN/inf or exceeded
            `DIVERGENCE_FACTOR` times their initial loss.
        final_losses: per seed, the mean training loss over the final window
            (the last ~5% of steps), `inf` where diverged.
        final_loss_mean: mean of `final_losses` over seeds.
        final_loss_std: standard deviation (ddof 0) of `final_losses`; `inf`
            if any seed diverged.
        loss_at: fraction of the budget -> `(mean, std)` over seeds of the
            window-mean loss ending at step `round(fraction * num_steps)`.
            `loss_at[1.0]` equals the final loss.
        target: the loss target used for `steps_to_target` (`None`: no target).
        steps_to_target: per seed, the first step `t` whose window-mean loss
            (trailing window, shorter at the start) is `<= target`, or `None`.
        steps_to_target_mean: mean of `steps_to_target` over seeds; `None`
            unless every seed reached the target.
        test_loss_mean, test_loss_std: loss on the task's held-out batch at the
            end (`None` where the task has none).
        accuracy_mean, accuracy_std: held-out accuracy at the end (`None`
            where undefined).
    """

    num_seeds: int
    num_diverged: int
    final_losses: tuple[float, ...]
    final_loss_mean: float
    final_loss_std: float
    loss_at: dict[float, tuple[float, float]]
    target: float | None
    steps_to_target: tuple[int | None, ...]
    steps_to_target_mean: float | None
    test_loss_mean: float | None
    test_loss_std: float | None
    accuracy_mean: float | None
    accuracy_std: float | None


def window_size(num_steps: int, final_fraction: float = 0.05) -> int:
    """Steps averaged for a final loss: `max(1, round(final_fraction * num_steps))`."""
    return max(1, int(round(final_fraction * num_steps)))


def stability_ratio(
    losses: np.ndarray, final_fraction: float = 0.05, floor: float = 1e-6
) -> np.ndarray:
    """Per seed (rows of `losses`): the final window-mean loss over the lowest
    window-mean loss of the same run (non-overlapping windows of
    `window_size(num_steps, final_fraction)` steps, the last one ending at the
    final step), both floored at `floor` (float32 runs can reach exactly 0,
    and a rise from 1e-9 to 1e-8 ruins nothing). 1 for a run whose loss never
    rose; a run that ended above 1.5x its own best is what the stability rule
    forbids. `inf` for a run with a NaN/inf loss."""
    losses = np.atleast_2d(np.asarray(losses, np.float64))
    w = window_size(losses.shape[1], final_fraction)
    usable = losses.shape[1] // w * w
    windows = (
        losses[:, losses.shape[1] - usable :].reshape(len(losses), -1, w).mean(axis=2)
    )
    windows = np.maximum(windows, floor)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = windows[:, -1] / windows.min(axis=1)
    return np.where(np.all(np.isfinite(losses), axis=1), ratio, math.inf)


def ruined(
    losses: np.ndarray,
    reference_final_loss,
    limit: float = 1.5,
    floor: float = 1e-6,
) -> np.ndarray:
    """Per seed (rows of `losses`): whether the run is *ruined*, the rule the
    shipped θ is chosen by (`scripts/validate_checkpoints.py`): it ended above
    `limit` times its own best window (`stability_ratio`) **and** above
    `reference_final_loss` (e.g. Adam(1e-3)'s final loss on the same task: one
    number, or one per seed), or its loss is not finite. A rise
    that still ends below the reference, typically a fluctuation near zero loss
    at tiny batches, is not a ruin. Final losses are window means (last 5% of
    steps) floored at `floor`, as in `stability_ratio`."""
    losses = np.atleast_2d(np.asarray(losses, np.float64))
    ends = np.maximum(losses[:, -window_size(losses.shape[1]) :].mean(axis=1), floor)
    rose = stability_ratio(losses, floor=floor) > limit
    return rose & ~(ends <= np.asarray(reference_final_loss, np.float64))


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    if not np.all(np.isfinite(values)):
        return math.inf, math.inf
    return float(np.mean(values)), float(np.std(values))


def _optional_mean_std(values) -> tuple[float | None, float | None]:
    if values is None:
        return None, None
    values = np.asarray(values, np.float64)
    return float(np.mean(values)), float(np.std(values))


def summarize(
    losses,
    *,
    target: float | None = None,
    test_loss=None,
    accuracy=None,
    fractions: Sequence[float] = FRACTIONS,
    final_fraction: float = 0.05,
    divergence_factor: float = DIVERGENCE_FACTOR,
) -> RunStats:
    """Statistics over seeds of training-loss curves.

    Args:
        losses: `(num_seeds, num_steps)` training losses; `losses[s, t]` is the
            loss of seed `s` at the iterate after `t` updates.
        target: loss to reach for `steps_to_target`, or `None`.
        test_loss: `(num_seeds,)` final held-out losses, or `None`.
        accuracy: `(num_seeds,)` final held-out accuracies, or `None`.
        fractions: budget fractions for `loss_at`.
        final_fraction: the final window is this fraction of the steps (at least 1).
        divergence_factor: see [`diverged`][mnemosyne.evaluation.diverged].

    Returns:
        A [`RunStats`][mnemosyne.evaluation.RunStats].
    """
    losses = np.atleast_2d(np.asarray(losses, np.float64))
    num_seeds, num_steps = losses.shape
    w = window_size(num_steps, final_fraction)
    bad = diverged(losses, divergence_factor)
    # Trailing window means: smooth[s, t] = mean(losses[s, max(0, t-w+1) : t+1]).
    csum = np.cumsum(np.where(bad[:, None], 0.0, losses), axis=1)
    shifted = np.concatenate([np.zeros((num_seeds, w)), csum[:, :-w]], axis=1)
    counts = np.minimum(np.arange(1, num_steps + 1), w)
    smooth = np.where(bad[:, None], math.inf, (csum - shifted[:, :num_steps]) / counts)

    final = smooth[:, -1]
    loss_at = {
        float(f): _mean_std(smooth[:, max(1, int(round(f * num_steps))) - 1])
        for f in fractions
    }
    steps: list[int | None] = []
    for s in range(num_seeds):
        hit = np.flatnonzero(smooth[s] <= target) if target is not None else []
        steps.append(int(hit[0]) if len(hit) else None)
    reached = all(t is not None for t in steps)
    test_mean, test_std = _optional_mean_std(test_loss)
    acc_mean, acc_std = _optional_mean_std(accuracy)
    if test_loss is not None and bad.any():
        test_mean = test_std = math.inf
    return RunStats(
        num_seeds=num_seeds,
        num_diverged=int(bad.sum()),
        final_losses=tuple(float(x) for x in final),
        final_loss_mean=_mean_std(final)[0],
        final_loss_std=_mean_std(final)[1],
        loss_at=loss_at,
        target=target,
        steps_to_target=tuple(steps),
        steps_to_target_mean=float(np.mean(steps))
        if reached and target is not None
        else None,
        test_loss_mean=test_mean,
        test_loss_std=test_std,
        accuracy_mean=acc_mean,
        accuracy_std=acc_std,
    )


def default_target(reference_final_loss: float, slack: float = 0.05) -> float | None:
    """The loss target `reference + slack * |reference|` (`None` if not finite)."""
    if not math.isfinite(reference_final_loss):
        return None
    return reference_final_loss + slack * abs(reference_final_loss)


class Comparison(NamedTuple):
    """Head-to-head final losses of `candidate` against `reference`.

    Attributes:
        candidate, reference: optimizer names.
        num_tasks: tasks compared.
        wins: tasks where the candidate did not diverge and its mean final loss
            is `<=` the reference's (or the reference diverged).
        within_10pct: tasks where the candidate's loss is `<= ref + 0.1 |ref|`
            (includes the wins).
        losses: `num_tasks - wins`.
        candidate_diverged, reference_diverged: tasks with any diverged seed.
        ratios: task -> candidate / reference mean final loss (`inf` where the
            candidate diverged, `nan` where the reference did).
    """

    candidate: str
    reference: str
    num_tasks: int
    wins: int
    within_10pct: int
    losses: int
    candidate_diverged: int
    reference_diverged: int
    ratios: dict[str, float]

    def summary(self) -> str:
        """One line, e.g. `mnemosyne vs adam: 7/10 wins, 9/10 within 10%, ...`."""
        n = self.num_tasks
        return (
            f"{self.candidate} vs {self.reference}: {self.wins}/{n} wins "
            f"(final loss <=), {self.within_10pct}/{n} within 10%, "
            f"{self.losses}/{n} losses; diverged on {self.candidate_diverged} "
            f"task(s) (reference: {self.reference_diverged})"
        )


def compare_final_losses(
    candidate_losses: dict[str, float],
    reference_losses: dict[str, float],
    *,
    candidate: str = "candidate",
    reference: str = "reference",
) -> Comparison:
    """Compare mean final losses task by task.

    See [`Comparison`][mnemosyne.evaluation.Comparison] for the counting rules.
    """
    tasks = [t for t in candidate_losses if t in reference_losses]
    wins = within = c_div = r_div = 0
    ratios = {}
    for t in tasks:
        c, r = candidate_losses[t], reference_losses[t]
        c_ok, r_ok = math.isfinite(c), math.isfinite(r)
        c_div += not c_ok
        r_div += not r_ok
        wins += c_ok and (not r_ok or c <= r)
        within += c_ok and (not r_ok or c <= r + 0.1 * abs(r))
        ratios[t] = math.inf if not c_ok else (c / r if r_ok and r != 0 else math.nan)
    n = len(tasks)
    return Comparison(
        candidate, reference, n, wins, within, n - wins, c_div, r_div, ratios
    )
