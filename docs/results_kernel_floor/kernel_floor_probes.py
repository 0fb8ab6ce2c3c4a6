"""The shipped θ with and without the kernel floor (Eq. (K)) on the convolution
models of the sixth to ninth probes.

    python docs/results_kernel_floor/kernel_floor_probes.py NAME STEPS SEEDS \\
        [FLOORS]

Runs Adam(1e-3) and θ read with the shipped settings but, for each floor of
`FLOORS` (comma-separated, `none` for no kernel floor; default `none,1`),
`step_kernel_floor=(floor, 1)`, the kernel floor at every depth:
`no_kernel_floor` is the reading shipped before session 29, and since then
the shipped `(1, 5)` reads models of at least five matrices as
`kernel_floor_1` and shallower ones as `no_kernel_floor`. Seeds `SEEDS`
(comma-separated) vmapped, with the fifth probe's loop and output line
(`probe5.compare`). NAME is one of `MODELS`: the probes' four convolution
models, the two deep ones at batch 8, and a 6-layer CNN with LayerNorm. The
residual CNN is run with its convolutions as im2col products
(`probe8.conv_im2col`, the same function, 8x faster on a CPU). The
convolution tasks of the first four probes and the validation set run with
`scripts/validate_checkpoints.py A.eqx B.eqx --probe N --only cnn`, with the
two readings saved as θ files.
"""

import pathlib
import sys

import jax
import jax.numpy as jnp
import optax

DOCS = pathlib.Path(__file__).parents[1]
for folder in ("results_fifth_probe", "results_sixth_probe", "results_seventh_probe",
               "results_eighth_probe", "results_ninth_probe"):
    sys.path.insert(0, str(DOCS / folder))
import probe5  # noqa: E402
import probe6  # noqa: E402
import probe7  # noqa: E402
import probe8  # noqa: E402
import probe9  # noqa: E402

import mnemosyne  # noqa: E402


def normalised_cnn(layers=6, channels=16, b=32):
    """`layers` 3x3 convolutions at 8x8, each followed by a per-example
    LayerNorm over height, width and channels (a per-channel scale and bias)
    and ReLU, global average pooling and a dense head: a deep CNN with
    normalisation (not in any probe; session 29)."""
    x, y = probe9.digits()
    images = x.reshape(-1, 8, 8, 1)
    plain_init, _ = probe9.plain_cnn(layers, channels, b)

    def init(k):  # the plain CNN's weights, and a LayerNorm per convolution
        return {**plain_init(k),
                "scales": [jnp.ones(channels) for _ in range(layers)],
                "biases": [jnp.zeros(channels) for _ in range(layers)]}

    def loss(p, k):
        i = probe9.batch(k, len(x), b)
        h = images[i]
        for w, g, c in zip(p["convs"], p["scales"], p["biases"], strict=True):
            h = probe8.conv_im2col(h, w)
            mu = h.mean((1, 2, 3), keepdims=True)
            sd = jnp.sqrt(h.var((1, 2, 3), keepdims=True) + 1e-5)
            h = jax.nn.relu((h - mu) / sd * g + c)
        return probe9.xent(h.mean((1, 2)) @ p["out"]["w"] + p["out"]["b"], y[i])

    return init, loss


MODELS = {
    "conv1d_motifs_b32": probe6.PROBES["conv1d_motifs_b32"][0],
    "digits_cnn2d_b16": probe7.PROBES["digits_cnn2d_b16"][0],
    "digits_plain_cnn4_b32": probe9.PROBES["digits_plain_cnn4_b32"][0],
    "digits_rescnn_6blocks_b32": lambda: probe8.residual_cnn(conv=probe8.conv_im2col),
    # the two deep CNNs at batch 8 (not in any probe; session 29)
    "digits_plain_cnn4_b8": lambda: probe9.plain_cnn(b=8),
    "digits_rescnn_6blocks_b8": lambda: probe8.residual_cnn(
        b=8, conv=probe8.conv_im2col),
    "digits_layernorm_cnn6_b32": normalised_cnn,
}


def reading(kernel_floor):
    """A factory of the shipped θ read with `step_kernel_floor=kernel_floor`."""
    lopt = mnemosyne.reconfigure(mnemosyne.pretrained(),
                                 step_kernel_floor=kernel_floor)
    return lambda: mnemosyne.mnemosyne(lopt=lopt)


def main():
    name, steps, seeds = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    floors = sys.argv[4] if len(sys.argv) > 4 else "none,1"
    opts = {"adam": lambda: optax.adam(1e-3)}
    for f in floors.split(","):
        key = "no_kernel_floor" if f == "none" else f"kernel_floor_{float(f):g}"
        opts[key] = reading(None if f == "none" else (float(f), 1))
    probe5.compare(name, MODELS[name], steps, opts,
                   [int(s) for s in seeds.split(",")], per_seed=True)


if __name__ == "__main__":
    main()
