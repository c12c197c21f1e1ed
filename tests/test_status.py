"""`mlcycle status` and the headline file: the project's figures at a glance, in a terminal
and in the README's results table, consistent with the detailed metrics files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlcycle import status
from mlcycle.config import read_raw
from tests.conftest import ROOT, cli


def test_summary_is_the_headline_of_the_detailed_metrics() -> None:
    evaluate = json.loads((ROOT / "metrics/evaluate.json").read_text())
    train = json.loads((ROOT / "metrics/train.json").read_text())
    minimums = read_raw(ROOT / "params.yaml")["objectives"].get("minimums") or {}
    summary = json.loads((ROOT / "metrics/summary.json").read_text())
    assert summary == status.headline(evaluate, train, minimums)
    primary = evaluate["objective"]["metric"]
    assert summary[primary] == evaluate[primary]
    assert summary[f"{primary}_low"] <= summary[primary] <= summary[f"{primary}_high"]
    assert summary[f"cv_{primary}"] == train["candidates"][train["winner"]]["cv_mean"]


def test_readme_results_are_generated_from_metrics() -> None:
    """The README's results table is what `mlcycle status --readme` writes from metrics/."""
    readme = (ROOT / "README.md").read_text()
    assert status.fill_readme(readme, status.markdown(ROOT)) == readme, (
        "README results are stale: run `mlcycle status --readme`"
    )


def test_gate_decision_is_matched_to_what_it_judged(tmp_path: Path) -> None:
    """A decision counts for an evaluation only if it judged those figures under those params:
    a changed bound makes it stale, and the workspace then looks in reports/gate.json (which a
    rejection leaves)."""
    evaluate = '{"roc_auc": 0.9}\n'
    params = "objectives:\n  minimum: 0.8\ngate:\n  tolerance: 0.01\n"
    judged = status.fingerprint(
        evaluate, {"objectives": {"minimum": 0.8}, "gate": {"tolerance": 0.01}}
    )
    gate = {"passed": True, "evaluation_sha256": judged}
    assert status.gate_of(gate, evaluate, params) == (gate, "current")
    assert status.gate_of(gate, evaluate, params.replace("0.8", "0.95"))[1] == "stale"
    assert status.gate_of(gate, evaluate.replace("0.9", "0.7"), params)[1] == "stale"
    assert status.gate_of({}, evaluate, params) == ({}, "none")
    assert status.gate_of({"passed": True}, evaluate, params)[1] == "current"  # older decisions

    (tmp_path / "metrics").mkdir()
    (tmp_path / "reports").mkdir()
    (tmp_path / "metrics/evaluate.json").write_text(evaluate)
    (tmp_path / "params.yaml").write_text(params.replace("0.8", "0.95"))
    (tmp_path / "metrics/gate.json").write_text(json.dumps(gate))
    assert status.workspace_gate(tmp_path)[1] == "stale"
    rejected = {
        "passed": False,
        "evaluation_sha256": status.fingerprint(
            evaluate, {"objectives": {"minimum": 0.95}, "gate": {"tolerance": 0.01}}
        ),
    }
    (tmp_path / "reports/gate.json").write_text(json.dumps(rejected))
    assert status.workspace_gate(tmp_path) == (rejected, "current")
    out = cli(tmp_path, "status", check=False)
    assert out.returncode == 0 and out.stdout.startswith("gate")
    assert "REJECTED" in out.stdout.splitlines()[0]


def test_readme_generation_refuses_a_readme_without_markers(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# no markers\n")
    proc = cli(tmp_path, "status", "--readme", check=False)
    assert proc.returncode == 1 and "results:begin" in proc.stderr
    assert (tmp_path / "README.md").read_text() == "# no markers\n"


def test_service_url_must_be_http() -> None:
    """``--service`` is fetched with urllib, which would open ``file:`` and ``ftp:`` too."""
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/x", "127.0.0.1:8000"):
        with pytest.raises(status.ServiceError, match="not an http"):
            status.served(url)
