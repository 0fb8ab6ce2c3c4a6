"""The eighth probe's residual CNN at fixed floors, and what (A2) sees there
(session 28).

    python docs/results_eighth_probe/rescnn_floors.py compare [--seeds 0,1,2,3] \\
        [--optimizers adam+shipped+[1,2]]
    python docs/results_eighth_probe/rescnn_floors.py trace rescnn|vit_l6 SEED

The model is `probe8.residual_cnn` with its 3x3 "SAME" convolutions written as
one matrix product over the nine shifted copies of the padded input
(`probe8.conv_im2col`): the same function (`check` below: equal losses,
gradients within 1e-6 at initialisation), about 8x faster on this CPU than
XLA's convolution, whose vmapped form inside a scan made each seed of the
eighth probe take 11 minutes.

`compare` trains Adam at 1e-3 and 3e-4, the shipped reading, and θ read with
the multiplier's floor fixed at 1 (range [1, 2]) or ½ ([½, 2]) or held at 1
(range [1, 1]), each without the depth floor (D) or the spike guard (G), on
2,000 steps, seeds vmapped, with the fifth probe's loop and output line.

`trace` trains one seed, non-vmapped, with the shipped reading and with the
floor 1 (the guard's ratios still computed, unable to act), through
`spike_signals.wrap_kernels`, and prints per tenth of the run: the loss, the
agreement $a_t$ of Eq. (A1), the slope of the running scale $\\log\\sigma_t$
of Eq. (S) per 100 steps (mean over tensors, and the share of tensors whose
scale fell), and the mean multiplier. `vit_l6` is the second probe's 6-layer
ViT at batch 16 over 1,000 steps (`scripts/step_floor_sweep.py`'s case).
"""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

DOCS = pathlib.Path(__file__).parents[1]
for folder in ("results_eighth_probe", "results_spike_signals"):
    sys.path.insert(0, str(DOCS / folder))
sys.path.insert(0, str(DOCS.parent / "scripts"))
import probe8  # noqa: E402
import spike_signals  # noqa: E402
from probe5 import compare  # noqa: E402

import mnemosyne  # noqa: E402


def residual_cnn():
    """`probe8.residual_cnn` with `probe8.conv_im2col`."""
    return probe8.residual_cnn(conv=probe8.conv_im2col)


def check():
    """Losses and gradients of `residual_cnn` against `probe8.residual_cnn`."""
    init, reference = probe8.residual_cnn()
    _, fast = residual_cnn()
    params, key = init(jax.random.key(3)), jax.random.key(5)
    (a, ga), (b, gb) = (jax.value_and_grad(f)(params, key) for f in (reference, fast))
    gap = max(float(jnp.abs(u - v).max())
              for u, v in zip(jax.tree.leaves(ga), jax.tree.leaves(gb), strict=True))
    assert abs(float(a) - float(b)) < 1e-5 and gap < 1e-6, (a, b, gap)
    print(f"im2col check: loss {float(a):.6f} vs {float(b):.6f}, max gradient gap "
          f"{gap:.1e}", flush=True)


def read(low, high):
    """θ read with the multiplier in `[low, high]`, without (D) or (G)."""
    lopt = mnemosyne.reconfigure(mnemosyne.pretrained(), step_scale_range=(low, high),
                                 step_depth_floor=None, step_spike_guard=None)
    return lambda: mnemosyne.mnemosyne(lopt=lopt)


def run_compare(seeds, names=None):
    check()
    opts = {"adam": lambda: optax.adam(1e-3), "adam 3e-4": lambda: optax.adam(3e-4),
            "shipped": lambda: mnemosyne.mnemosyne(), "[1,2]": read(1.0, 2.0),
            "[.5,2]": read(0.5, 2.0), "fixed 1": read(1.0, 1.0)}
    opts = {name: opts[name] for name in names or opts}
    compare("digits_rescnn_6blocks_b32", residual_cnn, 2000, opts, seeds, per_seed=True)


def vit_l6():
    """The second probe's 6-layer ViT as `(init, loss)`, a batch per key."""
    import step_floor_sweep  # scripts/, on the path above

    task = step_floor_sweep.cases()["vit_l6"][0]
    return task.init, lambda p, k: task.loss(p, task.sample_batch(k))


def run_trace(name, seed):
    spike_signals.MODELS.update(rescnn=(residual_cnn, 2000), vit_l6=(vit_l6, 1000))
    spike_signals.wrap_kernels(None)
    steps = spike_signals.MODELS[name][1]
    floor_one = mnemosyne.reconfigure(
        mnemosyne.pretrained(), step_scale_range=(1.0, 2.0), step_depth_floor=None
    )
    for label, lopt in (("shipped", mnemosyne.pretrained()), ("floor 1", floor_one)):
        losses, _, log_sigma, agreement, log_scale = spike_signals.run(
            name, steps, seed, lopt)
        print(f"{name} seed {seed} {label}: {log_sigma.shape[1]} tensors", flush=True)
        for k in range(10):
            t0, t1 = k * steps // 10, (k + 1) * steps // 10
            change = log_sigma[t1 - 1] - log_sigma[t0]
            print(f"  steps {t0:5d}-{t1:5d}: loss {losses[t0:t1].mean():.3g} | "
                  f"agreement {agreement[t0:t1].mean():+.3f} | log sigma per 100 "
                  f"steps {change.mean() / (t1 - t0) * 100:+.3f} (falling in "
                  f"{np.mean(change < 0):.2f} of tensors) | multiplier "
                  f"{np.exp(log_scale[t0:t1]).mean():.2f}", flush=True)


def main():
    if sys.argv[1] == "compare":
        options = dict(zip(sys.argv[2::2], sys.argv[3::2], strict=False))
        seeds = options.get("--seeds", "0,1,2,3")
        names = options.get("--optimizers")
        run_compare([int(s) for s in seeds.split(",")], names and names.split("+"))
    else:
        run_trace(sys.argv[2], int(sys.argv[3]))


if __name__ == "__main__":
    main()
