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
import functools
import json
import os
import pathlib
import platform
import time
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._distributed import is_main_process
from .._serialisation import reconfigure
from .._types import PRNGKeyArray
from ..tasks import (
    HELD_OUT_KINDS,
    CNNClassifier,
    MaskedLM,
    MLPClassifier,
    NoisyLabelMLP,
    Quadratic,
    RNNClassifier,
    Rosenbrock,
    ScaledTask,
    SequenceLM,
    TeacherRegression,
    ViTClassifier,
    load_dataset,
)
from ..tasks._base import ArrayScaledTask
from ._checkpoint import CheckpointError
from ._estimators import AbstractGradientEstimator, PersistentES, TruncatedBPTT
from ._plots import plot_history
from ._trainer import MetaTrainer
from ._unroll import LogUniformTruncationSchedule

__all__ = ["PRESETS", "Preset", "PresetFamily", "train_preset", "list_presets"]


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
_CONFIGS: tuple[
    tuple[str, Callable, float, tuple[float, float], tuple[float, float]], ...
] = (
    ("quadratic_d20", _quadratic(20, 0.0), 1.0, (1.0, 1.0), (0.1, 10.0)),
    ("quadratic_d50_noisy", _quadratic(50, 0.1), 1.0, (1.0, 1.0), (0.1, 10.0)),
    ("rosenbrock_d3", _rosenbrock(3), 1.0, (1.0, 1.0), (0.01, 1.0)),
    ("logreg_digits", _mlp("digits", (), "relu"), 1.0, (0.5, 2.0), (0.1, 10.0)),
    ("logreg_iris", _mlp("iris", (), "relu", 32), 0.5, (0.5, 2.0), (0.1, 10.0)),
    ("mlp_wine_16_gelu", _mlp("wine", (16,), "gelu"), 1.0, (0.5, 2.0), (0.1, 10.0)),
    (
        "mlp_breast_cancer_64_tanh",
        _mlp("breast_cancer", (64,), "tanh"),
        1.0,
        (0.5, 2.0),
        (0.1, 10.0),
    ),
    (
        "mlp_digits_16x16_relu",
        _mlp("digits", (16, 16), "relu", 128),
        1.5,
        (0.5, 2.0),
        (0.1, 10.0),
    ),
    (
        "mlp_iris_32x32_tanh",
        _mlp("iris", (32, 32), "tanh", 32),
        1.0,
        (0.5, 2.0),
        (0.1, 10.0),
    ),
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

    def sample(self, key) -> ArrayScaledTask:
        k_pick, k_task = jax.random.split(key)
        weights = np.asarray([_CONFIG_MAP[n][1] for n in self.names], np.float64)
        index = int(jax.random.choice(k_pick, len(weights), p=weights / weights.sum()))
        return _build(self.names[index], k_task)


_CONFIG_MAP = {c[0]: c[1:] for c in _CONFIGS}


def _build(name: str, key) -> ArrayScaledTask:
    builder, _, init_range, loss_range = _CONFIG_MAP[name]
    k_task, k_init, k_loss = jax.random.split(key, 3)

    def log_uniform(k, lo, hi):
        return jnp.exp(jax.random.uniform(k, (), minval=np.log(lo), maxval=np.log(hi)))

    return ArrayScaledTask(
        builder(k_task),
        log_uniform(k_init, *init_range),
        log_uniform(k_loss, *loss_range),
    )


# --------------------------------------------------------------------------- #
# v2: a broad distribution of task configurations
# --------------------------------------------------------------------------- #

_DATASETS = ("digits", "wine", "breast_cancer", "iris")
_ACTIVATIONS = ("relu", "tanh", "gelu")
_WIDTHS = (8, 16, 32, 64, 128, 256, 512)
_BATCHES = (4, 8, 16, 32, 64, 128, 256, 512)
_WORK_CAP = 2**22  # batch x parameters of one inner step, to bound a step's cost


def _broad_config(rng: np.random.Generator) -> tuple[str, Callable]:
    """One task configuration of the broad v2 distribution (a name and a
    `key -> task` builder), drawn with `rng`."""

    kind = str(
        rng.choice(
            [
                "mlp",
                "mlp",
                "mlp",
                "mlp",
                "logreg",
                "regression",
                "rnn",
                "cnn",
                "lm",
                "quadratic",
            ]
        )
    )
    batch = int(rng.choice(_BATCHES))
    if kind in ("mlp", "logreg"):
        dataset = str(rng.choice(_DATASETS))
        depth = 0 if kind == "logreg" else int(rng.integers(1, 9))
        width = int(rng.choice(_WIDTHS))
        while depth and batch * (64 * width + (depth - 1) * width * width) > _WORK_CAP:
            width //= 2
        activation = str(rng.choice(_ACTIVATIONS))
        noise = float(rng.choice([0.0, 0.0, 0.1, 0.3]))
        shape = f"{depth}x{width}_{activation}" if depth else "linear"
        name = f"{kind}_{dataset}_{shape}_b{batch}_noise{noise:g}"
        hidden = (width,) * depth
        return name, lambda key: NoisyLabelMLP(
            load_dataset(dataset), hidden=hidden, activation=activation,
            batch_size=batch, label_noise=noise, name=name, kind=kind,
        )
    if kind == "regression":
        width, depth = int(rng.choice(_WIDTHS[:5])), int(rng.integers(1, 4))
        noise = float(rng.choice([0.01, 0.1, 0.5]))
        activation = str(rng.choice(_ACTIVATIONS))
        seed = int(rng.integers(1000))
        name = f"regression_{depth}x{width}_{activation}_b{batch}_noise{noise:g}"
        return name, lambda key: TeacherRegression.random(
            seed, hidden=(width,) * depth, activation=activation, noise=noise,
            batch_size=batch, name=name,
        )
    if kind == "rnn":
        hidden = int(rng.choice([16, 32, 64]))
        batch = min(batch, 128)
        name = f"rnn_digits_h{hidden}_b{batch}"
        return name, lambda key: RNNClassifier(
            load_dataset("digits"), hidden=hidden, batch_size=batch, name=name
        )
    if kind == "cnn":
        channels = tuple(int(c) for c in rng.choice([(4, 8), (8, 16)]))
        batch = min(batch, 64)
        name = f"cnn_digits_c{channels[0]}_{channels[1]}_b{batch}"
        return name, lambda key: CNNClassifier(
            load_dataset("digits"), channels=channels, batch_size=batch, name=name
        )
    if kind == "lm":
        problem = str(rng.choice(["copy", "reverse", "sort"]))
        d_model, layers = int(rng.choice([16, 32])), int(rng.integers(1, 3))
        batch = int(rng.choice([8, 16, 32]))
        name = f"lm_{problem}_d{d_model}_l{layers}_b{batch}"
        return name, lambda key: SequenceLM(
            problem,
            d_model=d_model,
            num_layers=layers,
            num_heads=4,
            batch_size=batch,
            name=name,
        )
    dim, noise = int(rng.choice([10, 50, 200])), float(rng.choice([0.0, 0.1, 1.0]))
    name = f"quadratic_d{dim}_n{noise:g}"
    return name, _quadratic(dim, noise)


@functools.lru_cache(maxsize=8)
def broad_configs(count: int, seed: int = 0) -> dict[str, Callable]:
    """`count` distinct task configurations of the v2 distribution, drawn with
    a fixed seed (each costs one compile of the outer step, so the
    distribution is a finite, broad sample rather than a fresh draw per task).
    Cached: a family draws from it on every sample; do not mutate the result."""
    rng = np.random.default_rng(seed)
    configs: dict[str, Callable] = {}
    while len(configs) < count:
        name, build = _broad_config(rng)
        configs.setdefault(name, build)
    return configs


class BroadFamily(eqx.Module):
    """The v2 meta-training distribution: `count` task configurations drawn
    once with `seed` by `broad_configs` (MLPs of depth 1-8 and width 8-512,
    logistic regression, teacher regression, RNNs, CNNs, causal Transformer LMs
    and quadratics; batch sizes 4-512; label and target noise), each task with
    log-uniform parameter-scale ([0.2, 5]) and loss-scale ([1e-2, 1e2])
    augmentation as array leaves."""

    count: int = eqx.field(static=True)
    seed: int = eqx.field(static=True, default=0)
    name: str = eqx.field(static=True, default="broad_family", kw_only=True)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(broad_configs(self.count, self.seed))

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(n.split("_")[0] for n in self.names)

    def sample(self, key) -> ArrayScaledTask:
        k_pick, k_task, k_init, k_loss = jax.random.split(key, 4)
        configs = broad_configs(self.count, self.seed)
        names = list(configs)
        index = int(jax.random.randint(k_pick, (), 0, len(names)))
        log_uniform = lambda k, lo, hi: jnp.exp(
            jax.random.uniform(k, (), minval=np.log(lo), maxval=np.log(hi))
        )
        return ArrayScaledTask(
            configs[names[index]](k_task), log_uniform(k_init, 0.2, 5.0),
            log_uniform(k_loss, 1e-2, 1e2),
        )

@dataclasses.dataclass(frozen=True)
class Preset:
    r"""A named, reproducible meta-training run.

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
        average: `(first, every)`: ship the mean of θ after outer steps
            `first, first + every, ..., num_outer_steps` (Polyak averaging of
            the outer iterates, which removes much of the ES noise in any one
            iterate); `None`: θ after the last step.
        shrink: ship $\theta_0 + \lambda(\bar\theta - \theta_0)$ with
            $\lambda$ = `shrink` and $\theta_0$ the untrained θ: a step back
            toward the hand-designed optimizer it was initialised as (1: none).
        read_with: constructor settings the shipped θ is read with instead of
            those it was meta-trained with (`mnemosyne.reconfigure`: θ's arrays
            unchanged), chosen after meta-training on held-out tasks as
            `shrink` is; `None`: none.
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
    average: tuple[int, int] | None = None
    shrink: float = 1.0
    read_with: dict[str, Any] | None = None

    def untrained(self):
        """θ₀: the preset's untrained learned optimizer, drawn from its seed
        as `meta_train` draws it."""
        return self.make_lopt(jax.random.split(jax.random.key(self.seed))[0])

    def config(self) -> dict:
        """JSON-friendly description of the preset."""
        est = {
            f.name: getattr(self.estimator, f.name)
            for f in dataclasses.fields(self.estimator)
        }
        return {
            "lopt": self.lopt_description,
            "family": list(self.family.names),
            "estimator": {
                "class": type(self.estimator).__name__,
                **{k: _jsonable(v) for k, v in est.items()},
            },
            "trainer": {k: _jsonable(v) for k, v in self.trainer.items()},
            "num_outer_steps": self.num_outer_steps,
            "seed": self.seed,
            "held_out_kinds": sorted(self.held_out_kinds),
            "average": None if self.average is None else list(self.average),
            "shrink": self.shrink,
            "read_with": None if self.read_with is None else {
                k: _jsonable(v) for k, v in self.read_with.items()
            },
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


def _adaptive_settings(threshold, scale_range) -> dict:
    """`CoordinatewiseMnemosyne`'s step-adaptation settings, Eqs. (A1)-(A2)."""
    return {
        "step_adaptation": _STEP_ADAPTATION,
        "step_scale_range": scale_range,
        "step_agreement_threshold": threshold,
    }


def _mnemosyne_adaptive(threshold, scale_range):
    settings = _adaptive_settings(threshold, scale_range)

    def make(key):
        from .._lopt import CoordinatewiseMnemosyne

        return CoordinatewiseMnemosyne(**settings, key=key)
    return make


def _adaptive_description(threshold, scale_range):
    """The constructor call `_mnemosyne_adaptive(threshold, scale_range)` makes."""
    settings = _adaptive_settings(threshold, scale_range).items()
    args = ", ".join(f"{name}={value}" for name, value in settings if value is not None)
    return f"CoordinatewiseMnemosyne({args})"


def _mnemosyne_v1(key):
    from .._lopt import CoordinatewiseMnemosyne

    return CoordinatewiseMnemosyne(
        second_moment_decay=None, alpha=1e-2, magnitude_clip=4.0, direction_clip=None,
        step_timescales=(10.0, 100.0, 1000.0), sign_symmetric=False, key=key,
    )


_V1_DESCRIPTION = (
    "CoordinatewiseMnemosyne(second_moment_decay=None, alpha=1e-2, magnitude_clip=4.0, "
    "direction_clip=None, step_timescales=(10.0, 100.0, 1000.0), sign_symmetric=False)"
)


def _lstm(features):
    def make(key):
        from ..baselines import LSTMOptimizer

        return LSTMOptimizer(features=features, key=key)
    return make


# Few configurations: each costs one compile of the outer step (about a minute
# on a loaded 2-core machine), which dominates a short meta-training run.
_FAMILY = PresetFamily(
    ("quadratic_d20", "rosenbrock_d3", "logreg_digits", "mlp_digits_16x16_relu")
)
_ESTIMATOR = TruncatedBPTT(meta_loss="mean_log", stop_gradient_features=True)
_FAST_COMPILE = {"xla_backend_optimization_level": 0}
_TRAINER = dict(
    learning_rate=3e-3, max_grad_norm=1.0, num_tasks=4, unroll_length=20, horizon=200,
    compiler_options=_FAST_COMPILE,
)
_OUTER_STEPS = 200

# v2 (the shipped weights): PES over long log-uniform horizons on the broad
# distribution, sign of the loss difference, element-wise clipping at 3.
_WINDOW = 50
_V2_FAMILY = BroadFamily(24, seed=0)
_V2_ESTIMATOR = PersistentES(std=0.01, num_pairs=4, use_sign=True)
_V2_TRAINER = dict(
    learning_rate=2e-3, max_grad_norm=1e3, max_grad_value=3.0, num_tasks=2,
    unroll_length=_WINDOW, horizon=LogUniformTruncationSchedule(100, 2000, _WINDOW),
    checkpoint_every=20,
)
# The shipped θ: the mean of the PES iterates at outer steps 400, 420, ...,
# 600, moved three quarters of the way back to the untrained θ (picked on the
# validation and stress-validation tasks, see docs/results.md: the iterates
# themselves, and the mean moved less far back, ride the edge of stability on
# small-batch and Transformer tasks).
_V2_OUTER_STEPS = 600
_V2_AVERAGE = (400, 20)
_V2_SHRINK = 0.25
_V2_HELD_OUT = frozenset({"vit", "mlm", "prompt"})
# The rate kappa and range of Eq. (A2), hand-set: kappa = 0.003 with range
# (1/4, 4) moved the multiplier by at most 25% over 4,000-step runs and let the
# trained θ ruin deep narrow tiny-batch runs; 0.03 with (1/8, 2) ruined them
# too; 0.01 with (1/4, 2) ruined none (docs/results.md, "Step adaptation").
_STEP_ADAPTATION = 0.01
_STEP_SCALE_RANGE = (0.25, 2.0)
# The range the shipped θ is read with (`Preset.read_with`): the range it was
# meta-trained with. From session 17 to 21 it was read with the floor 1/32,
# chosen on two seeds of a 16-layer GELU MLP at batch 8 over 10,000 steps that
# climbed 37x with 1/4. On 24 seeds of that run (session 22) 1/32 ends 7 runs
# above 1.5x their best window, 1/4 11, Adam(1e-3) 11; and 1/32 made long runs
# of ordinary models anneal to a near stop: of fifteen long runs (6,000-16,000
# steps: three long-run configurations and the twelve hand-written models of
# docs/results_fifth_probe/ at 4x their steps) 1/4 ends lower on nine, 1/32 on
# three, and 1/4 ends at most Adam(1e-3)'s loss on 11, 1/32 on 8
# (docs/results.md, "The floor back at ¼").
_SHIPPED_STEP_SCALE_RANGE = _STEP_SCALE_RANGE
# The warm-up the shipped θ is read with (Eq. (W), `Preset.read_with`), hand-set
# after meta-training (session 18): causal LMs and a ViT of d_model 256, wider
# than anything meta-trained on or probed before, ended 1.6-4.2x *above*
# Adam(1e-3)'s loss without it (the first steps, at twice Adam's step, throw
# the Transformer onto a plateau the multiplier of (A2) shrinks too slowly to
# leave) and 3-140x below it with a linear warm-up from 1/10 over 200 steps
# (docs/results.md, "v2 read with a warm-up").
_SHIPPED_STEP_WARMUP = (0.1, 200)
# The width n_0 above which the shipped θ's step shrinks as sqrt(n_0 / n)
# (Eq. (N), `Preset.read_with`), hand-set after meta-training (sessions 20-21).
# With the warm-up alone a causal LM of d_model 512 climbed to 1.56x its best
# window (seed 0); with n_0 = 128 it ends at 0.032, 0.043 and 0.025 (seeds 0-2,
# worst 1.34x). n_0 = 32 cost the fourth probe (wider MLPs, CNNs, RNNs,
# Transformers) 4 of its 8 wins against Adam(1e-3) and ruined a d128 LM run;
# with 128 it keeps 8 of 8. Session 20 held 128 back because both d256 causal
# LMs climbed on seed 0; over seeds 0-2 (session 21) those LMs and a d256 ViT
# end lower with it on 10 of 12 runs (geometric means 1.1e-3 vs 1.8e-2,
# 5.9e-3 vs 9.8e-3, 0.018 vs 0.023), one ViT run above 1.5x its best window
# (2.61x; without it two runs, 1.55x and 1.56x): single runs of these
# Transformers move with rounding. No suite tensor is wider than 128
# (docs/results.md, "Width").
_SHIPPED_STEP_WIDTH_REFERENCE = 128
# The depth-aware floor (c, max floor) of the shipped θ's step multiplier
# (Eq. (D), `Preset.read_with`), hand-set after meta-training (session 24):
# the floor is min(1/2, max(1/4, 2/L)) for a model of L matrices. Every
# constant floor was a trade: 1/2 won the long noisy runs of models of at most
# four matrices that end 0.5-6% above Adam(1e-3) at 1/4, and cost deep nets
# at tiny batches (5-17 matrices). At 4x the fifth and sixth probes' steps it
# wins 11 of 15 and 10 of 12 against Adam (1/4: 8 of 15, 9 of 12); a sine fit
# and a batch-norm MLP (loss spikes) and a 2,000-token LM lose instead; the
# suite moves by at most 0.03% (docs/results.md, "A depth-aware floor").
_SHIPPED_STEP_DEPTH_FLOOR = (2.0, 0.5)
# The shallow floor (floor, max matrices) of the shipped θ's step multiplier
# (Eq. (D2), `Preset.read_with`), hand-set after meta-training (session 35): a
# model of at most two matrices (none included) keeps a multiplier of at least
# 3/4 where (D) gives 1/2. Long runs of such models at batch 16-128 keep
# descending at the floor: at 4x their steps a rating model ends at 0.00954
# against 0.0169 (Adam(1e-3) 0.0149), a skip-gram model at 0.347 against
# 0.432. Runs at their noise floor or that need the annealing pay: a 512-wide
# regression at batch 2 0.0900 against 0.0801 (Adam 0.0859, eight seeds), the
# batch-4 digits MLP at 10,000 steps 1.12x, full-batch matrix factorisation
# 2.4x (still below Adam). The floor 1 gains more and costs more (the batch-2
# regression 0.0946, matrix factorisation 4.4x, above Adam); 2/3 at three
# matrices made a batch-8 CNN end a run 3.7x above its best window
# (docs/results.md, "A higher floor for models of at most two matrices").
_SHIPPED_STEP_SHALLOW_FLOOR = (0.75, 2)
# The spike guard (K, strength, recovery) of the shipped θ's step multiplier
# (Eq. (G), `Preset.read_with`), hand-set after meta-training (session 25):
# the depth floor becomes a soft floor that only spikes cross (a tensor's
# gradient RMS above K = 3 times its running scale, read from step 1,000 on),
# down to 1/4, recovering at kappa * a_0 per step. The runs that lost with the
# depth floor spike and the smooth ones that gained do not, so the sine fit
# and the batch-norm MLP go back below Adam(1e-3) at 4x the probes' steps
# and the smooth runs keep the depth floor's losses (docs/results.md,
# "A spike guard").
_SHIPPED_STEP_SPIKE_GUARD = (3.0, 1.0, 5e-4)
# The floor of a convolution kernel's step multiplier in a deep model
# (Eq. (K), `Preset.read_with`), hand-set after meta-training (session 29):
# in a model of at least 5 matrices (where the depth floor falls below 1/2),
# tensors of four or more axes keep a multiplier of at least 1. Deep CNNs
# read like the deep nets the depth floor serves, yet want no descent: a
# 6-block residual CNN ends 15x lower at batch 32 (3.5e-4 against 5.5e-3;
# Adam 6.6e-4) and 2.4x lower at batch 8, a plain 4-layer CNN 5x lower over
# 8,000 steps (1.7e-3 against 8.1e-3; Adam 5.9e-3). Shallow CNNs are left
# alone: the floor 1 there moved the probes' two-convolution CNNs by -4% to
# +3% at batch 16-32 but cost 1.2-2x at batch 8 (docs/results.md, "A floor
# for the kernels of deep CNNs").
_SHIPPED_STEP_KERNEL_FLOOR = (1.0, 5)
# The shallow ceiling (C, a_1) of the shipped θ's step multiplier (Eq. (C),
# `Preset.read_with`), hand-set after meta-training (session 33): a model of L
# matrices may grow its multiplier to min(8, max(2, 8/L)) (8 for one matrix or
# none, 4 for two, 8/3 for three; models of four or more matrices are read as
# before), above 2 only while the agreement exceeds 0.3. Ungated, C = 8
# lowered 19 of 56 probe models and the suite's smooth shallow tasks (the
# quadratic 15x) but took a batch-1 logistic regression to its ceiling and
# 1.4x higher over 32,000 steps; the gate gives that run back. C = 16 (a
# ceiling of 4 at four matrices) made a full-batch sine fit and a PINN climb
# (docs/results.md, "A ceiling that rises for shallow models").
_SHIPPED_STEP_SHALLOW_CEILING = (8.0, 0.3)
# The agreement threshold a_0 of Eq. (A2), hand-set: on the generality probe
# (meta.probe_tasks(), seeds 0-1) the weights trained without one (a_0 = 0)
# ruined a batch-8 RNN and a 3-layer causal LM run, where the agreement hovers
# near 0 (gradient mostly noise) and the step never shrank; read with
# a_0 = 0.05 they ruined none (slower on 12 of 16 tasks, mostly by little;
# mean log loss ratio to Adam -1.15 vs -1.12); 0.15 lost to Adam on 2
# (docs/results.md, "Agreement threshold").
_STEP_AGREEMENT_THRESHOLD = 0.05
# The LSTMs' shrinkage toward their untrained θ (sign descent). Among 1/8,
# 1/4, 1/2 and 1 no value passes the validation rule for either LSTM (each
# ruins 7 or more of the 14 validation runs, docs/results.md); 1/8 ruins the
# fewest.
_LSTM_SHRINK = {"gradient": 0.125, "multiscale": 0.125}

#: The constructor settings of the default's step adaptation, as trained.
STEP_ADAPTATION_SETTINGS = MappingProxyType(
    _adaptive_settings(_STEP_AGREEMENT_THRESHOLD, _STEP_SCALE_RANGE)
)

_ADAPTIVE_DESCRIPTION = _adaptive_description(
    _STEP_AGREEMENT_THRESHOLD, _STEP_SCALE_RANGE
)

PRESETS: dict[str, Preset] = {
    "default": Preset(
        "default",
        _mnemosyne_adaptive(_STEP_AGREEMENT_THRESHOLD, _STEP_SCALE_RANGE),
        _ADAPTIVE_DESCRIPTION,
        _V2_FAMILY,
        _V2_ESTIMATOR,
        _V2_TRAINER,
        _V2_OUTER_STEPS,
        held_out_kinds=_V2_HELD_OUT,
        average=_V2_AVERAGE,
        shrink=_V2_SHRINK,
        read_with={
            "step_scale_range": _SHIPPED_STEP_SCALE_RANGE,
            "step_warmup": _SHIPPED_STEP_WARMUP,
            "step_width_reference": _SHIPPED_STEP_WIDTH_REFERENCE,
            "step_depth_floor": _SHIPPED_STEP_DEPTH_FLOOR,
            "step_spike_guard": _SHIPPED_STEP_SPIKE_GUARD,
            "step_kernel_floor": _SHIPPED_STEP_KERNEL_FLOOR,
            "step_shallow_floor": _SHIPPED_STEP_SHALLOW_FLOOR,
            "step_shallow_ceiling": _SHIPPED_STEP_SHALLOW_CEILING,
        },
    ),
    # `lstm` and `lstm_multiscale` come from the v1 recipe; `lstm_v2` and
    # `lstm_multiscale_v2` (shipped beside them, `baselines.lstm()`'s default
    # since session 19) are the same LSTMs under the default's v2 recipe (same
    # tasks, estimator, trainer, outer steps and averaging; the shrinkage
    # picked by the same validation rule; docs/results.md).
    "lstm": Preset(
        "lstm",
        _lstm("gradient"),
        'LSTMOptimizer(features="gradient")',
        _FAMILY,
        _ESTIMATOR,
        _TRAINER,
        _OUTER_STEPS,
    ),
    "lstm_multiscale": Preset(
        "lstm_multiscale",
        _lstm("multiscale"),
        'LSTMOptimizer(features="multiscale")',
        _FAMILY,
        _ESTIMATOR,
        _TRAINER,
        _OUTER_STEPS,
    ),
    "v1": Preset(
        "v1",
        _mnemosyne_v1,
        _V1_DESCRIPTION,
        _FAMILY,
        _ESTIMATOR,
        _TRAINER,
        _OUTER_STEPS,
    ),
    "quick": Preset(
        "quick",
        _mnemosyne_adaptive(_STEP_AGREEMENT_THRESHOLD, _STEP_SCALE_RANGE),
        _ADAPTIVE_DESCRIPTION,
        PresetFamily(("quadratic_d20",), name="quick_family"),
        _ESTIMATOR,
        dict(
            learning_rate=3e-3,
            num_tasks=2,
            unroll_length=5,
            horizon=10,
            compiler_options=_FAST_COMPILE,
        ),
        3,
    ),
}
"""The named presets. `default` produces `weights/default.eqx` (the v2 recipe,
with per-tensor step adaptation and its agreement threshold, read with a lower
floor on the step multiplier than it was trained with);
`v2_no_agreement_threshold` is the same recipe without the threshold and
`v2_fixed_step` without step adaptation (the weights shipped before them);
`lstm` and `lstm_multiscale` the shipped LSTM baselines (the v1 recipe, as `v1`);
`lstm_v2` and `lstm_multiscale_v2` the same LSTMs under the v2 recipe (3.4 and
3.9 minutes on one H200 GPU; on 2 busy CPU cores one outer step took 38 s, so
hours; shipped beside the v1 ones as `weights/lstm_v2.eqx` and
`weights/lstm_multiscale_v2.eqx`, `scripts/ship_lstm_v2.py`);
`quick` is a seconds-long smoke run for tests and CI."""

for _features, _name in (("gradient", "lstm_v2"), ("multiscale", "lstm_multiscale_v2")):
    PRESETS[_name] = dataclasses.replace(
        PRESETS["default"],
        name=_name,
        make_lopt=_lstm(_features),
        lopt_description=f'LSTMOptimizer(features="{_features}")',
        shrink=_LSTM_SHRINK[_features],
        read_with=None,
    )


# The weights shipped on 2026-12-05 before the agreement threshold (record:
# docs/results_agreement_threshold/), and those shipped until 2026-12-05: the
# same recipe without step adaptation (record: docs/results_step_adaptation/).
# Both were read with the range they were trained with.
PRESETS["v2_no_agreement_threshold"] = dataclasses.replace(
    PRESETS["default"],
    name="v2_no_agreement_threshold",
    make_lopt=_mnemosyne_adaptive(None, _STEP_SCALE_RANGE),
    lopt_description=_adaptive_description(None, _STEP_SCALE_RANGE),
    read_with=None,
)
PRESETS["v2_fixed_step"] = dataclasses.replace(
    PRESETS["default"],
    name="v2_fixed_step",
    make_lopt=_mnemosyne,
    lopt_description="CoordinatewiseMnemosyne()",
    read_with=None,
)


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
    num_tasks: int | None = None,
):
    """Run a preset's meta-training.

    Args:
        name: a key of [`PRESETS`][mnemosyne.meta.PRESETS].
        output: if given, save the weights there with [`mnemosyne.save`][], a
            JSON training record at `<output>.json` and the meta-training curve
            at `<output>.png` (process 0 of a multi-process run writes them).
        checkpoint_dir: where the trainer writes resumable checkpoints.
        resume: continue from the latest checkpoint in `checkpoint_dir`.
        progress: show a progress bar.
        num_outer_steps: override the preset's outer step count.
        num_tasks: override the preset's task batch (trajectories per outer
            step, over all processes: a multiple of the process count).

    Returns:
        `(lopt, history)`.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {list_presets()}")
    preset = PRESETS[name]
    steps = preset.num_outer_steps if num_outer_steps is None else int(num_outer_steps)
    settings = dict(preset.trainer)
    if num_tasks is not None:
        settings["num_tasks"] = int(num_tasks)
    _, k_train = jax.random.split(jax.random.key(preset.seed))
    trainer = MetaTrainer(
        preset.untrained(), preset.family, preset.estimator,
        checkpoint_dir=checkpoint_dir, key=k_train, **settings,
    )
    start = time.perf_counter()
    lopt, history = run_recipe(trainer, preset, steps, resume=resume, progress=progress)
    wall = time.perf_counter() - start
    if output is not None and is_main_process():
        save_preset_weights(
            name,
            lopt,
            history,
            output,
            num_outer_steps=int(trainer.step),
            wall_time_s=wall,
            extra=(
                None
                if settings == preset.trainer and jax.process_count() == 1
                else {
                    "num_tasks": trainer.num_tasks,
                    "num_processes": jax.process_count(),
                }
            ),
        )
    return lopt, history


def run_recipe(trainer, preset: Preset, num_outer_steps: int, *, resume=True,
               progress=True):
    r"""Run `trainer` for `num_outer_steps` outer steps and return the θ the
    preset ships: the mean of the iterates of `preset.average`, then moved back
    toward the untrained θ by `preset.shrink`.

    A run shorter (or longer) than the preset's scales the averaging window with
    it: with `average = (400, 20)` for 600 steps, a 150-step run averages the
    iterates at 100, 105, ..., 150. So a reduced-budget run (the ablation) ships
    θ by the same rule as the full one.

    With a `checkpoint_dir`, each averaged iterate is also saved (atomically) as
    `iterates/theta-<step>.eqx` there, so a run killed inside the averaging
    window and resumed averages the same iterates as an uninterrupted one.

    Returns:
        `(lopt, history)`.

    Raises:
        CheckpointError: a resumed run is past an averaging step whose iterate
            was not saved (a checkpoint written without this function).
    """
    untrained = trainer.lopt
    if preset.average is None:
        lopt, history = trainer.run(num_outer_steps, resume=resume, progress=progress)
    else:
        first, every = preset.average
        scale = num_outer_steps / preset.num_outer_steps
        first = min(num_outer_steps, max(1, round(first * scale)))
        every = max(1, round(every * scale))
        folder = (
            None if trainer.checkpoint_dir is None
            else pathlib.Path(trainer.checkpoint_dir) / "iterates"
        )
        trainer.run(0, resume=resume, progress=False)  # restores the latest checkpoint
        iterates = [
            _iterate(trainer, stop, folder, resume, progress)
            for stop in range(first, num_outer_steps + 1, every)
        ]
        _, history = trainer.run(num_outer_steps, resume=resume, progress=progress)
        lopt = jax.tree.map(lambda *xs: jnp.mean(jnp.stack(xs), axis=0), *iterates)
    if preset.shrink != 1.0:
        lopt = shrink_toward(lopt, untrained, preset.shrink)
    if preset.read_with is not None:
        lopt = reconfigure(lopt, **preset.read_with)
    return lopt, history


def shrink_toward(lopt, untrained, shrink: float):
    r"""$\theta_0 + \lambda(\theta - \theta_0)$: `lopt` moved back toward
    the untrained θ₀ by the factor $\lambda$ = `shrink`, leaf by leaf."""
    return jax.tree.map(lambda a, b: b + shrink * (a - b), lopt, untrained)


def _iterate(trainer, stop: int, folder, resume: bool, progress: bool):
    """θ after outer step `stop`: trained to it, or read back if the resumed
    trainer is already past it."""
    from .._serialisation import load, save

    path = None if folder is None else folder / f"theta-{stop:08d}.eqx"
    if trainer.step > stop:
        if not (resume and path is not None and path.is_file()):
            raise CheckpointError(
                f"the run resumed at outer step {trainer.step}, past the averaged "
                f"iterate of step {stop}, which was not saved"
                + ("" if path is None else f" ({path})")
            )
        return load(path)
    lopt, _ = trainer.run(stop, resume=resume, progress=progress)
    if path is not None and is_main_process():
        folder.mkdir(parents=True, exist_ok=True)
        save(path, lopt)
    return lopt


def save_preset_weights(
    name: str,
    lopt,
    history: dict | None,
    output: str | os.PathLike,
    *,
    num_outer_steps: int,
    wall_time_s: float,
    wall_time_note: str = (
        "this process only; excludes earlier runs resumed from checkpoints"
    ),
    extra: dict | None = None,
) -> None:
    """Write a preset's weights with [`mnemosyne.save`][], its training record
    (`<output>.json`: the preset's configuration, steps, compute, task kinds and
    configurations seen, machine; plus `extra`) and its meta-training curve
    (`<output>.png`). `history=None` (a run whose history was not kept):
    no curve, and the record's meta-loss, skips and configurations seen are
    `None`."""
    from .._serialisation import save

    preset = PRESETS[name]
    output = os.fspath(output)
    save(output, lopt)
    missing = history is None
    history = history or {"meta_loss": [], "skipped": [], "task": []}
    losses = [x for x in history["meta_loss"] if np.isfinite(x)]
    tail = losses[-max(1, len(losses) // 10):] if losses else []
    record = {
        "preset": name,
        "config": {**preset.config(), "num_outer_steps": num_outer_steps},
        "num_outer_steps": int(num_outer_steps),
        "wall_time_s": round(float(wall_time_s), 1),
        "wall_time_note": wall_time_note,
        "final_meta_loss": float(np.mean(tail)) if tail else None,
        "skipped_steps": None if missing else int(np.sum(history["skipped"])),
        "task_kinds": sorted(preset.family.kinds),
        "task_configurations": (
            None if missing else sorted({str(t) for t in history["task"]})
        ),
        "held_out_kinds": sorted(preset.held_out_kinds),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor(),
            "jax": jax.__version__,
            "jax_backend": jax.default_backend(),
        },
        **(extra or {}),
    }
    with open(output + ".json", "w") as f:
        json.dump(record, f, indent=2)
    if not missing:
        plot_history(history, output + ".png")


def validation_tasks() -> dict[str, Any]:
    """Task configurations in neither the v2 training distribution
    (`BroadFamily(24)`) nor the evaluation suite: what picks the meta-training
    checkpoint to ship (`scripts/validate_checkpoints.py`)."""
    return {
        "val_mlp_wine_64x64_relu_b32": MLPClassifier(
            load_dataset("wine"),
            hidden=(64, 64),
            activation="relu",
            batch_size=32,
            name="val_mlp_wine_64x64_relu_b32",
            kind="mlp",
        ),
        "val_mlp_digits_4x48_tanh_b16": MLPClassifier(
            load_dataset("digits"),
            hidden=(48,) * 4,
            activation="tanh",
            batch_size=16,
            name="val_mlp_digits_4x48_tanh_b16",
            kind="mlp",
        ),
        "val_rnn_digits_h48_b32": RNNClassifier(
            load_dataset("digits"),
            hidden=48,
            batch_size=32,
            name="val_rnn_digits_h48_b32",
        ),
        "val_lm_reverse_d24_l2_b16": SequenceLM(
            "reverse",
            d_model=24,
            num_layers=2,
            num_heads=4,
            batch_size=16,
            name="val_lm_reverse_d24_l2_b16",
        ),
        "val_regression_2x96_tanh_b8": TeacherRegression.random(
            7,
            hidden=(96, 96),
            activation="tanh",
            noise=0.2,
            batch_size=8,
            name="val_regression_2x96_tanh_b8",
        ),
        "val_cnn_digits_c6_12_b16": CNNClassifier(
            load_dataset("digits"),
            channels=(6, 12),
            batch_size=16,
            name="val_cnn_digits_c6_12_b16",
        ),
        "val_quadratic_d30_cond1e3": Quadratic.random(
            jax.random.key(11), 30, 3.0, 0.0, "val_quadratic_d30_cond1e3"
        ),
    }


def stress_validation_tasks() -> dict[str, tuple[Any, int]]:
    """`(task, steps)`: long runs where a learned optimizer is most likely to
    ruin a run (deep and narrow nets at batch 4-16, batch 512, a chained
    Rosenbrock, a 2-layer causal LM), in neither the v2 training distribution,
    the evaluation suite nor `scripts/long_runs.py`. With `validation_tasks()`,
    what picks the θ to ship (`scripts/validate_checkpoints.py`): a θ that ends
    a run above both 1.5x its best window and Adam's loss is not shipped."""
    from ..tasks import SequenceLM, TeacherRegression

    def mlp(dataset, depth, width, activation, batch_size, steps):
        task = _probe_mlp("stress", dataset, (width,) * depth, activation, batch_size)
        return task.name, (task, steps)

    return dict([
        mlp("digits", 5, 24, "relu", 4, 4000),
        mlp("wine", 6, 12, "gelu", 8, 4000),
        mlp("breast_cancer", 2, 64, "relu", 512, 3000),
        mlp("digits", 8, 32, "tanh", 16, 3000),
        ("stress_regression_3x32_relu_b4", (TeacherRegression.random(
            3, hidden=(32,) * 3, activation="relu", noise=0.1, batch_size=4,
            name="stress_regression_3x32_relu_b4"), 4000)),
        ("stress_rosenbrock_d10", (Rosenbrock(dim=10, name="stress_rosenbrock_d10"),
                                   3000)),
        ("stress_lm_copy_d24_l2_b8", (SequenceLM(
            "copy", d_model=24, num_layers=2, num_heads=4, batch_size=8,
            name="stress_lm_copy_d24_l2_b8"), 2000)),
    ])


def probe_tasks() -> dict[str, tuple[Any, int]]:
    """`(task, steps)`: a generality probe of 16 configurations that are none
    of the 24 the default preset meta-trains on (`broad_configs`), nor in
    `validation_tasks()`, `stress_validation_tasks()`, `scripts/long_runs.py`
    or the suite (except the 2-d Rosenbrock, the suite's, run for 3,000 steps
    instead of 1,000; some, like the batch-4 iris MLP, could have been drawn
    from the broad distribution those 24 come from), spread over what a
    user might train (tiny and wide MLPs, noisy labels, logistic regression,
    regression at batch 512, an RNN and a CNN at small batches, causal and
    masked LMs, a ViT, ill-conditioned and noisy quadratics, 2-d Rosenbrock,
    parameter and loss scales far from 1), run with
    `scripts/validate_checkpoints.py --probe`. Defined to estimate how the
    weights shipped on the morning of 2026-12-05 do where nobody had looked;
    since used to pick the agreement threshold of Eq. (A2), so no longer a
    blind check (docs/results.md, "Agreement threshold")."""

    def mlp(dataset, hidden, activation, batch_size, cls=MLPClassifier, **kw):
        return _probe_mlp("probe", dataset, hidden, activation, batch_size, cls,
                          first_probe_name=True, **kw)

    tasks = [
        (mlp("iris", (8,), "relu", 4), 2000),
        (mlp("breast_cancer", (128,) * 3, "gelu", 16), 2000),
        (mlp("digits", (256, 256), "relu", 128), 1500),
        (mlp("wine", (16,) * 8, "tanh", 32), 2000),
        (mlp("digits", (), "relu", 8), 2000),
        (mlp("digits", (64, 64), "relu", 32, cls=NoisyLabelMLP, label_noise=0.3),
         2000),
        (TeacherRegression.random(11, hidden=(256,), activation="relu", noise=0.0,
                                  batch_size=512, name="probe_regression_256_b512"),
         1500),
        (TeacherRegression.random(12, num_inputs=8, teacher_hidden=(16, 16),
                                  hidden=(64,) * 4, activation="gelu", noise=0.3,
                                  batch_size=16, name="probe_regression_4x64_b16"),
         3000),
        (RNNClassifier(load_dataset("digits"), hidden=96, batch_size=8,
                       name="probe_rnn_digits_h96_b8"), 2000),
        (CNNClassifier(load_dataset("digits"), channels=(16, 32), batch_size=16,
                       name="probe_cnn_digits_16_32_b16"), 1500),
        (SequenceLM("sort", d_model=32, num_layers=3, num_heads=4, batch_size=16,
                    name="probe_lm_sort_d32_l3_b16"), 1500),
        (MaskedLM.markov(vocab=16, successors=2, seed=14, d_model=24,
                         num_layers=2, batch_size=16, name="probe_mlm_d24_l2_b16"),
         1500),
        (ViTClassifier(load_dataset("digits"), d_model=24, num_layers=2,
                       batch_size=32, name="probe_vit_digits_d24_l2_b32"), 1000),
        (Quadratic.random(jax.random.key(13), dim=50, log10_cond=4.0, noise=0.1,
                          name="probe_quadratic_d50_cond1e4_noisy"), 3000),
        (Rosenbrock(dim=2, name="probe_rosenbrock_d2"), 3000),
        (ScaledTask(mlp("wine", (32, 32), "relu", 16), init_scale=4.0,
                    loss_scale=0.01), 2000),
    ]
    return {task.name: (task, steps) for task, steps in tasks}


def second_probe_tasks() -> dict[str, tuple[Any, int]]:
    """`(task, steps)`: a second, blind generality probe of 24 configurations,
    written down on 2026-12-05 after the agreement threshold was chosen and
    before any θ was run on them; none of them is one of the 24 configurations
    the default preset meta-trains on (`broad_configs`), a suite task, or in
    `validation_tasks()`, `stress_validation_tasks()`, `probe_tasks()` or
    `scripts/long_runs.py`. Five (the 2x32 tanh and 2x512 ReLU MLPs at batch 4,
    the wine MLP at batch 512, the batch-4 CNN and the scaled digits MLP) could
    have been drawn from the broad distribution those 24 come from; the other
    19 lie outside it. It goes further out than the
    first: MLPs 12-20 layers deep (meta-training saw at most 8), batch sizes 2
    to 512, a 1,024-wide layer, 50% label noise, a CNN and an RNN at batch 4,
    causal LMs with 4-6 layers and a 200-token vocabulary (sparse embedding
    gradients), a 6-layer ViT, a 3-layer masked LM, noisy regression, a
    condition-1e5 quadratic, 5-d Rosenbrock, parameter scale ¼ with loss scale
    100. Run with `scripts/validate_checkpoints.py --probe 2`; no choice has
    been made on it (docs/results.md, "A second, blind probe")."""

    mlp = functools.partial(_probe_mlp, "probe2")
    lm = functools.partial(_probe_lm, "probe2")
    digits = load_dataset("digits")
    tasks = [
        (mlp("digits", (32,) * 12, "relu", 32), 3000),
        (mlp("digits", (1024,), "relu", 64), 1500),
        (mlp("breast_cancer", (32, 32), "tanh", 4), 4000),
        (mlp("wine", (64,), "gelu", 512), 3000),
        (mlp("iris", (16,) * 4, "gelu", 2), 4000),
        (mlp("breast_cancer", (64, 64), "relu", 64, cls=NoisyLabelMLP,
             label_noise=0.5), 3000),
        (CNNClassifier(digits, channels=(8, 16), batch_size=4,
                       name="probe2_cnn_digits_8_16_b4"), 2000),
        (RNNClassifier(digits, hidden=48, batch_size=256,
                       name="probe2_rnn_digits_h48_b256"), 3000),
        (lm("reverse", 48, 2, 32), 2000),
        (lm("recall", 32, 4, 8, n=5, vocab=20), 2000),
        (ViTClassifier(digits, d_model=32, num_layers=3, batch_size=8,
                       name="probe2_vit_digits_d32_l3_b8"), 1500),
        (MaskedLM.markov(vocab=24, successors=3, seed=31, d_model=32, num_layers=3,
                         batch_size=32, name="probe2_mlm_d32_l3_b32"), 1500),
        (TeacherRegression.random(21, hidden=(128, 128), activation="tanh",
                                  noise=1.0, batch_size=8,
                                  name="probe2_regression_2x128_tanh_noisy_b8"), 3000),
        (Quadratic.random(jax.random.key(23), dim=100, log10_cond=5.0, noise=0.0,
                          name="probe2_quadratic_d100_cond1e5"), 3000),
        (Rosenbrock(dim=5, name="probe2_rosenbrock_d5"), 4000),
        (ScaledTask(mlp("digits", (64,), "relu", 32), init_scale=0.25,
                    loss_scale=100.0), 2000),
        (mlp("digits", (32,) * 16, "gelu", 8), 3000),
        (mlp("digits", (64,) * 20, "tanh", 16), 2000),
        (mlp("breast_cancer", (512, 512), "relu", 4), 3000),
        (lm("copy", 32, 2, 8, vocab=200), 2000),
        (lm("sort", 64, 6, 16), 1500),
        (ViTClassifier(digits, d_model=48, num_layers=6, batch_size=16,
                       name="probe2_vit_digits_d48_l6_b16"), 1000),
        (CNNClassifier(digits, channels=(32, 64), batch_size=8,
                       name="probe2_cnn_digits_32_64_b8"), 1500),
        (RNNClassifier(digits, hidden=128, batch_size=4,
                       name="probe2_rnn_digits_h128_b4"), 2000),
    ]
    return {task.name: (task, steps) for task, steps in tasks}


def third_probe_tasks() -> dict[str, tuple[Any, int]]:
    """`(task, steps)`: a third, blind generality probe of 24 configurations,
    written down on 2026-12-05 (session 14) before the step multiplier's range
    was re-chosen and before any θ was run on them; none of them is one of the
    24 configurations the default preset meta-trains on (`broad_configs`), a
    suite task, or in any other held-out set (`validation_tasks()`,
    `stress_validation_tasks()`, `probe_tasks()`, `second_probe_tasks()`,
    `scripts/long_runs.py`). The second probe was looked at to pick that
    range, so this one is what checks it: MLPs up to 24 layers deep, batch
    sizes 2 to 256, runs of up to 8,000 steps, logistic regression, label
    noise, CNNs and RNNs at batch 2 to 32, causal LMs of 2-4 layers at batch
    4-64, a 4-layer ViT at batch 4, a 4-layer masked LM, teacher regressions
    (one at batch 2), a noisy condition-1e3 quadratic in 200-d, 20-d
    Rosenbrock, parameter scale 8 with loss scale 1/1000. Run with
    `scripts/validate_checkpoints.py --probe 3`."""
    mlp = functools.partial(_probe_mlp, "probe3")
    lm = functools.partial(_probe_lm, "probe3")
    digits = load_dataset("digits")
    tasks = [
        (mlp("digits", (48,) * 10, "relu", 16), 3000),
        (mlp("wine", (128,) * 3, "tanh", 8), 3000),
        (mlp("breast_cancer", (16,) * 6, "gelu", 2), 4000),
        (mlp("iris", (256, 256), "relu", 128), 2000),
        (mlp("digits", (96,) * 4, "gelu", 4), 5000),
        (mlp("breast_cancer", (), "relu", 16), 2000),
        (mlp("digits", (64,) * 3, "tanh", 16, cls=NoisyLabelMLP, label_noise=0.2),
         3000),
        (mlp("digits", (16,) * 24, "relu", 32), 3000),
        (mlp("digits", (32,) * 8, "gelu", 8), 8000),
        (CNNClassifier(digits, channels=(16, 16), batch_size=32,
                       name="probe3_cnn_digits_16_16_b32"), 1500),
        (CNNClassifier(digits, channels=(4, 8), batch_size=2,
                       name="probe3_cnn_digits_4_8_b2"), 2000),
        (RNNClassifier(digits, hidden=64, batch_size=16,
                       name="probe3_rnn_digits_h64_b16"), 2500),
        (RNNClassifier(digits, hidden=24, batch_size=2,
                       name="probe3_rnn_digits_h24_b2"), 3000),
        (lm("reverse", 32, 3, 4), 2000),
        (lm("copy", 64, 4, 32), 1500),
        (lm("sort", 24, 2, 64), 1500),
        (lm("recall", 48, 3, 16, n=4, vocab=16), 2000),
        (ViTClassifier(digits, d_model=32, num_layers=4, batch_size=4,
                       name="probe3_vit_digits_d32_l4_b4"), 1500),
        (MaskedLM.markov(vocab=32, successors=2, seed=41, d_model=48, num_layers=4,
                         batch_size=16, name="probe3_mlm_d48_l4_b16"), 1500),
        (TeacherRegression.random(42, hidden=(32,) * 5, activation="gelu",
                                  noise=0.3, batch_size=32,
                                  name="probe3_regression_5x32_gelu_b32"), 3000),
        (TeacherRegression.random(43, hidden=(512,), activation="relu", noise=0.1,
                                  batch_size=2, name="probe3_regression_512_b2"),
         3000),
        (Quadratic.random(jax.random.key(44), dim=200, log10_cond=3.0, noise=0.3,
                          name="probe3_quadratic_d200_cond1e3_noisy"), 3000),
        (Rosenbrock(dim=20, name="probe3_rosenbrock_d20"), 4000),
        (ScaledTask(mlp("digits", (32, 32), "relu", 16), init_scale=8.0,
                    loss_scale=1e-3), 2000),
    ]
    return {task.name: (task, steps) for task, steps in tasks}



def fourth_probe_tasks() -> dict[str, tuple[Any, int]]:
    """`(task, steps)`: a fourth generality probe, of wider models (2026-12-05,
    session 17), written down and run once on the shipped θ with no choice made
    on it. The other held-out sets and the meta-training configurations are
    small (widths up to 256, Transformers up to `d_model` 64); here the
    layers are 4-16 times wider and the models have up to 1.1 million
    parameters: MLPs of width 512-1,024 (ReLU, GELU, tanh), a causal LM and a
    ViT of `d_model` 128 with 4 layers, a CNN of 64 channels, an RNN of 256
    units and a wide teacher regression at batch 256. None is in another set
    (`test_held_out_task_sets_are_disjoint_and_well_formed`). Run with
    `scripts/validate_checkpoints.py --probe 4`."""
    mlp = functools.partial(_probe_mlp, "probe4")
    lm = functools.partial(_probe_lm, "probe4")
    digits = load_dataset("digits")
    tasks = [
        (mlp("digits", (1024, 1024), "relu", 64), 1500),
        (mlp("digits", (512,) * 4, "gelu", 16), 2000),
        (mlp("breast_cancer", (1024, 1024), "tanh", 32), 1500),
        (lm("copy", 128, 4, 16), 1000),
        (ViTClassifier(digits, d_model=128, num_layers=4, batch_size=32,
                       name="probe4_vit_digits_d128_l4_b32"), 1000),
        (CNNClassifier(digits, channels=(64, 64), batch_size=32,
                       name="probe4_cnn_digits_64_64_b32"), 1000),
        (RNNClassifier(digits, hidden=256, batch_size=32,
                       name="probe4_rnn_digits_h256_b32"), 1500),
        (TeacherRegression.random(45, hidden=(512, 512), activation="gelu",
                                  noise=0.1, batch_size=256,
                                  name="probe4_regression_2x512_gelu_b256"), 2000),
    ]
    return {task.name: (task, steps) for task, steps in tasks}

def _probe_mlp(prefix, dataset, hidden, activation, batch_size, cls=MLPClassifier,
               first_probe_name=False, **kw):
    """A held-out set's MLP task (the probes', the stress set's), named
    `{prefix}_mlp_{dataset}_{shape}_{activation}_b{batch_size}`: shape `12x32`
    for equal widths (`32x32x32` and no label
    noise suffix in the first probe's names, kept as recorded)."""
    if first_probe_name or len(set(hidden)) != 1:
        shape = "x".join(map(str, hidden)) or "linear"
    else:
        shape = f"{len(hidden)}x{hidden[0]}"
    name = f"{prefix}_mlp_{dataset}_{shape}_{activation}_b{batch_size}"
    if "label_noise" in kw and not first_probe_name:
        name += f"_noise{kw['label_noise']:g}"
    return cls(load_dataset(dataset), hidden=hidden, activation=activation,
               batch_size=batch_size, name=name, kind="mlp", **kw)


def _probe_lm(prefix, problem, d_model, layers, batch, **kw):
    """A probe's causal LM (4 heads), named `{prefix}_lm_{problem}_d{d_model}
    _l{layers}_b{batch}[_vocab{vocab}]`."""
    name = f"{prefix}_lm_{problem}_d{d_model}_l{layers}_b{batch}"
    if "vocab" in kw:
        name += f"_vocab{kw['vocab']}"
    return SequenceLM(problem, d_model=d_model, num_layers=layers, num_heads=4,
                      batch_size=batch, name=name, **kw)
