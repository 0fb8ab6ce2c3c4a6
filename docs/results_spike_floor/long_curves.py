"""Loss curves at 4x the probes' steps of the three models the spike guard
moves most (seeds 0-1, vmapped): the shipped reading beside Adam(1e-3),
mean loss over seeds per sixteenth of the run; or of the models named
(`PROBE:NAME`, PROBE one of probe5, probe6, probe7).

    python docs/results_spike_floor/long_curves.py [PROBE:NAME ...]
"""

import pathlib
import sys

import optax

DOCS = pathlib.Path(__file__).parents[1]
sys.path.insert(0, str(DOCS / "results_fifth_probe"))
sys.path.insert(0, str(DOCS / "results_sixth_probe"))
sys.path.insert(0, str(DOCS / "results_seventh_probe"))
import probe5  # noqa: E402
import probe6  # noqa: E402
import probe7  # noqa: E402

import mnemosyne  # noqa: E402

MODELS = ((probe5, "digits_3x32_relu_b1"), (probe6, "sine_fit_tanh_3x64_full"),
          (probe6, "digits_batchnorm_4x128_b32"))
if len(sys.argv) > 1:
    probes = {"probe5": probe5, "probe6": probe6, "probe7": probe7}
    MODELS = tuple((probes[a.split(":")[0]], a.split(":")[1]) for a in sys.argv[1:])

for module, name in MODELS:
    make, steps = module.PROBES[name]
    steps *= 4
    for label, tx in (("adam", optax.adam(1e-3)), ("mnemosyne", mnemosyne.mnemosyne())):
        losses = probe5.run(make, steps, tx, [0, 1]).mean(0)
        w = steps // 16
        print(f"{name} {steps} {label:9s}",
              " ".join(f"{losses[i:i + w].mean():.3g}" for i in range(0, steps, w)),
              flush=True)
