"""Ship the LSTM optimizers meta-trained with the v2 recipe.

    python scripts/ship_lstm_v2.py

For `lstm_v2` and `lstm_multiscale_v2`: the mean θ̄ of the PES iterates at outer
steps 400, 420, ..., 600 of `mnemosyne meta-train --preset <name>` (run on one
H200 GPU; θ̄ kept in `docs/results_lstm_v2/`, the run's checkpoints and history
were not), moved toward the preset's untrained θ₀ by its shrinkage (1/8, the
fewest ruined validation runs; `docs/results_lstm_v2/validation_*.json`), as
`run_recipe` does, and written to `mnemosyne/weights/<name>.eqx` with its record.
"""

from __future__ import annotations

import json
import pathlib

import mnemosyne
from mnemosyne.meta._presets import PRESETS, save_preset_weights, shrink_toward

ROOT = pathlib.Path(__file__).parents[1]
RUNS = {  # preset -> (θ̄, validation record, wall time of the GPU run in s)
    "lstm_v2": ("lstm_v2_mean.eqx", "validation_lstm.json", 204.0),
    "lstm_multiscale_v2": (
        "lstm_multiscale_v2_mean.eqx", "validation_lstm_multiscale.json", 236.0
    ),
}


def main() -> None:
    for name, (mean_file, validation_file, seconds) in RUNS.items():
        preset = PRESETS[name]
        mean = mnemosyne.load(ROOT / "docs" / "results_lstm_v2" / mean_file)
        lopt = shrink_toward(mean, preset.untrained(), preset.shrink)
        validation = json.loads(
            (ROOT / "docs" / "results_lstm_v2" / validation_file).read_text()
        )
        save_preset_weights(
            name, lopt, None, ROOT / "mnemosyne" / "weights" / f"{name}.eqx",
            num_outer_steps=preset.num_outer_steps, wall_time_s=seconds,
            wall_time_note="one process on one H200 GPU, compilation included",
            extra={
                "command": f"mnemosyne meta-train --preset {name}, then "
                "python scripts/ship_lstm_v2.py",
                "history_note": "the GPU run's checkpoints and meta-training "
                "history were not kept, only the averaged θ̄ "
                f"(docs/results_lstm_v2/{mean_file})",
                "selected_by": "scripts/validate_checkpoints.py --preset lstm "
                "(shrink 1/8, 1/4, 1/2, 1: none passes the rule; 1/8 ruins the "
                "fewest runs)",
                "validation": validation,
            },
        )
        print("wrote", name)


if __name__ == "__main__":
    main()
