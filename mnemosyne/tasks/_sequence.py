"""Tiny Transformers on generated sequences: causal LM, masked LM, prompt tuning."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._base import AbstractTask
from ._layers import sequence_model, sequence_model_init

_EVAL_KEY = 20230201  # fixed seed of the held-out sequences
_EVAL_SIZE = 256


def _weighted_mean(values, weights):
    weights = jnp.broadcast_to(weights, values.shape)
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


# Each problem maps (key, n, vocab) to (prompt, answer) of data tokens in [0, vocab).
def _copy(key, n, vocab):
    x = jax.random.randint(key, (n,), 0, vocab)
    return x, x


def _reverse(key, n, vocab):
    x = jax.random.randint(key, (n,), 0, vocab)
    return x, x[::-1]


def _sort(key, n, vocab):
    x = jax.random.randint(key, (n,), 0, vocab)
    return x, jnp.sort(x)


def _recall(key, n, vocab):
    """`n` key/value pairs (keys distinct, in the lower half), then a query key."""
    k_keys, k_vals, k_query = jax.random.split(key, 3)
    keys = jax.random.permutation(k_keys, vocab // 2)[:n]
    vals = jax.random.randint(k_vals, (n,), vocab // 2, vocab)
    q = jax.random.randint(k_query, (), 0, n)
    prompt = jnp.concatenate([jnp.stack([keys, vals], 1).reshape(-1), keys[q][None]])
    return prompt, vals[q][None]


PROBLEMS = {"copy": _copy, "reverse": _reverse, "sort": _sort, "recall": _recall}


class SequenceLM(AbstractTask):
    """A tiny causal Transformer LM on a generated sequence problem.

    Sequences are `prompt, SEP, answer` (`SEP = vocab`); the loss is the
    next-token cross-entropy on the answer tokens only. Problems: `copy`,
    `reverse`, `sort` (answer = sorted prompt) and associative `recall`
    (key/value pairs then a query key; answer = its value). A small stand-in
    for the paper's Transformer language-model experiments (a kind held out
    of MLP meta-training).
    """

    problem: str = eqx.field(static=True)
    n: int = eqx.field(static=True, default=6)
    vocab: int = eqx.field(static=True, default=10)
    d_model: int = eqx.field(static=True, default=32)
    num_layers: int = eqx.field(static=True, default=2)
    num_heads: int = eqx.field(static=True, default=4)
    batch_size: int = eqx.field(static=True, default=32)
    name: str = eqx.field(static=True, default="lm", kw_only=True)
    kind: str = eqx.field(static=True, default="lm", kw_only=True)

    def __check_init__(self):
        if self.problem not in PROBLEMS:
            raise ValueError(
                f"unknown problem {self.problem!r}; choose one of {sorted(PROBLEMS)}"
            )
        if self.problem == "recall" and self.n > self.vocab // 2:
            raise ValueError(
                f"recall draws n={self.n} distinct keys from the lower half of the "
                f"vocabulary (vocab // 2 = {self.vocab // 2}): use n <= vocab // 2"
            )

    def _generate(self, key, size):
        prompt, answer = jax.vmap(
            lambda k: PROBLEMS[self.problem](k, self.n, self.vocab)
        )(jax.random.split(key, size))
        sep = jnp.full((size, 1), self.vocab, prompt.dtype)
        return {"tokens": jnp.concatenate([prompt, sep, answer], 1).astype(jnp.int32)}

    @property
    def prompt_len(self) -> int:
        prompt, _ = jax.eval_shape(
            lambda: PROBLEMS[self.problem](jax.random.key(0), self.n, self.vocab)
        )
        return prompt.shape[0]

    def _answer_weights(self, tokens):
        """`1.0` where the next-token target is an answer token."""
        return (np.arange(tokens.shape[1] - 1) >= self.prompt_len).astype(np.float32)

    def init(self, key):
        seq_len = jax.eval_shape(lambda: self._generate(jax.random.key(0), 1))[
            "tokens"
        ].shape[1]
        return sequence_model_init(
            key, self.vocab + 1, seq_len, self.d_model, self.num_layers
        )

    def _logits(self, params, tokens):
        return jax.vmap(
            lambda t: sequence_model(params, t, self.num_heads, causal=True)
        )(tokens[:, :-1])

    def loss(self, params, batch):
        tokens = batch["tokens"]
        ce = optax.softmax_cross_entropy_with_integer_labels(
            self._logits(params, tokens), tokens[:, 1:]
        )
        return _weighted_mean(ce, self._answer_weights(tokens))

    def accuracy(self, params, batch):
        tokens = batch["tokens"]
        hit = jnp.argmax(self._logits(params, tokens), -1) == tokens[:, 1:]
        return _weighted_mean(hit.astype(jnp.float32), self._answer_weights(tokens))

    def sample_batch(self, key):
        return self._generate(key, self.batch_size)

    def eval_batch(self):
        return self._generate(jax.random.key(_EVAL_KEY), _EVAL_SIZE)


def _markov_chain(seed: int, vocab: int, successors: int) -> np.ndarray:
    """Log transition probabilities: each token has a few likely successors."""
    rng = np.random.default_rng(seed)
    probs = np.full((vocab, vocab), 1e-3)
    for row in probs:
        row[rng.choice(vocab, successors, replace=False)] += rng.dirichlet(
            np.ones(successors)
        )
    return np.log(probs / probs.sum(1, keepdims=True)).astype(np.float32)


class MaskedLM(AbstractTask):
    """BERT-style masked-token prediction with a bidirectional Transformer encoder.

    The "language" is a fixed random Markov chain in which each token has a
    few likely successors; about `mask_rate` of the tokens are replaced by a
    `MASK` token (`= vocab`; always replaced, no 80/10/10 rule) and the loss is
    the cross-entropy on the masked positions. Mirrors the paper's BERT
    pre-training experiments.
    """

    log_transition: jax.Array
    length: int = eqx.field(static=True, default=16)
    mask_rate: float = eqx.field(static=True, default=0.15)
    d_model: int = eqx.field(static=True, default=32)
    num_layers: int = eqx.field(static=True, default=2)
    num_heads: int = eqx.field(static=True, default=4)
    batch_size: int = eqx.field(static=True, default=32)
    name: str = eqx.field(static=True, default="mlm_synthetic", kw_only=True)
    kind: str = eqx.field(static=True, default="mlm", kw_only=True)

    @classmethod
    def markov(cls, vocab: int = 12, successors: int = 3, seed: int = 0, **kwargs):
        return cls(jnp.asarray(_markov_chain(seed, vocab, successors)), **kwargs)

    @property
    def vocab(self) -> int:
        return self.log_transition.shape[0]

    def _sequence(self, key):
        k0, k_steps = jax.random.split(key)

        def step(token, k):
            nxt = jax.random.categorical(k, self.log_transition[token])
            return nxt, nxt

        first = jax.random.randint(k0, (), 0, self.vocab)
        _, rest = jax.lax.scan(step, first, jax.random.split(k_steps, self.length - 1))
        return jnp.concatenate([first[None], rest]).astype(jnp.int32)

    def _generate(self, key, size):
        k_seq, k_mask = jax.random.split(key)
        tokens = jax.vmap(self._sequence)(jax.random.split(k_seq, size))
        mask = jax.random.bernoulli(k_mask, self.mask_rate, tokens.shape)
        return {"tokens": tokens, "mask": mask.astype(jnp.float32)}

    def init(self, key):
        return sequence_model_init(
            key, self.vocab + 1, self.length, self.d_model, self.num_layers
        )

    def _logits(self, params, batch):
        inputs = jnp.where(batch["mask"] > 0, self.vocab, batch["tokens"])
        return jax.vmap(
            lambda t: sequence_model(params, t, self.num_heads, causal=False)
        )(inputs)

    def loss(self, params, batch):
        ce = optax.softmax_cross_entropy_with_integer_labels(
            self._logits(params, batch), batch["tokens"]
        )
        return _weighted_mean(ce, batch["mask"])

    def accuracy(self, params, batch):
        hit = jnp.argmax(self._logits(params, batch), -1) == batch["tokens"]
        return _weighted_mean(hit.astype(jnp.float32), batch["mask"])

    def sample_batch(self, key):
        return self._generate(key, self.batch_size)

    def eval_batch(self):
        return self._generate(jax.random.key(_EVAL_KEY), _EVAL_SIZE)


class PromptTuning(AbstractTask):
    """Soft-prompt tuning of a frozen Transformer: only the prompt is trained.

    A frozen causal Transformer (random weights from a fixed seed, stored in
    `frozen` as task data, never in the parameters) reads `num_prompts` soft
    prompt vectors followed by random tokens and predicts the next token. The
    target is the frozen model's own next-token distribution under a hidden
    `teacher_prompt`; the loss is `KL(teacher ‖ student)`, which is exactly
    achievable (zero at the teacher prompt). Mirrors the paper's T5
    soft-prompt-tuning experiments, with construction kept cheap (no
    pre-training).
    """

    frozen: dict
    teacher_prompt: jax.Array
    length: int = eqx.field(static=True, default=8)
    num_heads: int = eqx.field(static=True, default=4)
    batch_size: int = eqx.field(static=True, default=32)
    name: str = eqx.field(static=True, default="prompt_tuning", kw_only=True)
    kind: str = eqx.field(static=True, default="prompt", kw_only=True)

    @classmethod
    def random(
        cls,
        seed: int = 0,
        vocab: int = 16,
        d_model: int = 32,
        num_layers: int = 2,
        num_prompts: int = 4,
        **kwargs,
    ):
        k_model, k_prompt = jax.random.split(jax.random.key(seed))
        length = kwargs.get("length", 8)
        frozen = sequence_model_init(k_model, vocab, length, d_model, num_layers)
        teacher = jax.random.normal(k_prompt, (num_prompts, d_model), jnp.float32)
        return cls(frozen, teacher, **kwargs)

    @property
    def vocab(self) -> int:
        return self.frozen["embed"].shape[0]

    def init(self, key):
        return {
            "prompt": jax.random.normal(key, self.teacher_prompt.shape, jnp.float32)
        }

    def _log_probs(self, prompt, tokens):
        frozen = jax.lax.stop_gradient(self.frozen)
        last = lambda t: sequence_model(
            frozen, t, self.num_heads, causal=True, prefix=prompt
        )[-1]  # noqa: E731
        return jax.nn.log_softmax(jax.vmap(last)(tokens))

    def _teacher(self, tokens):
        return jax.lax.stop_gradient(self._log_probs(self.teacher_prompt, tokens))

    def loss(self, params, batch):
        teacher = self._teacher(batch["tokens"])
        student = self._log_probs(params["prompt"], batch["tokens"])
        return jnp.mean(jnp.sum(jnp.exp(teacher) * (teacher - student), -1))

    def accuracy(self, params, batch):
        """Agreement of the student's top next token with the teacher's."""
        agree = jnp.argmax(
            self._log_probs(params["prompt"], batch["tokens"]), -1
        ) == jnp.argmax(self._teacher(batch["tokens"]), -1)
        return jnp.mean(agree, dtype=jnp.float32)

    def sample_batch(self, key):
        return {
            "tokens": jax.random.randint(
                key, (self.batch_size, self.length), 0, self.vocab, jnp.int32
            )
        }

    def eval_batch(self):
        return self.sample_batch(jax.random.key(_EVAL_KEY))
