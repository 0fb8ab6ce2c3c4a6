"""Input validation shared by every optimizer: clear errors that name the leaf."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def leaf_shape_dtype(leaf):
    """`(shape, dtype)` of an array or `jax.ShapeDtypeStruct` leaf."""
    return tuple(leaf.shape), np.dtype(leaf.dtype)


def compute_dtype(dtype) -> np.dtype:
    """The dtype the optimizer computes and stores its state in: float32 for
    16-bit (and 32-bit) parameters, float64 for float64 parameters."""
    return np.dtype(jnp.promote_types(dtype, jnp.float32))


def key_path(path) -> str:
    """A key path as text for error messages (`<root>` for the root)."""
    return jax.tree_util.keystr(path) or "<root>"


def check_float_leaves(tree, what: str) -> None:
    """Raise `TypeError` naming the first leaf that is not real floating point."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if not hasattr(leaf, "dtype"):
            raise TypeError(
                f"{what}{key_path(path)} is a {type(leaf).__name__}, not an array"
            )
        dtype = np.dtype(leaf.dtype)
        if jnp.issubdtype(dtype, jnp.complexfloating):
            raise TypeError(
                f"{what}{key_path(path)} is complex ({dtype}); learned optimizers take "
                "real "
                "parameters: split complex parameters into real and imaginary parts"
            )
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{what}{key_path(path)} has dtype {dtype}; only floating-point leaves "
                "can be "
                "optimised. Filter them out first, e.g. eqx.filter(model, "
                "eqx.is_inexact_array), "
                "or wrap the optimizer in optax.masked"
            )


def check_same_structure(a, b, name_a: str, name_b: str) -> None:
    """Raise `ValueError` naming the first path where two pytrees differ."""
    is_none = lambda x: x is None
    leaves_a = jax.tree_util.tree_flatten_with_path(a, is_leaf=is_none)[0]
    leaves_b = jax.tree_util.tree_flatten_with_path(b, is_leaf=is_none)[0]
    paths_a = [key_path(p) for p, _ in leaves_a]
    paths_b = [key_path(p) for p, _ in leaves_b]
    if paths_a != paths_b:
        only_a = sorted(set(paths_a) - set(paths_b))
        only_b = sorted(set(paths_b) - set(paths_a))
        raise ValueError(
            f"{name_a} and {name_b} have different pytree structures: "
            f"only in {name_a}: {only_a[:5]}, only in {name_b}: {only_b[:5]}"
        )
    for (path, x), (_, y) in zip(leaves_a, leaves_b, strict=False):
        if (x is None) != (y is None):
            raise ValueError(
                f"{name_a}{key_path(path)} and {name_b}{key_path(path)}: one is None"
            )
        if x is not None and tuple(x.shape) != tuple(y.shape):
            raise ValueError(
                f"shape mismatch at {key_path(path)}: {name_a} has {tuple(x.shape)}, "
                f"{name_b} has {tuple(y.shape)}"
            )


def check_state_like(
    state, expected, what: str = "state", *, dtypes: bool = True
) -> None:
    """Raise `ValueError` naming the first leaf of `state` whose shape (or, if
    `dtypes`, dtype) differs from `expected` (e.g. `jax.eval_shape(opt.init,
    params)`), or the first path where their structures differ."""
    is_none = lambda x: x is None
    leaves = jax.tree_util.tree_flatten_with_path(state, is_leaf=is_none)[0]
    wanted = jax.tree_util.tree_flatten_with_path(expected, is_leaf=is_none)[0]
    paths = [key_path(p) for p, _ in leaves]
    wanted_paths = [key_path(p) for p, _ in wanted]
    if paths != wanted_paths:
        extra = sorted(set(paths) - set(wanted_paths))[:5]
        missing = sorted(set(wanted_paths) - set(paths))[:5]
        raise ValueError(
            f"the optimizer {what} does not match these parameters: unexpected "
            f"{extra}, missing {missing}; was it initialised for other parameters?"
        )
    for (path, x), (_, y) in zip(leaves, wanted, strict=False):
        if (x is None) != (y is None):
            raise ValueError(
                f"{what}{key_path(path)}: one of state and expected state is None"
            )
        if x is None or not hasattr(x, "shape"):
            continue
        dtype_differs = dtypes and np.dtype(x.dtype) != np.dtype(y.dtype)
        if tuple(x.shape) != tuple(y.shape) or dtype_differs:
            raise ValueError(
                f"{what}{key_path(path)} has shape {tuple(x.shape)} and dtype "
                f"{np.dtype(x.dtype)}, "
                f"expected {tuple(y.shape)} and {np.dtype(y.dtype)} for these "
                "parameters: "
                "was the state initialised for other parameters?"
            )


def check_update_inputs(grads, state, params, expected_state=None) -> None:
    """Validate `update(grads, state, params)` at trace time.

    `expected_state`, if given (shapes and dtypes suffice, e.g.
    `jax.eval_shape(opt.init, params)`), is compared with `state` leaf by leaf.
    """
    if params is None:
        raise ValueError(
            "this learned optimizer reads the parameters: call update(grads, state, "
            "params)"
        )
    check_float_leaves(grads, "grads")
    check_float_leaves(params, "params")
    check_same_structure(grads, params, "grads", "params")
    memory = getattr(state, "memory", None)
    if memory is not None:
        is_none = lambda x: x is None
        g_def = jax.tree.structure(grads, is_leaf=is_none)
        try:
            g_def.flatten_up_to(memory)
        except (ValueError, TypeError) as err:
            raise ValueError(
                "the optimizer state does not match the structure of grads: was it "
                f"initialised for other parameters? ({err})"
            ) from None
    if expected_state is not None:
        check_state_like(state, expected_state)
