"""Classification on scikit-learn's bundled datasets: logreg, MLP, CNN, ViT."""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from equinox import AbstractVar

from ._base import AbstractTask
from ._data import ClassificationData
from ._layers import (
    conv,
    conv_init,
    dense,
    dense_init,
    mlp,
    mlp_init,
    transformer,
    transformer_init,
)


class AbstractClassificationTask(AbstractTask):
    """Softmax cross-entropy on minibatches from `data`; subclasses give logits."""

    data: AbstractVar[ClassificationData]
    batch_size: AbstractVar[int]

    @abc.abstractmethod
    def logits(self, params, x: jax.Array) -> jax.Array:
        """Class logits `(batch, num_classes)` for features `(batch, num_features)`."""

    def loss(self, params, batch):
        logits = self.logits(params, batch["x"])
        return optax.softmax_cross_entropy_with_integer_labels(
            logits, batch["y"]
        ).mean()

    def sample_batch(self, key):
        return self.data.sample(key, self.batch_size)

    def eval_batch(self):
        return self.data.test()

    def accuracy(self, params, batch):
        return jnp.mean(
            jnp.argmax(self.logits(params, batch["x"]), -1) == batch["y"],
            dtype=jnp.float32,
        )


class MLPClassifier(AbstractClassificationTask):
    """A fully connected classifier; with no hidden layers, logistic regression.

    Mirrors the paper's meta-training distribution: Mnemosyne is meta-trained
    on small MLP classification problems and evaluated on held-out kinds.
    """

    data: ClassificationData
    hidden: tuple[int, ...] = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    name: str = eqx.field(static=True, kw_only=True)
    kind: str = eqx.field(static=True, kw_only=True)

    def init(self, key):
        return mlp_init(
            key, (self.data.num_features, *self.hidden, self.data.num_classes)
        )

    def logits(self, params, x):
        return mlp(params, x, self.activation)


class CNNClassifier(AbstractClassificationTask):
    """Two 3×3 ReLU convolutions (the second strided) and a linear head on 8×8 digits.

    A held-out architecture kind for meta-training on MLPs.
    """

    data: ClassificationData
    channels: tuple[int, int] = eqx.field(static=True, default=(8, 16))
    batch_size: int = eqx.field(static=True, default=64)
    name: str = eqx.field(static=True, default="cnn_digits", kw_only=True)
    kind: str = eqx.field(static=True, default="cnn", kw_only=True)

    def __check_init__(self):
        channels = self.channels
        positive = all(isinstance(c, int) and c > 0 for c in channels)
        if len(channels) != 2 or not positive:
            raise ValueError(
                "CNNClassifier has two convolutions: channels must be two positive "
                f"integers, got {channels!r}"
            )

    def init(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        c1, c2 = self.channels
        return {
            "conv_0": conv_init(k1, 1, c1),
            "conv_1": conv_init(k2, c1, c2),
            "head": dense_init(k3, c2 * 16, self.data.num_classes),
        }

    def logits(self, params, x):
        def one(image):
            h = jax.nn.relu(conv(params["conv_0"], image.reshape(1, 8, 8)))
            h = jax.nn.relu(conv(params["conv_1"], h, stride=2))
            return dense(params["head"], h.reshape(-1))

        return jax.vmap(one)(x)


class ViTClassifier(AbstractClassificationTask):
    """A small Vision Transformer on 8×8 digits.

    `patch`×`patch` patches, a linear patch embedding, learned position
    embeddings, pre-norm Transformer blocks, mean pooling and a linear head.
    Mirrors the paper's ViT fine-tuning experiments (a Transformer kind held
    out of MLP meta-training).
    """

    data: ClassificationData
    patch: int = eqx.field(static=True, default=2)
    d_model: int = eqx.field(static=True, default=32)
    num_layers: int = eqx.field(static=True, default=1)
    num_heads: int = eqx.field(static=True, default=4)
    batch_size: int = eqx.field(static=True, default=64)
    name: str = eqx.field(static=True, default="vit_digits", kw_only=True)
    kind: str = eqx.field(static=True, default="vit", kw_only=True)

    @property
    def num_patches(self) -> int:
        return (8 // self.patch) ** 2

    def init(self, key):
        k_emb, k_pos, k_body, k_head = jax.random.split(key, 4)
        return {
            "patch_embed": dense_init(k_emb, self.patch**2, self.d_model),
            "pos": 0.1
            * jax.random.normal(k_pos, (self.num_patches, self.d_model), jnp.float32),
            "body": transformer_init(k_body, self.num_layers, self.d_model),
            "head": dense_init(k_head, self.d_model, self.data.num_classes),
        }

    def patches(self, image: jax.Array) -> jax.Array:
        """`(64,)` pixels -> `(num_patches, patch²)`."""
        n, p = 8 // self.patch, self.patch
        return image.reshape(n, p, n, p).transpose(0, 2, 1, 3).reshape(n * n, p * p)

    def logits(self, params, x):
        def one(image):
            tokens = dense(params["patch_embed"], self.patches(image)) + params["pos"]
            h = transformer(params["body"], tokens, self.num_heads, causal=False)
            return dense(params["head"], h.mean(0))

        return jax.vmap(one)(x)
