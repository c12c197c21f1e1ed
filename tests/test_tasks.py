"""Every task type: first the :class:`mlcycle.tasks.Task` objects on their own (the decision
rule at its threshold, the scores, the metric directions, the target summary); then end to
end, a multiclass dataset that scikit-learn ships, set up with `mlcycle init` and params
edits only, run through real `dvc repro`, then served and batch-scored with identical outputs
(the regression one, scikit-learn's diabetes table, is the README's own-data path in
tests/test_readme_commands.py, with the same checks). And a wrong task for the target stops
the run with an error that names the column and what to change.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes, load_wine, make_classification

from mlcycle import config, tasks
from mlcycle.bundle import BundleError, load_bundle, write_bundle
from mlcycle.card import card_data, card_markdown
from mlcycle.evaluation import decision
from mlcycle.features import Feature, Signature, encode_target, to_model_frame
from mlcycle.io import write_parquet
from mlcycle.metrics import KPI_FUNCTIONS, fit_class_weights, kpi, prediction_frame
from mlcycle.models import fit
from mlcycle.predict import decide, score
from mlcycle.serve.core import Core, ServeSettings
from mlcycle.tasks import BINARY, DEFAULT_THRESHOLD, MULTICLASS, REGRESSION
from mlcycle.tuning import cross_validate, fit_options, make_folds
from tests.conftest import FAST_PARAMS, cli, git_commit, make_project, run, serving, set_params
from tests.test_serve import post_json, request, to_records

# --- the Task objects --------------------------------------------------------------------------

BINARY_OUT = np.array([[0.6, 0.4], [0.5, 0.5], [0.3, 0.7], [0.51, 0.49]])
MULTI_OUT = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3], [0.1, 0.2, 0.7]])


def test_binary_decides_the_positive_class_at_and_above_the_threshold() -> None:
    task = tasks.get(BINARY)
    assert DEFAULT_THRESHOLD == 0.5
    decided = task.decide(BINARY_OUT)  # the default threshold
    assert decided.tolist() == [0, 1, 1, 0] and decided.dtype == np.int64
    assert task.decide(BINARY_OUT, 0.49).tolist() == [0, 1, 1, 1]  # >=: 0.49 is positive
    assert task.decide(BINARY_OUT, 0.7).tolist() == [0, 0, 1, 0]
    # The positive class's probabilities alone decide the same.
    assert task.decide(BINARY_OUT[:, 1], 0.49).tolist() == [0, 1, 1, 1]


def test_multiclass_decides_by_weights_per_class_and_regression_nothing() -> None:
    """Without weights the most probable class; with them the class of the largest weighted
    probability; a threshold or weights that are not one per class are refused."""
    task = tasks.get(MULTICLASS)
    assert task.decide(MULTI_OUT).tolist() == [1, 0, 2]
    assert task.decide(MULTI_OUT, (1.0, 1.0, 1.0)).tolist() == [1, 0, 2]
    assert task.decide(MULTI_OUT, (1.0, 1.0, 2.0)).tolist() == [2, 0, 2]  # 0.6 > 0.5
    with pytest.raises(TypeError, match="a weight per class"):
        task.decide(MULTI_OUT, 0.5)
    with pytest.raises(ValueError, match="one weight per class"):
        task.decide(MULTI_OUT, (1.0, 2.0))
    assert tasks.get(REGRESSION).decide(np.array([1.5, 2.0])) is None
    assert tasks.as_decision([1, 2.5]) == (1.0, 2.5) and tasks.as_decision(0.4) == 0.4
    assert task.decision_problem((1.0, 2.0, 0.5), 3) is None
    assert task.decision_problem((1.0, 2.0), 3) and task.decision_problem(0.5, 3)
    assert tasks.get(BINARY).decision_problem((1.0, 2.0), 2)


def test_predict_decide_is_the_task_rule_with_class_names() -> None:
    sig = Signature(features=(), target="y", task=BINARY, classes=("no", "yes"))
    assert decide(BINARY_OUT, sig, 0.5) == ["no", "yes", "yes", "no"]
    assert decide(BINARY_OUT, sig, None) == decide(BINARY_OUT, sig, DEFAULT_THRESHOLD)
    multi = Signature(features=(), target="y", task=MULTICLASS, classes=("a", "b", "c"))
    assert decide(MULTI_OUT, multi, None) == ["b", "a", "c"]
    assert decide(MULTI_OUT, multi, (1.0, 1.0, 2.0)) == ["c", "a", "c"]
    assert decide(np.array([3.0]), Signature((), "y", task=REGRESSION), None) is None


def test_the_score_drift_and_plots_read() -> None:
    assert tasks.get(BINARY).score(BINARY_OUT).tolist() == [0.4, 0.5, 0.7, 0.49]
    assert tasks.get(MULTICLASS).score(MULTI_OUT).tolist() == [0.5, 0.6, 0.7]
    assert tasks.get(REGRESSION).score(np.array([[1.0], [2.0]])).tolist() == [1.0, 2.0]
    assert [tasks.get(t).score_name for t in tasks.TASKS] == ["score", "score", "value"]


def test_metric_directions_and_defaults() -> None:
    for metric in ("log_loss", "brier", "rmse", "mae", "mape", "median_ae", "residual_std"):
        assert tasks.lower_is_better(metric)
        assert tasks.better(metric, 1.0, 2.0) and tasks.meets(metric, 1.0, 1.0)
        assert not tasks.meets(metric, 1.1, 1.0)
    for metric in ("roc_auc", "accuracy", "f1_macro", "r2"):
        assert not tasks.lower_is_better(metric)
        assert tasks.better(metric, 2.0, 1.0) and not tasks.meets(metric, 0.9, 1.0)
    for name in tasks.TASKS:
        task = tasks.get(name)
        assert task.name == name and set(task.kpis) == set(KPI_FUNCTIONS[name])
        assert task.default_primary in task.kpis and set(task.default_kpis) <= set(task.kpis)
        assert all(name in tasks.MODEL_TASKS[k] for k in task.default_candidates)
    assert [tasks.get(t).classification for t in tasks.TASKS] == [True, True, False]
    assert [tasks.get(t).thresholded for t in tasks.TASKS] == [True, False, False]
    assert tasks.CLASSIFICATION == (BINARY, MULTICLASS)
    with pytest.raises(tasks.UnknownTaskError, match="unknown task 'ranking'"):
        tasks.get("ranking")


def test_target_summary_and_output_width() -> None:
    labels = pd.Series(["a", "b", "b", "c"])
    assert tasks.get(BINARY).target_summary(labels, "b") == {"positive_rate": 0.5}
    assert tasks.get(MULTICLASS).target_summary(labels) == {
        "class_share": {"a": 0.25, "b": 0.5, "c": 0.25}
    }
    summary = tasks.get(REGRESSION).target_summary(pd.Series([1.0, 2.0, 3.0]))
    assert summary == {"target_mean": 2.0, "target_std": 1.0}
    assert [tasks.get(t).output_width(3) for t in tasks.TASKS] == [3, 3, 0]


def test_prediction_columns_round_trip() -> None:
    classes = ("a", "b", "c")
    for name, out in ((BINARY, BINARY_OUT), (MULTICLASS, MULTI_OUT), (REGRESSION, np.ones(3))):
        task = tasks.get(name)
        k = classes[: out.shape[1]] if out.ndim == 2 else ()
        frame = pd.DataFrame(task.output_to_columns(out, k))
        assert list(frame.columns) == task.output_columns(k)
        back = task.output_from_columns(frame, k)
        if name == BINARY:  # stored as the positive class's probability
            np.testing.assert_array_equal(back[:, 1], out[:, 1])
            np.testing.assert_array_equal(back[:, 0], 1 - out[:, 1])
        else:
            np.testing.assert_array_equal(back, out)


def test_classes_each_task_accepts() -> None:
    binary = tasks.get(BINARY)
    assert binary.signature_classes((), "no", "yes") == (("no", "yes"), "no", "yes")
    assert binary.training_classes(["<=50K", ">50K"], "income", "<=50K") == (">50K", "<=50K")
    with pytest.raises(ValueError, match="exactly two classes including 'x'"):
        binary.training_classes(["a", "b"], "t", "x")
    with pytest.raises(ValueError, match="at least two classes"):
        tasks.get(MULTICLASS).signature_classes(("a",))
    with pytest.raises(ValueError, match="no classes"):
        tasks.get(REGRESSION).signature_classes(("a",))
    with pytest.raises(ValueError, match="positive_class 'x' never occurs"):
        binary.check_labels("t", ["a", "b"], "x", numeric=False, max_numeric_classes=50)
    with pytest.raises(ValueError, match="holds 60 distinct numbers"):
        numbers = [str(i) for i in range(60)]
        tasks.get(MULTICLASS).check_labels("t", numbers, None, True, 50)
    assert binary.confusion_summary([[3, 1], [2, 4]], ("n", "p")) == {
        "tn": 3, "fp": 1, "fn": 2, "tp": 4,
    }  # fmt: skip
    assert tasks.get(MULTICLASS).confusion_summary([[1, 0], [2, 3]], ("a", "b")) == {
        "a": {"a": 1, "b": 0}, "b": {"a": 2, "b": 3},
    }  # fmt: skip


# --- end to end ----------------------------------------------------------------------------------


# --- multiclass decisions fitted on out-of-fold predictions ------------------------------------

RARE_CLASSES = ("a", "b", "c", "rare")
RARE_SIGNATURE = Signature(
    tuple(Feature(f"f{i}", "numeric") for i in range(8)), "label", task=MULTICLASS,
    classes=RARE_CLASSES,
)  # fmt: skip
RARE_XGB = {"n_estimators": 200, "early_stopping_rounds": 20, "learning_rate": 0.1, "max_depth": 4}


def rare_class_frame(n: int, seed: int) -> pd.DataFrame:
    """Four overlapping classes from scikit-learn's generator, one of them 5 % of the rows:
    the most probable class is seldom the rare one."""
    X, y = make_classification(
        n_samples=n, n_features=8, n_informative=5, n_redundant=1, n_classes=4,
        weights=[0.45, 0.3, 0.2, 0.05], class_sep=1.0, flip_y=0.03, random_state=seed,
    )  # fmt: skip
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(8)])
    frame["label"] = np.asarray(RARE_CLASSES)[y]
    return frame


@pytest.fixture(scope="module")
def rare(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """XGBoost on 4,000 training rows of the rare-class set: the out-of-fold predictions of
    4-fold CV as the train stage writes them, the decision evaluation fits on that file, and
    the model refitted on every training row, packaged with that decision; 2,000 test rows."""
    frame = rare_class_frame(6000, 0)
    train, test = frame.iloc[:4000], frame.iloc[4000:].reset_index(drop=True)
    X, y = to_model_frame(train, RARE_SIGNATURE), encode_target(train["label"], RARE_SIGNATURE)
    cfg = config.TrainConfig(seed=0, nthread=1, cv_folds=4, parallel_folds=1, xgb=RARE_XGB)
    folds = make_folds(X, y, cfg, MULTICLASS, RARE_CLASSES)
    cv = cross_validate("xgboost", X, y, RARE_XGB, cfg, "f1_macro", folds, MULTICLASS, 4)
    root = tmp_path_factory.mktemp("rare")
    write_parquet(root / "oof.parquet", prediction_frame(cv.oof, y, MULTICLASS, RARE_CLASSES))
    obj = config.Objectives(task=MULTICLASS, target="label", primary_metric="f1_macro", minimum=0.0)
    chosen = decision(obj, RARE_SIGNATURE, str(root / "oof.parquet"))
    model = fit("xgboost", X, y, RARE_XGB, MULTICLASS, 4, rounds=cv.final_rounds,
                **fit_options(cfg)).model  # fmt: skip
    meta = {"name": "rare", "task": MULTICLASS, "classes": list(RARE_CLASSES),
            "decision": chosen[0], "decision_rule": chosen[1]}  # fmt: skip
    bundle = write_bundle(root / "bundle", model.to_bytes(), RARE_SIGNATURE, meta)
    return {"y": y, "oof": cv.oof, "chosen": chosen, "bundle": bundle, "test": test,
            "root": root, "model": model}  # fmt: skip


def test_weights_fitted_out_of_fold_beat_argmax_on_a_rare_class(rare: dict) -> None:
    """The weights evaluation fits on the out-of-fold predictions (to f1_macro, the primary
    metric) raise macro F1 out of fold and on the unseen test rows, by predicting the rare
    class more often; the rule says so with both figures."""
    weights, rule, curve = rare["chosen"]
    assert isinstance(weights, tuple) and len(weights) == 4 and curve == []
    assert "out-of-fold f1_macro" in rule and "weights per class (a: " in rule, rule
    y, oof = rare["y"], rare["oof"]
    oof_argmax, oof_weighted = (kpi(MULTICLASS, "f1_macro", y, oof, d) for d in (None, weights))
    test = rare["test"]
    P = rare["model"].output(to_model_frame(test, RARE_SIGNATURE))
    y_test = encode_target(test["label"], RARE_SIGNATURE)
    test_argmax, test_weighted = (
        kpi(MULTICLASS, "f1_macro", y_test, P, d) for d in (None, weights)
    )
    print(f"f1_macro out of fold {oof_argmax:.4f} -> {oof_weighted:.4f}, "
          f"test {test_argmax:.4f} -> {test_weighted:.4f}, weights {weights}")  # fmt: skip
    assert oof_weighted > oof_argmax + 0.01
    assert test_weighted > test_argmax
    rare_code = RARE_CLASSES.index("rare")
    decided = tasks.get(MULTICLASS).decide(P, weights)
    assert (decided == rare_code).sum() > (P.argmax(1) == rare_code).sum()


def test_argmax_stays_for_the_metrics_it_serves_and_for_gains_within_noise(rare: dict) -> None:
    """Accuracy, log loss and ROC AUC keep argmax (weights all 1); a gain that resampling
    cannot tell from noise (probabilities that know nothing of the labels) keeps it too."""
    y, oof = rare["y"], rare["oof"]
    for metric in ("accuracy", "log_loss", "roc_auc_ovr"):
        fitted = fit_class_weights(y, oof, metric)
        assert fitted.weights is None and fitted.weighted == fitted.argmax, metric
    noise = np.random.default_rng(0).dirichlet(np.ones(4), 300)
    labels = np.random.default_rng(1).integers(0, 4, 300)
    fitted = fit_class_weights(labels, noise, "f1_macro")
    assert fitted.weights is None and fitted.wins < 0.95, fitted


def test_the_bundle_keeps_the_decision_and_predict_and_the_service_apply_it(rare: dict) -> None:
    """The bundle round-trips the weights; `predict.score` (batch scoring, `mlcycle predict`)
    and the service's scoring core give the same labels, decided by them, not by argmax; the
    model card states the rule."""
    bundle = load_bundle(rare["bundle"])
    weights = rare["chosen"][0]
    assert bundle.decision == weights
    test = rare["test"]
    scores = score(bundle, test)
    assert scores.labels == decide(scores.output, RARE_SIGNATURE, weights)
    assert scores.labels != decide(scores.output, RARE_SIGNATURE, None)
    core = Core(bundle, ServeSettings(bundle_dir=str(rare["bundle"])), None)
    records = test.drop(columns="label").to_dict(orient="records")
    model, output, labels, _ = core.score(records, "rare-1")
    np.testing.assert_array_equal(output, scores.output)
    assert labels == scores.labels
    assert model.info.decision == list(weights)
    card = card_data(bundle.metadata)
    assert card["decision"].startswith("weights per class a: ") and "rare: " in card["decision"]
    assert f"labels decided by {card['decision']} (weights per class" in card_markdown(card)


def test_an_old_bundle_without_a_decision_decides_by_argmax(rare: dict) -> None:
    """A multiclass bundle packaged before decisions (no ``decision`` key) loads and decides
    by argmax; a decision that does not fit the classes is refused naming it."""
    meta = {"name": "rare", "task": MULTICLASS, "threshold": None}
    old = write_bundle(rare["root"] / "old", rare["model"].to_bytes(), RARE_SIGNATURE, meta)
    bundle = load_bundle(old)
    assert bundle.decision is None
    scores = score(bundle, rare["test"])
    assert scores.labels == list(np.asarray(RARE_CLASSES)[scores.output.argmax(1)])
    assert card_data(bundle.metadata)["decision"] == "the most probable class"
    wrong = write_bundle(rare["root"] / "wrong", rare["model"].to_bytes(), RARE_SIGNATURE,
                         {"decision": [1.0, 2.0]})  # fmt: skip
    with pytest.raises(BundleError, match=r"metadata.json's decision \(1.0, 2.0\) is not a"):
        load_bundle(wrong)


def wine_frame() -> pd.DataFrame:
    """UCI wine (178 rows, 13 measurements) with the cultivar as a named class."""
    data = load_wine(as_frame=True)
    frame = data.frame.drop(columns="target")
    frame["cultivar"] = np.asarray(data.target_names)[data.target]
    return frame


def diabetes_frame() -> pd.DataFrame:
    """The diabetes progression data (442 rows, 10 features, a numeric target)."""
    frame = load_diabetes(as_frame=True).frame
    return frame.rename(columns={"target": "progression"})


def init_project(tmp_path: Path, frame: pd.DataFrame, target: str) -> Path:
    """A fresh project whose own data is ``frame``: `mlcycle init`, then the fast training
    settings of the test suite (a params edit, as a user's would be)."""
    project = make_project(tmp_path / "project")
    data = tmp_path / "mydata.csv"
    frame.to_csv(data, index=False)
    before = data.read_bytes()
    cli(project, "init", "--data", str(data), "--target", target, "--force")
    assert data.read_bytes() == before  # the user's file is copied, never changed
    set_params(project, {"train": FAST_PARAMS["train"]})
    return project


def build_and_score(project: Path, tmp_path: Path, target: str) -> dict:
    """`dvc repro`, then :func:`score_everywhere`."""
    run(["dvc", "repro"], project)
    git_commit(project, "my data")
    return score_everywhere(project, tmp_path, target)


def score_everywhere(project: Path, tmp_path: Path, target: str) -> dict:
    """The same test rows of a built ``project`` through evaluation, `mlcycle predict` and the
    service; returns what each produced."""
    test = pd.read_parquet(project / "data/prepared/test.parquet")
    evaluated = pd.read_parquet(project / "data/evaluate/test_predictions.parquet")
    records = test.drop(columns=target)
    records.to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "scored.csv"
    cli(project, "predict", str(tmp_path / "new.csv"), str(out), "--bundle", "models/bundle")
    # One worker: a second would import and load everything again (the task is the point).
    with serving(project, "--bundle", str(project / "models/bundle"), "--workers", "1") as served:
        url = served.url
        health = request(f"{url}/health").json()
        resp = post_json(f"{url}/predict", {"records": to_records(records)})
        assert resp.status == 200, resp.body
        served = resp.json()
        bad = post_json(f"{url}/predict", {"records": [{target: 1}]})
    return {
        "test": test,
        "evaluated": evaluated,
        "batch": pd.read_csv(out),
        "served": served,
        "health": health,
        "bad": bad,
        "metrics": json.loads((project / "metrics/evaluate.json").read_text()),
        "signature": json.loads((project / "models/bundle/signature.json").read_text()),
    }


@pytest.mark.dvc
@pytest.mark.server
def test_multiclass_wine_from_init_to_service(tmp_path: Path) -> None:
    frame = wine_frame()
    project = init_project(tmp_path, frame, "cultivar")
    params = (project / "params.yaml").read_text()
    assert "task: multiclass_classification" in params and "positive_class: null" in params
    got = build_and_score(project, tmp_path, "cultivar")

    sig, metrics = got["signature"], got["metrics"]
    classes = ["class_0", "class_1", "class_2"]
    assert sig["task"] == "multiclass_classification" and sig["classes"] == classes
    assert metrics["task"] == "multiclass_classification"
    for name in ("f1_macro", "accuracy", "balanced_accuracy", "f1_weighted", "log_loss"):
        assert metrics[name] is not None
    assert metrics["f1_macro"] > 0.85  # three well-separated cultivars
    assert set(metrics["per_class"]) == set(classes)
    counts = metrics["confusion"]
    assert sum(sum(row.values()) for row in counts.values()) == len(got["test"])
    assert metrics["objective"]["met"] is True

    # Evaluation, batch prediction and the service give the very same probabilities.
    evaluated = got["evaluated"][[f"probability_{c}" for c in classes]].to_numpy()
    batch = got["batch"][[f"probability_{c}" for c in classes]].to_numpy()
    served = np.array(
        [[p["probabilities"][c] for c in classes] for p in got["served"]["predictions"]]
    )
    np.testing.assert_allclose(batch, evaluated, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(served, evaluated)
    np.testing.assert_allclose(served.sum(axis=1), 1.0, atol=1e-6)
    # Labels by the decision evaluation fitted (weights per class, or argmax: null).
    weights = tasks.as_decision(metrics["decision"])
    labels = np.asarray(classes)[tasks.get(MULTICLASS).decide(evaluated, weights)]
    assert list(got["batch"]["prediction"]) == list(labels)
    assert [p["label"] for p in got["served"]["predictions"]] == list(labels)
    assert "value" not in got["served"]["predictions"][0]
    assert got["health"]["model"]["task"] == "multiclass_classification"
    assert got["bad"].status == 422  # request validation unchanged: the target is no input

    # Every plot in dvc.yaml renders for a multiclass project.
    shown = run(["dvc", "plots", "show", "--json"], project)
    assert "failed" not in shown.stderr.lower(), shown.stderr
    doc = json.loads(shown.stdout)
    assert "errors" not in doc, doc.get("errors")
    (roc,) = [k for k in doc["data"] if k.startswith("ROC")]
    rows = doc["data"][roc][0]["content"]["data"]["values"]
    assert {r["class"] for r in rows} == set(classes)  # one curve per class
    (conf,) = [k for k in doc["data"] if k.startswith("Confusion")]
    assert len(doc["data"][conf][0]["content"]["data"]["values"]) == len(got["test"])


# --- a wrong task for the target stops the run, naming the column -----------------------------


def _repro_error(project: Path) -> str:
    proc = run(["dvc", "repro"], project, check=False)
    assert proc.returncode != 0
    return proc.stderr + proc.stdout


@pytest.mark.dvc
def test_regression_on_a_text_target_names_the_column(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    set_params(
        project,
        {
            "objectives": {
                "task": "regression",
                "positive_class": None,
                "primary_metric": "rmse",
                "kpis": ["rmse", "mae"],
                "minimums": None,
                "threshold": None,
                "slices": [],
                "minimum": 1.0,
            },
            "train": {"candidates": ["xgboost"], "baseline": None},
        },
    )
    message = _repro_error(project)
    assert "target 'income' is not numeric" in message
    assert "multiclass_classification" in message  # what to change


@pytest.mark.dvc
def test_a_class_seen_only_in_test_names_it(tmp_path: Path) -> None:
    frame = wine_frame()
    project = init_project(tmp_path, frame, "cultivar")
    # A by-source split whose test file holds a cultivar training never has.
    train, test = frame[frame.cultivar != "class_2"], frame
    train.to_csv(project / "data/external/a.csv", index=False)
    test.to_csv(project / "data/external/b.csv", index=False)
    set_params(
        project,
        {
            "data": {
                "sources": [
                    {"name": "a", "kind": "file", "path": "data/external/a.csv"},
                    {"name": "b", "kind": "file", "path": "data/external/b.csv"},
                ]
            },
            "prepare": {"split": {"method": "by_source", "train_sources": ["a"],
                                  "test_sources": ["b"]}},
        },
    )  # fmt: skip
    message = _repro_error(project)
    assert "class(es) ['class_2'] occur only in the test split" in message


@pytest.mark.dvc
def test_multiclass_with_one_class_is_refused(tmp_path: Path) -> None:
    frame = wine_frame()
    project = init_project(tmp_path, frame, "cultivar")
    frame.assign(cultivar="class_0").to_csv(project / "data/external/mydata.csv", index=False)
    message = _repro_error(project)
    assert "target 'cultivar' has a single class" in message
