"""A model change between two revisions, as a reviewer reads it (``mlcycle report``).

Everything comes from files git holds (``metrics/``, ``params.yaml``, the plot data), so the
report works in a fresh clone with nothing pulled from DVC: the gate's decision first, then the
primary metric with its interval on both sides and whether the change is beyond noise, the other
KPIs that moved, the data, the params that changed, the winning model, slice gaps, and the key
plots of both revisions drawn as PNG files (Vega-Lite rendered by vl-convert, no browser).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from mlcycle import config, registry
from mlcycle.config import MonitorConfig
from mlcycle.drift import compare_profiles
from mlcycle.io import write_bytes
from mlcycle.pipeline import dvc_command
from mlcycle.status import gate_of, workspace_gate
from mlcycle.tasks import LOWER_IS_BETTER

WORKSPACE = "workspace"
# The plots a reviewer looks at first (titles in dvc.yaml start with these).
KEY_PLOTS = ("ROC", "Precision-recall", "Calibration", "Feature importance", "Predicted vs actual")
MOVED = 0.001  # a KPI change smaller than this is not listed


def read_at(root: Path, rev: str, path: str) -> str | None:
    """A file's text at ``rev`` (``workspace``: as on disk), or None if it did not exist."""
    if rev == WORKSPACE:
        file = root / path
        return file.read_text(encoding="utf-8") if file.is_file() else None
    return registry.read_at(root, rev, path)


def _json(root: Path, rev: str, path: str) -> dict:
    text = read_at(root, rev, path)
    if text is None:
        return {}
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}`` (lists kept whole)."""
    if not isinstance(obj, dict):
        return {prefix: obj}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _num(x: Any, digits: int = 4) -> str:
    if isinstance(x, bool) or x is None:
        return "–" if x is None else str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:.{digits}f}" if math.isfinite(x) else "–"
    return str(x)


def _delta(metric: str, old: Any, new: Any) -> str:
    if not isinstance(old, int | float) or not isinstance(new, int | float):
        return ""
    d = new - old
    if abs(d) < 1e-12:
        return "="
    better = (d < 0) if metric in LOWER_IS_BETTER else (d > 0)
    return f"{d:+.4f} {'better' if better else 'worse'}"


def check_rev(root: Path, rev: str) -> None:
    """Refuse a revision git does not know, naming it."""
    if rev == WORKSPACE:
        return
    res = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        cwd=root, capture_output=True, text=True,
    )  # fmt: skip
    if res.returncode != 0:
        raise ValueError(f"{rev!r} is not a revision of this repository (git rev-parse)")


def _primary(base: dict, head: dict) -> list[str]:
    """The primary metric, both sides with their intervals, and whether it moved beyond noise:
    beyond when the base value lies outside the head model's 95 % bootstrap interval."""
    objective = head.get("objective") or base.get("objective") or {}
    metric = objective.get("metric")
    if not metric:
        return ["No primary metric on either side (metrics/evaluate.json)."]
    old, new = base.get(metric), head.get(metric)

    def side(doc: dict) -> str:
        ci = doc.get("confidence_interval") or {}
        value = doc.get(metric)
        if ci.get("metric") == metric and ci.get("low") is not None:
            return f"{_num(value)} (95 % interval {_num(ci['low'])} – {_num(ci['high'])})"
        return _num(value)

    lines = [
        f"**{metric}**: {side(base)} → {side(head)}"
        + (f", {_delta(metric, old, new)}" if old is not None and new is not None else ""),
    ]
    ci = head.get("confidence_interval") or {}
    if isinstance(old, int | float) and isinstance(new, int | float) and ci.get("low") is not None:
        beyond = not (ci["low"] <= old <= ci["high"])
        lines.append("")
        lines.append(
            "The change is **beyond noise**: the old value is outside the new model's 95 % "
            "interval."
            if beyond
            else "The change is **within noise**: the old value is inside the new model's 95 % "
            "interval (same test split, bootstrap)."
        )
    minimum = objective.get("minimum")
    if minimum is not None:
        met = objective.get("met")
        lines.append("")
        lines.append(f"Objective: {metric} {'≤' if metric in LOWER_IS_BETTER else '≥'} "
                     f"{minimum}: {'met' if met else 'not met'}.")  # fmt: skip
    return lines


def _kpis(base: dict, head: dict, primary: str | None) -> list[str]:
    rows = []
    for key in sorted(set(base) | set(head)):
        old, new = base.get(key), head.get(key)
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (old, new))
        if key == primary or key == "rows" or not numbers or abs(new - old) < MOVED:
            continue
        rows.append(f"| {key} | {_num(old)} | {_num(new)} | {_delta(key, old, new)} |")
    if not rows:
        return ["No other KPI moved by 0.001 or more."]
    return ["| KPI | base | head | change |", "|---|---:|---:|---|", *rows]


def _data(root: Path, base: str, head: str) -> list[str]:
    g0, g1 = _json(root, base, "metrics/gather.json"), _json(root, head, "metrics/gather.json")
    v0 = _json(root, base, "metrics/validation.json")
    v1 = _json(root, head, "metrics/validation.json")
    p0, p1 = _json(root, base, "metrics/prepare.json"), _json(root, head, "metrics/prepare.json")
    lines = []
    same = g0.get("snapshot_sha256") == g1.get("snapshot_sha256")
    lines.append(
        f"- Snapshot: {_num(g0.get('rows'))} → {_num(g1.get('rows'))} rows"
        + (" (the same data)" if same and g0 else " (the data changed)")
    )
    r0 = {s.get("name"): s.get("rows") for s in g0.get("sources") or []}
    r1 = {s.get("name"): s.get("rows") for s in g1.get("sources") or []}
    changed = [n for n in dict.fromkeys([*r0, *r1]) if r0.get(n) != r1.get(n)]
    for name in changed:
        lines.append(f"  - source {name}: {_num(r0.get(name))} → {_num(r1.get(name))} rows")
    c0, c1 = v0.get("counts") or {}, v1.get("counts") or {}
    lines.append(
        f"- Validation: {_num(c0.get('error'))} → {_num(c1.get('error'))} errors, "
        f"{_num(c0.get('warning'))} → {_num(c1.get('warning'))} warnings"
    )
    s0, s1 = p0.get("split") or {}, p1.get("split") or {}
    if s0 or s1:
        lines.append(
            f"- Split: train {_num(s0.get('train_rows'))} → {_num(s1.get('train_rows'))}, "
            f"test {_num(s0.get('test_rows'))} → {_num(s1.get('test_rows'))} rows"
        )
    return lines + ["", *_data_drift(root, base, head)]


def _data_drift(root: Path, base: str, head: str) -> list[str]:
    """How the training split moved between the two revisions (metrics/data_profile.json)."""
    d0 = _json(root, base, "metrics/data_profile.json")
    d1 = _json(root, head, "metrics/data_profile.json")
    if not d0 or not d1:
        side = "either side" if not d0 and not d1 else ("base" if not d0 else "head")
        return [
            f"Training data drift: no data profile at {side} (metrics/data_profile.json, which"
            " the prepare stage writes)"
        ]
    if d0 == d1:
        return ["Training data drift: none (the same training split on both sides)."]
    settings = _monitor_settings(root, head) or MonitorConfig()
    cmp = compare_profiles(d0, d1, settings)
    moved = [c for c in cmp["columns"] if c["drifted"]]
    lines = [
        f"Training data drift: {len(moved)} of {len(cmp['columns'])} columns moved ({cmp['rule']})."
    ]
    if cmp["added"] or cmp["removed"]:
        lines.append(
            f"Columns added: {cmp['added'] or 'none'}; removed: {cmp['removed'] or 'none'}"
        )
    # Moved columns, then those whose PSI is above what chance gives (the largest first).
    shown = [
        c for c in cmp["columns"] if c["drifted"] or (c.get("psi") or 0) > (c.get("psi_noise") or 0)
    ][:8]
    if shown:
        lines += ["", "| column | PSI (noise) | missing share | detail |", "|---|---|---|---|"]
        for c in shown:
            psi_text = "-" if c.get("psi") is None else f"{c['psi']:.4f} ({c['psi_noise']:.4f})"
            miss = c.get("missing") or [None, None]
            detail = _drift_detail(c)
            flag = " **moved**" if c["drifted"] else ""
            lines.append(
                f"| `{c['column']}`{flag} | {psi_text} | {_num(miss[0])} → {_num(miss[1])}"
                f" | {detail} |"
            )
    return lines


def _drift_detail(c: dict) -> str:
    """The detail cell of one column of the drift table."""
    if c.get("psi") is None or (c.get("reasons") and not c["psi"]):
        return "; ".join(c.get("reasons") or [])  # a type change, or a missing share alone
    if c["kind"] == "numeric":
        m0, m1 = (f"{m:.6g}" if m is not None else "-" for m in c["median"])
        return f"median {m0} → {m1}, KS {c['ks']:.3f}"
    parts = [
        f"new {c['new']}" if c.get("new") else "",
        f"gone {c['gone']}" if c.get("gone") else "",
    ]
    return ", ".join(p for p in parts if p) or "shares moved"


def _monitor_settings(root: Path, rev: str) -> Any:
    """monitor settings of params.yaml at ``rev`` (thresholds of the drift rule), if they are
    valid."""
    text = read_at(root, rev, "params.yaml")
    try:
        return config.section(config.load_yaml(text), "monitor") if text else None
    except (ValueError, config.YAMLError):
        return None


def _params(root: Path, base: str, head: str) -> list[str]:
    def load(rev: str) -> dict:
        text = read_at(root, rev, "params.yaml")
        try:
            return _flat(yaml.safe_load(text) or {}) if text else {}
        except yaml.YAMLError:
            return {}

    def shown(value: Any) -> str:
        text = json.dumps(value)
        return text if len(text) <= 60 else text[:57] + "..."

    old, new = load(base), load(head)
    rows = [
        f"| `{k}` | `{shown(old.get(k))}` | `{shown(new.get(k))}` |"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]
    if not rows:
        return ["No parameter changed."]
    return ["| param | base | head |", "|---|---|---|", *rows]


def _model(base: dict, head: dict) -> list[str]:
    def side(doc: dict) -> str:
        winner = doc.get("winner")
        cand = (doc.get("candidates") or {}).get(winner) or {}
        if not winner:
            return "–"
        return f"{winner} (CV {doc.get('metric')} {_num(cand.get('cv_mean'))} ± " \
               f"{_num(cand.get('cv_std'))})"  # fmt: skip

    lines = [f"- Winner: {side(base)} → {side(head)}"]
    if head.get("runner_up"):
        lines.append(f"- Lead over the runner-up ({head['runner_up']}): {_num(head.get('lead'))}")
    return lines


def _slices(base: dict, head: dict, primary: str | None) -> list[str]:
    g0, g1 = base.get("gaps") or {}, head.get("gaps") or {}
    rows = []
    for column in sorted(set(g0) | set(g1)):
        old = (g0.get(column) or {}).get(primary) or {}
        new = (g1.get(column) or {}).get(primary) or {}
        rows.append(
            f"| {column} | {_num(old.get('gap'))} | {_num(new.get('gap'))} | "
            f"{new.get('best', '–')} / {new.get('worst', '–')} |"
        )
    if not rows or primary is None:
        return ["No slices."]
    return [f"| slice | {primary} gap, base | head | best / worst (head) |", "|---|---:|---:|---|",
            *rows]  # fmt: skip


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60]


def render_plots(root: Path, base: str, head: str, out: Path) -> tuple[list[str], list[str]]:
    """The key plots of both revisions (``dvc plots diff --json``) as PNG files under ``out``;
    returns the files' names relative to ``out`` and any plot that could not be drawn."""
    revs = [base] if head == WORKSPACE else [base, head]
    return draw_plots(root, ["diff", *revs], KEY_PLOTS, out)


def draw_plots(
    root: Path, command: list[str], titles: tuple[str, ...], out: Path
) -> tuple[list[str], list[str]]:
    """The plots of ``dvc plots <command> --json`` whose titles start with one of ``titles``,
    drawn as PNG files under ``out`` by vl-convert, which needs neither a browser nor the
    network (the page of `dvc plots show` loads Vega from a CDN: blank offline). Returns
    Markdown links to the files (relative to ``out``) and any plot that could not be drawn."""
    import vl_convert as vlc

    res = subprocess.run(
        [*dvc_command(), "plots", *command, "--json"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        return [], [f"dvc plots {command[0]} failed: {res.stderr.strip()[-300:]}"]
    data = json.loads(res.stdout).get("data") or {}
    files, problems = [], []
    out.mkdir(parents=True, exist_ok=True)
    for title, renders in data.items():
        if not title.startswith(titles) or not renders:
            continue
        spec = renders[0].get("content")
        if not isinstance(spec, dict) or not (spec.get("data") or {}).get("values"):
            continue
        spec = {**spec, "width": 420, "height": 300}
        name = f"{_slug(title)}.png"
        try:
            write_bytes(out / name, vlc.vegalite_to_png(spec, scale=1.5))
        except (ValueError, RuntimeError) as exc:
            lines = str(exc).strip().splitlines() or [""]
            why = next((line for line in lines if line.startswith("Error")), lines[-1])
            problems.append(f"{title}: {why[:200]}")
            continue
        files.append((title, name))
    return [f"![{t}]({n})" for t, n in files], problems


def build(root: Path, base: str, head: str = WORKSPACE, plots_dir: Path | None = None) -> str:
    """The Markdown report of the change from ``base`` to ``head`` (``workspace``: the files on
    disk); with ``plots_dir``, the key plots are drawn there and linked (relative links)."""
    for rev in (base, head):
        check_rev(root, rev)
    ev0, ev1 = (
        _json(root, base, "metrics/evaluate.json"),
        _json(root, head, "metrics/evaluate.json"),
    )
    if head == WORKSPACE:
        gate, state = workspace_gate(root)
    else:
        gate, state = gate_of(
            _json(root, head, "metrics/gate.json"),
            read_at(root, head, "metrics/evaluate.json"),
            read_at(root, head, "params.yaml"),
        )
    primary = (ev1.get("objective") or ev0.get("objective") or {}).get("metric")
    verdict = "passed" if gate.get("passed") else ("REJECTED" if gate else "not run")
    if state == "stale":
        verdict = (
            f"not run on this model (the last decision, {verdict}, judged an earlier"
            " evaluation: run `dvc repro`)"
        )
        gate = {}
    lines = [
        f"# Model report: `{base}` → `{head}`",
        "",
        f"**Gate: {verdict}**"
        + (
            f" (against production {gate['champion_version']})"
            if gate.get("champion_version")
            else ""
        ),  # fmt: skip
        "",
        *[f"- {r}" for r in gate.get("reasons") or []],
        "",
        *_primary(ev0, ev1),
        "",
        "## Other KPIs (test split)",
        "",
        *_kpis(ev0, ev1, primary),
        "",
        "## Data",
        "",
        *_data(root, base, head),
        "",
        "## Params",
        "",
        *_params(root, base, head),
        "",
        "## Model",
        "",
        *_model(_json(root, base, "metrics/train.json"), _json(root, head, "metrics/train.json")),
        "",
        "## Slices",
        "",
        *_slices(
            _json(root, base, "metrics/slices.json"),
            _json(root, head, "metrics/slices.json"),
            primary,
        ),  # fmt: skip
    ]
    if plots_dir is not None:
        images, problems = render_plots(root, base, head, plots_dir)
        lines += ["", "## Plots (both revisions)", "", *images]
        lines += [f"- not drawn: {p}" for p in problems]
    return "\n".join(lines).rstrip() + "\n"
