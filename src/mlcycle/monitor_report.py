"""A monitoring run as one self-contained HTML page, for people rather than programs.

`mlcycle monitor` writes a JSON document; :func:`html_report` turns it into a single HTML file
that opens anywhere, offline: inline CSS, charts drawn here as inline SVG, no external script,
font, image or link, and a Content-Security-Policy that forbids loading any. Every string that
comes from data (feature names, category values, URLs) is user-controlled and escaped. The
charts need no JavaScript; a small inline script only makes the feature table sortable.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["feature_order", "html_report", "model_title"]

MAX_BARS = 20  # categories/bins drawn per chart; the rest are summed into one "other" bar
DASH = "–"  # shown for a missing or not-a-number figure

REFERENCE_COLOUR = "#4e79a7"
CURRENT_COLOUR = "#f28e2b"

_CSS = """
:root { color-scheme: light; --ink: #1f2328; --muted: #59636e; --line: #d1d9e0;
  --bad: #b42318; --bad-bg: #fdecea; --good: #1a7f37; --good-bg: #e6f4ea; --warn-bg: #fff4e5; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1100px; padding: 24px 20px 48px; color: var(--ink);
  background: #fff; line-height: 1.45; font: 15px/1.45 system-ui, -apple-system, "Segoe UI",
  Roboto, "Helvetica Neue", Arial, "Noto Sans", sans-serif; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.25em; margin: 32px 0 8px; padding-bottom: 4px;
  border-bottom: 1px solid var(--line); }
h3 { font-size: 1.05em; margin: 20px 0 6px; }
p { margin: 6px 0; }
.muted { color: var(--muted); }
.mono, code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: 0.92em; overflow-wrap: anywhere; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 8px 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
.verdict { display: inline-block; padding: 4px 12px; border-radius: 6px; font-weight: 700;
  font-size: 1.15em; letter-spacing: 0.03em; }
.verdict.drift, .pill.bad { background: var(--bad-bg); color: var(--bad); }
.verdict.nodrift, .pill.good { background: var(--good-bg); color: var(--good); }
.pill { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 0.9em;
  font-weight: 600; background: #eef1f4; color: var(--muted); }
.callout { border-left: 5px solid var(--good); background: var(--good-bg); padding: 10px 14px;
  margin: 12px 0; border-radius: 4px; }
.callout.retrain { border-left-color: var(--bad); background: var(--warn-bg); }
.callout.watch { border-left-color: var(--muted); background: #f6f8fa; }
.callout h2 { border: 0; margin: 0 0 4px; padding: 0; font-size: 1.15em; }
.callout ul { margin: 4px 0 0; padding-left: 22px; }
.rule { color: var(--muted); font-size: 0.92em; max-width: 80ch; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.93em; }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.drifted td:first-child { box-shadow: inset 3px 0 0 var(--bad); }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[aria-sort="ascending"]::after { content: " \\25B2"; font-size: 0.7em; }
table.sortable th[aria-sort="descending"]::after { content: " \\25BC"; font-size: 0.7em; }
.scroll { overflow-x: auto; }
figure { margin: 12px 0 24px; }
figcaption { font-weight: 600; margin-bottom: 4px; overflow-wrap: anywhere; }
svg.chart { max-width: 100%; height: auto; display: block; }
svg.chart text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif;
  font-size: 12px; fill: var(--ink); }
svg.chart text.axis { fill: var(--muted); }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr));
  gap: 0 24px; }
footer { margin-top: 40px; color: var(--muted); font-size: 0.85em; }
"""

# Sorts a table.sortable by a clicked header (numbers by their data-sort value, missing figures
# last); then says, on <body data-ready="1">, that the page's scripts ran.
_SCRIPT = """
(function () {
  "use strict";
  function key(cell) {
    var raw = cell.getAttribute("data-sort");
    if (raw === null) { raw = cell.textContent.trim(); }
    if (raw === "") { return null; }
    var n = Number(raw);
    return isNaN(n) ? raw.toLowerCase() : n;
  }
  function sortBy(table, col, th) {
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) {
      c.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[col]), y = key(b.cells[col]);
      if (x === null || y === null) { return (x === null) - (y === null); }
      if (typeof x !== typeof y) { return (typeof x === "number" ? -1 : 1) * dir; }
      return (x < y ? -1 : x > y ? 1 : 0) * dir;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      th.title = "Sort by this column";
      th.addEventListener("click", function () { sortBy(table, col, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, col, th); }
      });
    });
  });
  document.body.dataset.ready = "1";
})();
"""

_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
# Nothing may be fetched: no network, no file, no frame; only this page's own style and script.
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    f"script-src 'sha256-{_SCRIPT_HASH}'; base-uri 'none'; form-action 'none'"
)


# --- formatting ---------------------------------------------------------------------------------


def _e(value: Any) -> str:
    """Data as HTML text: escaped, quotes included (safe in attributes too)."""
    return html.escape("" if value is None else str(value), quote=True)


def _finite(x: Any) -> float | None:
    """A number as a finite float, or None (missing, NaN, infinite, not a number)."""
    if isinstance(x, bool) or x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _num(x: Any, digits: int = 4) -> str:
    """A figure for people: thousands separators, ``digits`` significant digits, "–" if none."""
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:,}"
    f = _finite(x)
    if f is None:
        return DASH
    if f == 0:
        return "0"
    if abs(f) >= 10**digits:
        return f"{f:,.0f}"
    if abs(f) < 1e-3:
        return f"{f:.{max(digits - 2, 1)}e}"
    return f"{f:.{digits}g}"


def _p(x: Any) -> str:
    """A p-value: 3 significant digits, tiny values as "< 1e-16"."""
    f = _finite(x)
    if f is None:
        return DASH
    if f < 1e-16:
        return "< 1e-16"
    return f"{f:.2e}" if f < 1e-3 else f"{f:.3g}"


def _pct(x: Any) -> str:
    """A share as a percentage."""
    f = _finite(x)
    if f is None:
        return DASH
    if 0 < abs(f) < 0.0001:
        return "< 0.01%" if f > 0 else "> -0.01%"
    if 0 < abs(f) < 0.001:
        return f"{f:.2%}"
    return f"{f:.1%}"


def _sort_key(x: Any) -> str:
    """A cell's data-sort value: the number itself, or empty (sorted last) when missing."""
    f = _finite(x)
    return "" if f is None else repr(f)


def _met(verdict: dict) -> str:
    """An objective's verdict as a pill: its ``status`` words (see
    :func:`mlcycle.monitor.status`, the same in the Markdown report), coloured by ``met``."""
    met = verdict.get("met")
    words = verdict.get("status") or {True: "met", False: "not met"}.get(met, DASH)
    colour = {True: " good", False: " bad"}.get(met, "")
    return f'<span class="pill{colour}">{_e(words)}</span>'


def model_title(model: dict) -> str:
    """A model's name and version as people read it: "income v0.1.0" (a version written
    without its "v" gets one, a version with it no second)."""
    name = str(model.get("name") or "model")
    version = str(model.get("version") or "")
    if not version:
        return name
    return f"{name} {version if version[:1] in 'vV' else 'v' + version}"


def _interval(value: Any) -> str:
    if not isinstance(value, dict) or _finite(value.get("low")) is None:
        return DASH
    return f"{_num(value.get('low'))} – {_num(value.get('high'))}"


def _yes_no(flag: Any, yes: str = "drifted", no: str = "no drift") -> str:
    if flag is True:
        return f'<span class="pill bad">{yes}</span>'
    if flag is False:
        return f'<span class="pill good">{no}</span>'
    return f'<span class="pill">{DASH}</span>'


def _display_width(text: str) -> int:
    """Roughly how many narrow columns ``text`` takes (East Asian wide characters count 2)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _shorten(text: str, width: int) -> str:
    """``text`` cut to about ``width`` narrow columns, with an ellipsis when cut."""
    if _display_width(text) <= width:
        return text
    out, used = [], 0
    for c in text:
        w = 2 if unicodedata.east_asian_width(c) in "WF" else 1
        if used + w > width - 1:
            break
        out.append(c)
        used += w
    return "".join(out) + "…"


def _facts(pairs: Iterable[tuple[str, str]]) -> str:
    """A definition list of (label, already-escaped HTML) pairs."""
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in pairs)
    return f'<dl class="facts">{rows}</dl>'


# --- charts -------------------------------------------------------------------------------------


def _shares(values: Any, n: int) -> list[float]:
    """``n`` shares from a histogram list: missing or not-a-number entries count as 0."""
    values = list(values or [])[:n]
    return [max(_finite(v) or 0.0, 0.0) for v in values] + [0.0] * (n - len(values))


def _bars(hist: dict, ordered: bool) -> tuple[list[tuple[str, float, float]], int]:
    """The (label, reference, current) bars to draw and how many bins went into "other".

    At most :data:`MAX_BARS` bins are drawn: the largest by their bigger share. Ordered bins
    (numeric intervals) keep their order; categories are listed largest first.
    """
    labels = [str(b) for b in (hist.get("bins") or [])]
    ref = _shares(hist.get("reference"), len(labels))
    cur = _shares(hist.get("current"), len(labels))
    bins = list(zip(labels, ref, cur, strict=True))
    if not ordered:
        bins.sort(key=lambda b: -max(b[1], b[2]))
    if len(bins) <= MAX_BARS:
        return bins, 0
    keep = MAX_BARS - 1
    largest = sorted(range(len(bins)), key=lambda i: -max(bins[i][1], bins[i][2]))
    kept, rest = sorted(largest[:keep]), largest[keep:]
    other = (
        f"other ({len(rest)} more)",
        sum(bins[i][1] for i in rest),
        sum(bins[i][2] for i in rest),
    )
    return [bins[i] for i in kept] + [other], len(rest)


def _share_axis(top: float) -> tuple[float, float]:
    """A round upper end for the share axis, at or above ``top``, and its tick step (at most
    5 steps)."""
    for step in (0.0025, 0.005, 0.01, 0.02, 0.025, 0.05, 0.1, 0.2, 0.25):
        steps = max(math.ceil(top / step - 1e-9), 1)
        if steps <= 5:
            return step * steps, step
    return 1.0, 0.25


def _tick(share: float, step: float) -> str:
    """A tick label: as many decimals as the step needs."""
    if share == 0:
        return "0%"
    percent = step * 100
    decimals = next(d for d in (0, 1, 2) if abs(round(percent, d) - percent) < 1e-9 or d == 2)
    return f"{share:.{decimals}%}"


def _bar_chart(hist: dict | None, title: str, ordered: bool, axis: str) -> str:
    """A grouped horizontal bar chart, as inline SVG, of the reference vs the current share of
    each bin or category of ``hist``. Horizontal, so long category names stay readable."""
    if not isinstance(hist, dict) or not hist.get("bins"):
        return '<p class="muted">No histogram recorded.</p>'
    bars, folded = _bars(hist, ordered)
    label_chars = 30
    widest = max(_display_width(_shorten(b[0], label_chars)) for b in bars)
    label_w = min(max(7 * widest + 8, 60), 7 * label_chars + 8)  # about 7 px a character
    plot_w, value_w = 360, 60
    left, top, bar_h, gap = label_w + 10, 44, 12, 10
    group_h = 2 * bar_h + gap
    width = left + plot_w + value_w
    plot_h = group_h * len(bars)
    height = top + plot_h + 50
    xmax, step = _share_axis(max([max(r, c) for _, r, c in bars] + [1e-9]))

    def x(share: float) -> float:
        return left + plot_w * min(share, xmax) / xmax

    out = [
        f'<svg class="chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_e(title)}: reference vs current share per {_e(axis)}">',
        f"<title>{_e(title)}: reference vs current share per {_e(axis)}</title>",
        # Legend.
        f'<rect x="{left}" y="8" width="12" height="12" fill="{REFERENCE_COLOUR}"/>',
        f'<text x="{left + 18}" y="18">reference</text>',
        f'<rect x="{left + 100}" y="8" width="12" height="12" fill="{CURRENT_COLOUR}"/>',
        f'<text x="{left + 118}" y="18">current</text>',
        f'<text class="axis" x="{label_w}" y="{top - 8}" text-anchor="end">{_e(axis)}</text>',
    ]
    for i in range(round(xmax / step) + 1):  # vertical grid lines and tick labels
        share = step * i
        gx = x(share)
        out.append(
            f'<line x1="{gx:.1f}" y1="{top}" x2="{gx:.1f}" y2="{top + plot_h}" '
            f'stroke="{"#8c959f" if i == 0 else "#e5e9ee"}"/>'
            f'<text class="axis" x="{gx:.1f}" y="{top + plot_h + 16}" '
            f'text-anchor="middle">{_tick(share, step)}</text>'
        )
    out.append(
        f'<text class="axis" x="{left + plot_w / 2:.1f}" y="{top + plot_h + 38}" '
        f'text-anchor="middle">share of rows</text>'
    )
    for i, (label, ref, cur) in enumerate(bars):
        y0 = top + i * group_h + gap / 2
        full = f"{label}: reference {_pct(ref)}, current {_pct(cur)}"
        out.append(
            f"<g><title>{_e(full)}</title>"
            f'<text x="{label_w}" y="{y0 + bar_h + 4:.1f}" text-anchor="end">'
            f"{_e(_shorten(label, label_chars))}</text>"
        )
        for j, (share, colour) in enumerate(((ref, REFERENCE_COLOUR), (cur, CURRENT_COLOUR))):
            by = y0 + j * bar_h
            bw = max(x(share) - left, 0.0)
            out.append(
                f'<rect x="{left}" y="{by:.1f}" width="{bw:.1f}" height="{bar_h - 1}" '
                f'fill="{colour}"/>'
                f'<text class="axis" x="{left + bw + 4:.1f}" y="{by + bar_h - 2:.1f}" '
                f'font-size="10">{_pct(share)}</text>'
            )
        out.append("</g>")
    out.append("</svg>")
    note = (
        f'<p class="muted">The {MAX_BARS - 1} largest of {len(bars) - 1 + folded} '
        f"{_e(axis)} values are drawn; the other {folded} are summed into one bar.</p>"
        if folded
        else ""
    )
    return "".join(out) + note


# --- sections -----------------------------------------------------------------------------------


def _header(doc: dict) -> str:
    model = doc.get("model") or {}
    window = doc.get("window") or {}
    drift = doc.get("drift")
    if drift is None:
        verdict = f'<span class="verdict">{DASH}</span>'
    elif drift:
        verdict = '<span class="verdict drift">DRIFT</span>'
    else:
        verdict = '<span class="verdict nodrift">NO DRIFT</span>'
    filters = [
        (label, _num(window[key]) if key == "last" else _e(window[key]))
        for label, key in (
            ("Last rows", "last"),
            ("Since", "since"),
            ("Until", "until"),
            ("Model version filter", "model_version"),
        )
        if window.get(key) is not None
    ]
    first, last = window.get("first_ts"), window.get("last_ts")
    span = f"{_e(first or DASH)} → {_e(last or DASH)}" if first or last else DASH
    facts = _facts(
        [
            ("Model", f"<strong>{_e(model_title(model))}</strong>"),
            ("Model id", f'<span class="mono">{_e(model.get("id") or DASH)}</span>'),
            (
                "Window",
                f"{_e(window.get('source') or DASH)}: "
                f'<span class="mono">{_e(window.get("where") or DASH)}</span>',
            ),
            *filters,
            ("Time range", span),
            ("Rows monitored", _num(doc.get("rows"))),
            ("Reference rows", _num(doc.get("reference_rows"))),
        ]
    )
    drifted = [str(f) for f in doc.get("drifted_features") or []]
    drifted_line = (
        f"<p>{len(drifted)} drifted input{'s' if len(drifted) != 1 else ''}: "
        + ", ".join(f"<strong>{_e(f)}</strong>" for f in drifted)
        + "</p>"
        if drifted
        else "<p>No input drifted.</p>"
    )
    return (
        f"<header><h1>Monitoring report: {_e(model_title(model))}</h1>{facts}"
        f"<p>Whole-batch verdict: {verdict}</p>{drifted_line}"
        f'<p class="rule"><strong>Rule.</strong> {_e(doc.get("rule") or DASH)}</p>'
        f"</header>{_retrain(doc.get('retrain') or {})}"
    )


def _retrain(retrain: dict) -> str:
    recommended = retrain.get("recommended")
    reasons = [str(r) for r in retrain.get("reasons") or []]
    items = "".join(f"<li>{_e(r)}</li>" for r in reasons)
    title = "Retraining recommended" if recommended else "Retraining not recommended"
    return (
        f'<section class="callout{" retrain" if recommended else ""}" id="retrain">'
        f"<h2>{title}</h2>"
        + (f"<ul>{items}</ul>" if items else '<p class="muted">No reasons given.</p>')
        + "</section>"
    )


def _performance(perf: dict | None) -> str:
    head = "<section id=performance><h2>Performance</h2>"
    if not perf:
        return f'{head}<p class="muted">No labelled rows: performance not measured.</p></section>'
    kpis = perf.get("kpis") or {}
    objectives = {str(o.get("metric")): o for o in perf.get("objectives") or []}
    metrics = [*kpis, *(m for m in objectives if m not in kpis)]
    rows = []
    for metric in metrics:
        o = objectives.get(metric, {})
        value = kpis.get(metric, o.get("value"))
        bound = o.get("bound")
        limit = (
            f"{'≥' if bound == 'minimum' else '≤' if bound == 'maximum' else ''} "
            f"{_num(o.get('limit'))}"
            if o
            else DASH
        )
        rows.append(
            f"<tr><td>{_e(metric)}</td><td class=num>{_num(value)}</td>"
            f"<td class=num>{_interval(o.get('interval'))}</td>"
            f"<td class=num>{limit}</td>"
            f"<td>{_met(o) if o else DASH}"
            "</td></tr>"
        )
    table = (
        "<table><thead><tr><th>Metric</th><th class=num>Value</th>"
        "<th class=num>95 % interval</th>"
        "<th class=num>Objective</th><th>Status</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        if rows
        else '<p class="muted">No KPI computed.</p>'
    )
    est = perf.get("estimated")
    if est:
        estimate = (
            f"<h3>Estimated {_e(est.get('metric'))} (from the model's confidence, all rows)</h3>"
            + _facts(
                [
                    ("Estimate", f"<strong>{_num(est.get('value'))}</strong>"),
                    ("95 % interval", _interval(est.get("interval"))),
                    (
                        "On the test split",
                        f"estimated {_num(est.get('reference'))}, realised "
                        f"{_num(est.get('reference_realized'))}",
                    ),
                    ("Limit", _num(est.get("limit"))),
                    ("Status", _met(est)),
                ]
            )
        )
    else:
        estimate = '<p class="muted">No confidence-based estimate.</p>'
    return (
        f"{head}<p>Labelled rows: <strong>{_num(perf.get('labelled_rows'))}</strong></p>"
        f"{table}{estimate}</section>"
    )


def _gain_chart(kpis: list[dict], margin: float) -> str:
    """Each judged KPI's gain (challenger minus production, oriented: right is better) with its
    interval, as inline SVG: a dot on a line, beside zero and the rule's margin."""
    rows = [
        k
        for k in kpis
        if isinstance(k.get("interval"), dict)
        and _finite(k["interval"].get("low")) is not None
        and _finite(k.get("gain")) is not None
    ]
    if not rows:
        return ""
    reach = max([abs(float(k["interval"][e])) for k in rows for e in ("low", "high")]
                + [abs(margin), 1e-6]) * 1.15  # fmt: skip
    label_w, plot_w, top, row_h = 130, 420, 30, 26
    width, height = label_w + plot_w + 20, top + row_h * len(rows) + 34

    def x(v: float) -> float:
        return label_w + plot_w * (v + reach) / (2 * reach)

    out = [
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'role="img" aria-label="gain of the challenger over production, with its interval">',
        "<title>Gain of the challenger over production (right: better), with its interval</title>",
        f'<line x1="{x(0):.1f}" y1="{top - 6}" x2="{x(0):.1f}" y2="{height - 30}" '
        'stroke="#8c959f"/>',
        f'<text class="axis" x="{x(0):.1f}" y="{top - 12}" text-anchor="middle">0</text>',
    ]
    if margin:
        out.append(
            f'<line x1="{x(margin):.1f}" y1="{top - 6}" x2="{x(margin):.1f}" '
            f'y2="{height - 30}" stroke="{CURRENT_COLOUR}" stroke-dasharray="4 3"/>'
            f'<text class="axis" x="{x(margin):.1f}" y="{top - 12}" text-anchor="start">'
            f" margin {_num(margin)}</text>"
        )
    for i, k in enumerate(rows):
        y = top + i * row_h + row_h / 2
        low, high, gain = (float(v) for v in (k["interval"]["low"], k["interval"]["high"],
                                               k["gain"]))  # fmt: skip
        colour = "#1a7f37" if low > margin else "#b42318" if high < margin else REFERENCE_COLOUR
        out.append(
            f"<g><title>{_e(k['metric'])}: gain {_num(gain)}, interval [{_num(low)}, "
            f"{_num(high)}]</title>"
            f'<text x="{label_w - 8}" y="{y + 4:.1f}" text-anchor="end">{_e(k["metric"])}</text>'
            f'<line x1="{x(low):.1f}" y1="{y:.1f}" x2="{x(high):.1f}" y2="{y:.1f}" '
            f'stroke="{colour}" stroke-width="3"/>'
            f'<circle cx="{x(gain):.1f}" cy="{y:.1f}" r="5" fill="{colour}"/></g>'
        )
    out.append(
        f'<text class="axis" x="{label_w + plot_w / 2:.1f}" y="{height - 8}" '
        'text-anchor="middle">gain of the challenger (right: better)</text></svg>'
    )
    return "<figure><figcaption>Gain and its interval</figcaption>" + "".join(out) + "</figure>"


def _comparison(c: dict | None) -> str:
    """The challenger against production (``mlcycle monitor --compare``): the decision, the
    split or the agreement, each KPI's gain with its interval, and the estimates."""
    if not isinstance(c, dict):
        return ""
    d = c.get("decision") or {}
    outcome = str(d.get("outcome") or "")
    kind = {"promote": "", "rollback": " retrain"}.get(outcome, " watch")
    ch, pr = c.get("challenger") or {}, c.get("production") or {}
    paired = "paired on the same records" if c.get("stage") == "shadow" else "two groups"
    facts = [
        ("Challenger", f"{_e(c.get('stage'))} {_e(ch.get('version') or '')} "
                       f"<span class=mono>{_e(ch.get('id'))}</span>"),
        ("Production", f"{_e(pr.get('version') or '')} <span class=mono>{_e(pr.get('id'))}</span>"),
        ("Records", f"{_num(c.get('records'))} ({_e(paired)}), {_num(c.get('labelled'))} labelled"),
    ]  # fmt: skip
    if c.get("agreement") is not None:
        facts.append(("Decisions agree", _pct(c.get("agreement"))))
    split = c.get("split")
    if isinstance(split, dict):
        skewed = ' <span class="pill bad">skewed</span>' if split.get("skewed") else ""
        shares = f"{_pct(split.get('observed'))} observed, {_pct(split.get('configured'))} "
        facts.append(("Canary share", f"{shares}configured{skewed}"))
    for key, g in (c.get("groups") or {}).items():
        drifted = ((g or {}).get("drift") or {}).get("drifted_features")
        facts.append((f"{key.capitalize()} group", f"{_num(g.get('records'))} records, "
                      f"{_num(g.get('labelled'))} labelled; drifted inputs: "
                      f"{_e(', '.join(drifted or []) or 'none')}"))  # fmt: skip
    rows = "".join(
        f"<tr><td>{_e(k.get('metric'))} <span class=muted>({_e(k.get('better'))} is better)"
        f"</span></td><td class=num>{_num(k.get('production'))}</td>"
        f"<td class=num>{_num(k.get('challenger'))}</td><td class=num>{_num(k.get('gain'))}</td>"
        f"<td class=num>{_interval(k.get('interval'))}</td></tr>"
        for k in c.get("kpis") or []
    )
    table = (
        "<table><thead><tr><th>Metric</th><th class=num>Production</th>"
        "<th class=num>Challenger</th><th class=num>Gain</th><th class=num>Interval</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>"
        if rows
        else '<p class="muted">No labelled records yet: no KPI compared.</p>'
    )
    est = "".join(
        f"<li>estimated {_e(e.get('metric'))}: production {_num(e.get('production'))}, "
        f"challenger {_num(e.get('challenger'))}, gain {_num(e.get('gain'))}</li>"
        for e in c.get("estimated") or []
    )
    return (
        f'<section class="callout{kind}" id="decision"><h2>Challenger: {_e(outcome.upper())}'
        f"</h2><p>{_e(d.get('reason'))}</p></section>"
        "<section id=comparison><h2>Challenger against production</h2>"
        + _facts(facts)
        + table
        + _gain_chart(c.get("kpis") or [], float(d.get("margin") or 0))
        + (f"<h3>Before labels (from the models' confidence)</h3><ul>{est}</ul>" if est else "")
        + "</section>"
    )


def _distribution(part: dict | None, title: str, anchor: str) -> str:
    """The predictions' or the target's drift: figures and a reference-vs-current chart."""
    if not part:
        return (
            f'<figure id="{anchor}"><figcaption>{_e(title)}</figcaption>'
            f'<p class="muted">Not monitored in this run.</p></figure>'
        )
    what = part.get("what")
    ordered = what in ("score", "value")
    caption = f"{title} ({what})" if what else title
    figures = (
        f"<p>{_yes_no(part.get('drifted'))} test {_e(part.get('test') or DASH)}, "
        f"statistic {_num(part.get('statistic'))}, p-value {_p(part.get('p_value'))}, "
        f"PSI {_num(part.get('psi'))}</p>"
    )
    chart = _bar_chart(part.get("histogram"), caption, ordered, "bin" if ordered else "class")
    return f'<figure id="{anchor}"><figcaption>{_e(caption)}</figcaption>{figures}{chart}</figure>'


def feature_order(features: Sequence[dict]) -> list[dict]:
    """Drifted features first (for whatever reason: distribution, missing values, text), then
    by PSI, largest first; the order of both reports."""
    return sorted(features, key=lambda f: (not f.get("drifted"), -(_finite(f.get("psi")) or 0.0)))


def _features_table(features: list[dict]) -> str:
    head = "<section id=features><h2>Inputs</h2>"
    if not features:
        return head + '<p class="muted">No input was compared.</p></section>'
    rows = []
    for i, f in enumerate(features):
        drifted = bool(f.get("drifted"))
        name = _e(f.get("feature"))
        name_cell = f'<a href="#feature-{i}">{name}</a>' if drifted else name
        ref_miss, cur_miss = f.get("reference_missing_rate"), f.get("current_missing_rate")
        reasons = ", ".join(_e(r) for r in f.get("reasons") or []) or DASH
        rows.append(
            f'<tr class="{"drifted" if drifted else ""}">'
            f'<td data-sort="{name}">{name_cell}</td>'
            f"<td>{_e(f.get('kind') or DASH)}</td>"
            f'<td data-sort="{int(drifted)}">{_yes_no(drifted, "drifted", "no")}</td>'
            f"<td>{reasons}</td>"
            f"<td>{_e(f.get('test') or DASH)}</td>"
            f'<td class=num data-sort="{_sort_key(f.get("statistic"))}">'
            f"{_num(f.get('statistic'))}</td>"
            f'<td class=num data-sort="{_sort_key(f.get("p_value"))}">{_p(f.get("p_value"))}</td>'
            f'<td class=num data-sort="{_sort_key(f.get("psi"))}">{_num(f.get("psi"))}</td>'
            f'<td class=num data-sort="{_sort_key(f.get("effect"))}">{_num(f.get("effect"))}</td>'
            f'<td class=num data-sort="{_sort_key(cur_miss)}">'
            f"{_pct(ref_miss)} → {_pct(cur_miss)}</td>"
            f'<td class=num data-sort="{_sort_key(f.get("not_numbers_rate"))}">'
            f"{_pct(f.get('not_numbers_rate'))}</td></tr>"
        )
    n_drifted = sum(bool(f.get("drifted")) for f in features)
    return (
        f"{head}<p>{n_drifted} of {len(features)} inputs drifted. Drifted first; "
        "click a column header to sort.</p>"
        '<div class="scroll"><table class="sortable" id="feature-table"><thead><tr>'
        "<th>Input</th><th>Kind</th><th>Drift</th><th>Reasons</th><th>Test</th>"
        "<th class=num>Statistic</th><th class=num>p-value</th><th class=num>PSI</th>"
        "<th class=num>Effect</th>"
        "<th class=num>Missing ref → current</th><th class=num>Not numbers</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div></section>"
    )


def _drifted_charts(features: list[dict]) -> str:
    charts = []
    for i, f in enumerate(features):
        if not f.get("drifted"):
            continue
        numeric = f.get("kind") == "numeric"
        name = str(f.get("feature"))
        reasons = ", ".join(str(r) for r in f.get("reasons") or []) or DASH
        charts.append(
            f'<figure id="feature-{i}" class="feature-chart" data-feature="{_e(name)}">'
            f"<figcaption>{_e(name)} <span class=muted>({_e(f.get('kind') or DASH)}; "
            f"{_e(reasons)}; PSI {_num(f.get('psi'))}, p {_p(f.get('p_value'))})</span>"
            f"</figcaption>"
            + _bar_chart(f.get("histogram"), name, numeric, "bin" if numeric else "category")
            + "</figure>"
        )
    head = "<section id=drifted><h2>Drifted inputs</h2>"
    if not charts:
        return head + '<p class="muted">No input drifted.</p></section>'
    return f"{head}{''.join(charts)}</section>"


# --- the page -----------------------------------------------------------------------------------


def html_report(doc: dict, comparison: dict | None = None) -> str:
    """One self-contained HTML page showing a monitoring run's document ``doc`` (and the
    challenger's ``comparison`` with production, ``mlcycle monitor --compare``, if given).

    Opens offline in any browser: inline CSS and SVG charts, a Content-Security-Policy that
    forbids loading anything, every data string escaped. Missing sections (no labels, no
    predictions, no target) are said to be missing rather than left out.
    """
    model = doc.get("model") or {}
    features = feature_order([f for f in doc.get("features") or [] if isinstance(f, dict)])
    title = f"Monitoring report: {model.get('name') or 'model'}"
    verdict = "DRIFT" if doc.get("drift") else "NO DRIFT"
    body = "".join(
        [
            _header(doc),
            _comparison(comparison),
            _performance(doc.get("performance")),
            "<section id=outputs><h2>Predictions and target</h2><div class=charts>",
            _distribution(doc.get("predictions"), "Predictions", "predictions"),
            *(
                [_distribution({**mix, "what": "class mix"}, "Predicted", "class-mix")]
                if isinstance(mix := (doc.get("predictions") or {}).get("class_mix"), dict)
                else []
            ),
            _distribution(doc.get("target"), "Target", "target"),
            "</div></section>",
            _features_table(features),
            _drifted_charts(features),
            f"<footer>Created {_e(doc.get('created') or DASH)} by mlcycle monitor.</footer>",
        ]
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{_e(title)} – {verdict}</title><style>{_CSS}</style></head>\n"
        f"<body>{body}<script>{_SCRIPT}</script></body></html>\n"
    )
