"""Tuning and model selection by cross-validation on the training split.

For each candidate in ``train.candidates``:

- trial 0 cross-validates its fixed parameters (``train.xgb`` for XGBoost,
  ``train.models.<name>`` for the others): the untuned configuration;
- trials 1..N (``train.tuning.trials``) are proposed by Optuna's TPE sampler, seeded with
  ``train.seed``, from the space in ``train.search.<name>``, each cross-validated on the same
  folds (``train.cv_folds``; dealt by row hash, stratified by class for classification,
  the same on both engines: :func:`make_folds`).

A boosting kind (XGBoost) boosts each fold with early stopping on an inner, seeded slice of
that fold's training part (``train.validation_fraction``); the final model gets the mean of
the folds' best round counts. Every candidate is judged by the cross-validated mean of the
objectives' primary metric and the best one wins; the test split plays no part.

Within a candidate, ``train.tuning.select: one_se`` (the default) keeps trial 0 when its CV mean
is within one standard error of the best trial's, else the simplest trial within it (rounds x
max_depth): a lead inside the CV noise does not buy a tuned or larger model (:func:`select`,
in :func:`search_candidate`, which both engines' drivers run). ``best`` keeps the best mean.

With ``train.tuning.pruner: median`` a search trial runs its folds in order and stops after a
fold when its running CV mean is behind the median of the earlier trials' at that fold
(Optuna's MedianPruner, through ``trial.report`` / ``trial.should_prune``): it is listed in
trials.csv with the mean of the folds it ran and ``pruned_after``, and never wins. The pieces
(:func:`fit_fold`, :meth:`CVResult.from_folds`, :func:`should_stop`) let a driver that runs
folds elsewhere (the Dask engine, through Optuna's ask/tell) apply the same rule.

``train.parallel_folds`` folds are fitted side by side in threads that share
``train.nthread`` (XGBoost releases the GIL; one small fit uses its threads poorly, so two
one-thread fits finish sooner than two two-thread fits one after the other). Their results are
taken in fold order and the pruner is asked after each, as when they run one at a time: the
same scores, the same pruning, the same trials; a pruned trial's folds still running are
cancelled at their next boosting round.

With ``train.tuning.patience: N`` a candidate's search stops once N trials in a row have not
beaten its best CV score: the budget is an upper bound, and a search that has settled does not
spend it. It counts trials, so it is as reproducible as the budget.

On an imbalanced training split (classification; the rarest class has fewer than
:data:`IMBALANCE_RATIO` of the commonest class's rows) the search of every candidate with a space
also tries ``train.class_weight`` both ways, none and balanced, as one more categorical dimension
(:data:`CLASS_WEIGHT` in a trial's params: a fit option, not a model parameter); trial 0 keeps
the setting of params.yaml.

With ``train.tuning.timeout`` a candidate's search is bounded in time, counted from the start of
its trial 0 (:class:`Deadline`): trial 0, the untuned fallback, always runs whole; after it no
trial or fold starts once the deadline has passed, and the trials and folds running then are
cancelled at their next boosting round (as a pruned trial's folds are) and are not counted as
finished trials: not in trials.csv, counted as cancelled in the stop line and in the candidate's
``search`` record of metrics/train.json. What a candidate can overrun the timeout by is one
boosting round per fit running when it passes (a fit without rounds, scikit-learn's, runs to its
end) plus the final fit. How many trials fit in the time depends on the machine, so a time budget
gives up byte-for-byte reproducibility; without one the clock decides nothing.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np
import optuna
import pandas as pd

from mlcycle import tasks
from mlcycle.config import CLASS_WEIGHTS, TrainConfig
from mlcycle.datasets import row_hash, unit_interval
from mlcycle.metrics import kpi
from mlcycle.models import adapter, fit
from mlcycle.tasks import BINARY, LOWER_IS_BETTER, better

Progress = Callable[[str], None]
Split = tuple[np.ndarray, np.ndarray]
DIGITS = 6
TRIALS_COLUMNS = (
    "candidate", "trial", "metric", "cv_mean", "cv_std", "rounds", "duration_s", "params",
    "pruned_after",
)  # fmt: skip
_ROW_KEY = "__h"  # the column a row's hash is re-hashed from (inner slices)
_TARGET_KEY = "__y"  # the encoded target's column in a row's hash


# --- cross-validation ----------------------------------------------------------------------


@dataclass(frozen=True)
class FoldResult:
    """One fold of a cross-validation: its score and its held-out rows' outputs.

    Small enough to send from a worker to the driver (no model, no training rows).
    """

    index: int  # the fold's position in the splits
    score: float
    output: np.ndarray  # the model's output for the fold's held-out rows, in their order
    rounds: int | None = None  # XGBoost: best round count on the fold's inner validation
    valid_curve: dict[str, list[float]] = field(default_factory=dict)  # XGBoost: inner curves


@dataclass(frozen=True)
class CVResult:
    """One configuration cross-validated: a score per fold and the out-of-fold predictions."""

    scores: tuple[float, ...]
    oof: np.ndarray  # the model's output for every training row, from the fold that held it out
    rounds: tuple[int, ...] = ()  # XGBoost: best round count per fold
    valid_curves: tuple[dict[str, list[float]], ...] = ()  # XGBoost: inner-validation curves

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores))

    @property
    def std(self) -> float:
        """Standard deviation of the fold scores (population form, as scikit-learn reports)."""
        return float(np.std(self.scores))

    @property
    def final_rounds(self) -> int | None:
        """Boosting rounds for a refit on all rows: the folds' mean best round count, rounded."""
        return max(1, round(float(np.mean(self.rounds)))) if self.rounds else None

    @classmethod
    def from_folds(
        cls,
        folds: list[FoldResult],
        splits: Sequence[Split],
        n_rows: int,
        n_classes: int = 2,
        task: str = BINARY,
    ) -> CVResult:
        """Assemble the folds of ``splits`` (any order; every fold once) into one result."""
        ordered = sorted(folds, key=lambda f: f.index)
        if [f.index for f in ordered] != list(range(len(splits))):
            raise ValueError(
                f"folds {[f.index for f in ordered]} do not cover the {len(splits)} splits once"
            )
        k = tasks.get(task).output_width(n_classes)
        oof = np.full((n_rows, k) if k else n_rows, np.nan)
        for f in ordered:
            oof[splits[f.index][1]] = f.output
        boosted = [f for f in ordered if f.rounds is not None]
        return cls(
            tuple(f.score for f in ordered),
            oof,
            tuple(f.rounds for f in boosted),  # type: ignore[misc]
            tuple(f.valid_curve for f in boosted),
        )


class FoldError(ValueError):
    """The training split cannot be cut into the configured folds; the message says why."""


def row_keys(X: pd.DataFrame, y: np.ndarray, seed: int) -> np.ndarray:
    """Each row's hash over its model inputs ``X`` and encoded target ``y``, keyed by ``seed``
    (:func:`mlcycle.datasets.row_hash`): what its fold and the inner early-stopping slices are
    chosen by, on either engine. It depends on the row's values only, never on its position,
    the row order or the partitioning; identical rows share it (and are interchangeable)."""
    frame = X.reset_index(drop=True).assign(**{_TARGET_KEY: np.asarray(y)})
    return row_hash(frame, seed, "rows").to_numpy()


def assign_folds(h: np.ndarray, strata: np.ndarray, folds: int) -> np.ndarray:
    """Each row's fold: the rows ordered by (stratum, hash ``h``) are dealt to the folds in
    turn, so every fold holds the same number of rows of each stratum to within one, and the
    same number of rows to within one. A pure function of each row's (stratum, hash) and the
    counts per stratum: the same rows in any order, or in any partitions gathered, get the
    same folds (rows of equal hash are identical, so which of them goes where changes
    nothing)."""
    order = np.lexsort((h, strata))
    fold = np.empty(len(h), dtype=np.int8)
    fold[order] = np.arange(len(h)) % folds
    return fold


def hash_share(h: np.ndarray, seed: int, purpose: str) -> np.ndarray:
    """Unit-interval hashes for one decision (``purpose``, ``seed``) from rows' hashes ``h``
    (:func:`row_keys`): a row's share, independent of the other decisions'."""
    key = pd.DataFrame({_ROW_KEY: np.asarray(h, dtype=np.uint64)})
    return unit_interval(row_hash(key, seed, purpose))


def inner_slice(h: np.ndarray, seed: int, i: int, fraction: float) -> np.ndarray:
    """Which of fold ``i``'s training rows (their :func:`row_keys` ``h``) form the inner slice
    XGBoost early-stops on: their hash keyed by ``seed + 1 + i`` is below ``fraction``."""
    return hash_share(h, seed + 1 + i, "inner") < fraction


class Folds(Sequence[Split]):
    """The cross-validation folds: ``splits[i]`` is fold i's (training positions, held-out
    positions), each in order of the rows' hashes (so a fold's fit sees its rows in the same
    order on either engine), and ``inner[i]`` the positions within fold i's training part of
    the inner slice a boosting kind early-stops on."""

    def __init__(self, splits: list[Split], inner: list[np.ndarray]) -> None:
        self.splits = splits
        self.inner = inner

    def __len__(self) -> int:
        return len(self.splits)

    def __getitem__(self, i: int) -> Split:  # type: ignore[override]
        return self.splits[i]


def fold_of_rows(
    y: np.ndarray, h: np.ndarray, folds: int, task: str, classes: tuple[str, ...] = ()
) -> np.ndarray:
    """Each row's fold from its encoded target ``y`` and hash ``h`` (:func:`assign_folds`:
    stratified by class for classification, one stratum for regression), after checking that
    the rows can be cut into ``folds`` folds (:class:`FoldError` says why not)."""
    if len(y) < 2 * folds:
        raise FoldError(
            f"the training split has {len(y)} rows; train.cv_folds={folds} needs at least "
            f"{2 * folds}"
        )
    if not tasks.get(task).classification:
        return assign_folds(h, np.zeros(len(y), np.int64), folds)
    strata = np.asarray(y, dtype=np.int64)
    counts = np.bincount(strata, minlength=len(classes) or 1)
    named = {(classes[i] if i < len(classes) else str(i)): int(n) for i, n in enumerate(counts)}
    problem = tasks.get(task).fold_problem(named, folds, "training rows per class")
    if problem:
        raise FoldError(problem)
    return assign_folds(h, strata, folds)


def make_folds(
    X: pd.DataFrame,
    y: np.ndarray,
    cfg: TrainConfig,
    task: str,
    classes: tuple[str, ...] = (),
) -> Folds:
    """The ``cfg.cv_folds`` cross-validation folds of ``X``/``y`` for ``task``, the same on
    both engines: :func:`fold_of_rows` over the rows' :func:`row_keys`, and each fold's inner
    slice by :func:`inner_slice` (``cfg.validation_fraction``)."""
    h = row_keys(X, y, cfg.seed)
    fold = fold_of_rows(y, h, cfg.cv_folds, task, classes)
    by_hash = np.argsort(h, kind="stable")
    fold = fold[by_hash]
    splits = [(by_hash[fold != i], by_hash[fold == i]) for i in range(cfg.cv_folds)]
    inner = []
    for i, (train_idx, _) in enumerate(splits):
        mask = inner_slice(h[train_idx], cfg.seed, i, cfg.validation_fraction)
        inner.append(np.flatnonzero(mask))
    return Folds(splits, inner)


def score(metric: str, y: np.ndarray, out: np.ndarray, task: str = BINARY) -> float:
    """The metric of :data:`mlcycle.metrics.KPI_FUNCTIONS` (labels by the task's default rule:
    binary at the default threshold, multiclass the most probable class)."""
    return float(kpi(task, metric, y, out))


CLASS_WEIGHT = "train.class_weight"  # a trial's class weighting, when the search tries it
IMBALANCE_RATIO = 0.25  # rarest / commonest class's training rows below this: imbalanced


def fit_options(
    cfg: TrainConfig, threads: int | None = None, params: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The keyword arguments of :meth:`mlcycle.models.Model.fit` (and ``fit_early_stopped``)
    that the training settings give: seed, threads (``train.nthread`` unless ``threads``),
    device and class weights (``train.class_weight``, or the trial's ``params`` when the
    search tries it: :data:`CLASS_WEIGHT`)."""
    return {
        "seed": cfg.seed,
        "threads": cfg.nthread if threads is None else threads,
        "device": cfg.device,
        "class_weight": (params or {}).get(CLASS_WEIGHT, cfg.class_weight),
    }


def model_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's parameters for the model itself: without :data:`CLASS_WEIGHT`, a fit
    option (:func:`fit_options`)."""
    return {k: v for k, v in params.items() if k != CLASS_WEIGHT}


def imbalanced(counts: Sequence[int] | np.ndarray) -> bool:
    """Whether classes of ``counts`` training rows each are imbalanced: the rarest has fewer
    than :data:`IMBALANCE_RATIO` of the commonest's rows."""
    counts = np.asarray(counts, dtype=np.float64)
    return len(counts) > 1 and counts.min() < IMBALANCE_RATIO * counts.max()


def class_weight_search(cfg: TrainConfig, task: str, counts: Sequence[int]) -> TrainConfig:
    """``cfg`` whose search spaces also try ``train.class_weight`` none and balanced
    (:data:`CLASS_WEIGHT`) when a classification task's training split (``counts`` rows per
    class) is :func:`imbalanced`; only candidates with a space of their own are searched, and
    their trial 0 keeps ``cfg.class_weight`` (:func:`fixed_params`). Otherwise ``cfg``."""
    if not tasks.get(task).classification or not imbalanced(counts):
        return cfg
    option = {"choices": list(CLASS_WEIGHTS)}
    search = {k: {**space, CLASS_WEIGHT: option} if space else space
              for k, space in cfg.search.items()}  # fmt: skip
    return cfg.model_copy(update={"search": search})


def fit_fold(
    kind: str,
    X: pd.DataFrame,
    y: np.ndarray,
    params: Mapping[str, Any],
    cfg: TrainConfig,
    metric: str,
    splits: Folds,
    i: int,
    task: str = BINARY,
    n_classes: int = 2,
    on_round: Callable[[int], None] | None = None,
) -> FoldResult:
    """Fit ``kind`` with ``params`` on fold ``i``'s training part and score its held-out part;
    a boosting kind early-stops on the fold's inner slice (``splits.inner[i]``, chosen by row
    hash). The fold code of both engines. ``on_round`` is called after each boosting round
    (raising stops the fit)."""
    train_idx, held_out = splits[i]
    k = tasks.get(task).output_width(n_classes)
    options, params = fit_options(cfg, params=params), model_params(params)
    fold_X, fold_y = X.iloc[train_idx], y[train_idx]
    if adapter(kind).early_stopping:
        inner = splits.inner[i]
        if len(inner) in (0, len(train_idx)):
            raise FoldError(
                f"fold {i}: the inner slice for early stopping (train.validation_fraction="
                f"{cfg.validation_fraction}) of its {len(train_idx)} training rows is "
                f"{'empty' if not len(inner) else 'all of them'}; use more rows or another "
                "fraction"
            )
        fit_idx = np.setdiff1d(np.arange(len(train_idx)), inner, assume_unique=True)
        result = adapter(kind).fit_early_stopped(
            fold_X, fold_y, params, task, k, fit_idx, inner, on_round=on_round, **options
        )
    else:
        result = fit(kind, fold_X, fold_y, params, task, k, on_round=on_round, **options)
    out = result.model.output(X.iloc[held_out])
    curve = result.curves.get("valid", {}) if result.rounds is not None else {}
    return FoldResult(i, score(metric, y[held_out], out, task), out, result.rounds, curve)


def cross_validate(
    kind: str,
    X: pd.DataFrame,
    y: np.ndarray,
    params: Mapping[str, Any],
    cfg: TrainConfig,
    metric: str,
    splits: Folds,
    task: str = BINARY,
    n_classes: int = 2,
) -> CVResult:
    """Fit ``kind`` with ``params`` on each split's training part and score its held-out part
    (``cfg.parallel_folds`` folds at a time)."""
    return cross_validate_trial(kind, X, y, params, cfg, metric, splits, None, task, n_classes)


def running_mean(folds: list[FoldResult]) -> float:
    """The value a pruner sees after these folds (fold order): the mean of their scores."""
    return float(np.mean([f.score for f in sorted(folds, key=lambda f: f.index)]))


class Pruned(optuna.TrialPruned):
    """A trial stopped between folds by the pruner; ``folds`` are the folds it ran."""

    def __init__(self, folds: list[FoldResult]) -> None:
        super().__init__(f"pruned after {len(folds)} fold(s) at {running_mean(folds):.6f}")
        self.folds = folds


def should_stop(trial: optuna.Trial, folds: list[FoldResult], n_splits: int) -> bool:
    """Report the running mean after the folds run so far (``folds`` are folds 0..i) to
    ``trial`` and ask its study's pruner whether to stop; never after the last fold.

    The one pruning rule of both engines: a driver that runs the folds elsewhere calls this
    between rounds of folds, in trial-number order, with the same result.
    """
    i = len(folds) - 1
    trial.report(running_mean(folds), step=i)
    return i + 1 < n_splits and trial.should_prune()


@dataclass(frozen=True)
class Deadline:
    """When a candidate's search time (``train.tuning.timeout``) runs out: ``at`` in seconds of
    the wall clock (``time.time()``, so a deadline sent to a Dask worker means the same there;
    the workers' clocks are taken to agree with the driver's, as NTP keeps them), or None for
    no limit. Checked before each trial and fold starts and after each boosting round."""

    at: float | None = None

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        """The deadline ``seconds`` from now; no limit for None."""
        return cls(None if seconds is None else time.time() + seconds)

    def passed(self) -> bool:
        return self.at is not None and time.time() >= self.at

    def check(self, _round: int = 0) -> None:
        """Raise :class:`TimedOut` once the deadline has passed (an ``on_round`` callback)."""
        if self.passed():
            raise TimedOut([])


NO_DEADLINE = Deadline()


class TimedOut(Exception):
    """A trial stopped because its candidate's deadline passed (:class:`Deadline`): ``folds``
    are the folds it finished before; it is not a finished trial."""

    def __init__(self, folds: list[FoldResult]) -> None:
        super().__init__(f"train.tuning.timeout passed after {len(folds)} fold(s)")
        self.folds = folds


def cross_validate_trial(
    kind: str,
    X: pd.DataFrame,
    y: np.ndarray,
    params: Mapping[str, Any],
    cfg: TrainConfig,
    metric: str,
    splits: Folds,
    trial: optuna.Trial | None,
    task: str = BINARY,
    n_classes: int = 2,
    deadline: Deadline = NO_DEADLINE,
) -> CVResult:
    """Cross-validate ``params``, taking the folds' results in fold order and stopping with
    :class:`Pruned` when ``trial``'s pruner says so after a fold (see :func:`should_stop`),
    or with :class:`TimedOut` once ``deadline`` has passed (no fold starts after it, a running
    one stops at its next boosting round). ``cfg.parallel_folds`` folds run side by side in
    threads sharing ``cfg.nthread``; the results and the pruner's answers are those of one fold
    at a time."""
    workers = min(cfg.parallel_folds, len(splits))
    timed = deadline.at is not None
    folds: list[FoldResult] = []
    if workers <= 1:
        try:
            for i in range(len(splits)):
                deadline.check()
                folds.append(fit_fold(kind, X, y, params, cfg, metric, splits, i, task,
                                      n_classes, deadline.check if timed else None))  # fmt: skip
                if trial is not None and should_stop(trial, folds, len(splits)):
                    raise Pruned(folds)
        except TimedOut as stop:
            raise TimedOut(folds) from stop
        return CVResult.from_folds(folds, splits, len(y), n_classes, task)
    one = cfg.model_copy(update={"nthread": fold_threads(cfg.nthread, workers)})
    cancel = threading.Event()

    def stop_if_cancelled(_round: int) -> None:
        if cancel.is_set():
            raise _Cancelled
        deadline.check()

    def run(i: int) -> FoldResult:
        stop_if_cancelled(-1)
        return fit_fold(kind, X, y, params, one, metric, splits, i, task, n_classes,
                        stop_if_cancelled)  # fmt: skip

    pool = ThreadPoolExecutor(workers, thread_name_prefix="fold")
    futures = [pool.submit(run, i) for i in range(len(splits))]
    wait = True
    try:
        for future in futures:  # fold order, whatever finished first
            try:
                folds.append(future.result())
            except TimedOut as stop:
                raise TimedOut(folds) from stop
            if trial is not None and should_stop(trial, folds, len(splits)):
                raise Pruned(folds)
    except BaseException as exc:
        cancel.set()  # the folds still running stop at their next round
        # Ctrl-C: the process is ending; a fit that cannot stop (scikit-learn's) is not waited for
        wait = not isinstance(exc, KeyboardInterrupt)
        raise
    finally:
        pool.shutdown(wait=wait, cancel_futures=True)
    return CVResult.from_folds(folds, splits, len(y), n_classes, task)


class _Cancelled(Exception):
    """A fold fit stopped because its trial was pruned (or another fold failed)."""


def fold_threads(nthread: int, workers: int) -> int:
    """Threads for each of ``workers`` fits side by side sharing ``nthread`` (0: the cores
    this process may use), at least 1."""
    if not nthread:
        try:
            nthread = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux (macOS has no affinity call)
            nthread = os.cpu_count() or 1
    return max(1, nthread // workers)


def make_study(
    cfg: TrainConfig,
    metric: str,
    budget: int,
    base: Mapping[str, Any],
    untuned: CVResult,
    dists: Mapping[str, Any],
) -> optuna.Study:
    """A candidate's Optuna study: TPE seeded with ``cfg.seed``, the pruner of
    ``train.tuning.pruner``, and trial 0 (``base``, scored ``untuned``) told to the sampler
    when the space holds its values, so the search starts from what is known. Both engines'
    drivers search through it.

    The sampler draws its first ``min(10, max(1, budget // 2))`` search trials at random, trial 0
    not counted among them: modelled on trial 0 alone, TPE proposes settings at or next to it,
    and a small budget would be spent near the untuned setting (or on it)."""
    told = all(k in base and _contains(d, base[k]) for k, d in dists.items())
    startup = min(10, max(1, budget // 2)) + told
    study = optuna.create_study(
        direction="minimize" if metric in LOWER_IS_BETTER else "maximize",
        sampler=optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=startup),
        pruner=make_pruner(cfg),
    )
    if told:
        study.add_trial(
            optuna.trial.create_trial(
                params={k: base[k] for k in dists},
                distributions=dict(dists),
                value=untuned.mean,
                intermediate_values={
                    i: float(np.mean(untuned.scores[: i + 1])) for i in range(len(untuned.scores))
                },
            )
        )
    return study


def patience_message(
    kind: str, records: list[TrialRecord], metric: str, patience: int, budget: int
) -> str:
    """The line a driver prints when :func:`should_stop_search` ends a candidate's search."""
    best = _best(records, metric)
    return (
        f"{kind}: no new best in {patience} trials (best trial {best.trial}, cv {metric} "
        f"{best.cv_mean:.4f}): search stopped after {len(records) - 1} of {budget} "
        "(train.tuning.patience)"
    )


def should_stop_search(records: list[TrialRecord], metric: str, patience: int) -> bool:
    """True when the last ``patience`` trials of one candidate's records (trial 0 first) have
    not beaten the best before them (``patience`` 0: never)."""
    if not patience:
        return False
    return records[-1].trial - _best(records, metric).trial >= patience


# --- search spaces ---------------------------------------------------------------------------


def distributions(space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Optuna distributions for a ``train.search.<candidate>`` space.

    ``{low, high}`` of two integers is an integer range, otherwise a float range; ``log: true``
    samples on a log scale; ``{choices: [...]}`` is categorical.
    """
    out: dict[str, Any] = {}
    for name, spec in space.items():
        if "choices" in spec:
            out[name] = optuna.distributions.CategoricalDistribution(list(spec["choices"]))
        elif isinstance(spec["low"], int) and isinstance(spec["high"], int):
            out[name] = optuna.distributions.IntDistribution(
                spec["low"], spec["high"], log=bool(spec.get("log", False))
            )
        else:
            out[name] = optuna.distributions.FloatDistribution(
                float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False))
            )
    return out


def suggest(trial: optuna.Trial, dists: Mapping[str, Any]) -> dict[str, Any]:
    """Ask ``trial`` for a value of every parameter in ``dists`` (see :func:`distributions`)."""
    out: dict[str, Any] = {}
    for name, d in dists.items():
        if isinstance(d, optuna.distributions.CategoricalDistribution):
            out[name] = trial.suggest_categorical(name, d.choices)
        elif isinstance(d, optuna.distributions.IntDistribution):
            out[name] = trial.suggest_int(name, d.low, d.high, log=d.log)
        else:
            out[name] = trial.suggest_float(name, d.low, d.high, log=d.log)
    return out


def _contains(dist: Any, value: Any) -> bool:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return value in dist.choices
    if isinstance(dist, optuna.distributions.IntDistribution) and (
        not isinstance(value, int) or isinstance(value, bool)
    ):
        return False
    return isinstance(value, int | float) and dist.low <= value <= dist.high


def fixed_params(kind: str, cfg: TrainConfig) -> dict[str, Any]:
    """A candidate's untuned parameters: ``train.xgb`` for XGBoost (``train.models.xgboost``
    may add to it), ``train.models.<kind>`` over the library defaults for the others; and
    ``train.class_weight`` when the search tries it (:func:`class_weight_search`)."""
    fixed = adapter(kind).fixed_params(cfg.models, {"xgb": cfg.xgb})
    if CLASS_WEIGHT in cfg.search.get(kind, {}):
        fixed[CLASS_WEIGHT] = cfg.class_weight
    return fixed


# --- tuning ----------------------------------------------------------------------------------

PRUNERS = ("none", "median")


def make_pruner(cfg: TrainConfig) -> optuna.pruners.BasePruner:
    """The rule that stops a trial between folds (``train.tuning.pruner``), applied through
    ``trial.report(running CV mean, step=fold)`` + ``trial.should_prune()`` (:func:`should_stop`).

    ``median``: once ``pruner_startup`` trials (trial 0 included) have run every fold, a trial
    whose mean over its first ``i + 1`` folds (``i >= pruner_warmup``) is worse than the median
    of the earlier trials' means over the same folds stops. Every trial has the same folds and
    the rule reads scores only, so a rerun stops the same trials.
    ``none``: every trial runs every fold (the search as it was before pruning).
    """
    if cfg.tuning_pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=cfg.pruner_startup, n_warmup_steps=cfg.pruner_warmup
        )
    if cfg.tuning_pruner == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"train.tuning.pruner is {cfg.tuning_pruner!r}; use one of {PRUNERS}")


@dataclass(frozen=True)
class TrialRecord:
    """One cross-validated configuration, as written to metrics/tuning/trials.csv."""

    candidate: str
    trial: int
    params: dict[str, Any]
    cv_mean: float
    cv_std: float
    rounds: int | None
    duration_s: float
    pruned_after: int | None = None  # folds run before the trial was stopped; None: all ran

    @property
    def pruned(self) -> bool:
        return self.pruned_after is not None


_Fit = TypeVar("_Fit")  # what a refit gives (an engine's fitted model)


@dataclass(frozen=True)
class Selection:
    """Which of a candidate's trials is kept, and why (``train.tuning.select``).

    ``top`` is the trial with the best CV mean, ``se`` its standard error (the fold scores'
    sample standard deviation over the square root of the number of folds), ``bound`` its mean
    less one ``se`` (plus, for a lower-is-better metric): with ``one_se`` every trial that ran
    every fold and is not worse than ``bound`` qualifies, and the kept trial (``chosen``) is trial
    0, the untuned setting, if it qualifies, else the simplest that does (:func:`complexity`).
    """

    rule: str
    chosen: int
    top: int
    top_mean: float
    se: float
    bound: float
    qualified: tuple[int, ...]
    why: str


@dataclass(frozen=True)
class CandidateResult:
    """A candidate's untuned (trial 0) and kept configurations (``best_trial``: the trial the
    selection rule kept, ``selection`` says which rule and why)."""

    name: str
    best_trial: int
    params: dict[str, Any]
    cv: CVResult
    untuned_params: dict[str, Any]
    untuned: CVResult
    trials: int
    selection: Selection | None = None
    search: SearchStop | None = None


@dataclass
class TuningResult:
    """Every trial, each candidate's best, and the winner by cross-validated score."""

    metric: str
    folds: int
    records: list[TrialRecord] = field(default_factory=list)
    candidates: dict[str, CandidateResult] = field(default_factory=dict)
    baseline: CandidateResult | None = None  # the untuned ``train.baseline``

    @property
    def ranking(self) -> list[str]:
        """Candidates from best to worst CV mean (ties keep ``train.candidates`` order)."""
        sign = 1.0 if self.metric in LOWER_IS_BETTER else -1.0
        names = list(self.candidates)
        return sorted(names, key=lambda n: (sign * self.candidates[n].cv.mean, names.index(n)))

    @property
    def winner(self) -> CandidateResult:
        return self.candidates[self.ranking[0]]

    def refit_baseline(self, final: _Fit, fit: Callable[[CandidateResult], _Fit]) -> _Fit | None:
        """The untuned baseline refitted: None without one; ``final`` (the winner's refit) when
        the untuned configuration won, since that is the same model; else ``fit(baseline)``."""
        base = self.baseline
        if base is None:
            return None
        if base.name == self.winner.name and base.params == self.winner.params:
            return final
        return fit(base)


# Trials Optuna proposes before it hears their scores, on every engine: the search takes the same
# path whatever runs the folds (one after another here, side by side on a Dask cluster).
BATCH = 4


RUNNING, NOT_STARTED = "running", "not started"  # how a trial was cancelled at the deadline


@dataclass
class Outcome:
    """A trial's folds: all of them (``cv``), or the ones it ran before it was pruned or, with
    ``cancelled`` set (:data:`RUNNING` or :data:`NOT_STARTED`), before its candidate's
    deadline passed (:class:`Deadline`): a cancelled trial is not a finished one."""

    folds: list[FoldResult]
    seconds: float
    cv: CVResult | None = None  # None: pruned or cancelled
    cancelled: str | None = None

    @property
    def scores(self) -> list[float]:
        return [f.score for f in self.folds]


# Runs a batch of trials, given their params, Optuna trials (None: trial 0) and the candidate's
# deadline; returns each trial's outcome, pruning between folds through
# mlcycle.tuning.should_stop in trial order, cancelling what runs when the deadline passes.
RunBatch = Callable[[list[dict[str, Any]], list[Any], Deadline], list[Outcome]]


@dataclass(frozen=True)
class SearchStop:
    """How a candidate's search ended, for metrics/train.json: ``reason`` ("budget" spent,
    "patience", "repeats": no untried setting left, or "timeout"), the trials that finished
    (trial 0 not counted) of the ``budget``, and the trials cancelled at the deadline (running
    or not started), which are not counted as finished."""

    reason: str
    budget: int
    finished: int
    cancelled_running: int = 0
    cancelled_not_started: int = 0


def _light(cv: CVResult) -> CVResult:
    """``cv`` without its out-of-fold predictions (kept for the best trial only)."""
    return replace(cv, oof=np.empty(0))


def search_candidate(
    kind: str, cfg: TrainConfig, metric: str, run_batch: RunBatch, batch: int, say: Progress
) -> tuple[CandidateResult, list[TrialRecord]]:
    """Trial 0 (the fixed params) and the Optuna search of one candidate, ``batch`` distinct
    settings (:func:`propose`) asked at a time, told in trial-number order: deterministic
    whatever runs the folds. With ``train.tuning.timeout``, a :class:`Deadline` from trial 0's
    start: trial 0 runs whole, no batch starts after it, and the trials ``run_batch`` cancels
    at it are not recorded (:func:`tell_batch`)."""
    deadline = Deadline.after(cfg.tuning_timeout)
    base = fixed_params(kind, cfg)
    budget = cfg.trials_for(kind)
    records: list[TrialRecord] = []
    best: dict[str, Any] = {}
    compared: dict[int, float] = {}  # pruned trial -> the median the pruner compared it with
    cancelled: list[Outcome] = []

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

    say(f"{kind}: trial 0 (untuned) + {budget} search trial(s), {cfg.cv_folds}-fold CV by row "
        f"hash, {batch} trial(s) at a time")  # fmt: skip
    (first,) = run_batch([base], [None], NO_DEADLINE)  # the fallback: always whole
    untuned = first.cv
    assert untuned is not None  # trial 0 is never pruned
    record(base, first)
    say(f"{kind} trial 0 (untuned): cv {metric} {untuned.mean:.4f} ± {untuned.std:.4f}")
    reason = "budget"
    if budget:
        dists = distributions(cfg.search.get(kind, {}))
        study = make_study(cfg, metric, budget, base, untuned, dists)
        tried = {_key(base)}
        every = max(1, budget // 5)
        done = 0
        while done < budget:
            wanted = 0 if deadline.passed() else min(batch, budget - done)
            proposals = ask_batch(study, dists, base, tried, wanted)
            asked, trials = [p for _, p in proposals], [t for t, _ in proposals]
            ran = run_batch(asked, trials, deadline) if proposals else []
            finished = 0
            for (_, params), outcome in zip(proposals, ran, strict=True):
                if outcome.cancelled:  # the deadline passed: not a finished trial
                    cancelled.append(outcome)
                    continue
                if outcome.cv is None:  # what the pruner held it to: the trials told before
                    compared[len(records)] = pruning_median(study, len(outcome.folds) - 1)
                record(params, outcome)
                finished += 1
            tell_batch(study, proposals, ran)
            before, done = done, done + finished
            timed_out = done < budget and deadline.passed()
            exhausted = not timed_out and len(proposals) < min(batch, budget - before)
            stop = stop_reason(kind, cfg, records, metric, done, exhausted, timed_out, cancelled)
            if done // every != before // every or done == budget or stop:
                say(progress_line(kind, records, metric, done, budget, compared, cfg.cv_folds))
            if stop:
                say(stop)
                reason = "timeout" if timed_out else "repeats" if exhausted else "patience"
                break
    chosen = select(records, metric, cfg.tuning.select, cfg.cv_folds)
    say(selection_line(kind, chosen, records, metric))
    kept = records[chosen.chosen]
    cv = kept_cv(kind, kept, {0: untuned, best["trial"]: best["cv"]}, run_batch, say)
    running = sum(o.cancelled == RUNNING for o in cancelled)
    search = SearchStop(reason, budget, len(records) - 1, running, len(cancelled) - running)
    return CandidateResult(
        kind, kept.trial, kept.params, cv, base, untuned, len(records), chosen, search
    ), records


def ask_batch(
    study: optuna.Study, dists: Mapping[str, Any], base: Mapping[str, Any], tried: set[str],
    wanted: int,
) -> list[tuple[optuna.Trial, dict[str, Any]]]:  # fmt: skip
    """Up to ``wanted`` proposals of settings not yet tried (:func:`propose`); fewer when the
    space has no untried setting the sampler finds."""
    proposals = []
    for _ in range(wanted):
        proposal = propose(study, dists, base, tried)
        if proposal is None:
            break
        proposals.append(proposal)
    return proposals


def tell_batch(
    study: optuna.Study, proposals: Sequence[tuple[optuna.Trial, Any]], ran: Sequence[Outcome]
) -> None:
    """The batch's outcomes told to ``study`` after the batch, in trial-number order, as the
    pruner's medians assume: a trial cancelled at the deadline as failed (the sampler leaves
    it out; it is not a trial of the search), the others by :func:`_told`."""
    for (trial, _), outcome in zip(proposals, ran, strict=True):
        if outcome.cancelled:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, **_told(outcome))


def _told(outcome: Outcome) -> dict[str, Any]:
    """What ``study.tell`` hears of a trial that was not cancelled: its CV mean, or pruned."""
    if outcome.cv is None:
        return {"state": optuna.trial.TrialState.PRUNED}
    return {"values": outcome.cv.mean}


def kept_cv(
    kind: str, kept: TrialRecord, held: Mapping[int, CVResult], run_batch: RunBatch, say: Progress
) -> CVResult:
    """The kept trial's CV with its out-of-fold predictions: ``held`` has trial 0's and the best
    trial's (a search keeps no others); another trial's folds run again, with the same folds and
    fits, so the same scores."""
    if kept.trial in held:
        return held[kept.trial]
    say(f"{kind}: trial {kept.trial}'s folds run again for its out-of-fold predictions")
    (again,) = run_batch([kept.params], [None], NO_DEADLINE)
    assert again.cv is not None  # a trial without a pruner runs every fold
    return again.cv


REPEATS = 20  # proposals in a row of settings already tried before a search is taken as done


def stop_reason(
    kind: str,
    cfg: TrainConfig,
    records: list[TrialRecord],
    metric: str,
    done: int,
    exhausted: bool,
    timed_out: bool = False,
    cancelled: Sequence[Outcome] = (),
) -> str:
    """Why a candidate's search stops after ``done`` finished trials (its ``records``), in the
    line a driver prints after the progress line of those trials; "" to go on. ``exhausted``:
    the sampler proposed only settings already tried; ``timed_out``: its deadline has passed
    (``train.tuning.timeout``), and ``cancelled`` are the trials cancelled at it."""
    budget = cfg.trials_for(kind)
    if timed_out:
        running = sum(o.cancelled == RUNNING for o in cancelled)
        line = (f"{kind}: train.tuning.timeout of {cfg.tuning_timeout:g}s passed (counted from "
                f"trial 0's start; trial 0 took {records[0].duration_s:.1f}s): search stopped "
                f"after {done} of {budget} finished trial(s)")  # fmt: skip
        if not cancelled:
            return line + "; none was cancelled"
        return (f"{line}; {len(cancelled)} cancelled and not counted ({running} running, "
                f"stopped at their next boosting round; {len(cancelled) - running} not "
                "started)")  # fmt: skip
    if exhausted:
        return (f"{kind}: {REPEATS} proposals in a row repeated settings already tried (the "
                f"space {dict(cfg.search.get(kind, {}))} has few left): search stopped after "
                f"{done} of {budget}")  # fmt: skip
    if done < budget and should_stop_search(records, metric, cfg.tuning_patience):
        return patience_message(kind, records, metric, cfg.tuning_patience, budget)
    return ""


def _key(params: Mapping[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def propose(
    study: optuna.Study, dists: Mapping[str, Any], base: Mapping[str, Any], tried: set[str]
) -> tuple[optuna.Trial, dict[str, Any]] | None:
    """The next trial of ``study`` and its params (``base`` with the sampled values), a setting
    not in ``tried`` (the keys of every setting proposed so far, trial 0's included; the new one
    is added). A repeat is told to the study as failed, so the sampler leaves it out and draws
    again, and it is not a trial; None after :data:`REPEATS` repeats in a row (the space has no
    setting left that the sampler finds)."""
    for _ in range(REPEATS):
        trial = study.ask()
        params = {**base, **suggest(trial, dists)}
        key = _key(params)
        if key not in tried:
            tried.add(key)
            return trial, params
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return None


def pruning_median(study: optuna.Study, step: int) -> float:
    """The value the median pruner held a trial to after fold ``step``: the median of the
    running means at that fold of the study's trials completed so far."""
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return float(np.median([t.intermediate_values[step] for t in done
                            if step in t.intermediate_values]))  # fmt: skip


def progress_line(
    kind: str,
    records: list[TrialRecord],
    metric: str,
    done: int,
    budget: int,
    compared: Mapping[int, float],
    folds: int,
) -> str:
    """The search's progress after ``done`` of ``budget`` trials: the best so far and how many
    were pruned; the last pruned trial with what the pruner compared (its running mean over
    its first folds against the median of earlier trials' over the same folds, not CV means),
    so a pruned value that looks better than the best CV mean does not read as a mistake."""
    top = _best(records, metric)
    pruned = [r for r in records if r.pruned]
    line = (f"{kind} trial {done}/{budget}: best cv {metric} {top.cv_mean:.4f} (trial "
            f"{top.trial}, mean of {folds} folds); {len(pruned)} pruned so far")  # fmt: skip
    if pruned and pruned[-1].trial in compared:
        last = pruned[-1]
        n = last.pruned_after
        way = "lower" if metric in LOWER_IS_BETTER else "higher"
        line += (f" (last: trial {last.trial}, mean over its first {n} fold(s) "
                 f"{last.cv_mean:.4f} against the median {compared[last.trial]:.4f} of earlier "
                 f"trials' first {n} fold(s); {way} is better)")  # fmt: skip
    return line


def local_batches(
    kind: str,
    X: pd.DataFrame,
    y: np.ndarray,
    cfg: TrainConfig,
    metric: str,
    splits: Folds,
    task: str = BINARY,
    n_classes: int = 2,
) -> RunBatch:
    """A :data:`RunBatch` that cross-validates each trial here, one after another (each
    trial's folds side by side in ``cfg.parallel_folds`` threads); once the deadline has
    passed, the running trial is cancelled at its next boosting round and the rest of the
    batch is not started."""

    def run(asked: list[dict[str, Any]], trials: list[Any], deadline: Deadline) -> list[Outcome]:
        outcomes = []
        for params, trial in zip(asked, trials, strict=True):
            if deadline.passed():
                outcomes.append(Outcome([], 0.0, cancelled=NOT_STARTED))
                continue
            start = time.perf_counter()
            try:
                cv = cross_validate_trial(
                    kind, X, y, params, cfg, metric, splits, trial, task, n_classes, deadline
                )
                outcomes.append(Outcome([], time.perf_counter() - start, cv))
            except Pruned as stop:
                outcomes.append(Outcome(list(stop.folds), time.perf_counter() - start))
            except TimedOut as stop:
                seconds = time.perf_counter() - start
                outcomes.append(Outcome(list(stop.folds), seconds, cancelled=RUNNING))
        return outcomes

    return run


def tune_candidate(
    kind: str,
    X: pd.DataFrame,
    y: np.ndarray,
    cfg: TrainConfig,
    metric: str,
    splits: Folds,
    progress: Progress | None = None,
    task: str = BINARY,
    n_classes: int = 2,
) -> tuple[CandidateResult, list[TrialRecord]]:
    """Cross-validate ``kind``'s fixed parameters (trial 0), then search its space, here."""
    run = local_batches(kind, X, y, cfg, metric, splits, task, n_classes)
    return search_candidate(kind, cfg, metric, run, BATCH, progress or (lambda _msg: None))


def _best(records: list[TrialRecord], metric: str) -> TrialRecord:
    """The best record that ran every fold; the earliest wins a tie."""
    best = records[0]
    for rec in records[1:]:
        if not rec.pruned and better(metric, rec.cv_mean, best.cv_mean):
            best = rec
    return best


SELECTIONS = ("one_se", "best")


def complexity(record: TrialRecord) -> float:
    """A trial's size, for the one-standard-error rule to prefer the smaller: a boosted
    model's rounds times its ``max_depth`` (XGBoost's default 6 when unset); 0 for a kind
    without rounds, which leaves the CV mean to decide between its trials."""
    if record.rounds is None:
        return 0.0
    return float(record.rounds * record.params.get("max_depth", 6))


def select(records: list[TrialRecord], metric: str, rule: str, folds: int) -> Selection:
    """The trial kept among one candidate's ``records`` (trial 0 first) by ``rule``: ``best``,
    the best CV mean (the earliest on a tie); ``one_se``, among the trials that ran every fold
    and are within one standard error of the best's mean, trial 0 if it is one of them, else
    the one of least :func:`complexity` (then the better mean, then the earlier trial). The
    lead of a tuned trial within the CV noise is not worth a larger or tuned model."""
    if rule not in SELECTIONS:
        raise ValueError(f"train.tuning.select is {rule!r}; use one of {SELECTIONS}")
    top = _best(records, metric)
    se = top.cv_std / math.sqrt(folds - 1)  # population std -> the sample std over sqrt(folds)
    lower = metric in LOWER_IS_BETTER
    bound = top.cv_mean + se if lower else top.cv_mean - se
    inside = [r for r in records if not r.pruned
              and (r.cv_mean <= bound if lower else r.cv_mean >= bound)]  # fmt: skip
    sign = 1.0 if lower else -1.0
    if rule == "best":
        chosen, why = top, "the best CV mean"
    elif inside[0].trial == 0:
        chosen, why = inside[0], "the untuned trial 0 is within one standard error of the best"
    else:
        chosen = min(inside, key=lambda r: (complexity(r), sign * r.cv_mean, r.trial))
        simplest = "the simplest trial (rounds x max_depth) within one standard error of the best"
        why = "the best CV mean" if chosen is top else simplest
    qualified = tuple(r.trial for r in inside)
    return Selection(rule, chosen.trial, top.trial, top.cv_mean, se, bound, qualified, why)


def selection_line(kind: str, s: Selection, records: list[TrialRecord], metric: str) -> str:
    """The progress line that says which trial a candidate keeps and why, with the figures."""
    kept = records[s.chosen]
    line = (f"{kind}: keeps trial {s.chosen} (train.tuning.select={s.rule}: {s.why}): cv {metric} "
            f"{kept.cv_mean:.4f}")  # fmt: skip
    if s.rule == "one_se":
        line += (f"; best trial {s.top} {s.top_mean:.4f}, one SE {s.se:.4f}, bound {s.bound:.4f}, "
                 f"{len(s.qualified)} trial(s) within it")  # fmt: skip
    return line


def tune(
    X: pd.DataFrame,
    y: np.ndarray,
    cfg: TrainConfig,
    metric: str,
    progress: Progress | None = None,
    task: str = BINARY,
    classes: tuple[str, ...] = ("0", "1"),
) -> TuningResult:
    """Tune every candidate of ``cfg`` on the same folds of the training data ``X``/``y``
    (``y`` encoded as :func:`mlcycle.features.encode_target` does; ``classes`` in order)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n_classes = tasks.get(task).output_width(len(classes))
    cfg = class_weight_search(cfg, task, np.bincount(y.astype(np.int64)) if n_classes else [])
    splits = make_folds(X, y, cfg, task, classes)
    result = TuningResult(metric=metric, folds=cfg.cv_folds)
    for kind in cfg.candidates:
        candidate, records = tune_candidate(
            kind, X, y, cfg, metric, splits, progress, task, n_classes
        )
        result.candidates[kind] = candidate
        result.records.extend(records)
        if progress:
            progress(
                f"{kind}: kept cv {metric} {candidate.cv.mean:.4f} ± {candidate.cv.std:.4f} "
                f"(trial {candidate.best_trial} of {candidate.trials}; untuned "
                f"{candidate.untuned.mean:.4f})"
            )
    if cfg.baseline in result.candidates:
        c = result.candidates[cfg.baseline]
        result.baseline = CandidateResult(
            c.name, 0, c.untuned_params, c.untuned, c.untuned_params, c.untuned, 1
        )
    elif cfg.baseline:
        params = fixed_params(cfg.baseline, cfg)
        cv = cross_validate(cfg.baseline, X, y, params, cfg, metric, splits, task, n_classes)
        result.baseline = CandidateResult(cfg.baseline, 0, params, cv, params, cv, 1)
        if progress:
            progress(f"baseline {cfg.baseline} (untuned): cv {metric} {cv.mean:.4f} ± {cv.std:.4f}")
    return result


# --- reporting -------------------------------------------------------------------------------


def _r(value: float) -> float:
    return round(float(value), DIGITS)


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: (_r(v) if isinstance(v, float) and math.isfinite(v) else v) for k, v in params.items()
    }


def summary(result: TuningResult) -> dict[str, Any]:
    """The selection, for metrics/train.json: each candidate's CV mean ± std, best params and
    trial, the winner, and whether its lead over the runner-up exceeds the runner-up's std.

    Deterministic: no timings.
    """
    ranking = result.ranking
    winner = result.candidates[ranking[0]]
    doc: dict[str, Any] = {
        "metric": result.metric,
        "cv_folds": result.folds,
        "candidates": {
            name: {
                "cv_mean": _r(c.cv.mean),
                "cv_std": _r(c.cv.std),
                "best_trial": c.best_trial,
                "trials": c.trials,
                "params": _jsonable(c.params),
                "rounds": c.cv.final_rounds,
                "untuned_cv_mean": _r(c.untuned.mean),
                "untuned_cv_std": _r(c.untuned.std),
                **({"selection": selection_doc(c.selection)} if c.selection else {}),
                **({"search": search_doc(c.search)} if c.search else {}),
            }
            for name, c in result.candidates.items()
        },
        "ranking": ranking,
        "winner": winner.name,
    }
    if result.baseline:
        b = result.baseline
        doc["baseline"] = {
            "model": b.name,
            "cv_mean": _r(b.cv.mean),
            "cv_std": _r(b.cv.std),
            "rounds": b.cv.final_rounds,
        }
    if len(ranking) > 1:
        runner = result.candidates[ranking[1]]
        lead = abs(winner.cv.mean - runner.cv.mean)
        doc["runner_up"] = runner.name
        doc["lead"] = _r(lead)
        doc["lead_exceeds_runner_up_std"] = bool(lead > runner.cv.std)
    return doc


def search_doc(s: SearchStop) -> dict[str, Any]:
    """A candidate's :class:`SearchStop` for metrics/train.json: what ended its search, and
    its trials finished (trial 0 not counted) and cancelled at ``train.tuning.timeout``."""
    return {
        "stopped_by": s.reason,
        "budget": s.budget,
        "finished_trials": s.finished,
        "cancelled_trials": {RUNNING: s.cancelled_running, NOT_STARTED: s.cancelled_not_started},
    }


def selection_doc(s: Selection) -> dict[str, Any]:
    """A candidate's :class:`Selection` for metrics/train.json."""
    return {
        "rule": s.rule,
        "why": s.why,
        "top_trial": s.top,
        "top_cv_mean": _r(s.top_mean),
        "standard_error": _r(s.se),
        "bound": _r(s.bound),
        "within_bound": list(s.qualified),
    }


def trials_csv(records: list[TrialRecord], metric: str) -> str:
    """Every trial as CSV (:data:`TRIALS_COLUMNS`); params as a JSON object per row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TRIALS_COLUMNS)
    for r in records:
        writer.writerow(
            [
                r.candidate,
                r.trial,
                metric,
                f"{r.cv_mean:.6f}",
                f"{r.cv_std:.6f}",
                "" if r.rounds is None else r.rounds,
                f"{r.duration_s:.2f}",
                json.dumps(_jsonable(r.params), sort_keys=True),
                "" if r.pruned_after is None else r.pruned_after,
            ]
        )
    return out.getvalue()


def mean_curves(curves: tuple[dict[str, list[float]], ...]) -> dict[str, list[float]]:
    """Per metric, the mean over folds of each round's value, up to the shortest fold."""
    if not curves:
        return {}
    out = {}
    for metric in curves[0]:
        length = min(len(c[metric]) for c in curves)
        out[metric] = [float(np.mean([c[metric][i] for c in curves])) for i in range(length)]
    return out
