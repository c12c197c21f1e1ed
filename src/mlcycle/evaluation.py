"""What evaluation measures on the test split, written once over a frame of scored rows for
both engines: :func:`score_frame` scores a frame of test rows, :func:`summarize` reduces scored
rows to additive sums and a sample, :func:`merge_summaries` adds two summaries, and
:func:`measure` turns the merged summary (and the rows' labels and outputs, when they are at
hand) into the :class:`Evaluation` the evaluate stage writes. The local engine applies them to
the whole test split as its one partition; the Dask engine maps them over the partitions and,
for a split too large to gather, adds the figures only a cluster can make (see
:mod:`mlcycle.engines.dask.evaluate`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlcycle import config, tasks
from mlcycle.datasets import row_hash, unit_interval
from mlcycle.features import Signature, encode_target, to_model_frame
from mlcycle.metrics import (
    KPI_FUNCTIONS,
    NO_INTERVAL,
    WEIGHT_RESAMPLES,
    ClassWeights,
    bootstrap_interval,
    calibration_from_sums,
    choose_threshold,
    class_curves,
    confusion_from_sums,
    fit_class_weights,
    hist_curves,
    kpis_from_sums,
    merge_sums,
    partial_sums,
    prediction_frame,
    prediction_spread,
    regression_points,
    residual_summary,
    rounded,
    slice_entry,
    threshold_curve,
)
from mlcycle.models import Model
from mlcycle.tasks import Decision

BASE = "__base_"  # the prefix of the untuned baseline's outputs in a scored frame
SLICE = "__slice_"  # the prefix of a slice column's keys in a scored frame
MISSING = "<missing>"  # the slice of rows whose slice column is missing


Chosen = tuple[Decision, str, list[dict]]  # a decision, its rule in words, the curve behind it


def decision(obj: config.Objectives, signature: Signature, oof_path: str) -> Chosen:
    """The :data:`~mlcycle.tasks.Decision` fitted on the training split's out-of-fold
    predictions at ``oof_path`` (never the test split), its rule in words and, binary, the
    threshold curve behind it: binary, the threshold of ``objectives.threshold``; multiclass,
    per-class weights fitted to the primary metric (:func:`mlcycle.metrics.fit_class_weights`;
    argmax when they do not beat it beyond noise, or the metric is one argmax serves);
    regression, none. Both engines call it (the Dask engine sums a large binary set's curve
    instead, :func:`mlcycle.engines.dask.evaluate.decision`)."""
    task = tasks.get(obj.task)
    if not task.classification:
        return None, task.decision_rule, []
    oof = pd.read_parquet(oof_path)
    y = oof["actual"].to_numpy()
    if not task.thresholded:
        fitted = fit_class_weights(y, output_of(oof, signature), obj.primary_metric)
        return fitted.weights, class_weights_rule(fitted, signature.classes), []
    curve = threshold_curve(
        y, oof["probability"].to_numpy(), obj.threshold_metric, obj.cost_fp, obj.cost_fn
    )
    return choose_threshold(curve, obj.threshold_metric), threshold_rule(obj), curve


def class_weights_rule(fitted: ClassWeights, classes: tuple[str, ...]) -> str:
    """How a multiclass decision was chosen, in words (metrics/threshold.json, the card)."""
    m = fitted.metric
    crossfit = (
        f"cross-fitted {fitted.crossfit:.4f}, better in {fitted.wins:.0%} of "
        f"{WEIGHT_RESAMPLES} resamples"
    )
    if fitted.weights is not None:
        weights = ", ".join(f"{c}: {w:g}" for c, w in zip(classes, fitted.weights, strict=True))
        return (
            f"weights per class ({weights}), the label the class of the largest weighted "
            f"probability: out-of-fold {m} {fitted.weighted:.4f} against {fitted.argmax:.4f} "
            f"at argmax ({crossfit})"
        )
    if fitted.wins == 0.0 and fitted.weighted == fitted.argmax:
        return f"argmax: the most probable class serves {m}"
    return (
        f"argmax: weights per class gave out-of-fold {m} {fitted.weighted:.4f} against "
        f"{fitted.argmax:.4f} on the rows they were fitted on, within noise ({crossfit})"
    )


def threshold_rule(obj: config.Objectives) -> str:
    """How the binary decision threshold is chosen, in words (metrics/threshold.json)."""
    if obj.threshold_metric:
        return f"maximises out-of-fold {obj.threshold_metric}"
    return f"minimises out-of-fold cost ({obj.cost_fp} per FP, {obj.cost_fn} per FN)"


@dataclass
class Evaluation:
    """What either engine measured on the test split, ready to be written: KPIs (rounded),
    the primary metric's interval, slices, the baseline, the task's details (confusion,
    per-class report, residuals), plot data and the rows of confusion.csv. ``notes`` are
    extra evaluate.json keys saying what was approximated (the Dask engine on a test split
    too large to gather; empty otherwise)."""

    decision: Decision
    rule: str
    curve: list[dict]
    kpis: dict[str, float | None]
    interval: dict
    slices: dict[str, dict]
    baseline: tuple[str, dict[str, float | None]] | None
    task_detail: dict
    plots: dict[str, list]
    confusion_rows: str
    rows: int
    unseen: dict[str, int]
    notes: dict = field(default_factory=dict)


def kpi_names(obj: config.Objectives) -> tuple[str, ...]:
    """The KPIs evaluate.json reports: the objectives' first, then every one of the task."""
    return tuple(dict.fromkeys((*obj.kpis, *KPI_FUNCTIONS[obj.task])))


def check_slices(obj: config.Objectives, columns: list[str]) -> None:
    """A ValueError naming slice columns the test split does not have."""
    unknown = [col for col in obj.slices if col not in columns]
    if unknown:
        raise ValueError(
            f"objectives.slices names column(s) {unknown} that the test split does not have; "
            f"columns are {list(columns)}"
        )


def confusion_csv_rows(y: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> str:
    """The rows of plots/confusion.csv: each test row's actual and predicted class, by name."""
    return "".join(f"{classes[a]},{classes[p]}\n" for a, p in zip(y, labels, strict=True))


def n_classes(signature: Signature) -> int:
    """The width of the class axis of the sums: the classes, none for regression."""
    return len(signature.classes) if signature.is_classification else 0


def output_columns(signature: Signature, prefix: str = "") -> list[str]:
    """The prediction-file columns holding the model output."""
    return tasks.get(signature.task).output_columns(signature.classes, prefix)


def output_of(frame: pd.DataFrame, signature: Signature, prefix: str = "") -> np.ndarray:
    """The model output matrix (or vector) from prediction-file columns."""
    return tasks.get(signature.task).output_from_columns(frame, signature.classes, prefix)


def slice_keys(col: pd.Series) -> np.ndarray:
    """A slice column's values as slices are named (missing: ``<missing>``)."""
    return np.array([str(v) for v in col.fillna(MISSING)], dtype=object)


def score_frame(
    part: pd.DataFrame, models: list[tuple[str, Model]], signature: Signature, slices: list[str]
) -> pd.DataFrame:
    """A frame of test rows scored: the prediction file's columns (the output of the first of
    ``models``, a list of (prefix, model), then ``actual``), the other models' outputs under
    their prefix (:data:`BASE`) and each slice column's keys (:data:`SLICE` + column)."""
    X = to_model_frame(part, signature)
    y = encode_target(part[signature.target], signature)
    scored = None
    for prefix, model in models:
        if len(part):
            output = model.output(X)
        else:  # an empty frame (dask's meta partition): no model call
            output = np.zeros((0, len(signature.classes)) if signature.is_classification else 0)
        frame = prediction_frame(output, y, signature.task, signature.classes)
        if scored is None:
            scored = frame
            continue
        for col in frame.columns.drop("actual"):
            scored[f"{prefix}{col}"] = frame[col].to_numpy()
    assert scored is not None
    for col in slices:
        scored[f"{SLICE}{col}"] = slice_keys(part[col])
    return scored


def predictions(scored: pd.DataFrame) -> pd.DataFrame:
    """The columns of the prediction file of a scored frame (not the baseline's, not the slice
    keys)."""
    return scored[[c for c in scored.columns if not c.startswith("__")]]


def summarize(
    scored: pd.DataFrame,
    signature: Signature,
    decision: Decision,
    slices: list[str],
    hist: bool = False,
    share: float = 1.0,
    base: bool = False,
) -> dict:
    """Scored rows reduced to sums (:func:`mlcycle.metrics.partial_sums`): overall (``all``),
    the baseline's (``base``), per slice value (``slices``), and a row-hash ``sample`` of
    (actual, output) rows of about ``share`` of the rows (all of them at 1)."""
    task, k = signature.task, n_classes(signature)
    y = scored["actual"].to_numpy()
    out = output_of(scored, signature)
    summary: dict = {"all": partial_sums(task, y, out, decision, k, hist)}
    if base:
        base_out = output_of(scored, signature, BASE)
        summary["base"] = partial_sums(task, y, base_out, decision, k, hist)
    summary["slices"] = {}
    for col in slices:
        keys = scored[f"{SLICE}{col}"].to_numpy()
        groups = pd.Series(np.arange(len(scored))).groupby(keys, sort=False).indices
        summary["slices"][col] = {
            str(v): partial_sums(task, y[ix], out[ix], decision, k, hist)
            for v, ix in groups.items()
        }
    cols = ["actual", *output_columns(signature)]
    if share >= 1.0:
        summary["sample"] = scored[cols].reset_index(drop=True)
    elif share <= 0.0:
        summary["sample"] = scored[cols].iloc[:0].reset_index(drop=True)
    else:
        pick = unit_interval(row_hash(scored[cols], 0, "confusion sample")) < share
        summary["sample"] = scored.loc[pick, cols].reset_index(drop=True)
    return summary


def merge_summaries(a: dict | None, b: dict) -> dict:
    """Two :func:`summarize` summaries as one (``a`` None: ``b``), in this order (the sample
    rows of ``a`` first)."""
    if a is None:
        return b
    out = {"all": merge_sums(a["all"], b["all"]), "slices": {}}
    if "base" in a:
        out["base"] = merge_sums(a["base"], b["base"])
    for col, groups in a["slices"].items():
        merged = dict(groups)
        for v, s in b["slices"][col].items():
            merged[v] = merge_sums(merged[v], s) if v in merged else s
        out["slices"][col] = merged
    out["sample"] = pd.concat([a["sample"], b["sample"]], ignore_index=True)
    return out


def frame_kpis(
    summary: dict,
    frame: pd.DataFrame | None,
    signature: Signature,
    decision: Decision,
    names: tuple[str, ...] | list[str],
    prefix: str = "",
) -> dict[str, float]:
    """The KPIs ``names`` of scored rows from their merged :func:`summarize` summary (unrounded,
    NaN where undefined); the ranking ones from ``frame``'s label and output when given, else
    from the histogram or NaN. ``prefix`` :data:`BASE`: the baseline's."""
    pairs = None
    if frame is not None:
        pairs = (frame["actual"].to_numpy(), output_of(frame, signature, prefix))
    sums = summary["base" if prefix else "all"]
    return kpis_from_sums(signature.task, sums, names, decision, pairs, n_classes(signature))


def measure(
    params: config.Params,
    signature: Signature,
    summary: dict,
    frame: pd.DataFrame | None,
    chosen: Chosen,
    base_kind: str | None,
    unseen: dict[str, int],
) -> Evaluation:
    """Every figure of the evaluation from a merged :func:`summarize` summary: the sum KPIs,
    confusion counts, per-class report and calibration from its sums, confusion.csv from its
    sample. The ranking KPIs, the primary metric's bootstrap interval (overall and per slice),
    the residuals and the curves come from ``frame`` (the scored rows' label, outputs and slice
    keys; the baseline's outputs too for its ranking KPIs) when given; without it, from the
    histogram or not at all (the Dask engine fills those in for a split too large to
    gather)."""
    obj, task = params.objectives, signature.task
    decision, rule, curve = chosen
    pairs = None
    interval = NO_INTERVAL
    if frame is not None:
        pairs = (frame["actual"].to_numpy(), output_of(frame, signature))
        interval = bootstrap_interval(task, *pairs, decision, obj.primary_metric, seed=0)
    baseline = None
    if base_kind is not None:
        base_frame = frame
        if frame is not None and not set(output_columns(signature, BASE)) <= set(frame):
            base_frame = None  # the baseline's outputs not gathered: no ranking KPI asked
        base = frame_kpis(summary, base_frame, signature, decision, obj.kpis, BASE)
        baseline = (base_kind, rounded(base))
    detail, plots, confusion_rows = task_figures(
        signature, summary, pairs, decision, params.evaluate.curve_points
    )
    return Evaluation(
        decision=decision,
        rule=rule,
        curve=curve,
        kpis=rounded(frame_kpis(summary, frame, signature, decision, kpi_names(obj))),
        interval=interval,
        slices={
            col: slice_entries(obj, signature, summary, frame, col, decision) for col in obj.slices
        },
        baseline=baseline,
        task_detail=detail,
        plots=plots,
        confusion_rows=confusion_rows,
        rows=int(summary["all"]["n"][0]),
        unseen=unseen,
    )


def slice_entries(
    obj: config.Objectives,
    signature: Signature,
    summary: dict,
    frame: pd.DataFrame | None,
    col: str,
    decision: Decision,
) -> dict[str, dict]:
    """The slices of column ``col`` (:func:`mlcycle.metrics.slice_entry`) from their sums in
    ``summary`` and, when given, their rows in ``frame``, by slice value."""
    task, k = signature.task, n_classes(signature)
    y = out = keys = None
    if frame is not None:
        y, out = frame["actual"].to_numpy(), output_of(frame, signature)
        keys = frame[f"{SLICE}{col}"].to_numpy()
    entries = {}
    for value, s in sorted(summary["slices"][col].items()):
        rows = None if keys is None else (y[keys == value], out[keys == value])
        entries[value] = slice_entry(
            task, s, kpi_names(obj), decision, k, obj.slice_min_rows, obj.primary_metric, rows
        )
    return entries


def task_figures(
    signature: Signature,
    summary: dict,
    pairs: tuple[np.ndarray, np.ndarray] | None,
    decision: Decision,
    points: int,
) -> tuple[dict, dict[str, list], str]:
    """The task's details in evaluate.json (classification: confusion counts, per-class
    report and how the predictions spread over the classes; regression: residuals, from the
    rows' ``pairs`` only), the data of every plot
    dvc.yaml draws (a plot that does not fit the task is drawn empty, not failed) and the rows
    of confusion.csv (the summary's sample)."""
    spec, s, classes = tasks.get(signature.task), summary["all"], signature.classes
    sample = summary["sample"]
    y_s, out_s = sample["actual"].to_numpy(), output_of(sample, signature)
    plots: dict[str, list] = dict.fromkeys(
        ("roc", "precision_recall", "calibration", "predicted_actual"), []
    )
    if not spec.classification:
        plots["predicted_actual"] = regression_points(*(pairs or (y_s, out_s)))
        return ({"residuals": residual_summary(*pairs)} if pairs else {}), plots, ""
    plots["roc"], plots["precision_recall"] = (
        class_curves(*pairs, classes, points) if pairs else hist_curves(s, classes, points)
    )
    # Binary: the positive class's probability against its rate; multiclass: the confidence
    # of the top class against how often it is right.
    plots["calibration"] = calibration_from_sums(s)
    labels = spec.decide(out_s, decision)
    return (
        {
            **confusion_from_sums(signature.task, s, classes),
            "prediction_spread": prediction_spread(s, classes),
        },
        plots,
        confusion_csv_rows(y_s, labels, classes),
    )
