"""Persistent evolution strategies: unbiased over trajectories longer than one
truncation window, where per-window estimators are not."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnemosyne import meta
from mnemosyne.baselines._learnable_sgd import LearnableSGD

WINDOW, WINDOWS = 4, 3
HORIZON = WINDOW * WINDOWS
FAST_COMPILE = {"xla_backend_optimization_level": 0}


class FixedQuadratic(eqx.Module):
    """½ Σ a_i w_i² from a fixed start: deterministic, so the exact
    meta-gradient is one `jax.grad` away."""

    curvature: jax.Array
    name = "fixed_quadratic"

    def init(self, key):
        del key
        return {"w": jnp.ones_like(self.curvature)}

    def sample_batch(self, key):
        return jnp.zeros(())

    def loss(self, params, batch):
        return 0.5 * jnp.sum(self.curvature * params["w"] ** 2) + batch


TASK = FixedQuadratic(jnp.asarray(np.geomspace(0.2, 2.0, 8), jnp.float32))
SCHEDULE = meta.ConstantTruncationSchedule(HORIZON)


def _exact_gradient(log_lr: float, windows=slice(None)) -> float:
    """d/dθ of Σ_j (mean log loss of window j) over one whole trajectory, the
    sum over the windows `windows` picks."""

    def total(log_lr):
        lopt = eqx.tree_at(lambda o: o.log_learning_rate, LearnableSGD(), log_lr)
        state = meta.init_truncation_state(lopt, TASK, SCHEDULE, jax.random.key(0))
        _, out = meta.truncated_unroll(lopt, TASK, state, HORIZON, SCHEDULE)
        per_window = jnp.mean(jnp.log(out.losses.reshape(WINDOWS, WINDOW)), axis=1)
        return jnp.sum(per_window[windows])

    return float(jax.grad(total)(jnp.asarray(log_lr, jnp.float32)))


def _summed_estimate(estimator, log_lr: float, num_tasks: int) -> float:
    """The estimator's meta-gradients summed over the windows of one trajectory."""
    lopt = LearnableSGD(float(np.exp(log_lr)))
    keys = jax.random.split(jax.random.key(1), num_tasks)
    states = estimator.init_states(lopt, TASK, keys)
    step = eqx.filter_jit(
        lambda states, key: estimator.estimate(
            lopt, TASK, states, key=key, num_steps=WINDOW, schedule=SCHEDULE
        ),
        compiler_options=FAST_COMPILE,
    )
    total = 0.0
    for j in range(WINDOWS):
        _, grads, states, diagnostics = step(states, jax.random.key(10 + j))
        assert int(diagnostics["num_valid"]) > 0
        total += float(grads.log_learning_rate)
    return total


@pytest.fixture(scope="module")
def exact():
    value = _exact_gradient(np.log(0.3))
    assert abs(value) > 0.5  # the rate matters: a non-trivial target
    return value


def test_pes_is_unbiased_across_truncation_windows(exact):
    # 1 parameter, 8 x 256 pairs: the standard error is ~ |g| sqrt(2 / 2048) ~ 3%
    estimate = _summed_estimate(
        meta.PersistentES(std=1e-3, num_pairs=256), np.log(0.3), 8
    )
    assert estimate == pytest.approx(exact, rel=0.1)


def test_end_charged_pes_is_the_gradient_of_the_last_window_alone(exact):
    """`final_fraction=1/4` of a 3-window trajectory: only the last window
    counts, and its estimate carries the rate's effect on the two windows
    before it (what makes the final loss low, not the mean over the run)."""
    last = _exact_gradient(np.log(0.3), windows=slice(WINDOWS - 1, None))
    assert abs(last - exact) > 0.2 * abs(exact)  # a different target
    estimate = _summed_estimate(
        meta.PersistentES(std=1e-3, num_pairs=256, final_fraction=0.25),
        np.log(0.3),
        8,
    )
    assert estimate == pytest.approx(last, rel=0.1)


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_final_fraction_outside_zero_one_is_refused(fraction):
    with pytest.raises(ValueError, match="final_fraction"):
        meta.PersistentES(final_fraction=fraction)


def test_per_window_es_is_biased_on_the_same_problem(exact):
    """What PES fixes: per-window antithetic ES treats the state entering each
    window as a constant, so it misses the rate's effect on earlier progress."""
    estimate = _summed_estimate(
        meta.AntitheticES(std=1e-3, num_pairs=256), np.log(0.3), 8
    )
    assert abs(estimate - exact) > 0.3 * abs(exact)


def test_sign_pes_points_along_the_gradient(exact):
    estimate = _summed_estimate(
        meta.PersistentES(std=1e-3, num_pairs=64, use_sign=True), np.log(0.3), 4
    )
    assert np.sign(estimate) == np.sign(exact)


def test_pes_restarts_the_perturbation_sum_with_the_trajectory():
    est = meta.PersistentES(std=1e-3, num_pairs=2)
    lopt = LearnableSGD(0.3)
    states = est.init_states(lopt, TASK, jax.random.split(jax.random.key(0), 1))
    for j in range(WINDOWS + 1):  # the 4th window starts a new trajectory
        _, _, states, _ = est.estimate(
            lopt,
            TASK,
            states,
            key=jax.random.key(j),
            num_steps=WINDOW,
            schedule=SCHEDULE,
        )
        assert np.all(np.asarray(states.num_windows) == (j % WINDOWS) + 1)


def test_log_uniform_horizons_are_window_multiples_in_range():
    schedule = meta.LogUniformTruncationSchedule(100, 2000, multiple_of=50)
    draws = np.asarray(
        jax.vmap(schedule.sample)(jax.random.split(jax.random.key(0), 4000))
    )
    assert np.all(draws % 50 == 0)
    assert draws.min() == 100 and draws.max() == 2000 == schedule.max_horizon
    # log-uniform: as many draws below the geometric mean as above it
    assert abs(np.mean(draws < np.sqrt(100 * 2000)) - 0.5) < 0.05
