"""Named meta-training presets: what `mnemosyne meta-train --preset NAME` runs.

A preset fixes the learned optimizer's constructor, the meta-training task
distribution, the meta-gradient estimator, the trainer settings, the number of
outer steps and the seed, so the shipped weights are reproducible from one
command. The learned optimizers (Mnemosyne and the LSTM baselines) share one
meta-training distribution and budget ("same meta-training budget").

The distribution leaves whole task kinds out (`HELD_OUT_KINDS`: CNNs and every
Transformer task), so evaluating on them measures generalisation. It is a small
fixed set of task *configurations* (quadratics, Rosenbrock, logistic regression
and MLPs on scikit-learn's bundled datasets) with parameter- and loss-scale
augmentation whose factors are array leaves, not static fields: every draw of a
configuration reuses one compiled outer step, which keeps meta-training within
minutes on two CPU cores.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._types import PRNGKeyArray
from ..tasks import HELD_OUT_KINDS, MLPClassifier, Quadratic, Rosenbrock, load_dataset
from ._estimators import AbstractGradientEstimator, TruncatedBPTT
from ._trainer import MetaTrainer, plot_history

__all__ = ["PRESETS", "Preset", "PresetFamily", "train_preset", "list_presets"]


class _ArrayScaledTask(eqx.Module):
    """Parameter/loss-scale augmentation with the factors as array leaves
    (unlike `tasks.ScaledTask`, whose static factors force one compile per draw)."""

    task: Any
    init_scale: jax.Array
    loss_scale: jax.Array

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def kind(self) -> str:
        return self.task.kind

    def init(self, key):
        return jax.tree.map(lambda p: p * self.init_scale, self.task.init(key))

    def loss(self, params, batch):
        return self.loss_scale * self.task.loss(params, batch)

    def sample_batch(self, key):
        return self.task.sample_batch(key)

    def eval_batch(self):
        return self.task.eval_batch()


def _mlp(dataset, hidden, activation, batch_size=64):
    kind = "mlp" if hidden else "logreg"
    shape = "x".join(map(str, hidden)) or "linear"
    return lambda key: MLPClassifier(
        load_dataset(dataset), hidden=tuple(hidden), activation=activation,
        batch_size=batch_size, name=f"{kind}_{dataset}_{shape}_{activation}", kind=kind,
    )


def _quadratic(dim, noise):
    def build(key):
        cond = float(jax.random.uniform(key, (), minval=0.5, maxval=3.5))
        return Quadratic.random(key, dim, cond, noise, f"quadratic_d{dim}_n{noise:g}")
    return build


def _rosenbrock(dim):
    return lambda key: Rosenbrock(dim=dim, name=f"rosenbrock_d{dim}")


# (builder, weight, init-scale range, loss-scale range)
_CONFIGS: tuple[tuple[str, Callable, float, tuple[float, float], tuple[float, float]], ...] = (
    ("quadratic_d20", _quadratic(20, 0.0), 1.0, (1.0, 1.0), (0.1, 10.0)),
    ("quadratic_d50_noisy", _quadratic(50, 0.1), 1.0, (1.0, 1.0), (0.1, 10.0)),
    ("rosenbrock_d3", _rosenbrock(3), 1.0, (1.0, 1.0), (0.01, 1.0)),
    ("logreg_digits", _mlp("digits", (), "relu"), 1.0, (0.5, 2.0), (0.1, 10.0)),
    ("logreg_iris", _mlp("iris", (), "relu", 32), 0.5, (0.5, 2.0), (0.1, 10.0)),
    ("mlp_wine_16_gelu", _mlp("wine", (16,), "gelu"), 1.0, (0.5, 2.0), (0.1, 10.0)),
    ("mlp_breast_cancer_64_tanh", _mlp("breast_cancer", (64,), "tanh"), 1.0, (0.5, 2.0), (0.1, 10.0)),
    ("mlp_digits_16x16_relu", _mlp("digits", (16, 16), "relu", 128), 1.5, (0.5, 2.0), (0.1, 10.0)),
    ("mlp_iris_32x32_tanh", _mlp("iris", (32, 32), "tanh", 32), 1.0, (0.5, 2.0), (0.1, 10.0)),
)


class PresetFamily(eqx.Module):
    """The presets' meta-training distribution: a weighted choice among a few
    fixed task configurations, each with log-uniform init/loss-scale
    augmentation (array leaves, so one compile per configuration)."""

    names: tuple[str, ...] = eqx.field(static=True)
    name: str = eqx.field(static=True, default="preset_family", kw_only=True)

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(_build(n, jax.random.key(0)).kind for n in self.names)

    def sample(self, key) -> _ArrayScaledTask:
        k_pick, k_task = jax.random.split(key)
        weights = np.asarray([_CONFIG_MAP[n][1] for n in self.names], np.float64)
        index = int(jax.random.choice(k_pick, len(weights), p=weights / weights.sum()))
        return _build(self.names[index], k_task)


_CONFIG_MAP = {c[0]: c[1:] for c in _CONFIGS}


def _build(name: str, key) -> _ArrayScaledTask:
    builder, _, init_range, loss_range = _CONFIG_MAP[name]
    k_task, k_init, k_loss = jax.random.split(key, 3)

    def log_uniform(k, lo, hi):
        return jnp.exp(jax.random.uniform(k, (), minval=np.log(lo), maxval=np.log(hi)))

    return _ArrayScaledTask(builder(k_task), log_uniform(k_init, *init_range), log_uniform(k_loss, *loss_range))


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named, reproducible meta-training run.

    Attributes:
        name: the preset's name.
        make_lopt: `key -> learned optimizer` (the untrained θ).
        lopt_description: the constructor call, for the training record.
        family: the meta-training task family.
        estimator: the meta-gradient estimator.
        trainer: keyword arguments for [`MetaTrainer`][mnemosyne.meta.MetaTrainer].
        num_outer_steps: outer steps to take.
        seed: seeds θ's initialisation and the trainer's key.
        held_out_kinds: task kinds deliberately absent from `family`.
    """

    name: str
    make_lopt: Callable[[PRNGKeyArray], Any]
    lopt_description: str
    family: Any
    estimator: AbstractGradientEstimator
    trainer: dict
    num_outer_steps: int
    seed: int = 0
    held_out_kinds: frozenset[str] = HELD_OUT_KINDS

    def config(self) -> dict:
        """JSON-friendly description of the preset."""
        est = {f.name: getattr(self.estimator, f.name) for f in dataclasses.fields(self.estimator)}
        return {
            "lopt": self.lopt_description,
            "family": list(self.family.names),
            "estimator": {"class": type(self.estimator).__name__, **{k: _jsonable(v) for k, v in est.items()}},
            "trainer": {k: _jsonable(v) for k, v in self.trainer.items()},
            "num_outer_steps": self.num_outer_steps,
            "seed": self.seed,
            "held_out_kinds": sorted(self.held_out_kinds),
        }


def _jsonable(v):
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    return repr(v)


def _mnemosyne(key):
    from .._lopt import CoordinatewiseMnemosyne

    return CoordinatewiseMnemosyne(key=key)


def _lstm(features):
    def make(key):
        from ..baselines import LSTMOptimizer

        return LSTMOptimizer(features=features, key=key)
    return make


# Few configurations: each costs one compile of the outer step (about a minute
# on a loaded 2-core machine), which dominates a short meta-training run.
_FAMILY = PresetFamily(("quadratic_d20", "rosenbrock_d3", "logreg_digits", "mlp_digits_16x16_relu"))
_ESTIMATOR = TruncatedBPTT(meta_loss="mean_log", stop_gradient_features=True)
_FAST_COMPILE = {"xla_backend_optimization_level": 0}
_TRAINER = dict(
    learning_rate=3e-3, max_grad_norm=1.0, num_tasks=4, unroll_length=20, horizon=200,
    compiler_options=_FAST_COMPILE,
)
_OUTER_STEPS = 200

PRESETS: dict[str, Preset] = {
    "default": Preset("default", _mnemosyne, "CoordinatewiseMnemosyne()", _FAMILY, _ESTIMATOR, _TRAINER, _OUTER_STEPS),
    "lstm": Preset("lstm", _lstm("gradient"), 'LSTMOptimizer(features="gradient")', _FAMILY, _ESTIMATOR, _TRAINER, _OUTER_STEPS),
    "lstm_multiscale": Preset(
        "lstm_multiscale", _lstm("multiscale"), 'LSTMOptimizer(features="multiscale")', _FAMILY, _ESTIMATOR, _TRAINER, _OUTER_STEPS
    ),
    "quick": Preset(
        "quick", _mnemosyne, "CoordinatewiseMnemosyne()", PresetFamily(("quadratic_d20",), name="quick_family"),
        _ESTIMATOR, dict(learning_rate=3e-3, num_tasks=2, unroll_length=5, horizon=10, compiler_options=_FAST_COMPILE), 3,
    ),
}
"""The named presets. `default` produces `weights/default.eqx`; `lstm` and
`lstm_multiscale` the LSTM baselines with the same distribution, estimator and
budget; `quick` is a seconds-long smoke run for tests and CI."""


def list_presets() -> list[str]:
    """Names of the presets."""
    return sorted(PRESETS)


def train_preset(
    name: str,
    *,
    output: str | os.PathLike | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = True,
    progress: bool = True,
    num_outer_steps: int | None = None,
):
    """Run a preset's meta-training.

    Args:
        name: a key of [`PRESETS`][mnemosyne.meta.PRESETS].
        output: if given, save the weights there with [`mnemosyne.save`][], a
            JSON training record at `<output>.json` and the meta-training curve
            at `<output>.png`.
        checkpoint_dir: where the trainer writes resumable checkpoints.
        resume: continue from the latest checkpoint in `checkpoint_dir`.
        progress: show a progress bar.
        num_outer_steps: override the preset's outer step count.

    Returns:
        `(lopt, history)`.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {list_presets()}")
    preset = PRESETS[name]
    steps = preset.num_outer_steps if num_outer_steps is None else int(num_outer_steps)
    k_lopt, k_train = jax.random.split(jax.random.key(preset.seed))
    trainer = MetaTrainer(
        preset.make_lopt(k_lopt), preset.family, preset.estimator,
        checkpoint_dir=checkpoint_dir, key=k_train, **preset.trainer,
    )
    start = time.perf_counter()
    lopt, history = trainer.run(steps, resume=resume, progress=progress)
    wall = time.perf_counter() - start
    if output is not None:
        from .._serialisation import save

        output = os.fspath(output)
        save(output, lopt)
        losses = [x for x in history["meta_loss"] if np.isfinite(x)]
        tail = losses[-max(1, len(losses) // 10):] if losses else []
        record = {
            "preset": name,
            "config": {**preset.config(), "num_outer_steps": steps},
            "num_outer_steps": int(trainer.step),
            "wall_time_s": round(wall, 1),
            "wall_time_note": "this process only; excludes earlier runs resumed from checkpoints",
            "final_meta_loss": float(np.mean(tail)) if tail else None,
            "skipped_steps": int(np.sum(history["skipped"])),
            "task_kinds": sorted(preset.family.kinds),
            "task_configurations": sorted({str(t) for t in history["task"]}),
            "held_out_kinds": sorted(preset.held_out_kinds),
            "machine": {
                "cpu_count": os.cpu_count(),
                "platform": platform.platform(),
                "processor": platform.processor(),
                "jax": jax.__version__,
                "jax_backend": jax.default_backend(),
            },
        }
        with open(output + ".json", "w") as f:
            json.dump(record, f, indent=2)
        plot_history(history, output + ".png")
    return lopt, history
