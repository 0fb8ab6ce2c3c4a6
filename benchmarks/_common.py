"""Shared helpers for the asv suites and `update_ratio.py` (one piece of code per idea).

Everything here builds *compiled, warmed-up* callables; timing helpers interleave
the two things being compared so that the noise of a shared machine hits both
alike, and report medians.
"""

from __future__ import annotations

import math
import statistics
import timeit
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mnemosyne
import mnemosyne.baselines
import mnemosyne.meta
import mnemosyne.tasks
from mnemosyne._training import run_steps

OPTIMIZERS = (
    "mnemosyne", "mnemosyne_bf16", "mnemosyne_fixed_step", "mnemosyne_tensorwise",
    "lstm", "adam",
)
# optimizer name -> dtype its memory is stored in (default: the compute dtype)
MEMORY_DTYPES = {"mnemosyne_bf16": jnp.bfloat16}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
NUM_BLOCKS = 4


# --------------------------------------------------------------------------- #
# parameters: a stack of transformer-like blocks
# --------------------------------------------------------------------------- #


def block_width(num_params: int, num_blocks: int | None = None) -> int:
    """Width `d` (a multiple of 8) such that `num_blocks` blocks (default
    `NUM_BLOCKS`) have about `num_params` parameters."""
    num_blocks = NUM_BLOCKS if num_blocks is None else num_blocks
    # per block: 12 d^2 weights + 13 d biases/norm parameters
    d = (-13 + math.sqrt(169 + 48 * num_params / num_blocks)) / 24
    return max(8, int(round(d / 8)) * 8)


def make_params(num_params: int, dtype: Any = jnp.float32, *, seed: int = 0) -> dict:
    """A realistic pytree of about `num_params` parameters.

    `NUM_BLOCKS` pre-norm transformer blocks of width `d` (chosen to hit the
    count): layer-norm scales/biases `(d,)`, attention `qkv (d, 3d)` and
    `out (d, d)`, MLP `fc1 (d, 4d)` and `fc2 (4d, d)`, each with a bias: 12
    leaves of five different shapes per block. The real count is
    `count_params(make_params(n))` (within a few percent of `n` for n ≥ 1e5).
    """
    d = block_width(num_params)
    shapes = {
        "ln1_scale": (d,),
        "ln1_bias": (d,),
        "qkv_w": (d, 3 * d),
        "qkv_b": (3 * d,),
        "out_w": (d, d),
        "out_b": (d,),
        "ln2_scale": (d,),
        "ln2_bias": (d,),
        "fc1_w": (d, 4 * d),
        "fc1_b": (4 * d,),
        "fc2_w": (4 * d, d),
        "fc2_b": (d,),
    }
    key = jax.random.key(seed)
    blocks = []
    for b in range(NUM_BLOCKS):
        block = {}
        for i, (name, shape) in enumerate(shapes.items()):
            k = jax.random.fold_in(key, 100 * b + i)
            scale = 1.0 / math.sqrt(shape[0]) if len(shape) == 2 else 0.02
            block[name] = (scale * jax.random.normal(k, shape, jnp.float32)).astype(
                dtype
            )
        blocks.append(block)
    return {"blocks": blocks}


def make_grads(params: dict, *, seed: int = 1) -> dict:
    """Gradient-like values (small, random) with the structure and dtypes of
    `params`."""
    leaves, treedef = jax.tree.flatten(params)
    key = jax.random.key(seed)
    out = [
        (
            1e-3 * jax.random.normal(jax.random.fold_in(key, i), x.shape, jnp.float32)
        ).astype(x.dtype)
        for i, x in enumerate(leaves)
    ]
    return jax.tree.unflatten(treedef, out)


def count_params(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def tree_bytes(tree) -> int:
    return sum(
        int(x.size) * x.dtype.itemsize
        for x in jax.tree.leaves(tree)
        if hasattr(x, "dtype")
    )


# --------------------------------------------------------------------------- #
# optimizers
# --------------------------------------------------------------------------- #


def make_lopt(name: str, *, seed: int = 0):
    """The learned optimizer module behind `name` (None for Adam)."""
    key = jax.random.key(seed)
    if name in ("mnemosyne", "mnemosyne_bf16"):
        # the shipped configuration (step adaptation included); θ's values do
        # not change the cost
        shipped = mnemosyne.pretrained("default")
        return type(shipped)(**dict(shipped.config), key=key)
    if name == "mnemosyne_fixed_step":  # without step adaptation (A1)-(A2)
        return mnemosyne.CoordinatewiseMnemosyne(key=key)
    if name == "mnemosyne_tensorwise":
        return mnemosyne.TensorwiseMnemosyne(key=key)
    if name == "lstm":
        return mnemosyne.baselines.LSTMOptimizer(key=key)
    if name == "adam":
        return None
    raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")


def make_optimizer(name: str, *, seed: int = 0) -> optax.GradientTransformation:
    """`name` as an optax transformation whose updates are *added* to params."""
    if name == "adam":
        return optax.adam(1e-3)
    lopt = make_lopt(name, seed=seed)
    if name.startswith("mnemosyne"):
        return mnemosyne.scale_by_mnemosyne(lopt, memory_dtype=MEMORY_DTYPES.get(name))
    return mnemosyne.as_gradient_transformation(lopt)


def make_update_step(tx: optax.GradientTransformation) -> Callable:
    """Jitted `(params, grads, state) -> (params, state)`: update and apply.

    Params and state are donated, as in a real training loop, so the step
    updates them in place; callers feed the outputs back in.
    """

    def step(params, grads, state):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 2))


class UpdateRunner:
    """One optimizer's compiled update+apply on fixed gradients, warmed up.

    `runner()` performs one step (feeding donated buffers back) and blocks.
    `tx`, if given, is the transformation timed (under `name`) instead of the
    named optimizer.
    """

    def __init__(
        self, name: str, num_params: int, dtype: Any = jnp.float32, *,
        tx: optax.GradientTransformation | None = None,
    ):
        self.name = name
        self.tx = make_optimizer(name) if tx is None else tx
        self.params = make_params(num_params, dtype)
        self.grads = make_grads(self.params)
        self.num_params = count_params(self.params)
        # fresh buffers: init may alias one array into several leaves, which
        # donation refuses
        self.state = jax.tree.map(jnp.copy, self.tx.init(self.params))
        self.state_bytes = tree_bytes(self.state)
        self.step = make_update_step(self.tx)
        self()  # compile + warm

    def __call__(self) -> None:
        self.params, self.state = self.step(self.params, self.grads, self.state)
        jax.block_until_ready((self.params, self.state))

    def bytes_per_param(self) -> float:
        """Bytes moved per parameter per step, counted as: read grads, params and
        state; write state and params (`|g| + 2|p| + 2|state|`, per parameter)."""
        g = tree_bytes(self.grads)
        p = tree_bytes(self.params)
        return (g + 2 * p + 2 * self.state_bytes) / self.num_params


def state_floats_per_param(name: str, num_params: int = 10**6) -> float:
    """Optimizer-state floats per parameter (the module's own count for
    learned optimizers; Adam's `mu`, `nu` = 2)."""
    params = make_params(num_params)
    if name == "adam":
        state = optax.adam(1e-3).init(params)
        floats = sum(x.size for x in jax.tree.leaves(state) if x.ndim > 0)
        return floats / count_params(params)
    lopt = make_lopt(name)
    if hasattr(lopt, "state_floats_per_parameter"):
        return float(lopt.state_floats_per_parameter(params))
    state = lopt.init(params)  # e.g. the LSTM optimizer: count the state's floats
    floats = sum(
        x.size for x in jax.tree.leaves(state) if hasattr(x, "ndim") and x.ndim > 0
    )
    return floats / count_params(params)


# --------------------------------------------------------------------------- #
# timing
# --------------------------------------------------------------------------- #


def median_time(fn: Callable[[], None], repeats: int = 7, number: int = 1) -> float:
    """Median wall time (s) of `fn()` over `repeats` samples of `number` calls."""
    return statistics.median(timeit.repeat(fn, repeat=repeats, number=number)) / number


def interleaved_times(
    fns: dict[str, Callable[[], None]], repeats: int = 7, number: int = 1
) -> dict:
    """Median time (s) of each callable, sampled alternately so that a noisy
    machine's slow spells hit every contestant alike."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            samples[k].append(timeit.timeit(fn, number=number) / number)
    return {k: statistics.median(v) for k, v in samples.items()}


def auto_number(fn: Callable[[], None], target_s: float = 0.05) -> int:
    """Calls per sample so that one sample takes about `target_s`."""
    t = timeit.timeit(fn, number=1)
    return max(1, int(target_s / max(t, 1e-6)))


def update_ratio(
    name: str, num_params: int, baseline: str = "adam", repeats: int = 7
) -> dict:
    """Time `name` and `baseline` update+apply in the same process.

    Returns a dict with `ms` (per name), `ratio` and the runners.
    """
    runners = {
        baseline: UpdateRunner(baseline, num_params),
        name: UpdateRunner(name, num_params),
    }
    number = auto_number(runners[baseline])
    times = interleaved_times(runners, repeats=repeats, number=number)
    return {"times": times, "ratio": times[name] / times[baseline], "runners": runners}


# --------------------------------------------------------------------------- #
# streaming bandwidth
# --------------------------------------------------------------------------- #


class StreamKernel:
    """A jitted streaming kernel `x <- a*x + b` over `n` float32s (donated, in place):
    4 bytes read + 4 bytes written per element."""

    def __init__(self, n: int = 5 * 10**7):
        self.n = n
        self.x = jnp.ones((n,), jnp.float32)
        self.f = jax.jit(lambda x: 0.5 * x + 1.0, donate_argnums=0)
        self()

    def __call__(self) -> None:
        self.x = self.f(self.x)
        self.x.block_until_ready()

    def bytes_per_call(self) -> int:
        return 8 * self.n


def stream_bandwidth(n: int = 5 * 10**7, repeats: int = 7) -> float:
    """This machine's streaming bandwidth (bytes/s), median of `repeats`."""
    kernel = StreamKernel(n)
    return kernel.bytes_per_call() / median_time(kernel, repeats=repeats)


def bandwidth_fraction(runner: UpdateRunner, seconds: float, bandwidth: float) -> float:
    """Achieved bytes/s of one update (bytes counted by `runner.bytes_per_param`)
    over the streaming bandwidth: 1.0 means the update is memory-bound at peak."""
    return runner.bytes_per_param() * runner.num_params / seconds / bandwidth


# --------------------------------------------------------------------------- #
# whole training step
# --------------------------------------------------------------------------- #

TRAIN_BATCH = 128


def train_batch(task, batch_size: int = TRAIN_BATCH, *, seed: int = 0):
    """A batch of `batch_size` from the task's data (the registered tasks may sample
    another size; classification tasks expose `data.sample(key, n)`)."""
    key = jax.random.key(seed)
    data = getattr(task, "data", None)
    if data is not None and hasattr(data, "sample"):
        return data.sample(key, batch_size)
    return task.sample_batch(key)


class TrainStepRunner:
    """A jitted forward + backward + update + apply of `task` with optimizer `name`."""

    def __init__(self, task_name: str, name: str, batch_size: int = TRAIN_BATCH):
        self.task = mnemosyne.tasks.get_task(task_name)
        self.tx = make_optimizer(name)
        self.params = self.task.init(jax.random.key(0))
        self.state = jax.tree.map(jnp.copy, self.tx.init(self.params))
        self.batch = train_batch(self.task, batch_size)
        task, tx = self.task, self.tx

        def step(params, state, batch):
            loss, grads = jax.value_and_grad(task.loss)(params, batch)
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state, loss

        self.step = jax.jit(step, donate_argnums=(0, 1))
        self()

    def __call__(self) -> None:
        self.params, self.state, loss = self.step(self.params, self.state, self.batch)
        jax.block_until_ready(loss)
        jax.block_until_ready((self.params, self.state))


def train_step_ratio(
    task_name: str, name: str = "mnemosyne", baseline: str = "adam", repeats: int = 7
) -> dict:
    runners = {
        baseline: TrainStepRunner(task_name, baseline),
        name: TrainStepRunner(task_name, name),
    }
    number = auto_number(runners[baseline])
    times = interleaved_times(runners, repeats=repeats, number=number)
    return {"times": times, "ratio": times[name] / times[baseline]}


# --------------------------------------------------------------------------- #
# meta-training and pretrained weights
# --------------------------------------------------------------------------- #


def pretrained_or_skip(name: str = "default"):
    """`mnemosyne.pretrained(name)`, or NotImplementedError (asv: skip) if absent."""
    try:
        return mnemosyne.pretrained(name)
    except (FileNotFoundError, OSError) as e:
        raise NotImplementedError(f"no pretrained weights {name!r}: {e}") from e


def make_meta_trainer(small: bool = False):
    """A `MetaTrainer` for timing outer steps: the `default` preset's (its
    optimizer, task family, estimator and settings), or a tiny one on
    `mlp_digits` for smoke tests."""
    meta = mnemosyne.meta
    lopt = mnemosyne.CoordinatewiseMnemosyne(key=jax.random.key(0))
    if small:
        task = mnemosyne.tasks.get_task("mlp_digits")
        return meta.MetaTrainer(
            lopt, task, num_tasks=1, unroll_length=2, horizon=4, key=jax.random.key(0)
        )
    preset = meta.PRESETS["default"]
    k_lopt, k_train = jax.random.split(jax.random.key(preset.seed))
    return meta.MetaTrainer(
        preset.make_lopt(k_lopt),
        preset.family,
        preset.estimator,
        key=k_train,
        **preset.trainer,
    )


def run_quality(
    task_name: str, lopt, num_steps: int, *, seed: int = 0, memory_dtype=None
) -> float:
    """Final training loss of `task_name` after `num_steps` steps with `lopt`
    (a learned optimizer module, or None for Adam at lr 1e-3), fixed seed."""
    task = mnemosyne.tasks.get_task(task_name)
    if lopt is None:
        tx = optax.adam(1e-3)
    else:
        tx = mnemosyne.mnemosyne(lopt=lopt, memory_dtype=memory_dtype)
    params = task.init(jax.random.key(seed))
    state = tx.init(params)
    keys = jax.random.split(jax.random.key(seed + 1), num_steps)
    (params, _), losses = jax.jit(
        lambda p, s, k: run_steps(task, tx, p, s, k)
    )(params, state, keys)
    return float(losses[-1])
