"""Continue meta-training a θ on long horizons, half of the draws from deep
narrow small-batch nets (an experiment; nothing here is shipped).

    python scripts/long_horizon_continuation.py OUT_DIR --steps 1000 \
        [--final-fraction 0.25] [--start mnemosyne/weights/default.eqx]

PES as the default preset (4 antithetic pairs, sign of the loss difference,
element-wise clipping at 3, 2 trajectories, 50-step windows) with horizons
drawn log-uniformly in 500-5,000 steps, tasks redrawn every 60 outer steps,
outer learning rate 1e-3, from `--start`. Each draw is, with probability ½,
one of the default preset's 24 configurations (`BroadFamily(24)`), else one of
12 deep narrow MLPs (depth 3-8, width 8-48) and teacher regressions at batch
4-16 (`noisy_configs`; none is a stress-validation configuration).
`--final-fraction` charges the end of each run
(`PersistentES(final_fraction=...)`). Checkpoints go to `OUT_DIR/ckpt`
(resumable), the iterates of the last third to `OUT_DIR/iterates`, their mean
to `OUT_DIR/mean.eqx`. The records of two such runs (1,000 outer steps, about
9 minutes each on the 2-core machine) are in `docs/results_effective_step/`.
"""

from __future__ import annotations

import argparse
import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import mnemosyne
from mnemosyne.meta import LogUniformTruncationSchedule, MetaTrainer, PersistentES
from mnemosyne.meta._presets import broad_configs
from mnemosyne.tasks import NoisyLabelMLP, TeacherRegression, load_dataset
from mnemosyne.tasks._base import ArrayScaledTask

WINDOW = 50


def noisy_configs(count: int = 12, seed: int = 1) -> dict:
    """`count` deep narrow small-batch configurations (name -> `key -> task`)."""
    rng = np.random.default_rng(seed)
    out = {}
    while len(out) < count:
        batch = int(rng.choice([4, 8, 16]))
        act = str(rng.choice(["relu", "tanh", "gelu"]))
        if rng.random() < 0.75:
            data = str(rng.choice(["digits", "wine", "breast_cancer", "iris"]))
            depth, width = int(rng.integers(3, 9)), int(rng.choice([8, 16, 24, 32, 48]))
            noise = float(rng.choice([0.0, 0.0, 0.1]))
            name = f"mlp_{data}_{depth}x{width}_{act}_b{batch}_noise{noise:g}"
            build = lambda key, d=data, h=(width,) * depth, a=act, b=batch, n=noise, \
                name=name: NoisyLabelMLP(load_dataset(d), hidden=h, activation=a,
                                         batch_size=b, label_noise=n, name=name,
                                         kind="mlp")
        else:
            depth, width = int(rng.integers(2, 5)), int(rng.choice([16, 32, 64]))
            s = int(rng.integers(1000, 2000))
            name = f"regression_{depth}x{width}_{act}_b{batch}_s{s}"
            build = lambda key, s=s, h=(width,) * depth, a=act, b=batch, name=name: \
                TeacherRegression.random(s, hidden=h, activation=a, noise=0.1,
                                         batch_size=b, name=name)
        out.setdefault(name, build)
    return out


class HalfNoisyFamily(eqx.Module):
    """Half the draws from `BroadFamily(24)`'s configurations, half from
    `noisy_configs()`, with the preset family's scale augmentations."""

    name: str = eqx.field(static=True, default="half_noisy_family")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(broad_configs(24, 0)) + tuple(noisy_configs())

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(n.split("_")[0] for n in self.names)

    def sample(self, key) -> ArrayScaledTask:
        k_half, k_pick, k_task, k_init, k_loss = jax.random.split(key, 5)
        noisy = bool(jax.random.bernoulli(k_half, 0.5))
        pool = noisy_configs() if noisy else broad_configs(24, 0)
        names = list(pool)
        name = names[int(jax.random.randint(k_pick, (), 0, len(names)))]
        log_uniform = lambda k, lo, hi: jnp.exp(
            jax.random.uniform(k, (), minval=np.log(lo), maxval=np.log(hi))
        )
        return ArrayScaledTask(
            pool[name](k_task), log_uniform(k_init, 0.2, 5.0),
            log_uniform(k_loss, 1e-2, 1e2),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--final-fraction", type=float, default=None)
    parser.add_argument("--start", default="mnemosyne/weights/default.eqx")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    trainer = MetaTrainer(
        mnemosyne.load(args.start), HalfNoisyFamily(),
        PersistentES(std=0.01, num_pairs=4, use_sign=True,
                     final_fraction=args.final_fraction),
        learning_rate=1e-3, max_grad_norm=1e3, max_grad_value=3.0, num_tasks=2,
        unroll_length=WINDOW, horizon=LogUniformTruncationSchedule(500, 5000, WINDOW),
        task_resample_every=60, checkpoint_dir=out / "ckpt", checkpoint_every=20,
        key=jax.random.key(101),
    )
    trainer.run(0, resume=True, progress=False)
    first = args.steps * 2 // 3
    while trainer.step < args.steps:
        lopt, history = trainer.run(min(args.steps, trainer.step + 20), progress=False)
        if trainer.step >= first and trainer.step % 20 == 0:
            (out / "iterates").mkdir(parents=True, exist_ok=True)
            mnemosyne.save(out / "iterates" / f"theta-{trainer.step:06d}.eqx", lopt)
        print(f"step {trainer.step} meta-loss "
              f"{np.mean(history['meta_loss'][-20:]):.4f}", flush=True)
    iterates = [mnemosyne.load(p) for p in sorted((out / "iterates").glob("*.eqx"))]
    mean = jax.tree.map(lambda *xs: jnp.mean(jnp.stack(xs), axis=0), *iterates)
    mnemosyne.save(out / "mean.eqx", mean)


if __name__ == "__main__":
    main()
