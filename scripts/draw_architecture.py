"""Draw the Mnemosyne architecture picture for the docs: docs/images/architecture.png.

Usage: python scripts/draw_architecture.py [--out docs/images/architecture.png]
"""

from __future__ import annotations

import argparse
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

BOXES = {
    # name: (x, y, w, h, title, subtitle, colour)
    "grad": (
        0.2,
        3.2,
        2.1,
        0.9,
        "gradient g, params x",
        "one tensor, step t",
        "#eeeeee",
    ),
    "feat": (
        2.8,
        3.2,
        2.4,
        0.9,
        "features (F)",
        "g/rms(g), log/sign (L),\nx/rms(x), tanh(t/T)",
        "#dbe9f6",
    ),
    "tok": (
        5.7,
        3.2,
        2.6,
        0.9,
        "tokens ξ = W_in f + b",
        "one per coordinate",
        "#dbe9f6",
    ),
    "hpe": (
        5.7,
        1.6,
        2.6,
        1.0,
        "HPE (tensor-wise only)",
        "chunk → bidirectional\nPerformer → mean-pool, ×L",
        "#fde2c8",
    ),
    "cam": (
        8.9,
        2.4,
        3.0,
        1.7,
        "CAM, per slot, H heads",
        "q,k,v = W ξ   (2)\nN ← e^(−τ)·N + φ(k)vᵀ   (4)\nΨ ← e^(−τ)·Ψ + φ(k)\no = "
        "Nᵀφ(q) / φ(q)ᵀΨ   (5)",
        "#d9f0d3",
    ),
    "head": (12.5, 3.2, 2.4, 0.9, "head (H)", "MLP + skip on [f, o] → d, s", "#e8dcf2"),
    "out": (12.5, 1.6, 2.4, 0.9, "step (O)", "−α·d·exp(β·c·tanh(s/c))·lr", "#e8dcf2"),
    "phi": (
        8.9,
        0.6,
        3.0,
        0.9,
        "φ: hyperbolic random features",
        "(A.1), frozen orthogonal ω",
        "#d9f0d3",
    ),
}

ARROWS = [
    ("grad", "feat"),
    ("feat", "tok"),
    ("tok", "cam"),
    ("tok", "hpe"),
    ("hpe", "cam"),
    ("cam", "head"),
    ("feat", "head"),
    ("head", "out"),
    ("phi", "cam"),
]


def centre(name, side):
    x, y, w, h = BOXES[name][:4]
    return {
        "r": (x + w, y + h / 2),
        "l": (x, y + h / 2),
        "t": (x + w / 2, y + h),
        "b": (x + w / 2, y),
    }[side]


SIDES = {
    ("grad", "feat"): ("r", "l"),
    ("feat", "tok"): ("r", "l"),
    ("tok", "cam"): ("r", "l"),
    ("tok", "hpe"): ("b", "t"),
    ("hpe", "cam"): ("r", "l"),
    ("cam", "head"): ("r", "l"),
    ("feat", "head"): ("t", "t"),
    ("head", "out"): ("b", "t"),
    ("phi", "cam"): ("t", "b"),
}


def draw(path: pathlib.Path) -> None:
    fig, ax = plt.subplots(figsize=(13, 4.6))
    ax.set_xlim(0, 15.1)
    ax.set_ylim(0.3, 5.0)
    ax.axis("off")
    for x, y, w, h, title, sub, colour in BOXES.values():
        ax.add_patch(
            FancyBboxPatch(
                (x, y),
                w,
                h,
                boxstyle="round,pad=0.05,rounding_size=0.12",
                fc=colour,
                ec="#444444",
                lw=1,
            )
        )
        ax.text(
            x + w / 2,
            y + h - 0.2,
            title,
            ha="center",
            va="top",
            fontsize=9.5,
            weight="bold",
        )
        ax.text(x + w / 2, y + h - 0.45, sub, ha="center", va="top", fontsize=7.5)
    for a, b in ARROWS:
        sa, sb = SIDES[(a, b)]
        kw = {}
        if (a, b) == ("feat", "head"):
            kw["connectionstyle"] = "arc3,rad=-0.12"
        ax.add_patch(
            FancyArrowPatch(
                centre(a, sa),
                centre(b, sb),
                arrowstyle="-|>",
                mutation_scale=12,
                color="#333333",
                lw=1,
                **kw,
            )
        )
    ax.text(
        10.4,
        2.55,
        "memory state N, Ψ: r(d_v+1)H floats per slot\n"
        "(slot = coordinate, or meta-token)",
        ha="center",
        va="bottom",
        fontsize=7,
        style="italic",
    )
    ax.text(
        0.2,
        0.55,
        "Equation labels as in docs/paper-to-code.md: (2),(4),(5),(A.1) from the "
        "paper's\n"
        "CAM as reconstructed; (F),(L),(H),(O) this library's choices.",
        fontsize=7.5,
        color="#555555",
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="docs/images/architecture.png")
    args = parser.parse_args(argv)
    draw(pathlib.Path(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
