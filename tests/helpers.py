"""Test helpers: x64 switching, small optimizer configs, the contract registry.

Compilation dominates the run time of these tests (the JAX kernels unroll the
tiny weight matrices, so one optimizer step is a large XLA graph). Everything
here is therefore built once per session and shared: the learned optimizers
(`coordinatewise()`, `tensorwise()`), the parameter template `ranked_params`,
and the jitted step `jit_tx_update`, whose cache is reused across test files
whenever the optimizer config and the pytree shapes agree.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

import mnemosyne
import mnemosyne.baselines


@contextlib.contextmanager
def enable_x64(enabled: bool = True):
    """Temporarily set `jax_enable_x64` (restored on exit, even on error)."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", enabled)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


# ----------------------------------------------------------------------------
# Learned optimizers, built once (construction runs dozens of eager ops)
# ----------------------------------------------------------------------------

TENSORWISE_SMALL = dict(
    chunk_len=4,
    num_levels=2,
    d_model=4,
    encoder_features=2,
    num_heads=1,
    num_features=2,
    key_size=2,
    value_size=1,
    hidden_size=4,
)


@functools.cache
def coordinatewise() -> mnemosyne.CoordinatewiseMnemosyne:
    """The default coordinate-wise Mnemosyne (already small: d_model 8, r = 2),
    with step adaptation (Eqs. A1-A2) at a rate 10x the shipped one's and the
    shipped agreement threshold, so that a few steps move the per-tensor
    multipliers visibly.

    Cached, so built in float32 whatever test calls it first (one under the
    `x64` fixture would otherwise cache float64 θ for every later test)."""
    with enable_x64(False):
        return mnemosyne.CoordinatewiseMnemosyne(
            step_adaptation=0.1, step_agreement_threshold=0.05, key=jax.random.key(1)
        )


@functools.cache
def tensorwise() -> mnemosyne.TensorwiseMnemosyne:
    """A small tensor-wise Mnemosyne: chunk_len 4, two levels, narrow widths
    (float32, as `coordinatewise`)."""
    with enable_x64(False):
        return mnemosyne.TensorwiseMnemosyne(key=jax.random.key(2), **TENSORWISE_SMALL)


LOPTS: dict[str, Callable[[], mnemosyne.AbstractMnemosyne]] = {
    "coordinatewise": coordinatewise,
    "tensorwise": tensorwise,
}


def cast_floating(tree, dtype):
    """Cast every floating array leaf of `tree` (θ included) to `dtype`."""

    def cast(x):
        if eqx.is_inexact_array(x):
            return x.astype(dtype)
        return x

    return jax.tree.map(cast, tree)


# ----------------------------------------------------------------------------
# A parameter template with leaves of every rank
# ----------------------------------------------------------------------------

RANKED_SHAPES = {"scalar": (), "vector": (5,), "matrix": (3, 4), "tensor3": (2, 3, 2)}


def ranked_params(dtype=jnp.float32, seed: int = 0, scale: float = 1.0) -> dict:
    """`{"scalar", "vector", "matrix", "tensor3", "none": None}` of random values."""
    rng = np.random.default_rng(seed)
    params: dict[str, Any] = {
        name: jnp.asarray(scale * rng.standard_normal(shape), dtype)
        for name, shape in RANKED_SHAPES.items()
    }
    params["none"] = None
    return params


def random_like(tree, seed: int, scale: float = 1.0):
    """Random arrays with the shapes and dtypes of `tree`'s array leaves."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda x: jnp.asarray(scale * rng.standard_normal(x.shape), x.dtype), tree
    )


# LLVM at -O0 for the test jits: the whole-step graphs are large (kernels are
# unrolled per feature row) and XLA's backend optimisation dominates their
# compile time (measured ~2x faster compiles); results stay IEEE-exact.
# Leaves of several ranks for a 1-D mesh of 8 devices along "d"
# (test_sharding.py, test_multiprocess.py); the split ones divide by 8, the
# others (10,), (5, 7) and the scalar do not and are replicated.
SHAPES_AND_SPECS = {
    "matrix_rows": ((64, 12), P("d", None)),
    "vector": ((24,), P("d")),
    "tensor3": ((8, 5, 3), P("d", None, None)),
    "matrix_cols": ((3, 16), P(None, "d")),
    "odd_vector": ((10,), P()),
    "odd_matrix": ((5, 7), P()),
    "scalar": ((), P()),
}


def sharded_problem() -> tuple[dict, dict, dict]:
    """`(params, grads, specs)` over `SHAPES_AND_SPECS`: float32 NumPy arrays
    (the same on every process: nothing is placed on a device yet) and the
    partition specs."""
    rng = np.random.default_rng(0)
    draw = lambda: {
        k: rng.normal(size=s).astype(np.float32)
        for k, (s, _) in SHAPES_AND_SPECS.items()
    }
    params, grads = draw(), draw()
    return params, grads, {k: spec for k, (_, spec) in SHAPES_AND_SPECS.items()}


FAST_COMPILE = {"xla_backend_optimization_level": 0}


def fast_jit(fun):
    """`eqx.filter_jit` with `FAST_COMPILE`."""
    return eqx.filter_jit(fun, compiler_options=FAST_COMPILE)


@fast_jit
def jit_tx_update(tx, grads, state, params):
    """`tx.update(grads, state, params)` under jit; `tx` is a pytree (its θ traced)."""
    return tx.update(grads, state, params)


# ----------------------------------------------------------------------------
# The optax-contract registry
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer of the contract suite.

    Attributes:
        name: test id.
        alias: `alias(learning_rate=..., **static_kwargs())` builds the optax
            transformation; it must accept `learning_rate` so that
            `optax.inject_hyperparams(alias)` can trace it.
        static_kwargs: builds the non-hyperparameter keyword arguments (for a
            learned optimizer: `{"lopt": ...}`); called lazily.
        learning_rate: the default learning rate of the suite.
        lopt: the learned optimizer, if any (for the learned-optimizer-only tests).
    """

    name: str
    alias: Callable[..., optax.GradientTransformation]
    static_kwargs: Callable[[], dict] = dict
    learning_rate: float = 1.0
    lopt: Callable[[], Any] | None = None

    def make(self, learning_rate: float | None = None) -> optax.GradientTransformation:
        lr = self.learning_rate if learning_rate is None else learning_rate
        return self.alias(learning_rate=lr, **self.static_kwargs())


OPTIMIZERS: dict[str, OptimizerSpec] = {}


def register(spec: OptimizerSpec) -> OptimizerSpec:
    """Add an optimizer to the contract suite (e.g. the LSTM baseline later)."""
    if spec.name in OPTIMIZERS:
        raise ValueError(f"optimizer {spec.name!r} already registered")
    OPTIMIZERS[spec.name] = spec
    return spec


register(
    OptimizerSpec(
        "coordinatewise_mnemosyne",
        mnemosyne.mnemosyne,
        lambda: {"lopt": coordinatewise()},
        learning_rate=1.0,
        lopt=coordinatewise,
    )
)
register(
    OptimizerSpec(
        "tensorwise_mnemosyne",
        mnemosyne.mnemosyne,
        lambda: {"lopt": tensorwise()},
        learning_rate=1.0,
        lopt=tensorwise,
    )
)
register(OptimizerSpec("adam", optax.adam, learning_rate=1e-3))


@functools.cache
def lstm_small(features: str = "gradient") -> mnemosyne.baselines.LSTMOptimizer:
    """A narrow LSTM optimizer (hidden size 4; Andrychowicz et al. use 20), in
    float32 (as `coordinatewise`)."""
    with enable_x64(False):
        return mnemosyne.baselines.LSTMOptimizer(
            hidden_size=4, features=features, key=jax.random.key(3)
        )


for _features in ("gradient", "multiscale"):
    register(
        OptimizerSpec(
            "lstm" if _features == "gradient" else "lstm_multiscale",
            mnemosyne.baselines.lstm,
            functools.partial(lambda f: {"lopt": lstm_small(f)}, _features),
            learning_rate=1.0,
            lopt=functools.partial(lstm_small, _features),
        )
    )


# ----------------------------------------------------------------------------
# Assertions
# ----------------------------------------------------------------------------


def assert_allclose_tree(actual, desired, rtol, atol=0.0, err_msg=""):
    """`np.testing.assert_allclose` leaf by leaf (same structure, None-aware)."""
    is_none = lambda x: x is None
    a_paths, a_def = jax.tree_util.tree_flatten_with_path(actual, is_leaf=is_none)
    d_leaves, d_def = jax.tree_util.tree_flatten(desired, is_leaf=is_none)
    assert a_def == d_def, f"structures differ: {a_def} vs {d_def}"
    for (path, a), d in zip(a_paths, d_leaves, strict=False):
        if a is None or d is None:
            assert a is None and d is None, jax.tree_util.keystr(path)
            continue
        np.testing.assert_allclose(
            np.asarray(a, np.float64),
            np.asarray(d, np.float64),
            rtol=rtol,
            atol=atol,
            err_msg=f"{err_msg} at {jax.tree_util.keystr(path)}",
        )


def assert_tree_equal(actual, desired):
    """Exactly equal leaves (and dtypes), leaf by leaf."""
    is_none = lambda x: x is None
    a_paths, a_def = jax.tree_util.tree_flatten_with_path(actual, is_leaf=is_none)
    d_leaves, d_def = jax.tree_util.tree_flatten(desired, is_leaf=is_none)
    assert a_def == d_def
    for (path, a), d in zip(a_paths, d_leaves, strict=False):
        if a is None or d is None:
            assert a is None and d is None
            continue
        assert np.asarray(a).dtype == np.asarray(d).dtype, jax.tree_util.keystr(path)
        np.testing.assert_array_equal(
            np.asarray(a), np.asarray(d), err_msg=jax.tree_util.keystr(path)
        )
