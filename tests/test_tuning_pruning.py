"""A faster search (``train.tuning.pruner``): trials clearly behind stop between folds, are
recorded as pruned with their partial CV mean, never win, and a rerun prunes the same trials;
``none`` is the search as it was. The fold pieces (``fit_fold``, ``CVResult.from_folds``,
``should_stop``) give what ``cross_validate`` gives, so a driver running folds elsewhere
(Optuna's ask/tell) applies the same rule. Folds fitted side by side in threads
(``train.parallel_folds``) give the very same search; ``train.tuning.patience`` stops a settled
search early, on both engines' drivers."""

from __future__ import annotations

import csv
import io
import json
import time

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from mlcycle import config
from mlcycle.features import encode_target, to_model_frame
from mlcycle.tasks import LOWER_IS_BETTER
from mlcycle.tuning import (
    BATCH,
    TRIALS_COLUMNS,
    CVResult,
    Deadline,
    Outcome,
    SearchStop,
    TrialRecord,
    TuningResult,
    complexity,
    cross_validate,
    distributions,
    fit_fold,
    fixed_params,
    fold_threads,
    local_batches,
    make_folds,
    make_pruner,
    search_candidate,
    select,
    should_stop,
    suggest,
    summary,
    trials_csv,
    tune,
    tune_candidate,
)
from tests.conftest import ROOT, synthetic_records
from tests.conftest import TINY_SIGNATURE as SIGNATURE

# A space wide enough that some proposals are clearly behind (a learning rate near zero).
SPACE = {
    "xgboost": {
        "learning_rate": {"low": 0.001, "high": 0.5, "log": True},
        "max_depth": {"low": 1, "high": 6},
    },
    "logistic_regression": {"C": {"low": 0.0001, "high": 10.0, "log": True}},
}
FOLDS = 4


def cfg(pruner: str, trials: int = 16, **knobs: int) -> config.TrainConfig:
    """The train settings of these tests (folds one at a time, no patience unless ``knobs``,
    keys of train or of train.tuning, say otherwise)."""
    knobs = {"parallel_folds": 1, "patience": 0, **knobs}
    tuning = {k: knobs.pop(k) for k in list(knobs) if k in config.Tuning.model_fields}
    return config.TrainConfig(
        seed=3, nthread=1, validation_fraction=0.2, cv_folds=FOLDS, candidates=("xgboost",),
        xgb={"n_estimators": 40, "early_stopping_rounds": 5, "learning_rate": 0.3,
             "max_depth": 3},
        tuning={"trials": trials, "pruner": pruner, **tuning}, search=SPACE, **knobs,
    )  # fmt: skip


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    records = synthetic_records(1200, seed=5)
    return to_model_frame(records, SIGNATURE), encode_target(records["label"], SIGNATURE)


@pytest.fixture(scope="module")
def median(data) -> object:
    X, y = data
    return tune(X, y, cfg("median"), "roc_auc")


@pytest.fixture(scope="module")
def plain(data) -> object:
    X, y = data
    return tune(X, y, cfg("none"), "roc_auc")


def without_durations(records: list[TrialRecord]) -> list[list[str]]:
    rows = list(csv.reader(io.StringIO(trials_csv(records, "roc_auc"))))
    at = rows[0].index("duration_s")
    return [row[:at] + row[at + 1 :] for row in rows]


# --- the fold pieces -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["xgboost", "logistic_regression"])
def test_folds_in_any_order_assemble_into_what_cross_validate_gives(data, kind) -> None:
    X, y = data
    c = cfg("none")
    splits = make_folds(X, y, cfg("none"), "binary_classification", ("no", "yes"))
    params = fixed_params(kind, c)
    whole = cross_validate(kind, X, y, params, c, "roc_auc", splits)
    folds = [fit_fold(kind, X, y, params, c, "roc_auc", splits, i) for i in (3, 1, 0, 2)]
    parts = CVResult.from_folds(folds, splits, len(y), 2, "binary_classification")
    assert parts.scores == whole.scores
    assert np.array_equal(parts.oof, whole.oof) and not np.isnan(parts.oof).any()
    assert parts.rounds == whole.rounds and parts.valid_curves == whole.valid_curves
    assert (len(parts.rounds) == FOLDS) == (kind == "xgboost")
    with pytest.raises(ValueError, match="do not cover"):
        CVResult.from_folds(folds[:3], splits, len(y), 2, "binary_classification")


def test_make_pruner_follows_the_setting() -> None:
    assert isinstance(make_pruner(cfg("none")), optuna.pruners.NopPruner)
    assert isinstance(make_pruner(cfg("median")), optuna.pruners.MedianPruner)


# --- none: the search as it was --------------------------------------------------------------


def search_without_pruning(X, y, c: config.TrainConfig) -> list[TrialRecord]:
    """The search before pruning existed: whole CVs only, seeded TPE told about trial 0, asked
    for BATCH trials at a time and told their scores after each batch, repeated
    configurations not refitted; the sampler's random start-up trials are budget // 2 search
    trials, trial 0 not counted among them."""
    kind, metric = "xgboost", "roc_auc"
    splits = make_folds(X, y, c, "binary_classification", ("no", "yes"))
    base = fixed_params(kind, c)
    records, seen = [], {}

    def evaluate(params):
        key = json.dumps(params, sort_keys=True, default=str)
        cv = seen.get(key) or cross_validate(kind, X, y, params, c, metric, splits)
        seen[key] = cv
        records.append(TrialRecord(kind, len(records), params, cv.mean, cv.std,
                                   cv.final_rounds, 0.0))  # fmt: skip
        return cv

    untuned = evaluate(base)
    dists = distributions(c.search[kind])
    budget = c.tuning_trials
    study = optuna.create_study(
        direction="minimize" if metric in LOWER_IS_BETTER else "maximize",
        sampler=optuna.samplers.TPESampler(seed=c.seed, n_startup_trials=min(10, budget // 2) + 1),
    )
    study.add_trial(optuna.trial.create_trial(
        params={k: base[k] for k in dists}, distributions=dists, value=untuned.mean))  # fmt: skip
    for start in range(0, budget, BATCH):
        batch = [study.ask() for _ in range(min(BATCH, budget - start))]
        values = [evaluate({**base, **suggest(t, dists)}).mean for t in batch]
        for trial, value in zip(batch, values, strict=True):
            study.tell(trial, value)
    return records


def test_none_gives_the_trials_of_the_search_without_pruning(data, plain) -> None:
    X, y = data
    assert not any(r.pruned for r in plain.records) and len(plain.records) == 17
    reference = search_without_pruning(X, y, cfg("none"))
    assert without_durations(plain.records) == without_durations(reference)


# --- median: trials behind stop --------------------------------------------------------------


def test_median_prunes_trials_behind_and_they_never_win(data, median) -> None:
    pruned = [r for r in median.records if r.pruned]
    assert pruned, "a space this wide has proposals clearly behind the median"
    assert all(1 <= r.pruned_after < FOLDS and r.rounds is None for r in pruned)
    best_full = max(r.cv_mean for r in median.records if not r.pruned)
    winner = median.candidates["xgboost"]
    assert winner.best_trial not in {r.trial for r in pruned}
    assert not {r.trial for r in pruned} & set(winner.selection.qualified)
    assert winner.selection.top_mean == best_full and len(winner.cv.scores) == FOLDS
    # A pruned trial's cv_mean is the mean over the folds it ran; clearly behind the best.
    assert all(r.cv_mean < best_full for r in pruned)
    # Trial 0 and the trials up to the pruner's start-up count run every fold.
    assert not any(r.pruned for r in median.records[: cfg("median").pruner_startup])
    rows = list(csv.reader(io.StringIO(trials_csv(median.records, "roc_auc"))))
    assert tuple(rows[0]) == TRIALS_COLUMNS and rows[0][-1] == "pruned_after"
    assert {r[-1] for r in rows[1:]} == {""} | {str(r.pruned_after) for r in pruned}


def test_median_saves_folds_and_still_finds_a_good_configuration(median, plain) -> None:
    folds_run = sum(r.pruned_after or FOLDS for r in median.records)
    assert folds_run < FOLDS * len(plain.records)
    assert median.winner.cv.mean >= plain.records[0].cv_mean  # at least the untuned score


def test_a_rerun_prunes_the_same_trials_with_the_same_scores(data, median) -> None:
    X, y = data
    again = tune(X, y, cfg("median"), "roc_auc")
    assert without_durations(again.records) == without_durations(median.records)


def test_a_larger_start_up_prunes_later(data, median) -> None:
    X, y = data
    late = tune(X, y, cfg("median", pruner_startup=12), "roc_auc")
    assert not any(r.pruned for r in late.records[:12])
    assert sum(r.pruned for r in late.records) < sum(r.pruned for r in median.records)


def test_trial_zero_alone_is_never_pruned(data) -> None:
    X, y = data
    c = cfg("median", trials=0)
    splits = make_folds(X, y, cfg("none"), "binary_classification", ("no", "yes"))
    result, records = tune_candidate("xgboost", X, y, c, "roc_auc", splits)
    assert len(records) == 1 and not records[0].pruned and result.best_trial == 0


def test_an_ask_tell_driver_running_folds_apart_prunes_the_same_trials(data, median) -> None:
    """What a cluster driver does: ask for a batch of trials, run their folds (here one by
    one, as tasks would), decide with should_stop between folds, tell the results in order;
    the same trials as tune, whose local driver takes the same path."""
    X, y = data
    c = cfg("median")
    splits = make_folds(X, y, c, "binary_classification", ("no", "yes"))
    base = fixed_params("xgboost", c)
    dists = distributions(c.search["xgboost"])
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=c.seed, n_startup_trials=9),
        pruner=make_pruner(c),
    )
    untuned = cross_validate("xgboost", X, y, base, c, "roc_auc", splits)
    study.add_trial(optuna.trial.create_trial(
        params={k: base[k] for k in dists}, distributions=dists, value=untuned.mean,
        intermediate_values={i: float(np.mean(untuned.scores[: i + 1])) for i in range(FOLDS)},
    ))  # fmt: skip
    outcome: list[int | None] = []
    while len(outcome) < c.tuning_trials:
        batch = [study.ask() for _ in range(min(BATCH, c.tuning_trials - len(outcome)))]
        told = []
        for trial in batch:
            params = {**base, **suggest(trial, dists)}
            folds = []
            for i in range(FOLDS):
                folds.append(fit_fold("xgboost", X, y, params, c, "roc_auc", splits, i))
                if should_stop(trial, folds, FOLDS):
                    told.append((trial, None, len(folds)))
                    break
            else:
                told.append((trial, CVResult.from_folds(folds, splits, len(y)).mean, None))
        for trial, value, pruned_after in told:  # told after the batch, in trial order
            if value is None:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, value)
            outcome.append(pruned_after)
    assert outcome == [r.pruned_after for r in median.records[1:]]


# --- folds side by side, patience -------------------------------------------------------------


@pytest.mark.parametrize("workers", [2, 3])
def test_folds_side_by_side_give_the_same_search(data, median, workers: int) -> None:
    """The same scores, the same pruned trials and the same winner as one fold at a time:
    results are taken in fold order, and a pruned trial's other folds are dropped."""
    X, y = data
    side = tune(X, y, cfg("median", parallel_folds=workers), "roc_auc")
    assert any(r.pruned for r in side.records)
    assert without_durations(side.records) == without_durations(median.records)
    assert np.array_equal(side.winner.cv.oof, median.winner.cv.oof)
    c = cfg("none", parallel_folds=workers)
    splits = make_folds(X, y, cfg("none"), "binary_classification", ("no", "yes"))
    for kind in ("xgboost", "logistic_regression"):
        params = fixed_params(kind, c)
        one = cross_validate(kind, X, y, params, cfg("none"), "roc_auc", splits)
        many = cross_validate(kind, X, y, params, c, "roc_auc", splits)
        assert many.scores == one.scores and np.array_equal(many.oof, one.oof), kind


def test_a_failing_fold_side_by_side_is_reported_and_stops_the_others(data) -> None:
    X, y = data
    c = cfg("none", parallel_folds=2)
    splits = make_folds(X, y, cfg("none"), "binary_classification", ("no", "yes"))
    bad = {**fixed_params("xgboost", c), "max_depth": -4}
    with pytest.raises(Exception, match="max_depth"):
        cross_validate("xgboost", X, y, bad, c, "roc_auc", splits)


def test_fold_threads_share_nthread() -> None:
    import os

    assert fold_threads(8, 2) == 4 and fold_threads(2, 2) == 1 and fold_threads(1, 4) == 1
    assert fold_threads(0, 1) == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("patience", [2, 4])
def test_patience_stops_a_settled_search_at_the_same_trial(data, median, patience: int) -> None:
    """The search stops once ``patience`` trials in a row have not beaten the best: the trials
    it ran are the first ones of the whole search, it stops at the first batch end ``patience``
    or more after the best, and the winner is the whole search's best up to there."""
    X, y = data
    short = tune(X, y, cfg("median", patience=patience), "roc_auc")
    ran = without_durations(short.records)
    assert len(short.records) < len(median.records)
    assert ran == without_durations(median.records)[: len(ran)]
    best = short.winner.selection.top  # the best CV mean (the kept trial may be a simpler one)
    # checked after each batch of trials: the first batch end at least `patience` past the best
    assert patience <= short.records[-1].trial - best < patience + BATCH
    top = short.winner.selection.top_mean
    assert all(r.pruned or r.cv_mean <= top for r in short.records[best + 1 :])
    again = tune(X, y, cfg("median", patience=patience), "roc_auc")
    assert without_durations(again.records) == ran


def test_patience_on_the_ask_tell_driver_stops_at_a_batch_end(data) -> None:
    """The Dask engine's driver (batches of trials told in order) applies the same rule after
    each batch: it stops at the first batch end at least ``patience`` trials past the best."""
    X, y = data
    c = cfg("median", patience=3)
    splits = make_folds(X, y, c, "binary_classification", ("no", "yes"))

    def run_batch(asked, trials, _deadline):
        out = []
        for params, trial in zip(asked, trials, strict=True):
            start, folds = 0.0, []
            for i in range(FOLDS):
                folds.append(fit_fold("xgboost", X, y, params, c, "roc_auc", splits, i))
                if trial is not None and should_stop(trial, folds, FOLDS):
                    break
            else:
                out.append(Outcome(folds, start, CVResult.from_folds(folds, splits, len(y))))
                continue
            out.append(Outcome(folds, start))
        return out

    messages: list[str] = []
    result, records = search_candidate("xgboost", c, "roc_auc", run_batch, 4, messages.append)
    assert len(records) - 1 < c.tuning_trials and (len(records) - 1) % 4 == 0
    assert records[-1].trial - result.selection.top >= 3
    assert records[-5].trial - result.selection.top < 3  # the batch before did not stop it
    assert any("train.tuning.patience" in m for m in messages)


# --- settings --------------------------------------------------------------------------------


def test_the_pruner_settings_are_read_and_checked() -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"]["tuning"].update(pruner="median", pruner_startup=3, pruner_warmup=1, patience=7)
    raw["train"]["parallel_folds"] = 3
    train = config.parse_params(raw).train
    assert (train.tuning_pruner, train.pruner_startup, train.pruner_warmup) == ("median", 3, 1)
    assert (train.tuning_patience, train.parallel_folds) == (7, 3)
    raw["train"]["tuning"].update(pruner="sometimes", pruner_startup=-1, patience=-2)
    raw["train"]["parallel_folds"] = 0
    with pytest.raises(config.ConfigError) as caught:
        config.parse_params(raw)
    assert "'train.tuning.pruner'" in str(caught.value)
    assert "'train.tuning.pruner_startup' must be at least 0" in str(caught.value)
    assert "'train.tuning.patience' must be at least 0" in str(caught.value)
    assert "'train.parallel_folds' must be at least 1" in str(caught.value)
    with pytest.raises(ValueError, match="train.tuning.pruner"):
        # Settings that skipped validation: the tuner checks the pruner again.
        unchecked = config.Tuning.model_construct(pruner="sometimes")
        make_pruner(cfg("none").model_copy(update={"tuning": unchecked}))


def test_the_fast_bootstrap_auc_equals_the_rank_auc_of_each_resample() -> None:
    """The interval's resamples as row counts give the rank AUC of the resampled rows, ties
    included; above POISSON_ROWS the Poisson bootstrap gives an interval around the AUC."""
    from mlcycle import metrics

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 5000)
    p = np.round(rng.uniform(size=5000) * 0.6 + y * 0.2, 2)  # many ties
    auc = metrics._WeightedAUC(y, p)
    for _ in range(5):
        idx = rng.integers(0, 5000, 5000)
        assert auc(np.bincount(idx, minlength=5000)) == pytest.approx(
            metrics.roc_auc_by_ranks(y[idx], p[idx]), abs=1e-12
        )
    whole = metrics.roc_auc_by_ranks(y, p)
    old = metrics.POISSON_ROWS
    try:
        metrics.POISSON_ROWS = 1000
        got = metrics.bootstrap_interval(
            "binary_classification", y, np.column_stack([1 - p, p]), 0.5, "roc_auc"
        )
    finally:
        metrics.POISSON_ROWS = old
    assert got["resamples"] == metrics.POISSON_RESAMPLES
    assert got["low"] < whole < got["high"] and got["high"] - got["low"] < 0.05


# --- distinct settings, progress lines in order, what pruning compared ------------------------

FOREST = {"random_forest": {"min_samples_leaf": {"low": 2, "high": 20},
                            "max_features": {"choices": ["sqrt", 0.3, 0.5]}}}  # fmt: skip


def counted(run):  # noqa: ANN001, ANN201
    """``run`` (a batch runner), recording every setting it is asked to evaluate."""
    evaluated: list[dict] = []

    def counting(asked, trials, deadline):  # noqa: ANN001, ANN202
        evaluated.extend(asked)
        return run(asked, trials, deadline)

    return counting, evaluated


@pytest.mark.parametrize("seed", [59, 73, 141])
def test_a_two_trial_search_evaluates_two_distinct_settings(data, seed: int) -> None:
    """A 2-trial budget spends both trials on settings not tried before (trial 0's included),
    each cross-validated: no repeat is counted as a trial. (These seeds made TPE, modelled on
    trial 0 alone, propose trial 0's setting again.)"""
    X, y = data
    c = config.TrainConfig(
        seed=seed, nthread=1, cv_folds=2, candidates=("random_forest",), search=FOREST,
        models={"random_forest": {"n_estimators": 5, "min_samples_leaf": 5,
                                  "max_features": "sqrt"}},
        tuning={"trials": 2, "pruner": "none", "patience": 0},
    )  # fmt: skip
    splits = make_folds(X, y, c, "binary_classification", ("no", "yes"))
    counting, evaluated = counted(local_batches("random_forest", X, y, c, "roc_auc", splits))
    _, records = search_candidate("random_forest", c, "roc_auc", counting, BATCH, lambda _: None)
    keys = [json.dumps(r.params, sort_keys=True) for r in records]
    assert len(records) == 3 and len(set(keys)) == 3, keys
    assert [json.dumps(p, sort_keys=True) for p in evaluated] == keys  # each one fitted


def test_progress_comes_before_the_stop_that_follows_it(data) -> None:
    """The line "trial N/budget" is said before "search stopped after N of budget", for the same N,
    whatever stops the search (patience or the time budget)."""
    X, y = data
    splits = make_folds(X, y, cfg("none"), "binary_classification", ("no", "yes"))
    for knobs in ({"patience": 1}, {"timeout": 1e-6}):
        c = cfg("none", trials=30, **knobs)
        said: list[str] = []
        tune_candidate("logistic_regression", X, y, c, "roc_auc", splits, said.append)
        stop = next(i for i, m in enumerate(said) if "search stopped after" in m)
        n = int(said[stop].split("search stopped after ")[1].split(" of ")[0])
        assert f"trial {n}/30:" in said[stop - 1], (knobs, said)


def test_the_pruning_line_says_what_was_compared(data) -> None:
    """For a lower-is-better metric the progress line names the last pruned trial's mean over
    its first folds and the median of earlier trials' over the same folds, not CV means."""
    X, y = data
    said: list[str] = []
    result = tune(X, y, cfg("median"), "log_loss", progress=said.append)
    pruned = [r for r in result.records if r.pruned]
    assert pruned
    lines = [m for m in said if "(last: trial" in m]
    assert lines, said
    last = lines[-1]
    assert "mean over its first" in last and "earlier trials' first" in last
    assert "lower is better" in last and "mean of 4 folds" in last


def test_a_space_with_no_untried_setting_left_ends_the_search(data) -> None:
    """Two choices, trial 0 one of them: one search trial, then the search says it has no
    setting left instead of spending the budget on repeats."""
    X, y = data
    c = cfg("none", trials=6).model_copy(
        update={"candidates": ("logistic_regression",),
                "search": {"logistic_regression": {"C": {"choices": [1.0, 0.5]}}}}
    )  # fmt: skip
    splits = make_folds(X, y, c, "binary_classification", ("no", "yes"))
    said: list[str] = []
    _, records = tune_candidate("logistic_regression", X, y, c, "roc_auc", splits, said.append)
    assert [r.params["C"] for r in records] == [1.0, 0.5]
    assert "repeated settings already tried" in said[-2] and "stopped after 1 of 6" in said[-2]
    assert "trial 1/6:" in said[-3] and "keeps trial" in said[-1]  # the selection comes last


# --- selection: the untuned or simpler setting within the CV noise ---------------------------


def record(trial: int, mean: float, std: float, rounds: int | None = None, depth: int = 6,
           pruned_after: int | None = None) -> TrialRecord:  # fmt: skip
    params = {"max_depth": depth} if rounds is not None else {"C": 1.0 + trial}
    return TrialRecord("xgboost", trial, params, mean, std, rounds, 1.0, pruned_after)


# One standard error of the best (trial 3: std 0.012 over 4 folds) is 0.012 / sqrt(3) = 0.00693.
TRIALS = [
    record(0, 0.900, 0.010, rounds=100),  # untuned: 0.0100 behind
    record(1, 0.905, 0.010, rounds=300, depth=3),  # 900: the simplest within one SE
    record(2, 0.907, 0.011, rounds=400, depth=4),  # 1600
    record(3, 0.910, 0.012, rounds=200, depth=8),  # 1600: the best
    record(4, 0.909, 0.010, rounds=100, depth=2, pruned_after=2),  # pruned: never kept
]


def test_one_se_keeps_the_simplest_trial_within_one_standard_error_of_the_best() -> None:
    s = select(TRIALS, "roc_auc", "one_se", FOLDS)
    assert (s.top, s.chosen, s.qualified) == (3, 1, (1, 2, 3))
    assert s.se == pytest.approx(0.012 / np.sqrt(3)) and s.bound == pytest.approx(0.910 - s.se)
    assert "simplest" in s.why
    assert select(TRIALS, "roc_auc", "best", FOLDS).chosen == 3
    assert complexity(TRIALS[1]) == 900 and complexity(record(5, 0.9, 0.0)) == 0


def test_one_se_keeps_the_untuned_trial_when_it_is_within_the_noise() -> None:
    close = [record(0, 0.904, 0.010, rounds=900, depth=9), *TRIALS[1:]]
    s = select(close, "roc_auc", "one_se", FOLDS)
    assert s.chosen == 0 and "untuned" in s.why and s.qualified == (0, 1, 2, 3)


def test_one_se_keeps_the_best_when_no_other_trial_is_within_the_noise() -> None:
    sharp = [*TRIALS[:3], record(3, 0.910, 0.001, rounds=2000, depth=10)]
    s = select(sharp, "roc_auc", "one_se", FOLDS)
    assert (s.chosen, s.qualified, s.why) == (3, (3,), "the best CV mean")
    # A kind without rounds has no complexity: the CV mean decides among the trials within.
    flat = [record(0, 0.900, 0.010), record(1, 0.905, 0.010), record(2, 0.910, 0.012)]
    assert select(flat, "roc_auc", "one_se", FOLDS).chosen == 2


def test_one_se_bounds_a_lower_is_better_metric_from_above() -> None:
    rmse = [record(0, 10.4, 1.2, rounds=50), record(1, 10.0, 1.2, rounds=500)]
    s = select(rmse, "rmse", "one_se", FOLDS)
    assert s.bound == pytest.approx(10.0 + 1.2 / np.sqrt(3)) and s.chosen == 0
    assert select([rmse[0], record(1, 8.0, 0.3, rounds=500)], "rmse", "one_se", FOLDS).chosen == 1
    with pytest.raises(ValueError, match="train.tuning.select"):
        select(rmse, "rmse", "fewest", FOLDS)


@pytest.mark.parametrize("rule", ["one_se", "best"])
def test_the_search_keeps_the_selected_trial_with_its_folds_and_says_why(data, rule) -> None:
    """Both engines' driver (search_candidate) keeps the rule's trial: its params, its CV
    (the same mean as its record, with every row's out-of-fold prediction), the line that
    says why, and the figures in train.json."""
    X, y = data
    said: list[str] = []
    result = tune(X, y, cfg("median", select=rule), "roc_auc", progress=said.append)
    kept = result.candidates["xgboost"]
    s = select(result.records, "roc_auc", rule, FOLDS)
    assert kept.selection == s and kept.best_trial == s.chosen
    assert kept.params == result.records[s.chosen].params
    assert kept.cv.mean == pytest.approx(result.records[s.chosen].cv_mean, abs=1e-12)
    assert not np.isnan(kept.cv.oof).any()
    assert any(f"keeps trial {s.chosen} (train.tuning.select={rule}" in m for m in said)
    doc = summary(result)["candidates"]["xgboost"]
    assert doc["best_trial"] == s.chosen and doc["selection"]["rule"] == rule
    assert doc["selection"]["top_trial"] == s.top and s.chosen in doc["selection"]["within_bound"]


# --- the time budget -------------------------------------------------------------------------

# Search trials that would boost for hours (a million rounds, never early-stopped): only the
# deadline ends them. Trial 0 (train.xgb: 40 rounds) takes a fraction of a second.
ENDLESS = {"xgboost": {"n_estimators": {"low": 10**6, "high": 10**6 + 1},
                       "early_stopping_rounds": {"low": 10**6, "high": 10**6 + 1},
                       "learning_rate": {"low": 1e-5, "high": 2e-5}}}  # fmt: skip


@pytest.mark.parametrize("parallel_folds", [1, 2])
def test_the_timeout_cancels_running_trials_and_starts_no_more(data, parallel_folds) -> None:
    """``train.tuning.timeout`` bounds a search whose trials each outlast it: trial 0 runs
    whole, the first search trial is cancelled at a boosting round when the deadline passes
    (folds one at a time or side by side), the rest of its batch never starts, and no
    cancelled trial is counted: trials.csv lists trial 0 alone, the stop line and train.json's
    search record count them as cancelled. (Were the running trial not cancelled, the test
    would not end.)"""
    X, y = data
    c = cfg("none", trials=8, timeout=3.0, parallel_folds=parallel_folds)
    c = c.model_copy(update={"search": ENDLESS})
    splits = make_folds(X, y, c, "binary_classification", ("no", "yes"))
    said: list[str] = []
    result, records = tune_candidate("xgboost", X, y, c, "roc_auc", splits, said.append)
    assert [r.trial for r in records] == [0] and not records[0].pruned
    assert len(result.untuned.scores) == FOLDS and result.best_trial == 0
    assert result.search == SearchStop("timeout", 8, 0, cancelled_running=1,
                                       cancelled_not_started=BATCH - 1)  # fmt: skip
    stop = next(m for m in said if "search stopped after" in m)
    assert "train.tuning.timeout of 3s passed" in stop
    assert f"after 0 of 8 finished trial(s); {BATCH} cancelled and not counted (1 running" in stop
    assert len(trials_csv(records, "roc_auc").splitlines()) == 2  # the header and trial 0
    tuned = TuningResult("roc_auc", FOLDS, records, {"xgboost": result})
    assert summary(tuned)["candidates"]["xgboost"]["search"] == {
        "stopped_by": "timeout", "budget": 8, "finished_trials": 0,
        "cancelled_trials": {"running": 1, "not started": BATCH - 1},
    }  # fmt: skip


def test_trial_zero_runs_whole_past_the_timeout_and_then_nothing_starts(data) -> None:
    """A timeout shorter than trial 0: the untuned fallback still runs every fold, and no
    search trial is proposed or started after it."""
    X, y = data
    c = cfg("none", trials=8, timeout=1e-6).model_copy(update={"search": ENDLESS})
    splits = make_folds(X, y, c, "binary_classification", ("no", "yes"))
    counting, evaluated = counted(local_batches("xgboost", X, y, c, "roc_auc", splits))
    result, records = search_candidate("xgboost", c, "roc_auc", counting, BATCH, lambda _: None)
    assert len(evaluated) == 1 and len(records) == 1 and len(result.untuned.scores) == FOLDS
    assert result.search == SearchStop("timeout", 8, 0)


def test_a_worker_fold_stops_at_the_deadline(data) -> None:
    """The Dask engine's fold task (``run_fold``, on a worker) honours the same deadline: it
    does not start once the deadline has passed (0 seconds), and a fit running when it passes
    stops at its next boosting round; without a deadline it returns the local fold."""
    from mlcycle.engines.dask.train import SplitData, run_fold

    X, y = data
    c = cfg("none")
    splits = make_folds(X, y, c, "binary_classification", ("no", "yes"))
    split = SplitData(X, y, splits)
    endless = {**fixed_params("xgboost", c), "n_estimators": 10**6,
               "early_stopping_rounds": 10**6}  # fmt: skip
    args = (split, "xgboost", endless, c, "roc_auc", 0, "binary_classification", 2)
    assert run_fold(*args, Deadline(time.time() - 1)) == (None, 0.0)
    fold, seconds = run_fold(*args, Deadline.after(0.5))
    assert fold is None and seconds > 0
    fixed = fixed_params("xgboost", c)
    whole, _ = run_fold(split, "xgboost", fixed, c, "roc_auc", 0, "binary_classification", 2)
    assert whole.score == fit_fold("xgboost", X, y, fixed, c, "roc_auc", splits, 0).score
