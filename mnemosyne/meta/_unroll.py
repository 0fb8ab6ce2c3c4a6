"""Inner unrolls: a learned optimizer training a task for K steps (`lax.scan`)."""

from __future__ import annotations

import abc
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float, Int

from .._lopt_base import AbstractLearnedOptimizer
from .._types import OptState, Params, PRNGKeyArray

Task = Any  # duck-typed: init(key), loss(params, batch), sample_batch(key)


# --------------------------------------------------------------------------- #
# Truncation schedules
# --------------------------------------------------------------------------- #


class AbstractTruncationSchedule(eqx.Module):
    """Draws the horizon (total inner steps) of each inner trajectory."""

    @abc.abstractmethod
    def sample(self, key: PRNGKeyArray) -> Int[Array, ""]:
        """An int32 horizon, at least 1."""

    @property
    @abc.abstractmethod
    def max_horizon(self) -> int:
        """The largest horizon this schedule can draw."""


class ConstantTruncationSchedule(AbstractTruncationSchedule):
    """Every trajectory runs for the same `horizon` inner steps.

    Args:
        horizon: the number of inner steps before the inner problem is reset.
    """

    horizon: int = eqx.field(static=True)

    def __check_init__(self):
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}.")

    def sample(self, key: PRNGKeyArray) -> Int[Array, ""]:
        del key
        return jnp.asarray(self.horizon, jnp.int32)

    @property
    def max_horizon(self) -> int:
        return self.horizon


class UniformTruncationSchedule(AbstractTruncationSchedule):
    """Horizons drawn uniformly from the integers in `[min_horizon, max_horizon]`.

    Random horizons decorrelate the trajectories of a batch of tasks, as in
    learned_optimization's truncation schedules.
    """

    min_horizon: int = eqx.field(static=True)
    max_horizon_: int = eqx.field(static=True)

    def __init__(self, min_horizon: int, max_horizon: int):
        if not 1 <= min_horizon <= max_horizon:
            raise ValueError(
                "Need 1 <= min_horizon <= max_horizon, got "
                f"{min_horizon}, {max_horizon}."
            )
        self.min_horizon = min_horizon
        self.max_horizon_ = max_horizon

    def sample(self, key: PRNGKeyArray) -> Int[Array, ""]:
        return jax.random.randint(
            key, (), self.min_horizon, self.max_horizon_ + 1, dtype=jnp.int32
        )

    @property
    def max_horizon(self) -> int:
        return self.max_horizon_


class LogUniformTruncationSchedule(AbstractTruncationSchedule):
    """Horizons drawn log-uniformly in `[min_horizon, max_horizon]`, rounded to
    a multiple of `multiple_of` (at least one multiple).

    Long and short inner runs alike (Celo and VeLO draw unroll lengths this
    way, against the short-horizon bias of Wu et al. 2018). With
    `multiple_of` equal to the trainer's window length every reset falls on a
    window boundary, which [`PersistentES`][mnemosyne.meta.PersistentES] relies on.
    """

    min_horizon: int = eqx.field(static=True)
    max_horizon_: int = eqx.field(static=True)
    multiple_of: int = eqx.field(static=True)

    def __init__(self, min_horizon: int, max_horizon: int, multiple_of: int = 1):
        if not 1 <= min_horizon <= max_horizon or multiple_of < 1:
            raise ValueError(
                "Need 1 <= min_horizon <= max_horizon and multiple_of >= 1, got "
                f"{min_horizon}, {max_horizon}, {multiple_of}."
            )
        self.min_horizon = min_horizon
        self.max_horizon_ = max_horizon
        self.multiple_of = multiple_of

    def sample(self, key: PRNGKeyArray) -> Int[Array, ""]:
        log_h = jax.random.uniform(
            key, (), minval=jnp.log(self.min_horizon), maxval=jnp.log(self.max_horizon_)
        )
        m = self.multiple_of
        steps = jnp.maximum(jnp.round(jnp.exp(log_h) / m), 1).astype(jnp.int32)
        return jnp.minimum(steps * m, max(m, self.max_horizon_ // m * m))

    @property
    def max_horizon(self) -> int:
        return max(
            self.multiple_of, self.max_horizon_ // self.multiple_of * self.multiple_of
        )


def as_truncation_schedule(
    horizon: int | AbstractTruncationSchedule,
) -> AbstractTruncationSchedule:
    """An int becomes a constant schedule; schedules pass through."""
    if isinstance(horizon, AbstractTruncationSchedule):
        return horizon
    return ConstantTruncationSchedule(int(horizon))


# --------------------------------------------------------------------------- #
# Truncation state
# --------------------------------------------------------------------------- #


class TruncationState(eqx.Module):
    """One inner trajectory, carried across outer steps of truncated training.

    Attributes:
        params: the inner parameters.
        opt_state: the learned optimizer's state.
        inner_step: the number of inner steps taken on this trajectory.
        horizon: the trajectory is reset (fresh `task.init`) once
            `inner_step >= horizon`.
        key: the trajectory key, a raw `uint32[2]` key. Its four-way split
            `(init_key, horizon_key, data_key, next_key)` gives the initial
            parameters, the horizon, the minibatches (step `t` uses
            `task.sample_batch(jax.random.fold_in(data_key, t))`) and the key of
            the trajectory that follows a reset.
    """

    params: Params
    opt_state: OptState
    inner_step: Int[Array, ""]
    horizon: Int[Array, ""]
    key: PRNGKeyArray


def _raw_key(key: PRNGKeyArray) -> PRNGKeyArray:
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key


def trajectory_keys(key: PRNGKeyArray):
    """`(init_key, horizon_key, data_key, next_key)` of a trajectory key."""
    init_key, horizon_key, data_key, next_key = jax.random.split(key, 4)
    return init_key, horizon_key, data_key, next_key


def init_truncation_state(
    lopt: AbstractLearnedOptimizer,
    task: Task,
    schedule: int | AbstractTruncationSchedule,
    key: PRNGKeyArray,
) -> TruncationState:
    """A fresh trajectory: `task.init`, `lopt.init`, a horizon from `schedule`.

    Args:
        lopt: the learned optimizer.
        task: the inner task.
        schedule: a truncation schedule, or an int (constant horizon).
        key: the trajectory key.

    Returns:
        The [`TruncationState`][mnemosyne.meta.TruncationState] at inner step 0.
    """
    key = _raw_key(key)
    schedule = as_truncation_schedule(schedule)
    init_key, horizon_key, _, _ = trajectory_keys(key)
    params = task.init(init_key)
    return TruncationState(
        params=params,
        opt_state=lopt.init(params),
        inner_step=jnp.zeros((), jnp.int32),
        horizon=schedule.sample(horizon_key),
        key=key,
    )


def expired_truncation_state(
    lopt: AbstractLearnedOptimizer, task: Task, key: PRNGKeyArray
) -> TruncationState:
    """A placeholder trajectory that is reset at the first step of the next window.

    Its params and optimizer state are zeros of the right shapes (computed with
    `jax.eval_shape`, so nothing is compiled); `horizon = 0` makes
    [`truncated_unroll`][mnemosyne.meta.truncated_unroll] replace it at once by
    the fresh trajectory of key `trajectory_keys(key)[3]`. Starting a batch of
    trajectories this way keeps all random initialisation inside the one
    compiled outer step.

    Args:
        lopt: the learned optimizer.
        task: the inner task.
        key: the (raw) key whose successor starts the first real trajectory.

    Returns:
        The [`TruncationState`][mnemosyne.meta.TruncationState] with
        `inner_step = horizon = 0`.
    """
    key = _raw_key(key)

    def shapes():
        params = task.init(key)
        return params, lopt.init(params)

    params, opt_state = jax.tree.map(
        lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(shapes)
    )
    return TruncationState(
        params=params,
        opt_state=opt_state,
        inner_step=jnp.zeros((), jnp.int32),
        horizon=jnp.zeros((), jnp.int32),
        key=key,
    )


def _where_tree(pred, on_true, on_false):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def _inner_step(lopt, task, params, opt_state, batch, stop_gradient_features):
    loss, grads = jax.value_and_grad(task.loss)(params, batch)
    if stop_gradient_features:
        # Andrychowicz et al. (2016): no second derivatives of the inner loss.
        grads = jax.lax.stop_gradient(grads)
    updates, opt_state = lopt.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return loss, params, opt_state


def unroll(
    lopt: AbstractLearnedOptimizer,
    task: Task,
    params: Params,
    opt_state: OptState,
    key: PRNGKeyArray,
    num_steps: int,
    *,
    stop_gradient_features: bool = False,
) -> tuple[Params, OptState, Float[Array, " num_steps"]]:
    r"""Run `num_steps` inner steps from `(params, opt_state)`, without resets.

    For $t = 0, \dots, K-1$:

    $$\ell_t, g_t = \ell(w_t; B_t),\ \nabla_w \ell(w_t; B_t), \qquad
    u_t, s_{t+1} = \mathrm{lopt.update}(g_t, s_t, w_t), \qquad
    w_{t+1} = w_t + u_t ,$$

    with $B_t$ = `task.sample_batch(jax.random.fold_in(key, t))`.

    Args:
        lopt: the learned optimizer.
        task: the inner task.
        params: the initial inner parameters.
        opt_state: the initial optimizer state.
        key: the data key.
        num_steps: $K$ (static).
        stop_gradient_features: stop gradients through the inner gradients fed
            to the optimizer (drops second derivatives of the inner loss).

    Returns:
        `(params, opt_state, losses)`, with the losses $\ell_0, \dots, \ell_{K-1}$.
    """
    key = _raw_key(key)

    def body(carry, t):
        params, opt_state = carry
        batch = task.sample_batch(jax.random.fold_in(key, t))
        loss, params, opt_state = _inner_step(
            lopt, task, params, opt_state, batch, stop_gradient_features
        )
        return (params, opt_state), loss

    (params, opt_state), losses = jax.lax.scan(
        body, (params, opt_state), jnp.arange(num_steps, dtype=jnp.int32)
    )
    return params, opt_state, losses


class UnrollOutput(eqx.Module):
    """What a truncated unroll window records, one entry per inner step.

    Attributes:
        losses: the inner training losses.
        inner_step: the trajectory's inner step at which each loss was taken.
        is_reset: whether the trajectory was reset just before that step.
    """

    losses: Float[Array, " steps"]
    inner_step: Int[Array, " steps"]
    is_reset: Bool[Array, " steps"]


def truncated_unroll(
    lopt: AbstractLearnedOptimizer,
    task: Task,
    state: TruncationState,
    num_steps: int,
    schedule: int | AbstractTruncationSchedule,
    *,
    stop_gradient_features: bool = False,
) -> tuple[TruncationState, UnrollOutput]:
    r"""Advance one trajectory by a window of `num_steps` inner steps.

    Before each step, a trajectory whose `inner_step` has reached its `horizon`
    is reset: its key becomes `next_key` and params, optimizer state and
    horizon are drawn afresh (see
    [`TruncationState`][mnemosyne.meta.TruncationState]). A window that meets
    a NaN/Inf inner loss marks its trajectory as finished, so the next window
    starts a fresh one instead of carrying NaNs forward.

    Gradients with respect to θ flow through the whole window (truncated
    backpropagation) but not into the state carried in from the previous
    window; callers that need that cut apply `jax.lax.stop_gradient` to the
    incoming state, as [`TruncatedBPTT`][mnemosyne.meta.TruncatedBPTT] does by
    construction (the incoming state is an input, not a function of θ).

    Args:
        lopt: the learned optimizer.
        task: the inner task.
        state: the trajectory.
        num_steps: the window length $K$ (static).
        schedule: a truncation schedule, or an int (constant horizon).
        stop_gradient_features: stop gradients through the inner gradients fed
            to the optimizer.

    Returns:
        `(new_state, output)`.
    """
    schedule = as_truncation_schedule(schedule)

    def body(state: TruncationState, _):
        reset = state.inner_step >= state.horizon
        # Two key splits per step (this trajectory's and its successor's): each
        # threefry call site costs XLA compile time, so none is repeated.
        _, _, old_data_key, next_key = trajectory_keys(state.key)
        init_key, horizon_key, new_data_key, _ = trajectory_keys(next_key)
        fresh_params = task.init(init_key)
        fresh = TruncationState(
            params=fresh_params,
            opt_state=lopt.init(fresh_params),
            inner_step=jnp.zeros((), jnp.int32),
            horizon=schedule.sample(horizon_key),
            key=next_key,
        )
        state = _where_tree(reset, fresh, state)
        data_key = jnp.where(reset, new_data_key, old_data_key)
        batch = task.sample_batch(jax.random.fold_in(data_key, state.inner_step))
        loss, params, opt_state = _inner_step(
            lopt, task, state.params, state.opt_state, batch, stop_gradient_features
        )
        record = UnrollOutput(losses=loss, inner_step=state.inner_step, is_reset=reset)
        state = TruncationState(
            params=params,
            opt_state=opt_state,
            inner_step=state.inner_step + 1,
            horizon=state.horizon,
            key=state.key,
        )
        return state, record

    state, output = jax.lax.scan(body, state, None, length=num_steps)
    finite = jnp.all(jnp.isfinite(output.losses))
    state = eqx.tree_at(
        lambda s: s.inner_step,
        state,
        jnp.where(
            finite, state.inner_step, jnp.maximum(state.inner_step, state.horizon)
        ),
    )
    return state, output
