"""The project's state at a glance: the headline figures, in a terminal or a README table.

``metrics/summary.json`` (written by the evaluate stage) is the only file DVC shows as metrics,
so ``dvc metrics show``, ``dvc metrics diff`` and ``dvc exp show`` stay a few columns wide: the
primary metric with its 95 % interval, the other bounded KPIs, the winner's CV score and the
model. The detailed files stay in git beside it, read by ``mlcycle report`` and
``mlcycle status``. The gate's decision is not in the summary: a rejection stops ``dvc repro``
before it would be recorded; ``gate_of`` finds the decision that judged the current evaluation.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from mlcycle import config, registry
from mlcycle.summary import SUMMARY, _params, fingerprint, headline
from mlcycle.tasks import lower_is_better, meets

__all__ = [
    "SUMMARY",
    "ServiceError",
    "fingerprint",
    "gate_of",
    "headline",
    "markdown",
    "rows",
    "service_row",
    "text",
]


def gate_of(gate: dict, evaluate_text: str | None, params_text: str | None) -> tuple[dict, str]:
    """The gate decision if it judged this evaluation under these params, and how it stands:
    ``"current"``, ``"stale"`` (it judged other inputs) or ``"none"``. A decision without a
    fingerprint (written before fingerprints existed) is taken as current."""
    if not gate:
        return {}, "none"
    judged = gate.get("evaluation_sha256")
    if judged is None or evaluate_text is None:
        return gate, "current"
    if judged == fingerprint(evaluate_text, _params(params_text)):
        return gate, "current"
    return gate, "stale"


def workspace_gate(root: Path) -> tuple[dict, str]:
    """The decision on the workspace's evaluation: metrics/gate.json, or reports/gate.json when
    the gate rejected the model (a failed stage leaves metrics/gate.json as it was)."""
    ev, params = root / "metrics/evaluate.json", root / "params.yaml"
    text = ev.read_text(encoding="utf-8") if ev.is_file() else None
    params_text = params.read_text(encoding="utf-8") if params.is_file() else None
    best: tuple[dict, str] = ({}, "none")
    for path in ("metrics/gate.json", "reports/gate.json"):
        f = root / path
        if not f.is_file():
            continue
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except ValueError:
            continue
        found = gate_of(doc, text, params_text)
        if found[1] == "current":
            return found
        if best[1] == "none":
            best = found
    return best


def _read(root: Path, path: str) -> dict:
    f = root / path
    try:
        return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}
    except ValueError:
        return {}


def _workspace_params(root: Path) -> dict:
    """params.yaml as the stages read it (YAML 1.2), or {} when absent or not YAML."""
    f = root / "params.yaml"
    return _params(f.read_text(encoding="utf-8") if f.is_file() else None) or {}


def minimums(params: dict) -> dict[str, float]:
    """objectives.minimums of ``params`` (the further bounds the gate checks)."""
    found = (params.get("objectives") or {}).get("minimums") or {}
    return {k: v for k, v in found.items() if isinstance(v, int | float)}


def _production(root: Path, params: dict) -> str:
    try:
        prod = registry.production(root, config.section(params, "package").name)
    except Exception as exc:  # noqa: BLE001 - status must print even without a registry
        return f"unknown ({type(exc).__name__})"
    return f"{prod.name}@{prod.version} (commit {prod.commit[:12]})" if prod else "none released"


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _gate_line(gate: dict, state: str) -> str:
    if state == "none":
        return "not run"
    verdict = "passed" if gate.get("passed") else "REJECTED"
    against = gate.get("champion_version")
    line = verdict + (f" (against production {against})" if against else "")
    return line + (
        " - but it judged an earlier evaluation: run `dvc repro`" if state == "stale" else ""
    )


def _trained(prep: dict, split: dict) -> str:
    """Rows trained on, and what cleaning took from the split's training side."""
    kept, assigned = (prep.get("train") or {}).get("rows"), split.get("train_rows")
    if isinstance(kept, int) and isinstance(assigned, int) and kept != assigned:
        return f"{_fmt(kept)} (of {_fmt(assigned)}: {_fmt(assigned - kept)} removed)"
    return _fmt(assigned if kept is None else kept)


def _data_rows(gather: dict, prep: dict, val: dict) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    split = prep.get("split") or {}
    if gather or split:
        out.append(
            (
                "data",
                f"{_fmt(gather.get('rows'))} rows; train {_trained(prep, split)},"
                f" test {_fmt(split.get('test_rows'))}",
            )
        )
    counts = val.get("counts") or {}
    if counts:
        out.append(
            (
                "validation",
                f"{counts.get('error', 0)} error(s), {counts.get('warning', 0)} warning(s)",
            )
        )
    return out


def rows(root: Path, production: bool = True) -> list[tuple[str, str]]:
    """The headline as (label, value) pairs, most important first; ``production``: with the
    registry's production version (from git tags, which a clone may not have)."""
    ev, train = _read(root, "metrics/evaluate.json"), _read(root, "metrics/train.json")
    gather, prep = _read(root, "metrics/gather.json"), _read(root, "metrics/prepare.json")
    val = _read(root, "metrics/validation.json")
    if not ev:
        out = [("status", "no metrics/evaluate.json yet: run `dvc repro`")]
        return out + _data_rows(gather, prep, val)
    obj = ev.get("objective") or {}
    primary, ci = obj.get("metric"), ev.get("confidence_interval") or {}
    bound = "maximum" if primary and lower_is_better(primary) else "minimum"
    params = _workspace_params(root)
    out = [("gate", _gate_line(*workspace_gate(root)))]
    if production:
        out.append(("production", _production(root, params)))
    if primary:
        interval = (
            f" [{_fmt(ci.get('low'))}, {_fmt(ci.get('high'))}]"
            if ci.get("metric") == primary
            else ""
        )
        met = "met" if obj.get("met") else "NOT met"
        out.append(
            (
                f"{primary} (test)",
                f"{_fmt(obj.get('value'))}{interval}; {bound} {_fmt(obj.get('minimum'))} {met}",
            )
        )
    for name, limit in sorted(minimums(params).items()):
        if name != primary and isinstance(ev.get(name), int | float):
            word = "maximum" if lower_is_better(name) else "minimum"
            met = "met" if meets(name, ev[name], limit) else "NOT met"
            out.append((f"{name} (test)", f"{_fmt(ev[name])}; {word} {_fmt(limit)} {met}"))
    kpis = [k for k in ("pr_auc", "accuracy", "f1", "f1_macro", "rmse", "mae", "r2") if k in ev]
    shown = {label.split(" ")[0] for label, _ in out}
    more = [f"{k} {_fmt(ev[k])}" for k in kpis if k not in shown and k != primary]
    if more:
        out.append(("other KPIs", ", ".join(more[:4])))
    winner = train.get("winner")
    if winner:
        cand = (train.get("candidates") or {}).get(winner) or {}
        out.append(
            (
                "model",
                f"{winner}; CV {train.get('metric')} {_fmt(cand.get('cv_mean'))}"
                f" ± {_fmt(cand.get('cv_std'))} ({train.get('cv_folds')} folds)",
            )
        )
    out += _data_rows(gather, prep, val)
    gaps = {
        col: by_metric[primary]
        for col, by_metric in (ev.get("slice_gaps") or {}).items()
        if isinstance(by_metric, dict) and isinstance(by_metric.get(primary), dict)
    }
    if gaps:
        col, g = max(gaps.items(), key=lambda item: item[1].get("gap") or 0)
        out.append(
            (
                "largest slice gap",
                f"{primary} {_fmt(g.get('gap'))} by {col} ({g.get('best')} best,"
                f" {g.get('worst')} worst)",
            )
        )
    return out


class ServiceError(RuntimeError):
    """The service named by ``--service`` did not say which model it serves."""


def served(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """The model a running service says it serves (``GET /health``: name, version, id)."""
    if not url.startswith(("http://", "https://")):
        raise ServiceError(f"{url!r} is not an http(s) URL")
    try:
        # bandit B310 (urlopen opens file: too): an http(s) URL, checked above
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as resp:  # nosec B310
            doc = json.loads(resp.read())
    except (OSError, ValueError) as exc:
        raise ServiceError(f"{url}: no answer from GET /health ({exc})") from None
    model = doc.get("model") if isinstance(doc, dict) else None
    if not isinstance(model, dict) or not model.get("id"):
        raise ServiceError(f"{url}: GET /health names no model (is it an mlcycle service?)")
    return model


def service_row(root: Path, url: str) -> tuple[tuple[str, str], bool]:
    """The ``service`` row: which model the service at ``url`` serves, and whether that is the
    registry's production version (False when production moved and the service did not follow,
    or it serves a bundle by path while a version is in production)."""
    model = served(url)
    name = config.section(_workspace_params(root), "package").name
    prod = registry.production(root, name)
    version = model.get("version")
    what = f"{model.get('name')}@{version}" if version else f"{model.get('name')} from a path"
    line = f"{url} serves {what} (model {model['id']})"
    if prod is None:
        return ("service", f"{line}; nothing is in production"), True
    if model.get("name") == prod.name and version == prod.version:
        return ("service", f"{line}: the production version"), True
    return ("service", f"{line}; DISAGREES with production {prod.name}@{prod.version}"), False


def text(root: Path, extra: list[tuple[str, str]] | None = None) -> str:
    """The headline for a terminal (``extra`` rows after the production row): two aligned
    columns, under 100 characters a line."""
    pairs = rows(root)
    if extra:
        at = next((i + 1 for i, (label, _) in enumerate(pairs) if label == "production"), 1)
        pairs[at:at] = extra
    width = max(len(label) for label, _ in pairs)
    return "".join(f"{label:<{width}}  {value}\n" for label, value in pairs)


def markdown(root: Path) -> str:
    """The headline as a Markdown table (the README's results section)."""
    lines = ["| figure | value |", "|---|---|"]
    pairs = rows(root, production=False)
    lines += [f"| {label} | {value.replace('|', '/')} |" for label, value in pairs]
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def fill_readme(readme: str, table: str) -> str:
    """``readme`` with the text between the results markers replaced by ``table``."""
    if BEGIN not in readme or END not in readme:
        raise ValueError(f"the README has no {BEGIN} ... {END} block")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table}{END}{tail}"
