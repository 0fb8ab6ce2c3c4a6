"""Per-tensor spike ratios over whole runs of probe models (session 25).

    python docs/results_spike_floor/spike_ratios.py NAME[,NAME...] SCALE SEEDS

For each model of the fifth and sixth probes (or a deep tiny-batch MLP named
below), at SCALE times its probe steps, trains the shipped θ read without
the spike guard (the reading of session 24) and traces each tensor's spike
ratio of Eq. (G), $r_t = \\operatorname{rms}(g_t) / \\sigma_t$ with $\\sigma_t$
the running scale of Eq. (S) (the same second moment, $\\beta_2$ = 0.999,
tracked beside the optimizer). Over the last three quarters of the run it
prints the percentiles of $r_t$ over tensors and steps, and the share of
steps whose largest $r_t$ exceeds 2, 3 and 5.
"""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

DOCS = pathlib.Path(__file__).parents[1]
sys.path.insert(0, str(DOCS / "results_fifth_probe"))
sys.path.insert(0, str(DOCS / "results_sixth_probe"))
import probe5  # noqa: E402
import probe6  # noqa: E402

import mnemosyne  # noqa: E402

DEEP = {  # (model, steps): run at these steps whatever SCALE
    "digits_6x16_relu_b8": (
        lambda: probe5.digits_mlp((16,) * 6, jax.nn.relu, 8), 10200),
    "digits_5x24_relu_b4": (
        lambda: probe5.digits_mlp((24,) * 5, jax.nn.relu, 4), 4000),
}
MODELS = {**probe5.PROBES, **probe6.PROBES, **DEEP}


def trace(make, steps, seed, tx):
    """Losses `(steps,)` and spike ratios `(steps, tensors)` of one run."""
    init, loss = make()
    key = jax.random.key(seed)
    params = init(jax.random.fold_in(key, 0))

    def step(carry, t):
        params, state, nu = carry
        value, g = jax.value_and_grad(loss)(params, jax.random.fold_in(key, t + 1))
        nu = jax.tree.map(lambda n, x: 0.999 * n + 0.001 * x * x, nu, g)
        correction = 1 - 0.999 ** (t + 1.0)
        ratios = jnp.stack([
            jnp.sqrt(jnp.mean(x * x)) / (jnp.sqrt(jnp.mean(n) / correction) + 1e-30)
            for x, n in zip(jax.tree.leaves(g), jax.tree.leaves(nu), strict=True)
        ])
        u, state = tx.update(g, state, params)
        return (optax.apply_updates(params, u), state, nu), (value, ratios)

    carry = (params, tx.init(params), jax.tree.map(jnp.zeros_like, params))
    _, (losses, ratios) = jax.jit(
        lambda c: jax.lax.scan(step, c, jnp.arange(steps)))(carry)
    return np.asarray(losses), np.asarray(ratios)


def main():
    names, scale = sys.argv[1].split(","), float(sys.argv[2])
    seeds = [int(s) for s in sys.argv[3].split(",")]
    lopt = mnemosyne.reconfigure(mnemosyne.pretrained(), step_spike_guard=None)
    for name in names:
        make, steps = MODELS[name]
        steps = steps if name in DEEP else int(steps * scale)
        for seed in seeds:
            _, ratios = trace(make, steps, seed, mnemosyne.mnemosyne(lopt=lopt))
            late = ratios[steps // 4:]
            largest = late.max(1)
            p50, p99, p999 = np.percentile(late, [50, 99, 99.9])
            print(f"{name:30s} seed {seed} steps {steps} | r p50 {p50:.2f} "
                  f"p99 {p99:.2f} p99.9 {p999:.2f} max {late.max():.1f} | steps "
                  f"with largest r > 2: {np.mean(largest > 2):.4f}, > 3: "
                  f"{np.mean(largest > 3):.4f}, > 5: {np.mean(largest > 5):.4f}",
                  flush=True)


if __name__ == "__main__":
    main()
