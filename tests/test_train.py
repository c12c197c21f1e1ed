"""Training: candidates, cross-validated tuning and selection, safe model files.

Unit tests use small synthetic data; stage tests run `python -m mlcycle.stages.train` on the
real Adult training split with tiny budgets. A sweep with real `dvc exp run --queue` is
tests/test_readme_commands.py's: the README's own sweep.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import yaml
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from mlcycle import config
from mlcycle.adapters.sklearn_models import (
    TRUSTED_TYPES,
    SklearnModel,
    canonical_skops,
    check_skops_types,
)
from mlcycle.adapters.xgboost_model import booster_params
from mlcycle.bundle import BundleError, load_bundle, write_bundle
from mlcycle.features import encode_target, to_model_frame
from mlcycle.models import (
    ModelError,
    UntrustedTypesError,
    adapter,
    fit,
    load_model,
    load_model_dir,
    model_files,
    save_model_dir,
)
from mlcycle.tasks import BINARY
from mlcycle.tuning import (
    CLASS_WEIGHT,
    CandidateResult,
    CVResult,
    TuningResult,
    assign_folds,
    class_weight_search,
    cross_validate,
    fit_fold,
    fit_options,
    make_folds,
    model_params,
    row_keys,
    summary,
    trials_csv,
    tune,
)
from tests.conftest import FAST_PARAMS, ROOT, merge, project_env, run, set_params, synthetic_records
from tests.conftest import TINY_SIGNATURE as SIGNATURE

MODEL_FILES = model_files()
SKOPS_FILE = MODEL_FILES["logistic_regression"]


def xgb_options(cfg: config.TrainConfig) -> dict:
    """:func:`booster_params`' keyword arguments from the training settings."""
    return fit_options(cfg)


def sklearn_pipeline(kind: str, params: dict, X, cfg) -> Pipeline:  # noqa: ANN001
    """The unfitted Pipeline a scikit-learn kind builds for binary classification."""
    cls = adapter(kind)
    assert issubclass(cls, SklearnModel)
    return cls.pipeline(
        params, X, BINARY, seed=cfg.seed, threads=cfg.nthread, class_weight=cfg.class_weight
    )


KINDS = ("xgboost", "logistic_regression", "random_forest")
SMALL = {
    "xgboost": {"n_estimators": 40, "early_stopping_rounds": 5, "learning_rate": 0.3},
    "logistic_regression": {"C": 1.0},
    "random_forest": {"n_estimators": 15, "min_samples_leaf": 3},
}
# Tiny budgets for the train stage on the Adult training split: two trials per candidate (in
# the spaces of params.yaml, merged with these).
TUNED = merge(
    FAST_PARAMS,
    {
        "train": {
            "tuning": {
                "trials": 2,
                "trials_by_candidate": {"logistic_regression": 2, "random_forest": 2},
            },
            "models": {"random_forest": {"n_estimators": 10}},
            "search": {
                "xgboost": {"max_depth": {"low": 2, "high": 6}},
                "logistic_regression": {"C": {"low": 0.1, "high": 10.0, "log": True}},
                "random_forest": {"min_samples_leaf": {"low": 2, "high": 20}},
            },
        }
    },
)
MARKER_ENV = "MLCYCLE_TEST_TRIPWIRE"


def train_config(**changes) -> config.TrainConfig:
    """Small train settings: one candidate, folds one at a time, no pruning nor patience, unless
    ``changes`` (keys of train or of train.tuning) say otherwise."""
    tuning = {"pruner": "none", "patience": 0}
    tuning |= {k: changes.pop(k) for k in list(changes) if k in config.Tuning.model_fields}
    return config.TrainConfig(
        **{"seed": 0, "nthread": 1, "validation_fraction": 0.2, "xgb": SMALL["xgboost"],
           "cv_folds": 2, "candidates": ("xgboost",), "parallel_folds": 1, "tuning": tuning,
           **changes}
    )  # fmt: skip


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    records = synthetic_records(600, seed=1)
    return to_model_frame(records, SIGNATURE), encode_target(records["label"], SIGNATURE)


@pytest.fixture(scope="module")
def new_records() -> pd.DataFrame:
    """Unseen records, including missing values and a category never seen in training."""
    records = synthetic_records(200, seed=2)
    records.loc[[3, 5], "colour"] = "purple"
    return records


# --- candidates: fit, save, load through the bundle, predict the same ------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_each_candidate_fits_and_loads_through_the_bundle_predicting_the_same(
    kind: str, data: tuple, new_records: pd.DataFrame, tmp_path: Path
) -> None:
    X, y = data
    model = fit(kind, X, y, SMALL[kind], rounds=20, **fit_options(train_config())).model
    assert model.kind == kind
    expected = model.predict_proba(to_model_frame(new_records, SIGNATURE))
    assert expected.dtype == np.float64
    assert np.all((expected >= 0) & (expected <= 1))
    assert len(np.unique(expected)) > 10  # a real model, not a constant

    path = write_bundle(tmp_path / "bundle", model.to_bytes(), SIGNATURE, {"threshold": 0.5}, kind)
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [MODEL_FILES[kind], "signature.json", "metadata.json", "SHA256SUMS"]
    )
    bundle = load_bundle(path)
    assert bundle.kind == kind
    assert bundle.metadata["model_kind"] == kind
    got = bundle.model.predict_proba(to_model_frame(new_records, bundle.signature))
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_fit_gives_the_same_model_bytes(kind: str, data: tuple) -> None:
    """skops names its array files after memory addresses; ours are renumbered."""
    X, y = data
    first = fit(kind, X, y, SMALL[kind], rounds=20, **fit_options(train_config())).model.to_bytes()
    second = fit(kind, X, y, SMALL[kind], rounds=20, **fit_options(train_config())).model.to_bytes()
    assert first == second


@pytest.mark.parametrize("kind", KINDS)
def test_model_dir_round_trip(kind: str, data: tuple, tmp_path: Path) -> None:
    X, y = data
    model = fit(kind, X, y, SMALL[kind], rounds=20, **fit_options(train_config())).model
    other = "logistic_regression" if kind == "xgboost" else "xgboost"
    save_model_dir(
        tmp_path, fit(other, X, y, SMALL[other], rounds=5, **fit_options(train_config())).model, {}
    )
    save_model_dir(tmp_path, model, {"params": SMALL[kind]})
    # Exactly one model file: the other format's, saved before, is gone.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([MODEL_FILES[kind], "model.json"])
    loaded, info = load_model_dir(tmp_path)
    assert info["kind"] == kind and info["params"] == SMALL[kind]
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_sklearn_preprocessing_lives_inside_the_pipeline(data: tuple) -> None:
    X, _ = data
    lr = sklearn_pipeline("logistic_regression", {}, X, train_config())
    rf = sklearn_pipeline("random_forest", {}, X, train_config())
    lr_steps = lr.named_steps["prep"].transformers
    assert [name for name, _, _ in lr_steps] == ["num", "cat"]
    assert [type(s).__name__ for _, s in lr_steps[0][1].steps] == [
        "SimpleImputer",
        "StandardScaler",
    ]
    assert type(lr_steps[1][1]).__name__ == "OneHotEncoder"
    rf_steps = rf.named_steps["prep"].transformers
    assert [type(s).__name__ for _, s, _ in rf_steps] == ["SimpleImputer", "OrdinalEncoder"]
    assert lr_steps[1][2] == rf_steps[1][2] == ["colour"]


def test_unknown_sklearn_parameter_is_named(data: tuple) -> None:
    X, _ = data
    with pytest.raises(ModelError, match=r"unknown parameter\(s\) \['max_deph'\]"):
        sklearn_pipeline("random_forest", {"max_deph": 3}, X, train_config())


# --- class imbalance and hardware -------------------------------------------------------------


def test_balanced_class_weight(data: tuple) -> None:
    X, y = data
    cfg = train_config(class_weight="balanced", nthread=3)
    negatives, positives = int((y == 0).sum()), int((y == 1).sum())
    native = booster_params(SMALL["xgboost"], y, BINARY, **xgb_options(cfg))
    assert native["scale_pos_weight"] == pytest.approx(negatives / positives)
    assert native["nthread"] == 3 and native["device"] == "cpu"
    plain = booster_params(SMALL["xgboost"], y, BINARY, **xgb_options(train_config()))
    assert "scale_pos_weight" not in plain
    for kind in ("logistic_regression", "random_forest"):
        est = sklearn_pipeline(kind, {}, X, cfg)[-1]
        assert est.class_weight == "balanced"
    assert sklearn_pipeline("random_forest", {}, X, cfg)[-1].n_jobs == 3
    # The forest is grown on 3 threads but predicts on one, adding votes in a fixed order.
    assert (
        fit("random_forest", X, X.index.to_numpy() % 2, {}, **fit_options(cfg))
        .model.estimator[-1]
        .n_jobs
        == 1
    )
    assert sklearn_pipeline("logistic_regression", {}, X, train_config())[-1].class_weight is None


# --- skops: untrusted types are refused without running anything ---------------------------


class Tripwire:
    """Leaves a file behind when skops rebuilds it, so a test can tell whether it was built."""

    def __init__(self) -> None:
        self.armed = True

    def __setstate__(self, state: dict) -> None:
        Path(os.environ[MARKER_ENV]).write_text("skops built the object")


def _tripwire_model(data: tuple) -> Pipeline:
    X, y = data
    pipeline = fit("logistic_regression", X, y, {}, **fit_options(train_config())).model.estimator
    pipeline.named_steps["model"].tripwire = Tripwire()
    return pipeline


def test_skops_with_a_custom_class_is_refused_and_nothing_runs(
    data: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "tripwire"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    blob = canonical_skops(sio.dumps(_tripwire_model(data)))

    # Control: trusting the type, skops really runs the class's code while loading.
    sio.loads(blob, trusted=[*TRUSTED_TYPES, f"{__name__}.Tripwire"])
    assert marker.exists()
    marker.unlink()

    path = write_bundle(tmp_path / "bundle", blob, SIGNATURE, {"threshold": 0.5}, "random_forest")
    with pytest.raises(BundleError, match=rf"model.skops refused.*\['{__name__}.Tripwire'\]"):
        load_bundle(path)
    with pytest.raises(UntrustedTypesError) as info:
        load_model("logistic_regression", blob)
    assert info.value.types == [f"{__name__}.Tripwire"]
    assert not marker.exists()


def test_skops_with_os_system_is_refused(data: tuple, tmp_path: Path) -> None:
    X, y = data
    evil = Pipeline([("f", FunctionTransformer(func=os.system)), ("model", _tripwire_model(data))])
    blob = sio.dumps(evil)
    assert f"{os.system.__module__}.system" in sio.get_untrusted_types(data=blob)
    path = write_bundle(tmp_path / "b", blob, SIGNATURE, {"threshold": 0.5}, "logistic_regression")
    with pytest.raises(BundleError, match=rf"untrusted type\(s\).*'{os.system.__module__}.system'"):
        load_bundle(path)


def test_checksums_are_verified_before_the_skops_types(data: tuple, tmp_path: Path) -> None:
    blob = canonical_skops(sio.dumps(_tripwire_model(data)))
    path = write_bundle(tmp_path / "b", blob, SIGNATURE, {"threshold": 0.5}, "logistic_regression")
    model = path / SKOPS_FILE
    model.write_bytes(model.read_bytes()[:-1] + bytes([model.read_bytes()[-1] ^ 1]))
    with pytest.raises(BundleError, match="model.skops does not match its checksum"):
        load_bundle(path)


def test_a_malformed_skops_file_is_refused(tmp_path: Path) -> None:
    path = write_bundle(
        tmp_path / "b", b"PK\x03\x04 not a zip", SIGNATURE, {"threshold": 0.5}, "random_forest"
    )
    with pytest.raises(BundleError, match="model.skops is not a valid model"):
        load_bundle(path)
    with pytest.raises(ModelError, match="not a valid skops file"):
        check_skops_types(b"junk")


def test_a_skops_model_of_the_wrong_kind_is_refused(data: tuple, tmp_path: Path) -> None:
    X, y = data
    blob = fit("logistic_regression", X, y, {}, **fit_options(train_config())).model.to_bytes()
    path = write_bundle(tmp_path / "b", blob, SIGNATURE, {"threshold": 0.5}, "random_forest")
    with pytest.raises(BundleError, match="not a Pipeline ending in RandomForestClassifier"):
        load_bundle(path)


def test_metadata_kind_must_match_the_model_file(data: tuple, tmp_path: Path) -> None:
    X, y = data
    blob = fit(
        "xgboost", X, y, SMALL["xgboost"], rounds=5, **fit_options(train_config())
    ).model.to_bytes()
    path = write_bundle(tmp_path / "b", blob, SIGNATURE, {"threshold": 0.5}, "xgboost")
    meta = json.loads((path / "metadata.json").read_text())
    meta["model_kind"] = "random_forest"
    (path / "metadata.json").write_text(json.dumps(meta))
    sums = "".join(
        f"{hashlib.sha256((path / n).read_bytes()).hexdigest()}  {n}\n"
        for n in sorted(["metadata.json", "model.ubj", "signature.json"])
    )
    (path / "SHA256SUMS").write_text(sums)
    with pytest.raises(BundleError, match="model_kind 'random_forest', which needs model.skops"):
        load_bundle(path)


def test_a_bundle_with_two_model_files_is_refused(data: tuple, tmp_path: Path) -> None:
    X, y = data
    blob = fit(
        "xgboost", X, y, SMALL["xgboost"], rounds=5, **fit_options(train_config())
    ).model.to_bytes()
    path = write_bundle(tmp_path / "b", blob, SIGNATURE, {"threshold": 0.5}, "xgboost")
    (path / SKOPS_FILE).write_bytes(b"second model")
    names = sorted(["metadata.json", "model.ubj", "model.skops", "signature.json"])
    (path / "SHA256SUMS").write_text(
        "".join(f"{hashlib.sha256((path / n).read_bytes()).hexdigest()}  {n}\n" for n in names)
    )
    with pytest.raises(BundleError, match="exactly one model file"):
        load_bundle(path)


# --- cross-validation, tuning and selection --------------------------------------------------


def test_xgboost_cv_rounds_are_the_mean_of_the_folds_best(data: tuple) -> None:
    X, y = data
    cfg = train_config(cv_folds=3)
    cv = cross_validate("xgboost", X, y, cfg.xgb, cfg, "roc_auc", make_folds(X, y, cfg, BINARY))
    assert len(cv.scores) == len(cv.rounds) == 3
    assert cv.final_rounds == round(sum(cv.rounds) / 3)
    assert all(r <= cfg.xgb["n_estimators"] for r in cv.rounds)
    assert not np.isnan(cv.oof).any()  # every row held out exactly once
    assert cv.mean == pytest.approx(np.mean(cv.scores))
    final = fit("xgboost", X, y, cfg.xgb, rounds=cv.final_rounds, **fit_options(cfg))
    assert final.model.estimator.num_boosted_rounds() == cv.final_rounds
    assert len(final.curves["train"]["logloss"]) == cv.final_rounds
    assert final.curves["train"]["loss"] == final.curves["train"]["logloss"]


def test_folds_are_dealt_by_class_and_hash_whatever_the_row_order(data: tuple) -> None:
    """Every fold holds each class's rows to within one and all rows to within one; a row's
    fold, and its fold's rows and their order, follow its values, not its position; the seed
    keys them; identical rows are interchangeable."""
    X, y = data
    X = pd.concat([X, X.head(7)], ignore_index=True)  # identical rows share a hash
    y = np.concatenate([y, y[:7]])
    cfg = train_config(cv_folds=4)
    folds = make_folds(X, y, cfg, BINARY, ("no", "yes"))
    by_class = np.array([np.bincount(y[held], minlength=2) for _, held in folds])
    assert (by_class.max(axis=0) - by_class.min(axis=0) <= 1).all()
    sizes = by_class.sum(axis=1)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == len(y)
    for (train, held), inner in zip(folds, folds.inner, strict=True):
        assert not set(train) & set(held) and len(train) + len(held) == len(y)
        assert 0 < len(inner) < len(train)

    order = np.random.default_rng(1).permutation(len(y))
    again = make_folds(X.iloc[order].reset_index(drop=True), y[order], cfg, BINARY, ("no", "yes"))
    h = row_keys(X, y, cfg.seed)
    for (tr, held), (tr2, held2) in zip(folds, again, strict=True):
        assert h[held].tolist() == h[order][held2].tolist()  # the same rows, in the same order
        assert h[tr].tolist() == h[order][tr2].tolist()
    assert all(
        np.array_equal(a, b) for a, b in zip(folds.inner, again.inner, strict=True)
    )  # the inner slices are the same rows too (positions within a fold's training part)
    other = make_folds(X, y, train_config(cv_folds=4, seed=1), BINARY, ("no", "yes"))
    assert not np.array_equal(folds[0][1], other[0][1])

    # The dealing itself: (stratum, hash) order, in turn; per stratum within one.
    strata = np.array([0] * 10 + [1] * 7 + [2] * 3)
    fold = assign_folds(np.arange(20, dtype=np.uint64)[::-1].copy(), strata, 3)
    assert fold.tolist() == [0, 2, 1, 0, 2, 1, 0, 2, 1, 0] + [1, 0, 2, 1, 0, 2, 1] + [1, 0, 2]


def test_trials_zero_cross_validates_the_fixed_params_once(data: tuple) -> None:
    X, y = data
    cfg = train_config(
        candidates=("xgboost", "logistic_regression"),
        models={"logistic_regression": {"C": 0.5}},
        search={"xgboost": {"max_depth": {"low": 2, "high": 4}}},
    )
    result = tune(X, y, cfg, "roc_auc")
    assert [(r.candidate, r.trial) for r in result.records] == [
        ("xgboost", 0),
        ("logistic_regression", 0),
    ]
    assert result.candidates["xgboost"].params == SMALL["xgboost"]
    assert result.candidates["logistic_regression"].params["C"] == 0.5


def test_an_imbalanced_split_searches_class_weights_and_trial_0_stays_untuned(
    data: tuple,
) -> None:
    """With one positive in eight, every candidate with a space also tries train.class_weight
    none and balanced; trial 0 keeps params.yaml's setting and the score it has without the
    search; a balanced trial weighs the classes (another model). A balanced split, a
    regression task and a candidate without a space are searched as before."""
    X, y = data
    rare = np.flatnonzero(y == 1)[::8]  # every eighth positive: one row in eight left
    keep = np.sort(np.concatenate([np.flatnonzero(y == 0), rare]))
    X, y = X.iloc[keep].reset_index(drop=True), y[keep]
    space = {"max_depth": {"low": 2, "high": 4}}
    cfg = train_config(trials=6, search={"xgboost": space, "logistic_regression": {}})
    assert np.bincount(y)[1] < 0.25 * np.bincount(y)[0]
    searched = class_weight_search(cfg, BINARY, np.bincount(y))
    assert searched.search["xgboost"] == {**space, CLASS_WEIGHT: {"choices": ["none", "balanced"]}}
    assert searched.search["logistic_regression"] == {}  # no space: no search
    assert class_weight_search(cfg, BINARY, [300, 280]) is cfg
    assert class_weight_search(cfg, "regression", []) is cfg

    result = tune(X, y, cfg, "roc_auc", classes=("no", "yes"))
    first, *trials = result.records
    assert first.params == {**SMALL["xgboost"], CLASS_WEIGHT: "none"}
    folds = make_folds(X, y, cfg, BINARY, ("no", "yes"))
    untuned = cross_validate("xgboost", X, y, SMALL["xgboost"], cfg, "roc_auc", folds)
    assert first.cv_mean == untuned.mean
    assert {t.params[CLASS_WEIGHT] for t in trials} == {"none", "balanced"}
    balanced = {**SMALL["xgboost"], CLASS_WEIGHT: "balanced"}
    assert fit_options(cfg, params=balanced)["class_weight"] == "balanced"
    assert model_params(balanced) == SMALL["xgboost"]
    plain, weighed = (fit_fold("xgboost", X, y, p, cfg, "roc_auc", folds, 0)
                      for p in (first.params, balanced))  # fmt: skip
    assert plain.output[:, 1].mean() < weighed.output[:, 1].mean()  # positives weigh more


def test_tuning_records_every_trial_and_keeps_the_best(data: tuple) -> None:
    X, y = data
    cfg = train_config(
        candidates=("xgboost", "logistic_regression"),
        trials=3,
        trials_by_candidate={"logistic_regression": 2},
        select="best",  # the best CV mean (one_se, the default, is tests/test_tuning_pruning.py's)
        search={
            "xgboost": {
                "max_depth": {"low": 1, "high": 6},
                "subsample": {"low": 0.5, "high": 1.0},
            },
            "logistic_regression": {"C": {"low": 0.001, "high": 10.0, "log": True}},
        },
    )
    lines: list[str] = []
    result = tune(X, y, cfg, "roc_auc", progress=lines.append)
    assert [(r.candidate, r.trial) for r in result.records] == [
        ("xgboost", t) for t in range(4)
    ] + [("logistic_regression", t) for t in range(3)]
    for name, cand in result.candidates.items():
        mine = [r for r in result.records if r.candidate == name]
        assert cand.cv.mean == max(r.cv_mean for r in mine)
        assert cand.params == mine[cand.best_trial].params
        assert cand.untuned.mean == mine[0].cv_mean
    assert any("trial 3/3" in line for line in lines)
    rows = list(csv.DictReader(io.StringIO(trials_csv(result.records, "roc_auc"))))
    assert len(rows) == 7
    assert json.loads(rows[1]["params"])["max_depth"] in range(1, 7)
    assert {r["metric"] for r in rows} == {"roc_auc"}


def _candidate(name: str, scores: tuple[float, ...]) -> CandidateResult:
    cv = CVResult(scores, np.zeros(1))
    return CandidateResult(name, 0, {}, cv, {}, cv, 1)


@pytest.mark.parametrize(
    ("metric", "winner"), [("roc_auc", "random_forest"), ("log_loss", "xgboost")]
)
def test_selection_is_by_cv_mean_respecting_lower_is_better(metric: str, winner: str) -> None:
    result = TuningResult(metric=metric, folds=2)
    result.candidates = {
        "xgboost": _candidate("xgboost", (0.30, 0.32)),
        "logistic_regression": _candidate("logistic_regression", (0.50, 0.52)),
        "random_forest": _candidate("random_forest", (0.80, 0.84)),
    }
    assert result.winner.name == winner
    doc = summary(result)
    assert doc["winner"] == winner
    assert doc["runner_up"] == "logistic_regression"
    lead = abs(doc["candidates"][winner]["cv_mean"] - 0.51)
    assert doc["lead"] == pytest.approx(lead)
    assert doc["lead_exceeds_runner_up_std"] is (lead > 0.01)


def test_a_lead_within_the_runner_up_noise_is_flagged() -> None:
    result = TuningResult(metric="roc_auc", folds=2)
    result.candidates = {
        "xgboost": _candidate("xgboost", (0.900, 0.904)),
        "random_forest": _candidate("random_forest", (0.890, 0.912)),
    }
    doc = summary(result)
    assert doc["winner"] == "xgboost"
    assert doc["lead"] == pytest.approx(0.001)
    assert doc["candidates"]["random_forest"]["cv_std"] == pytest.approx(0.011)
    assert doc["lead_exceeds_runner_up_std"] is False


# --- the train stage on the Adult training split ----------------------------------------------


def train_in(directory: Path, train_split: Path, hash_seed: str) -> subprocess.CompletedProcess:
    """Run the train stage in a bare directory holding params.yaml and the training split."""
    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TUNED)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (directory / "data" / "prepared").mkdir(parents=True, exist_ok=True)
    # The sample project's split (about 4,000 rows) keeps these runs quick; the claims do not
    # depend on size.
    split = pd.read_parquet(train_split)
    split.to_parquet(directory / "data" / "prepared" / "train.parquet", index=False)
    env = {**project_env(directory), "PYTHONPATH": str(ROOT / "src"), "PYTHONHASHSEED": hash_seed}
    proc = subprocess.run(
        [sys.executable, "-m", "mlcycle.stages.train"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def watch_fifo(path: Path, stop: threading.Event, opened: list[str]) -> None:
    """Notice any attempt to open the named pipe ``path`` for reading.

    A reader blocks until a writer opens the pipe; a non-blocking open for writing succeeds
    only while a reader has it open. So every read attempt is seen here (and given garbage,
    perhaps more than once while the reader keeps it open).
    """
    while not stop.is_set():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: nobody is reading
            stop.wait(0.02)
            continue
        opened.append(str(path))
        try:
            os.write(fd, b"not parquet")
        except BrokenPipeError:  # the reader is gone already
            pass
        finally:
            os.close(fd)


def outputs(directory: Path) -> dict[str, str]:
    """SHA-256 of every training output, trials.csv without its durations."""
    files = sorted((directory / "models").rglob("*")) + sorted((directory / "metrics").rglob("*"))
    digests = {}
    for path in files:
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.name == "trials.csv":
            rows = list(csv.DictReader(io.StringIO(data.decode())))
            assert all(float(r.pop("duration_s")) >= 0 for r in rows)
            data = json.dumps(rows).encode()
        digests[str(path.relative_to(directory))] = hashlib.sha256(data).hexdigest()
    return digests


@pytest.fixture(scope="module")
def tuned_run(small_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The train stage with tuning on (2 trials per candidate), no test split on disk."""
    directory = tmp_path_factory.mktemp("tuned") / "a"
    train_in(directory, small_project / "data/prepared/train.parquet", hash_seed="1")
    return directory


def test_same_seed_gives_byte_identical_model_and_metrics_with_tuning_on(
    tuned_run: Path, small_project: Path, tmp_path: Path
) -> None:
    again = tmp_path / "elsewhere" / "b"
    train_in(again, small_project / "data/prepared/train.parquet", hash_seed="2")
    first, second = outputs(tuned_run), outputs(again)
    assert "models/train/oof.parquet" in first and "metrics/train.json" in first
    assert first == second
    doc = json.loads((tuned_run / "metrics/train.json").read_text())
    assert "duration" not in json.dumps(doc)
    assert all(c["trials"] == 3 for c in doc["candidates"].values())


def test_training_and_tuning_never_read_the_test_split(
    tuned_run: Path, small_project: Path, tmp_path: Path
) -> None:
    """The test split's path is a named pipe that records any attempt to open it (pyarrow,
    which refuses pipes, would fail the stage instead). The stage never tries, and gives the
    very same outputs as a run without any test split on disk."""
    directory = tmp_path / "pipe"
    (directory / "data" / "prepared").mkdir(parents=True)
    fifo = directory / "data" / "prepared" / "test.parquet"
    os.mkfifo(fifo)
    stop, opened = threading.Event(), []
    watcher = threading.Thread(target=watch_fifo, args=(fifo, stop, opened))
    watcher.start()
    try:
        train_in(directory, small_project / "data/prepared/train.parquet", hash_seed="3")
    finally:
        stop.set()
        watcher.join()
    assert opened == []
    assert outputs(directory) == outputs(tuned_run)


def test_the_test_split_watch_sees_a_read(tmp_path: Path) -> None:
    """Control for the test above: opening the pipe is seen, and pyarrow refuses to read it
    (so a stage reading it with pandas would fail)."""
    fifo = tmp_path / "test.parquet"
    os.mkfifo(fifo)
    stop, opened = threading.Event(), []
    watcher = threading.Thread(target=watch_fifo, args=(fifo, stop, opened))
    watcher.start()
    try:
        with open(fifo, "rb") as f:
            assert f.read().startswith(b"not parquet")
        with pytest.raises(FileNotFoundError):
            pd.read_parquet(fifo)
    finally:
        stop.set()
        watcher.join()
    assert set(opened) == {str(fifo)}


def test_stage_outputs_tell_the_selection(tuned_run: Path) -> None:
    doc = json.loads((tuned_run / "metrics/train.json").read_text())
    cands = doc["candidates"]
    assert set(cands) == set(KINDS)
    assert doc["winner"] == max(cands, key=lambda n: cands[n]["cv_mean"])
    assert doc["ranking"] == sorted(cands, key=lambda n: -cands[n]["cv_mean"])
    runner = cands[doc["runner_up"]]
    assert doc["lead_exceeds_runner_up_std"] is (doc["lead"] > runner["cv_std"])

    info = json.loads((tuned_run / "models/train/model.json").read_text())
    assert info["kind"] == doc["winner"]
    reported = cands[doc["winner"]]["params"]  # rounded to 6 digits for readable diffs
    assert set(info["params"]) == set(reported)
    for key, value in info["params"].items():
        if isinstance(value, float):
            assert value == pytest.approx(reported[key], abs=1e-6)
        else:
            assert value == reported[key]
    model, _ = load_model_dir(tuned_run / "models/train")
    if model.kind == "xgboost":
        assert model.estimator.num_boosted_rounds() == cands["xgboost"]["rounds"] == info["rounds"]

    rows = list(csv.DictReader((tuned_run / "metrics/tuning/trials.csv").open()))
    assert len(rows) == 9
    best = [r for r in rows if r["candidate"] == doc["winner"]]
    kept = cands[doc["winner"]]  # the trial train.tuning.select kept, and the best one
    assert float(best[kept["best_trial"]]["cv_mean"]) == pytest.approx(kept["cv_mean"])
    top = kept["selection"]["top_cv_mean"]
    assert max(float(r["cv_mean"]) for r in best) == pytest.approx(top)

    params = yaml.safe_load((tuned_run / "metrics/train/params.yaml").read_text())
    assert params["model"] == doc["winner"]


def test_out_of_fold_predictions_cover_the_training_split(
    tuned_run: Path, small_project: Path
) -> None:
    oof = pd.read_parquet(tuned_run / "models/train/oof.parquet")
    train = pd.read_parquet(tuned_run / "data/prepared/train.parquet")
    assert list(oof.columns) == ["probability", "actual"]
    assert len(oof) == len(train)
    assert oof["actual"].tolist() == (train["income"] == ">50K").astype(int).tolist()
    assert oof["probability"].between(0, 1).all()
    doc = json.loads((tuned_run / "metrics/train.json").read_text())
    pooled = roc_auc_score(oof["actual"], oof["probability"])
    assert pooled == pytest.approx(doc["candidates"][doc["winner"]]["cv_mean"], abs=0.01)


def test_the_untuned_baseline_is_kept_beside_the_model(tuned_run: Path) -> None:
    baseline, info = load_model_dir(tuned_run / "models/train/baseline")
    assert baseline.kind == "xgboost"
    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TUNED)
    assert info["params"] == params["train"]["xgb"]


# --- a scikit-learn winner through the whole pipeline ----------------------------------------


def test_a_scikit_learn_winner_runs_through_the_pipeline_and_every_plot_loads(
    project_copy: Path,
) -> None:
    """Logistic regression alone: bundled as model.skops, scored, and `dvc plots show` loads
    every plot (the learning curves and SHAP plots are empty for it, not errors)."""
    p = project_copy
    set_params(
        p,
        {
            "train": {"candidates": ["logistic_regression"], "baseline": None},
            "objectives": {"minimum": 0.8, "minimums": {"accuracy": 0.8}},
        },
    )
    proc = run(["dvc", "repro"], p)
    assert "no learning curve for a logistic_regression model" in proc.stdout + proc.stderr
    assert (p / "models/bundle/model.skops").is_file()
    bundle = load_bundle(p / "models/bundle")
    assert bundle.kind == "logistic_regression"
    metrics = json.loads((p / "metrics/evaluate.json").read_text())
    assert metrics["model"] == "logistic_regression" and metrics["roc_auc"] > 0.85

    shown = run(["dvc", "plots", "show", "--json"], p)
    assert "failed to load" not in shown.stderr, shown.stderr
    doc = json.loads(shown.stdout)
    assert "errors" not in doc, doc.get("errors")
    (roc,) = [k for k in doc["data"] if k.startswith("ROC")]
    assert doc["data"][roc][0]["content"]["data"]["values"]


# --- Ctrl-C ----------------------------------------------------------------------------------


def test_ctrl_c_stops_a_long_train_stage_and_leaves_the_last_model(project_copy: Path) -> None:
    """Ctrl-C in the terminal running `dvc repro` (SIGINT to its foreground process group: dvc
    and the stage) while the train stage fits folds side by side, each a random forest that
    takes minutes and cannot be stopped between trees from another thread: the stage ends at
    once instead of waiting for them, nothing of it keeps running, and the last model and its
    metrics are byte for byte as they were."""
    import signal
    import time

    p = project_copy
    kept = ["models/train", "metrics/train.json", "metrics/train", "metrics/tuning/trials.csv"]

    def files() -> dict[str, bytes]:
        found = {}
        for name in kept:
            path = p / name
            for f in [path] if path.is_file() else sorted(path.rglob("*")):
                if f.is_file():
                    found[str(f.relative_to(p))] = f.read_bytes()
        return found

    before = files()
    assert "models/train/oof.parquet" in before and "metrics/train.json" in before
    # Shallow trees: little memory, minutes of fitting (50,000 of them per fold).
    forest = {"n_estimators": 50_000, "max_depth": 3, "max_features": 1.0}
    set_params(p, {"train": {"candidates": ["random_forest"], "parallel_folds": 2, "nthread": 2,
                             "models": {"random_forest": forest}}})  # fmt: skip
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dvc"), "repro", "-s", "train"],
        cwd=p, env=project_env(p), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        # with Ctrl-C's default action, as in a terminal, whatever this process inherited: a
        # non-interactive shell's background job (`cmd &`, as a CI runner may start the
        # suite) ignores SIGINT, and so would dvc and the stage, and never stop
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    said: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:  # until the folds are being fitted
        said.append(line)
        if "random_forest: trial 0 (untuned)" in line:
            break
    assert proc.poll() is None, "".join(said)
    time.sleep(2.0)
    start = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    try:
        rest, _ = proc.communicate(timeout=60)  # generous: the fits alone take minutes
    except subprocess.TimeoutExpired:
        alive = subprocess.run(  # what is still running, and where it waits
            ["ps", "-o", "pid,ppid,stat,wchan:24,etime,args", "-s", str(proc.pid)],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        os.killpg(proc.pid, signal.SIGKILL)
        after, _ = proc.communicate()
        pytest.fail(f"the train stage was still running 60 s after Ctrl-C:\n{''.join(said)}"
                    f"--- after Ctrl-C:\n{after}--- still running then:\n{alive}")  # fmt: skip
    print(f"stopped {time.monotonic() - start:.1f} s after SIGINT")
    assert proc.returncode != 0, "".join(said) + rest
    assert "[train] interrupted" in rest, rest
    with pytest.raises(ProcessLookupError):  # nothing of the stage is left running
        os.killpg(proc.pid, 0)
    assert files() == before
    assert not [f.name for f in (p / "models").iterdir() if f.name.endswith(".tmp")]
