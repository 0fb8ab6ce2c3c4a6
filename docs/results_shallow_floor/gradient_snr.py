"""Does the gradient's signal-to-noise tell the long runs the shallow floor
helps from those it costs? (Session 35, a diagnostic.)

    python docs/results_shallow_floor/gradient_snr.py TASK STEPS [FLOOR]

Trains the suite task TASK with the shipped θ read with
`step_shallow_floor=(FLOOR, 2)` (default 1, the reading the record was
measured with; 0.75 ships) for STEPS steps (seed 0) and prints, at every
eighth of the run, the mean over the model's matrices of $r = \\|\\bar
g\\|^2 / \\sum \\overline{g^2}$ (exponential means with decay 0.99, the
gradient's mean over its second moment; about $(1 - 0.99)/(1 + 0.99)
\\approx 0.005$ for pure noise, 1 for a constant gradient) and the mean loss
of the last 100 steps.
Record: `gradient_snr.log`.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mnemosyne
from mnemosyne.tasks import get_task

DECAY = 0.99


def main(name, steps, floor=1.0):
    task = get_task(name)
    lopt = mnemosyne.reconfigure(
        mnemosyne.pretrained(), step_shallow_floor=(floor, 2)
    )
    tx = mnemosyne.mnemosyne(lopt=lopt)
    params = task.init(jax.random.key(0))
    state = tx.init(params)
    mean = jax.tree.map(jnp.zeros_like, params)
    square = jax.tree.map(jnp.zeros_like, params)

    @jax.jit
    def step(params, state, mean, square, key):
        loss, g = jax.value_and_grad(task.loss)(params, task.sample_batch(key))
        mean = jax.tree.map(lambda a, x: DECAY * a + (1 - DECAY) * x, mean, g)
        square = jax.tree.map(lambda a, x: DECAY * a + (1 - DECAY) * x * x, square, g)
        updates, state = tx.update(g, state, params)
        return optax.apply_updates(params, updates), state, mean, square, loss

    key, losses, marks = jax.random.key(1), [], []
    for t in range(steps):
        params, state, mean, square, loss = step(
            params, state, mean, square, jax.random.fold_in(key, t)
        )
        losses.append(float(loss))
        if (t + 1) % (steps // 8) == 0:
            ratios = [
                float(jnp.sum(a**2) / jnp.sum(b))
                for a, b in zip(jax.tree.leaves(mean), jax.tree.leaves(square),
                                strict=True)
                if a.ndim >= 2
            ]
            marks.append(f"{t + 1}:{np.mean(ratios):.3f}"
                         f"(loss {np.mean(losses[-100:]):.3g})")
    print(name, " ".join(marks), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:4]))
