"""One model interface for every kind and task: shapes, class order, storage, refusals.

Each adapter is fitted for real on small synthetic data; nothing is mocked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from mlcycle import config
from mlcycle.bundle import BundleError, load_bundle, write_bundle
from mlcycle.features import Feature, Signature, encode_target, infer_signature, to_model_frame
from mlcycle.metrics import KPI_FUNCTIONS, bootstrap_interval, compute_kpis, slice_kpis
from mlcycle.models import (
    KINDS,
    ModelError,
    adapter,
    fit,
    load_model,
    load_model_dir,
    save_model_dir,
)
from mlcycle.predict import output_columns, score
from mlcycle.tasks import BINARY, KPI_NAMES, MODEL_TASKS, MULTICLASS, REGRESSION, TASKS
from mlcycle.tuning import FoldError, fit_options, make_folds, tune

CFG = config.TrainConfig(
    seed=0,
    nthread=1,
    validation_fraction=0.2,
    xgb={"n_estimators": 40, "early_stopping_rounds": 5, "learning_rate": 0.3},
    cv_folds=3,
)
SMALL = {
    "xgboost": CFG.xgb,
    "logistic_regression": {"C": 1.0},
    "random_forest": {"n_estimators": 15, "min_samples_leaf": 3},
    "ridge": {"alpha": 1.0},
}


def records(n: int, task: str, seed: int = 0) -> pd.DataFrame:
    """Rows whose target depends on ``x`` and ``colour``; some values missing."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    colour = rng.choice(["blue", "green", "red"], size=n)
    signal = 2.0 * x + np.where(colour == "red", 1.5, -0.5) + rng.normal(0, 0.5, n)
    if task == REGRESSION:
        target: np.ndarray = 10.0 + 3.0 * signal
    elif task == BINARY:
        target = np.where(signal > 0, "yes", "no")
    else:  # three classes, labels that sort numerically ("2" before "10")
        target = np.select([signal < -1, signal < 1], ["2", "10"], "30")
    df = pd.DataFrame({"x": x, "colour": colour, "z": rng.uniform(size=n), "label": target})
    df.loc[df.index % 17 == 0, "colour"] = None
    df.loc[df.index % 23 == 0, "x"] = np.nan
    return df


def signature_for(task: str) -> Signature:
    train = records(50, task)
    return infer_signature(train, "label", "yes" if task == BINARY else None, task=task)


@pytest.fixture(scope="module", params=TASKS)
def task_data(request: pytest.FixtureRequest) -> tuple[str, Signature, pd.DataFrame, np.ndarray]:
    task = request.param
    sig = signature_for(task)
    df = records(400, task, seed=1)
    return task, sig, to_model_frame(df, sig), encode_target(df["label"], sig)


def test_signature_classes_have_a_fixed_order() -> None:
    assert signature_for(BINARY).classes == ("no", "yes")  # column 1 is the positive class
    assert signature_for(MULTICLASS).classes == ("2", "10", "30")  # numeric order
    assert signature_for(REGRESSION).classes == ()
    sig = signature_for(MULTICLASS)
    assert Signature.from_dict(sig.to_dict()) == sig
    # A signature written before tasks existed reads as binary with its two classes.
    old = {
        "features": [{"name": "x", "kind": "numeric"}],
        "target": "label",
        "positive_class": "yes",
        "negative_class": "no",
    }
    read = Signature.from_dict(old)
    assert read.task == BINARY and read.classes == ("no", "yes")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_answers_the_tasks_shape(kind: str, task_data: tuple) -> None:
    task, sig, X, y = task_data
    if task not in MODEL_TASKS[kind]:
        with pytest.raises(ModelError, match=f"cannot learn {task}"):
            fit(kind, X, y, SMALL[kind], task, len(sig.classes), **fit_options(CFG))
        return
    model = fit(
        kind, X, y, SMALL[kind], task, len(sig.classes), rounds=20, **fit_options(CFG)
    ).model
    out = model.output(X)
    if task == REGRESSION:
        assert out.shape == (len(X),) and out.dtype == np.float64
        assert skm.r2_score(y, out) > 0.5
    else:
        assert out.shape == (len(X), len(sig.classes))
        np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-6)
        assert skm.accuracy_score(y, out.argmax(axis=1)) > 0.6
        assert np.array_equal(model.predict(X), out.argmax(axis=1))
    importance = model.importance(sig.columns)
    assert {r["feature"] for r in importance} == set(sig.columns)
    assert sum(r["gain"] for r in importance) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_model_files_round_trip_bit_for_bit(kind: str, task_data: tuple, tmp_path: Path) -> None:
    task, sig, X, y = task_data
    if task not in MODEL_TASKS[kind]:
        return
    model = fit(
        kind, X, y, SMALL[kind], task, len(sig.classes), rounds=20, **fit_options(CFG)
    ).model
    save_model_dir(tmp_path, model, {"params": SMALL[kind]})
    loaded, info = load_model_dir(tmp_path)
    assert info["task"] == task and info["kind"] == kind
    assert np.array_equal(loaded.output(X), model.output(X))
    again = fit(
        kind, X, y, SMALL[kind], task, len(sig.classes), rounds=20, **fit_options(CFG)
    ).model
    assert again.to_bytes() == model.to_bytes()  # same data, same params: same bytes


def test_a_model_loaded_for_the_wrong_task_is_refused(task_data: tuple) -> None:
    task, sig, X, y = task_data
    blob = fit(
        "xgboost", X, y, SMALL["xgboost"], task, len(sig.classes), rounds=5, **fit_options(CFG)
    )
    other = REGRESSION if task != REGRESSION else BINARY
    with pytest.raises(ModelError, match="objective"):
        load_model("xgboost", blob.model.to_bytes(), other)


def test_bundles_of_every_task_score_through_one_function(task_data, tmp_path: Path) -> None:
    task, sig, X, y = task_data
    model = fit(
        "xgboost", X, y, SMALL["xgboost"], task, len(sig.classes), rounds=20, **fit_options(CFG)
    ).model
    meta = {"threshold": 0.5 if task == BINARY else None, "task": task}
    path = write_bundle(tmp_path / "b", model.to_bytes(), sig, meta, "xgboost")
    bundle = load_bundle(path)
    new = records(30, task, seed=5)
    scores = score(bundle, new)
    cols = output_columns(scores, sig)
    if task == REGRESSION:
        assert list(cols) == ["prediction"] and scores.labels is None
    else:
        assert list(cols)[: len(sig.classes)] == [f"probability_{c}" for c in sig.classes]
        assert set(scores.labels) <= set(sig.classes)
        assert ("probability" in cols) == (task == BINARY)
    # A signature that disagrees with the metadata's task is refused.
    wrong = {**meta, "task": MULTICLASS if task != MULTICLASS else BINARY}
    path = write_bundle(tmp_path / "c", model.to_bytes(), sig, wrong, "xgboost")
    with pytest.raises(BundleError, match="task"):
        load_bundle(path)


def test_tuning_selects_by_the_tasks_metric(task_data) -> None:
    task, sig, X, y = task_data
    metric = {BINARY: "roc_auc", MULTICLASS: "log_loss", REGRESSION: "rmse"}[task]
    kinds = tuple(k for k in ("xgboost", "random_forest", "ridge") if task in MODEL_TASKS[k])
    cfg = CFG.model_copy(update={"candidates": kinds, "models": {k: SMALL[k] for k in kinds}})
    result = tune(X, y, cfg, metric, task=task, classes=sig.classes)
    means = {k: c.cv.mean for k, c in result.candidates.items()}
    best = (
        min(means, key=means.get) if metric in ("log_loss", "rmse") else max(means, key=means.get)
    )
    assert result.winner.name == best
    oof = result.winner.cv.oof
    assert oof.shape == ((len(y), len(sig.classes)) if sig.classes else (len(y),))
    assert not np.isnan(oof).any()


def test_folds_refuse_a_class_rarer_than_the_folds() -> None:
    y = np.array([0] * 20 + [1] * 20 + [2] * 2)
    three = config.TrainConfig(cv_folds=3)
    X = pd.DataFrame({"x": np.arange(len(y), dtype=float)})
    with pytest.raises(FoldError, match=r"\{'c': 2\}.*cv_folds=3"):
        make_folds(X, y, three, MULTICLASS, ("a", "b", "c"))
    folds = make_folds(X.head(30), np.arange(30, dtype=float), three, REGRESSION)
    assert sorted(np.concatenate([v for _, v in folds]).tolist()) == list(range(30))


def test_kpis_per_task_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    P = rng.dirichlet([1, 1, 1], 300)
    P[np.arange(300), y] += 0.5
    P /= P.sum(axis=1, keepdims=True)
    got = compute_kpis(MULTICLASS, y, P, None, KPI_NAMES[MULTICLASS])
    assert got["accuracy"] == round(skm.accuracy_score(y, P.argmax(1)), 6)
    assert got["f1_macro"] == round(skm.f1_score(y, P.argmax(1), average="macro"), 6)
    assert got["log_loss"] == round(skm.log_loss(y, P), 6)
    assert got["roc_auc_ovr"] == round(skm.roc_auc_score(y, P, multi_class="ovr"), 6)
    yr = rng.normal(size=200) + 5
    pr = yr + rng.normal(0, 0.3, 200)
    reg = compute_kpis(REGRESSION, yr, pr, None, KPI_NAMES[REGRESSION])
    assert reg["rmse"] == round(float(np.sqrt(skm.mean_squared_error(yr, pr))), 6)
    assert reg["r2"] == round(skm.r2_score(yr, pr), 6)
    assert reg["mape"] == round(skm.mean_absolute_percentage_error(yr, pr), 6)
    # MAPE is undefined with a true zero: reported as None, never as a huge number.
    assert compute_kpis(REGRESSION, np.array([0.0, 1.0]), np.array([0.1, 1.0]), None, ["mape"]) == {
        "mape": None
    }
    ci = bootstrap_interval(REGRESSION, yr, pr, None, "rmse", n_boot=200)
    assert ci["low"] < reg["rmse"] < ci["high"]
    slices = slice_kpis(REGRESSION, np.where(yr > 5, "hi", "lo"), yr, pr, None, ["rmse"], 10)
    assert {"target_mean", "rmse"} <= set(slices["hi"])


def test_the_kpi_names_settings_know_are_the_ones_computed() -> None:
    for task in TASKS:
        assert tuple(KPI_FUNCTIONS[task]) == KPI_NAMES[task]


def test_a_tiny_signature_still_builds_as_before() -> None:
    sig = Signature(
        features=(Feature("x", "numeric"),), target="t", positive_class="b", negative_class="a"
    )
    assert sig.task == BINARY and sig.classes == ("a", "b")


def test_adapters_declare_what_they_support() -> None:
    """Code above the adapters asks these instead of testing a kind's name."""
    xgb, lr, rf = adapter("xgboost"), adapter("logistic_regression"), adapter("random_forest")
    assert xgb.early_stopping and xgb.distributed
    assert not (lr.early_stopping or lr.distributed or rf.early_stopping or rf.distributed)
    # Fixed parameters: the kind's defaults, under train.models.<kind>, under its own section.
    assert rf.fixed_params({"random_forest": {"n_estimators": 10}}, {"xgb": {"eta": 1}}) == {
        "n_estimators": 10, "min_samples_leaf": 5, "max_features": "sqrt",
    }  # fmt: skip
    models = {"xgboost": {"max_depth": 3, "eta": 0.1}}
    assert xgb.fixed_params(models, {"xgb": {"max_depth": 4}}) == {"max_depth": 4, "eta": 0.1}
    sig, train = signature_for(BINARY), records(120, BINARY)
    X, y = to_model_frame(train, sig), encode_target(train["label"], sig)
    model = fit("logistic_regression", X, y, {}, BINARY, 2, **fit_options(CFG)).model
    with pytest.raises(ModelError, match="no XGBoost booster"):
        _ = model.booster
    with pytest.raises(NotImplementedError, match="does not early-stop"):
        lr.fit_early_stopped(X, y, {}, BINARY, 2, np.arange(2), np.arange(2), seed=0,
                             threads=1, device="cpu", class_weight="none")  # fmt: skip
    boosted = fit("xgboost", X, y, SMALL["xgboost"], BINARY, 2, rounds=5, **fit_options(CFG))
    assert boosted.model.booster is boosted.model.estimator
