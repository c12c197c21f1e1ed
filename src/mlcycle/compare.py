"""The online comparison: a challenger (a version released as shadow or canary) set against
production on a window of the prediction log, and the rollout rule's decision.

- **Shadow**: production answered every record and the shadow scored it too, so every
  difference is *paired*: the agreement of the two decisions, each KPI's difference on the
  labelled records with a bootstrap interval that resamples the records once and scores both
  models on the same resample, and before labels the difference of the label-free estimate.
- **Canary**: each record was answered by one model, so the two groups are compared
  (*unpaired*: each group resampled on its own), with the observed share of requests against
  the configured one and each group's input drift against the reference profile, so that a
  skewed split shows.

Differences are "challenger minus production"; a *gain* is the difference oriented so that
positive is better for every metric (:data:`mlcycle.tasks.LOWER_IS_BETTER`). :func:`decide`
turns the gain of the rule's metric into promote, watch or rollback (``rollout`` in
params.yaml, :class:`mlcycle.config.RolloutConfig`). The pieces are monitor's (the outputs and
labels of a log frame), the metrics' (KPIs, bootstrap resamples), the estimate's and the
drift tests'. Pure: frames in, a JSON-ready document out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from mlcycle import drift, monitor, tasks
from mlcycle.config import MonitorConfig, Objectives, RolloutConfig
from mlcycle.estimate import estimate_kpi
from mlcycle.features import Signature
from mlcycle.metrics import bootstrap_values, compute_kpis, percentile_interval
from mlcycle.tasks import LOWER_IS_BETTER, Decision

SHADOW, CANARY = "shadow", "canary"
PROD_ROLE, CANARY_ROLE = "prod", "canary"  # the log's ``role``: which model answered
PROMOTE, WATCH, ROLLBACK = "promote", "watch", "rollback"
RESAMPLES = 400  # bootstrap resamples of each difference
SPLIT_TOLERANCE = 3.0  # standard errors of the configured share beyond which a split is skewed


class NothingToCompare(ValueError):
    """The window holds no record the challenger answered or scored; the message says why."""


@dataclass(frozen=True)
class Model:
    """One side of the comparison: its model id in the log, its decision (the bundle's), and
    what the document says of it (name, version, id, bundle)."""

    id: str
    decision: Decision
    info: dict[str, Any]


def _column(log: pd.DataFrame, name: str) -> pd.Series:
    """A column of the log frame, or None everywhere when the log has no such column (a log
    written before the service held a challenger)."""
    if name in log.columns:
        return log[name]
    return pd.Series(None, index=log.index, dtype=object)


def _rows(log: pd.DataFrame, production: Model, challenger: Model) -> dict[str, pd.Series]:
    """Which records production answered, the canary answered, and the shadow scored."""
    role = _column(log, "role")
    prod = (role.fillna(PROD_ROLE) == PROD_ROLE) & _by(log, production, "model")
    shadowed = prod & _by(log, challenger, "shadow_model") & _column(log, "shadow_output").notna()
    return {
        "prod": prod,
        "canary": (role == CANARY_ROLE) & _by(log, challenger, "model"),
        "shadow": shadowed,
    }


def _by(log: pd.DataFrame, model: Model, prefix: str) -> pd.Series:
    """The records whose ``<prefix>_id`` is the model's, and ``<prefix>_version`` its version
    when both are known: the same model released again (a shadow, later a canary) is another
    release, whose records start a comparison of their own."""
    hit = _column(log, f"{prefix}_id") == model.id
    version = model.info.get("version")
    if version is not None:  # a service serving folders (--bundle) logs no version
        logged = _column(log, f"{prefix}_version")
        hit &= logged.isna() | (logged == version)
    return hit


def _since_challenger(log: pd.DataFrame, production: Model, challenger: Model) -> pd.DataFrame:
    """The window from the first record the challenger answered or scored: records before it
    tell nothing of the comparison (and would skew the canary's share)."""
    rows = _rows(log, production, challenger)
    seen = (rows["canary"] | rows["shadow"]).to_numpy()
    if not seen.any():
        raise NothingToCompare(
            f"the window holds no record answered or scored by the challenger (model "
            f"{challenger.id}): is the service serving it (`mlcycle status --service`), and "
            "has it had traffic since?"
        )
    return log.iloc[int(np.argmax(seen)) :]


def infer_stage(log: pd.DataFrame, production: Model, challenger: Model) -> str:
    """The challenger's stage as the log shows it: canary if it answered records, else shadow."""
    return CANARY if _rows(log, production, challenger)["canary"].any() else SHADOW


def _sign(metric: str) -> float:
    return -1.0 if metric in LOWER_IS_BETTER else 1.0


def paired_gains(
    task: str,
    y: np.ndarray,
    outputs: tuple[np.ndarray, np.ndarray],
    decisions: tuple[Decision, Decision],
    metric: str,
) -> np.ndarray:
    """The challenger's bootstrap gains over production on the same records: the records
    resampled once per resample, both models' ``outputs`` (production's first) scored on it."""
    both = bootstrap_values(task, y, list(outputs), list(decisions), metric, RESAMPLES)
    return _sign(metric) * (both[:, 1] - both[:, 0])


def unpaired_gains(
    task: str,
    groups: tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    decisions: tuple[Decision, Decision],
    metric: str,
) -> np.ndarray:
    """The challenger's bootstrap gains over production from two groups of records, each
    ``(y, output)`` (production's first) resampled on its own."""
    values = [
        bootstrap_values(task, y, [out], [d], metric, RESAMPLES, seed)[:, 0]
        for seed, ((y, out), d) in enumerate(zip(groups, decisions, strict=True))
    ]
    k = min(map(len, values))  # the Poisson bootstrap of a huge group takes fewer
    return _sign(metric) * (values[1][:k] - values[0][:k])


def _kpi_entry(
    metric: str,
    prod_value: float | None,
    challenger_value: float | None,
    gains: np.ndarray | None,
    level: float,
    limit: float | None,
) -> dict[str, Any]:
    """One KPI of the comparison: both values, the difference (challenger minus production),
    the gain (positive: the challenger is better) and the bootstrap interval of the gain
    (None for a KPI the rule does not read: not computed)."""
    known = prod_value is not None and challenger_value is not None
    difference = round(challenger_value - prod_value, 6) if known else None
    return {
        "metric": metric,
        "better": "lower" if metric in LOWER_IS_BETTER else "higher",
        "production": prod_value,
        "challenger": challenger_value,
        "difference": difference,
        "gain": None if difference is None else round(_sign(metric) * difference, 6),
        "interval": None if gains is None else percentile_interval(gains, level),
        "objective": limit,
    }


def _estimated(
    task: str,
    names: tuple[str, ...],
    prod: tuple[np.ndarray, Model],
    chal: tuple[np.ndarray, Model],
) -> list[dict[str, Any]]:
    """The label-free estimate of each estimable KPI for both models, and its gain."""
    out = []
    for name in names:
        p = estimate_kpi(task, name, prod[0], prod[1].decision)
        c = estimate_kpi(task, name, chal[0], chal[1].decision)
        if p is None or c is None:
            continue
        gain = round(_sign(name) * (c - p), 6)
        out.append({"metric": name, "production": p, "challenger": c, "gain": gain})
    return out


def judged(objectives: Objectives, rollout: RolloutConfig) -> set[str]:
    """The metrics the rule reads, whose gains get a bootstrap interval: the rule's metric and
    every objective's (the other KPIs are reported without one: resampling costs)."""
    return {rollout.metric or objectives.primary_metric, *objectives.minimums}


def shadow(
    log: pd.DataFrame,
    signature: Signature,
    production: Model,
    challenger: Model,
    objectives: Objectives,
    rollout: RolloutConfig,
) -> dict[str, Any]:
    """The paired comparison on the records production answered and the shadow scored."""
    rows = log[_rows(log, production, challenger)["shadow"].to_numpy()]
    task = signature.task
    out_p = monitor.output_matrix(rows["outputs"].tolist(), signature)
    out_c = monitor.output_matrix(rows["shadow_output"].tolist(), signature)
    if out_p is None or out_c is None:
        raise NothingToCompare(
            "the logged outputs do not fit production's signature (other classes?): the two "
            "models cannot be compared on them"
        )
    where, y, _ = monitor.label_targets(monitor.log_labels(rows), signature)
    doc: dict[str, Any] = {"records": len(rows), "labelled": len(where)}
    decisions = [
        tasks.get(task).decide(out, m.decision)
        for out, m in ((out_p, production), (out_c, challenger))
    ]
    if decisions[0] is not None:
        doc["agreement"] = round(float(np.mean(decisions[0] == decisions[1])), 6)
    else:  # regression: how far apart the predictions are
        doc["agreement"] = None
        doc["mean_abs_difference"] = round(float(np.mean(np.abs(out_p - out_c))), 6)
    kpis = []
    if len(where):
        y_p, y_c = out_p[where], out_c[where]
        values_p = compute_kpis(task, y, y_p, production.decision, objectives.kpis)
        values_c = compute_kpis(task, y, y_c, challenger.decision, objectives.kpis)
        for name in objectives.kpis:
            gains = None
            if name in judged(objectives, rollout):  # both models on the same resamples
                decided = (production.decision, challenger.decision)
                gains = paired_gains(task, y, (y_p, y_c), decided, name)
            kpis.append(_kpi_entry(name, values_p[name], values_c[name], gains, rollout.level,
                                   objectives.minimums.get(name)))  # fmt: skip
    doc["kpis"] = kpis
    doc["estimated"] = _estimated(task, objectives.kpis, (out_p, production), (out_c, challenger))
    return doc


def _split(log: pd.DataFrame, canary_rows: pd.Series, share: float | None) -> dict[str, Any]:
    """The canary's observed share of requests against the configured one; skewed when it is
    more than :data:`SPLIT_TOLERANCE` binomial standard errors away (requests of one client
    go to one model, so the bound is a flag to look at, not a proof)."""
    requests = log["request_id"].nunique()
    canary = log.loc[canary_rows, "request_id"].nunique()
    observed = canary / requests if requests else None
    doc: dict[str, Any] = {
        "configured": share,
        "observed": None if observed is None else round(observed, 6),
        "requests": int(requests),
        "canary_requests": int(canary),
        "tolerance": None,
        "skewed": None,
    }
    if share is not None and observed is not None:
        tolerance = SPLIT_TOLERANCE * math.sqrt(share * (1 - share) / requests)
        doc["tolerance"] = round(tolerance, 6)
        doc["skewed"] = bool(abs(observed - share) > tolerance)
    return doc


def _group_drift(
    profile: dict, records: pd.DataFrame, signature: Signature, settings: MonitorConfig
) -> dict[str, Any]:
    """A group's input drift against the reference profile, as `mlcycle monitor` judges it."""
    found = drift.compare_features(profile, records, signature, settings)
    return {
        "drifted_features": [f.feature for f in found if f.drifted],
        "psi": {f.feature: round(f.psi, 6) for f in found},
    }


def canary(
    log: pd.DataFrame,
    signature: Signature,
    production: Model,
    challenger: Model,
    share: float | None,
    objectives: Objectives,
    rollout: RolloutConfig,
    profile: dict | None,
    settings: MonitorConfig,
) -> dict[str, Any]:
    """The two-group comparison: the records production answered against those the canary
    answered, each group's KPIs on its labelled records, the gain with an unpaired interval,
    the split, and each group's input drift."""
    rows = _rows(log, production, challenger)
    task = signature.task
    groups: dict[str, dict[str, Any]] = {}
    outputs, labelled = {}, {}  # each group's outputs, and its labels with their outputs
    for key, mask, model in (("production", rows["prod"], production),
                             ("challenger", rows["canary"], challenger)):  # fmt: skip
        part = log[mask.to_numpy()]
        records, output, labels = monitor.log_batch(part, signature)
        if output is None:
            raise NothingToCompare(
                f"the outputs logged for {key} do not fit production's signature (other "
                "classes?): the two groups cannot be compared"
            )
        where, y, _ = monitor.label_targets(labels, signature)
        group: dict[str, Any] = {
            "records": len(part),
            "labelled": len(where),
            "kpis": compute_kpis(task, y, output[where], model.decision, objectives.kpis)
            if len(where)
            else {},
        }
        if profile is not None and len(part):
            group["drift"] = _group_drift(profile, records, signature, settings)
        groups[key] = group
        outputs[key], labelled[key] = output, (y, output[where])
    kpis = []
    pairs = (labelled["production"], labelled["challenger"])
    if len(pairs[0][0]) and len(pairs[1][0]):
        decided = (production.decision, challenger.decision)
        for name in objectives.kpis:
            gains = None
            if name in judged(objectives, rollout):  # each group resampled on its own
                gains = unpaired_gains(task, pairs, decided, name)
            kpis.append(_kpi_entry(name, groups["production"]["kpis"][name],
                                   groups["challenger"]["kpis"][name], gains, rollout.level,
                                   objectives.minimums.get(name)))  # fmt: skip
    drifts = [groups[g].get("drift") for g in ("production", "challenger")]
    differs = (
        sorted(set(drifts[0]["drifted_features"]) ^ set(drifts[1]["drifted_features"]))
        if all(drifts)
        else []
    )
    return {
        "records": int(sum(g["records"] for g in groups.values())),
        "labelled": min(g["labelled"] for g in groups.values()),
        "split": _split(log, rows["canary"], share),
        "groups": groups,
        "drift_differs": differs,
        "kpis": kpis,
        "estimated": _estimated(
            task,
            objectives.kpis,
            (outputs["production"], production),
            (outputs["challenger"], challenger),
        ),
    }


def _interval_text(i: dict[str, Any]) -> str:
    return f"{i['level']:.0%} interval [{i['low']:+.4f}, {i['high']:+.4f}]"


def decide(
    kpis: list[dict[str, Any]], labelled: int, objectives: Objectives, rollout: RolloutConfig
) -> dict[str, Any]:
    """The rollout rule: promote when the gain of the rule's metric is proven above the margin
    (its interval's lower end above it) and no other objective's metric loses more than
    max_loss; roll back when the gain is proven below the margin (the interval's upper end
    below it), when another objective's loss beyond max_loss is proven, or when max_labels
    labelled records brought no proven gain; else keep watching. Before min_labels labelled
    records, always watch. The reason says it in words and figures."""
    metric = rollout.metric or objectives.primary_metric
    call = {"metric": metric, "labelled": labelled, "margin": rollout.margin,
            "max_loss": rollout.max_loss, "min_labels": rollout.min_labels,
            "max_labels": rollout.max_labels}  # fmt: skip

    def said(outcome: str, reason: str) -> dict[str, Any]:
        return {"outcome": outcome, "reason": reason, **call}

    if labelled < rollout.min_labels:
        return said(WATCH, f"{labelled:,} labelled records, fewer than min_labels "
                    f"{rollout.min_labels:,}: no call yet")  # fmt: skip
    by_metric = {k["metric"]: k for k in kpis}
    main = by_metric.get(metric)
    if main is None or main["gain"] is None or (main["interval"] or {}).get("low") is None:
        return said(WATCH, f"{metric} is not defined on the {labelled:,} labelled records "
                    "(a single class?): no call yet")  # fmt: skip
    low, high = main["interval"]["low"], main["interval"]["high"]
    figures = (
        f"{metric} gain {main['gain']:+.4f} (challenger {main['challenger']:.4f}, production "
        f"{main['production']:.4f}), {_interval_text(main['interval'])}, on {labelled:,} "
        "labelled records"
    )
    losses = [
        k for k in kpis
        if k["metric"] != metric and k["metric"] in objectives.minimums
        and k["gain"] is not None and k["gain"] < -rollout.max_loss
    ]  # fmt: skip
    loss_text = "; ".join(
        f"{k['metric']} loses {-k['gain']:.4f} ({_interval_text(k['interval'])}), more than "
        f"max_loss {rollout.max_loss}"
        for k in losses
    )
    proven = [k for k in losses if ((k["interval"] or {}).get("high") or 0.0) < -rollout.max_loss]
    if high < rollout.margin:
        return said(ROLLBACK, f"{figures}: the whole interval is below the margin "
                    f"{rollout.margin}, the challenger does not beat production")  # fmt: skip
    if proven:
        return said(ROLLBACK, f"{figures}, but {loss_text}")
    if low > rollout.margin and not losses:
        return said(PROMOTE, f"{figures}: the whole interval is above the margin {rollout.margin}")
    if labelled >= rollout.max_labels:
        return said(ROLLBACK, f"{figures}: no proven gain after max_labels "
                    f"{rollout.max_labels:,} labelled records")  # fmt: skip
    if losses:
        return said(WATCH, f"{figures}; {loss_text}: no promotion while it lasts")
    return said(WATCH, f"{figures}: the interval reaches the margin {rollout.margin}; keep "
                "watching")  # fmt: skip


def compare(
    log: pd.DataFrame,
    signature: Signature,
    production: Model,
    challenger: Model,
    objectives: Objectives,
    rollout: RolloutConfig,
    *,
    stage: str | None = None,
    share: float | None = None,
    profile: dict | None = None,
    settings: MonitorConfig | None = None,
    window: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compare the challenger with production on ``log`` (a :func:`mlcycle.predlog.read_log`
    frame, with its ``role``, ``shadow_output`` and ``shadow_model_id`` columns) from the first
    record the challenger answered or scored, and decide. ``stage`` is the registry's (None:
    as the log shows it), ``share`` the canary's configured share of requests (0 to 1),
    ``profile`` the reference profile the canary's groups are judged against. Raises
    :class:`NothingToCompare` when the window holds nothing of the challenger."""
    if challenger.id == production.id:
        raise NothingToCompare(f"the challenger is production's own model ({production.id})")
    log = _since_challenger(log, production, challenger)
    stage = stage or infer_stage(log, production, challenger)
    if stage == SHADOW:
        body = shadow(log, signature, production, challenger, objectives, rollout)
    elif stage == CANARY:
        body = canary(log, signature, production, challenger, share, objectives, rollout,
                      profile, settings or MonitorConfig())  # fmt: skip
    else:
        raise ValueError(f"stage {stage!r} is neither {SHADOW} nor {CANARY}")
    ts = pd.to_datetime(log["ts"])
    return {
        "stage": stage,
        "production": production.info,
        "challenger": challenger.info,
        "window": {**(window or {}), "from": ts.min().isoformat(), "to": ts.max().isoformat()},
        **body,
        "decision": decide(body["kpis"], body["labelled"], objectives, rollout),
        "settings": rollout.model_dump(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _num(x: Any, digits: int = 4, sign: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def summary_line(doc: dict[str, Any]) -> str:
    """One line for the terminal: what was compared, on how much, and the decision."""
    ch, d = doc["challenger"], doc["decision"]
    what = f"{doc['stage']} {ch.get('version') or ch.get('id')} vs production"
    extra = ""
    if doc.get("agreement") is not None:
        extra = f", agreement {doc['agreement']:.1%}"
    if doc.get("split") and doc["split"]["observed"] is not None:
        extra = f", canary share {doc['split']['observed']:.1%}"
    return (
        f"compare: {what} on {doc['records']:,} records ({doc['labelled']:,} labelled{extra}): "
        f"{d['outcome'].upper()}: {d['reason']}"
    )


def markdown(doc: dict[str, Any]) -> str:
    """The comparison as a Markdown section (appended to the monitoring report)."""
    ch, pr, d = doc["challenger"], doc["production"], doc["decision"]
    paired = "paired, on the same records" if doc["stage"] == SHADOW else "two groups, unpaired"
    lines = [
        "## Challenger against production",
        "",
        f"{doc['stage'].capitalize()} {ch.get('version') or ''} ({ch.get('id')}) against "
        f"production {pr.get('version') or ''} ({pr.get('id')}), {paired}: "
        f"{doc['records']:,} records, {doc['labelled']:,} labelled.",
        "",
        f"**Decision: {d['outcome']}.** {d['reason']}.",
        "",
    ]
    if doc.get("agreement") is not None:
        lines += [f"Decisions agree on {doc['agreement']:.2%} of the records.", ""]
    split = doc.get("split")
    if split:
        lines.append(
            f"Canary share of requests: {_num(split['observed'], 3)} observed, "
            f"{_num(split['configured'], 3)} configured"
            + (" (**skewed**)" if split["skewed"] else "") + "."
        )  # fmt: skip
        for key, g in doc["groups"].items():
            drifted = (g.get("drift") or {}).get("drifted_features")
            lines.append(f"- {key}: {g['records']:,} records, {g['labelled']:,} labelled; "
                         f"drifted inputs: {', '.join(drifted or []) or 'none'}")  # fmt: skip
        lines.append("")
    if doc["kpis"]:
        lines += [
            "| metric | production | challenger | gain | interval |",
            "|---|---:|---:|---:|---|",
        ]
        for k in doc["kpis"]:
            i = k["interval"] or {"low": None, "high": None}
            lines.append(
                f"| {k['metric']} ({k['better']} is better) | {_num(k['production'])} | "
                f"{_num(k['challenger'])} | {_num(k['gain'], sign=True)} | "
                f"[{_num(i['low'], sign=True)}, {_num(i['high'], sign=True)}] |"
            )
        lines.append("")
    for e in doc["estimated"]:
        lines.append(
            f"- estimated {e['metric']} (before labels): production {_num(e['production'])}, "
            f"challenger {_num(e['challenger'])}, gain {_num(e['gain'], sign=True)}"
        )
    return "\n".join(lines) + "\n"
