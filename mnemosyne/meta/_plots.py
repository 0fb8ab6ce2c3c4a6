"""Pictures of a meta-training run."""

from __future__ import annotations

import os

import numpy as np

from ._trainer import History


def plot_history(history: History, path: str | os.PathLike) -> str:
    """Write a PNG of the meta-training curve (meta-loss and meta-gradient norm).

    Uses matplotlib's Agg canvas directly, so it changes no global backend.

    Args:
        history: the history returned by
            [`MetaTrainer.run`][mnemosyne.meta.MetaTrainer.run].
        path: the PNG file to write.

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = np.asarray(history["step"])
    meta_loss = np.asarray(history["meta_loss"], dtype=float)
    grad_norm = np.asarray(history["grad_norm"], dtype=float)
    skipped = np.asarray(history["skipped"], dtype=bool)

    fig = Figure(figsize=(8, 5.5), constrained_layout=True)
    FigureCanvasAgg(fig)
    ax_loss, ax_grad = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    ax_loss.plot(steps, meta_loss, lw=0.8, alpha=0.5, label="meta-loss")
    if len(meta_loss) >= 5:
        window = max(2, len(meta_loss) // 20)
        kernel = np.ones(window) / window
        smooth = np.convolve(meta_loss, kernel, mode="valid")
        ax_loss.plot(steps[window - 1 :], smooth, lw=1.8, label=f"mean of {window}")
    if skipped.any():
        ax_loss.plot(
            steps[skipped],
            np.full(skipped.sum(), np.nanmin(meta_loss) if len(meta_loss) else 0.0),
            "rx",
            label=f"skipped ({int(skipped.sum())})",
        )
    ax_loss.set_ylabel("meta-loss")
    ax_loss.legend(loc="upper right")
    ax_loss.grid(alpha=0.3)
    ax_grad.semilogy(steps, np.maximum(grad_norm, 1e-30), lw=0.8)
    ax_grad.set_ylabel("|meta-gradient|")
    ax_grad.set_xlabel("outer step")
    ax_grad.grid(alpha=0.3)
    fig.suptitle(
        f"meta-training ({int(np.sum(history['num_diverged']))} diverged unrolls)"
    )
    fig.savefig(os.fspath(path), dpi=100)
    return os.fspath(path)
