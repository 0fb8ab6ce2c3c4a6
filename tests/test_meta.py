"""Tests for mnemosyne.meta: unrolls, estimators, trainer, checkpoints.

The tasks here are tiny duck-typed ones defined in this file (a noisy quadratic
family and a task whose loss turns NaN), so the meta-training machinery is
tested independently of `mnemosyne.tasks`.
"""

from __future__ import annotations

import math
import os
import re
import shutil

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mnemosyne import AbstractLearnedOptimizer, meta, trainable_filter
from mnemosyne.baselines._learnable_sgd import LearnableSGD
from mnemosyne.meta import _checkpoint

# XLA optimisation level 0 roughly halves compile time; these programs are tiny.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _jit(fun):
    return eqx.filter_jit(fun, compiler_options=FAST_COMPILE)


# --------------------------------------------------------------------------- #
# Tiny tasks and optimizers (duck-typed task protocol)
# --------------------------------------------------------------------------- #


class NoisyQuadratic(eqx.Module):
    """f(w; b) = ½ Σ_i a_i (w_i - b_i)², b ~ N(0, noise² I) per minibatch."""

    curvature: jax.Array
    noise: float = eqx.field(static=True, default=0.1)

    @property
    def name(self) -> str:
        return f"noisy_quadratic_{self.curvature.shape[0]}"

    def init(self, key):
        return {"w": jax.random.normal(key, self.curvature.shape)}

    def sample_batch(self, key):
        return self.noise * jax.random.normal(key, self.curvature.shape)

    def loss(self, params, batch):
        d = params["w"] - batch
        return 0.5 * jnp.sum(self.curvature * d * d)


class NoisyQuadraticFamily(eqx.Module):
    """Curvatures log-uniform in [0.5, 2]; dimension drawn from `dims`."""

    dims: tuple[int, ...] = eqx.field(static=True, default=(8,))

    def sample(self, key):
        dim_key, curv_key = jax.random.split(key)
        dim = self.dims[int(jax.random.randint(dim_key, (), 0, len(self.dims)))]
        log_a = jax.random.uniform(
            curv_key, (dim,), minval=math.log(0.5), maxval=math.log(2.0)
        )
        return NoisyQuadratic(jnp.exp(log_a))


class SometimesNaNTask(eqx.Module):
    """A quadratic whose minibatch is NaN with probability `p_nan` per step."""

    p_nan: jax.Array  # an array leaf: changing it does not recompile

    name = "sometimes_nan"

    def init(self, key):
        return {"w": jax.random.normal(key, (3,))}

    def sample_batch(self, key):
        bad = jax.random.uniform(key) < self.p_nan
        return jnp.where(bad, jnp.nan, 0.0) * jnp.ones(3)

    def loss(self, params, batch):
        return 0.5 * jnp.sum((params["w"] - batch) ** 2)


class DiagonalSGD(AbstractLearnedOptimizer):
    """SGD with one learnable log learning rate per coordinate of `w`."""

    log_lr: jax.Array

    def init(self, params):
        return ()

    def update(self, grads, state, params=None, *, backend="jax", **extra):
        return {"w": -jnp.exp(self.log_lr) * grads["w"]}, state


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _fresh_states(lopt, task, horizon, num_tasks, key):
    keys = jax.random.split(key, num_tasks)
    init = jax.vmap(lambda k: meta.init_truncation_state(lopt, task, horizon, k))
    return _jit(init)(keys)


def _theta(lopt) -> list[np.ndarray]:
    trainable, _ = eqx.partition(lopt, trainable_filter(lopt))
    return [np.asarray(x) for x in jax.tree.leaves(trainable)]


# --------------------------------------------------------------------------- #
# LearnableSGD
# --------------------------------------------------------------------------- #


def test_learnable_sgd_update():
    lopt = LearnableSGD(learning_rate=0.5)
    params = {"a": jnp.ones(3, jnp.float32), "b": None, "c": jnp.ones(2, jnp.float16)}
    grads = {
        "a": jnp.full(3, 2.0, jnp.float32),
        "b": None,
        "c": jnp.ones(2, jnp.float16),
    }
    state = lopt.init(params)
    updates, state = lopt.update(grads, state, params, loss=1.0)  # extra ignored
    np.testing.assert_allclose(updates["a"], -1.0, rtol=1e-6)
    assert updates["b"] is None
    assert updates["c"].dtype == jnp.float16
    assert int(state.count) == 1
    with pytest.raises(TypeError, match="real"):
        lopt.init({"z": jnp.ones(2, jnp.complex64)})


# --------------------------------------------------------------------------- #
# Estimators against independent references
# --------------------------------------------------------------------------- #

DIM, NUM_TASKS, K_WINDOW = 8, 16, 5


@pytest.fixture(scope="module")
def window_problem():
    """A batch of fresh trajectories whose one window covers the whole unroll."""
    task = NoisyQuadraticFamily(dims=(DIM,)).sample(jax.random.PRNGKey(3))
    lopt = DiagonalSGD(jnp.log(jnp.linspace(0.1, 0.4, DIM, dtype=jnp.float32)))
    states = _fresh_states(lopt, task, K_WINDOW, NUM_TASKS, jax.random.PRNGKey(4))
    kwargs = dict(
        key=jax.random.PRNGKey(5),
        num_steps=K_WINDOW,
        schedule=meta.ConstantTruncationSchedule(K_WINDOW),
    )
    bptt = _jit(meta.TruncatedBPTT().estimate)(lopt, task, states, **kwargs)
    return task, lopt, states, kwargs, bptt


def _reference_meta_loss(log_lr, task, key, stop_gradient_features):
    """Plain Python-loop unroll of one task, following the documented key
    schedule of `TruncationState`: init with split(key, 4)[0], the batch of
    step t with fold_in(split(key, 4)[2], t)."""
    init_key, _, data_key, _ = jax.random.split(key, 4)
    w = task.init(init_key)["w"]
    batches = jax.vmap(lambda t: task.sample_batch(jax.random.fold_in(data_key, t)))(
        jnp.arange(K_WINDOW)
    )
    losses = []
    for t in range(K_WINDOW):
        loss, g = jax.value_and_grad(lambda w, b: task.loss({"w": w}, b))(w, batches[t])
        if stop_gradient_features:
            g = jax.lax.stop_gradient(g)
        losses.append(loss)
        w = w - jnp.exp(log_lr) * g
    return jnp.mean(jnp.log(jnp.stack(losses)))


@pytest.mark.parametrize("stop_gradient_features", [False, True])
def test_truncated_bptt_equals_full_unroll_gradient(
    stop_gradient_features, window_problem
):
    task, lopt, states, kwargs, bptt = window_problem
    if stop_gradient_features:
        estimator = meta.TruncatedBPTT(stop_gradient_features=True)
        bptt = _jit(estimator.estimate)(lopt, task, states, **kwargs)
    meta_loss, grads, new_states, diag = bptt

    def reference(log_lr):
        per_task = jax.vmap(
            lambda k: _reference_meta_loss(log_lr, task, k, stop_gradient_features)
        )
        return jnp.mean(per_task(states.key))

    ref_loss, ref_grad = _jit(jax.value_and_grad(reference))(lopt.log_lr)
    np.testing.assert_allclose(meta_loss, ref_loss, rtol=1e-6)
    np.testing.assert_allclose(grads.log_lr, ref_grad, rtol=1e-6, atol=1e-7)
    assert int(diag["num_diverged"]) == 0
    np.testing.assert_array_equal(new_states.inner_step, K_WINDOW)
    if stop_gradient_features:  # the flag matters: second derivatives dropped
        full = window_problem[-1][1].log_lr
        assert not np.allclose(grads.log_lr, full, rtol=1e-3)


def test_antithetic_es_matches_gradient(window_problem):
    r"""ES vs the exact (BPTT, full-window) gradient on a smooth problem.

    For a smooth L and small σ, each pair gives (L⁺ − L⁻)/(2σ) ε ≈ (εᵀg) ε,
    with mean g and covariance ‖g‖² I + g gᵀ. Averaging M = N·P pairs,
    E‖ĝ − g‖² ≈ (d + 1)‖g‖²/M (for equal per-task gradients), so
    cos(ĝ, g) ≈ 1/√(1 + (d + 1)/M). Here d = 8, M = 16·16 = 256 gives 0.98.
    Heterogeneous per-task gradients inflate the variance by
    mean‖g_i‖²/‖ḡ‖² (a small factor here: same task, different inits), which
    keeps the expectation above 0.95. The noise term ‖ĝ − g‖²/‖g‖² is roughly
    χ²_d·(mean/d); cos < 0.9 needs it above 1/0.81 − 1 ≈ 0.23, about 5× its
    mean: P(χ²_8 > 45) < 1e-6. The seed is fixed, so the test is deterministic.
    """
    task, lopt, states, kwargs, bptt = window_problem
    bptt_loss, true_grads, bptt_states, _ = bptt
    es = meta.AntitheticES(std=0.01, num_pairs=16)
    es_loss, es_grads, es_states, diag = _jit(es.estimate)(lopt, task, states, **kwargs)
    g_hat, g = np.asarray(es_grads.log_lr), np.asarray(true_grads.log_lr)
    cosine = g_hat @ g / (np.linalg.norm(g_hat) * np.linalg.norm(g))
    assert cosine > 0.9, cosine
    assert int(diag["num_valid"]) == NUM_TASKS * 16
    # Same states, same data: the unperturbed unroll is the BPTT one.
    np.testing.assert_allclose(es_loss, bptt_loss, rtol=1e-5)
    np.testing.assert_allclose(
        es_states.params["w"], bptt_states.params["w"], rtol=1e-5
    )


# --------------------------------------------------------------------------- #
# Meta-training finds the optimal learning rate
# --------------------------------------------------------------------------- #

K_LR = 8


@pytest.fixture(scope="module")
def optimal_learning_rate() -> float:
    """Brute-force grid over η of the trainer's meta-objective: mean log loss of a
    fresh K-step SGD unroll, averaged over 128 tasks from the family."""
    family = NoisyQuadraticFamily()
    tasks = _stack([family.sample(jax.random.PRNGKey(1000 + i)) for i in range(128)])
    keys = jax.random.split(jax.random.PRNGKey(7), 128)

    @_jit
    def grid(log_lrs):
        def one(log_lr, task, key):
            lopt = eqx.tree_at(lambda o: o.log_learning_rate, LearnableSGD(), log_lr)
            state = meta.init_truncation_state(lopt, task, K_LR, key)
            _, out = meta.truncated_unroll(lopt, task, state, K_LR, K_LR)
            return meta.mean_log_loss(out.losses)

        per_lr = jax.vmap(one, in_axes=(None, 0, 0))
        return jax.vmap(lambda lr: jnp.mean(per_lr(lr, tasks, keys)))(log_lrs)

    lrs = np.exp(np.linspace(np.log(0.05), np.log(1.2), 41))
    values = np.asarray(grid(jnp.asarray(np.log(lrs), jnp.float32)))
    best = int(np.argmin(values))
    assert 0 < best < len(lrs) - 1  # an interior optimum (about 0.69)
    return float(lrs[best])


@pytest.mark.parametrize(
    "estimator",
    [meta.TruncatedBPTT(), meta.AntitheticES(std=0.05, num_pairs=4)],
    ids=["bptt", "es"],
)
def test_meta_training_finds_optimal_learning_rate(estimator, optimal_learning_rate):
    num_steps = 40
    outer = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adam(optax.cosine_decay_schedule(0.2, num_steps, alpha=0.1)),
    )
    lr0 = 0.05
    trainer = meta.MetaTrainer(
        LearnableSGD(lr0),
        NoisyQuadraticFamily(),
        estimator,
        outer_optimizer=outer,
        num_tasks=8,
        unroll_length=K_LR,
        horizon=K_LR,
        compiler_options=FAST_COMPILE,
        key=jax.random.PRNGKey(0),
    )
    lopt, history = trainer.run(num_steps, progress=False)
    start = abs(math.log(lr0 / optimal_learning_rate))
    end = abs(math.log(float(lopt.learning_rate) / optimal_learning_rate))
    assert end < 0.15 * start, (float(lopt.learning_rate), optimal_learning_rate)
    assert end < math.log(1.4)
    assert np.mean(history["meta_loss"][-5:]) < np.mean(history["meta_loss"][:5])
    assert not any(history["skipped"])


# --------------------------------------------------------------------------- #
# Resume, checkpoints
# --------------------------------------------------------------------------- #

# how often the outer step was traced (its update runs once a trace)
_OUTER_TRACES = [0]


def _counting(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """`tx`, counting the calls of its `update` (inside jit: once per trace)."""

    def update(updates, state, params=None):
        _OUTER_TRACES[0] += 1
        return tx.update(updates, state, params)

    return optax.GradientTransformation(tx.init, update)


# one object: trainers share the compiled step
_RESUME_OUTER = _counting(optax.adam(0.05))


def _resume_trainer(checkpoint_dir=None, estimator=None) -> meta.MetaTrainer:
    return meta.MetaTrainer(
        LearnableSGD(0.1),
        NoisyQuadraticFamily(dims=(3, 5)),  # two task configurations
        estimator or meta.TruncatedBPTT(),
        outer_optimizer=_RESUME_OUTER,
        num_tasks=4,
        unroll_length=3,
        horizon=meta.UniformTruncationSchedule(4, 8),  # resample every 3 steps
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=2,
        keep_checkpoints=5,
        compiler_options=FAST_COMPILE,
        key=jax.random.PRNGKey(42),
    )


@pytest.fixture(scope="module")
def uninterrupted():
    traces_before = _OUTER_TRACES[0]
    trainer = _resume_trainer()
    lopt, history = trainer.run(9, progress=False)
    return trainer, lopt, history, _OUTER_TRACES[0] - traces_before


def test_compiles_once_per_task_config(uninterrupted):
    trainer, _, history, traces = uninterrupted
    assert len(set(history["task"])) == 2
    assert len(trainer.task_configs) == 2
    assert 1 <= traces <= 2  # 9 steps over 3 task periods, 2 configurations


def test_resume_is_bit_identical(tmp_path, uninterrupted):
    _, lopt_full, history_full, _ = uninterrupted
    first = _resume_trainer(tmp_path)
    first.run(4, progress=False)
    assert [os.path.basename(p) for p in first.checkpoints()] == [
        "ckpt-00000002.eqx",
        "ckpt-00000004.eqx",
    ]
    resumed = _resume_trainer(tmp_path)
    lopt, history = resumed.run(9, progress=False)
    assert resumed.history["step"][0] == 0 and len(history["step"]) == 9
    for a, b in zip(_theta(lopt), _theta(lopt_full), strict=True):
        assert np.array_equal(a, b)
    assert history == history_full

    # A corrupted newest checkpoint is detected and the previous one is used.
    corrupt_dir = tmp_path / "corrupt"
    corrupt_dir.mkdir()
    for name in ("ckpt-00000002.eqx", "ckpt-00000004.eqx"):
        shutil.copy(tmp_path / name, corrupt_dir / name)
    newest = corrupt_dir / "ckpt-00000004.eqx"
    newest.write_bytes(newest.read_bytes()[:-50])  # truncated
    fallback = _resume_trainer(corrupt_dir)
    with pytest.warns(RuntimeWarning, match="truncated"):
        lopt, history = fallback.run(9, progress=False)
    for a, b in zip(_theta(lopt), _theta(lopt_full), strict=True):
        assert np.array_equal(a, b)
    assert history == history_full


def test_resume_is_bit_identical_es(tmp_path):
    estimator = meta.AntitheticES(std=0.05, num_pairs=2)
    full_lopt, _ = _resume_trainer(estimator=estimator).run(5, progress=False)
    _resume_trainer(tmp_path, estimator).run(3, progress=False)
    lopt, _ = _resume_trainer(tmp_path, estimator).run(5, progress=False)
    for a, b in zip(_theta(lopt), _theta(full_lopt), strict=True):
        assert np.array_equal(a, b)


def test_resume_checks_the_process_count(tmp_path):
    """A checkpoint records how many processes wrote it; one without that field
    (written before runs had several) counts as one process; another count
    is refused, naming both."""
    trainer = _resume_trainer(tmp_path)
    trainer.run(2, progress=False)
    path = trainer.checkpoints()[-1]
    like = {"trainable": trainer._trainable, "outer_state": trainer._outer_state,
            "states": trainer._states}
    tree, header = meta.load_checkpoint(path, like)
    assert header["num_processes"] == 1
    fields = {k: v for k, v in header.items()
              if k not in ("format_version", "payload_bytes", "payload_sha256")}
    old = {k: v for k, v in fields.items() if k != "num_processes"}
    meta.save_checkpoint(path, tree, old)
    resumed = _resume_trainer(tmp_path)
    resumed.load(path)
    assert resumed.step == 2
    meta.save_checkpoint(path, tree, {**fields, "num_processes": 2})
    with pytest.raises(meta.IncompatibleCheckpointError,
                       match=r"written by a run of 2 process\(es\); this run has 1"):
        _resume_trainer(tmp_path).run(3, progress=False)


def test_task_mesh_devices_in_one_process():
    """With one process the task mesh takes the first devices, as before runs
    could have several."""
    from mnemosyne._distributed import spread_devices

    assert spread_devices(jax.device_count()) == jax.devices()
    assert spread_devices(1) == jax.devices()[:1]
    with pytest.raises(ValueError, match="Cannot spread"):
        spread_devices(jax.device_count() + 1)


def test_resume_refuses_other_config(tmp_path):
    _resume_trainer(tmp_path).run(2, progress=False)
    other = meta.MetaTrainer(
        LearnableSGD(0.1),
        NoisyQuadraticFamily(dims=(3, 5)),
        outer_optimizer=_RESUME_OUTER,
        num_tasks=4,
        unroll_length=3,
        horizon=8,
        checkpoint_dir=tmp_path,
        key=jax.random.PRNGKey(42),
    )
    with pytest.raises(meta.IncompatibleCheckpointError, match="config"):
        other.run(3, progress=False)


def _settings_trainer(checkpoint_dir, **changes) -> meta.MetaTrainer:
    """A trainer built from fresh (equal) objects, with `changes` applied."""
    settings = dict(
        lopt=LearnableSGD(0.1),
        task=NoisyQuadraticFamily(dims=(3, 5)),
        estimator=meta.AntitheticES(std=0.01, num_pairs=2),
        learning_rate=1e-3,
        max_grad_norm=1.0,
        num_tasks=4,
        unroll_length=3,
        horizon=8,
        compiler_options=dict(FAST_COMPILE),
    )
    settings.update(changes)
    lopt, task, estimator = (
        settings.pop("lopt"),
        settings.pop("task"),
        settings.pop("estimator"),
    )
    return meta.MetaTrainer(
        lopt,
        task,
        estimator,
        checkpoint_dir=checkpoint_dir,
        key=jax.random.PRNGKey(0),
        **settings,
    )


def _mnemosyne(**config):
    from mnemosyne import CoordinatewiseMnemosyne

    return CoordinatewiseMnemosyne(**{"key": jax.random.key(1), **config})


# change -> what the refusal must name
_OTHER_SETTINGS = {
    "es_std": (
        lambda: {"estimator": meta.AntitheticES(std=0.02, num_pairs=2)},
        "estimator.std",
    ),
    "es_num_pairs": (
        lambda: {"estimator": meta.AntitheticES(std=0.01, num_pairs=4)},
        "estimator.num_pairs",
    ),
    "es_meta_loss": (
        lambda: {
            "estimator": meta.AntitheticES(std=0.01, num_pairs=2, meta_loss="mean")
        },
        "estimator.meta_loss",
    ),
    "estimator_class": (lambda: {"estimator": meta.TruncatedBPTT()}, "estimator.class"),
    "outer_learning_rate": (
        lambda: {"learning_rate": 2e-3},
        "outer_optimizer.learning_rate",
    ),
    "gradient_clip": (lambda: {"max_grad_norm": 0.5}, "outer_optimizer.max_grad_norm"),
    "optax_outer_optimizer": (
        lambda: {"outer_optimizer": optax.adam(1e-3)},
        "outer_optimizer",
    ),
    "task_family": (lambda: {"task": NoisyQuadraticFamily(dims=(3, 6))}, "task.dims"),
    "horizon": (lambda: {"horizon": 10}, "schedule.horizon"),
    "unroll_length": (lambda: {"unroll_length": 4}, "unroll_length"),
    "num_tasks": (lambda: {"num_tasks": 2}, "num_tasks"),
    "compiler_options": (lambda: {"compiler_options": {}}, "compiler_options"),
}


@pytest.mark.parametrize("change", sorted(_OTHER_SETTINGS))
def test_resume_refuses_changed_settings(tmp_path, change):
    """A checkpoint is resumed only by a trainer with the same settings: any
    setting that changes the result, changed, is refused with an error naming
    it (no compile needed: the check reads the header)."""
    _settings_trainer(tmp_path).save()
    changes, named = _OTHER_SETTINGS[change]
    other = _settings_trainer(tmp_path, **changes())
    with pytest.raises(meta.IncompatibleCheckpointError, match=re.escape(named)):
        other.run(1, progress=False)


def test_resume_accepts_equal_settings_in_fresh_objects(tmp_path):
    """Equal settings held by new objects (another optax optimizer object with
    the same hyperparameters, a new family, a new estimator) resume."""
    path = _settings_trainer(tmp_path, outer_optimizer=optax.adam(0.05)).save()
    again = _settings_trainer(tmp_path, outer_optimizer=optax.adam(0.05))
    again.load(path)
    assert again.step == 0
    other = _settings_trainer(tmp_path, outer_optimizer=optax.adam(0.1))
    with pytest.raises(meta.IncompatibleCheckpointError, match="step_size"):
        other.load(path)


def test_resume_accepts_a_checkpoint_written_before_an_option_existed(
    tmp_path, monkeypatch
):
    """An option added to a class later, left at `None` (its behaviour before
    it existed), does not invalidate older checkpoints; set, it is refused by
    name. The older checkpoint is simulated by a fingerprint without the
    field (as `PersistentES.final_fraction` was absent from the committed
    preset checkpoints)."""
    pes = lambda **kw: {"estimator": meta.PersistentES(std=0.01, num_pairs=2, **kw),
                        "horizon": meta.ConstantTruncationSchedule(6)}
    fingerprint = meta.MetaTrainer._fingerprint

    def before_the_option(self):
        out = fingerprint(self)
        del out["estimator"]["final_fraction"]
        return out

    with monkeypatch.context() as m:
        m.setattr(meta.MetaTrainer, "_fingerprint", before_the_option)
        path = _settings_trainer(tmp_path, **pes()).save()
    _settings_trainer(tmp_path, **pes()).load(path)
    with pytest.raises(meta.IncompatibleCheckpointError, match="final_fraction"):
        _settings_trainer(tmp_path, **pes(final_fraction=0.5)).load(path)


def test_resume_refuses_other_optimizer_configuration(tmp_path):
    """θ's configuration: a static setting (same shapes) or other frozen random
    projections (not in the checkpoint, which holds the trainable part only)."""
    path = _settings_trainer(tmp_path, lopt=_mnemosyne()).save()
    _settings_trainer(tmp_path, lopt=_mnemosyne()).load(path)
    with pytest.raises(meta.IncompatibleCheckpointError, match="alpha"):
        _settings_trainer(tmp_path, lopt=_mnemosyne(alpha=2e-2)).load(path)
    with pytest.raises(meta.IncompatibleCheckpointError, match="omega"):
        _settings_trainer(tmp_path, lopt=_mnemosyne(key=jax.random.key(2))).load(path)


@pytest.mark.slow  # a fresh interpreter builds every preset (~15 s); run by .ci/run
def test_settings_fingerprint_is_the_same_in_another_process():
    """The fingerprint holds no identities (ids, addresses), so a run killed and
    resumed in a new process (as `mnemosyne meta-train` does) is accepted:
    each preset's trainer, built in two interpreters, gives the same one."""
    import json
    import subprocess
    import sys

    code = """
import json, jax, mnemosyne
from mnemosyne import meta
out = {}
for name, p in sorted(meta.PRESETS.items()):
    t = meta.MetaTrainer(p.make_lopt(jax.random.key(p.seed)), p.family, p.estimator,
                         key=jax.random.key(p.seed), **p.trainer)
    out[name] = t._fingerprint()
print(json.dumps(out, sort_keys=True))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    here = {}
    for name, p in sorted(meta.PRESETS.items()):
        t = meta.MetaTrainer(p.make_lopt(jax.random.key(p.seed)), p.family, p.estimator,
                             key=jax.random.key(p.seed), **p.trainer)
        here[name] = t._fingerprint()
    there = json.loads(proc.stdout.strip().splitlines()[-1])
    assert there == here
    assert "lstm" in here and here["lstm"] != here["default"]


def _tree():
    return {"a": jnp.arange(5.0), "b": (jnp.ones((2, 3), jnp.int32), jnp.zeros(()))}


def test_checkpoint_roundtrip_and_corruption(tmp_path):
    path = tmp_path / "x.eqx"
    meta.save_checkpoint(path, _tree(), {"step": 3, "history": {"l": [1.5]}})
    tree, header = meta.load_checkpoint(path, _tree())
    assert header["step"] == 3 and header["history"] == {"l": [1.5]}
    assert jax.tree.all(jax.tree.map(np.array_equal, tree, _tree()))

    data = path.read_bytes()
    flipped = bytearray(data)
    flipped[20] ^= 0xFF  # inside the payload
    path.write_bytes(bytes(flipped))
    with pytest.raises(meta.CheckpointError, match="checksum"):
        meta.load_checkpoint(path, _tree())
    for cut in (len(data) // 2, len(data) - 1, 4):
        path.write_bytes(data[:cut])
        with pytest.raises(meta.CheckpointError):
            meta.load_checkpoint(path, _tree())
    path.write_bytes(data)
    with pytest.raises(meta.CheckpointError, match="structure"):
        meta.load_checkpoint(path, {"a": jnp.arange(4.0), "b": _tree()["b"]})


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.eqx"
    meta.save_checkpoint(path, _tree(), {"step": 1})
    good = path.read_bytes()

    def failing_serialiser(f, tree, *args, **kwargs):
        f.write(b"\x00" * 64)  # a partial payload, then the failure
        raise OSError("disk full")

    monkeypatch.setattr(_checkpoint.eqx, "tree_serialise_leaves", failing_serialiser)
    with pytest.raises(OSError, match="disk full"):
        meta.save_checkpoint(path, _tree(), {"step": 2})
    with pytest.raises(OSError, match="disk full"):
        meta.save_checkpoint(tmp_path / "new.eqx", _tree(), {"step": 2})
    assert path.read_bytes() == good  # old checkpoint untouched
    assert sorted(os.listdir(tmp_path)) == ["ckpt.eqx"]  # no partial, no temp file
    monkeypatch.undo()
    assert meta.read_checkpoint_header(path)["step"] == 1


# --------------------------------------------------------------------------- #
# Divergence
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "estimator",
    [meta.TruncatedBPTT(), meta.AntitheticES(std=0.05, num_pairs=2)],
    ids=["bptt", "es"],
)
def test_diverging_tasks_do_not_poison_theta(estimator):
    def make(p_nan):
        return meta.MetaTrainer(
            LearnableSGD(0.1),
            SometimesNaNTask(jnp.asarray(p_nan, jnp.float32)),
            estimator,
            learning_rate=0.05,
            num_tasks=8,
            unroll_length=4,
            horizon=4,
            compiler_options=FAST_COMPILE,
            key=jax.random.PRNGKey(0),
        )

    # ~19% of 4-step windows meet a NaN: some trajectories diverge each step.
    lopt, history = make(0.05).run(6, progress=False)
    assert np.isfinite(float(lopt.log_learning_rate))
    assert float(lopt.learning_rate) != pytest.approx(0.1)  # training went on
    assert sum(history["num_diverged"]) > 0
    assert not any(history["skipped"])
    assert all(np.isfinite(history["meta_loss"]))

    # Every trajectory diverges: every step is skipped and θ is unchanged.
    start = LearnableSGD(0.1)
    lopt, history = make(1.0).run(3, progress=False)
    assert all(history["skipped"]) and history["num_diverged"] == [8, 8, 8]
    assert np.array_equal(_theta(lopt), _theta(start))


def test_plot_history(tmp_path, uninterrupted):
    _, _, history, _ = uninterrupted
    history = dict(history, skipped=[False] * 8 + [True])
    path = meta.plot_history(history, tmp_path / "curve.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_truncated_unroll_resets_at_horizon():
    task = NoisyQuadratic(jnp.ones(2))
    lopt = LearnableSGD(0.1)
    state = meta.init_truncation_state(lopt, task, 3, jax.random.PRNGKey(0))
    state, out = _jit(meta.truncated_unroll)(lopt, task, state, 7, 3)
    np.testing.assert_array_equal(out.inner_step, [0, 1, 2, 0, 1, 2, 0])
    np.testing.assert_array_equal(out.is_reset, [0, 0, 0, 1, 0, 0, 1])
    assert int(state.inner_step) == 1
    # The first reset starts the trajectory of key trajectory_keys(key)[3].
    second = meta.init_truncation_state(
        lopt, task, 3, meta.trajectory_keys(jax.random.PRNGKey(0))[3]
    )
    _, _, losses = _jit(meta.unroll)(
        lopt,
        task,
        second.params,
        second.opt_state,
        meta.trajectory_keys(second.key)[2],
        3,
    )
    np.testing.assert_allclose(out.losses[3:6], losses, rtol=1e-6)


def test_meta_losses():
    losses = jnp.array([4.0, 2.0, 1.0])
    np.testing.assert_allclose(meta.mean_log_loss(losses), np.mean(np.log([4, 2, 1])))
    assert float(meta.mean_loss(losses)) == pytest.approx(7 / 3)
    assert float(meta.last_loss(losses)) == 1.0
    assert meta.get_meta_loss("mean_log") is meta.mean_log_loss
    with pytest.raises(ValueError, match="Unknown meta-loss"):
        meta.get_meta_loss("median")
    value, diverged = meta.guard_meta_loss(
        jnp.array([1.0, jnp.nan]), jnp.asarray(jnp.nan), penalty=7.0
    )
    assert bool(diverged) and float(value) == 7.0


@pytest.mark.slow
def test_sharded_task_batch_matches_single_device():
    """The task batch sharded over 4 of 8 host devices gives the same θ as 1 device."""
    import subprocess
    import sys

    script = (
        "import sys, jax; sys.path.insert(0, sys.argv[1]); import test_meta as T; "
        "lopt, _ = T._resume_trainer().run(6, progress=False); "
        "print(jax.device_count(), float(lopt.log_learning_rate).hex())"
    )
    outputs = {}
    for devices in ("1", "8"):
        env = dict(os.environ, JAX_NUM_CPU_DEVICES=devices, JAX_PLATFORMS="cpu")
        env.pop("XLA_FLAGS", None)
        result = subprocess.run(
            [sys.executable, "-c", script, os.path.dirname(__file__)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        count, value = result.stdout.split()[-2:]
        assert count == devices
        outputs[devices] = float.fromhex(value)
    assert outputs["1"] == pytest.approx(outputs["8"], rel=1e-6, abs=1e-7)
