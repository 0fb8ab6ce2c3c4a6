"""Evaluation harness: statistics by hand, divergence, a mini evaluation."""

import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mnemosyne
from mnemosyne import baselines, evaluation
from mnemosyne.evaluation import EvaluationResult, Run
from mnemosyne.tasks import AbstractTask, get_task


class Bowl(AbstractTask):
    """`0.5 |x|²`, deterministic: the cheapest task to compile."""

    name: str = "bowl"
    kind: str = "quadratic"

    def init(self, key):
        return {"x": jax.random.normal(key, (4,))}

    def loss(self, params, batch):
        return 0.5 * jnp.sum(params["x"] ** 2)

    def sample_batch(self, key):
        return {}


# ---------------------------------------------------------------- statistics

# Two seeds, 20 steps (final window = round(0.05 * 20) = 1 step).
T = np.arange(20.0)
CURVES = np.stack([20.0 - T, 40.0 - 2.0 * T])  # seed 0 ends at 1, seed 1 at 2


def test_summarize_by_hand():
    s = evaluation.summarize(
        CURVES, target=10.0, test_loss=[0.5, 1.5], accuracy=[0.8, 1.0]
    )
    assert s.num_seeds == 2 and s.num_diverged == 0
    assert s.final_losses == (1.0, 2.0)
    assert s.final_loss_mean == pytest.approx(1.5)
    assert s.final_loss_std == pytest.approx(0.5)  # ddof 0
    # Fractions: the loss after round(f * 20) steps, i.e. indices 4, 9, 19.
    assert s.loss_at[0.25] == pytest.approx((24.0, 8.0))  # (16 + 32) / 2, |16 - 32| / 2
    assert s.loss_at[0.5] == pytest.approx((16.5, 5.5))  # 11 and 22
    assert s.loss_at[1.0] == pytest.approx((1.5, 0.5))
    # 20 - t <= 10 first at t = 10; 40 - 2t <= 10 first at t = 15.
    assert s.steps_to_target == (10, 15)
    assert s.steps_to_target_mean == pytest.approx(12.5)
    assert (s.test_loss_mean, s.test_loss_std) == pytest.approx((1.0, 0.5))
    assert (s.accuracy_mean, s.accuracy_std) == pytest.approx((0.9, 0.1))


def test_summarize_unreached_target_and_window():
    s = evaluation.summarize(CURVES, target=1.5)
    assert s.steps_to_target == (19, None)  # seed 1 never gets below 2
    assert s.steps_to_target_mean is None
    assert evaluation.summarize(CURVES).steps_to_target_mean is None  # no target
    # 40 steps: the final window has round(0.05 * 40) = 2 steps; 40 - t ends 2, 1.
    s = evaluation.summarize(40.0 - np.arange(40.0)[None])
    assert evaluation.window_size(40) == 2
    assert s.final_loss_mean == pytest.approx(1.5)
    # Steps to target use the same trailing window: mean(l[t-1], l[t]) = 40.5 - t <= 30.
    assert evaluation.summarize(
        40.0 - np.arange(40.0)[None], target=30.0
    ).steps_to_target == (11,)


def test_divergence_rule():
    ok = np.linspace(1.0, 0.1, 10)
    blow_up = np.linspace(1.0, 2e3, 10)  # exceeds 1000 x the initial loss
    nan = ok.copy()
    nan[5] = np.nan
    assert evaluation.diverged(np.stack([ok, blow_up, nan])).tolist() == [
        False,
        True,
        True,
    ]
    s = evaluation.summarize(np.stack([ok, nan]))
    assert s.num_diverged == 1
    assert s.final_losses[1] == math.inf and s.final_loss_mean == math.inf


def _hand_result():
    """Reference `adam` and candidate `cand` on four tasks, two seeds, 20 steps."""
    scale = {"a": 0.5, "b": 1.05, "c": 2.0, "d": 1.0}
    runs = {"adam": {}, "cand": {}}
    for task, factor in scale.items():
        runs["adam"][task] = Run(CURVES)
        cand = CURVES * factor
        if task == "d":
            cand = cand.copy()
            cand[0, 5:] = np.inf
        runs["cand"][task] = Run(cand)
    return EvaluationResult(
        ["adam", "cand"], list(scale), (0, 1), 20, runs, user_targets={"c": 30.0}
    )


def test_result_targets_compare_and_markdown():
    result = _hand_result()
    # Default target: adam's mean final loss (1.5) plus 5%; user targets win.
    assert result.target("a") == pytest.approx(1.575)
    assert result.target("c") == 30.0
    assert result.stats("cand", "a").steps_to_target == (
        17,
        19,
    )  # 10 - t/2, 20 - t <= 1.575
    cmp = evaluation.compare(result, "adam", "cand")
    assert (cmp.num_tasks, cmp.wins, cmp.within_10pct, cmp.losses) == (4, 1, 2, 3)
    assert cmp.candidate_diverged == 1 and cmp.reference_diverged == 0
    assert cmp.ratios["c"] == pytest.approx(2.0) and cmp.ratios["d"] == math.inf
    md = result.to_markdown()
    assert "| a | 1.5 ± 0.5 | **0.75 ± 0.25** |" in md
    assert "| c | **1.5 ± 0.5** | 3 ± 1 |" in md
    assert "diverged (1/2)" in md
    assert "cand vs adam: 1/4 wins" in md
    json.dumps(result.to_dict(), allow_nan=False)  # strict JSON despite the inf


# ------------------------------------------------------------------- optimizers


def test_floats_per_parameter():
    params = {"w": jnp.zeros((3, 4)), "b": jnp.zeros(4)}
    # adam: mu and nu; its int32 step count is not a float and is excluded.
    assert evaluation.floats_per_parameter(optax.adam(1e-3), params) == 2.0
    assert evaluation.floats_per_parameter(optax.sgd(0.1, momentum=0.9), params) == 1.0
    assert evaluation.floats_per_parameter(optax.sgd(0.1), params) == 0.0
    # A floating scalar in the state counts: 1 extra float over 16 parameters.
    with_scalar = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    assert evaluation.floats_per_parameter(with_scalar, params) == pytest.approx(1 / 16)


def test_resolve_optimizer():
    assert isinstance(
        evaluation.resolve_optimizer("adam"), optax.GradientTransformation
    )
    with pytest.raises(ValueError, match="unknown optimizer"):
        evaluation.resolve_optimizer("adamax")
    with pytest.raises(ValueError, match="pass the task"):
        evaluation.resolve_optimizer("adam_tuned")
    for name in ("mnemosyne", "lstm"):  # the shipped weights load
        tx = evaluation.resolve_optimizer(name)
        assert isinstance(tx, optax.GradientTransformation), name


def test_resolve_optimizer_without_weights_says_how_to_make_them(
    tmp_path, monkeypatch
):
    from mnemosyne import _serialisation

    monkeypatch.setattr(_serialisation, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="meta-train --preset default"):
        evaluation.resolve_optimizer("mnemosyne")


# ------------------------------------------------------------- real evaluations


def test_diverging_optimizer_is_reported_and_ranks_last():
    result = evaluation.evaluate(
        {"adam": optax.adam(1e-2), "sgd_1e3": optax.sgd(1e3)},
        [Bowl()],
        seeds=(0, 1),
        num_steps=20,
        measure_cost=False,
        progress=False,
    )
    bad, good = result.stats("sgd_1e3", "bowl"), result.stats("adam", "bowl")
    assert bad.num_diverged == 2 and good.num_diverged == 0
    assert bad.final_loss_mean == math.inf and math.isfinite(good.final_loss_mean)
    ranking = sorted(
        result.optimizers, key=lambda o: result.stats(o, "bowl").final_loss_mean
    )
    assert ranking[-1] == "sgd_1e3"
    assert evaluation.compare(result, "adam", "sgd_1e3").wins == 0
    assert "diverged (2/2)" in result.to_markdown()
    json.dumps(result.to_dict(), allow_nan=False)


def test_tuned_names_tune_on_a_separate_seed_and_pick_the_best_lr():
    """`sgd_tuned` on a quadratic: the grid is scored on the tuning seed only,
    the best score wins, the scores equal `baselines.tuned`'s, and the
    evaluation runs equal plain `train` at the chosen learning rate."""
    grid = (1e-3, 1e-2, 0.1, 1.0, 10.0)
    result = evaluation.evaluate(
        ["sgd_tuned", "adam_tuned", "adam"],
        [Bowl()],
        seeds=(0, 1),
        num_steps=20,
        measure_cost=False,
        progress=False,
        tuning_grid=grid,
    )
    info = result.tuning["sgd_tuned"]["bowl"]
    assert info["seed"] == evaluation.TUNING_SEED not in result.seeds
    scores = dict(zip(info["grid"], info["scores"], strict=True))
    assert scores[10.0] == math.inf  # sgd(10) blows up on curvature 1: diverged
    lr = result.runs["sgd_tuned"]["bowl"].learning_rate
    assert lr == min(scores, key=scores.get) == info["learning_rate"]
    alone = baselines.tuned(
        baselines.reference_optimizers()["sgd"],
        grid,
        Bowl(),
        num_steps=20,
        key=jax.random.key(evaluation.TUNING_SEED),
    )
    assert alone.learning_rate == lr
    assert alone.losses_by_lr == pytest.approx(scores)
    again = evaluation.train(optax.sgd(lr, momentum=0.9), Bowl(), (0, 1), num_steps=20)
    np.testing.assert_allclose(
        result.runs["sgd_tuned"]["bowl"].losses, again.losses, rtol=1e-6
    )
    assert result.runs["adam"]["bowl"].learning_rate is None
    md = result.to_markdown()
    assert "Tuned learning rates (grid search on seed 1000" in md
    assert "vs adam_tuned" in md


def test_checkpoint_after_each_task_and_resume(tmp_path):
    """The checkpoint holds every finished task; resuming keeps the tasks it
    holds (here doctored to prove they are not rerun) and runs the rest."""
    path = tmp_path / "partial.json"
    tasks = [Bowl(), Bowl(name="bowl2")]
    kwargs = dict(seeds=(0,), num_steps=10, measure_cost=False, progress=False)
    first = evaluation.evaluate(["sgd_tuned"], tasks, checkpoint=path, **kwargs)
    saved = json.loads(path.read_text())
    assert saved["tasks"] == ["bowl", "bowl2"]
    saved["tasks"] = ["bowl"]  # as if interrupted after the first task
    saved["runs"]["sgd_tuned"]["bowl"]["losses"] = [[7.0] * 10]
    path.write_text(json.dumps(saved))
    again = evaluation.evaluate(
        ["sgd_tuned"], tasks, checkpoint=path, resume=True, **kwargs
    )
    assert again.runs["sgd_tuned"]["bowl"].losses.tolist() == [[7.0] * 10]
    np.testing.assert_array_equal(
        again.runs["sgd_tuned"]["bowl2"].losses, first.runs["sgd_tuned"]["bowl2"].losses
    )
    assert again.tuning == first.tuning
    # other settings: the checkpoint is not used
    other = evaluation.evaluate(
        ["sgd_tuned"],
        tasks[:1],
        checkpoint=path,
        resume=True,
        **{**kwargs, "seeds": (1,)},
    )
    assert other.runs["sgd_tuned"]["bowl"].losses[0, 0] != 7.0


def test_grouped_training_matches_one_optimizer_at_a_time():
    tasks = get_task("logreg_wine")
    txs = {"adam": optax.adam(1e-2), "sgd": optax.sgd(0.1)}
    result = evaluation.evaluate(
        txs, [tasks], seeds=(0, 1), num_steps=10, measure_cost=False, progress=False
    )
    for name, tx in list(txs.items())[1:]:
        alone = evaluation.train(tx, tasks, (0, 1), num_steps=10)
        np.testing.assert_allclose(
            result.runs[name]["logreg_wine"].losses, alone.losses, rtol=1e-5
        )
        np.testing.assert_allclose(
            result.runs[name]["logreg_wine"].accuracies, alone.accuracies
        )


@pytest.mark.slow  # ~8 s of compiles, run by .ci/run
def test_training_passes_the_minibatch_loss_as_value():
    """Every update is given the loss it reports as optax's `value=` (an
    optimizer whose step is SGD scaled by the loss sees exactly that loss),
    in `train` and in the step of `run_steps`; plain transformations still
    train."""

    def loss_scaled_sgd(rate):
        def update(grads, state, params=None, *, value):  # value is required
            return jax.tree.map(lambda g: -rate * value * g, grads), state

        init = lambda params: optax.EmptyState()
        return optax.GradientTransformationExtraArgs(init, update)

    from mnemosyne._training import batch_sampler, run_steps

    task = get_task("logreg_wine")
    losses = np.asarray(
        evaluation.train(loss_scaled_sgd(0.1), task, (0,), num_steps=5).losses[0]
    )
    key = jax.random.split(jax.random.split(jax.random.key(0))[1], 5)
    params = task.init(jax.random.split(jax.random.key(0))[0])
    sample = batch_sampler(task)
    for t in range(5):  # the same run by hand, the loss fed explicitly
        loss, grads = jax.value_and_grad(task.loss)(params, sample(key[t]))
        np.testing.assert_allclose(losses[t], loss, rtol=1e-5)
        params = jax.tree.map(lambda p, g, v=loss: p - 0.1 * v * g, params, grads)

    (_, _), by_scan = jax.jit(
        lambda p, k: run_steps(task, loss_scaled_sgd(0.1), p, optax.EmptyState(), k)
    )(task.init(jax.random.split(jax.random.key(0))[0]), key)
    np.testing.assert_allclose(by_scan, losses, rtol=1e-5)
    plain = evaluation.train(optax.sgd(0.1), task, (0,), num_steps=3)
    assert np.isfinite(plain.losses).all()


def test_report_splits_transformer_tasks_and_counts_wins(tmp_path):
    """Rows a, b (MLP) and t (LM): Transformer tasks get their own table and
    their own win counts, against adam and against adam_tuned."""
    f = {
        "adam": (1.0, 1.0, 1.0),
        "adam_tuned": (0.5, 2.0, 0.5),
        "cand": (0.8, 0.5, 0.1),
    }
    runs = {
        o: {t: Run(CURVES * x) for t, x in zip("abt", xs, strict=True)}
        for o, xs in f.items()
    }
    result = EvaluationResult(
        list(f),
        ["a", "b", "t"],
        (0, 1),
        20,
        runs,
        kinds={"a": "mlp", "b": "mlp", "t": "lm"},
    )
    assert result.transformer_tasks() == ["t"]
    md = result.to_markdown()
    other, transformer = md.split("### Final training loss, Transformer tasks")
    assert "non-Transformer tasks" in other and "| a |" in other and "| b |" in other
    assert (
        "| t |" in transformer.split("###")[0]
        and "| a |" not in transformer.split("###")[0]
    )
    # cand: vs adam wins a, b, t; vs adam_tuned loses a (0.8 > 0.5), wins b and t.
    assert "| cand | 3/0 | 1/0 | 2/0 | 2/1 | 1/0 | 1/1 |" in md, md
    assert result.compare("adam_tuned", "cand", ["a", "b"]).wins == 1
    path = result.save(tmp_path)["json"]
    assert EvaluationResult.load(path).kinds == result.kinds
    assert EvaluationResult.load(path).to_markdown() == md
    # a results.json from before kinds were recorded: registered tasks get
    # their kind back, unknown names none (one table)
    d = json.loads(path.read_text())
    del d["kinds"]
    d["tasks"][2] = "lm_copy"
    d["runs"]["adam"]["lm_copy"] = d["runs"]["adam"].pop("t")
    path.write_text(json.dumps(d))
    assert EvaluationResult.load(path).kinds == {"a": "", "b": "", "lm_copy": "lm"}


def test_mini_evaluation_writes_outputs(tmp_path):
    result = evaluation.evaluate(
        ["adam", "sgd"],
        [Bowl(), "logreg_wine"],  # a task object (cheap to compile) and a name
        seeds=(0, 1),
        num_steps=30,
        eval_every=15,
        progress=False,
    )
    assert result.runs["adam"]["bowl"].losses.shape == (2, 30)
    assert result.runs["sgd"]["logreg_wine"].eval_steps == (15, 30)
    wine = result.stats("sgd", "logreg_wine")
    assert 0.0 <= wine.accuracy_mean <= 1.0 and wine.test_loss_mean > 0
    assert result.stats("adam", "bowl").accuracy_mean is None
    assert result.cost_task == "logreg_wine"
    assert result.cost["adam"]["floats_per_parameter"] == 2.0
    assert result.cost["sgd"]["floats_per_parameter"] == 1.0  # momentum 0.9
    assert result.cost["sgd"]["time_vs_adam"] > 0

    paths = result.save(tmp_path)
    for name in (
        "results.json",
        "results.md",
        "loss_curves.png",
        "relative_performance.png",
    ):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    md = paths["markdown"].read_text()
    assert "| bowl |" in md and "**" in md and "sgd vs adam" in md
    loaded = EvaluationResult.load(paths["json"])
    assert loaded.to_markdown() == md
    assert (
        json.loads(paths["json"].read_text())["stats"]["sgd"]["logreg_wine"][
            "num_seeds"
        ]
        == 2
    )


# ------------------------------------------------------------------ command line


def test_cli_accepts_tuned_names_and_rejects_unknown(capsys):
    from mnemosyne.cli import main

    assert "sgd_tuned" in evaluation.optimizer_names()
    code = main(["evaluate", "--optimizers", "adamax_tuned", "--tasks", "quadratic"])
    assert code == 2 and "unknown optimizer 'adamax_tuned'" in capsys.readouterr().err


# ---------------------------------------------------------------- memory ablation


@pytest.mark.slow  # meta-trains an ablation variant; run by .ci/run
def test_no_memory_variant_keeps_read_out_weights_at_zero():
    """The no-memory variant starts with the head's read-out columns at 0 and
    its outer optimizer zeroes their meta-gradients: after Adam steps on
    random meta-gradients they are still exactly 0; every other weight moved."""
    from mnemosyne.evaluation import _ablation
    from mnemosyne.meta._trainer import _DefaultOuterOptimizer

    variant = evaluation.ABLATION_VARIANTS[0]
    lopt = variant.make_lopt(jax.random.key(0))
    start = _ablation._read_start(lopt)
    assert start == lopt.head.w1.shape[1] - 1  # one head, value size 1
    assert np.all(np.asarray(lopt.head.w1[:, start:]) == 0)
    outer = _ablation._NoReadOutOuterOptimizer(_DefaultOuterOptimizer(0.1, 1.0), start)
    theta = eqx.filter(lopt, eqx.is_inexact_array)

    @eqx.filter_jit
    def step(theta):
        leaves, treedef = jax.tree.flatten(theta)
        keys = jax.random.split(jax.random.key(1), len(leaves))
        grads = treedef.unflatten(
            [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
        )
        with jax.numpy_dtype_promotion("standard"):
            updates, _ = outer.update(grads, outer.init(theta), theta)
        return eqx.apply_updates(theta, updates)

    moved = step(theta)
    for w in (moved.head.w1, moved.head.skip):
        assert np.all(np.asarray(w[:, start:]) == 0)
    assert np.all(np.asarray(moved.head.w1[:, :start] != lopt.head.w1[:, :start]))
    # the other variants' state sizes: heads * r * (value size + 1)
    sizes = {v.name: v.floats_per_parameter() for v in evaluation.ABLATION_VARIANTS}
    assert sizes == {
        "no_memory": 0,
        "h1_r2": 5,
        "h3_r2": 13,
        "h1_r4": 9,
        "h1_r8": 17,
    }  # + 1 second moment (v2)
    assert lopt.memory.floats_per_slot() == 4  # allocated, never read


def test_design_variants_follow_the_default_preset():
    """The design ablation's v2 is the shipped design: its module is built with
    the `default` preset's own settings (step adaptation, range, threshold),
    and so are the variants that only remove something else; v1 and the
    variants without read-out or second moment cannot adapt their step and
    are fixed-step, as is `v2_fixed_step`; the threshold variant drops a0 only."""
    from mnemosyne.evaluation._ablation import design_variants, variant_preset
    from mnemosyne.meta import PRESETS

    key = jax.random.key(0)
    shipped = PRESETS["default"].make_lopt(key)
    settings = lambda m: (
        m.step_adaptation, m.step_scale_range, m.step_agreement_threshold
    )
    variants = {v.name: v.make_lopt(key) for v in design_variants()}
    assert jax.tree.structure(variants["v2"]) == jax.tree.structure(shipped)
    assert eqx.tree_equal(variants["v2"], shipped)
    adaptive = ("v2", "v2_asymmetric", "v2_constant_schedule", "v2_bptt")
    for name in adaptive:
        assert settings(variants[name]) == settings(shipped), name
    for name in ("v2_fixed_step", "v1", "v2_no_read_out", "v2_no_second_moment"):
        assert variants[name].step_adaptation is None, name
    assert settings(variants["v2_no_threshold"]) == settings(shipped)[:2] + (None,)
    assert not variants["v2_asymmetric"].sign_symmetric
    assert variants["v2_constant_schedule"].step_timescales == ()
    # the shipped reading (a lower floor) applies where there is a multiplier
    for v in design_variants():
        preset = variant_preset(v, PRESETS["default"], 10)
        assert preset.num_outer_steps == 10
        expected = PRESETS["default"].read_with if v.name in adaptive + (
            "v2_no_threshold",) else None
        assert preset.read_with == expected, v.name


def test_ablation_summary_by_hand():
    """Geometric-mean ratios (losses floored at LOSS_FLOOR) against the
    baseline variant, split by seen / held-out kinds, and wins against adam."""
    from mnemosyne.evaluation import _ablation

    f = {  # final loss scale per task: quadratic (seen), lm_copy (held out)
        "adam": (1.0, 1.0),
        "h1_r2": (0.5, 2.0),
        "no_memory": (2.0, 2.0),
    }
    runs = {
        o: {
            t: Run(CURVES * x)
            for t, x in zip(("quadratic", "lm_copy"), xs, strict=True)
        }
        for o, xs in f.items()
    }
    result = EvaluationResult(list(f), ["quadratic", "lm_copy"], (0, 1), 20, runs)
    variants = [v for v in evaluation.ABLATION_VARIANTS if v.name in f]
    rows = _ablation.summarize_ablation(result, variants, {}, baseline="h1_r2")
    by = {r["variant"]: r for r in rows}
    assert by["no_memory"]["vs_baseline_seen"] == pytest.approx(4.0)
    assert by["no_memory"]["vs_baseline_held_out"] == pytest.approx(1.0)
    assert by["no_memory"]["vs_baseline_all"] == pytest.approx(2.0)  # sqrt(4 * 1)
    assert by["h1_r2"]["vs_adam_all"] == pytest.approx(1.0)  # sqrt(0.5 * 2)
    assert by["h1_r2"]["wins_vs_adam"] == 1 and by["no_memory"]["wins_vs_adam"] == 0


@pytest.mark.slow
def test_memory_ablation_tiny_budget(tmp_path):
    """2 outer steps of the seconds-long `quick` preset, one task: the no-memory
    variant's read-out weights stay exactly zero through meta-training while
    the rest of θ moves, and the outputs are written."""
    import mnemosyne
    from mnemosyne.evaluation import _ablation

    variant = evaluation.ABLATION_VARIANTS[0]
    assert not variant.read_out and variant.floats_per_parameter() == 0
    record = evaluation.memory_ablation(
        tmp_path,
        variants=(variant,),
        num_outer_steps=2,
        tasks=("quadratic",),
        seeds=(0,),
        num_steps=10,
        preset="quick",
        progress=False,
    )
    for name in ("ablation.md", "ablation.json", "ablation.png", "no_memory.eqx"):
        assert (tmp_path / name).stat().st_size > 0
    trained = mnemosyne.load(tmp_path / "no_memory.eqx")
    start = _ablation._read_start(trained)
    assert np.all(np.asarray(trained.head.w1[:, start:]) == 0)
    assert np.all(np.asarray(trained.head.skip[:, start:]) == 0)
    init = variant.make_lopt(jax.random.split(jax.random.key(0))[0])
    assert not np.allclose(trained.head.w1[:, :start], init.head.w1[:, :start])
    assert len(record["histories"]["no_memory"]["meta_loss"]) == 2
    assert record["summary"][0]["variant"] == "no_memory"
    assert "| no_memory: no memory read-out" in (tmp_path / "ablation.md").read_text()
    assert record["evaluation"]["optimizers"] == ["no_memory", "adam"]


@pytest.mark.slow
def test_ablation_command_all_variants(tmp_path, capsys):
    from mnemosyne.cli import main

    args = [
        "ablation",
        "--preset",
        "quick",
        "--outer-steps",
        "2",
        "--tasks",
        "quadratic",
    ]
    assert main([*args, "--steps", "10", "--seeds", "0", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "ablation.json").read_text())
    names = [r["variant"] for r in record["summary"]]
    assert names == [v.name for v in evaluation.ABLATION_VARIANTS]
    by_name = {r["variant"]: r for r in record["summary"]}
    assert by_name["h1_r2"]["vs_baseline_all"] == pytest.approx(1.0)
    assert by_name["h3_r2"]["floats_per_parameter"] == 12
    assert by_name["h1_r8"]["floats_per_parameter"] == 16
    assert "ablation.md" in capsys.readouterr().out


def test_compare_updates_reads_a_doubled_step_as_ratio_two_and_cosine_one():
    """θ₀ at twice the step against θ₀ from the same key: fed the same
    gradients, the reference keeps its own state, so every update is exactly
    half; and the compared run is the one `train` gives for that seed."""
    key = jax.random.key(0)
    double = mnemosyne.as_gradient_transformation(
        mnemosyne.CoordinatewiseMnemosyne(alpha=2e-3, key=key)
    )
    base = mnemosyne.as_gradient_transformation(
        mnemosyne.CoordinatewiseMnemosyne(key=key)
    )
    task = get_task("quadratic")
    c = evaluation.compare_updates(double, base, task, seed=3, num_steps=30)
    np.testing.assert_allclose(c.ratio, 2.0, rtol=1e-5)
    np.testing.assert_allclose(c.cosine, 1.0, atol=1e-5)
    run = evaluation.train(double, task, [3], num_steps=30)
    np.testing.assert_allclose(c.losses, run.losses[0], rtol=1e-4)


def test_compare_updates_of_orthogonal_optimizers_has_cosine_zero():
    """SGD against SGD on a sign-flipped gradient: cosine −1; against a
    transformation that zeroes updates: cosine 0 and ratio 0 (no division by
    zero)."""
    task = get_task("quadratic")
    flipped = optax.chain(optax.sgd(0.1), optax.scale(-1.0))
    c = evaluation.compare_updates(optax.sgd(0.1), flipped, task, num_steps=5)
    np.testing.assert_allclose(c.cosine, -1.0, atol=1e-6)
    zero = optax.set_to_zero()
    c = evaluation.compare_updates(zero, optax.sgd(0.1), task, num_steps=5)
    assert np.all(c.cosine == 0) and np.all(c.ratio == 0)
