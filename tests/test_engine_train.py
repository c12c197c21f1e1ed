"""The train stage on the Dask engine, on real clusters (a LocalCluster and a real `dask
scheduler` with two `dask worker` processes): the local engine's signature from aggregates
and its folds whatever the partitioning, seeded trials on the workers that give the same
trials, scores and model bytes on another run and another cluster, the xgboost.dask path
above ``engine.trial_max_rows``, and scikit-learn skipped above its row limit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlcycle import config
from mlcycle.engines import Engine
from mlcycle.engines.dask.data import read_dataset
from mlcycle.features import encode_target, infer_signature, to_model_frame
from mlcycle.models import fit
from mlcycle.stages import train as train_stage
from mlcycle.tuning import (
    CLASS_WEIGHT,
    FoldError,
    class_weight_search,
    fit_options,
    make_folds,
    row_keys,
    trials_csv,
    tune,
)
from tests.conftest import FAST_PARAMS, ROOT, merge

OBJ = {
    "objectives": {"target": "income", "positive_class": ">50K", "slices": [], "minimums": {},
                   "kpis": ["roc_auc", "accuracy"]},
    "features": {"derived": [], "exclude": []},
}  # fmt: skip
# Three folds so the median pruner can stop a trial after its first or second fold; ten
# trials: TPE's random start (5) and the Dask engine's first batch (4) are over in time to prune.
TRAIN = {"train": {"cv_folds": 3, "candidates": ["xgboost", "logistic_regression"],
                   "baseline": "xgboost",
                   "xgb": {"learning_rate": 0.06},  # in the search space: trial 0 is told
                   "tuning": {"trials": 10, "pruner": "median", "pruner_startup": 1,
                              "trials_by_candidate": {"logistic_regression": 1}}}}  # fmt: skip


def params(*updates: dict) -> config.Params:
    raw = merge(config.read_raw(ROOT / "params.yaml"), FAST_PARAMS)
    for update in (OBJ, *updates):
        raw = merge(raw, update)
    return config.parse_params(raw)


def adult_like(n: int, seed: int = 0) -> pd.DataFrame:
    """Census-like rows: numbers with gaps, text columns with rare and missing categories, and
    an income label that depends on several of them."""
    rng = np.random.default_rng(seed)
    age = rng.integers(17, 90, n).astype(float)
    hours = rng.normal(40, 12, n).round()
    education = rng.choice(["HS-grad", "Some-college", "Bachelors", "Masters", "Doctorate"], n,
                           p=[0.4, 0.3, 0.2, 0.08, 0.02])  # fmt: skip
    workclass = rng.choice(["Private", "Self-emp", "Gov", "Never-worked"], n,
                           p=[0.7, 0.15, 0.145, 0.005]).astype(object)  # fmt: skip
    workclass[rng.uniform(size=n) < 0.05] = None
    gain = np.where(rng.uniform(size=n) < 0.1, rng.exponential(5000, n), 0.0).round()
    # Thresholds and an interaction: a tree model beats a linear one here, as on Adult.
    degree = {"HS-grad": -0.5, "Some-college": 0.0, "Bachelors": 0.8, "Masters": 1.3,
              "Doctorate": 1.8}  # fmt: skip
    logit = (
        2.0 * ((age > 35) & (age < 60))
        + 1.5 * ((hours > 45) & (age > 30))
        + 3.0 * (gain > 4000)
        - 2.5
        + pd.Series(education).map(degree).to_numpy()
    )
    income = np.where(rng.uniform(size=n) < 1 / (1 + np.exp(-logit)), ">50K", "<=50K")
    df = pd.DataFrame({"age": age, "hours": hours, "education": education,
                       "workclass": workclass, "capital_gain": gain, "income": income})  # fmt: skip
    df.loc[df.index % 31 == 0, "age"] = np.nan
    return df


def write_parts(folder: Path, frame: pd.DataFrame, parts: int) -> Path:
    folder.mkdir(parents=True)
    for i, idx in enumerate(np.array_split(np.arange(len(frame)), parts)):
        frame.iloc[idx].to_parquet(folder / f"part-{i:05d}.parquet", index=False)
    return folder


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training split of 3000 rows as a folder of three parts."""
    return write_parts(tmp_path_factory.mktemp("split") / "train.parquet", adult_like(3000), 3)


# --- the signature and the folds ---------------------------------------------------------------


def test_class_weights_are_searched_as_the_local_engine_searches_them(
    split: Path, dask_local_client
) -> None:
    """The rows per class counted over the partitions give the local engine's search: on the
    split as it is (about 28 % positives) no class weights; with most positives left out
    (about 5 %), train.class_weight none and balanced in every space, trial 0's unchanged."""
    from mlcycle.engines.dask.train import class_weights_searched

    p = params(TRAIN)
    assert class_weights_searched(p, split).train == p.train
    frame = pd.read_parquet(split)
    rare = frame[(frame["income"] == "<=50K") | (frame.index % 8 == 0)]
    folder = write_parts(split.parent / "imbalanced.parquet", rare, 3)
    got = class_weights_searched(p, folder).train
    counts = rare["income"].value_counts().to_numpy()
    assert got == class_weight_search(p.train, p.objectives.task, counts) != p.train
    assert got.search["xgboost"][CLASS_WEIGHT] == {"choices": ["none", "balanced"]}
    assert got.class_weight == p.train.class_weight == "none"


def test_the_signature_is_the_local_engines(split: Path, dask_local_client, monkeypatch) -> None:
    """Types, classes, categories (sorted, from every row) and the mutual-information selection
    equal the local engine's; with a sample smaller than the data, a category only the rows
    outside the sample hold is still in the signature."""
    from mlcycle.engines.dask import train as engine

    frame = pd.read_parquet(split)
    selection = {"features": {"selection": {"method": "mutual_info", "k": 4}}}
    for update in ({}, selection):
        p = params(update)
        local = infer_signature(frame, "income", ">50K", p.features, seed=p.train.seed)
        got = engine.dask_signature(read_dataset(split), split, p)
        assert got.to_dict() == local.to_dict()
    assert len(local.features) == 4  # the selection dropped one of five

    rare = frame.copy()
    rare.loc[1234, "workclass"] = "Without-pay"  # one row holds it
    folder = write_parts(split.parent / "rare.parquet", rare, 4)
    monkeypatch.setattr(engine, "SAMPLE_ROWS", 300)
    got = engine.dask_signature(read_dataset(folder), folder, params())
    local = infer_signature(rare, "income", ">50K", params().features, seed=42)
    assert got.to_dict() == local.to_dict()
    by_name = {f.name: f for f in got.inputs}
    assert "Without-pay" in by_name["workclass"].categories


def test_folds_are_the_local_engines_whatever_the_partitions(
    split: Path, dask_local_client
) -> None:
    """The large-data path deals the rows' folds from their classes and hashes gathered from
    the partitions: every row gets the fold the local engine gives it (its held-out rows as
    :func:`mlcycle.tuning.make_folds` cuts them on one frame), with the rows in another order
    and in 1 or 5 partitions."""
    import dask.dataframe as dd

    from mlcycle.engines.dask.train import model_parts, with_folds

    frame = pd.read_parquet(split)
    cfg = params(TRAIN).train
    sig = infer_signature(frame, "income", ">50K", params().features, seed=cfg.seed)
    X, y = to_model_frame(frame, sig), encode_target(frame["income"], sig)
    h = row_keys(X, y, cfg.seed)
    local = make_folds(X, y, cfg, sig.task, sig.classes)
    expected = sorted((int(h[r]), i) for i, (_, held) in enumerate(local) for r in held)
    order = np.random.default_rng(1).permutation(len(frame))
    for nparts, rows in ((1, np.arange(len(frame))), (5, order)):
        ddf = dd.from_pandas(frame.iloc[rows].reset_index(drop=True), npartitions=nparts)
        parts = model_parts(ddf, sig, cfg.seed)
        got = with_folds(dask_local_client, parts, cfg.cv_folds, sig.task, sig.classes)
        got = got[["__h", "__fold"]].compute()
        assert sorted(zip(got["__h"].tolist(), got["__fold"].tolist(), strict=True)) == expected
    with pytest.raises(FoldError, match="needs at least"):
        with_folds(dask_local_client, parts.head(5, npartitions=-1, compute=False), 3, sig.task,
                   sig.classes)  # fmt: skip


# --- tuning, the final fit ---------------------------------------------------------------------


def run_stage(project: Path, split: Path, p: config.Params, client) -> dict:
    """The stage's main on the Dask engine in ``project`` (the split copied in); its outputs."""
    import shutil

    target = project / "data/prepared/train.parquet"
    if not target.exists():
        shutil.copytree(split, target)
    train_stage.execute(p, Engine(p.engine, print, client))
    return {
        "model": (project / "models/train/model.ubj").read_bytes(),
        "trials": [line.split(",")[:5] + line.split(",")[-1:] for line in
                   (project / "metrics/tuning/trials.csv").read_text().splitlines()],
        "train": json.loads((project / "metrics/train.json").read_text()),
    }  # fmt: skip


def test_trials_and_model_are_the_same_on_another_run_and_cluster(
    split: Path, tmp_path: Path, monkeypatch, dask_local_client, dask_scheduler: str
) -> None:
    """Trials in batches on the workers, pruned between folds: a LocalCluster and a real
    scheduler with its own two worker processes give the same trials, scores, pruned trials
    and model.ubj bytes; the model loads and predicts; the local engine's trials score the
    same where both engines propose the same configurations."""
    from distributed import Client

    from mlcycle.models import load_model_dir

    p = params(TRAIN)
    monkeypatch.chdir(tmp_path)
    first = run_stage(tmp_path, split, p, dask_local_client)
    with Client(dask_scheduler) as client:
        again = run_stage(tmp_path, split, p, client)
    assert again["model"] == first["model"]
    assert again["trials"] == first["trials"]
    assert again["train"] == first["train"]
    trials = first["trials"]
    assert [t[0] for t in trials[1:]] == ["xgboost"] * 11 + ["logistic_regression"] * 2
    assert any(t[-1] for t in trials[1:]), "no trial was pruned"  # pruned_after column

    model, info = load_model_dir(tmp_path / "models/train")
    assert model.kind == first["train"]["winner"] == "xgboost"
    from mlcycle.features import Signature

    sig = Signature.from_dict(json.loads((tmp_path / "models/train/signature.json").read_text()))
    frame = pd.read_parquet(split)
    out = model.output(to_model_frame(frame.head(50), sig))
    assert out.shape == (50, 2) and np.allclose(out.sum(axis=1), 1)
    assert info["rounds"] == model.estimator.num_boosted_rounds()
    assert (tmp_path / "models/train/baseline/model.ubj").is_file()
    oof = pd.read_parquet(tmp_path / "models/train/oof.parquet")
    assert len(oof) == len(frame) and oof["probability"].notna().all()

    # The local engine on the same rows builds the same folds, fits each fold alike and runs
    # the same search (Optuna asked for BATCH trials at a time, told in order): every row of
    # trials.csv is the same, scores to the last digit and pruned trials included, and the
    # same trial wins.
    X, y = to_model_frame(frame, sig), encode_target(frame["income"], sig)
    local = tune(X, y, p.train, "roc_auc", task=sig.task, classes=sig.classes)
    rows = [line.split(",")[:5] + line.split(",")[-1:] for line in
            trials_csv(local.records, "roc_auc").splitlines()]  # fmt: skip
    assert rows == trials
    won = first["train"]["candidates"]["xgboost"]
    assert local.winner.name == first["train"]["winner"]
    assert local.winner.best_trial == won["best_trial"]
    assert local.winner.cv.mean == pytest.approx(won["cv_mean"], abs=1e-6)
    # The final model: xgboost.dask's trees (histograms summed across the workers) against
    # xgboost.train's with the same params and rounds: close, not the same bytes.
    alone = fit("xgboost", X, y, won["params"], sig.task, 2, rounds=won["rounds"],
                **fit_options(p.train)).model  # fmt: skip
    gap = np.abs(alone.output(X)[:, 1] - model.output(X)[:, 1])
    assert gap.mean() < 0.02 and alone.to_bytes() != model.to_bytes()


def test_above_trial_max_rows_trials_boost_across_the_cluster(
    split: Path, dask_local_client
) -> None:
    """Above engine.trial_max_rows each fold of each trial is boosted by xgboost.dask on the
    partitions; scikit-learn candidates and baseline are skipped with a message; the model
    predicts as the small-data path's does, and its CV score is close to it."""
    from mlcycle.engines.dask.train import train_dask

    said: list[str] = []
    update = {"engine": {"trial_max_rows": 1000, "sklearn_max_rows": 100},
              "train": {"baseline": "logistic_regression", "tuning": {"trials": 2}}}  # fmt: skip
    t = train_dask(params(TRAIN, update), dask_local_client, split, said.append)
    log = "\n".join(said)
    assert "skipping ['logistic_regression']: the training split has 3000 rows" in log
    assert "no baseline: train.baseline logistic_regression" in log
    assert t.baseline is None
    assert [r.candidate for r in t.result.records] == ["xgboost"] * 3
    assert [r.trial for r in t.result.records] == [0, 1, 2]
    assert all(r.rounds for r in t.result.records if not r.pruned)
    assert len(t.oof) == len(pd.read_parquet(split))
    assert t.final.curves["train"]["loss"]  # the final fit's learning curve, as locally

    small = train_dask(params(TRAIN, {"train": {"candidates": ["xgboost"],
                                                "tuning": {"trials": 0}}}),
                       dask_local_client, split, said.append)  # fmt: skip
    big_untuned = t.result.candidates["xgboost"].untuned.mean
    assert abs(big_untuned - small.result.candidates["xgboost"].untuned.mean) < 0.02
    frame = pd.read_parquet(split).head(200)
    a = t.final.model.output(to_model_frame(frame, t.signature))
    b = small.final.model.output(to_model_frame(frame, small.signature))
    assert np.corrcoef(a[:, 1], b[:, 1])[0, 1] > 0.9


def test_the_search_deadline_cancels_fold_tasks_on_the_workers(
    split: Path, dask_local_client
) -> None:
    """The Dask engine's trials (fold tasks on the workers) honour the search's deadline as the
    local engine's do: fold tasks running when it passes stop at their next boosting round and
    their trials come back cancelled, not finished; without a deadline a trial runs whole."""
    from mlcycle.engines.dask.train import Copies, target_and_folds, worker_batches
    from mlcycle.tuning import NO_DEADLINE, RUNNING, Deadline, fixed_params

    p = params(TRAIN)
    cfg = p.train
    frame = pd.read_parquet(split)
    sig = infer_signature(frame, "income", ">50K", p.features, seed=cfg.seed)
    copies = Copies(dask_local_client, str(split), sig, cfg)
    try:
        y, fold_rows = copies.run(target_and_folds, [()])[0]
        run = worker_batches(copies, "xgboost", cfg, "roc_auc", sig.task, 2, fold_rows, len(y))
        fixed = fixed_params("xgboost", cfg)
        endless = {**fixed, "n_estimators": 10**6, "early_stopping_rounds": 10**6,
                   "learning_rate": 1e-5}  # fmt: skip
        out = run([endless, endless], [None, None], Deadline.after(2.0))
        assert [o.cancelled for o in out] == [RUNNING, RUNNING]
        assert all(o.cv is None and not o.folds for o in out)
        (whole,) = run([fixed], [None], NO_DEADLINE)
        assert whole.cancelled is None and len(whole.cv.scores) == cfg.cv_folds
    finally:
        copies.release()
