"""The evaluate stage on the Dask engine: the test split scored partition by partition.

Each worker loads the model (and the untuned baseline) once, keyed by the model file's
SHA-256, and scores its partitions; the test predictions are written as Parquet parts with the
local engine's columns. Each partition then reduces to sums (:func:`mlcycle.metrics.
partial_sums`): confusion counts at the threshold, log loss and Brier sums, calibration bins,
regression moments, per slice value too (a group-by on the slice columns). This process merges
those sums, so every threshold and sum KPI is exact and equals the local engine's.

Ranking figures (ROC AUC, PR AUC, median absolute error, residual quantiles, the ROC and PR
curves) and the bootstrap interval need the rows. When the test split has at most
``EXACT_ROWS`` (one million) rows, this process gathers only the label, the model's output and
the slice columns (a few numbers per row, never the records) and computes them exactly, as the
local engine does. Above that nothing per row reaches this process, so its memory does not
grow with the data: ROC AUC, PR AUC and the macro one-vs-rest ROC AUC stay exact, from a table
of positives and negatives per distinct score that the workers build, sort and sum
(:func:`rank_kpis`); the primary metric's interval, when it is a binary ROC AUC, is DeLong's
from the same table; the curves and the slices' ranking KPIs come from a fine histogram of
scores per class, dask's approximate quantiles give the median absolute error and residual
quantiles. evaluate.json names every figure so made (``pr_auc_method: "distributed sort"``,
``slice_ranking_method: "histogram"``...); an interval that cannot be had is null, not faked.

confusion.csv holds a seeded sample of at most ``SAMPLE_ROWS`` rows (chosen by row hash), not
one line per test row: its plot shows proportions. The SHAP summary uses ``SHAP_ROWS`` rows.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlcycle import config, tasks
from mlcycle.datasets import dataset_rows, sample_dataset
from mlcycle.engines.base import Evaluated, EvaluatePaths, Say
from mlcycle.engines.dask.cluster import bounded, computed, guarded
from mlcycle.engines.dask.data import read_dataset, write_dataset
from mlcycle.evaluation import (
    BASE,
    SLICE,
    Chosen,
    Evaluation,
    check_slices,
    frame_kpis,
    kpi_names,
    measure,
    merge_summaries,
    output_columns,
    predictions,
    score_frame,
    summarize,
    threshold_rule,
)
from mlcycle.evaluation import decision as decision_of_rows
from mlcycle.features import Signature, to_model_frame, unseen_categories
from mlcycle.io import read_json, sha256_file
from mlcycle.metrics import (
    NO_INTERVAL,
    RANKING_KPIS,
    THRESHOLD_FREE,
    Sums,
    choose_threshold,
    kpis_from_sums,
    merge_sums,
    partial_sums,
    rounded,
    threshold_counts,
    threshold_curve_from_counts,
)
from mlcycle.models import MODEL_INFO, load_model_dir, model_files
from mlcycle.tasks import BINARY, DEFAULT_THRESHOLD

if TYPE_CHECKING:
    import dask.dataframe as dd
    from distributed import Client

EXACT_ROWS = 1_000_000  # test rows whose labels and outputs this process may gather
SHAP_ROWS = 2_000
SAMPLE_ROWS = 100_000  # rows of confusion.csv (and regression plot points beyond EXACT_ROWS)
_MODELS: dict[tuple[str, str], Any] = {}


def model_sha(directory: str | Path) -> str:
    """SHA-256 of the model file in a model directory (the workers' cache key)."""
    kind = read_json(Path(directory, MODEL_INFO))["kind"]
    return sha256_file(Path(directory, model_files()[kind]))


def _model(directory: str, sha: str, bundle: bool = False) -> Any:
    """The model in ``directory`` (a model directory, or with ``bundle`` a bundle's, checksum
    verified), loaded once per worker process (per file content)."""
    from mlcycle.bundle import load_bundle

    key = (directory, sha)
    if key not in _MODELS:
        _MODELS[key] = load_bundle(directory).model if bundle else load_model_dir(directory)[0]
    return _MODELS[key]


def score_part(
    part: pd.DataFrame,
    models: list[tuple[str, str, str]],
    sig_doc: dict,
    slices: list[str],
    bundle: bool = False,
) -> pd.DataFrame:
    """:func:`mlcycle.evaluation.score_frame` of one partition by ``models`` (prefix,
    directory, sha256; bundles with ``bundle``), each loaded once per worker."""
    loaded = [(prefix, _model(directory, sha, bundle)) for prefix, directory, sha in models]
    return score_frame(part, loaded, Signature.from_dict(sig_doc), slices)


def _unseen(part: pd.DataFrame, sig_doc: dict) -> pd.Series:
    found = unseen_categories(part, Signature.from_dict(sig_doc))
    return pd.Series([{k: set(v) for k, v in found.items()}])


def fold_partitions(client: Client, frame: dd.DataFrame, fn: Callable, merge: Callable) -> Any:
    """``fn(partition)`` on the workers for every partition, merged here one result at a time,
    in partition order, with ``merge(acc, result)``: this process holds the running total and
    one partition's result, never the partitions."""
    import dask

    tasks = [dask.delayed(fn)(part) for part in frame.to_delayed()]

    def fold() -> Any:
        acc = None
        for future in client.compute(tasks):  # in partition order: the same sums every run
            acc = merge(acc, future.result())
            future.release()
        return acc

    name = getattr(fn, "func", fn).__name__
    return bounded(f"{name} of {len(tasks)} partition(s)", fold)


def _add(a: Any, b: Any) -> Any:
    return b if a is None else a + b


def decision(
    obj: config.Objectives,
    signature: Signature,
    client: Client,
    oof_path: str,
    exact_rows: int = EXACT_ROWS,
) -> Chosen:
    """The local engine's decision (:func:`mlcycle.evaluation.decision`); a binary
    out-of-fold set (at ``oof_path``) of more than ``exact_rows`` rows is not gathered: its
    curve comes from confusion counts per candidate threshold summed over the partitions (a
    threshold-free metric from sums or the score histogram). The training stage keeps at most
    ``OOF_ROWS`` (as many as ``EXACT_ROWS``) out-of-fold rows, so a multiclass set's weights are
    fitted on rows gathered here."""
    if not tasks.get(obj.task).thresholded or dataset_rows(oof_path) <= exact_rows:
        return decision_of_rows(obj, signature, oof_path)
    oof = read_dataset(oof_path, columns=["actual", "probability"])
    counts = fold_partitions(client, oof, _oof_counts, _add)
    ranking = None
    if obj.threshold_metric in THRESHOLD_FREE:
        sums = fold_partitions(client, oof, _oof_sums, _merge_sums_or_first)
        ranking = kpis_from_sums(BINARY, sums, [obj.threshold_metric])
    curve = threshold_curve_from_counts(
        counts, obj.threshold_metric, obj.cost_fp, obj.cost_fn, ranking
    )
    return choose_threshold(curve, obj.threshold_metric), threshold_rule(obj), curve


def _oof_counts(part: pd.DataFrame) -> np.ndarray:
    return threshold_counts(part["actual"].to_numpy(), part["probability"].to_numpy())


def _oof_sums(part: pd.DataFrame) -> Sums:
    p = part["probability"].to_numpy(float)
    return partial_sums(BINARY, part["actual"].to_numpy(), p, DEFAULT_THRESHOLD, 2, hist=True)


def _merge_sums_or_first(a: Sums | None, b: Sums) -> Sums:
    return b if a is None else merge_sums(a, b)


Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval


def _score_table(scored: dd.DataFrame, column: str, code: int) -> dd.DataFrame:
    """Per distinct value of ``scored[column]``: its rows (``n``) and those whose label is
    ``code`` (``pos``), sorted by the value, on the workers (a group-by and a sort)."""
    frame = scored[[column]].assign(pos=(scored["actual"] == code).astype("int64"), n=1)
    table = frame.groupby(column).agg({"pos": "sum", "n": "sum"}, split_out=scored.npartitions)
    return table.reset_index().sort_values(column)


def _rank_sums(table: dd.DataFrame) -> dict[str, Any]:
    """Lazy sums over a :func:`_score_table` from which ROC AUC (the Mann-Whitney count, ties
    one half), average precision (scikit-learn's step sum, one threshold per distinct score)
    and DeLong's variance follow exactly."""
    pos = table["pos"]
    neg = table["n"] - pos
    pos_below, neg_below = pos.cumsum() - pos, neg.cumsum() - neg
    P, N = pos.sum(), neg.sum()
    tp, fp = P - pos_below, N - neg_below  # rows scored at or above each value
    pos_above = P - pos_below - pos
    return {
        "P": P,
        "N": N,
        "u2": (pos * (2 * neg_below + neg)).sum(),  # twice the Mann-Whitney U: exact integers
        "ap": (pos * tp / (tp + fp)).sum(),
        "v10": (pos * (2.0 * neg_below + neg) ** 2).sum(),  # sum of (2N x placement)^2
        "v01": (neg * (2.0 * pos_above + pos) ** 2).sum(),
    }


def _delong(s: dict[str, float], auc: float) -> dict[str, float | None]:
    """DeLong's 95% interval of a ROC AUC from :func:`_rank_sums` (placements' variances)."""
    P, N = float(s["P"]), float(s["N"])
    if P < 2 or N < 2 or not np.isfinite(auc):
        return {"low": None, "high": None}
    s10 = (s["v10"] / (4 * N * N) - P * auc * auc) / (P - 1)
    s01 = (s["v01"] / (4 * P * P) - N * auc * auc) / (N - 1)
    se = float(np.sqrt(max(s10 / P + s01 / N, 0.0)))
    return {"low": round(max(0.0, auc - Z95 * se), 6), "high": round(min(1.0, auc + Z95 * se), 6)}


def rank_kpis(
    scored: dd.DataFrame,
    sig: Signature,
    names: list[str] | tuple[str, ...],
    interval_of: str = "",
    prefix: str = "",
) -> tuple[dict[str, float], dict[str, float | None] | None]:
    """The ranking KPIs among ``names`` (``roc_auc``, ``pr_auc``, ``roc_auc_ovr``) of a scored
    split, exactly, without gathering its rows: per class a table of positives and negatives
    per distinct score, sorted and summed on the workers. With ``interval_of="roc_auc"`` (binary)
    also DeLong's 95% interval (``low``, ``high``), else None for it. ``prefix``: the outputs
    of another model in the same frame (:data:`mlcycle.evaluation.BASE`). Scikit-learn's
    values to the last few bits; undefined (NaN) when a class is absent."""
    wanted = [n for n in names if n in ("roc_auc", "pr_auc", "roc_auc_ovr")]
    if not wanted or not sig.is_classification:
        return {}, None
    outputs = output_columns(sig, prefix)
    columns = dict(zip(tasks.get(sig.task).ranked_columns(len(sig.classes)), outputs, strict=True))
    lazy = {c: _rank_sums(_score_table(scored, col, c)) for c, col in columns.items()}
    (sums,) = computed("the ranking figures' score tables", lazy)
    aucs, aps = {}, {}
    for c, s in sums.items():
        both = s["P"] > 0 and s["N"] > 0
        aucs[c] = float(s["u2"] / (2.0 * s["P"] * s["N"])) if both else float("nan")
        aps[c] = float(s["ap"] / s["P"]) if s["P"] > 0 else float("nan")
    values: dict[str, float] = {}
    for name in wanted:
        if name == "roc_auc":
            values[name] = aucs[1]
        elif name == "pr_auc":
            values[name] = aps[1]
        else:  # macro over the classes, undefined if one is absent (as the histogram's)
            values[name] = float(np.mean(list(aucs.values())))
    interval = None
    if interval_of == "roc_auc" and interval_of in tasks.get(sig.task).kpis:  # binary's
        interval = _delong(sums[1], aucs[1])
    return values, interval


def evaluate_scored(
    params: config.Params,
    signature: Signature,
    client: Client,
    scored: dd.DataFrame,
    chosen: Chosen,
    base_kind: str | None,
    unseen: dict[str, int],
    exact_rows: int = EXACT_ROWS,
) -> Evaluation:
    """Every figure of the evaluation from the scored test split (see the module's notes):
    :func:`mlcycle.evaluation.measure` of the partitions' merged summaries and, when there are
    at most ``exact_rows`` rows, of the gathered label and outputs; else the figures that need
    the rows from the workers."""
    obj = params.objectives
    names = kpi_names(obj)
    rows = int(bounded("the scored rows", scored.map_partitions(len).sum().compute))
    exact = rows <= exact_rows
    summarize_part = partial(
        summarize,
        signature=signature,
        decision=chosen[0],
        slices=list(obj.slices),
        hist=not exact,
        share=min(1.0, SAMPLE_ROWS / rows) if rows else 1.0,
        base=base_kind is not None,
    )
    summary = fold_partitions(client, scored, summarize_part, merge_summaries)
    frame = None
    if exact:  # a few numbers per row: the label, the outputs, the slice keys
        wanted = ["actual", *output_columns(signature), *(f"{SLICE}{c}" for c in obj.slices)]
        if base_kind is not None and RANKING_KPIS & set(obj.kpis):
            wanted += output_columns(signature, BASE)
        frame = bounded("the test labels and scores", scored[wanted].compute)
    ev = measure(params, signature, summary, frame, chosen, base_kind, unseen)
    if exact:
        return ev
    # Nothing per row gathered: exact ranks from the workers, DeLong's interval.
    ranks, delong = rank_kpis(scored, signature, names, obj.primary_metric)
    ev.notes = {f"{name}_method": "distributed sort" for name in ranks}
    if "median_ae" in names:
        median = _abs_residuals(scored).quantile(0.5)
        ranks["median_ae"] = float(bounded("the median absolute error", median.compute))
        ev.notes["median_ae_method"] = "quantile"
    ev.kpis.update(rounded(ranks))
    if delong is not None:
        ev.interval = {**NO_INTERVAL, **delong}
        ev.notes["confidence_interval_method"] = "delong"
    else:
        ev.notes["confidence_interval_note"] = (
            f"not computed: the test split has {rows} rows, more than the {exact_rows} "
            "whose labels and outputs the Dask engine gathers"
        )
    if obj.slices and RANKING_KPIS & set(names):
        ev.notes["slice_ranking_method"] = (
            "histogram" if tasks.get(signature.task).classification else "not computed"
        )
    if ev.baseline is not None:
        ev.baseline[1].update(rounded(rank_kpis(scored, signature, obj.kpis, prefix=BASE)[0]))
    if not tasks.get(signature.task).classification:
        ev.task_detail["residuals"] = _residuals_approx(scored, summary["all"])
    return ev


def _abs_residuals(scored: dd.DataFrame) -> dd.Series:
    return (scored["actual"] - scored["prediction"]).abs()


def _residuals_approx(scored: dd.DataFrame, s: Sums) -> dict[str, float]:
    """:func:`mlcycle.metrics.residual_summary` with exact mean and spread (sums) and dask's
    approximate quantiles."""
    qs = (0.05, 0.25, 0.5, 0.75, 0.95)
    quantiles = (scored["actual"] - scored["prediction"]).quantile(list(qs))
    values = bounded("the residual quantiles", quantiles.compute)
    n = float(s["n"][0])
    return {
        "mean": round(float(s["mean_r"][0]), 6),
        "std": round(float(np.sqrt(s["m2_r"][0] / n)), 6),
        **{
            f"q{int(q * 100):02d}": round(float(v), 6)
            for q, v in zip(qs, np.asarray(values), strict=True)
        },
    }


def evaluate_dask(
    params: config.Params,
    signature: Signature,
    client: Client,
    paths: EvaluatePaths,
    say: Say,
    exact_rows: int = EXACT_ROWS,
) -> Evaluated:
    """Score the test split on the cluster (the predictions written as parts) and measure it
    as the local engine does; the SHAP rows are a sample of ``SHAP_ROWS``. Every blocking call
    is bounded (:func:`~mlcycle.engines.dask.cluster.guarded`)."""
    with guarded(client, params.engine, dataset_rows(paths.test), say):
        return _evaluate(params, signature, client, paths, say, exact_rows)


def _evaluate(
    params: config.Params,
    signature: Signature,
    client: Client,
    paths: EvaluatePaths,
    say: Say,
    exact_rows: int,
) -> Evaluated:
    obj = params.objectives
    test = read_dataset(paths.test)
    check_slices(obj, list(test.columns))
    chosen = decision(obj, signature, client, paths.oof, exact_rows)
    model_dir = str(Path(paths.model_dir).resolve())
    models = [("", model_dir, model_sha(model_dir))]
    base_kind = None
    if Path(paths.baseline_dir).is_dir():
        base_dir = str(Path(paths.baseline_dir).resolve())
        models.append((BASE, base_dir, model_sha(base_dir)))
        base_kind = _model(*models[1][1:]).kind
    doc = signature.to_dict()
    slices = list(obj.slices)
    scored = test.map_partitions(
        score_part, models, doc, slices, meta=score_part(test._meta, models, doc, slices)
    ).persist()  # on the workers: scored once, read by the writer and the sums
    write_dataset(paths.predictions, predictions(scored), say)
    unseen_sets: dict[str, set] = {}
    found_sets = test.map_partitions(_unseen, doc, meta=(None, object))
    for found in bounded("the unseen categories", found_sets.compute):
        for key, values in found.items():
            unseen_sets.setdefault(key, set()).update(values)
    unseen = {key: len(v) for key, v in sorted(unseen_sets.items())}
    measured = evaluate_scored(
        params, signature, client, scored, chosen, base_kind, unseen, exact_rows
    )
    if measured.notes:
        say(f"test split of {measured.rows} rows: ranking figures approximate, no interval")
    say(
        f"scored {measured.rows} test rows in {test.npartitions} partition(s); "
        f"confusion.csv holds a sample of at most {SAMPLE_ROWS} rows"
    )
    X = to_model_frame(sample_dataset(paths.test, SHAP_ROWS), signature)
    return Evaluated(measured, _model(*models[0][1:]), X)


def champion_kpis(
    client: Client,
    test_path: str | Path,
    bundle_dir: str | Path,
    names: list[str],
    exact_rows: int = EXACT_ROWS,
) -> dict[str, float | None]:
    """The bundle's KPIs ``names`` on a test split scored partition by partition (the gate's
    champion): sums from the workers; a ranking KPI from the gathered label and output when
    the split has at most ``exact_rows`` rows, else from the workers' sorted score table
    (exact; the median absolute error from dask's approximate quantile)."""
    from mlcycle.bundle import MODEL_FILES, load_bundle

    bundle = load_bundle(bundle_dir)
    sig = bundle.signature
    bundle_dir = str(Path(bundle_dir).resolve())
    models = [("", bundle_dir, sha256_file(Path(bundle_dir, MODEL_FILES[bundle.model.kind])))]
    test = read_dataset(test_path)
    doc = sig.to_dict()
    scored = test.map_partitions(
        score_part, models, doc, [], True, meta=score_part(test._meta, models, doc, [], True)
    )
    ranking = bool(RANKING_KPIS & set(names))
    summarize_part = partial(
        summarize, signature=sig, decision=bundle.decision, slices=[], share=0.0
    )
    summary = fold_partitions(client, scored, summarize_part, merge_summaries)
    exact = dataset_rows(test_path) <= exact_rows
    wanted = scored[["actual", *output_columns(sig)]]
    frame = None
    if ranking and exact:
        frame = bounded("the champion's labels and scores", wanted.compute)
    values = frame_kpis(summary, frame, sig, bundle.decision, names)
    if ranking and frame is None:
        values.update(rank_kpis(scored, sig, names)[0])
    if "median_ae" in names and frame is None:
        median = _abs_residuals(scored).quantile(0.5)
        values["median_ae"] = float(bounded("the champion's median absolute error", median.compute))
    return rounded(values)
