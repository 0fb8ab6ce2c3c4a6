"""Per-tensor agreement and multiplier of CNNs read with the kernel floor 1.

    python docs/results_kernel_floor/kernel_agreement_traces.py NAME SEED

Trains one CNN with the shipped θ read with `step_kernel_floor=(1, 1)` (the
kernel floor at every depth, as session 29 first measured it) and prints, per
quarter of the run, the mean loss and each tensor's mean agreement $a_t$ of
Eq. (A1) and mean multiplier, recorded by `spike_signals.wrap_kernels`
(tensors in the update's order: leaves stepped alone, then packs). NAME:
`cnn_b8`, `cnn_b4` (the second probe's CNNs at batch 8 and 4), `cnn_b32`
(the third probe's at batch 32), `plain4` (the ninth probe's plain 4-layer
CNN), `rescnn` (the eighth probe's residual CNN, im2col convolutions).
"""

import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
for folder in ("results_spike_signals", "results_ninth_probe", "results_eighth_probe"):
    sys.path.insert(0, str(ROOT / "docs" / folder))
import probe8  # noqa: E402
import probe9  # noqa: E402
import spike_signals  # noqa: E402

import mnemosyne  # noqa: E402
from mnemosyne.meta import second_probe_tasks, third_probe_tasks  # noqa: E402


def task_model(task):
    return lambda: (task.init, lambda p, k: task.loss(p, task.sample_batch(k)))


def main():
    second, third = second_probe_tasks(), third_probe_tasks()
    spike_signals.MODELS.update(
        rescnn=(lambda: probe8.residual_cnn(conv=probe8.conv_im2col), 2000),
        plain4=(probe9.PROBES["digits_plain_cnn4_b32"][0], 2000),
        **{name: (task_model(task), steps) for name, (task, steps) in (
            ("cnn_b8", second["probe2_cnn_digits_32_64_b8"]),
            ("cnn_b4", second["probe2_cnn_digits_8_16_b4"]),
            ("cnn_b32", third["probe3_cnn_digits_16_16_b32"]))},
    )
    spike_signals.wrap_kernels(None)
    name, seed = sys.argv[1], int(sys.argv[2])
    steps = spike_signals.MODELS[name][1]
    lopt = mnemosyne.reconfigure(mnemosyne.pretrained(), step_kernel_floor=(1.0, 1))
    losses, _, _, agreement, log_scale = spike_signals.run(name, steps, seed, lopt)
    print(name, seed, "steps", steps, "final", losses[-steps // 20:].mean(),
          "tensors", agreement.shape[1])
    for q in range(4):
        t0, t1 = q * steps // 4, (q + 1) * steps // 4
        print(f"  quarter {q}: loss {losses[t0:t1].mean():.3g} agreement per tensor",
              " ".join(f"{a:+.3f}" for a in agreement[t0:t1].mean(0)), "| mult",
              " ".join(f"{m:.2f}" for m in np.exp(log_scale[t0:t1]).mean(0)),
              flush=True)


if __name__ == "__main__":
    main()
