"""Ship a validated θ of a preset's run as `mnemosyne/weights/<preset>.eqx`.

    python scripts/ship_snapshot.py THETA.eqx CHECKPOINT.eqx --preset default \
        --steps N --wall-time-s S --validation validation.json

`THETA.eqx` is what `mnemosyne meta-train --preset <preset>` ships after `N`
outer steps (with the preset's averaging and shrinkage; computed from the
run's snapshots), `CHECKPOINT.eqx` a trainer checkpoint of the same run at or
after step `N`, whose header holds the meta-training history (cut at `N`), and
`validation.json` the record of `scripts/validate_checkpoints.py` that picked
it; it is copied into the weights' record.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import mnemosyne
from mnemosyne.meta import read_checkpoint_header
from mnemosyne.meta._presets import save_preset_weights

WEIGHTS = pathlib.Path(__file__).parents[1] / "mnemosyne" / "weights"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("snapshot")
    parser.add_argument("checkpoint")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--wall-time-s", type=float, required=True)
    parser.add_argument("--validation", required=True)
    parser.add_argument(
        "--note", default=None, help="how the θ was chosen, if not by the rule alone"
    )
    args = parser.parse_args()

    history = read_checkpoint_header(args.checkpoint)["history"]
    history = {k: v[: args.steps] for k, v in history.items()}
    if len(history["step"]) != args.steps:
        raise SystemExit(
            f"the checkpoint holds {len(history['step'])} steps, not {args.steps}"
        )
    validation = json.loads(pathlib.Path(args.validation).read_text())
    save_preset_weights(
        args.preset,
        mnemosyne.load(args.snapshot),
        history,
        WEIGHTS / f"{args.preset}.eqx",
        num_outer_steps=args.steps,
        wall_time_s=args.wall_time_s,
        wall_time_note="one process, compilation included, on the 2-core machine",
        extra={
            "command": f"mnemosyne meta-train --preset {args.preset}",
            "selected_by": "scripts/validate_checkpoints.py (validation tasks: "
            "mnemosyne.meta.validation_tasks())",
            "validation": validation,
            **({"selection_note": args.note} if args.note else {}),
        },
    )


if __name__ == "__main__":
    main()
