"""The train stage on the Dask engine: trials side by side on the workers, folds by row hash,
the final XGBoost model boosted across the cluster by ``xgboost.dask``.

- **The signature** comes from aggregates: every category of every text column (distinct
  values over all partitions, sorted as the local engine sorts them) and a seeded sample of
  rows (at most ``SAMPLE_ROWS``, chosen by row hash) for the types and any feature selection;
  for data of that size or less it is the local engine's signature.
- **Folds** are assigned by a hash of each row's model inputs and target: fold
  ``floor(u * k)`` for ``u`` = :func:`mlcycle.datasets.unit_interval` of the row's hash keyed by
  ``train.seed``. A row lands in the same fold whatever the partitioning or the number of
  workers. A fold that would be empty, or whose training part lacks a class, is refused.
- **Tuning**, when the training split has at most ``engine.trial_max_rows`` rows: every worker
  reads the split once (the driver never holds it), and every fold of every trial is a task on
  a worker running the local engine's fold code (:func:`mlcycle.tuning.fit_fold`; for XGBoost
  the inner early-stopping slice is chosen by row hash, keyed by ``seed + 1 + fold``, as on
  the xgboost.dask path below, so no result depends on the row order). Optuna
  proposes trials in batches of ``BATCH`` (its ask/tell interface, on the driver); a batch's
  trials run fold by fold, and between folds the pruner (``train.tuning.pruner``) is asked
  about each trial in trial-number order; the scores are told in trial-number order. So the
  trials, their scores, the pruned ones and the winner are the same on a rerun, with any
  number of workers.
- Above ``engine.trial_max_rows`` only XGBoost is a candidate; its trials run one after
  another, each fold boosted across the cluster (``xgboost.dask``) on the partitions of the
  other folds, early-stopped on a hash-chosen inner slice (``train.validation_fraction``,
  hash keyed by ``seed + 1 + fold``), and scored on a hash-chosen sample of at most
  ``SCORE_ROWS`` held-out rows per fold. The pruner applies between folds here too.
- **The scikit-learn candidates** need the split in one process: above
  ``engine.sklearn_max_rows`` (or ``trial_max_rows``) rows they are skipped, with a message.
- **The final model** of XGBoost is boosted with ``xgboost.dask`` on the partitions, pinned to
  the workers in a fixed order, with the rounds the folds chose: a plain Booster saved as
  model.ubj, so evaluation, the bundle and the service do not know which engine made it. A
  scikit-learn winner (small data only) is fitted on a worker and sent back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import pandas as pd

from mlcycle import config, tasks
from mlcycle.datasets import dataset_rows, row_hash, sample_dataset, unit_interval
from mlcycle.engines.base import EngineError, Say, Trained
from mlcycle.engines.dask.cluster import bounded, guarded, peer_timeout, worker_info
from mlcycle.engines.dask.data import read_dataset
from mlcycle.features import Feature, Signature, encode_target, infer_signature, to_model_frame
from mlcycle.metrics import kpi, prediction_frame
from mlcycle.models import FitResult, adapter, fit
from mlcycle.tasks import DEFAULT_THRESHOLD
from mlcycle.tuning import (
    CandidateResult,
    CVResult,
    FoldError,
    FoldResult,
    TrialRecord,
    TuningResult,
    _best,
    distributions,
    fit_fold,
    fit_options,
    fixed_params,
    make_study,
    patience_message,
    score,
    should_stop,
    should_stop_search,
    suggest,
)

if TYPE_CHECKING:
    import dask.dataframe as dd
    from distributed import Client, Future

SAMPLE_ROWS = 100_000  # rows the signature's types and feature selection are taken from
BATCH = 4  # trials Optuna proposes before it hears their scores (fixed: the results do not
# depend on the number of workers)
SCORE_ROWS = 200_000  # held-out rows a fold of an xgboost.dask trial is scored on
OOF_ROWS = 1_000_000  # out-of-fold predictions kept for the decision threshold (large data)
_ROW_KEY = "__h"  # the model frame's per-row hash column (large data)


# --- the signature and folds ---------------------------------------------------------------------


def dask_signature(
    ddf: dd.DataFrame, path: str | Path, params: config.Params, say: Say | None = None
) -> Signature:
    """The signature of the training split ``ddf`` (read from ``path``): the types and any
    feature selection from a seeded sample of at most ``SAMPLE_ROWS`` rows, the categories of
    every text column from all rows (distinct values per partition, merged on the driver)."""
    import dask

    obj, cfg = params.objectives, params.train
    sample = sample_dataset(path, SAMPLE_ROWS, seed=cfg.seed)
    meta = ddf._meta
    text = [
        c
        for c in meta.columns
        if pd.api.types.is_bool_dtype(meta[c].dtype)
        or not pd.api.types.is_numeric_dtype(meta[c].dtype)
    ]
    distinct = [ddf[c].dropna().astype(str).drop_duplicates() for c in text]
    uniques = bounded("the text columns' categories", lambda: dask.compute(*distinct))
    sig = infer_signature(
        sample, obj.target, obj.positive_class, params.features, seed=cfg.seed,
        progress=say, task=obj.task,
    )  # fmt: skip
    del sample
    # The sample may miss rare categories and classes: take them from all the rows.
    every = {c: tuple(sorted(set(u.tolist()))) for c, u in zip(text, uniques, strict=True)}
    if tasks.get(obj.task).classification and obj.target in every:
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

    return replace(sig, features=widen(sig.features), inputs=widen(sig.inputs))


def hash_columns(sig: Signature) -> list[str]:
    """The columns a row's fold is hashed over: the model's raw inputs and the target."""
    return [*sig.input_columns, sig.target]


def hash_folds(frame: pd.DataFrame, columns: list[str], folds: int, seed: int) -> np.ndarray:
    """Each row's fold, ``floor(u * folds)`` for ``u`` the unit-interval hash of the row's
    ``columns`` keyed by ``seed``: the same row gets the same fold in any partition."""
    u = unit_interval(row_hash(frame[columns], seed, "folds"))
    return np.minimum((u * folds).astype(np.int64), folds - 1).astype(np.int8)


def row_hashes(frame: pd.DataFrame, sig: Signature, seed: int) -> np.ndarray:
    """Each row's hash over its inputs and target (keyed by ``seed``): the key from which the
    inner early-stopping slices and the scoring sample are chosen, on either path."""
    return row_hash(frame[hash_columns(sig)], seed, "rows").to_numpy()


def _share(h: np.ndarray, seed: int, purpose: str) -> np.ndarray:
    """Unit-interval hashes for one decision (``purpose``, ``seed``) from rows' hashes ``h``."""
    return unit_interval(row_hash(pd.DataFrame({_ROW_KEY: h}), seed, purpose))


def inner_slice(h: np.ndarray, seed: int, i: int, fraction: float) -> np.ndarray:
    """Which of fold ``i``'s training rows (hashes ``h``) form the inner slice XGBoost
    early-stops on: their hash keyed by ``seed + 1 + i`` is below ``fraction``."""
    return _share(h, seed + 1 + i, "inner") < fraction


def check_folds(
    y: np.ndarray, fold: np.ndarray, folds: int, task: str, classes: tuple[str, ...]
) -> None:
    """Refuse (:class:`FoldError`) folds of which one holds no row or every row, or whose
    training part lacks a class (it could not learn or score it)."""
    counts = np.bincount(fold.astype(np.int64), minlength=folds)
    if tasks.get(task).classification:
        by_class = np.zeros((folds, len(classes)), dtype=np.int64)
        np.add.at(by_class, (fold.astype(np.int64), y.astype(np.int64)), 1)
    else:
        by_class = counts[:, None]
    check_fold_counts(by_class, task, classes)


def check_fold_counts(by_class: np.ndarray, task: str, classes: tuple[str, ...]) -> None:
    """:func:`check_folds` from the rows per (fold, class) (one column for regression)."""
    folds = len(by_class)
    rows = by_class.sum(axis=1)
    total = int(rows.sum())
    for i in range(folds):
        if rows[i] == 0 or rows[i] == total:
            raise FoldError(
                f"fold {i} of train.cv_folds={folds} holds {int(rows[i])} of the {total} "
                "training rows: the training split is too small for that many folds"
            )
    for i in range(folds):
        if tasks.get(task).classification:
            rest = by_class.sum(axis=0) - by_class[i]
            lacking = [classes[c] for c in range(len(classes)) if rest[c] == 0]
            if lacking:
                raise FoldError(
                    f"the training part of fold {i} (train.cv_folds={folds}) lacks class(es) "
                    f"{lacking}: too few rows of them for that many folds"
                )


# --- on the workers (small data) --------------------------------------------------------------


@dataclass(frozen=True)
class SplitData:
    """The training split on one worker: the model frame, encoded target, folds, splits and
    each row's hash (:func:`row_hashes`: the inner early-stopping slices are chosen by it)."""

    X: pd.DataFrame
    y: np.ndarray
    fold: np.ndarray
    splits: list[tuple[np.ndarray, np.ndarray]]
    h: np.ndarray


def load_split(path: str, signature_doc: dict, folds: int, seed: int) -> SplitData:
    """Read the training split at ``path`` and build its model frame (runs on a worker)."""
    sig = Signature.from_dict(signature_doc)
    frame = pd.read_parquet(path)
    X = to_model_frame(frame, sig)
    y = encode_target(frame[sig.target], sig)
    fold = hash_folds(frame, hash_columns(sig), folds, seed)
    idx = np.arange(len(fold))
    splits = [(idx[fold != i], idx[fold == i]) for i in range(folds)]
    return SplitData(X, y, fold, splits, row_hashes(frame, sig, seed))


def target_and_folds(data: SplitData) -> tuple[np.ndarray, np.ndarray]:
    """The encoded target and folds of a worker's split: what the driver needs of it."""
    return data.y, data.fold


def run_fold(
    data: SplitData, kind: str, params: dict[str, Any], cfg: config.TrainConfig, metric: str,
    i: int, task: str, n_classes: int,
) -> tuple[FoldResult, float]:  # fmt: skip
    """Fold ``i`` of one trial; and its seconds (on a worker). The local engine's fold code,
    but for XGBoost the inner slice it early-stops on is chosen by row hash (keyed by
    ``seed + 1 + i``, as on the xgboost.dask path), not by position: the folds' results do not
    depend on how the split is partitioned or ordered.

    One thread (XGBoost's ``nthread``, scikit-learn's ``n_jobs``): every worker thread runs a
    fold of its own, and more threads than cores make every fold slower (OpenMP threads spin
    while they wait). The scores then do not depend on the workers' thread counts either."""
    start = time.perf_counter()
    one = cfg.model_copy(update={"nthread": 1})
    model = adapter(kind)
    if not model.early_stopping:
        out = fit_fold(kind, data.X, data.y, params, one, metric, data.splits, i, task, n_classes)
        return out, time.perf_counter() - start
    train_idx, held = data.splits[i]
    inner = inner_slice(data.h[train_idx], cfg.seed, i, cfg.validation_fraction)
    if not inner.any() or inner.all():
        raise FoldError(
            f"fold {i}: the inner slice for early stopping (train.validation_fraction="
            f"{cfg.validation_fraction}) of its {len(train_idx)} training rows is "
            f"{'empty' if not inner.any() else 'all of them'}; use more rows or another fraction"
        )
    k = tasks.get(task).output_width(n_classes)
    options = fit_options(one)
    del options["validation_fraction"]  # the inner slice is chosen here
    fitted = model.fit_early_stopped(
        data.X.iloc[train_idx], data.y[train_idx], params, task, k,
        np.flatnonzero(~inner), np.flatnonzero(inner), **options,
    )  # fmt: skip
    output = fitted.model.output(data.X.iloc[held])
    result = FoldResult(i, score(metric, data.y[held], output, task), output, fitted.rounds,
                        fitted.curves.get("valid", {}))  # fmt: skip
    return result, time.perf_counter() - start


def fit_on_worker(
    data: SplitData, kind: str, params: dict[str, Any], cfg: config.TrainConfig, task: str,
    n_classes: int, rounds: int | None,
) -> FitResult:  # fmt: skip
    """A final fit on a worker's copy of the split (small data only; the model is sent back),
    with as many threads as the worker has."""
    from distributed import get_worker

    threads = get_worker().state.nthreads
    return fit(
        kind, data.X, data.y, params, task, n_classes, rounds=rounds,
        **fit_options(cfg, threads=threads),
    )  # fmt: skip


# --- the search: Optuna on the driver, folds elsewhere -----------------------------------------


@dataclass
class Outcome:
    """A trial's folds: all of them (``cv``), or the ones it ran before it was pruned."""

    folds: list[FoldResult]
    seconds: float
    cv: CVResult | None = None  # None: pruned

    @property
    def scores(self) -> list[float]:
        return [f.score for f in self.folds]


# Runs a batch of trials, given their params and Optuna trials (None: trial 0); returns each
# trial's outcome, pruning between folds through mlcycle.tuning.should_stop in trial order.
RunBatch = Callable[[list[dict[str, Any]], list[Any]], list[Outcome]]


def _light(cv: CVResult) -> CVResult:
    """``cv`` without its out-of-fold predictions (kept for the best trial only)."""
    return replace(cv, oof=np.empty(0))


def search_candidate(
    kind: str, cfg: config.TrainConfig, metric: str, run_batch: RunBatch, batch: int, say: Say
) -> tuple[CandidateResult, list[TrialRecord]]:
    """Trial 0 (the fixed params) and the Optuna search of one candidate, ``batch`` trials
    asked at a time, their results told in trial-number order: deterministic whatever runs
    the folds. A configuration proposed again is not refitted (as on the local engine)."""
    base = fixed_params(kind, cfg)
    budget = cfg.trials_for(kind)
    records: list[TrialRecord] = []
    seen: dict[str, CVResult] = {}
    best: dict[str, Any] = {}

    def record(params: dict[str, Any], outcome: Outcome) -> None:
        number = len(records)
        if outcome.cv is None:
            scores = outcome.scores
            records.append(
                TrialRecord(kind, number, params, float(np.mean(scores)), float(np.std(scores)),
                            None, outcome.seconds, pruned_after=len(scores))
            )  # fmt: skip
            return
        cv = outcome.cv
        records.append(
            TrialRecord(kind, number, params, cv.mean, cv.std, cv.final_rounds, outcome.seconds)
        )
        if _best(records, metric).trial == number:
            best.update(params=params, cv=cv, trial=number)
        seen.setdefault(json.dumps(params, sort_keys=True, default=str), _light(cv))

    say(f"{kind}: trial 0 (untuned) + {budget} search trial(s), {cfg.cv_folds}-fold CV by row "
        f"hash, {batch} trial(s) at a time")  # fmt: skip
    (first,) = run_batch([base], [None])
    untuned = first.cv
    assert untuned is not None  # trial 0 is never pruned
    record(base, first)
    say(f"{kind} trial 0 (untuned): cv {metric} {untuned.mean:.4f} ± {untuned.std:.4f}")
    if budget:
        dists = distributions(cfg.search.get(kind, {}))
        study = make_study(cfg, metric, budget, base, untuned, dists)
        every = max(1, budget // 5)
        done = 0
        start = time.perf_counter()
        while done < budget:
            if cfg.tuning_timeout and time.perf_counter() - start > cfg.tuning_timeout:
                say(f"{kind}: train.tuning.timeout of {cfg.tuning_timeout}s reached after "
                    f"{done} trial(s)")  # fmt: skip
                break
            trials = [study.ask() for _ in range(min(batch, budget - done))]
            asked = [{**base, **suggest(t, dists)} for t in trials]
            keys = [json.dumps(p, sort_keys=True, default=str) for p in asked]
            fresh = [j for j, k in enumerate(keys) if k not in seen]
            ran = run_batch([asked[j] for j in fresh], [trials[j] for j in fresh])
            outcomes: dict[int, Outcome] = dict(zip(fresh, ran, strict=True))
            for j, (trial, params, key) in enumerate(zip(trials, asked, keys, strict=True)):
                outcome = outcomes.get(j)
                if outcome is None:  # proposed again: the same folds, the same scores
                    cv = seen[key]
                    for i in range(len(cv.scores)):
                        trial.report(float(np.mean(cv.scores[: i + 1])), step=i)
                    outcome = Outcome([], 0.0, cv)
                record(params, outcome)
                if outcome.cv is None:
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                else:
                    study.tell(trial, outcome.cv.mean)
            before, done = done, done + len(trials)
            if done // every != before // every or done == budget:
                top = _best(records, metric)
                pruned = sum(r.pruned for r in records)
                say(f"{kind} trial {done}/{budget}: best cv {metric} {top.cv_mean:.4f} (trial "
                    f"{top.trial}); {pruned} pruned so far")  # fmt: skip
            if done < budget and should_stop_search(records, metric, cfg.tuning_patience):
                say(patience_message(kind, records, metric, cfg.tuning_patience, budget))
                break
    result = CandidateResult(
        kind, best["trial"], best["params"], best["cv"], base, untuned, len(records)
    )
    return result, records


def worker_batches(
    client: Client,
    data: list[Future],
    kind: str,
    cfg: config.TrainConfig,
    metric: str,
    task: str,
    n_classes: int,
    fold_rows: list[np.ndarray],
    n_rows: int,
) -> RunBatch:
    """A :data:`RunBatch` whose folds are tasks on the workers holding the split (``data``,
    one future per worker): fold ``i`` of every running trial side by side, then the pruner,
    then fold ``i + 1`` of those it kept. ``fold_rows[i]`` are fold i's held-out positions."""
    k = len(fold_rows)
    splits = [(np.empty(0, dtype=np.int64), rows) for rows in fold_rows]
    slot = 0

    def run(asked: list[dict[str, Any]], trials: list[Any]) -> list[Outcome]:
        nonlocal slot
        outcomes = [Outcome([], 0.0) for _ in asked]
        running = list(range(len(asked)))
        for i in range(k):
            futures = {}
            for j in running:
                futures[j] = client.submit(
                    run_fold, data[slot % len(data)], kind, asked[j], cfg, metric, i, task,
                    n_classes, pure=False,
                )  # fmt: skip
                slot += 1
            kept = []
            for j in running:  # trial-number order: the pruner's answers do not depend on
                # which trial finished first
                fold, seconds = bounded(f"{kind}: fold {i} of a trial", futures[j].result)
                outcomes[j].folds.append(fold)
                outcomes[j].seconds += seconds
                if trials[j] is not None and should_stop(trials[j], outcomes[j].folds, k):
                    continue
                kept.append(j)
            running = kept
        for j in running:
            o = outcomes[j]
            o.cv = CVResult.from_folds(o.folds, splits, n_rows, n_classes, task)
            o.folds = []  # their outputs live on in o.cv.oof
        return outcomes

    return run


def tune_on_workers(
    client: Client,
    data: list[Future],
    kinds: list[str],
    cfg: config.TrainConfig,
    metric: str,
    task: str,
    n_classes: int,
    fold_rows: list[np.ndarray],
    n_rows: int,
    say: Say,
    baseline: str | None,
) -> TuningResult:
    """Every candidate's trial 0 and search, folds as tasks on the workers (small data); the
    untuned ``baseline`` kind (if any) cross-validated too."""
    result = TuningResult(metric=metric, folds=cfg.cv_folds)
    for kind in kinds:
        run = worker_batches(client, data, kind, cfg, metric, task, n_classes, fold_rows, n_rows)
        candidate, records = search_candidate(kind, cfg, metric, run, BATCH, say)
        result.candidates[kind] = candidate
        result.records.extend(records)
        _say_best(say, candidate, metric)
    _baseline(result, baseline, cfg, metric, say, lambda kind: worker_batches(
        client, data, kind, cfg, metric, task, n_classes, fold_rows, n_rows))  # fmt: skip
    return result


def _say_best(say: Say, c: CandidateResult, metric: str) -> None:
    say(f"{c.name}: best cv {metric} {c.cv.mean:.4f} ± {c.cv.std:.4f} (trial {c.best_trial} of "
        f"{c.trials}; untuned {c.untuned.mean:.4f})")  # fmt: skip


def _baseline(
    result: TuningResult, baseline: str | None, cfg: config.TrainConfig, metric: str, say: Say,
    runner: Callable[[str], RunBatch],
) -> None:  # fmt: skip
    """Set ``result.baseline``: a candidate's trial 0, or the kind cross-validated untuned."""
    if baseline in result.candidates:
        c = result.candidates[baseline]
        result.baseline = CandidateResult(
            c.name, 0, c.untuned_params, c.untuned, c.untuned_params, c.untuned, 1
        )
    elif baseline:
        params = fixed_params(baseline, cfg)
        (outcome,) = runner(baseline)([params], [None])
        cv = outcome.cv
        assert cv is not None
        result.baseline = CandidateResult(baseline, 0, params, cv, params, cv, 1)
        say(f"baseline {baseline} (untuned): cv {metric} {cv.mean:.4f} ± {cv.std:.4f}")


# --- xgboost.dask (large data) ---------------------------------------------------------------


def model_parts(ddf: dd.DataFrame, sig: Signature, folds: int, seed: int) -> dd.DataFrame:
    """The model frame per partition, with the encoded target (``__y``), each row's fold
    (``__fold``) and a hash of its inputs and target (``__h``) for the inner slices and the
    scoring sample."""
    columns = hash_columns(sig)

    def convert(part: pd.DataFrame) -> pd.DataFrame:
        X = to_model_frame(part, sig).reset_index(drop=True)
        X["__y"] = encode_target(part[sig.target], sig).astype("float64")
        X["__fold"] = hash_folds(part, columns, folds, seed)
        X[_ROW_KEY] = row_hashes(part, sig, seed)
        return X

    meta = convert(ddf._meta)
    return ddf.map_partitions(convert, meta=meta)


def rank_order(client: Client) -> list[str]:
    """The workers' addresses in the order ``xgboost.dask`` ranks them (by the task id
    "[xgboost.dask-<name>]:<address>" it gives each worker)."""
    info = worker_info(client)
    return sorted(info, key=lambda a: f"[xgboost.dask-{info[a].get('name', a)}]:{a}")


def pinned(client: Client, frame: dd.DataFrame) -> tuple[dd.DataFrame, list[Future]]:
    """``frame`` computed and held with partition i on the worker of rank i mod n (see
    :func:`rank_order`): a rerun, or another cluster of as many workers, boosts the same
    partitions on the same ranks in the same order, and sums their histograms alike. Also the
    partitions' futures (to cancel when a worker holding some is lost)."""
    import dask.dataframe as dd

    workers = rank_order(client)
    if not workers:
        raise EngineError("no Dask worker is left to hold the training partitions")
    futures = [
        client.compute(p, workers=[workers[i % len(workers)]], allow_other_workers=False)
        for i, p in enumerate(frame.to_delayed())
    ]
    return dd.from_delayed(futures, meta=frame._meta, verify_meta=False), futures


def cluster_options(cfg: config.TrainConfig) -> dict[str, Any]:
    """The keyword arguments of :meth:`mlcycle.models.Model.fit_distributed` from the
    settings (threads are each worker's own; peers wait :func:`peer_timeout`)."""
    return {"seed": cfg.seed, "device": cfg.device, "class_weight": cfg.class_weight,
            "peer_timeout": peer_timeout()}  # fmt: skip


def dask_fold(
    client: Client,
    frame: dd.DataFrame,
    kind: str,
    params: dict[str, Any],
    cfg: config.TrainConfig,
    metric: str,
    task: str,
    n_classes: int,
    i: int,
    rows: int,
) -> tuple[FoldResult, np.ndarray]:
    """Fold ``i`` boosted across the cluster: trained on the other folds less an inner slice
    (hash keyed by ``seed + 1 + i``) it early-stops on, scored on a hash-chosen sample of at
    most ``SCORE_ROWS`` of its held-out rows. Returns the fold (its output: the scored rows')
    and their encoded target."""
    seed, fraction = cfg.seed, cfg.validation_fraction
    share = min(1.0, SCORE_ROWS * cfg.cv_folds / max(rows, 1), OOF_ROWS / max(rows, 1))
    features = [c for c in frame.columns if not c.startswith("__")]
    rest = frame[frame["__fold"] != i]
    inner = rest.map_partitions(
        lambda p: pd.Series(inner_slice(p[_ROW_KEY].to_numpy(), seed, i, fraction), p.index),
        meta=("inner", bool),
    )
    n_rounds = int(params.get("n_estimators", 100))
    early = params.get("early_stopping_rounds")
    fitted = bounded(f"{kind}: fold {i} of a trial (xgboost.dask)", lambda: adapter(
        kind).fit_distributed(client, rest[~inner], params, task, n_classes, n_rounds,
                              valid=rest[inner], early=early, **cluster_options(cfg)))  # fmt: skip
    held = frame[frame["__fold"] == i]
    held = held[
        held.map_partitions(
            lambda p: pd.Series(_share(p[_ROW_KEY].to_numpy(), seed, "score") < share, p.index),
            meta=("s", bool),
        )
    ]
    pred = fitted.model.predict_distributed(client, held[features])
    y_held, p_held = bounded(f"{kind}: fold {i}'s held-out predictions",  # one pass over rows
                             lambda: client.compute([held["__y"], pred], sync=True))  # fmt: skip
    y = np.asarray(y_held).astype(tasks.get(task).target_dtype(), copy=False)
    out = fitted.model.output_from_raw(np.asarray(p_held))
    score = float(kpi(task, metric, y, out, DEFAULT_THRESHOLD))
    curve = fitted.curves.get("valid", {})
    return FoldResult(i, score, out, fitted.rounds, curve), y


def cluster_batches(
    client: Client,
    frame: dd.DataFrame,
    kind: str,
    cfg: config.TrainConfig,
    metric: str,
    task: str,
    n_classes: int,
    rows: int,
    truth: dict[str, np.ndarray],
) -> RunBatch:
    """A :data:`RunBatch` for large data: each trial's folds of ``kind`` (a
    :attr:`~mlcycle.models.Model.distributed` kind) fitted across the whole cluster
    one after another (trials sequential), the pruner asked after each fold. The scored rows'
    target of the last completed trial goes to ``truth["y"]`` (the same rows every trial)."""
    k = cfg.cv_folds

    def run(asked: list[dict[str, Any]], trials: list[Any]) -> list[Outcome]:
        outcomes = []
        for params, trial in zip(asked, trials, strict=True):
            o = Outcome([], 0.0)
            ys = []
            for i in range(k):
                start = time.perf_counter()
                fold, y = dask_fold(client, frame, kind, params, cfg, metric, task, n_classes, i,
                                    rows)  # fmt: skip
                o.seconds += time.perf_counter() - start
                o.folds.append(fold)
                ys.append(y)
                if trial is not None and should_stop(trial, o.folds, k):
                    break
            else:
                o.cv = CVResult(
                    tuple(f.score for f in o.folds),
                    np.concatenate([f.output for f in o.folds]),
                    tuple(f.rounds for f in o.folds),  # type: ignore[misc]
                    tuple(f.valid_curve for f in o.folds),
                )
                o.folds = []
                truth["y"] = np.concatenate(ys)
            outcomes.append(o)
        return outcomes

    return run


# --- the stage ---------------------------------------------------------------------------


def trainable(
    cfg: config.TrainConfig, eng: config.EngineConfig, rows: int, say: Say
) -> tuple[list[str], str | None]:
    """The candidates and the baseline that can train on ``rows`` rows on the cluster: above
    ``engine.sklearn_max_rows`` (or ``trial_max_rows``) scikit-learn's, which need every row in
    one process, are skipped, saying so; none left is an error naming the settings."""
    limit = min(eng.sklearn_max_rows, eng.trial_max_rows)
    kinds = list(cfg.candidates)
    sklearn = [k for k in kinds if not adapter(k).distributed]
    if sklearn and rows > limit:
        say(f"skipping {sklearn}: the training split has {rows} rows, more than {limit} "
            "(engine.sklearn_max_rows / trial_max_rows); scikit-learn needs it in one "
            "process")  # fmt: skip
        kinds = [k for k in kinds if adapter(k).distributed]
    if not kinds:
        raise ValueError(
            f"train.candidates {list(cfg.candidates)}: none can train on {rows} rows on the "
            "Dask engine; add xgboost, or raise engine.sklearn_max_rows"
        )
    baseline_kind = cfg.baseline
    if baseline_kind and not adapter(baseline_kind).distributed and rows > limit:
        say(f"no baseline: train.baseline {baseline_kind} is scikit-learn and the training "
            f"split has more than {limit} rows")  # fmt: skip
        baseline_kind = None
    return kinds, baseline_kind


def tune_in_memory(
    client: Client,
    path: str,
    signature: Signature,
    params: config.Params,
    kinds: list[str],
    baseline_kind: str | None,
    rows: int,
    say: Say,
) -> tuple[list[Future], TuningResult, pd.DataFrame]:
    """Tune a split small enough for one worker's memory: every worker loads it once, trials
    run where it is; returns the loaded copies (for the final fit), the tuning result and the
    winner's out-of-fold predictions."""
    obj, cfg = params.objectives, params.train
    n_classes = tasks.get(obj.task).output_width(len(signature.classes))
    data = [
        client.submit(load_split, path, signature.to_dict(), cfg.cv_folds, cfg.seed,
                      workers=[w], allow_other_workers=False, pure=False)
        for w in sorted(worker_info(client))
    ]  # fmt: skip
    y, fold = bounded("loading the training split on the workers",
                      client.submit(target_and_folds, data[0], pure=False).result)  # fmt: skip
    check_folds(y, fold, cfg.cv_folds, obj.task, signature.classes)
    fold_rows = [np.flatnonzero(fold == i) for i in range(cfg.cv_folds)]
    del fold
    result = tune_on_workers(
        client, data, kinds, cfg, obj.primary_metric, obj.task, n_classes, fold_rows, rows, say,
        baseline_kind,
    )  # fmt: skip
    oof = prediction_frame(result.winner.cv.oof, y, obj.task, signature.classes)
    return data, result, oof


def train_dask(params: config.Params, client: Client, path: str | Path, say: Say) -> Trained:
    """Tune, select and fit on the cluster from the training split at ``path`` (a file or a
    folder of parts); the driver holds aggregates, per-fold results and the chosen model.
    Every blocking call is bounded (:func:`~mlcycle.engines.dask.cluster.guarded`); the
    workers lost and the retries go to ``Trained.cluster``."""
    with guarded(client, params.engine, dataset_rows(path), say) as guard:
        trained = _train(params, client, path, say)
    return replace(trained, cluster=guard.report())


def _train(params: config.Params, client: Client, path: str | Path, say: Say) -> Trained:
    obj, cfg, eng = params.objectives, params.train, params.engine
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = str(Path(path).resolve())
    rows = dataset_rows(path)
    ddf = read_dataset(path)
    signature = dask_signature(ddf, path, params, say)
    n_classes = tasks.get(obj.task).output_width(len(signature.classes))
    metric = obj.primary_metric
    small = rows <= eng.trial_max_rows
    kinds, baseline_kind = trainable(cfg, eng, rows, say)
    say(f"{obj.task}: {rows} rows, {len(signature.features)} features; candidates {kinds}, "
        f"selected by cv {metric}")  # fmt: skip

    frame = None  # the pinned model frame for xgboost.dask, built when first needed
    placed: list[Future] = []  # its partitions

    def model_frame() -> dd.DataFrame:
        nonlocal frame, placed
        if frame is None:
            frame, placed = pinned(client, model_parts(ddf, signature, cfg.cv_folds, cfg.seed))
        return frame

    data: list[Future] = []
    if small:
        data, result, oof = tune_in_memory(
            client, path, signature, params, kinds, baseline_kind, rows, say
        )
        win = result.winner
    else:
        check_fold_counts(_fold_counts(model_frame(), cfg.cv_folds, obj.task, n_classes),
                          obj.task, signature.classes)  # fmt: skip
        truth: dict[str, np.ndarray] = {}

        def run_for(kind: str) -> RunBatch:
            return cluster_batches(client, model_frame(), kind, cfg, metric, obj.task,
                                   n_classes, rows, truth)  # fmt: skip

        result = TuningResult(metric=metric, folds=cfg.cv_folds)
        for kind in kinds:  # the distributed kinds: the others were skipped above
            candidate, records = search_candidate(kind, cfg, metric, run_for(kind), 1, say)
            result.candidates[kind] = candidate
            result.records.extend(records)
            _say_best(say, candidate, metric)
        _baseline(result, baseline_kind, cfg, metric, say, run_for)
        win = result.winner
        oof = prediction_frame(win.cv.oof, truth["y"], obj.task, signature.classes)

    def again() -> None:
        """A worker was lost: the partitions pinned to it can run nowhere else; place them
        all again on the workers left (the same keys: the old tasks are cancelled first)."""
        nonlocal frame
        client.cancel(placed, force=True)
        frame = None

    def final_fit(kind: str, chosen: dict[str, Any], cv: CVResult, what: str) -> FitResult:
        model = adapter(kind)
        if model.distributed:
            rounds = cv.final_rounds or int(chosen.get("n_estimators", 100))
            say(f"{what}: {kind} across the cluster, {rounds} rounds on {rows} rows in "
                f"{model_frame().npartitions} partition(s)")  # fmt: skip
            return bounded(f"the {what} ({kind}, xgboost.dask)", lambda: model.fit_distributed(
                client, model_frame(), chosen, obj.task, n_classes, rounds,
                **cluster_options(cfg)), again)  # fmt: skip
        say(f"{what}: {kind} on one worker")
        return bounded(f"the {what} ({kind}, on a worker)", lambda: client.submit(
            fit_on_worker, data[0], kind, chosen, cfg, obj.task, n_classes, cv.final_rounds,
            pure=False).result())  # fmt: skip

    say(f"winner: {win.name} (trial {win.best_trial}), ranking {result.ranking}")
    final = final_fit(win.name, win.params, win.cv, "final fit")
    baseline = result.refit_baseline(
        final, lambda b: final_fit(b.name, b.params, b.cv, "baseline fit")
    )
    for future in data:
        future.release()
    return Trained(signature, result, final, baseline, oof, rows)


def _fold_counts(frame: dd.DataFrame, folds: int, task: str, n_classes: int) -> np.ndarray:
    """Rows per (fold, class) of the model frame (one column for regression), from partition
    counts summed on the driver."""
    k = max(tasks.get(task).output_width(n_classes), 1)

    def counts(part: pd.DataFrame) -> pd.DataFrame:
        f = part["__fold"].to_numpy(np.int64)
        c = part["__y"].to_numpy(np.int64) if k > 1 else np.zeros(len(part), np.int64)
        out = np.bincount(f * k + c, minlength=folds * k)
        return pd.DataFrame([out], columns=[str(j) for j in range(folds * k)])

    meta = pd.DataFrame({str(j): pd.Series([], dtype="int64") for j in range(folds * k)})
    total = bounded("the rows per fold", frame.map_partitions(counts, meta=meta).sum().compute)
    return total.to_numpy().reshape(folds, k)
