"""Long loss curves of a deep CNN beside Adam (session 29).

    python docs/results_kernel_floor/long_curves.py NAME STEPS SEEDS OPTIMIZERS

Trains `kernel_floor_probes.MODELS[NAME]` for STEPS steps on SEEDS
(comma-separated) with each of OPTIMIZERS (comma-separated: `adam`, Adam at
1e-3; `shipped`, `mnemosyne.mnemosyne()`; `before`, the shipped θ without the
kernel floor) and prints, per seed, the mean loss over each twentieth of the
run, the best of those windows, the last, and their ratio.
"""

import pathlib
import sys

import optax

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import kernel_floor_probes  # noqa: E402
import probe5  # noqa: E402  (on the path kernel_floor_probes sets)

import mnemosyne  # noqa: E402

OPTIMIZERS = {"adam": lambda: optax.adam(1e-3),
              "shipped": lambda: mnemosyne.mnemosyne(),
              "before": kernel_floor_probes.reading(None)}


def main():
    name, steps = sys.argv[1], int(sys.argv[2])
    seeds = [int(s) for s in sys.argv[3].split(",")]
    for label in sys.argv[4].split(","):
        losses = probe5.run(kernel_floor_probes.MODELS[name], steps,
                            OPTIMIZERS[label](), seeds)
        print(f"{name} {label}: mean loss per {steps // 20} steps", flush=True)
        for seed, line in zip(seeds, probe5.twentieths(losses), strict=True):
            print(f"  seed {seed}: {line}", flush=True)


if __name__ == "__main__":
    main()
