"""Pure parts of testing and gating: bootstrap intervals, thresholds, slices, SHAP, the gate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn import metrics as skm

from mlcycle.adapters.xgboost_model import XGBoostModel
from mlcycle.explain import shap_summary
from mlcycle.gate import decide
from mlcycle.metrics import (
    bootstrap_interval,
    choose_threshold,
    compute_kpis,
    roc_auc_by_ranks,
    slice_gaps,
    slice_kpis,
    threshold_curve,
)
from mlcycle.tasks import BINARY


@pytest.fixture(scope="module")
def scored() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 3000)
    p = np.clip(0.3 * y + rng.normal(0.35, 0.2, 3000), 0.001, 0.999)
    return y, p


def test_bootstrap_interval_brackets_the_estimate_and_is_seeded(scored) -> None:
    y, p = scored
    auc = skm.roc_auc_score(y, p)
    ci = bootstrap_interval(BINARY, y, p, 0.5, "roc_auc", n_boot=300, seed=1)
    assert ci["low"] < auc < ci["high"]
    assert ci["high"] - ci["low"] < 0.1
    assert ci == bootstrap_interval(BINARY, y, p, 0.5, "roc_auc", n_boot=300, seed=1)
    assert ci != bootstrap_interval(BINARY, y, p, 0.5, "roc_auc", n_boot=300, seed=2)


def test_threshold_maximising_f1_matches_a_brute_force_search(scored) -> None:
    y, p = scored
    curve = threshold_curve(y, p, metric="f1")
    chosen = choose_threshold(curve, "f1")
    brute = max(np.round(np.linspace(0.01, 0.99, 99), 2), key=lambda t: skm.f1_score(y, p >= t))
    assert skm.f1_score(y, p >= chosen) == pytest.approx(skm.f1_score(y, p >= brute))


def test_costly_false_negatives_lower_the_threshold(scored) -> None:
    y, p = scored
    even = choose_threshold(threshold_curve(y, p, cost_fp=1, cost_fn=1))
    fn_heavy = choose_threshold(threshold_curve(y, p, cost_fp=1, cost_fn=10))
    fp_heavy = choose_threshold(threshold_curve(y, p, cost_fp=10, cost_fn=1))
    assert fn_heavy < even < fp_heavy


def test_slices_report_each_group_and_the_gap(scored) -> None:
    y, p = scored
    groups = np.where(np.arange(len(y)) % 3 == 0, "a", "b").astype(object)
    p = p.copy()
    p[groups == "a"] = np.random.default_rng(0).uniform(size=(groups == "a").sum())  # noise
    slices = slice_kpis(BINARY, groups, y, p, 0.5, ["roc_auc", "accuracy"])
    assert slices["a"]["rows"] == 1000 and slices["b"]["rows"] == 2000
    assert (
        slices["b"]["roc_auc"]
        == compute_kpis(BINARY, y[groups == "b"], p[groups == "b"], 0.5, ["roc_auc"])["roc_auc"]
    )
    gaps = slice_gaps(slices, ["roc_auc"])
    assert gaps["roc_auc"]["best"] == "b" and gaps["roc_auc"]["worst"] == "a"
    assert gaps["roc_auc"]["gap"] == pytest.approx(slices["b"]["roc_auc"] - slices["a"]["roc_auc"])


def test_rank_auc_equals_scikit_learn_with_ties(scored) -> None:
    y, p = scored
    for probs in (p, np.round(p, 2), np.round(p, 1)):  # more and more tied scores
        assert roc_auc_by_ranks(y, probs) == pytest.approx(skm.roc_auc_score(y, probs), abs=1e-12)


def test_slice_gaps_say_whether_the_gap_is_beyond_noise(scored) -> None:
    y, p = scored
    rng = np.random.default_rng(0)
    groups = np.where(np.arange(len(y)) % 2 == 0, "a", "b").astype(object)
    # Same scores in both halves: any gap is noise. Then "a" gets pure noise: a real gap.
    same = slice_kpis(BINARY, groups, y, p, 0.5, ["roc_auc"], interval_metric="roc_auc", n_boot=200)
    for entry in same.values():
        assert entry["interval"]["low"] < entry["roc_auc"] < entry["interval"]["high"]
    assert slice_gaps(same, ["roc_auc"])["roc_auc"]["beyond_noise"] is False
    noisy = p.copy()
    noisy[groups == "a"] = rng.uniform(size=(groups == "a").sum())
    real = slice_kpis(BINARY, groups, y, noisy, 0.5, ["roc_auc", "f1"], interval_metric="roc_auc")
    gaps = slice_gaps(real, ["roc_auc", "f1"])
    assert gaps["roc_auc"]["worst"] == "a" and gaps["roc_auc"]["beyond_noise"] is True
    assert "beyond_noise" not in gaps["f1"]  # no interval of f1 was computed


def test_small_slices_get_only_their_size(scored) -> None:
    y, p = scored
    groups = np.array(["big"] * (len(y) - 5) + ["tiny"] * 5, dtype=object)
    slices = slice_kpis(BINARY, groups, y, p, 0.5, ["roc_auc"], min_rows=30)
    assert "roc_auc" not in slices["tiny"] and slices["tiny"]["rows"] == 5


def test_shap_values_sum_to_the_margin() -> None:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=500), "b": pd.Categorical(rng.choice(["x", "y"], 500))})
    y = ((X["a"] > 0) ^ (X["b"] == "x")).astype(int)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3},
        xgb.DMatrix(X, y, enable_categorical=True),
        20,
    )
    contribs = booster.predict(xgb.DMatrix(X, enable_categorical=True), pred_contribs=True)
    margin = booster.predict(xgb.DMatrix(X, enable_categorical=True), output_margin=True)
    np.testing.assert_allclose(contribs.sum(axis=1), margin, rtol=1e-4, atol=1e-4)
    model = XGBoostModel(booster, BINARY, 2)
    np.testing.assert_allclose(model.contributions(X), contribs[:, :-1])
    assert model.contributions(X).shape == (500, 2)
    importance, points, by_class = shap_summary(model, X, max_rows=100)
    assert by_class == {}
    assert {r["feature"] for r in importance} == {"a", "b"}
    assert len(points) == 200


MIN = {"roc_auc": 0.9, "log_loss": 0.3}


def test_gate_passes_a_first_model_on_the_objectives_alone() -> None:
    d = decide({"roc_auc": 0.93, "log_loss": 0.28}, MIN, "roc_auc")
    assert d.passed
    assert any("no production model" in r for r in d.reasons)


def test_gate_fails_on_an_objective_and_names_it() -> None:
    d = decide({"roc_auc": 0.93, "log_loss": 0.35}, MIN, "roc_auc")
    assert not d.passed
    assert [r for r in d.reasons if r.startswith("FAIL")] == ["FAIL log_loss 0.3500 <= 0.3"]


def test_gate_fails_against_a_better_champion_beyond_the_tolerance() -> None:
    new = {"roc_auc": 0.930, "log_loss": 0.28}
    assert not decide(new, MIN, "roc_auc", {"roc_auc": 0.935}, "v1.0.0", tolerance=0.002).passed
    assert decide(new, MIN, "roc_auc", {"roc_auc": 0.931}, "v1.0.0", tolerance=0.002).passed


def test_a_rejection_by_the_champion_alone_is_the_one_release_force_may_overrule() -> None:
    """A model rejected only for scoring below production is ``champion_only`` (the registry
    lets `mlcycle release --force --reason` past it, and says so); one that also fails an
    objective is not, nor is a model that passes."""
    leaky_prod = {"roc_auc": 0.99}
    honest = decide({"roc_auc": 0.93, "log_loss": 0.28}, MIN, "roc_auc", leaky_prod, "v1.0.0")
    assert not honest.passed and honest.champion_only
    assert honest.to_dict()["champion_only"] is True
    worse = decide({"roc_auc": 0.93, "log_loss": 0.35}, MIN, "roc_auc", leaky_prod, "v1.0.0")
    assert not worse.passed and not worse.champion_only
    assert not decide({"roc_auc": 0.93, "log_loss": 0.28}, MIN, "roc_auc").champion_only


def test_gate_respects_lower_is_better_primary_metrics() -> None:
    mins = {"log_loss": 0.5}
    assert decide({"log_loss": 0.30}, mins, "log_loss", {"log_loss": 0.31}).passed
    assert not decide({"log_loss": 0.33}, mins, "log_loss", {"log_loss": 0.31}).passed


# --- degenerate classifiers ------------------------------------------------------------------


def imbalanced_records(n: int, seed: int) -> pd.DataFrame:
    """Records of TINY_SIGNATURE with about 5 % positives ('yes'), weakly tied to ``x``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    logit = 0.8 * x - 3.2
    label = np.where(rng.uniform(size=n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    colour = rng.choice(["blue", "green", "red"], size=n)
    return pd.DataFrame({"x": x, "colour": colour, "y": rng.uniform(0, 10, n), "label": label})


def test_a_majority_class_model_is_flagged_and_stopped_by_the_gate() -> None:
    """5 % positives and a threshold maximising accuracy: the model predicts 'no' for every
    test row. Evaluation's figures (the same function on both engines' summed counts) flag
    it; the gate fails it naming the class and the setting, or warns with that setting."""
    from mlcycle.evaluation import score_frame, summarize, task_figures
    from mlcycle.features import encode_target, to_model_frame
    from mlcycle.models import fit
    from tests.conftest import TINY_SIGNATURE as SIG

    train, test = imbalanced_records(3000, 1), imbalanced_records(1000, 2)
    y = encode_target(train["label"], SIG)
    assert 0.03 < y.mean() < 0.07
    X = to_model_frame(train, SIG)
    options = {"seed": 0, "threads": 1, "device": "cpu", "class_weight": "none"}
    model = fit("logistic_regression", X, y, {"max_iter": 500}, BINARY, 2, **options).model
    p = model.output(X)[:, 1]
    threshold = choose_threshold(threshold_curve(y, p, "accuracy"), "accuracy")
    scored = score_frame(test, [("", model)], SIG, [])
    summary = summarize(scored, SIG, threshold, [])
    detail, _, _ = task_figures(SIG, summary, None, threshold, 10)
    spread = detail["prediction_spread"]
    positives = int((test["label"] == "yes").sum())
    assert spread["never_predicted"] == ["yes"] and spread["single_class"]
    assert spread["predicted"] == {"no": 1000, "yes": 0}
    assert spread["actual"] == {"no": 1000 - positives, "yes": positives}

    kpis = {"roc_auc": 0.75}  # the ranking KPI meets its bar: only the spread stops it
    failed = decide(kpis, {"roc_auc": 0.7}, "roc_auc", spread=spread)
    assert not failed.passed
    (reason,) = [r for r in failed.reasons if r.startswith("FAIL")]
    assert f"never predicts 'yes' ({positives} test rows)" in reason
    assert "predicts a single class" in reason and "'no' 1000" in reason
    assert "gate.degenerate: warn" in reason and "threshold.maximize" in reason
    warned = decide(kpis, {"roc_auc": 0.7}, "roc_auc", spread=spread, degenerate="warn")
    assert warned.passed
    assert [r for r in warned.reasons if r.startswith("WARN")] == [
        reason.replace("FAIL ", "WARN ", 1).replace(
            "set gate.degenerate: warn to let it pass with a warning",
            "gate.degenerate is warn, so it does not fail the gate",
        )
    ]
    # a model that predicts both classes passes this check
    both = summarize(scored, SIG, float(np.quantile(scored["probability"], 0.9)), [])
    fine = task_figures(SIG, both, None, 0.5, 10)[0]["prediction_spread"]
    assert fine["never_predicted"] == [] and decide(kpis, {}, "roc_auc", spread=fine).passed


def test_a_multiclass_model_that_never_predicts_a_class_is_flagged() -> None:
    from mlcycle.metrics import partial_sums, prediction_spread

    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 600)
    P = rng.dirichlet([2, 2, 1], 600)
    P[:, 2] = np.minimum(P[:, 2], P[:, :2].max(1) - 1e-6)  # class 'c' is never the top one
    P /= P.sum(1, keepdims=True)
    spread = prediction_spread(
        partial_sums("multiclass_classification", y, P, None, 3), ("a", "b", "c")
    )
    assert spread["never_predicted"] == ["c"] and not spread["single_class"]
    assert spread["predicted"]["c"] == 0 and spread["actual"]["c"] == int((y == 2).sum())
    d = decide({"accuracy": 0.5}, {}, "accuracy", spread=spread)
    assert not d.passed
    (reason,) = [r for r in d.reasons if r.startswith("FAIL")]
    assert "never predicts 'c'" in reason and "train.class_weight" in reason
    assert "threshold" not in reason


def test_the_gate_stage_reads_the_spread_and_the_setting(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate stage takes evaluate.json's prediction_spread and gate.degenerate: a rejection
    naming the class by default, a WARN reason and a pass with ``warn``."""
    import json

    import yaml

    from mlcycle.metrics import partial_sums, prediction_spread
    from mlcycle.stages import gate as stage
    from tests.conftest import ROOT

    y = np.r_[np.zeros(95, int), np.ones(5, int)]
    p = np.full(100, 0.1)  # below any threshold: 'no' for every row
    spread = prediction_spread(partial_sums(BINARY, y, np.c_[1 - p, p], 0.5, 2), ("no", "yes"))
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/evaluate.json").write_text(
        json.dumps({"roc_auc": 0.95, "accuracy": 0.95, "prediction_spread": spread})
    )
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["objectives"].update(minimum=0.5, minimums={})
    params["gate"]["compare_champion"] = False
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(stage.GateRejected, match="never predicts 'yes' \\(5 test rows\\)") as no:
        stage.main()
    assert "set gate.degenerate: warn" in str(no.value)
    params["gate"]["degenerate"] = "warn"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    stage.main()
    decision = json.loads((tmp_path / "metrics/gate.json").read_text())
    assert decision["passed"]
    assert [c["check"] for c in decision["checks"] if c.get("warning")] == ["predicted classes"]
