"""Evaluation harness: statistics by hand, divergence, a mini evaluation."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mnemosyne import baselines, evaluation
from mnemosyne.evaluation import EvaluationResult, Run
from mnemosyne.tasks import AbstractTask


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
    for name in ("mnemosyne", "lstm"):  # pretrained weights may not exist yet
        try:
            evaluation.resolve_optimizer(name)
        except FileNotFoundError as err:
            assert name in str(err) and "meta-train" in str(err)


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


def test_tuned_optimizer_records_learning_rate():
    result = evaluation.evaluate(
        ["sgd_tuned"],
        [Bowl()],
        seeds=(0,),
        num_steps=10,
        measure_cost=False,
        progress=False,
    )
    lr = result.runs["sgd_tuned"]["bowl"].learning_rate
    assert lr in baselines.DEFAULT_GRID
    initial = result.runs["sgd_tuned"]["bowl"].losses[0, 0]
    assert result.stats("sgd_tuned", "bowl").final_loss_mean < 0.5 * initial


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
