"""Tests for the task suite `mnemosyne.tasks`."""

import functools
import socket

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mnemosyne import tasks
from mnemosyne._training import run_steps
from mnemosyne.tasks import _data

SYNTHETIC = {"quadratic", "rosenbrock", "regression_teacher"}
TRANSFORMER_KINDS = {"vit", "lm", "mlm", "prompt"}


def _jit(fn, cheap=True):
    """`jax.jit`, by default with cheap XLA compilation: these tests check behaviour,
    not speed (convolutions run too slowly unoptimised, hence `cheap=False`)."""
    return jax.jit(
        fn, compiler_options={"xla_backend_optimization_level": 0} if cheap else None
    )


def _train(task, key, steps=60):
    """Init and jitted Adam on `task` in one program (cheaper to compile than eager
    init); returns the losses and the eval accuracy at the end."""
    tx = optax.adam(3e-3 if task.kind in TRANSFORMER_KINDS else 1e-2)

    @functools.partial(_jit, cheap=task.kind != "cnn")
    def run(key):
        k_init, key = jax.random.split(key)
        params = task.init(k_init)
        (params, _), losses = run_steps(
            task, tx, params, tx.init(params), jax.random.split(key, steps)
        )
        eval_batch = task.eval_batch()
        return losses, None if eval_batch is None else task.accuracy(params, eval_batch)

    return run(key)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("network access attempted")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    _data._load_numpy.cache_clear()  # really read the bundled files again
    yield


# Tasks whose training program takes 5 s or more to compile on 2 cores (CNN,
# Transformers, the deep MLP): slow, run by .ci/run; their batches, shapes and
# determinism are still checked by the default suite below.
SLOW_TO_TRAIN = {
    "cnn_digits", "vit_digits", "lm_copy", "lm_reverse", "lm_sort", "lm_recall",
    "mlm_synthetic", "prompt_tuning", "mlp_digits_deep",
}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if n in SLOW_TO_TRAIN else n
        for n in tasks.list_tasks()
    ],
)
def test_task_trains_offline(name, no_network):
    task = tasks.get_task(name)
    assert isinstance(task, tasks.AbstractTask) and task.name == name
    params = jax.eval_shape(task.init, jax.random.key(0))
    assert isinstance(params, dict)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    losses, accuracy = _train(task, jax.random.key(1))
    assert losses.dtype == jnp.float32 and losses.shape == (60,)
    assert np.isfinite(losses).all()
    assert float(losses[-10:].mean()) < 0.9 * float(losses[0])
    if name in SYNTHETIC:
        assert accuracy is None and task.eval_batch() is None
    else:
        assert 0.0 <= float(accuracy) <= 1.0


@pytest.mark.parametrize("name", tasks.list_tasks())
def test_sample_batch_deterministic(name):
    task = tasks.get_task(name)
    sample = _jit(task.sample_batch)  # traced keys, as inside a training scan
    a, b, c = (
        sample(jax.random.key(3)),
        sample(jax.random.key(3)),
        sample(jax.random.key(4)),
    )
    assert jax.tree.structure(a) == jax.tree.structure(c)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    leaves = list(zip(jax.tree.leaves(a), jax.tree.leaves(c), strict=True))
    if leaves:  # Rosenbrock's batch is empty
        assert any(not np.array_equal(x, y) for x, y in leaves)
        assert all(x.shape == y.shape for x, y in leaves)


def test_loss_vmaps_over_params():
    task = tasks.get_task("mlp_iris")
    params = _jit(jax.vmap(task.init))(jax.random.split(jax.random.key(0), 3))
    losses = _jit(jax.vmap(task.loss, (0, None)))(
        params, task.sample_batch(jax.random.key(1))
    )
    assert losses.shape == (3,) and np.isfinite(losses).all()


def test_prompt_tuning_trains_only_the_prompt():
    task = tasks.get_task("prompt_tuning")
    params = task.init(jax.random.key(0))
    assert (
        set(params) == {"prompt"}
        and params["prompt"].shape == task.teacher_prompt.shape
    )
    frozen = jax.tree.leaves(task.frozen)
    assert sum(x.size for x in frozen) > 100 * params["prompt"].size
    assert not any(p is f for p in jax.tree.leaves(params) for f in frozen)
    # The frozen weights come from a fixed seed, and the objective is achievable.
    again = tasks.get_task("prompt_tuning")
    for x, y in zip(frozen, jax.tree.leaves(again.frozen), strict=True):
        np.testing.assert_array_equal(x, y)
    batch, loss = task.sample_batch(jax.random.key(1)), _jit(task.loss)
    assert float(loss({"prompt": task.teacher_prompt}, batch)) < 1e-5
    assert float(loss(params, batch)) > 1e-3


def test_data_standardised_and_split_deterministic():
    data = tasks.load_dataset("wine")
    np.testing.assert_allclose(data.x_train.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(data.x_train.std(0), 1.0, atol=1e-3)
    assert data.x_train.dtype == jnp.float32 and data.num_classes == 3
    _data._load_numpy.cache_clear()
    np.testing.assert_array_equal(data.x_test, tasks.load_dataset("wine").x_test)
    with pytest.raises(ValueError):
        tasks.load_dataset("mnist")


def test_scaled_task():
    task = tasks.get_task("logreg_wine")
    scaled = tasks.ScaledTask(task, init_scale=2.0, loss_scale=0.5)
    key, batch = jax.random.key(0), task.sample_batch(jax.random.key(1))
    np.testing.assert_allclose(
        scaled.init(key)["layer_0"]["w"], 2.0 * task.init(key)["layer_0"]["w"]
    )
    params = task.init(key)
    np.testing.assert_allclose(
        scaled.loss(params, batch), 0.5 * task.loss(params, batch), rtol=1e-6
    )
    assert scaled.kind == task.kind


def _init_loss(task, key):
    return task.loss(task.init(key), task.sample_batch(key))


@pytest.mark.parametrize("name", tasks.list_families())
def test_family_samples_valid_tasks(name):
    family = tasks.get_family(name)
    assert family.name == name and family.kinds
    for seed in range(2):
        task = family.sample(jax.random.key(seed))
        assert isinstance(task, tasks.AbstractTask) and task.kind in family.kinds
        assert family.sample(jax.random.key(seed)).name == task.name
        loss = _jit(_init_loss)(task, jax.random.key(seed))
        assert loss.shape == () and np.isfinite(loss)


def test_held_out_kinds():
    assert not tasks.get_family("mixed_family").kinds & tasks.HELD_OUT_KINDS
    full = tasks.get_family("full_family")
    assert tasks.HELD_OUT_KINDS <= full.kinds
    assert not full.without(tasks.HELD_OUT_KINDS).kinds & tasks.HELD_OUT_KINDS
    mlp = tasks.get_family("mlp_family")
    kinds = {mlp.sample(jax.random.key(s)).kind for s in range(4)}
    assert kinds == {"mlp"}


def test_unknown_names_raise():
    with pytest.raises(ValueError):
        tasks.get_task("nope")
    with pytest.raises(ValueError):
        tasks.get_family("nope")


def test_noisy_labels_flip_the_stated_fraction():
    from mnemosyne.tasks import NoisyLabelMLP, load_dataset

    data = load_dataset("digits")
    task = NoisyLabelMLP(data, hidden=(8,), activation="relu", batch_size=4096,
                         label_noise=0.3, name="noisy", kind="mlp")
    clean = data.sample(jax.random.split(jax.random.key(0), 3)[0], 4096)["y"]
    noisy = task.sample_batch(jax.random.key(0))["y"]
    # a flipped label lands on its own class 1 time in 10
    changed = float(np.mean(np.asarray(noisy) != np.asarray(clean)))
    assert abs(changed - 0.3 * 0.9) < 0.03


def test_rnn_reads_rows_and_its_gradient_reaches_every_weight():
    task = tasks.get_task("rnn_digits")
    params = task.init(jax.random.key(0))
    batch = task.sample_batch(jax.random.key(1))
    assert task.logits(params, batch["x"]).shape == (task.batch_size, 10)
    grads = jax.grad(task.loss)(params, batch)
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


def test_teacher_regression_has_its_noise_floor():
    from mnemosyne.tasks import TeacherRegression

    task = TeacherRegression.random(0, noise=0.5, batch_size=20000)
    batch = task.sample_batch(jax.random.key(0))
    from mnemosyne.tasks._layers import mlp

    teacher = mlp(task.teacher, batch["x"], "tanh")[:, 0]
    assert float(jnp.mean((teacher - batch["y"]) ** 2)) == pytest.approx(0.25, rel=0.05)


def test_sequence_lm_rejects_a_problem_it_cannot_generate():
    # recall draws n distinct keys from vocab // 2 tokens: n=6 of 5 used to fail
    # only when a batch was drawn, with a shape error from inside jnp.stack
    with pytest.raises(ValueError, match="n <= vocab // 2"):
        tasks.SequenceLM("recall", n=6, vocab=10)
    with pytest.raises(ValueError, match="unknown problem 'shuffle'"):
        tasks.SequenceLM("shuffle")
    task = tasks.SequenceLM("recall", n=5, vocab=10)
    batch = task.sample_batch(jax.random.key(0))
    assert batch["tokens"].shape == (task.batch_size, 2 * 5 + 1 + 1 + 1)


def test_cnn_classifier_rejects_channels_it_cannot_build():
    # it has exactly two convolutions: one channel count used to fail only in
    # init, unpacking inside a trace
    digits = tasks.load_dataset("digits")
    for channels in [(8,), (8, 16, 32), (8, 0)]:
        with pytest.raises(ValueError, match="two positive integers"):
            tasks.CNNClassifier(digits, channels=channels)
    task = tasks.CNNClassifier(digits, channels=(4, 8), batch_size=2)
    params = task.init(jax.random.key(0))
    assert params["conv_1"]["w"].shape == (8, 4, 3, 3)
