"""The headline figures and the gate's fingerprint: what the evaluate and gate stages write.

Kept apart from :mod:`mlcycle.status` (how the figures are shown) so that changing the display
does not re-run pipeline stages. ``metrics/summary.json`` is the one file dvc.yaml declares as
metrics: ``dvc metrics show``, ``dvc metrics diff`` and ``dvc exp show`` stay a few columns wide.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from mlcycle.config import YAMLError, load_yaml

SUMMARY = "metrics/summary.json"


def fingerprint(evaluate_text: str | bytes, params: dict | None) -> str:
    """What identifies one gate decision's inputs: metrics/evaluate.json's bytes and the params
    the gate reads (``objectives``, ``gate``, ``package.name``), as a SHA-256."""
    data = evaluate_text.encode() if isinstance(evaluate_text, str) else evaluate_text
    params = params or {}
    judged = {
        "evaluate": hashlib.sha256(data).hexdigest(),
        "objectives": params.get("objectives"),
        "gate": params.get("gate"),
        "package_name": (params.get("package") or {}).get("name"),
    }
    return hashlib.sha256(json.dumps(judged, sort_keys=True, default=str).encode()).hexdigest()


def _params(text: str | None) -> dict | None:
    try:
        found = load_yaml(text) if text else None
    except YAMLError:
        return None
    return found if isinstance(found, dict) else None


def headline(evaluate: dict, train: dict, minimums: dict[str, float]) -> dict[str, Any]:
    """The few figures ``dvc metrics show`` lists (flat keys, so its table stays narrow)."""
    objective = evaluate.get("objective") or {}
    primary = objective.get("metric")
    interval = evaluate.get("confidence_interval") or {}
    doc: dict[str, Any] = {}
    if primary:
        doc[primary] = objective.get("value")
        if interval.get("metric") == primary:
            doc[f"{primary}_low"], doc[f"{primary}_high"] = (
                interval.get("low"),
                interval.get("high"),
            )
    for name in minimums:
        if name != primary and isinstance(evaluate.get(name), int | float):
            doc[name] = evaluate[name]
    winner = train.get("winner")
    cv = ((train.get("candidates") or {}).get(winner) or {}).get("cv_mean")
    if train.get("metric") and cv is not None:
        doc[f"cv_{train['metric']}"] = cv
    doc["model"] = evaluate.get("model") or winner
    return doc
