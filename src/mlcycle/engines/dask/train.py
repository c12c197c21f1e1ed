"""The train stage on the Dask engine: trials side by side on the workers, the local engine's
folds, the final XGBoost model boosted across the cluster by ``xgboost.dask``.

- **The signature** comes from aggregates: every category of every text column (distinct
  values over all partitions, sorted as the local engine sorts them) and a seeded sample of
  rows (at most ``SAMPLE_ROWS``, chosen by row hash) for the types and any feature selection;
  for data of that size or less it is the local engine's signature.
- **Folds** are the local engine's (:func:`mlcycle.tuning.fold_of_rows`): rows ordered by
  (class, hash of the row's model inputs and target keyed by ``train.seed``) and dealt to the
  folds in turn. A worker holding the whole split deals them itself; above
  ``engine.trial_max_rows`` the rows' classes and hashes (16 bytes a row) are dealt on the
  driver and each partition gets its rows' folds back. A row lands in the same fold whatever
  the partitioning, the number of workers or the engine.
- **Tuning**, when the training split has at most ``engine.trial_max_rows`` rows: every worker
  reads the split once (the driver never holds it; a worker lost, the copies are loaded again on
  the workers left: :class:`Copies`), and every fold of every trial is a task on
  a worker running the local engine's fold code (:func:`mlcycle.tuning.fit_fold`: for XGBoost
  the inner early-stopping slice is chosen by row hash, keyed by ``seed + 1 + fold``, on both
  engines and on the xgboost.dask path below, so no result depends on the row order). Optuna
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

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import optuna
import pandas as pd

from mlcycle import config, tasks
from mlcycle.datasets import dataset_rows, sample_dataset
from mlcycle.engines.base import EngineError, Say, Trained
from mlcycle.engines.dask.cluster import bounded, computed, guarded, peer_timeout, worker_info
from mlcycle.engines.dask.data import read_dataset
from mlcycle.features import Feature, Signature, encode_target, infer_signature, to_model_frame
from mlcycle.metrics import kpi, prediction_frame
from mlcycle.models import FitResult, adapter, fit
from mlcycle.tuning import (
    BATCH,
    NO_DEADLINE,
    NOT_STARTED,
    RUNNING,
    CandidateResult,
    CVResult,
    Deadline,
    FoldError,
    FoldResult,
    Folds,
    Outcome,
    RunBatch,
    TimedOut,
    TuningResult,
    class_weight_search,
    fit_fold,
    fit_options,
    fixed_params,
    fold_of_rows,
    hash_share,
    inner_slice,
    make_folds,
    model_params,
    row_keys,
    search_candidate,
    should_stop,
)

if TYPE_CHECKING:
    import dask.dataframe as dd
    from distributed import Client, Future

SAMPLE_ROWS = 100_000  # rows the signature's types and feature selection are taken from
SCORE_ROWS = 200_000  # held-out rows a fold of an xgboost.dask trial is scored on
OOF_ROWS = 1_000_000  # out-of-fold predictions kept for the decision (large data)
_ROW_KEY = "__h"  # the model frame's per-row hash column (large data)
T = TypeVar("T")


# --- the signature and folds ---------------------------------------------------------------------


def dask_signature(
    ddf: dd.DataFrame, path: str | Path, params: config.Params, say: Say | None = None
) -> Signature:
    """The signature of the training split ``ddf`` (read from ``path``): the types and any
    feature selection from a seeded sample of at most ``SAMPLE_ROWS`` rows, the categories of
    every text column from all rows (distinct values per partition, merged on the driver)."""
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
    uniques = computed("the text columns' categories", *distinct)
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


# --- on the workers (small data) --------------------------------------------------------------


@dataclass(frozen=True)
class SplitData:
    """The training split on one worker: the model frame, encoded target and folds
    (:func:`mlcycle.tuning.make_folds`, as on the local engine)."""

    X: pd.DataFrame
    y: np.ndarray
    splits: Folds


def load_split(path: str, signature_doc: dict, cfg: config.TrainConfig) -> SplitData:
    """Read the training split at ``path`` and build its model frame and folds (runs on a
    worker)."""
    sig = Signature.from_dict(signature_doc)
    frame = pd.read_parquet(path)
    X = to_model_frame(frame, sig)
    y = encode_target(frame[sig.target], sig)
    return SplitData(X, y, make_folds(X, y, cfg, sig.task, sig.classes))


class Copies:
    """The training split loaded once on every worker (small data), the work on it
    (:meth:`run`), and the copies placed again when a worker is lost (:meth:`reload`): a copy
    is bound to its worker, so a lost one could be loaded nowhere else (a nanny restarts a
    worker under a new address), and the work that needs it would wait until the deadline."""

    def __init__(self, client: Client, path: str, signature: Signature, cfg: config.TrainConfig):
        self.client, self.path, self.cfg = client, path, cfg
        self.signature = signature.to_dict()
        self.placed: dict[str, Future] = {}  # worker address: its copy
        self.running: list[Future] = []  # the tasks of the current run()
        self.turn = 0
        self.reload()

    def reload(self) -> None:
        """Cancel the running tasks (their run is retried: it must not compete with itself)
        and the copies of workers gone; load one on each worker now present that has none."""
        present = set(worker_info(self.client))
        gone = [self.placed.pop(w) for w in sorted(self.placed) if w not in present]
        if self.running or gone:
            self.client.cancel([*self.running, *gone], force=True)
        self.running = []
        for w in sorted(present - set(self.placed)):
            self.placed[w] = self.client.submit(
                load_split, self.path, self.signature, self.cfg, workers=[w],
                allow_other_workers=False, pure=False,
            )  # fmt: skip
        if not self.placed:
            raise EngineError("no Dask worker is left to hold the training split")

    def run(self, fn: Callable[..., T], calls: list[tuple[Any, ...]]) -> list[T]:
        """``fn(copy, *args)`` for each ``args`` of ``calls``, side by side: tasks on the
        copies in turn, gathered. Any copy gives the same result."""
        copies = [self.placed[w] for w in sorted(self.placed)]
        futures = [
            self.client.submit(fn, copies[(self.turn + n) % len(copies)], *args, pure=False)
            for n, args in enumerate(calls)
        ]
        self.turn += len(futures)
        self.running = futures
        done = self.client.gather(futures)
        if self.running is futures:  # not yet replaced by a retry
            self.running = []
        return done

    def release(self) -> None:
        """Drop the copies (the workers free their memory)."""
        for future in self.placed.values():
            future.release()
        self.placed = {}


def target_and_folds(data: SplitData) -> tuple[np.ndarray, list[np.ndarray]]:
    """The encoded target and each fold's held-out positions (in the order the fold's outputs
    come in) of a worker's split: what the driver needs of it."""
    return data.y, [held for _, held in data.splits]


def run_fold(
    data: SplitData, kind: str, params: dict[str, Any], cfg: config.TrainConfig, metric: str,
    i: int, task: str, n_classes: int, deadline: Deadline = NO_DEADLINE,
) -> tuple[FoldResult | None, float]:  # fmt: skip
    """Fold ``i`` of one trial; and its seconds (on a worker): the local engine's fold code
    on the same folds. None for the fold when the candidate's ``deadline`` passed before it
    started (0 seconds) or during it (it stops at its next boosting round).

    One thread (XGBoost's ``nthread``, scikit-learn's ``n_jobs``): every worker thread runs a
    fold of its own, and more threads than cores make every fold slower (OpenMP threads spin
    while they wait). The scores then do not depend on the workers' thread counts either."""
    if deadline.passed():
        return None, 0.0
    start = time.perf_counter()
    one = cfg.model_copy(update={"nthread": 1})
    on_round = deadline.check if deadline.at is not None else None
    try:
        out = fit_fold(kind, data.X, data.y, params, one, metric, data.splits, i, task,
                       n_classes, on_round)  # fmt: skip
    except TimedOut:
        return None, time.perf_counter() - start
    return out, time.perf_counter() - start


def fit_on_worker(
    data: SplitData, kind: str, params: dict[str, Any], cfg: config.TrainConfig, task: str,
    n_classes: int, rounds: int | None,
) -> FitResult:  # fmt: skip
    """A final fit on a worker's copy of the split (small data only; the model is sent back),
    with as many threads as the worker has."""
    from distributed import get_worker

    threads = get_worker().state.nthreads
    return fit(
        kind, data.X, data.y, model_params(params), task, n_classes, rounds=rounds,
        **fit_options(cfg, threads=threads, params=params),
    )  # fmt: skip


# --- the search: Optuna on the driver, folds elsewhere -----------------------------------------


def worker_batches(
    copies: Copies,
    kind: str,
    cfg: config.TrainConfig,
    metric: str,
    task: str,
    n_classes: int,
    fold_rows: list[np.ndarray],
    n_rows: int,
) -> RunBatch:
    """A :data:`RunBatch` whose folds are tasks on the workers holding the split (``copies``):
    fold ``i`` of every running trial side by side (a round, run again on the copies placed
    anew when a worker is lost), then the pruner, then fold ``i + 1`` of those it kept.
    ``fold_rows[i]`` are fold i's held-out positions. Once the deadline has passed no round
    starts, and a fold running then stops at its next boosting round: its trial is cancelled
    (:attr:`Outcome.cancelled`)."""
    k = len(fold_rows)
    splits = [(np.empty(0, dtype=np.int64), rows) for rows in fold_rows]

    def run(asked: list[dict[str, Any]], trials: list[Any], deadline: Deadline) -> list[Outcome]:
        outcomes = [Outcome([], 0.0) for _ in asked]
        running = list(range(len(asked)))
        for i in range(k):
            if running and deadline.passed():
                for j in running:
                    outcomes[j].cancelled = RUNNING if i else NOT_STARTED
                return outcomes
            calls = [(kind, asked[j], cfg, metric, i, task, n_classes, deadline) for j in running]
            done = bounded(f"{kind}: fold {i} of {len(running)} trial(s)",
                           lambda calls=calls: copies.run(run_fold, calls),
                           copies.reload)  # fmt: skip
            kept = []
            for j, (fold, seconds) in zip(running, done, strict=True):  # trial-number order:
                # the pruner's answers do not depend on which trial finished first
                outcomes[j].seconds += seconds
                if fold is None:  # the deadline passed before it started or during it
                    outcomes[j].cancelled = RUNNING if i or seconds else NOT_STARTED
                    continue
                outcomes[j].folds.append(fold)
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
    copies: Copies,
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
        run = worker_batches(copies, kind, cfg, metric, task, n_classes, fold_rows, n_rows)
        candidate, records = search_candidate(kind, cfg, metric, run, BATCH, say)
        result.candidates[kind] = candidate
        result.records.extend(records)
        _say_best(say, candidate, metric)
    _baseline(result, baseline, cfg, metric, say, lambda kind: worker_batches(
        copies, kind, cfg, metric, task, n_classes, fold_rows, n_rows))  # fmt: skip
    return result


def _say_best(say: Say, c: CandidateResult, metric: str) -> None:
    say(f"{c.name}: kept cv {metric} {c.cv.mean:.4f} ± {c.cv.std:.4f} (trial {c.best_trial} of "
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
        (outcome,) = runner(baseline)([params], [None], NO_DEADLINE)
        cv = outcome.cv
        assert cv is not None
        result.baseline = CandidateResult(baseline, 0, params, cv, params, cv, 1)
        say(f"baseline {baseline} (untuned): cv {metric} {cv.mean:.4f} ± {cv.std:.4f}")


# --- xgboost.dask (large data) ---------------------------------------------------------------


def model_parts(ddf: dd.DataFrame, sig: Signature, seed: int) -> dd.DataFrame:
    """The model frame per partition, with the encoded target (``__y``) and each row's hash
    (``__h``: :func:`mlcycle.tuning.row_keys`, as on the local engine) for the folds, the inner
    slices and the scoring sample."""

    def convert(part: pd.DataFrame) -> pd.DataFrame:
        X = to_model_frame(part, sig).reset_index(drop=True)
        y = encode_target(part[sig.target], sig)
        h = row_keys(X, y, seed)
        X["__y"] = y.astype("float64")
        X[_ROW_KEY] = h
        return X

    meta = convert(ddf._meta)
    return ddf.map_partitions(convert, meta=meta)


def with_folds(
    client: Client, frame: dd.DataFrame, folds: int, task: str, classes: tuple[str, ...]
) -> dd.DataFrame:
    """``frame`` (:func:`model_parts`) with each row's fold (``__fold``), the local engine's
    :func:`mlcycle.tuning.fold_of_rows`: the rows' targets and hashes (16 bytes a row) come to
    the driver, are dealt to the folds, and each partition gets its rows' folds back."""
    import dask
    import dask.dataframe as dd

    wanted = frame[["__y", _ROW_KEY]].to_delayed()
    keys = bounded("the rows' targets and hashes", lambda: client.compute(wanted, sync=True))
    lengths = np.cumsum([len(k) for k in keys])[:-1]
    y = np.concatenate([k["__y"].to_numpy() for k in keys])
    h = np.concatenate([k[_ROW_KEY].to_numpy() for k in keys])
    del keys
    if tasks.get(task).classification:
        y = y.astype(np.int64)
    dealt = np.split(fold_of_rows(y, h, folds, task, classes), lengths)
    pieces = bounded("the rows' folds to the workers", lambda: client.scatter(dealt))
    parts = [dask.delayed(_add_fold)(p, f) for p, f in zip(frame.to_delayed(), pieces, strict=True)]
    meta = frame._meta.assign(__fold=np.array([], dtype=np.int8))
    return dd.from_delayed(parts, meta=meta, verify_meta=False)


def _add_fold(part: pd.DataFrame, fold: np.ndarray) -> pd.DataFrame:
    return part.assign(__fold=fold)


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


def cluster_options(cfg: config.TrainConfig, params: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :meth:`mlcycle.models.Model.fit_distributed` from the
    settings and a trial's ``params`` (:func:`mlcycle.tuning.fit_options`; threads are each
    worker's own; peers wait :func:`peer_timeout`)."""
    options = fit_options(cfg, params=params)
    return {"seed": cfg.seed, "device": cfg.device, "class_weight": options["class_weight"],
            "peer_timeout": peer_timeout()}  # fmt: skip


def dask_fold(
    client: Client,
    frame: Callable[[], dd.DataFrame],
    again: Callable[[], None],
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
    and their encoded target. ``frame()`` is the pinned frame with its folds; a worker lost
    meanwhile, ``again()`` places it anew on the workers left and the step runs again (the
    folds, dealt from row hashes, are the same)."""
    seed, fraction = cfg.seed, cfg.validation_fraction
    share = min(1.0, SCORE_ROWS * cfg.cv_folds / max(rows, 1), OOF_ROWS / max(rows, 1))
    n_rounds = int(params.get("n_estimators", 100))
    early = params.get("early_stopping_rounds")

    def boost() -> FitResult:
        folded = frame()
        rest = folded[folded["__fold"] != i]
        inner = rest.map_partitions(
            lambda p: pd.Series(inner_slice(p[_ROW_KEY].to_numpy(), seed, i, fraction), p.index),
            meta=("inner", bool),
        )
        return adapter(kind).fit_distributed(
            client, rest[~inner], model_params(params), task, n_classes, n_rounds,
            valid=rest[inner], early=early, **cluster_options(cfg, params),
        )  # fmt: skip

    fitted = bounded(f"{kind}: fold {i} of a trial (xgboost.dask)", boost, again)

    def predict() -> list[Any]:
        folded = frame()
        held = folded[folded["__fold"] == i]
        scored = held.map_partitions(
            lambda p: pd.Series(hash_share(p[_ROW_KEY].to_numpy(), seed, "score") < share, p.index),
            meta=("s", bool),
        )
        held = held[scored]
        features = [c for c in held.columns if not c.startswith("__")]
        pred = fitted.model.predict_distributed(client, held[features])
        return client.compute([held["__y"], pred], sync=True)  # one pass over the rows

    y_held, p_held = bounded(f"{kind}: fold {i}'s held-out predictions", predict, again)
    y = np.asarray(y_held).astype(tasks.get(task).target_dtype(), copy=False)
    out = fitted.model.output_from_raw(np.asarray(p_held))
    score = float(kpi(task, metric, y, out))
    curve = fitted.curves.get("valid", {})
    return FoldResult(i, score, out, fitted.rounds, curve), y


def cluster_batches(
    client: Client,
    frame: Callable[[], dd.DataFrame],
    again: Callable[[], None],
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
    one after another (trials sequential), the pruner asked after each fold; ``frame()`` is
    the pinned frame with its folds, placed anew by ``again()`` when a worker is lost. The
    scored rows' target of the last completed trial goes to ``truth["y"]`` (the same rows every
    trial). Once the deadline has passed no trial or fold starts (the trial is cancelled); a
    fold boosting across the cluster then runs to its end (every worker boosts it together: one
    stopped alone would leave the others waiting for it), and counts."""
    k = cfg.cv_folds

    def run(asked: list[dict[str, Any]], trials: list[Any], deadline: Deadline) -> list[Outcome]:
        outcomes = []
        for params, trial in zip(asked, trials, strict=True):
            o = Outcome([], 0.0)
            ys = []
            for i in range(k):
                if deadline.passed():
                    o.cancelled = RUNNING if i else NOT_STARTED
                    break
                start = time.perf_counter()
                fold, y = dask_fold(client, frame, again, kind, params, cfg, metric, task,
                                    n_classes, i, rows)  # fmt: skip
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
) -> tuple[Copies, TuningResult, pd.DataFrame]:
    """Tune a split small enough for one worker's memory: every worker loads it once, trials
    run where it is; returns the loaded copies (for the final fit), the tuning result and the
    winner's out-of-fold predictions."""
    obj, cfg = params.objectives, params.train
    n_classes = tasks.get(obj.task).output_width(len(signature.classes))
    copies = Copies(client, path, signature, cfg)
    y, fold_rows = bounded(
        "loading the training split on the workers",
        lambda: copies.run(target_and_folds, [()])[0],
        copies.reload,
    )
    result = tune_on_workers(
        copies, kinds, cfg, obj.primary_metric, obj.task, n_classes, fold_rows, rows,
        say, baseline_kind,
    )  # fmt: skip
    oof = prediction_frame(result.winner.cv.oof, y, obj.task, signature.classes)
    return copies, result, oof


def train_dask(params: config.Params, client: Client, path: str | Path, say: Say) -> Trained:
    """Tune, select and fit on the cluster from the training split at ``path`` (a file or a
    folder of parts); the driver holds aggregates, per-fold results and the chosen model.
    Every blocking call is bounded (:func:`~mlcycle.engines.dask.cluster.guarded`); the
    workers lost and the retries go to ``Trained.cluster``."""
    with guarded(client, params.engine, dataset_rows(path), say) as guard:
        trained = _train(class_weights_searched(params, path), client, path, say)
    return replace(trained, cluster=guard.report())


def class_weights_searched(params: config.Params, path: str | Path) -> config.Params:
    """``params`` whose search also tries class weights when the training split at ``path``
    is imbalanced (:func:`mlcycle.tuning.class_weight_search`, as the local engine's
    :func:`mlcycle.tuning.tune`), from its rows per class counted over the partitions."""
    obj = params.objectives
    if not tasks.get(obj.task).classification:
        return params
    target = read_dataset(path, columns=[obj.target])[obj.target]
    (counts,) = computed("the training rows per class", target.value_counts())
    cfg = class_weight_search(params.train, obj.task, counts.to_numpy())
    return params.model_copy(update={"train": cfg})


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
            frame, placed = pinned(client, model_parts(ddf, signature, cfg.seed))
            if not small:  # the folds of the search across the cluster
                folded = with_folds(client, frame, cfg.cv_folds, obj.task, signature.classes)
                frame, more = pinned(client, folded)
                placed += more
        return frame

    def again() -> None:
        """A worker was lost: the partitions pinned to it can run nowhere else; place them
        all again on the workers left (the same keys: the old tasks are cancelled first)."""
        nonlocal frame
        client.cancel(placed, force=True)
        frame = None

    copies: Copies | None = None
    if small:
        copies, result, oof = tune_in_memory(
            client, path, signature, params, kinds, baseline_kind, rows, say
        )
        win = result.winner
    else:
        truth: dict[str, np.ndarray] = {}

        def run_for(kind: str) -> RunBatch:
            return cluster_batches(client, model_frame, again, kind, cfg, metric, obj.task,
                                   n_classes, rows, truth)  # fmt: skip

        result = TuningResult(metric=metric, folds=cfg.cv_folds)
        for kind in kinds:  # the distributed kinds: the others were skipped above
            candidate, records = search_candidate(kind, cfg, metric, run_for(kind), BATCH, say)
            result.candidates[kind] = candidate
            result.records.extend(records)
            _say_best(say, candidate, metric)
        _baseline(result, baseline_kind, cfg, metric, say, run_for)
        win = result.winner
        oof = prediction_frame(win.cv.oof, truth["y"], obj.task, signature.classes)

    def final_fit(kind: str, chosen: dict[str, Any], cv: CVResult, what: str) -> FitResult:
        model = adapter(kind)
        if model.distributed:
            rounds = cv.final_rounds or int(chosen.get("n_estimators", 100))
            say(f"{what}: {kind} across the cluster, {rounds} rounds on {rows} rows in "
                f"{model_frame().npartitions} partition(s)")  # fmt: skip
            return bounded(f"the {what} ({kind}, xgboost.dask)", lambda: model.fit_distributed(
                client, model_frame(), model_params(chosen), obj.task, n_classes, rounds,
                **cluster_options(cfg, chosen)), again)  # fmt: skip
        say(f"{what}: {kind} on one worker")
        assert copies is not None  # scikit-learn trains on small data only
        return bounded(f"the {what} ({kind}, on a worker)", lambda: copies.run(
            fit_on_worker, [(kind, chosen, cfg, obj.task, n_classes, cv.final_rounds)])[0],
            copies.reload)  # fmt: skip

    say(f"winner: {win.name} (trial {win.best_trial}), ranking {result.ranking}")
    final = final_fit(win.name, win.params, win.cv, "final fit")
    baseline = result.refit_baseline(
        final, lambda b: final_fit(b.name, b.params, b.cv, "baseline fit")
    )
    if copies is not None:
        copies.release()
    return Trained(signature, result, final, baseline, oof, rows)
