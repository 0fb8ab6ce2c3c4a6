"""Tasks that stress what an optimizer must survive: recurrent nets, regression
on a generated teacher, and classification with noisy labels."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ._base import AbstractTask
from ._classification import AbstractClassificationTask, MLPClassifier
from ._data import ClassificationData
from ._layers import dense, dense_init, mlp, mlp_init


class NoisyLabelMLP(MLPClassifier):
    """[`MLPClassifier`][mnemosyne.tasks.MLPClassifier] whose training labels
    are replaced, independently per drawn example and with probability
    `label_noise`, by a uniformly random class: gradients stay noisy to the end."""

    label_noise: float = eqx.field(static=True, default=0.0, kw_only=True)

    def sample_batch(self, key):
        k_batch, k_flip, k_label = jax.random.split(key, 3)
        batch = self.data.sample(k_batch, self.batch_size)
        flip = jax.random.bernoulli(k_flip, self.label_noise, batch["y"].shape)
        random = jax.random.randint(k_label, batch["y"].shape, 0, self.data.num_classes)
        return {
            "x": batch["x"],
            "y": jnp.where(flip, random, batch["y"]).astype(batch["y"].dtype),
        }


class RNNClassifier(AbstractClassificationTask):
    """An Elman RNN ($h_t = \\tanh(W x_t + U h_{t-1} + b)$) reading an image
    row by row (`rows` steps), then a linear head on the last state. On 8×8
    digits: 8 steps of 8 features. Backpropagation through time makes its
    gradients badly scaled across steps, unlike an MLP's."""

    data: ClassificationData
    hidden: int = eqx.field(static=True, default=32)
    rows: int = eqx.field(static=True, default=8)
    batch_size: int = eqx.field(static=True, default=64)
    name: str = eqx.field(static=True, default="rnn_digits", kw_only=True)
    kind: str = eqx.field(static=True, default="rnn", kw_only=True)

    def init(self, key):
        k_in, k_rec, k_head = jax.random.split(key, 3)
        d_in = self.data.num_features // self.rows
        rec = jax.random.orthogonal(k_rec, self.hidden).astype(jnp.float32)
        return {
            "input": dense_init(k_in, d_in, self.hidden),
            "recurrent": rec,
            "head": dense_init(k_head, self.hidden, self.data.num_classes),
        }

    def logits(self, params, x):
        steps = x.reshape(x.shape[0], self.rows, -1).transpose(1, 0, 2)

        def cell(h, x_t):
            return jnp.tanh(dense(params["input"], x_t) + h @ params["recurrent"]), None

        h, _ = jax.lax.scan(cell, jnp.zeros((x.shape[0], self.hidden), x.dtype), steps)
        return dense(params["head"], h)


class TeacherRegression(AbstractTask):
    """Mean squared error of an MLP student fitting a fixed random MLP teacher
    (`teacher_hidden`, tanh) on Gaussian inputs, plus Gaussian target noise of
    standard deviation `noise`: a regression problem with a noise floor of
    `noise**2`, generated, never downloaded."""

    teacher: dict
    num_inputs: int = eqx.field(static=True, default=16)
    hidden: tuple[int, ...] = eqx.field(static=True, default=(64,))
    activation: str = eqx.field(static=True, default="relu")
    noise: float = eqx.field(static=True, default=0.1)
    batch_size: int = eqx.field(static=True, default=64)
    name: str = eqx.field(static=True, default="regression_teacher", kw_only=True)
    kind: str = eqx.field(static=True, default="regression", kw_only=True)

    @classmethod
    def random(
        cls, seed: int = 0, num_inputs: int = 16, teacher_hidden=(32,), **kwargs
    ):
        key = jax.random.key(seed)
        teacher = mlp_init(key, (num_inputs, *teacher_hidden, 1))
        return cls(teacher, num_inputs=num_inputs, **kwargs)

    def _targets(self, x, key):
        clean = mlp(self.teacher, x, "tanh")[:, 0]
        return clean + self.noise * jax.random.normal(key, clean.shape)

    def init(self, key):
        return mlp_init(key, (self.num_inputs, *self.hidden, 1))

    def loss(self, params, batch):
        pred = mlp(params, batch["x"], self.activation)[:, 0]
        return jnp.mean(jnp.square(pred - batch["y"]))

    def sample_batch(self, key):
        k_x, k_noise = jax.random.split(key)
        x = jax.random.normal(k_x, (self.batch_size, self.num_inputs))
        return {"x": x, "y": self._targets(x, k_noise)}

