"""One monitoring run: a batch of production records (a file, or a window of the prediction log)
judged against the served model's reference profile, its KPIs once labels arrive, an estimate
before they do, a verdict, and a line of history per run.

The pieces: :mod:`mlcycle.drift` (the tests and distances), :mod:`mlcycle.estimate` (performance
from the model's probabilities), :mod:`mlcycle.metrics` (KPIs on labelled rows, the same code as
evaluation). This module assembles them into the run's document (``monitor.json``, the HTML and
Markdown reports are drawn from it) and appends the history ``dvc plots`` draws.
"""

from __future__ import annotations

import csv
import io
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlcycle import drift
from mlcycle.config import MonitorConfig, Objectives, section
from mlcycle.estimate import estimate_kpi
from mlcycle.features import Signature
from mlcycle.io import write_text
from mlcycle.metrics import bootstrap_interval, compute_kpis
from mlcycle.monitor_report import feature_order, model_title
from mlcycle.prepare import label_text
from mlcycle.tasks import LOWER_IS_BETTER, Decision, meets

HISTORY_FILES = ("drift.csv", "predictions.csv", "kpis.csv")
HISTORY_COLUMNS = ("run", "time", "rows", "series", "value", "flag")


def log_batch(
    log: pd.DataFrame, signature: Signature
) -> tuple[pd.DataFrame, np.ndarray | None, pd.Series]:
    """The records, the model's outputs and the labels of a :func:`mlcycle.predlog.read_log`
    frame: records as sent (one column per input), outputs as the model's probability matrix
    in ``signature.classes`` order (or the regression values), labels as text (None where no
    label arrived)."""
    records = pd.DataFrame.from_records(log["inputs"].tolist(), index=log.index)
    for name in signature.input_columns:
        if name not in records.columns:
            records[name] = None
    return records, output_matrix(log["outputs"].tolist(), signature), log_labels(log)


def log_labels(log: pd.DataFrame) -> pd.Series:
    """The labels of a :func:`mlcycle.predlog.read_log` frame as text, None where none came."""
    return log["label"].astype(object).where(log["label"].notna(), None)


def output_matrix(outs: list[Any], signature: Signature) -> np.ndarray | None:
    """Logged outputs (the service's output dicts) as the model's probability matrix in
    ``signature.classes`` order, or the regression values; None when they do not fit the
    signature (logged by a model with other classes, or not by mlcycle's service)."""
    try:
        if signature.is_classification:
            return np.array(
                [[o["probabilities"][c] for c in signature.classes] for o in outs], dtype=float
            ).reshape(len(outs), len(signature.classes))
        return np.array([o["value"] for o in outs], dtype=float)
    except (KeyError, TypeError, ValueError):
        return None


def label_targets(labels: pd.Series, signature: Signature) -> tuple[np.ndarray, np.ndarray, int]:
    """Positions of usable labels, their encoded values (class index, or float), and how many
    labels could not be used (not a class of the model, not a number)."""
    present = labels.notna().to_numpy()
    texts = label_text(labels[present]).astype(object)  # one spelling: 1.0 is the class "1"
    if signature.is_classification:
        index = {c: i for i, c in enumerate(signature.classes)}
        codes = texts.map(index)
    else:
        codes = pd.to_numeric(texts, errors="coerce")
    ok = codes.notna().to_numpy()
    where = np.flatnonzero(present)[ok]
    return where, codes[ok].to_numpy(dtype=float), int((~ok).sum())


def _judge_predictions(
    profile: dict, output: np.ndarray, signature: Signature, settings: MonitorConfig, tests: int
) -> dict | None:
    ref = profile.get("predictions")
    if not ref:
        return None
    cols = drift.prediction_columns(output, signature, drift.profile_decision(profile))
    parts = {
        name: drift.as_dict(drift.compare_column(name, ref[name], cols[name], settings, tests))
        for name in cols
        if name in ref
    }
    main = parts.get("score") or parts.get("value")
    if main is None:
        return None
    out = {**main, "what": "score" if "score" in parts else "value"}
    if "class_mix" in parts:
        out["class_mix"] = parts["class_mix"]
        out["drifted"] = bool(main["drifted"] or parts["class_mix"]["drifted"])
    return out


BOOTSTRAP_ROWS = 20_000  # above this many rows a KPI's sampling error is negligible
BOOTSTRAP_RESAMPLES = 200


def _estimate_interval(task: str, name: str, output: np.ndarray, decision: Decision) -> dict | None:
    """95 % percentile bootstrap interval of the estimate (records resampled, seeded)."""
    n = len(output)
    if n > BOOTSTRAP_ROWS or n < 2:
        return None
    rng = np.random.default_rng(0)
    values = [
        estimate_kpi(task, name, output[rng.integers(0, n, n)], decision)
        for _ in range(BOOTSTRAP_RESAMPLES)
    ]
    values = [v for v in values if v is not None]
    if not values:
        return None
    low, high = np.quantile(values, [0.025, 0.975])
    return {"low": round(float(low), 6), "high": round(float(high), 6), "level": 0.95}


def judge(metric: str, value: float | None, limit: float, interval: dict | None) -> bool | None:
    """Whether ``value`` meets ``limit``: True if it does; False only if its whole 95 %
    interval misses it (a batch's sampling noise is no alarm); None if undecided (the value
    misses but its interval reaches the limit) or unknown."""
    if value is None:
        return None
    if meets(metric, value, limit):
        return True
    if interval is None or interval.get("low") is None:
        return False  # too many rows for sampling noise to matter
    reach = interval["low"] if metric in LOWER_IS_BETTER else interval["high"]
    return None if meets(metric, reach, limit) else False


def status(met: bool | None, judged: bool, why_not: str) -> str:
    """An objective's verdict in words, written into the run's document so every report says
    the same: "met", "not met" or "undecided" (the value misses, its 95 % interval reaches the
    bound) when ``judged``; else "not judged (``why_not``)"."""
    if not judged:
        return f"not judged ({why_not})"
    return {True: "met", False: "not met"}.get(met, "undecided")


def _performance(
    output: np.ndarray | None,
    labels: pd.Series | None,
    signature: Signature,
    objectives: Objectives,
    decision: Decision,
    profile: dict,
    settings: MonitorConfig,
) -> dict | None:
    if output is None:
        return None
    task = signature.task
    primary = objectives.primary_metric
    doc: dict[str, Any] = {"labelled_rows": 0, "unusable_labels": 0, "kpis": {}, "objectives": []}
    if labels is not None:
        where, y, bad = label_targets(labels, signature)
        doc["labelled_rows"], doc["unusable_labels"] = len(where), bad
        if len(where):
            doc["kpis"] = compute_kpis(task, y, output[where], decision, objectives.kpis)
        enough = len(where) >= settings.min_labels
        few = f"{len(where):,} labelled rows, fewer than min_labels {settings.min_labels:,}"
        for metric, limit in objectives.minimums.items():
            value = doc["kpis"].get(metric)
            interval = None
            if enough and value is not None and len(where) <= BOOTSTRAP_ROWS:
                interval = bootstrap_interval(
                    task, y, output[where], decision, metric, n_boot=BOOTSTRAP_RESAMPLES
                )
            met = judge(metric, value, limit, interval) if enough else None
            why_not = few if not enough else "no value"
            doc["objectives"].append(
                {
                    "metric": metric,
                    "bound": "maximum" if metric in LOWER_IS_BETTER else "minimum",
                    "value": value,
                    "limit": limit,
                    "interval": interval,
                    "met": met,
                    "status": status(met, enough and value is not None, why_not),
                }
            )
    estimated = estimate_kpi(task, primary, output, decision)
    ref = profile.get("performance") or {}
    limit = objectives.minimums.get(primary)
    interval = (
        _estimate_interval(task, primary, output, decision) if estimated is not None else None
    )
    met = None if limit is None or estimated is None else judge(primary, estimated, limit, interval)
    doc["estimated"] = (
        None
        if estimated is None
        else {
            "metric": primary,
            "value": estimated,
            "interval": interval,
            "reference": ref.get("estimated"),
            "reference_realized": ref.get("realized"),
            "limit": limit,
            "met": met,
            "status": status(met, limit is not None, f"no objective on {primary}"),
        }
    )
    return doc


def run(
    profile: dict,
    signature: Signature,
    objectives: Objectives,
    settings: MonitorConfig,
    records: pd.DataFrame,
    output: np.ndarray | None,
    labels: pd.Series | None,
    *,
    model: dict,
    window: dict,
) -> dict:
    """Judge one batch: ``records`` (the raw inputs), the model's ``output`` on them (None:
    no prediction drift nor estimate) and their true ``labels`` as text (None or missing
    values: not labelled yet). Returns the run's JSON-ready document."""
    n = len(records)
    for name, values in (("output", output), ("labels", labels)):
        if values is not None and len(values) != n:
            raise ValueError(f"{name} has {len(values)} rows for {n} records")
    labelled = labels[labels.notna()] if labels is not None else pd.Series([], dtype=object)
    judge_target = len(labelled) > 0 and profile.get("target") is not None
    tests = (
        len(signature.inputs)
        + (len(profile.get("predictions") or {}) if output is not None else 0)
        + int(judge_target)
    )
    features = drift.compare_features(profile, records, signature, settings, tests)
    predictions = (
        _judge_predictions(profile, output, signature, settings, tests)
        if output is not None and len(output) == n
        else None
    )
    target = _judge_target(profile, labelled, signature, settings, tests) if judge_target else None
    decision = drift.profile_decision(profile)
    performance = _performance(output, labels, signature, objectives, decision, profile, settings)
    drifted = [f.feature for f in features if f.drifted]
    verdict = bool(
        drifted or (predictions and predictions["drifted"]) or (target and target["drifted"])
    )
    reasons = _retrain_reasons(drifted, predictions, target, performance)
    return {
        "model": model,
        "window": window,
        "rows": n,
        "reference_rows": profile["rows"],
        "rule": drift.batch_rule(settings, n, tests),
        "settings": {
            "alpha": settings.alpha,
            "min_effect": settings.min_effect,
            "missing_threshold": settings.missing_threshold,
            "min_labels": settings.min_labels,
        },
        "drift": verdict,
        "drifted_features": drifted,
        "features": [drift.as_dict(f) for f in features],
        "predictions": predictions,
        "target": target,
        "performance": performance,
        "retrain": {"recommended": bool(reasons), "reasons": reasons},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _judge_target(
    profile: dict,
    labelled: pd.Series,
    signature: Signature,
    settings: MonitorConfig,
    tests: int,
) -> dict:
    """The labels' drift against the training target's profile."""
    values = labelled.astype(str)
    if not signature.is_classification:
        values = pd.to_numeric(values, errors="coerce")
    return {
        **drift.as_dict(drift.compare_column("target", profile["target"], values, settings, tests)),
        "what": "label",
    }


def _retrain_reasons(
    drifted: list[str], predictions: dict | None, target: dict | None, performance: dict | None
) -> list[str]:
    """Why retraining is recommended: what drifted and which objectives are missed."""
    reasons = []
    if drifted:
        reasons.append(f"inputs drifted: {', '.join(drifted)}")
    if predictions and predictions["drifted"]:
        reasons.append("the predictions drifted")
    if target and target["drifted"]:
        reasons.append("the labels' mix drifted")
    for o in (performance or {}).get("objectives", []):
        if o["met"] is False:
            op = "<=" if o["bound"] == "maximum" else ">="
            reasons.append(
                f"{o['metric']} {o['value']:.4f} on {performance['labelled_rows']} labelled "
                f"rows misses the objective ({op} {o['limit']})"
            )
    est = (performance or {}).get("estimated")
    if est and est["met"] is False:
        reasons.append(
            f"estimated {est['metric']} {est['value']:.4f} misses the objective ({est['limit']})"
        )
    return reasons


# --- reports and history ------------------------------------------------------------------------


def _num(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def markdown_report(doc: dict) -> str:
    """A short, readable report of :func:`run`'s document (for a terminal or a pull request)."""
    m, w = doc["model"], doc["window"]
    lines = [
        "# Monitoring report",
        "",
        f"Model {model_title(m)} ({m.get('id')}); {doc['rows']:,} rows "
        f"from {w.get('where')}; reference {doc['reference_rows']:,} rows."
        + (
            f" {w['omitted']:,} records logged without their inputs (over the log's limit "
            "for one request) were left out."
            if w.get("omitted")
            else ""
        ),
        "",
        f"**Verdict: {'DRIFT' if doc['drift'] else 'no drift'}.** {doc['rule']}",
        "",
        "**Retrain: "
        + ("recommended** (" + "; ".join(doc["retrain"]["reasons"]) + ")"
           if doc["retrain"]["recommended"] else "not needed**"),
        "",
        f"**Drifted features ({len(doc['drifted_features'])}):** "
        + (", ".join(doc["drifted_features"]) or "none"),
        "",
        "| column | kind | test | statistic | p-value | PSI | effect | missing (ref → new) "
        "| not numbers | drifted |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---|",
    ]  # fmt: skip
    extra = [(f"predictions ({p['what']})", p) for p in [doc["predictions"]] if p]
    if doc["predictions"] and doc["predictions"].get("class_mix"):
        extra.append(("predictions (class mix)", doc["predictions"]["class_mix"]))
    if doc["target"]:
        extra.append(("target (labels)", doc["target"]))
    rows = [(f["feature"], f) for f in feature_order(doc["features"])]
    for name, f in [*extra, *rows]:
        lines.append(
            f"| {name} | {f['kind']} | {f['test']} | {f['statistic']:.4f} | "
            f"{f['p_value']:.3g} | {f['psi']:.4f} | {f.get('effect', 0.0):.4f} | "
            f"{f['reference_missing_rate']:.1%} → {f['current_missing_rate']:.1%} | "
            f"{f.get('not_numbers_rate', 0.0):.1%} | "
            + (f"**yes** ({', '.join(f['reasons'])})" if f["drifted"] else "no")
            + " |"
        )
    perf = doc["performance"]
    if perf:
        lines += ["", f"## Performance ({perf['labelled_rows']:,} labelled rows)", ""]
        if perf["kpis"]:
            lines.append(", ".join(f"{k} {_num(v)}" for k, v in perf["kpis"].items()))
        for o in perf["objectives"]:
            said = f"**{o['status']}**" if o["met"] is False else o["status"]
            lines.append(f"- {o['metric']} {_num(o['value'])} vs {o['limit']}: {said}")
        est = perf["estimated"]
        if est:
            lines.append(
                f"- estimated {est['metric']} (from the probabilities, before labels) "
                f"{_num(est['value'])}; on the test split it estimated "
                f"{_num(est['reference'])} for a realised {_num(est['reference_realized'])}"
                + (f"; vs {est['limit']}: {est['status']}" if est["limit"] is not None else "")
            )
    return "\n".join(lines) + "\n"


def history_rows(doc: dict) -> dict[str, list[dict]]:
    """This run's lines of each history file: every column's PSI and verdict, the predicted
    class mix (or the mean prediction), and the KPIs (labelled and estimated)."""
    base = {"time": doc["created"], "rows": doc["rows"]}
    drift_rows = [
        {**base, "series": f["feature"], "value": f["psi"], "flag": int(f["drifted"])}
        for f in doc["features"]
    ]
    pred_rows = []
    p = doc["predictions"]
    if p:
        drift_rows.append(
            {**base, "series": f"(predictions {p['what']})", "value": p["psi"],
             "flag": int(p["drifted"])}
        )  # fmt: skip
        mix = p.get("class_mix")
        if mix:
            for b, share in zip(mix["histogram"]["bins"], mix["histogram"]["current"], strict=True):
                pred_rows.append({**base, "series": b, "value": share, "flag": int(mix["drifted"])})
        else:
            hist = p["histogram"]
            pred_rows += [
                {**base, "series": b, "value": share, "flag": int(p["drifted"])}
                for b, share in zip(hist["bins"], hist["current"], strict=True)
            ]
    if doc["target"]:
        t = doc["target"]
        drift_rows.append(
            {**base, "series": "(target)", "value": t["psi"], "flag": int(t["drifted"])}
        )
    kpi_rows = []
    perf = doc["performance"]
    if perf:
        met = {o["metric"]: o["met"] for o in perf["objectives"]}
        for k, v in perf["kpis"].items():
            if v is not None and perf["labelled_rows"] >= doc["settings"]["min_labels"]:
                kpi_rows.append(
                    {**base, "series": f"{k} (labelled)", "value": v,
                     "flag": int(met.get(k) is False)}
                )  # fmt: skip
        est = perf["estimated"]
        if est:
            kpi_rows.append(
                {**base, "series": f"{est['metric']} (estimated)", "value": est["value"],
                 "flag": int(est["met"] is False)}
            )  # fmt: skip
            if est["limit"] is not None:
                kpi_rows.append(
                    {**base, "series": f"{est['metric']} (objective)", "value": est["limit"],
                     "flag": 0}
                )  # fmt: skip
    return {"drift.csv": drift_rows, "predictions.csv": pred_rows, "kpis.csv": kpi_rows}


def _read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            return []
        if tuple(reader.fieldnames) != HISTORY_COLUMNS:
            raise ValueError(
                f"{path} is not a monitoring history (columns {reader.fieldnames}, expected "
                f"{list(HISTORY_COLUMNS)}); move it aside"
            )
        return list(reader)


def append_history(folder: str | Path, doc: dict) -> int:
    """Append this run to the history files under ``folder`` (each rewritten atomically, so a
    killed run leaves the old history whole) and return the run's number."""
    folder = Path(folder)
    existing = {name: _read_history(folder / name) for name in HISTORY_FILES}
    runs = [int(r["run"]) for rows in existing.values() for r in rows if r["run"].isdigit()]
    number = max(runs, default=0) + 1
    for name, rows in history_rows(doc).items():
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(existing[name])
        writer.writerows({"run": number, **r} for r in rows)
        write_text(folder / name, buf.getvalue())
    return number


def summary_line(doc: dict) -> str:
    """One line for the terminal."""
    drifted = doc["drifted_features"]
    parts = [
        f"{len(drifted)} of {len(doc['features'])} features drifted: {', '.join(drifted) or 'none'}"
    ]
    p = doc["predictions"]
    if p:
        parts.append(f"predictions {'drifted' if p['drifted'] else 'stable'}")
    perf = doc["performance"]
    if perf and perf["estimated"]:
        e = perf["estimated"]
        parts.append(f"estimated {e['metric']} {_num(e['value'])}")
    if perf and perf["labelled_rows"]:
        parts.append(f"{perf['labelled_rows']} labelled rows")
    verdict = "retrain recommended" if doc["retrain"]["recommended"] else "no action needed"
    return "; ".join(parts) + f"; {verdict}"


def objectives_from_bundle(metadata: dict) -> Objectives:
    """The objectives the served model was built for (from its bundle's metadata)."""
    return section({"objectives": metadata["objectives"]}, "objectives")
