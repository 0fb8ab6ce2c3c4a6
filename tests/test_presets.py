"""Meta-training presets and the shipped pretrained weights."""

import dataclasses
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mnemosyne
import mnemosyne.baselines
from mnemosyne._training import run_steps
from mnemosyne.meta import PRESETS, list_presets, train_preset
from mnemosyne.meta._checkpoint import differing_settings
from mnemosyne.tasks import (
    HELD_OUT_KINDS,
    MLPClassifier,
    NoisyLabelMLP,
    get_task,
    list_tasks,
    load_dataset,
)


def _losses(task, tx, steps, seed=0):
    k_init, k_data = jax.random.split(jax.random.key(seed))
    params = task.init(k_init)
    keys = jax.random.split(k_data, steps)
    run = jax.jit(lambda p, s: run_steps(task, tx, p, s, keys)[1])
    return np.asarray(run(params, tx.init(params)))


def test_presets_listed_and_hold_out_kinds():
    assert {"default", "v1", "lstm", "lstm_multiscale", "quick"} <= set(list_presets())
    default, v1 = PRESETS["default"], PRESETS["v1"]
    # v2 sees CNNs and causal LMs; ViTs, masked LMs and prompt tuning stay unseen
    assert default.held_out_kinds == {"vit", "mlm", "prompt"}
    assert not default.family.kinds & default.held_out_kinds
    assert {"mlp", "rnn", "cnn", "lm", "regression"} <= default.family.kinds
    assert v1.held_out_kinds == HELD_OUT_KINDS and not v1.family.kinds & HELD_OUT_KINDS
    for name in ("lstm", "lstm_multiscale"):  # the recipe of their shipped weights
        p = PRESETS[name]
        assert p.family == v1.family and p.estimator == v1.estimator
        assert p.trainer == v1.trainer and p.num_outer_steps == v1.num_outer_steps
    for name in ("lstm_v2", "lstm_multiscale_v2"):  # the default's recipe
        p = PRESETS[name]
        assert p.family == default.family and p.estimator == default.estimator
        assert p.trainer == default.trainer
        assert p.num_outer_steps == default.num_outer_steps
        assert p.average == default.average
        assert p.held_out_kinds == default.held_out_kinds
        assert 0.0 < p.shrink <= 1.0


def test_broad_family_is_a_fixed_broad_sample():
    from mnemosyne.meta import BroadFamily, broad_configs

    names = list(broad_configs(24, seed=0))
    assert names == list(broad_configs(24, seed=0)) and len(set(names)) == 24
    family = BroadFamily(24, seed=0)
    drawn = {family.sample(jax.random.key(i)).name for i in range(60)}
    assert drawn <= set(names) and len(drawn) > 12
    batches = {int(n.split("_b")[-1].split("_")[0]) for n in names if "_b" in n}
    assert min(batches) <= 8 and max(batches) >= 256


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset"):
        train_preset("nope")


_BASE = mnemosyne.CoordinatewiseMnemosyne(key=jax.random.key(0))


def _theta(n):
    """A saveable θ whose output bias b2 is (n, n): the step it stands for."""
    return eqx.tree_at(lambda m: m.head.b2, _BASE, jnp.full(2, n, jnp.float32))


class _CountingTrainer:
    """Stands in for `MetaTrainer`: θ after outer step n is the θ whose leaf is n. A
    trainer "resumed" at step `at` starts there; `kill_at` stops a run with an
    exception when it reaches that step (its checkpoint written)."""

    def __init__(self, checkpoint_dir=None, at=0, kill_at=None):
        self.lopt, self.checkpoint_dir, self.step = _theta(0), checkpoint_dir, 0
        self.at, self.kill_at, self.stops = at, kill_at, []

    def run(self, stop, *, resume, progress):
        if resume and self.step == 0:
            self.step = self.at
        if self.kill_at is not None and self.step < self.kill_at <= stop:
            self.step = self.kill_at
            raise KeyboardInterrupt
        self.step = max(self.step, stop)
        self.stops.append(stop)
        return _theta(self.step), {"step": list(range(self.step))}


@pytest.mark.parametrize(
    "steps, stops", [(600, list(range(400, 601, 20))), (150, list(range(100, 151, 5)))]
)
def test_run_recipe_averages_the_same_fraction_of_any_run_then_shrinks(steps, stops):
    from mnemosyne.meta._presets import run_recipe

    preset = PRESETS["default"]
    assert (preset.average, preset.num_outer_steps) == ((400, 20), 600)
    trainer = _CountingTrainer()
    lopt, history = run_recipe(trainer, preset, steps, progress=False)
    assert trainer.stops[1:-1] == stops and len(history["step"]) == steps
    # θ0 = 0, so the shipped θ is the shrinkage times the iterates' mean
    np.testing.assert_allclose(lopt.head.b2, preset.shrink * np.mean(stops), rtol=1e-6)
    # read with the preset's settings (range, warm-up, width), not the constructor's
    assert lopt.step_scale_range == preset.read_with["step_scale_range"] == (0.25, 2)
    assert lopt.step_warmup == preset.read_with["step_warmup"] == (0.1, 200)
    assert lopt.step_width_reference == preset.read_with["step_width_reference"] == 128
    assert _BASE.step_scale_range != lopt.step_scale_range


def test_run_recipe_killed_inside_the_averaging_window_resumes_to_the_same_theta(
    tmp_path,
):
    from mnemosyne.meta import CheckpointError
    from mnemosyne.meta._presets import run_recipe

    preset = PRESETS["default"]
    whole, _ = run_recipe(_CountingTrainer(tmp_path / "a"), preset, 600, progress=False)
    with pytest.raises(KeyboardInterrupt):  # killed at step 500, iterates 400-480 kept
        run_recipe(_CountingTrainer(tmp_path / "b", kill_at=500), preset, 600,
                   progress=False)
    assert len(list((tmp_path / "b" / "iterates").glob("theta-*.eqx"))) == 5
    resumed = _CountingTrainer(tmp_path / "b", at=500)
    again, _ = run_recipe(resumed, preset, 600, progress=False)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(whole), strict=True)
    )
    assert resumed.stops[1:-1] == list(range(500, 601, 20))
    # past an averaging step whose iterate is lost: a clear error, not a wrong mean
    (tmp_path / "b" / "iterates" / "theta-00000420.eqx").unlink()
    with pytest.raises(CheckpointError, match="iterate of step 420"):
        run_recipe(_CountingTrainer(tmp_path / "b", at=600), preset, 600,
                   progress=False)


@pytest.mark.slow  # a real (3-step) meta-training run and its resume; run by .ci/run
def test_quick_preset_end_to_end(tmp_path):
    out = tmp_path / "quick.eqx"
    lopt, history = train_preset(
        "quick", output=out, checkpoint_dir=tmp_path / "ck", progress=False
    )
    assert len(history["meta_loss"]) == PRESETS["quick"].num_outer_steps
    loaded = mnemosyne.load(out)
    assert type(loaded) is type(lopt)
    record = json.loads((tmp_path / "quick.eqx.json").read_text())
    assert record["preset"] == "quick"
    assert record["num_outer_steps"] == PRESETS["quick"].num_outer_steps
    assert set(record["held_out_kinds"]) == set(HELD_OUT_KINDS)
    assert record["machine"]["cpu_count"] == __import__("os").cpu_count()
    assert (tmp_path / "quick.eqx.png").is_file()
    # resuming a finished run is a no-op that returns the same θ
    again, _ = train_preset("quick", checkpoint_dir=tmp_path / "ck", progress=False)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(lopt), jax.tree.leaves(again), strict=False)
    )


def test_shipped_default_weights_come_from_the_default_preset():
    from mnemosyne._serialisation import WEIGHTS_DIR

    record = json.loads((WEIGHTS_DIR / "default.eqx.json").read_text())
    preset = PRESETS["default"]
    assert record["preset"] == "default"
    # retrain when the preset changes (an option added later at None is no change)
    assert not differing_settings(record["config"], preset.config())
    assert record["num_outer_steps"] == preset.num_outer_steps
    assert record["skipped_steps"] == 0
    assert not set(record["task_kinds"]) & set(preset.held_out_kinds)
    shipped = mnemosyne.pretrained("default")
    for setting, value in preset.read_with.items():  # range, warm-up, width
        assert getattr(shipped, setting) == value, setting
    trained = preset.make_lopt(jax.random.key(0))
    assert jax.tree.structure(
        mnemosyne.reconfigure(trained, **preset.read_with)
    ) == jax.tree.structure(shipped)


@pytest.mark.slow  # ~2.5 min: 17 tasks; .ci/run runs it
def test_shipped_default_weights_reduce_every_suite_loss():
    mnemosyne.pretrained("default")
    tx = mnemosyne.mnemosyne()
    for name in list_tasks():
        losses = _losses(get_task(name), tx, 100)
        assert np.all(np.isfinite(losses)), name
        assert losses[-10:].mean() < losses[0], (name, losses[0], losses[-10:].mean())


@pytest.mark.parametrize("variant", ["gradient", "multiscale"])
def test_shipped_lstm_weights_reduce_loss(variant):
    from mnemosyne._serialisation import WEIGHTS_DIR

    # shipped with the package: a missing file is a packaging loss, not a skip
    name = "lstm.eqx" if variant == "gradient" else "lstm_multiscale.eqx"
    assert (WEIGHTS_DIR / name).is_file(), name
    tx = mnemosyne.baselines.lstm(variant=variant)
    for name in ("quadratic", "mlp_iris"):
        losses = _losses(get_task(name), tx, 100)
        assert losses[-10:].mean() < losses[0], (variant, name)


def test_a_constructor_option_added_later_at_none_is_no_change():
    """Frozen constructor configs (`[name, value]` pairs) compare as dicts: an
    option added after a checkpoint was written, left at `None` (its
    behaviour before it existed), does not block resuming; a changed or
    newly set one does, naming it."""
    saved = {"lopt": {"config": [["alpha", 0.001], ["step_adaptation", 0.01]]}}
    later = {"lopt": {"config": [["alpha", 0.001], ["step_adaptation", 0.01],
                                 ["step_agreement_threshold", None]]}}
    assert differing_settings(saved, later) == []
    later["lopt"]["config"][2][1] = 0.05
    (line,) = differing_settings(saved, later)
    assert line.startswith("lopt.config.step_agreement_threshold: not recorded")
    later["lopt"]["config"][2][1] = None
    later["lopt"]["config"][0][1] = 0.01
    (line,) = differing_settings(saved, later)
    assert line.startswith("lopt.config.alpha: checkpoint 0.001")


def _configuration(x):
    """A hashable description of a task's configuration, its name left out
    (an MLP with zero label noise described as the plain MLP it is)."""
    if isinstance(x, eqx.Module):
        kind, skip = type(x).__name__, {"name"}
        if isinstance(x, NoisyLabelMLP) and x.label_noise == 0:
            kind, skip = "MLPClassifier", {"name", "label_noise"}
        return (kind,) + tuple(
            (f.name, _configuration(getattr(x, f.name)))
            for f in dataclasses.fields(x) if f.name not in skip
        )
    if isinstance(x, tuple | list):
        return tuple(_configuration(v) for v in x)
    if hasattr(x, "dtype"):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        x = np.asarray(x)
        return (x.shape, str(x.dtype), x.tobytes())
    return repr(x)


@pytest.mark.slow  # builds and traces ~130 tasks: ~25 s, run by .ci/run
def test_held_out_task_sets_are_disjoint_and_well_formed():
    """The sets that pick and check the shipped θ (validation, stress, the four
    probes) share no task with each other, the suite or the default preset's
    meta-training configurations, by name and by configuration, and every
    task's loss is a scalar (traced only, no compilation). One documented
    exception: the first probe runs the suite's 2-d Rosenbrock for 3,000
    steps instead of 1,000."""
    from mnemosyne.meta import (
        broad_configs,
        fourth_probe_tasks,
        probe_tasks,
        second_probe_tasks,
        stress_validation_tasks,
        third_probe_tasks,
        validation_tasks,
    )

    sets = {  # the suite shares kinds and some configurations with meta-training
        "suite": {n: (get_task(n), 1000) for n in list_tasks()},
        "validation": {n: (t, 1000) for n, t in validation_tasks().items()},
        "stress": stress_validation_tasks(),
        "probe": probe_tasks(),
        "second probe": second_probe_tasks(),
        "third probe": third_probe_tasks(),
        "fourth probe": fourth_probe_tasks(),
    }
    family = PRESETS["default"].family
    sets = {"meta-training": {
        n: (build(jax.random.key(0)), None)
        for n, build in broad_configs(family.count, family.seed).items()
    }} | sets
    allowed = {("rosenbrock", "probe_rosenbrock_d2")}
    mlp = dict(hidden=(8,), activation="relu", batch_size=4, name="a", kind="mlp")
    assert _configuration(
        NoisyLabelMLP(load_dataset("iris"), label_noise=0.0, **mlp)
    ) == _configuration(MLPClassifier(load_dataset("iris"), **mlp))
    names = [n for tasks in sets.values() for n in tasks]
    assert len(names) == len(set(names))
    # the same configuration under two names (data arrays compared by value)
    configs = {}
    for set_name, tasks in sets.items():
        for name, (task, steps) in tasks.items():
            assert steps is None or steps >= 1000, name
            key = _configuration(task)
            in_distribution = set_name in ("suite", "meta-training")
            if key in configs and not in_distribution:
                assert (configs[key][1], name) in allowed, (name, configs[key])
            configs.setdefault(key, (set_name, name))
            params = jax.eval_shape(task.init, jax.random.key(0))
            batch = jax.eval_shape(task.sample_batch, jax.random.key(1))
            loss = jax.eval_shape(task.loss, params, batch)
            assert loss.shape == () and jnp.issubdtype(loss.dtype, jnp.floating), name
