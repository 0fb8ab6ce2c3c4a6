"""Tests of mnemosyne.baselines: the LSTM optimizers and the tuned grid search."""

from __future__ import annotations

import json
import math
import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mnemosyne
from mnemosyne import trainable_filter
from mnemosyne.baselines import (
    DEFAULT_GRID,
    LSTMOptimizer,
    grid_search,
    lstm,
    reference_optimizers,
    tuned,
)
from mnemosyne.baselines import _lstm as lstm_module

WEIGHTS = pathlib.Path(mnemosyne.__file__).parent / "weights"

VARIANTS = ["gradient", "multiscale"]

# XLA compiles of the LSTM graph dominate this file's run time, so the tests share
# one jitted step (`_step`) on one parameter tree (`_params`) wherever they can.

def _params():
    return {
        "matrix": jnp.linspace(-1.0, 1.0, 12, dtype=jnp.float32).reshape(3, 4),
        "scalar": jnp.asarray(0.5, jnp.float32),
        "bf16": jnp.linspace(-2.0, 2.0, 5).astype(jnp.bfloat16),
        "f16": jnp.linspace(-1.0, 3.0, 8).astype(jnp.float16).reshape(2, 2, 2),
        "none": None,
    }


def _grads(params, scale=1.0):
    """Gradient of ½ Σ scale (p - 0.3)², in each leaf's dtype."""
    return jax.tree.map(
        lambda p: (scale * (p.astype(jnp.float32) - 0.3)).astype(p.dtype), params
    )


def _loss(params):
    return sum(
        float(jnp.sum((p.astype(jnp.float32) - 0.3) ** 2))
        for p in jax.tree.leaves(params)
    )


@pytest.fixture(scope="module", params=VARIANTS)
def lopt(request):
    return LSTMOptimizer(features=request.param, key=jax.random.key(0))


@eqx.filter_jit
def _step(lopt, grads, state, params):
    return lopt.update(grads, state, params)


# ----------------------------------------------------------------------------
# LSTMOptimizer (the optax contract itself: tests/test_optax_contract.py, where
# both variants are registered in helpers.OPTIMIZERS)
# ----------------------------------------------------------------------------


def test_update_jit_finite_dtype_shape(lopt):
    params = _params()
    state = lopt.init(params)
    for scale in (1.0, 1e-6, 1e3):
        updates, state = _step(lopt, _grads(params, scale), state, params)
        assert jax.tree.structure(updates) == jax.tree.structure(params)
        for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params), strict=True):
            assert u.shape == p.shape and u.dtype == p.dtype
            assert bool(jnp.all(jnp.isfinite(u)))
    assert updates["none"] is None
    assert int(state.step) == 3


def test_state_size_matches_docstring(lopt):
    params = {"w": jax.ShapeDtypeStruct((7, 3), jnp.float32), "b": jnp.zeros(5)}
    state = jax.eval_shape(lopt.init, params)
    num_params = 7 * 3 + 5
    per_coordinate = sum(x.size for x in jax.tree.leaves((state.cells, state.moments)))
    assert per_coordinate == lopt.floats_per_parameter * num_params
    expected = 80 if lopt.features == "gradient" else 85
    assert lopt.floats_per_parameter == expected


def test_numpy_reference_matches_jax(lopt):
    params = _params()
    state_j = state_n = lopt.init(params)
    for k in range(3):
        grads = _grads(params, k + 1.0)
        u_j, state_j = _step(lopt, grads, state_j, params)
        u_n, state_n = lopt.update(grads, state_n, params, backend="numpy")
        for a, b in zip(jax.tree.leaves(u_j), jax.tree.leaves(u_n), strict=True):
            assert np.asarray(b).dtype == a.dtype
            if a.dtype == jnp.float32:
                np.testing.assert_allclose(
                    np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7
                )
            else:  # one rounding to 8 / 11 mantissa bits apart at most
                np.testing.assert_allclose(
                    np.asarray(a, np.float32),
                    np.asarray(b, np.float32),
                    rtol=1e-2,
                    atol=1e-6,
                )
        for a, b in zip(
            jax.tree.leaves(state_j), jax.tree.leaves(state_n), strict=True
        ):
            np.testing.assert_allclose(
                np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6
            )
    with pytest.raises(ValueError, match="backend"):
        lopt.update(_grads(params), state_j, backend="torch")


def test_untrained_takes_small_descent_steps(lopt):
    params = _params()
    state = lopt.init(params)
    p = params
    for _ in range(20):
        updates, state = _step(lopt, _grads(p), state, p)
        for u in jax.tree.leaves(updates):
            assert (
                float(jnp.max(jnp.abs(u.astype(jnp.float32)))) < 2 * lopt.output_scale
            )
        p = optax.apply_updates(p, updates)
    assert _loss(p) < 0.9 * _loss(params)


def test_meta_gradient_finite_and_nonzero(lopt):
    targets = jnp.array([1.0, -2.0, 0.5, 3.0])

    @eqx.filter_jit
    @eqx.filter_grad
    def meta_grad(lopt):
        def body(carry, _):
            x, state = carry
            updates, state = lopt.update(x - targets, state, x)
            x = x + updates
            return (x, state), 0.5 * jnp.sum((x - targets) ** 2)

        x = jnp.zeros(4)
        _, losses = jax.lax.scan(body, (x, lopt.init(x)), None, length=3)
        return jnp.sum(losses)

    grads = meta_grad(lopt)
    spec = trainable_filter(lopt)
    leaves = jax.tree.leaves(eqx.filter(grads, spec))
    assert (
        len(leaves)
        == len(jax.tree.leaves(eqx.filter(lopt, spec)))
        == 3 * lopt.num_layers + 2
    )
    for g in leaves:
        assert bool(jnp.all(jnp.isfinite(g)))
        assert float(jnp.max(jnp.abs(g))) > 0.0


def test_rejects_complex_and_bad_arguments():
    lopt = LSTMOptimizer(key=jax.random.key(1))
    with pytest.raises(TypeError, match="complex"):
        lopt.init({"z": jnp.ones(2, jnp.complex64)})
    with pytest.raises(ValueError, match="features"):
        LSTMOptimizer(features="adam", key=jax.random.key(0))
    with pytest.raises(ValueError, match="variant"):
        lstm(variant="adam")


def test_pretrained_loading(tmp_path, monkeypatch):
    """Missing weights give a clear error; present weights round-trip."""
    monkeypatch.setattr(
        lstm_module, "__file__", str(tmp_path / "baselines" / "_lstm.py")
    )
    for (variant, recipe), filename in lstm_module._WEIGHT_FILES.items():
        preset = filename.removesuffix(".eqx")
        with pytest.raises(FileNotFoundError, match=f"--preset {preset}`"):
            lstm(variant=variant, recipe=recipe)
        (tmp_path / "weights").mkdir(exist_ok=True)
        saved = LSTMOptimizer(features=variant, key=jax.random.key(7))
        mnemosyne.save(tmp_path / "weights" / filename, saved)
        loaded = lstm_module._load_pretrained(variant, recipe)
        for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(loaded), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        tx = lstm(variant=variant, recipe=recipe)
        jax.eval_shape(tx.update, jnp.ones(2), tx.init(jnp.ones(2)))
    with pytest.raises(ValueError, match="recipe"):
        lstm(recipe="v3")


def test_shipped_lstm_weights_are_their_presets():
    """Each shipped LSTM file holds its variant and is recorded as its preset's;
    the v2 files come from the PES recipe with the recorded shrinkage and
    differ from the v1 weights."""
    for (variant, recipe), filename in lstm_module._WEIGHT_FILES.items():
        lopt = lstm_module._load_pretrained(variant, recipe)
        assert lopt.features == variant
        record = json.loads((WEIGHTS / (filename + ".json")).read_text())
        assert record["preset"] == filename.removesuffix(".eqx")
        if recipe == "v2":
            v1 = lstm_module._load_pretrained(variant, "v1")
            assert record["config"]["estimator"]["class"] == "PersistentES"
            assert record["config"]["shrink"] == 0.125
            different = [
                not np.array_equal(np.asarray(a), np.asarray(b))
                for a, b in zip(jax.tree.leaves(lopt), jax.tree.leaves(v1), strict=True)
            ]
            assert any(different)


# ----------------------------------------------------------------------------
# A short meta-training run (mnemosyne.meta.MetaTrainer, truncated BPTT)
# ----------------------------------------------------------------------------


class _FixedStart(eqx.Module):
    """A task whose every trajectory starts at x = 0 (so meta-losses compare)."""

    task: eqx.Module

    def init(self, key):
        del key
        return {"x": jnp.zeros_like(self.task.optimum)}

    def loss(self, params, batch):
        return self.task.loss(params, batch)

    def sample_batch(self, key):
        return self.task.sample_batch(key)


@pytest.mark.parametrize(
    "variant", ["gradient", pytest.param("multiscale", marks=pytest.mark.slow)]
)
def test_short_meta_training_reduces_meta_loss(variant):
    """Truncated BPTT with Adam on θ (the MetaTrainer) lowers the meta-loss."""
    from mnemosyne.meta import MetaTrainer, TruncatedBPTT
    from mnemosyne.tasks._synthetic import Quadratic

    with jax.numpy_rank_promotion("allow"):  # Quadratic.random broadcasts implicitly
        task = _FixedStart(Quadratic.random(jax.random.key(0), dim=8, log10_cond=1.0))
    lopt = LSTMOptimizer(hidden_size=8, features=variant, key=jax.random.key(0))
    horizon = 15

    trainer = MetaTrainer(
        lopt,
        task,
        TruncatedBPTT(),
        learning_rate=1e-2,
        num_tasks=2,
        unroll_length=5,
        horizon=horizon,
        compiler_options={"xla_backend_optimization_level": 0},  # faster compile
        key=jax.random.key(1),
    )
    # optax.adam (the outer optimizer) computes decay**count with an int32
    # count, which strict dtype promotion rejects.
    with jax.numpy_dtype_promotion("standard"):
        trained, history = trainer.run(45, progress=False)
    meta_loss = np.asarray(history["meta_loss"])
    assert np.all(np.isfinite(meta_loss)) and not any(history["skipped"])
    # Every trajectory restarts from the same point every horizon / unroll = 3
    # outer steps, so compare whole trajectories: the first against the last.
    windows = horizon // 5
    before, after = meta_loss[:windows].mean(), meta_loss[-windows:].mean()
    assert after < before - 0.1, (before, after)
    assert isinstance(trained, LSTMOptimizer)


# ----------------------------------------------------------------------------
# tuned: learning-rate grid search
# ----------------------------------------------------------------------------


class _Quadratic(eqx.Module):
    """f(x) = ½ a Σ x², x0 = 1: plain SGD gives f_K = |1 - lr·a|^{2K} f0."""

    curvature: float = eqx.field(static=True)
    dim: int = eqx.field(static=True, default=4)

    def init(self, key):
        del key
        return {"x": jnp.ones(self.dim, jnp.float32)}

    def loss(self, params, batch):
        del batch
        return 0.5 * self.curvature * jnp.sum(params["x"] ** 2)

    def sample_batch(self, key):
        return jnp.zeros(())


def test_tuned_picks_known_optimum_and_flags_divergence():
    a, num_steps = 4.0, 20
    grid = [0.05, 0.1, 1.0 / a, 0.4, 0.42, 100.0]
    result = tuned(
        lambda lr: optax.sgd(lr),
        grid,
        _Quadratic(a),
        num_steps=num_steps,
        key=jax.random.key(0),
    )
    assert result.learning_rate == pytest.approx(1.0 / a)
    assert result.final_loss == pytest.approx(0.0, abs=1e-12)
    assert result.losses_by_lr[100.0] == math.inf
    assert set(result.losses_by_lr) == set(grid)
    # the finite scores follow the analytic |1 - lr a|^{2t} ordering
    finite = [lr for lr in grid if math.isfinite(result.losses_by_lr[lr])]
    analytic = sorted(finite, key=lambda lr: abs(1.0 - lr * a))
    measured = sorted(finite, key=lambda lr: result.losses_by_lr[lr])
    assert analytic == measured
    assert result.curves[0.1].shape == (num_steps,)
    np.testing.assert_allclose(
        result.curves[0.1][:3], 0.5 * a * 4 * (1 - 0.4) ** (2 * np.arange(3)), rtol=1e-5
    )


def test_tuned_reference_optimizers_and_concrete_lr_factories():
    task = _Quadratic(2.0)
    for name, factory in reference_optimizers().items():
        result = tuned(
            factory,
            [1e-3, 1e-1],
            task,
            num_steps=30,
            key=jax.random.key(0),
            num_seeds=2,
        )
        assert result.learning_rate == 1e-1, name
        assert math.isfinite(result.final_loss)
    # a factory that needs a Python float is compiled per grid point instead
    result = tuned(
        lambda lr: optax.sgd(float(lr)),
        [0.1, 0.5],
        task,
        num_steps=5,
        key=jax.random.key(0),
    )
    assert result.learning_rate == 0.5
    assert len(DEFAULT_GRID) == 9
    assert DEFAULT_GRID[0] == pytest.approx(1e-4)
    assert DEFAULT_GRID[-1] == pytest.approx(1.0)


def test_grid_search_tunes_several_optimizers_in_one_program():
    """Two factories tuned together: each finds its own analytic optimum
    (SGD on curvature a: lr = 1/a; a factory that halves lr: lr = 2/a), with
    the same scores as tuning each alone."""
    a, grid = 4.0, [0.05, 0.25, 0.5, 1.0]
    factories = {"sgd": lambda lr: optax.sgd(lr), "half": lambda lr: optax.sgd(lr / 2)}
    task, key = _Quadratic(a), jax.random.key(0)
    found = grid_search(factories, grid, task, num_steps=10, key=key)
    assert found["sgd"].learning_rate == pytest.approx(1 / a)
    assert found["half"].learning_rate == pytest.approx(2 / a)
    assert found["sgd"].final_loss == pytest.approx(0.0, abs=1e-12)
    alone = tuned(factories["half"], grid, task, num_steps=10, key=key)
    assert alone.losses_by_lr == pytest.approx(found["half"].losses_by_lr)


def test_tuned_all_diverged_warns():
    with pytest.warns(RuntimeWarning, match="diverged"):
        result = tuned(
            lambda lr: optax.sgd(lr),
            [100.0, 1000.0],
            _Quadratic(4.0),
            num_steps=30,
            key=jax.random.key(0),
        )
    assert result.final_loss == math.inf
    assert result.learning_rate == 100.0
