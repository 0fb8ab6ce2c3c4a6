"""What a spike looks like to the spike guard (session 26).

    python docs/results_spike_signals/spike_signals.py NAME:STEPS:SEED ... \\
        [--reading shipped|depth] [--gate C] [--fixed M]

Trains one model of the fifth to eighth probes (or a deep tiny-batch
MLP of `spike_ratios.py`) with the shipped θ and, per tensor and step, records
what Eq. (G) reads: the spike ratio $r_t = \\operatorname{rms}(g_t)/\\sigma_t$,
the running scale $\\sigma_t$ of Eq. (S), the agreement $a_t$ of Eq. (A1)
and the new multiplier. It does so by wrapping the JAX backend's kernels
`spike_penalty` and `log_step_scale` in this process (ordered debug
callbacks; the arithmetic is unchanged), so it is slow: minutes per run.

`--reading shipped` (default) reads θ as shipped (spike guard on);
`--reading depth` reads it as session 24 did (the depth floor alone; the
guard's strength set to 0, so the ratios are still computed but never act).
`--gate C` instead changes the guard, in this process only: a spike counts
only where the tensor's agreement is below -C at that step. `--fixed M`
holds every multiplier at M (session 27): θ read with `step_scale_range=(1,
1)` and no depth floor (the guard's ratios are still computed but cannot
act), trained at `learning_rate=M`.

Per run it prints, over the steps from 1,000 on (where the guard reads):
the share of (tensor, step) entries with $r_t > 3$, the agreement over all
entries and at those spikes (mean, share below -0.5), and for each eighth of
the run the mean loss, the spike share, the mean agreement over all entries
and at spikes and the trend of $\\log\\sigma_t$ over the last 1,000 steps at
spikes.
"""

import argparse
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

DOCS = pathlib.Path(__file__).parents[1]
for folder in ("results_fifth_probe", "results_sixth_probe", "results_spike_floor",
               "results_seventh_probe", "results_eighth_probe"):
    sys.path.insert(0, str(DOCS / folder))
import probe7  # noqa: E402
import probe8  # noqa: E402
import spike_ratios  # noqa: E402

import mnemosyne  # noqa: E402
from mnemosyne.backends import _jax as jax_backend  # noqa: E402

MODELS = {**spike_ratios.MODELS, **probe7.PROBES, **probe8.PROBES}
RATIOS, RECORDS = [], []  # filled by the wrapped kernels, one entry per call


def wrap_kernels(gate):
    """Wrap the backend's `spike_penalty` and `log_step_scale` so that each
    call records, per tensor, `(ratio, log sigma)` and `(agreement, log
    multiplier)`; with `gate`, spikes count only where agreement < -gate."""
    penalty_kernel, scale_kernel = (jax_backend.spike_penalty,
                                    jax_backend.log_step_scale)

    def spike_penalty(g_rms, mean_nu, count, decay, limit, strength):
        correction = 1.0 / -jnp.expm1(jnp.asarray(count, g_rms.dtype) * np.log(decay))
        sigma = jnp.sqrt(mean_nu * correction) + jax_backend.SCALE_FLOOR
        jax.debug.callback(lambda r, s: RATIOS.append((np.ravel(r), np.ravel(s))),
                           g_rms / sigma, jnp.log(sigma), ordered=True)
        return penalty_kernel(g_rms, mean_nu, count, decay, limit, strength)

    def log_step_scale(log_scale, agreement, *args):
        if gate is not None:  # args: rate, threshold, low, high, penalty, ...
            args = (*args[:4], jnp.where(agreement < -gate, args[4], 0.0), *args[5:])
        out = scale_kernel(log_scale, agreement, *args)
        jax.debug.callback(lambda a, o: RECORDS.append((np.ravel(a), np.ravel(o))),
                           agreement, out, ordered=True)
        return out

    jax_backend.spike_penalty = spike_penalty
    jax_backend.log_step_scale = log_step_scale


def run(name, steps, seed, lopt, learning_rate=1.0):
    """Losses `(steps,)` and, per step and tensor, ratio, log sigma,
    agreement and log multiplier, each `(steps, tensors)`."""
    init, loss = MODELS[name][0]()
    key = jax.random.key(seed)
    params = init(jax.random.fold_in(key, 0))
    tx = mnemosyne.mnemosyne(learning_rate, lopt=lopt)
    state = tx.init(params)

    @jax.jit
    def step(params, state, t):
        value, g = jax.value_and_grad(loss)(params, jax.random.fold_in(key, t + 1))
        u, state = tx.update(g, state, params)
        return optax.apply_updates(params, u), state, value

    RATIOS.clear()
    RECORDS.clear()
    losses = []
    for t in range(steps):
        params, state, value = step(params, state, t)
        losses.append(float(value))
    jax.effects_barrier()

    def per_step(records, i):
        calls = len(records) // steps
        chunks = [records[s * calls:(s + 1) * calls] for s in range(steps)]
        return np.array([np.concatenate([r[i] for r in chunk]) for chunk in chunks])

    return (np.array(losses), per_step(RATIOS, 0), per_step(RATIOS, 1),
            per_step(RECORDS, 0), per_step(RECORDS, 1))


def share(x):
    return f"{np.mean(x):.3f}" if np.size(x) else "-"


def mean(x):
    return f"{np.mean(x):+.3f}" if np.size(x) else "-"


def report(name, seed, steps, losses, ratio, log_sigma, agreement, log_scale):
    late = slice(1000, None)
    spikes = ratio[late] > 3
    a = agreement[late]
    window = max(1, steps // 20)
    print(f"{name} seed {seed} steps {steps}: final {losses[-window:].mean():.4g} | "
          f"spikes {share(spikes)} | agreement all {mean(a)}, "
          f"at spikes {mean(a[spikes])} "
          f"(share < -0.5: {share(a[spikes] < -0.5)}) | multipliers at the end "
          f"{' '.join(f'{m:.3f}' for m in np.exp(log_scale[-1]))}", flush=True)
    for k in range(8):
        t = np.arange(k * steps // 8, (k + 1) * steps // 8)
        t = t[t >= 1000]
        if not t.size:
            continue
        spk = ratio[t] > 3
        trend = log_sigma[t] - log_sigma[t - 1000]
        print(f"  eighth {k}: loss {losses[t].mean():.4g} | spikes {share(spk)} | "
              f"agreement {mean(agreement[t])}, "
              f"at spikes {mean(agreement[t][spk])} | log sigma trend at "
              f"spikes {mean(trend[spk])} | multiplier "
              f"{np.exp(log_scale[t]).mean():.3f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="NAME:STEPS:SEED")
    parser.add_argument("--reading", choices=("shipped", "depth"), default="shipped")
    parser.add_argument("--gate", type=float, default=None)
    parser.add_argument("--fixed", type=float, default=None)
    args = parser.parse_args()
    lopt = mnemosyne.pretrained()
    if args.reading == "depth":
        limit, _, recovery = lopt.step_spike_guard
        lopt = mnemosyne.reconfigure(lopt, step_spike_guard=(limit, 0.0, recovery))
    if args.fixed is not None:
        lopt = mnemosyne.reconfigure(lopt, step_scale_range=(1.0, 1.0),
                                     step_depth_floor=None)
    wrap_kernels(args.gate)
    for spec in args.runs:
        name, steps, seed = spec.split(":")
        rate = 1.0 if args.fixed is None else args.fixed
        records = run(name, int(steps), int(seed), lopt, rate)
        report(name, int(seed), int(steps), *records)


if __name__ == "__main__":
    main()
