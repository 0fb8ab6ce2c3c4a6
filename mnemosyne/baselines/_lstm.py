"""Coordinate-wise LSTM learned optimizers (Andrychowicz et al., 2016).

The baseline the Mnemosyne paper compares against ("popular LSTM optimizers"),
plus a feature-engineered variant standing in for the paper's LSTM "with new
feature engineering to mitigate catastrophic forgetting", whose exact features
the public sources do not state (see `research/paper.md` §9).
"""

import math
import pathlib
from typing import Any, Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._checks import check_float_leaves
from .._lopt_base import AbstractLearnedOptimizer
from .._serialisation import freeze_config, load_once, register_serialisable
from .._transform import as_gradient_transformation, scaled_by_learning_rate
from .._types import OptState, Params, PRNGKeyArray, Updates
from ..backends import get_backend

Features = Literal["gradient", "multiscale"]
_FEATURES = ("gradient", "multiscale")
_NORMALISED_CLIP = 10.0  # clip of the normalised-gradient feature g / sqrt(v)
_NORMALISED_EPS = 1e-12


class LSTMOptimizerState(NamedTuple):
    """State of [`mnemosyne.baselines.LSTMOptimizer`][].

    Attributes:
        step: int32 scalar, the number of updates taken.
        cells: a pytree like the params; each leaf is a float32 array of shape
            `(num_layers, 2, hidden_size, *leaf.shape)` holding the per-coordinate
            LSTM hidden state `h` (index 0) and cell state `c` (index 1).
        moments: `None` for `features="gradient"`; for `"multiscale"` a pytree like
            the params whose leaves are float32 arrays of shape
            `(len(betas) + 1, *leaf.shape)`: the gradient EMAs at each decay in
            `betas`, then the EMA of the squared gradient.
    """

    step: jax.Array
    cells: Any
    moments: Any


# ----------------------------------------------------------------------------
# The equations, written once over a kernel backend `B` (as Mnemosyne's model
# is): `B.xp` (numpy or jax.numpy), `B.log_sign`, `B.matmul`, so the float64
# NumPy reference and the jitted JAX path run the same code. The gates are
# `B.matmul`s, not the unrolled `B.dense` Mnemosyne's tiny head uses: with
# 4 * hidden_size = 80 rows an unrolled layer would be thousands of scalar
# multiply-adds in the XLA graph.
# ----------------------------------------------------------------------------


def _sigmoid(xp, x):
    # tanh form: no overflow warnings in NumPy, identical in both backends.
    return 0.5 * (xp.tanh(0.5 * x) + 1.0)


def _input_features(B, g, moments, t, kind, betas, beta2):
    """Per-coordinate inputs `(features, n)` and the new moments.

    `"gradient"`: $[\\mathrm{L}(g)]$ (two rows, log/sign preprocessing, p = 10).
    `"multiscale"`: additionally, for each decay $\\beta_k$, the bias-corrected EMA
    $\\hat m_k = m_k / (1-\\beta_k^t)$, $m_k \\leftarrow \\beta_k m_k + (1-\\beta_k) g$,
    through the same log/sign map, and the normalised gradient
    $\\operatorname{clip}(g / (\\sqrt{\\hat v} + \\epsilon), \\pm 10)$ with
    $v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2$.
    """
    xp, log_sign = B.xp, B.log_sign
    magnitude, direction = log_sign(g)
    rows = [magnitude, direction]
    if kind == "gradient":
        return xp.stack(rows), None
    new_moments = []
    for k, beta in enumerate(betas):
        m = beta * moments[k] + (1.0 - beta) * g
        new_moments.append(m)
        correction = -xp.expm1(t * math.log(beta))  # 1 - beta**t, accurately
        rows.extend(log_sign(m / correction))
    v = beta2 * moments[len(betas)] + (1.0 - beta2) * (g * g)
    new_moments.append(v)
    v_hat = v / (-xp.expm1(t * math.log(beta2)))
    normalised = g / (xp.sqrt(v_hat) + _NORMALISED_EPS)
    rows.append(xp.clip(normalised, -_NORMALISED_CLIP, _NORMALISED_CLIP))
    return xp.stack(rows), xp.stack(new_moments)


def _lstm_forward(B, weights, x, cells):
    """One step of the stacked LSTM on every coordinate at once.

    `x`: `(features, n)`; `cells`: `(num_layers, 2, hidden, n)`. Gate order
    (i, f, g, o):
    $$i,f,o = \\sigma(\\cdot),\\ \\tilde c = \\tanh(\\cdot),\\
    c' = f c + i \\tilde c,\\ h' = o \\tanh(c'),$$
    each gate $W_{ih} x + W_{hh} h + b$. Returns the linear read-out
    $w_{out}^\\top h_{top} + b_{out}$, shape `(n,)`, and the new cells.
    """
    xp = B.xp
    weight_ih, weight_hh, bias, weight_out, bias_out = weights
    hidden = weight_hh[0].shape[1]
    inputs = x
    new_cells = []
    for layer in range(len(weight_ih)):
        h, c = cells[layer, 0], cells[layer, 1]
        gates = (
            B.matmul(weight_ih[layer], inputs)
            + B.matmul(weight_hh[layer], h)
            + bias[layer][:, None]
        )
        i = _sigmoid(xp, gates[:hidden])
        f = _sigmoid(xp, gates[hidden : 2 * hidden])
        candidate = xp.tanh(gates[2 * hidden : 3 * hidden])
        o = _sigmoid(xp, gates[3 * hidden :])
        c = f * c + i * candidate
        h = o * xp.tanh(c)
        new_cells.append(xp.stack([h, c]))
        inputs = h
    out = B.matmul(weight_out, inputs) + bias_out
    return out, xp.stack(new_cells)


@register_serialisable
class LSTMOptimizer(AbstractLearnedOptimizer):
    """Coordinate-wise two-layer LSTM optimizer (Andrychowicz et al., 2016).

    One small LSTM, with weights θ shared by every coordinate of every tensor,
    runs on each coordinate with its own hidden and cell state. Its input is the
    log/sign-preprocessed gradient $\\mathrm{L}(g)$ (p = 10); a linear read-out
    times a fixed output scale $\\alpha$ is the step:

    $$(o_t, s_t) = \\mathrm{LSTM}_\\theta(f_t, s_{t-1}),\\qquad
    \\mathrm{updates}_t = \\alpha\\,(w_{out}^\\top h_t + b_{out}),$$

    with the optax sign convention: the read-out *is* the update, the new iterate
    is `optax.apply_updates(params, updates)` $= x_t + \\alpha o_t$ (as in the
    2016 paper's $\\theta_{t+1} = \\theta_t + g_t$).

    **Features.**

    - `features="gradient"`: the 2016 optimizer, inputs $\\mathrm{L}(g)$.
    - `features="multiscale"`: our stand-in for the Mnemosyne paper's LSTM "with
      new feature engineering to mitigate catastrophic forgetting of LSTMs".
      **The paper does not state those features**; we feed, besides
      $\\mathrm{L}(g)$, the log/sign-preprocessed bias-corrected momentum
      averages of the gradient at the decays `betas` (default 0.5, 0.9, 0.99,
      0.999: memory at several time scales that the LSTM need not carry in its
      cells) and the normalised gradient $g/\\sqrt{\\hat v}$ with $v$ an EMA of
      $g^2$ (decay `second_moment_decay`), clipped to ±10.

    **State size** (floats per parameter): `num_layers · 2 · hidden_size` for the
    cells (h and c): 80 with the defaults; `"multiscale"` adds `len(betas) + 1`
    EMAs: 85 with the defaults (Adam: 2). See `floats_per_parameter`.

    **Initialisation.** Weights are drawn as in PyTorch's LSTM
    (uniform ±1/√hidden, forget-gate bias +1), except that hidden unit 0 of each
    layer is wired as a clean pass-through of the gradient's sign feature
    (large input/output gates, small forget gate) and the read-out weights are
    $-1$ on unit 0 and small elsewhere. The untrained optimizer is therefore
    close to sign descent with step about $0.7\\alpha$ per coordinate, plus small
    noise from the other units: small and sane, and every θ leaf still has a
    nonzero meta-gradient.

    **Output scale.** The 2016 paper's output scale is 0.1 (recalled, not
    verified); the default here is `output_scale=0.01`, smaller for stability of
    the untrained and early meta-training optimizer. Pass `output_scale=0.1` for
    the original.

    Computation is in float32 whatever the parameter dtype; updates are cast
    back to each gradient leaf's dtype; the state is float32.

    Args:
        hidden_size: LSTM width (20 in the 2016 paper).
        num_layers: stacked LSTM layers (2 in the 2016 paper).
        features: `"gradient"` or `"multiscale"` (see above).
        output_scale: fixed $\\alpha$ multiplying the read-out (not meta-trained).
        betas: decays of the gradient EMAs of the `"multiscale"` variant.
        second_moment_decay: decay of the squared-gradient EMA (`"multiscale"`).
        key: PRNG key for the weights.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> lopt = LSTMOptimizer(key=jax.random.key(0))
        >>> params = {"w": jnp.ones(3)}
        >>> state = lopt.init(params)
        >>> updates, state = lopt.update({"w": jnp.ones(3)}, state, params)
        >>> bool((updates["w"] < 0).all())
        True

    References:
        ??? cite

            ```bibtex
            @inproceedings{andrychowicz2016learning,
              title={Learning to learn by gradient descent by gradient descent},
              author={Andrychowicz, Marcin and Denil, Misha and G{\\'o}mez, Sergio
                      and Hoffman, Matthew W and Pfau, David and Schaul, Tom and
                      Shillingford, Brendan and de Freitas, Nando},
              booktitle={Advances in Neural Information Processing Systems},
              year={2016}
            }
            ```
    """

    weight_ih: tuple[jax.Array, ...]
    weight_hh: tuple[jax.Array, ...]
    bias: tuple[jax.Array, ...]
    weight_out: jax.Array
    bias_out: jax.Array
    hidden_size: int = eqx.field(static=True)
    num_layers: int = eqx.field(static=True)
    features: str = eqx.field(static=True)
    output_scale: float = eqx.field(static=True)
    betas: tuple[float, ...] = eqx.field(static=True)
    second_moment_decay: float = eqx.field(static=True)
    config: tuple = eqx.field(static=True)

    def __init__(
        self,
        hidden_size: int = 20,
        num_layers: int = 2,
        features: Features = "gradient",
        *,
        output_scale: float = 0.01,
        betas: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999),
        second_moment_decay: float = 0.999,
        key: PRNGKeyArray,
    ):
        self.config = freeze_config(locals())
        if features not in _FEATURES:
            raise ValueError(f"features must be one of {_FEATURES}, got {features!r}")
        if hidden_size < 1 or num_layers < 1:
            raise ValueError("hidden_size and num_layers must be at least 1")
        betas = tuple(float(b) for b in betas)
        if not all(0.0 < b < 1.0 for b in (*betas, second_moment_decay)):
            raise ValueError("betas and second_moment_decay must lie in (0, 1)")
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.features = features
        self.output_scale = float(output_scale)
        self.betas = betas
        self.second_moment_decay = float(second_moment_decay)

        h = self.hidden_size
        bound = 1.0 / math.sqrt(h)
        shapes = []
        for layer in range(num_layers):
            n_in = self.num_input_features if layer == 0 else h
            shapes += [(4 * h, n_in), (4 * h, h), (4 * h,)]
        shapes.append((h,))
        # One draw for all weights (one small compile), then edited in NumPy.
        sizes = [math.prod(shape) for shape in shapes]
        flat = np.asarray(
            jax.random.uniform(key, (sum(sizes),), jnp.float32, -1.0, 1.0)
        )
        drawn = [
            bound * chunk.reshape(shape)
            for chunk, shape in zip(
                np.split(flat, np.cumsum(sizes)[:-1]), shapes, strict=True
            )
        ]
        # hidden unit 0's rows in the gate order (i, f, g, o)
        unit0 = [0, h, 2 * h, 3 * h]
        weight_ih, weight_hh, bias = [], [], []
        for layer in range(num_layers):
            w_ih, w_hh, b = drawn[3 * layer : 3 * layer + 3]
            b[h : 2 * h] += 1.0  # forget-gate bias
            # Unit 0: a pass-through of the gradient's sign (layer 0) or of unit 0
            # below: input and output gates open, forget gate nearly shut.
            w_ih[unit0] = 0.0
            w_hh[unit0] = 0.0
            if layer == 0:
                w_ih[2 * h, 1] = 2.0  # feature 1 is sign(g), from L(g)
            else:
                w_ih[2 * h, 0] = 3.0
            b[unit0] = [3.0, -3.0, 0.0, 3.0]
            weight_ih.append(jnp.asarray(w_ih))
            weight_hh.append(jnp.asarray(w_hh))
            bias.append(jnp.asarray(b))
        w_out = 0.1 * drawn[-1]
        w_out[0] = -1.0
        self.weight_ih = tuple(weight_ih)
        self.weight_hh = tuple(weight_hh)
        self.bias = tuple(bias)
        self.weight_out = jnp.asarray(w_out)
        self.bias_out = jnp.zeros((), jnp.float32)

    @property
    def num_input_features(self) -> int:
        """Per-coordinate inputs: 2 (`"gradient"`) or 2 + 2·len(betas) + 1."""
        if self.features == "gradient":
            return 2
        return 2 + 2 * len(self.betas) + 1

    @property
    def floats_per_parameter(self) -> int:
        """Optimizer-state floats per parameter coordinate (80 / 85 by default)."""
        cells = 2 * self.num_layers * self.hidden_size
        if self.features == "gradient":
            return cells
        return cells + len(self.betas) + 1

    # ------------------------------------------------------------------ init

    def init(self, params: Params) -> LSTMOptimizerState:
        """Zero cells (and EMAs) for every leaf; accepts `jax.ShapeDtypeStruct`s."""
        check_float_leaves(params, "params")
        lead = (self.num_layers, 2, self.hidden_size)
        cells = jax.tree.map(
            lambda p: jnp.zeros(lead + tuple(p.shape), jnp.float32), params
        )
        if self.features == "gradient":
            moments = None
        else:
            k = len(self.betas) + 1
            moments = jax.tree.map(
                lambda p: jnp.zeros((k, *p.shape), jnp.float32), params
            )
        return LSTMOptimizerState(jnp.zeros((), jnp.int32), cells, moments)

    # ---------------------------------------------------------------- update

    def update(
        self,
        grads: Updates,
        state: OptState,
        params: Params | None = None,
        *,
        backend: str = "jax",
        **extra_args: Any,
    ) -> tuple[Updates, LSTMOptimizerState]:
        """Return `(updates, new_state)`; `params + updates` is the new iterate.

        `params` and unknown keyword arguments are accepted and ignored.
        `backend="numpy"` runs the float64 NumPy reference (eager, not jittable)
        and returns NumPy arrays of the same dtypes as the JAX path.
        """
        del params, extra_args
        B = get_backend(backend)
        xp = B.xp
        compute = B.DEFAULT_COMPUTE_DTYPE  # float32 (JAX) or float64 (reference)
        weights = self._weights(lambda w: B.asarray(w, compute))
        step = (xp.asarray(state.step) + 1).astype(np.int32)
        t = step.astype(compute)

        grad_leaves, treedef = jax.tree.flatten(grads)
        cell_leaves = treedef.flatten_up_to(state.cells)
        if self.features == "multiscale":
            moment_leaves = treedef.flatten_up_to(state.moments)

        if not grad_leaves:
            return grads, LSTMOptimizerState(step, state.cells, state.moments)

        # All coordinates of all leaves go through the LSTM as one (features, N)
        # batch: one fused graph whatever the number of leaves (fast compiles).
        sizes = [math.prod(g.shape) for g in grad_leaves]
        offsets = np.cumsum(sizes)[:-1].tolist()
        lead = (self.num_layers, 2, self.hidden_size)
        g_all = xp.concatenate(
            [xp.asarray(g).astype(compute).reshape(-1) for g in grad_leaves]
        )
        cells_all = xp.concatenate(
            [xp.asarray(c).astype(compute).reshape(*lead, -1) for c in cell_leaves],
            axis=-1,
        )
        if self.features == "gradient":
            moments_all = None
        else:
            k = len(self.betas) + 1
            moments_all = xp.concatenate(
                [xp.asarray(m).astype(compute).reshape(k, -1) for m in moment_leaves],
                axis=-1,
            )
        x, new_moments = _input_features(
            B,
            g_all,
            moments_all,
            t,
            self.features,
            self.betas,
            self.second_moment_decay,
        )
        out, new_cells = _lstm_forward(B, weights, x, cells_all)
        out = self.output_scale * out

        def split(a, shapes, dtypes):
            parts = xp.split(a, offsets, axis=-1)
            return treedef.unflatten(
                [
                    part.reshape((*part.shape[:-1], *shape)).astype(dtype)
                    for part, shape, dtype in zip(parts, shapes, dtypes, strict=True)
                ]
            )

        shapes = [g.shape for g in grad_leaves]
        f32 = [jnp.float32] * len(shapes)
        updates = split(out, shapes, [g.dtype for g in grad_leaves])
        new_cells = split(new_cells, shapes, f32)
        if new_moments is not None:
            new_moments = split(new_moments, shapes, f32)
        return updates, LSTMOptimizerState(step, new_cells, new_moments)

    def _weights(self, convert):
        return (
            tuple(convert(w) for w in self.weight_ih),
            tuple(convert(w) for w in self.weight_hh),
            tuple(convert(b) for b in self.bias),
            convert(self.weight_out),
            convert(self.bias_out),
        )


# ----------------------------------------------------------------------------
# optax alias and pretrained weights
# ----------------------------------------------------------------------------

Recipe = Literal["v1", "v2"]

#: The shipped weights per `(variant, recipe)`, each made by the preset of the
#: same name as its file (`mnemosyne.meta.PRESETS`): `"v1"` the first recipe
#: (truncated BPTT on 4 tasks), `"v2"` the default Mnemosyne's (PES on 24
#: configurations, horizons up to 2,000 steps, the same budget and averaging).
_WEIGHT_FILES = {
    ("gradient", "v1"): "lstm.eqx",
    ("multiscale", "v1"): "lstm_multiscale.eqx",
    ("gradient", "v2"): "lstm_v2.eqx",
    ("multiscale", "v2"): "lstm_multiscale_v2.eqx",
}


def _load_pretrained(variant: str, recipe: str = "v2") -> LSTMOptimizer:
    """Load the shipped meta-trained LSTM optimizer for `variant` and `recipe`.

    The file is self-describing (written by `mnemosyne.save`).
    """
    if variant not in _FEATURES:
        raise ValueError(f"variant must be one of {_FEATURES}, got {variant!r}")
    if (variant, recipe) not in _WEIGHT_FILES:
        raise ValueError(f"recipe must be 'v1' or 'v2', got {recipe!r}")
    filename = _WEIGHT_FILES[variant, recipe]
    path = pathlib.Path(__file__).resolve().parent.parent / "weights" / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"no pretrained LSTM optimizer weights at {path}. Produce them with "
            f"`mnemosyne meta-train --preset {filename.removesuffix('.eqx')}`, or "
            "pass an explicit `lopt=LSTMOptimizer(..., key=key)`."
        )
    lopt = load_once(path)  # read once per process
    if not isinstance(lopt, LSTMOptimizer) or lopt.features != variant:
        raise ValueError(
            f"{path} does not hold an LSTMOptimizer with features={variant!r}"
        )
    return lopt


def lstm(
    learning_rate: optax.ScalarOrSchedule = 1.0,
    *,
    lopt: LSTMOptimizer | None = None,
    variant: Features = "gradient",
    recipe: Recipe = "v2",
) -> optax.GradientTransformationExtraArgs:
    """The LSTM optimizer as an optax transformation.

    $$\\mathrm{updates}_t = \\eta_t\\,\\alpha\\,o_t$$

    where $\\alpha o_t$ is the step of [`mnemosyne.baselines.LSTMOptimizer`][] and
    $\\eta_t$ is `learning_rate` (a float or an optax schedule; works under
    `optax.inject_hyperparams`).

    Args:
        learning_rate: multiplies the learned step (default 1.0: the step as
            meta-trained).
        lopt: the LSTM optimizer; `None` loads the shipped pretrained weights
            for `variant` (raises `FileNotFoundError` if not produced yet).
        variant: `"gradient"` or `"multiscale"`; used only when `lopt is None`.
        recipe: which shipped weights, when `lopt is None`: `"v2"` (the
            default: meta-trained with the default Mnemosyne's recipe and
            budget, the like-for-like comparison; on the suite it is also the
            stronger of the two, though 15 of its 69 runs climb,
            docs/results.md) or `"v1"` (truncated BPTT on 4 tasks, the first
            recipe).

    Returns:
        An `optax.GradientTransformationExtraArgs`.

    Examples:
        >>> import jax, jax.numpy as jnp, optax
        >>> lopt = LSTMOptimizer(key=jax.random.key(0))
        >>> tx = lstm(0.5, lopt=lopt)
        >>> params = jnp.array([1.0, -2.0])
        >>> state = tx.init(params)
        >>> updates, state = tx.update(2 * params, state, params)
        >>> params = optax.apply_updates(params, updates)
        >>> bool(abs(params[0]) < 1.0 and abs(params[1]) < 2.0)  # toward 0
        True
        >>> pretrained = lstm()  # the shipped meta-trained weights
        >>> updates, _ = pretrained.update(2 * params, pretrained.init(params), params)
        >>> updates.shape
        (2,)

    References:
        Andrychowicz, Denil, Gómez, Hoffman, Pfau, Schaul, Shillingford,
        de Freitas, "Learning to learn by gradient descent by gradient
        descent", NeurIPS 2016
        ([arXiv 1606.04474](https://arxiv.org/abs/1606.04474)). Jain et al.,
        "Mnemosyne: Learning to Train Transformers with Transformers", NeurIPS
        2023 (the LSTM baselines it compares against).
    """
    if lopt is None:
        lopt = _load_pretrained(variant, recipe)
    # The one wrapper of every learned optimizer: a pytree whose leaves are θ.
    return scaled_by_learning_rate(as_gradient_transformation(lopt), learning_rate)
