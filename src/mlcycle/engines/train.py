"""The train stage on the Dask engine: trials side by side on the workers, folds by row hash,
the final XGBoost model boosted across the cluster by ``xgboost.dask``.

- **The signature** comes from aggregates: every category of every text column (distinct
  values over all partitions) and a seeded sample of rows (at most ``SAMPLE_ROWS``, chosen by
  row hash) for the types and any feature selection; for data of that size or less it is the
  local engine's signature.
- **Folds** are assigned by a hash of each row's model columns: fold ``floor(u * k)`` for
  ``u`` = :func:`mlcycle.engines.unit_interval` of the row's hash seeded by ``train.seed``. A
  row lands in the same fold whatever the partitioning or the number of workers.
- **Tuning**, when the training split has at most ``engine.trial_max_rows`` rows: every worker
  reads the split once, and each trial is a cross-validation on one worker with the local
  engine's code. Optuna proposes trials in batches of ``BATCH`` (its ask/tell interface) and
  hears their scores in trial-number order, so the trials, their scores and the winner are
  the same on a rerun, with any number of workers.
  Above that size only XGBoost is a candidate and its trials run one after another, each fold
  boosted across the cluster (``xgboost.dask``), scored on a seeded sample of at most
  ``SCORE_ROWS`` held-out rows.
- **The scikit-learn candidates** need the split in one process: above
  ``engine.sklearn_max_rows`` rows they are skipped, with a message.
- **The final model** of XGBoost is boosted with ``xgboost.dask`` on the partitions, pinned to
  the workers in a fixed order, with the rounds the folds chose: a plain Booster saved as
  model.ubj, so evaluation, the bundle and the service do not know which engine made it.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import pandas as pd

from mlcycle import config
from mlcycle.engines import dataset_rows, read_dataset, row_hash, sample_dataset, unit_interval
from mlcycle.features import Feature, Signature, encode_target, infer_signature, to_model_frame
from mlcycle.metrics import kpi, prediction_frame
from mlcycle.models import FitResult, fit
from mlcycle.tasks import LOWER_IS_BETTER, is_classification
from mlcycle.tuning import (
    CandidateResult,
    CVResult,
    FoldError,
    TrialRecord,
    TuningResult,
    _best,
    _contains,
    cross_validate,
    distributions,
    fixed_params,
)

if TYPE_CHECKING:
    import dask.dataframe as dd
    from distributed import Client

SAMPLE_ROWS = 100_000  # rows the signature's types and feature selection are taken from
BATCH = 4  # trials Optuna proposes before it hears their scores (fixed: results do not
# depend on the number of workers)
SCORE_ROWS = 200_000  # held-out rows a fold of an xgboost.dask trial is scored on
OOF_ROWS = 1_000_000  # out-of-fold predictions kept for the decision threshold (large data)


# --- the signature and folds ---------------------------------------------------------------------


def dask_signature(
    ddf: dd.DataFrame, params: config.Params, say: Any
) -> tuple[Signature, pd.DataFrame]:
    """The signature from every category and a sample of rows; and the sample."""
    obj, cfg = params.objectives, params.train
    sample = sample_dataset(_train_path(), SAMPLE_ROWS, seed=cfg.seed)
    text = [
        c
        for c in ddf.columns
        if pd.api.types.is_bool_dtype(ddf[c].dtype)
        or not pd.api.types.is_numeric_dtype(ddf[c].dtype)
    ]
    import dask

    uniques = dask.compute(*[ddf[c].dropna().astype(str).drop_duplicates() for c in text])
    sig = infer_signature(
        sample, obj.target, obj.positive_class, params.features, seed=cfg.seed,
        progress=say, task=obj.task,
    )  # fmt: skip
    # The sample may miss rare categories and classes: take them from all the rows.
    every = {c: tuple(sorted(set(u.tolist()))) for c, u in zip(text, uniques, strict=True)}
    if is_classification(obj.task) and obj.target in every:
        seen = set(sig.classes)
        missing = [c for c in every[obj.target] if c not in seen]
        if missing:
            raise FoldError(
                f"target {obj.target!r}: class(es) {missing} are too rare for the signature's "
                f"sample of {SAMPLE_ROWS} rows; they cannot be learnt from so few rows"
            )

    def widen(features: tuple[Feature, ...]) -> tuple[Feature, ...]:
        return tuple(
            Feature(f.name, f.kind, every.get(f.name, f.categories))
            if f.kind == "categorical"
            else f
            for f in features
        )

    return replace(sig, features=widen(sig.features), inputs=widen(sig.inputs)), sample


def hash_folds(frame: pd.DataFrame, columns: list[str], folds: int, seed: int) -> np.ndarray:
    """Each row's fold: ``floor(u * folds)`` of its hash over ``columns``, keyed by ``seed``."""
    u = unit_interval(row_hash(frame[columns], seed, "folds"))
    return np.minimum((u * folds).astype(int), folds - 1)


def _splits(fold: np.ndarray, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    idx = np.arange(len(fold))
    return [(idx[fold != i], idx[fold == i]) for i in range(folds)]


def _check_folds(y: np.ndarray, fold: np.ndarray, folds: int, task: str, classes) -> None:
    for i in range(folds):
        held = fold == i
        if not held.any() or held.all():
            raise FoldError(
                f"fold {i} of train.cv_folds={folds} is empty or holds every row; the "
                "training split is too small for that many folds"
            )
        if is_classification(task):
            present = np.unique(y[~held])
            if len(present) < len(classes):
                raise FoldError(
                    f"fold {i}'s training part lacks class(es) "
                    f"{[classes[c] for c in range(len(classes)) if c not in present]}: too "
                    "few rows of them for train.cv_folds"
                )


def _train_path() -> str:
    from mlcycle.stages import TRAIN

    return str(Path(TRAIN).resolve())


# --- on the workers ---------------------------------------------------------------------------


def load_split(path: str, signature_doc: dict, folds: int, seed: int) -> dict[str, Any]:
    """The training split as a model frame, its encoded target and its folds (on a worker)."""
    sig = Signature.from_dict(signature_doc)
    frame = pd.read_parquet(path)
    X = to_model_frame(frame, sig)
    y = encode_target(frame[sig.target], sig)
    fold = hash_folds(frame, [*sig.input_columns, sig.target], folds, seed)
    return {"X": X, "y": y, "fold": fold}


def run_trial(
    data: dict[str, Any],
    kind: str,
    params: dict[str, Any],
    cfg: config.TrainConfig,
    metric: str,
    task: str,
    n_classes: int,
    folds: int,
) -> tuple[CVResult, float]:
    """One trial: a cross-validation on this worker's copy of the split; and its seconds."""
    start = time.perf_counter()
    splits = _splits(data["fold"], folds)
    cv = cross_validate(kind, data["X"], data["y"], params, cfg, metric, splits, task, n_classes)
    return cv, time.perf_counter() - start


def fit_on_worker(
    data: dict[str, Any], kind: str, params: dict, cfg: config.TrainConfig, task: str,
    n_classes: int, rounds: int | None,
) -> FitResult:  # fmt: skip
    """A final scikit-learn fit on a worker's copy (small data only)."""
    return fit(kind, data["X"], data["y"], params, cfg, task, n_classes, rounds)


# --- tuning on the cluster ----------------------------------------------------------------------


def tune_on_workers(
    client: Client,
    data: list[Any],
    kinds: list[str],
    cfg: config.TrainConfig,
    metric: str,
    task: str,
    n_classes: int,
    say: Any,
) -> TuningResult:
    """Every candidate's trial 0 and search, trials in fixed batches over the workers."""
    result = TuningResult(metric=metric, folds=cfg.cv_folds)
    slot = 0

    def submit(kind: str, params: dict) -> Any:
        nonlocal slot
        future = client.submit(
            run_trial, data[slot % len(data)], kind, params, cfg, metric, task, n_classes,
            cfg.cv_folds, pure=False,
        )  # fmt: skip
        slot += 1
        return future

    for kind in kinds:
        base = fixed_params(kind, cfg)
        budget = cfg.trials_for(kind)
        say(f"{kind}: trial 0 (untuned) + {budget} search trial(s), {cfg.cv_folds}-fold CV "
            f"by row hash, in batches of {BATCH} on {len(data)} worker(s)")  # fmt: skip
        records: list[TrialRecord] = []
        best: list[tuple[dict, CVResult]] = [({}, None)]  # type: ignore[list-item]
        seen: dict[str, CVResult] = {}

        def record(params, cv, seconds, into=records, kind=kind, best=best) -> None:
            number = len(into)
            into.append(
                TrialRecord(kind, number, params, cv.mean, cv.std, cv.final_rounds, seconds)
            )
            if _best(into, metric).trial == number:
                best[0] = (params, cv)

        untuned, seconds = submit(kind, base).result()
        seen[json.dumps(base, sort_keys=True, default=str)] = untuned
        record(base, untuned, seconds)
        say(f"{kind} trial 0 (untuned): cv {metric} {untuned.mean:.4f} ± {untuned.std:.4f}")
        if budget:
            dists = distributions(cfg.search.get(kind, {}))
            study = optuna.create_study(
                direction="minimize" if metric in LOWER_IS_BETTER else "maximize",
                sampler=optuna.samplers.TPESampler(
                    seed=cfg.seed, n_startup_trials=min(10, max(1, budget // 2))
                ),
            )
            if all(k in base and _contains(d, base[k]) for k, d in dists.items()):
                study.add_trial(
                    optuna.trial.create_trial(
                        params={k: base[k] for k in dists}, distributions=dists,
                        value=untuned.mean,
                    )
                )  # fmt: skip
            done = 0
            while done < budget:
                batch = [study.ask(dists) for _ in range(min(BATCH, budget - done))]
                asked = [{**base, **t.params} for t in batch]
                keys = [json.dumps(p, sort_keys=True, default=str) for p in asked]
                futures = {
                    k: submit(kind, p) for k, p in zip(keys, asked, strict=True) if k not in seen
                }
                for trial, params, key in zip(batch, asked, keys, strict=True):
                    if key in futures:
                        cv, seconds = futures[key].result()
                        seen[key] = cv
                    else:
                        cv, seconds = seen[key], 0.0
                    record(params, cv, seconds)
                    study.tell(trial, cv.mean)
                done += len(batch)
                top = _best(records, metric)
                say(f"{kind} trial {done}/{budget}: best cv {metric} {top.cv_mean:.4f} "
                    f"(trial {top.trial})")  # fmt: skip
        top = _best(records, metric)
        params, cv = best[0]
        result.candidates[kind] = CandidateResult(
            kind, top.trial, params, cv, base, untuned, len(records)
        )
        result.records.extend(records)
        say(f"{kind}: best cv {metric} {cv.mean:.4f} ± {cv.std:.4f} (trial {top.trial} of "
            f"{len(records)}; untuned {untuned.mean:.4f})")  # fmt: skip
    if cfg.baseline in result.candidates:
        c = result.candidates[cfg.baseline]
        result.baseline = CandidateResult(
            c.name, 0, c.untuned_params, c.untuned, c.untuned_params, c.untuned, 1
        )
    elif cfg.baseline:
        params = fixed_params(cfg.baseline, cfg)
        cv, _ = submit(cfg.baseline, params).result()
        result.baseline = CandidateResult(cfg.baseline, 0, params, cv, params, cv, 1)
    return result


# --- xgboost.dask -------------------------------------------------------------------------------


def _model_parts(ddf: dd.DataFrame, sig: Signature, folds: int, seed: int) -> dd.DataFrame:
    """The model frame per partition, with the encoded target and each row's fold."""

    def convert(part: pd.DataFrame) -> pd.DataFrame:
        X = to_model_frame(part, sig)
        X["__y"] = encode_target(part[sig.target], sig).astype("float64")
        X["__fold"] = hash_folds(part, [*sig.input_columns, sig.target], folds, seed)
        X["__u"] = unit_interval(row_hash(part[[*sig.input_columns, sig.target]], seed, "inner"))
        return X.reset_index(drop=True)

    meta = convert(ddf._meta)
    return ddf.map_partitions(convert, meta=meta)


def _pinned(client: Client, frame: dd.DataFrame) -> dd.DataFrame:
    """``frame`` persisted with partition i on worker i mod n (workers sorted by address),
    so a rerun reduces the same partitions on the same workers in the same order."""
    workers = sorted(client.scheduler_info()["workers"])
    parts = frame.to_delayed()
    futures = [
        client.compute(p, workers=[workers[i % len(workers)]], allow_other_workers=False)
        for i, p in enumerate(parts)
    ]
    import dask.dataframe as dd

    return dd.from_delayed(futures, meta=frame._meta, verify_meta=False)


def dask_boost(
    client: Client,
    frame: dd.DataFrame,
    params: dict,
    cfg: config.TrainConfig,
    task: str,
    n_classes: int,
    rounds: int,
    valid: dd.DataFrame | None = None,
    early: int | None = None,
) -> tuple[Any, int]:
    """A Booster boosted across the cluster on ``frame`` (model columns + ``__y``)."""
    import xgboost as xgb
    from xgboost import dask as dxgb

    from mlcycle.adapters.xgboost_model import booster_params

    features = [c for c in frame.columns if not c.startswith("__")]
    native = booster_params(params, cfg, np.array([0.0, 1.0]), task, n_classes)
    if cfg.class_weight == "balanced" and task == "binary_classification":
        pos = float(frame["__y"].sum().compute())
        n = float(frame["__y"].count().compute())
        native["scale_pos_weight"] = (n - pos) / pos if pos else 1.0
    native["nthread"] = cfg.nthread or 0
    dtrain = dxgb.DaskDMatrix(client, frame[features], frame["__y"], enable_categorical=True)
    evals = []
    if valid is not None:
        dvalid = dxgb.DaskDMatrix(client, valid[features], valid["__y"], enable_categorical=True)
        evals = [(dvalid, "valid")]
    out = dxgb.train(
        client, native, dtrain, num_boost_round=rounds, evals=evals,
        early_stopping_rounds=early if valid is not None else None, verbose_eval=False,
    )  # fmt: skip
    booster: xgb.Booster = out["booster"]
    best = booster.best_iteration + 1 if (valid is not None and early) else rounds
    return (booster[:best] if best < booster.num_boosted_rounds() else booster), best


def dask_cv(
    client: Client,
    model_frame: dd.DataFrame,
    params: dict,
    cfg: config.TrainConfig,
    metric: str,
    task: str,
    n_classes: int,
) -> tuple[CVResult, pd.DataFrame]:
    """XGBoost cross-validated across the cluster; each fold scored on a sample of at most
    SCORE_ROWS held-out rows; the out-of-fold predictions of at most OOF_ROWS rows."""
    from xgboost import dask as dxgb

    rows = int(model_frame.map_partitions(len).sum().compute())
    share = min(1.0, SCORE_ROWS * cfg.cv_folds / max(rows, 1))
    oof_share = min(1.0, OOF_ROWS / max(rows, 1))
    features = [c for c in model_frame.columns if not c.startswith("__")]
    scores, rounds, oofs = [], [], []
    n_rounds = int(params.get("n_estimators", 100))
    early = params.get("early_stopping_rounds")
    for i in range(cfg.cv_folds):
        fit_part = model_frame[model_frame["__fold"] != i]
        inner = fit_part["__u"] < cfg.validation_fraction
        booster, best = dask_boost(
            client, fit_part[~inner], params, cfg, task, n_classes, n_rounds,
            valid=fit_part[inner], early=early,
        )  # fmt: skip
        kept = model_frame["__u"] < max(share, oof_share)
        held = model_frame[(model_frame["__fold"] == i) & kept]
        pred = dxgb.predict(client, booster, held[features])
        got = held[["__y", "__u"]].assign(p=pred) if pred.ndim == 1 else None
        if got is None:  # multiclass: one column per class
            import dask.dataframe as dd

            cols = dd.from_dask_array(pred, columns=[f"p{j}" for j in range(n_classes)])
            got = dd.concat([held[["__y", "__u"]].reset_index(drop=True), cols], axis=1)
        local = got.compute()
        y = local["__y"].to_numpy()
        out = (
            local["p"].to_numpy(float)
            if "p" in local
            else local[[f"p{j}" for j in range(n_classes)]].to_numpy(float)
        )
        if task == "binary_classification":
            out = np.column_stack([1 - out, out])
        scored = local["__u"].to_numpy() < share
        truth = y[scored].astype(int) if is_classification(task) else y[scored]
        scores.append(float(kpi(task, metric, truth, out[scored], 0.5)))
        keep = local["__u"].to_numpy() < oof_share
        oofs.append((out[keep], y[keep]))
        rounds.append(best)
    out = np.concatenate([o for o, _ in oofs])
    y = np.concatenate([t for _, t in oofs])
    if is_classification(task):
        y = y.astype(int)
    return CVResult(tuple(scores), out, tuple(rounds)), (out, y)


# --- the stage ---------------------------------------------------------------------------


def main_dask(params: config.Params, client: Client) -> None:
    """Tune, select and fit on the cluster; write the same outputs as the local engine."""
    from mlcycle.adapters.xgboost_model import XGBoostModel
    from mlcycle.stages import log
    from mlcycle.stages.train import finish

    say = lambda msg: log("train", msg)  # noqa: E731
    obj, cfg, eng = params.objectives, params.train, params.engine
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = _train_path()
    rows = dataset_rows(path)
    ddf = read_dataset(path)
    signature, sample = dask_signature(ddf, params, say)
    n_classes = len(signature.classes) if is_classification(obj.task) else 0
    kinds = list(cfg.candidates)
    sklearn = [k for k in kinds if k != "xgboost"]
    if sklearn and (rows > eng.sklearn_max_rows or rows > eng.trial_max_rows):
        limit = min(eng.sklearn_max_rows, eng.trial_max_rows)
        say(f"skipping {sklearn}: the training split has {rows} rows, more than {limit} "
            "(engine.sklearn_max_rows / trial_max_rows); scikit-learn needs it in one "
            "process")  # fmt: skip
        kinds = [k for k in kinds if k == "xgboost"]
    if not kinds:
        raise ValueError(
            f"train.candidates {list(cfg.candidates)}: none can train on {rows} rows on the "
            "Dask engine; add xgboost, or raise engine.sklearn_max_rows"
        )
    say(f"{obj.task}: {rows} rows, {len(signature.features)} features; candidates {kinds}, "
        f"selected by cv {obj.primary_metric}")  # fmt: skip
    model_frame = None
    if rows <= eng.trial_max_rows:
        workers = sorted(client.scheduler_info()["workers"])
        data = [
            client.submit(load_split, path, signature.to_dict(), cfg.cv_folds, cfg.seed,
                          workers=[w], allow_other_workers=False, pure=False)
            for w in workers
        ]  # fmt: skip
        first = data[0].result()
        _check_folds(first["y"], first["fold"], cfg.cv_folds, obj.task, signature.classes)
        y_all = first["y"]
        del first
        result = tune_on_workers(
            client, data, kinds, cfg, obj.primary_metric, obj.task, n_classes, say
        )
        win = result.winner
        oof = prediction_frame(win.cv.oof, y_all, obj.task, signature.classes)
    else:
        model_frame = _pinned(client, _model_parts(ddf, signature, cfg.cv_folds, cfg.seed))
        result = TuningResult(metric=obj.primary_metric, folds=cfg.cv_folds)
        base = fixed_params("xgboost", cfg)
        if cfg.trials_for("xgboost"):
            say("tuning above engine.trial_max_rows runs trial 0 only (each trial boosts across "
                "the whole cluster); lower the data or raise trial_max_rows to search")  # fmt: skip
        start = time.perf_counter()
        cv, (out, y_s) = dask_cv(
            client, model_frame, base, cfg, obj.primary_metric, obj.task, n_classes
        )
        seconds = time.perf_counter() - start
        rec = TrialRecord("xgboost", 0, base, cv.mean, cv.std, cv.final_rounds, seconds)
        result.records.append(rec)
        result.candidates["xgboost"] = CandidateResult("xgboost", 0, base, cv, base, cv, 1)
        say(f"xgboost trial 0 (untuned): cv {obj.primary_metric} {cv.mean:.4f} ± {cv.std:.4f}")
        if cfg.baseline == "xgboost":
            result.baseline = result.candidates["xgboost"]
        win = result.winner
        oof = prediction_frame(out, y_s, obj.task, signature.classes)

    if win.name == "xgboost":
        if model_frame is None:
            model_frame = _pinned(client, _model_parts(ddf, signature, cfg.cv_folds, cfg.seed))
        rounds = win.cv.final_rounds or int(win.params.get("n_estimators", 100))
        say(f"final fit: xgboost.dask, {rounds} rounds on {rows} rows in "
            f"{model_frame.npartitions} partition(s)")  # fmt: skip
        booster, _ = dask_boost(client, model_frame, win.params, cfg, obj.task, n_classes, rounds)
        booster.set_param({"nthread": 0})
        final = FitResult(XGBoostModel(booster, obj.task, n_classes), rounds)
    else:
        final = client.submit(
            fit_on_worker, data[0], win.name, win.params, cfg, obj.task, n_classes,
            win.cv.final_rounds, pure=False,
        ).result()  # fmt: skip
    baseline = None
    if result.baseline:
        b = result.baseline
        if b.name == win.name and b.params == win.params:
            baseline = final
        elif b.name == "xgboost":
            if model_frame is None:
                model_frame = _pinned(client, _model_parts(ddf, signature, cfg.cv_folds, cfg.seed))
            rounds = b.cv.final_rounds or int(b.params.get("n_estimators", 100))
            booster, _ = dask_boost(client, model_frame, b.params, cfg, obj.task, n_classes, rounds)
            booster.set_param({"nthread": 0})
            baseline = FitResult(XGBoostModel(booster, obj.task, n_classes), rounds)
        elif rows <= eng.trial_max_rows:
            baseline = client.submit(
                fit_on_worker, data[0], b.name, b.params, cfg, obj.task, n_classes,
                b.cv.final_rounds, pure=False,
            ).result()  # fmt: skip
    del sample
    finish(params, signature, result, final, baseline, oof, rows)
