"""The width scaling of the step (Eq. (N), `step_width_reference`), measured
(docs/results.md, "Width"):

    python docs/results_width/width.py READING CASES [STEPS|-] [SEEDS|-] [OUT.json]

(from the repository root). READING: `adam:LR` for `optax.adam(LR)`, or
`width:N0` for the shipped θ read with `step_width_reference=N0` (`width:0`:
none, the reading shipped until session 21; `width:128` is the shipped one). CASES:
comma-separated names of `docs/results_knee/knee.py` (`lm:PROBLEM:D:LAYERS:BATCH`,
`vit:D:LAYERS:BATCH`, suite and probe tasks), or `mlp:DATASET:H1-H2-...:BATCH[:ACT]`
for an MLP classifier on a bundled dataset, or `cnn:C1-C2:BATCH` for the
suite's CNN on digits with C1 and C2 channels (1,000 steps, seed 0). Prints
each case's per-seed final losses (mean of the last window) and stability
ratios (final window over the best one).
"""

import json
import pathlib
import sys

import optax

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "docs" / "results_knee"))

import knee  # noqa: E402

import mnemosyne  # noqa: E402
from mnemosyne.tasks import CNNClassifier, MLPClassifier, load_dataset  # noqa: E402


def optimizer(reading: str):
    kind, value = reading.split(":")
    if kind == "adam":
        return optax.adam(float(value))
    reference = int(value) or None
    lopt = mnemosyne.reconfigure(mnemosyne.pretrained(), step_width_reference=reference)
    return mnemosyne.mnemosyne(lopt=lopt)


def case(name: str):
    """`(task, steps, seeds)` for a case name (see the module docstring)."""
    spec = name.split(":")
    if spec[0] == "cnn":
        channels = tuple(int(c) for c in spec[1].split("-"))
        task = CNNClassifier(load_dataset("digits"), channels=channels,
                             batch_size=int(spec[2]), name=name)
        return task, 1000, [0]
    if spec[0] != "mlp":
        return knee.case(name)
    hidden = tuple(int(h) for h in spec[2].split("-"))
    task = MLPClassifier(
        load_dataset(spec[1]),
        hidden=hidden,
        activation=spec[4] if len(spec) > 4 else "relu",
        batch_size=int(spec[3]),
        name=name,
        kind="mlp",
    )
    return task, 1000, [0]


def main() -> None:
    tx = optimizer(sys.argv[1])
    label = f"{sys.argv[1]:10s} "
    record = knee.run_cases(tx, sys.argv[2], sys.argv[3:5], case, label)
    if len(sys.argv) > 5:
        pathlib.Path(sys.argv[5]).write_text(json.dumps(record, indent=1))

if __name__ == "__main__":
    main()
