"""Meta-gradient estimators: truncated BPTT and antithetic evolution strategies."""

from __future__ import annotations

import abc
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._lopt_base import AbstractLearnedOptimizer, trainable_filter
from .._types import PRNGKeyArray
from ._meta_loss import MetaLoss, get_meta_loss, guard_meta_loss
from ._unroll import (
    AbstractTruncationSchedule,
    Task,
    TruncationState,
    expired_truncation_state,
    truncated_unroll,
)

Diagnostics = dict[str, Array]


def _masked_mean(values, mask):
    """Mean of `values` over the leading axis where `mask`; 0 where none is."""
    count = jnp.sum(mask)
    total = jnp.sum(jnp.where(mask, values, jnp.zeros_like(values)))
    return jnp.where(count > 0, total / jnp.maximum(count, 1).astype(values.dtype), 0)


def _mean_over_valid(tree, valid):
    """Mean over the leading (sample) axis of every leaf, using valid rows only."""
    count = jnp.sum(valid)

    def reduce(x):
        shaped = jnp.reshape(valid, valid.shape + (1,) * (x.ndim - valid.ndim))
        kept = jnp.where(shaped, x, jnp.zeros_like(x))
        denom = jnp.maximum(count, 1).astype(x.dtype)
        return jnp.sum(kept, axis=tuple(range(valid.ndim))) / denom

    return jax.tree.map(reduce, tree)


def _reported_meta_loss(values, valid, penalty):
    """The mean meta-loss over the valid samples, or `penalty` if none is."""
    return jnp.where(
        jnp.any(valid), _masked_mean(values, valid), jnp.asarray(penalty, values.dtype)
    )


def _check_perturbations(num_pairs: int, std: float) -> None:
    if num_pairs < 1:
        raise ValueError(f"num_pairs must be >= 1, got {num_pairs}.")
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std}.")


def _pair_contributions(scale, pair_diverged, directions):
    """Each pair's finite-difference `scale` times its direction (one array of
    shape `(pairs, *leaf.shape)` per trainable leaf), zero for a pair in which
    either side diverged."""
    scale = jnp.where(pair_diverged, jnp.zeros_like(scale), scale)
    return [
        jnp.reshape(scale, scale.shape + (1,) * (d.ndim - 1)).astype(d.dtype) * d
        for d in directions
    ]


def _evolution_strategies_estimate(per_task, states, key, treedef, penalty):
    """Run `per_task(state, task_key) -> (contribution, pair_diverged, value,
    diverged, new_state)` on every task of the batch; the meta-gradient is the
    mean contribution of the non-diverged pairs, the reported meta-loss the mean
    value of the non-diverged tasks."""
    num_tasks = jax.tree.leaves(states)[0].shape[0]
    task_keys = jax.random.split(key, num_tasks)
    contribution, pair_diverged, values, diverged, new_states = jax.vmap(per_task)(
        states, task_keys
    )
    # contribution leaves: [num_tasks, num_pairs, *leaf.shape]
    meta_grads = jax.tree.unflatten(
        treedef, _mean_over_valid(contribution, ~pair_diverged)
    )
    meta_loss = _reported_meta_loss(values, ~diverged, penalty)
    return meta_loss, meta_grads, new_states, pair_diverged, diverged


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


class AbstractGradientEstimator(eqx.Module):
    """Estimates the meta-gradient from a batch of truncated inner trajectories.

    Every estimator has one entry point,
    `estimate(lopt, task, states, *, key, num_steps, schedule)`, which advances
    each trajectory of the batch `states` (a
    [`TruncationState`][mnemosyne.meta.TruncationState] whose leaves have a
    leading task axis) by one window of `num_steps` inner steps and
    returns `(meta_loss, meta_grads, new_states, diagnostics)`:

    - `meta_loss`: the mean meta-loss over the non-diverged trajectories;
    - `meta_grads`: the meta-gradient, a pytree shaped like
      `eqx.partition(lopt, trainable_filter(lopt))[0]` (θ's trainable part,
      `None` elsewhere), averaged over the non-diverged trajectories;
    - `new_states`: the advanced trajectories;
    - `diagnostics`: a dict of int32 scalars, at least `num_diverged` (diverged
      trajectories) and `num_valid` (samples that entered the gradient; the
      trainer skips a step where it is 0).

    A trajectory is *diverged* when an inner loss, its meta-loss or (for
    backpropagation) its meta-gradient is NaN/Inf; it is dropped from the
    average, counted, and restarted at the next window.

    Attributes:
        meta_loss: the meta-objective, a name from
            [`get_meta_loss`][mnemosyne.meta.get_meta_loss] or a callable.
        stop_gradient_features: feed the optimizer stop-gradiented inner
            gradients (Andrychowicz et al. 2016), which drops second
            derivatives of the inner loss.
        divergence_penalty: the finite meta-loss reported when every
            trajectory diverged.
    """

    meta_loss: eqx.AbstractVar[str | MetaLoss]
    stop_gradient_features: eqx.AbstractVar[bool]
    divergence_penalty: eqx.AbstractVar[float]

    def init_states(self, lopt: AbstractLearnedOptimizer, task: Task, keys) -> Any:
        """The batch of trajectories a trainer starts a task with, one per key
        (leading axis): expired placeholders, which the first window replaces
        by fresh trajectories inside the compiled outer step."""
        one = expired_truncation_state(lopt, task, keys[0])
        batched = jax.tree.map(
            lambda x: jnp.broadcast_to(x, (len(keys), *x.shape)), one
        )
        return eqx.tree_at(lambda s: s.key, batched, keys)

    @abc.abstractmethod
    def estimate(
        self,
        lopt: AbstractLearnedOptimizer,
        task: Task,
        states: TruncationState,
        *,
        key: PRNGKeyArray,
        num_steps: int,
        schedule: AbstractTruncationSchedule,
    ) -> tuple[Float[Array, ""], Any, TruncationState, Diagnostics]:
        """Return `(meta_loss, meta_grads, new_states, diagnostics)`."""

    def _window_loss(self, lopt, task, state, num_steps, schedule):
        new_state, output = truncated_unroll(
            lopt,
            task,
            state,
            num_steps,
            schedule,
            stop_gradient_features=self.stop_gradient_features,
        )
        value = get_meta_loss(self.meta_loss)(output.losses)
        return value, (new_state, output)


class TruncatedBPTT(AbstractGradientEstimator):
    r"""Truncated backpropagation through the unroll window.

    For each trajectory $i$ of the batch, the window's meta-loss $L_i(\theta)$
    is differentiated by reverse mode through all $K$ inner steps of the window
    (the state entering the window is treated as a constant):

    $$\hat g = \frac{1}{|V|} \sum_{i \in V} \nabla_\theta L_i(\theta),$$

    with $V$ the non-diverged trajectories. When one window covers a whole
    trajectory this is the exact gradient of the meta-objective; shorter
    windows bias it (the truncation bias of Wu et al. 2018). The gradient is
    taken with `eqx.filter_value_and_grad` with respect to the trainable part
    of θ, `eqx.partition(lopt, trainable_filter(lopt))[0]`.

    Args:
        meta_loss: the meta-objective (default mean log inner loss).
        stop_gradient_features: drop second derivatives of the inner loss.
        divergence_penalty: meta-loss reported when every trajectory diverged.

    References:
        Andrychowicz et al., "Learning to learn by gradient descent by gradient
        descent", NeurIPS 2016. Wu et al., "Understanding short-horizon bias
        in stochastic meta-optimization", ICLR 2018.
    """

    meta_loss: str | MetaLoss = eqx.field(static=True, default="mean_log")
    stop_gradient_features: bool = eqx.field(static=True, default=False)
    divergence_penalty: float = eqx.field(static=True, default=1e3)

    def estimate(self, lopt, task, states, *, key, num_steps, schedule):
        del key  # deterministic given the states
        trainable, static = eqx.partition(lopt, trainable_filter(lopt))

        def window(trainable, state):
            return self._window_loss(
                eqx.combine(trainable, static), task, state, num_steps, schedule
            )

        value_and_grad = eqx.filter_value_and_grad(window, has_aux=True)

        def per_task(state):
            (value, (new_state, output)), grads = value_and_grad(trainable, state)
            value, diverged = guard_meta_loss(
                output.losses, value, self.divergence_penalty
            )
            diverged = diverged | ~_all_finite(grads)
            return value, grads, new_state, diverged

        values, grads, new_states, diverged = jax.vmap(per_task)(states)
        valid = ~diverged
        meta_grads = _mean_over_valid(grads, valid)
        meta_loss = _reported_meta_loss(values, valid, self.divergence_penalty)
        diagnostics = {
            "num_diverged": jnp.sum(diverged).astype(jnp.int32),
            "num_valid": jnp.sum(valid).astype(jnp.int32),
        }
        return meta_loss, meta_grads, new_states, diagnostics


class AntitheticES(AbstractGradientEstimator):
    r"""Antithetic evolution strategies over the trainable leaves of θ.

    For each trajectory $i$ of the batch, `num_pairs` $=P$ Gaussian directions
    $\varepsilon_{ip} \sim \mathcal N(0, I)$ (one per trainable coordinate) are
    drawn, and the window is unrolled at $\theta \pm \sigma \varepsilon_{ip}$
    from the *same* truncation state with the *same* minibatches:

    $$\hat g = \frac{1}{|V|} \sum_{(i,p) \in V}
      \frac{L_i(\theta + \sigma\varepsilon_{ip}) - L_i(\theta - \sigma\varepsilon_{ip})}
      {2\sigma}\, \varepsilon_{ip},$$

    which for one trajectory is $\sum_p (L^+ - L^-)\varepsilon / (2\sigma P)$.
    It estimates the gradient of the Gaussian-smoothed meta-loss
    $\mathbb E_\varepsilon L(\theta + \sigma\varepsilon)$, needs no
    backpropagation through the unroll (memory independent of the window
    length) and tolerates chaotic or non-differentiable unrolls. Pairs in which
    either side diverged are dropped ($V$) and counted. For a smooth $L$ and
    small $\sigma$ the estimate is unbiased with covariance
    $\frac{1}{M}(\lVert g\rVert^2 I + g g^\top)$ for $M$ pairs.

    The trajectories are advanced by a third, unperturbed unroll, which also
    gives the reported meta-loss.

    Args:
        std: the perturbation scale $\sigma$.
        num_pairs: $P$, antithetic pairs per trajectory.
        meta_loss: the meta-objective (default mean log inner loss).
        stop_gradient_features: irrelevant to ES (nothing is differentiated);
            kept for a uniform interface.
        divergence_penalty: meta-loss reported when every trajectory diverged.

    References:
        Salimans et al., "Evolution strategies as a scalable alternative to
        reinforcement learning", 2017. Metz et al., "Gradients are not all
        you need", 2021.
    """

    std: float = eqx.field(static=True, default=0.01)
    num_pairs: int = eqx.field(static=True, default=8)
    meta_loss: str | MetaLoss = eqx.field(static=True, default="mean_log")
    stop_gradient_features: bool = eqx.field(static=True, default=False)
    divergence_penalty: float = eqx.field(static=True, default=1e3)

    def __check_init__(self):
        _check_perturbations(self.num_pairs, self.std)

    def estimate(self, lopt, task, states, *, key, num_steps, schedule):
        trainable, static = eqx.partition(lopt, trainable_filter(lopt))
        leaves, treedef = jax.tree.flatten(trainable)

        def loss_at(leaves_, state):
            lopt_ = eqx.combine(jax.tree.unflatten(treedef, leaves_), static)
            value, (new_state, output) = self._window_loss(
                lopt_, task, state, num_steps, schedule
            )
            value, diverged = guard_meta_loss(
                output.losses, value, self.divergence_penalty
            )
            return value, diverged, new_state

        def draw(pair_key):
            keys = jax.random.split(pair_key, max(len(leaves), 1))
            return [
                jax.random.normal(k, x.shape, x.dtype)
                for k, x in zip(keys, leaves, strict=False)
            ]

        def per_task(state, task_key):
            pair_keys = jax.random.split(task_key, self.num_pairs)
            eps = jax.vmap(draw)(pair_keys)  # leaves: [num_pairs, *leaf.shape]
            # One batched unroll over 2P + 1 copies of θ (θ + σε_p, θ - σε_p,
            # θ): a single scan body to compile, all on the same state and data.
            candidates = [
                jnp.concatenate(
                    [x[None] + self.std * e, x[None] - self.std * e, x[None]]
                )
                for x, e in zip(leaves, eps, strict=True)
            ]
            values, diverged, new_states = jax.vmap(loss_at, in_axes=(0, None))(
                candidates, state
            )
            new_state = jax.tree.map(lambda x: x[-1], new_states)
            loss_plus = values[: self.num_pairs]
            loss_minus = values[self.num_pairs : 2 * self.num_pairs]
            pair_diverged = (
                diverged[: self.num_pairs]
                | diverged[self.num_pairs : 2 * self.num_pairs]
            )
            scale = (loss_plus - loss_minus) / (2 * self.std)
            contribution = _pair_contributions(scale, pair_diverged, eps)
            return (
                contribution,
                pair_diverged,
                values[-1],
                diverged[-1],
                new_state,
            )

        meta_loss, meta_grads, new_states, pair_diverged, diverged = (
            _evolution_strategies_estimate(
                per_task, states, key, treedef, self.divergence_penalty
            )
        )
        diagnostics = {
            "num_diverged": jnp.sum(diverged).astype(jnp.int32),
            "num_diverged_pairs": jnp.sum(pair_diverged).astype(jnp.int32),
            "num_valid": jnp.sum(~pair_diverged).astype(jnp.int32),
        }
        return meta_loss, meta_grads, new_states, diagnostics


class PESState(eqx.Module):
    """The trajectories of [`PersistentES`][mnemosyne.meta.PersistentES] for one
    task (leading axes added by batching).

    Attributes:
        particles: `2P` trajectories, the `P` at $\\theta + \\sigma\\varepsilon$
            then the `P` at $\\theta - \\sigma\\varepsilon$; particle `p` and
            `P + p` share their key (initialisation, minibatches, horizon).
        accumulated: per trainable leaf of θ, `(P, *leaf.shape)`: the sum of the
            pair's perturbation directions $\\varepsilon$ since its trajectory began.
        num_windows: `(P,)` int32, the windows in that sum.
    """

    particles: TruncationState
    accumulated: list
    num_windows: Array


class PersistentES(AbstractGradientEstimator):
    r"""Persistent evolution strategies (PES, Vicol et al. 2021), antithetic.

    Each task keeps `num_pairs` $=P$ pairs of trajectories unrolled with
    $\theta \pm \sigma\varepsilon_{p,j}$, a fresh $\varepsilon_{p,j}\sim\mathcal N(0,
    I)$
    per truncation window $j$. The states persist across windows, and so does
    the sum $\xi_p = \sum_{j' \le j} \varepsilon_{p,j'}$ of the pair's
    directions since its trajectory started; the estimate of window $j$ is

    $$\hat g = \frac1{|V|}\sum_{p \in V} \frac{L^+_{p,j} - L^-_{p,j}}{2\sigma}\,\xi_p
    ,$$

    an unbiased estimate of the gradient of the Gaussian-smoothed *whole-
    trajectory* meta-loss however many windows a trajectory spans: no
    truncation bias, unlike truncated BPTT or per-window ES. With
    `use_sign=True` the loss difference is replaced by its sign and the sum is
    divided by $\sqrt{j}$, so every window weighs the same whatever the loss
    scale of the task (VeLO uses the sign of the loss difference with full
    ES); the estimate then points along the gradient of the smoothed
    meta-loss but no longer has its magnitude. Pairs in which either side
    diverged are dropped, counted and both restarted. Resets must fall on
    window boundaries: use a horizon schedule whose horizons are multiples of
    the window length
    ([`LogUniformTruncationSchedule`][mnemosyne.meta.LogUniformTruncationSchedule]`(multiple_of=K)`).

    Args:
        std: the perturbation scale $\sigma$.
        num_pairs: $P$, antithetic pairs per task trajectory.
        use_sign: use the sign of the loss difference.
        meta_loss: the per-window meta-objective (default mean log inner loss).
        stop_gradient_features: irrelevant to ES; kept for a uniform interface.
        divergence_penalty: meta-loss reported when every trajectory diverged.
        final_fraction: if given, only windows that end in the last
            `final_fraction` of their trajectory's horizon contribute to the
            estimate (the others still advance the trajectory and its $\xi_p$):
            the gradient of the loss at the *end* of training, the quantity an
            evaluation compares, rather than of its mean over the run, which
            rewards fast early progress over a low final loss.

    References:
        Vicol, Metz and Sohl-Dickstein, "Unbiased gradient estimation in
        unrolled computation graphs with persistent evolution strategies",
        ICML 2021. Metz et al., "VeLO: training versatile learned optimizers
        by scaling up", 2022.
    """

    std: float = eqx.field(static=True, default=0.01)
    num_pairs: int = eqx.field(static=True, default=4)
    use_sign: bool = eqx.field(static=True, default=False)
    meta_loss: str | MetaLoss = eqx.field(static=True, default="mean_log")
    stop_gradient_features: bool = eqx.field(static=True, default=False)
    divergence_penalty: float = eqx.field(static=True, default=1e3)
    final_fraction: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        _check_perturbations(self.num_pairs, self.std)
        if self.final_fraction is not None and not 0 < self.final_fraction <= 1:
            raise ValueError(
                f"final_fraction must be in (0, 1], got {self.final_fraction}"
            )

    def init_states(self, lopt, task, keys) -> PESState:
        base = super().init_states(lopt, task, keys)
        n, pairs = len(keys), self.num_pairs
        particles = jax.tree.map(
            lambda x: jnp.broadcast_to(x[:, None], (n, 2 * pairs, *x.shape[1:])), base
        )
        trainable = eqx.filter(lopt, trainable_filter(lopt))
        accumulated = [
            jnp.zeros((n, pairs, *x.shape), x.dtype) for x in jax.tree.leaves(trainable)
        ]
        return PESState(particles, accumulated, jnp.zeros((n, pairs), jnp.int32))

    def estimate(self, lopt, task, states, *, key, num_steps, schedule):
        trainable, static = eqx.partition(lopt, trainable_filter(lopt))
        leaves, treedef = jax.tree.flatten(trainable)
        pairs = self.num_pairs
        expand = lambda a, x: jnp.reshape(a, a.shape + (1,) * (x.ndim - a.ndim))

        def window(leaves_, particle):
            lopt_ = eqx.combine(jax.tree.unflatten(treedef, leaves_), static)
            value, (new_particle, output) = self._window_loss(
                lopt_, task, particle, num_steps, schedule
            )
            value, diverged = guard_meta_loss(
                output.losses, value, self.divergence_penalty
            )
            return value, diverged, new_particle, output.is_reset[0]

        def per_task(state: PESState, task_key):
            keys = jax.random.split(task_key, max(len(leaves), 1))
            eps = [
                jax.random.normal(k, (pairs, *x.shape), x.dtype)
                for k, x in zip(keys, leaves, strict=False)
            ]
            candidates = [
                jnp.concatenate([x[None] + self.std * e, x[None] - self.std * e])
                for x, e in zip(leaves, eps, strict=True)
            ]
            values, diverged, particles, reset = jax.vmap(window)(
                candidates, state.particles
            )
            restarted = reset[:pairs]  # a pair shares its key: both or neither reset
            accumulated = [
                jnp.where(expand(restarted, e), e, a + e)
                for a, e in zip(state.accumulated, eps, strict=True)
            ]
            num_windows = jnp.where(restarted, 1, state.num_windows + 1)
            pair_diverged = diverged[:pairs] | diverged[pairs:]
            diff = values[:pairs] - values[pairs:]
            if self.use_sign:
                scale = jnp.sign(diff) / jnp.sqrt(num_windows.astype(diff.dtype))
            else:
                scale = diff / (2 * self.std)
            if self.final_fraction is not None:
                ends = particles.inner_step[:pairs]
                late = ends >= (1 - self.final_fraction) * particles.horizon[:pairs]
                scale = jnp.where(late, scale, 0)
            contribution = _pair_contributions(scale, pair_diverged, accumulated)
            both = jnp.concatenate([pair_diverged, pair_diverged])
            particles = eqx.tree_at(  # a diverged pair restarts both its trajectories
                lambda s: s.inner_step,
                particles,
                jnp.where(
                    both,
                    jnp.maximum(particles.inner_step, particles.horizon),
                    particles.inner_step,
                ),
            )
            pair_mean = 0.5 * (values[:pairs] + values[pairs:])
            mean_value = _masked_mean(pair_mean, ~pair_diverged)
            new_state = PESState(particles, accumulated, num_windows)
            return (
                contribution,
                pair_diverged,
                mean_value,
                jnp.all(pair_diverged),
                new_state,
            )

        meta_loss, meta_grads, new_states, pair_diverged, _ = (
            _evolution_strategies_estimate(
                per_task, states, key, treedef, self.divergence_penalty
            )
        )
        diagnostics = {
            "num_diverged": jnp.sum(pair_diverged).astype(jnp.int32),
            "num_valid": jnp.sum(~pair_diverged).astype(jnp.int32),
        }
        return meta_loss, meta_grads, new_states, diagnostics
