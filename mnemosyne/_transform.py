"""The optax transformations: `scale_by_mnemosyne` and `mnemosyne`."""

import functools
from typing import Any

import jax
import numpy as np
import optax

from ._lopt_base import AbstractLearnedOptimizer


def _init(lopt, params, **init_kwargs: Any):
    return lopt.init(params, **init_kwargs)


def _update_jax(lopt, updates, state, params=None, **extra_args: Any):
    return lopt.update(updates, state, params, backend="jax", **extra_args)


def _update_numpy(lopt, updates, state, params=None, **extra_args: Any):
    return lopt.update(updates, state, params, backend="numpy", **extra_args)


_UPDATE_FUNCTIONS = {"jax": _update_jax, "numpy": _update_numpy}


def as_gradient_transformation(
    lopt: AbstractLearnedOptimizer,
    *,
    backend: str = "jax",
    update_kwargs: dict[str, Any] | None = None,
    **init_kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
    """Any learned optimizer as an optax transformation (its raw step).

    The one wrapper every learned optimizer of the package goes through
    (Mnemosyne's `scale_by_mnemosyne`, the LSTM's `baselines.lstm`,
    `LearnableSGD` in the tests). `init` and `update` are
    `jax.tree_util.Partial`s over the module: pytrees whose leaves are θ (so θ
    is never baked into a closure, and can be traced or differentiated), and
    hashable, so `jax.jit(tx.update)` works. `init_kwargs` (static options
    such as `memory_dtype`) go to `lopt.init`.

    Args:
        lopt: the learned optimizer; its `update` takes a keyword-only
            `backend` (`"jax"` or `"numpy"`).
        backend: which kernels `update` runs: `"jax"` or `"numpy"` (the
            float64 reference, eager).
        update_kwargs: static keyword arguments for every `lopt.update` call
            (Mnemosyne's `stacked_axes`); held by the function, not traced.
        **init_kwargs: passed to `lopt.init`.

    Returns:
        An `optax.GradientTransformationExtraArgs`.
    """
    if backend not in _UPDATE_FUNCTIONS:
        raise ValueError(f"unknown backend {backend!r}; expected 'jax' or 'numpy'")
    init = functools.partial(_init, **init_kwargs) if init_kwargs else _init
    update = _UPDATE_FUNCTIONS[backend]
    if update_kwargs:
        update = functools.partial(update, **update_kwargs)
    return optax.GradientTransformationExtraArgs(
        jax.tree_util.Partial(init, lopt), jax.tree_util.Partial(update, lopt)
    )


def scale_by_mnemosyne(
    lopt: AbstractLearnedOptimizer | None = None,
    *,
    backend: str = "jax",
    memory_dtype: Any = None,
    stacked_axes: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """The raw learned step of a Mnemosyne optimizer, as an optax transformation.

    $$u_t = \\text{step}_\\theta(g_t, x_t, \\text{memory}_t)$$

    No learning rate is applied: chain it with
    `optax.scale_by_learning_rate`, or use [`mnemosyne.mnemosyne`][], which
    does so (and keeps each update in its gradient's dtype).

    Args:
        lopt: the learned optimizer (θ); defaults to `pretrained("default")`.
        backend: `"jax"`, or `"numpy"` for the float64 reference (not jittable).
        memory_dtype: dtype to store the memory in (e.g. `jnp.bfloat16`); the
            step is computed in float32 regardless. Default: float32 (float64
            for float64 parameters).
        stacked_axes: for layers stacked into one array (applied with
            `jax.lax.scan`): a pytree prefix of `params`, or a function of
            `params` returning one, of the number of leading axes of each leaf
            that index layers (as [`mnemosyne.mnemosyne`][]).

    Returns:
        An `optax.GradientTransformationExtraArgs`; `update(grads, state, params)`
        needs `params` and ignores extra keyword arguments.

    Examples:
        >>> import jax.numpy as jnp, mnemosyne
        >>> tx = mnemosyne.scale_by_mnemosyne()
        >>> params = {"w": jnp.ones((2, 3))}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({"w": jnp.ones((2, 3))}, state, params)
        >>> updates["w"].shape, updates["w"].dtype
        ((2, 3), dtype('float32'))
        >>> bool((updates["w"] < 0).all())  # a descent step on a positive gradient
        True

    References:
        Jain, Choromanski, Dubey, Singh, Sindhwani, Zhang, Tan, "Mnemosyne:
        Learning to Train Transformers with Transformers", NeurIPS 2023
        ([arXiv 2302.01128](https://arxiv.org/abs/2302.01128)).
        Choromanski et al., "Rethinking Attention with Performers", ICLR 2021
        ([arXiv 2009.14794](https://arxiv.org/abs/2009.14794)): the positive
        random features of the compact associative memory.
    """
    if lopt is None:
        from ._serialisation import pretrained

        lopt = pretrained("default")
    init_kwargs = {}
    if memory_dtype is not None:
        init_kwargs["memory_dtype"] = np.dtype(memory_dtype)
    update_kwargs = None if stacked_axes is None else {"stacked_axes": stacked_axes}
    return as_gradient_transformation(
        lopt, backend=backend, update_kwargs=update_kwargs, **init_kwargs
    )


def mnemosyne(
    learning_rate: optax.ScalarOrSchedule = 1.0,
    *,
    lopt: AbstractLearnedOptimizer | None = None,
    backend: str = "jax",
    memory_dtype: Any = None,
    stacked_axes: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """The Mnemosyne optimizer: the pretrained learned step, times a learning rate.

    $$\\theta_{t+1} = \\theta_t - \\eta_t \\cdot \\text{step}_\\phi(g_t, \\theta_t,
    \\text{memory}_t)$$

    The default `learning_rate=1.0` is the step the optimizer learned; it needs
    no tuning. A float or an optax schedule multiplies it, and it works under
    `optax.inject_hyperparams`.

    Args:
        learning_rate: multiplies the learned step (float or schedule).
        lopt: the learned optimizer; defaults to `pretrained("default")`.
        backend: `"jax"` or `"numpy"`.
        memory_dtype: dtype to store the memory in, as `mu_dtype` in
            `optax.adam`: `jnp.bfloat16` halves the state (2 bytes per float)
            at a measured cost in quality (see the performance page).
        stacked_axes: only for layers stacked into one array (to apply them
            with `jax.lax.scan` or `vmap`): a pytree prefix of `params` (or a
            function of `params` returning one) of ints, the number of leading
            axes of each leaf that index layers, e.g. `{"blocks": 1, "head":
            0}`. The step reads the model's depth and each layer's kernel
            shape and width from the layers (Eqs. (D), (K), (N)); without it
            a stack of 4 convolutions of shape `(3, 3, c, c)` reads as one
            3-D kernel. Default: no stacked axes.

    Returns:
        An `optax.GradientTransformationExtraArgs`: `init(params)` and
        `update(grads, state, params, **extra_args)`, with the optax sign
        convention (`optax.apply_updates(params, updates)` is the new iterate).

    Examples:
        >>> import jax, jax.numpy as jnp, optax, mnemosyne
        >>> params = {"w": jnp.ones(3)}
        >>> tx = mnemosyne.mnemosyne()
        >>> state = tx.init(params)
        >>> loss = lambda p: jnp.sum((p["w"] - 0.5) ** 2)
        >>> for _ in range(3):
        ...     grads = jax.grad(loss)(params)
        ...     updates, state = tx.update(grads, state, params)
        ...     params = optax.apply_updates(params, updates)
        >>> bool(loss(params) < loss({"w": jnp.ones(3)}))
        True
        >>> tx = optax.inject_hyperparams(mnemosyne.mnemosyne)(learning_rate=0.5)
        >>> float(tx.init(params).hyperparams["learning_rate"])
        0.5

    References:
        The optimizer: Jain et al., NeurIPS 2023, "Mnemosyne: Learning to Train
        Transformers with Transformers" (arXiv 2302.01128). Its memory's
        positive random features: Choromanski et al., ICLR 2021, "Rethinking
        Attention with Performers" (arXiv 2009.14794).
    """
    return scaled_by_learning_rate(
        scale_by_mnemosyne(
            lopt, backend=backend, memory_dtype=memory_dtype,
            stacked_axes=stacked_axes,
        ),
        learning_rate,
    )


def _keep_dtype(update, grad):
    if update is None or not hasattr(update, "astype") or not hasattr(grad, "dtype"):
        return update
    return update.astype(grad.dtype)


def scaled_by_learning_rate(
    learned: optax.GradientTransformationExtraArgs,
    learning_rate: optax.ScalarOrSchedule,
) -> optax.GradientTransformationExtraArgs:
    """`learned` followed by `optax.scale_by_learning_rate(learning_rate,
    flip_sign=False)`, with each update cast back to its gradient's dtype.

    The cast makes the dtype a guarantee rather than a consequence of promotion
    rules: a NumPy-backend bfloat16 update times a Python or NumPy float, or any
    update times a float32 learning rate from `optax.inject_hyperparams`, would
    otherwise follow NumPy's or JAX's promotion of the day.
    """
    chain = optax.chain(
        learned, optax.scale_by_learning_rate(learning_rate, flip_sign=False)
    )

    def update(updates, state, params=None, **extra_args):
        new, state = chain.update(updates, state, params, **extra_args)
        is_none = lambda x: x is None
        return jax.tree.map(_keep_dtype, new, updates, is_leaf=is_none), state

    return optax.GradientTransformationExtraArgs(chain.init, update)
