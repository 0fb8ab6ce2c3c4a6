"""PNG figures of an evaluation, drawn without touching matplotlib's global state."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself; no pyplot, no global backend switch
    return fig


def plot_loss_curves(result, ncols: int = 3) -> Figure:
    """One subplot per task: training loss against step, log scale; the line is
    the mean over seeds, the band spans the min and max over seeds. Diverged
    seeds are left out of the line and band (the legend counts them)."""
    n = len(result.tasks)
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig = _figure(4.2 * ncols, 3.2 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, task in zip(axes, result.tasks, strict=False):
        tops, positive = [], True
        for opt in result.optimizers:
            stats = result.stats(opt, task)
            losses = result.runs[opt][task].losses
            ok = np.array([math.isfinite(x) for x in stats.final_losses])
            label = (
                opt
                if not stats.num_diverged
                else f"{opt} ({stats.num_diverged} diverged)"
            )
            if not ok.any():
                ax.plot([], [], label=label)
                continue
            good = losses[ok]
            steps = np.arange(good.shape[1])
            (line,) = ax.plot(steps, good.mean(0), label=label, lw=1.3)
            ax.fill_between(
                steps, good.min(0), good.max(0), color=line.get_color(), alpha=0.2, lw=0
            )
            tops.append(good[:, 0].max())
            positive &= bool((good > 0).all())
        ax.set_yscale("log" if positive else "symlog")
        if tops and positive:
            ax.set_ylim(top=3 * max(tops))
        ax.set_title(task)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.legend(fontsize=7)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig


def plot_relative(result, reference: str | None = None) -> Figure:
    """Grouped log-scale bars: each optimizer's mean final loss divided by the
    reference's (default `result.reference`; the best optimizer per task if the
    reference is absent), per task. Below 1 is better. Diverged runs are drawn
    as hatched bars at the top of the axis; pairs with a non-positive or
    undefined ratio are skipped."""
    reference = reference or result.reference
    fig = _figure(max(5.0, 1.1 * len(result.tasks) + 2), 3.8)
    ax = fig.subplots()
    finals = {o: result.final_losses(o) for o in result.optimizers}
    ratios = {}
    for t in result.tasks:
        if reference in finals:
            base = finals[reference][t]
        else:
            base = min(finals[o][t] for o in result.optimizers)
        for o in result.optimizers:
            ratios[o, t] = (
                finals[o][t] / base if math.isfinite(base) and base > 0 else math.nan
            )
    finite = [r for r in ratios.values() if math.isfinite(r) and r > 0]
    top = 2 * max(finite + [1.0])
    bottom = 0.5 * min(finite + [1.0])
    width = 0.8 / len(result.optimizers)
    x = np.arange(len(result.tasks))
    for i, o in enumerate(result.optimizers):
        vals = np.array([ratios[o, t] for t in result.tasks])
        div = np.array([math.isinf(finals[o][t]) for t in result.tasks])
        shown = np.where(div, top, np.where(vals > 0, vals, np.nan))
        bars = ax.bar(
            x + (i - (len(result.optimizers) - 1) / 2) * width, shown, width, label=o
        )
        for bar, d in zip(bars, div, strict=True):
            if d:
                bar.set_hatch("//")
                bar.set_alpha(0.5)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_yscale("log")
    ax.set_ylim(bottom, top)
    ax.set_xticks(x, result.tasks, rotation=30, ha="right")
    ax.set_ylabel(f"final loss / {reference if reference in finals else 'best'}")
    ax.set_title("Relative final loss (lower is better; hatched: diverged)")
    ax.legend(fontsize=7)
    return fig
