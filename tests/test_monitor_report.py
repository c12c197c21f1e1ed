"""The HTML report of a monitoring run (:mod:`mlcycle.monitor_report`).

Unit tests on hand-built monitoring documents (escaping, self-containment, one chart per drifted
input, the awkward cases), then the page opened for real in headless Chromium with the network
blocked: its script must run (``<body data-ready="1">``), its table must sort, and its
screenshot must show the charts' colours. Chromium missing: the browser tests skip, except
under CI (CI=true), where they fail.
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
import re
import shutil
import signal
import struct
import subprocess
import zlib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from mlcycle.monitor_report import (
    CURRENT_COLOUR,
    DASH,
    MAX_BARS,
    REFERENCE_COLOUR,
    html_report,
)
from tests.conftest import unavailable

HOSTILE_NAME = '<img src=x onerror="alert(1)">"quoted" & amp'
HOSTILE_CATEGORY = "<script>alert(1)</script>"
BROWSER_TIMEOUT = 60  # seconds, per Chromium run


# --- hand-built monitoring documents ------------------------------------------------------------


def numeric_feature(name: str, drifted: bool, bins: int = 10) -> dict:
    """A numeric input's verdict, shaped like ``drift.as_dict``: ``bins`` interval bins and a
    "(missing)" bin; the current batch is shifted to the right when ``drifted``."""
    ref = np.full(bins, 0.95 / bins)
    cur = np.roll(ref, 2) if drifted else ref.copy()
    labels = [f"[{i * 10}, {(i + 1) * 10})" for i in range(bins)]
    return {
        "feature": name,
        "kind": "numeric",
        "test": "ks",
        "statistic": 0.42 if drifted else 0.0123,
        "p_value": 1.2e-30 if drifted else 0.734,
        "psi": 0.8731 if drifted else 0.0021,
        "drifted": drifted,
        "reasons": ["distribution", "missing"] if drifted else [],
        "reference_missing_rate": 0.05,
        "current_missing_rate": 0.05,
        "not_numbers_rate": 0.0,
        "histogram": {
            "bins": [*labels, "(missing)"],
            "reference": [*ref.tolist(), 0.05],
            "current": [*cur.tolist(), 0.05],
        },
    }


def categorical_feature(name: str, categories: list[str], drifted: bool = True) -> dict:
    """A categorical input's verdict: the current shares are the reference ones reversed."""
    n = len(categories)
    weights = np.arange(n, 0, -1, dtype=float)
    ref = weights / weights.sum()
    return {
        "feature": name,
        "kind": "categorical",
        "test": "chi2",
        "statistic": 155.25,
        "p_value": 3.4e-5,
        "psi": 0.31,
        "drifted": drifted,
        "reasons": ["distribution"] if drifted else [],
        "reference_missing_rate": 0.0,
        "current_missing_rate": 0.1,
        "not_numbers_rate": 0.0,
        "histogram": {"bins": categories, "reference": ref.tolist(), "current": ref[::-1].tolist()},
    }


def make_doc(features: list[dict], **changes: object) -> dict:
    """A whole monitoring document around ``features``; ``changes`` replace top-level keys."""
    drifted = [f["feature"] for f in features if f["drifted"]]
    doc = {
        "model": {"name": "adult-income", "version": "3", "id": "sha256:0123abcd"},
        "window": {
            "source": "log",
            "where": "postgresql+psycopg://mlcycle:***@db.internal/predictions",
            "last": 5000,
            "since": None,
            "until": None,
            "model_version": "3",
            "first_ts": "2025-01-01T00:00:00Z",
            "last_ts": "2025-01-31T23:59:59Z",
        },
        "rows": 5000,
        "reference_rows": 32561,
        "rule": "A batch drifts when any input, the predictions or the target drifts.",
        "drift": bool(drifted),
        "drifted_features": drifted,
        "features": features,
        "predictions": {
            "what": "score",
            "test": "ks",
            "statistic": 0.21,
            "p_value": 2.5e-9,
            "psi": 0.12,
            "drifted": True,
            "histogram": {
                "bins": ["[0, 0.25)", "[0.25, 0.5)", "[0.5, 0.75)", ">= 0.75"],
                "reference": [0.5, 0.25, 0.15, 0.1],
                "current": [0.3, 0.3, 0.2, 0.2],
            },
        },
        "target": {
            "what": "label",
            "test": "chi2",
            "statistic": 1.5,
            "p_value": 0.22,
            "psi": 0.004,
            "drifted": False,
            "histogram": {
                "bins": ["<=50K", ">50K"], "reference": [0.76, 0.24], "current": [0.74, 0.26]
            },
        },
        "performance": {
            "labelled_rows": 1200,
            "kpis": {"roc_auc": 0.8612345, "f1": 0.6, "log_loss": float("nan")},
            "objectives": [
                {"metric": "roc_auc", "bound": "minimum", "value": 0.8612345, "limit": 0.85,
                 "met": True},
                {"metric": "f1", "bound": "minimum", "value": 0.6, "limit": 0.65, "met": False},
            ],
            "estimated": {"metric": "roc_auc", "value": 0.8433, "reference": 0.9012,
                          "limit": 0.85, "met": False},
        },
        "retrain": {
            "recommended": True,
            "reasons": ["2 inputs drifted: age, workclass", "f1 0.6 < minimum 0.65"],
        },
        "created": "2025-02-01T08:00:00+00:00",
    }  # fmt: skip
    doc.update(changes)
    return doc


def hostile_doc() -> dict:
    """Two drifted inputs (one with a hostile name and category, one with 200 categories), one
    clean input with a non-ASCII name and a NaN statistic."""
    clean = numeric_feature("âge_été_年齢", drifted=False)
    clean["statistic"] = float("nan")
    return make_doc(
        [
            clean,
            numeric_feature("age", drifted=True),
            categorical_feature(HOSTILE_NAME, [HOSTILE_CATEGORY, "Private", "Self-emp", "日本語"]),
            categorical_feature("country", [f"country-{i:03d}" for i in range(200)]),
        ]
    )


class Page(HTMLParser):
    """What a test needs to know of a page: its tags with their attributes, in order, its
    scripts' text, and for each ``<figure class="feature-chart">`` how many svg and rect
    elements it holds."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.figures: list[dict] = []
        self.scripts: list[str] = []
        self._figure: dict | None = None
        self._script: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "figure" and "feature-chart" in (a.get("class") or "").split():
            self._figure = {"attrs": a, "svg": 0, "rect": 0}
            self.figures.append(self._figure)
        elif self._figure is not None and tag in ("svg", "rect"):
            self._figure[tag] += 1
        if tag == "script":
            self._script = []

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._figure = None
        elif tag == "script" and self._script is not None:
            self.scripts.append("".join(self._script))
            self._script = None

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self._script.append(data)


def assert_self_contained(text: str) -> None:
    """No external resource: no http(s) anywhere, no src, hrefs only to anchors on the page,
    one script (the page's own) and a CSP that forbids loading anything."""
    assert "http://" not in text and "https://" not in text
    page = Page(text)
    for tag, attrs in page.tags:
        assert "src" not in attrs, (tag, attrs)
        assert tag not in ("link", "img", "iframe", "object", "embed", "base"), tag
        href = attrs.get("href")
        assert href is None or href.startswith("#"), (tag, href)
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
    assert [t for t, _ in page.tags].count("script") == 1
    csp = next(
        a["content"] for t, a in page.tags if a.get("http-equiv") == "Content-Security-Policy"
    )
    assert "default-src 'none'" in csp
    # The script's hash is the CSP's: otherwise the browser would refuse to run it.
    digest = base64.b64encode(hashlib.sha256(page.scripts[0].encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp


# --- unit tests ---------------------------------------------------------------------------------


def test_report_escapes_data_and_is_self_contained() -> None:
    text = html_report(hostile_doc())
    assert text.startswith("<!DOCTYPE html>")
    assert HOSTILE_CATEGORY not in text and HOSTILE_NAME not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert html.escape(HOSTILE_NAME) in text
    assert "âge_été_年齢" in text and "日本語" in text
    assert_self_contained(text)


def test_a_url_in_the_data_is_text_not_a_link() -> None:
    window = {**make_doc([])["window"], "where": "https://evil.example/<x>?a=1&b=2"}
    text = html_report(make_doc([], window=window))
    assert "https://evil.example/&lt;x&gt;?a=1&amp;b=2" in text
    assert not [a for _, a in Page(text).tags if "src" in a or "href" in a]


def test_each_drifted_input_has_a_chart() -> None:
    doc = hostile_doc()
    page = Page(html_report(doc))
    drifted = [f["feature"] for f in doc["features"] if f["drifted"]]
    assert [f["attrs"]["data-feature"] for f in page.figures] == drifted
    assert all(f["svg"] == 1 for f in page.figures)
    # Drifted first in the table too.
    text = html_report(doc)
    table = text[text.index('id="feature-table"') :]
    assert table.index("country") < table.index("âge_été_年齢")


def test_header_performance_and_retrain_are_shown() -> None:
    text = html_report(hostile_doc())
    assert '<span class="verdict drift">DRIFT</span>' in text
    assert "A batch drifts when any input, the predictions or the target drifts." in text
    assert "Retraining recommended" in text and "f1 0.6 &lt; minimum 0.65" in text
    assert "adult-income" in text and "sha256:0123abcd" in text and "32,561" in text
    assert "2025-01-01T00:00:00Z → 2025-01-31T23:59:59Z" in text
    assert "postgresql+psycopg://mlcycle:***@db.internal/predictions" in text
    assert "0.8612" in text and "≥ 0.85" in text
    assert '<span class="pill good">met</span>' in text and "not met" in text
    assert "Estimated roc_auc" in text and "0.8433" in text and "0.9012" in text
    assert "Predictions (score)" in text and "Target (label)" in text
    # NaN statistic and NaN KPI: a dash, never "nan".
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)
    assert f">{DASH}<" in text


def test_many_categories_are_folded_into_other() -> None:
    categories = [f"c{i}" for i in range(200)]
    doc = make_doc([categorical_feature("many", categories)])
    page = Page(html_report(doc))
    (figure,) = page.figures
    assert figure["rect"] == 2 * MAX_BARS + 2  # two bars per drawn bin, two legend swatches
    text = html_report(doc)
    assert f"other ({200 - MAX_BARS + 1} more)" in text
    # The largest categories by their bigger share are drawn: c0 (reference), c199 (current).
    chart = text[text.index('data-feature="many"') :]
    assert ">c0<" in chart and ">c199<" in chart and ">c100<" not in chart


def test_long_and_wide_labels_are_shortened_in_the_chart() -> None:
    long = "x" * 80
    cjk = "長" * 40
    text = html_report(make_doc([categorical_feature("f", [long, cjk])]))
    assert ">" + "x" * 29 + "…<" in text and ">" + "長" * 14 + "…<" in text
    assert long in text and cjk in text  # in full in the tooltip


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(make_doc([]), id="no-features"),
        pytest.param(make_doc([numeric_feature("a", False)]), id="no-drift"),
        pytest.param(
            make_doc([], predictions=None, target=None, performance=None), id="none-sections"
        ),
        pytest.param(
            make_doc(
                [],
                performance={"labelled_rows": 0, "kpis": {}, "objectives": [], "estimated": None},
                retrain={"recommended": False, "reasons": []},
                drift=False,
            ),
            id="empty-performance",
        ),
        pytest.param(make_doc([numeric_feature("one", True, bins=1)]), id="one-bin"),
        pytest.param(
            make_doc(
                [
                    categorical_feature("zero", ["a", "b"])
                    | {
                        "histogram": {
                            "bins": ["a", "b"],
                            "reference": [0.0, 0.0],
                            "current": [0.0, None],
                        }
                    }
                ]
            ),
            id="all-zero-histogram",
        ),  # fmt: skip
        pytest.param(
            make_doc([numeric_feature("no-hist", True) | {"histogram": None}]), id="no-histogram"
        ),
        pytest.param(
            make_doc(
                [numeric_feature("ümlaut", True)],
                model={"name": "modèle-年", "version": None, "id": "x"},
                window={
                    "source": "file",
                    "where": "data/新しい.csv",
                    "last": None,
                    "since": None,
                    "until": None,
                    "model_version": None,
                    "first_ts": None,
                    "last_ts": None,
                },
            ),
            id="non-ascii-and-no-window-filters",
        ),  # fmt: skip
    ],
)
def test_awkward_documents_render(doc: dict) -> None:
    text = html_report(doc)
    assert_self_contained(text)
    assert text.rstrip().endswith("</html>")
    drifted = sum(bool(f["drifted"]) for f in doc["features"])
    assert len(Page(text).figures) == drifted
    if doc["performance"] is None:
        assert "performance not measured" in text
    if doc["predictions"] is None:
        assert "Not monitored in this run" in text
    if not doc["drift"]:
        assert '<span class="verdict nodrift">NO DRIFT</span>' in text


# --- in a real browser --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    """Chromium's binary (or Chrome's): skip locally without one; fail under CI."""
    for name in ("chromium", "chromium-browser", "google-chrome", "headless_shell"):
        found = shutil.which(name)
        if found:
            return found
    unavailable(
        "browser tests",
        "no Chromium binary (chromium, chromium-browser, google-chrome or headless_shell) on "
        "PATH: `apt-get install chromium` to run the browser tests (.ci/run installs it)",
    )


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("report") / "monitor report é.html"
    path.write_text(html_report(hostile_doc()), encoding="utf-8")
    yield path


def browse(binary: str, workdir: Path, page: Path, *flags: str) -> str:
    """Run headless Chromium on ``page`` with ``flags``, network blocked; its stdout.

    Every name resolves to nothing and every request goes to a proxy that is not there
    (port 9, discard), so a page that needed the network shows it. A fresh profile and HOME
    in ``workdir``; the whole process group is killed past the timeout.
    """
    profile = workdir / f"profile-{len(list(workdir.glob('profile-*')))}"
    command = [
        binary,
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--proxy-server=127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={profile}",
        *flags,
        page.as_uri(),
    ]
    env = {**os.environ, "HOME": str(workdir), "XDG_CONFIG_HOME": str(workdir / ".config")}
    env.pop("DISPLAY", None)
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=workdir,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=BROWSER_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"Chromium took more than {BROWSER_TIMEOUT} s on {page.name}")
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    return out.decode("utf-8")


def body_attrs(dom: str) -> dict[str, str | None]:
    return next(a for t, a in Page(dom).tags if t == "body")


def png_pixels(path: Path) -> np.ndarray:
    """An 8-bit, non-interlaced PNG (what Chromium writes) as a height x width x channels array,
    decoded here: no imaging library is a dependency."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        (size,) = struct.unpack(">I", data[pos : pos + 4])
        kind, chunk = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + size]
        pos += 12 + size
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat.append(chunk)
    assert header is not None
    width, height, depth, colour, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour)
    assert depth == 8 and interlace == 0 and channels, f"unexpected PNG format {header}"
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    stride = width * channels
    rows = raw.reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:]
        if kind == 0:
            cur = line.copy()
        elif kind == 1:  # Sub: a running sum per channel, modulo 256
            cur = line.reshape(width, channels).cumsum(axis=0, dtype=np.uint8).reshape(-1)
        elif kind == 2:  # Up
            cur = line + prev
        else:  # Average or Paeth: each byte depends on the decoded one to its left
            cur_list = [0] * stride
            up = prev.tolist()
            for i, v in enumerate(line.tolist()):
                a = cur_list[i - channels] if i >= channels else 0
                b = up[i]
                if kind == 3:
                    cur_list[i] = (v + (a + b) // 2) & 0xFF
                else:
                    c = up[i - channels] if i >= channels else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                    cur_list[i] = (v + pred) & 0xFF
            cur = np.array(cur_list, dtype=np.uint8)
        out[y] = prev = cur
    return out.reshape(height, width, channels)


def rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def test_report_runs_in_a_browser(chromium: str, report_file: Path, tmp_path: Path) -> None:
    dom = browse(chromium, tmp_path, report_file, "--dump-dom")
    assert body_attrs(dom).get("data-ready") == "1", "the page's script did not run"
    page = Page(dom)
    assert '<span class="verdict drift">DRIFT</span>' in dom
    doc = hostile_doc()
    drifted = [f["feature"] for f in doc["features"] if f["drifted"]]
    assert [f["attrs"]["data-feature"] for f in page.figures] == drifted
    assert all(f["svg"] == 1 for f in page.figures)
    # The hostile category stayed text: one script element, the page's own.
    assert [t for t, _ in page.tags].count("script") == 1
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom


def test_the_browser_has_no_network(chromium: str, tmp_path: Path) -> None:
    """The harness's own check: a page that loads something from the web fails to, so the
    report passing above does not need the network."""
    page = tmp_path / "online.html"
    page.write_text(
        '<!DOCTYPE html><html><body><img src="http://example.com/favicon.ico" '
        "onload=\"document.body.dataset.net='loaded'\" "
        "onerror=\"document.body.dataset.net='blocked'\"></body></html>"
    )
    dom = browse(chromium, tmp_path, page, "--dump-dom")
    assert body_attrs(dom).get("data-net") == "blocked"


def test_feature_table_sorts_in_a_browser(chromium: str, report_file: Path, tmp_path: Path) -> None:
    """Click the PSI header twice, from a test script added to a copy of the page (without its
    CSP, which would block the test script), and read the rows' order after each click."""
    text = report_file.read_text(encoding="utf-8")
    text = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", text, count=1)
    harness = """<script>
      var table = document.getElementById("feature-table");
      var psi = Array.prototype.find.call(table.tHead.rows[0].cells,
                                          function (th) { return th.textContent === "PSI"; });
      function order() {
        return Array.prototype.map.call(table.tBodies[0].rows,
                                        function (r) { return r.cells[7].textContent; }).join("|");
      }
      psi.click(); document.body.dataset.up = order();
      psi.click(); document.body.dataset.down = order();
    </script></body>"""
    page = tmp_path / "sort.html"
    page.write_text(text.replace("</body>", harness), encoding="utf-8")
    attrs = body_attrs(browse(chromium, tmp_path, page, "--dump-dom"))
    assert attrs.get("data-ready") == "1"
    psis = sorted(f["psi"] for f in hostile_doc()["features"])
    assert attrs.get("data-up") == "|".join(f"{p:.4g}" for p in psis)
    assert attrs.get("data-down") == "|".join(f"{p:.4g}" for p in reversed(psis))


def test_screenshot_shows_the_charts(chromium: str, report_file: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    browse(
        chromium,
        tmp_path,
        report_file,
        f"--screenshot={shot}",
        "--window-size=1100,1600",
        "--hide-scrollbars",
        "--force-color-profile=srgb",
    )
    assert shot.is_file() and shot.stat().st_size > 10_000
    pixels = png_pixels(shot)[..., :3]
    assert pixels.shape[:2] == (1600, 1100)
    packed = pixels.astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.uint32)
    assert len(np.unique(packed)) > 50, "the screenshot is (nearly) one flat colour"
    # The prediction and target charts are in view: bars of both colours were drawn.
    for colour in (REFERENCE_COLOUR, CURRENT_COLOUR):
        near = np.abs(pixels.astype(int) - np.array(rgb(colour))).max(axis=-1) <= 3
        assert near.sum() > 500, f"no {colour} bars in the screenshot"
