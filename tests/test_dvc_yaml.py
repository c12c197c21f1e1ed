"""Contracts of dvc.yaml that keep `dvc repro` honest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())
STAGES = PIPELINE["stages"]


def imported_modules(module: str) -> set[str]:
    """Files of the mlcycle package that importing ``module`` loads, as repo-relative paths."""
    code = (
        "import importlib, json, sys; importlib.import_module(sys.argv[1]); "
        "print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items() "
        "if n.startswith('mlcycle') and getattr(m, '__file__', None))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, module],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""},
    ).stdout
    src = ROOT / "src"
    return {
        f"src/{Path(f).resolve().relative_to(src.resolve())}"
        for f in json.loads(out)
        if not f.endswith("mlcycle/__init__.py")
    }


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_list_exactly_the_modules_it_imports(stage: str) -> None:
    """A code change must re-run the stage, and only then: its deps name every mlcycle file it
    imports and no other."""
    cmd = STAGES[stage]["cmd"]
    assert cmd.startswith("python -m mlcycle."), cmd
    module = cmd.split()[2]
    deps = set(STAGES[stage]["deps"])
    imported = imported_modules(module)
    missing = imported - deps
    assert not missing, f"stage {stage!r} imports {sorted(missing)} but does not list them in deps"
    # And no more: a change to a module the stage does not import must not re-run it.
    unused = {d for d in deps if d.startswith("src/mlcycle/")} - imported
    assert not unused, f"stage {stage!r} lists {sorted(unused)} in deps but never imports them"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_never_imports_another_stage(stage: str) -> None:
    module = STAGES[stage]["cmd"].split()[2]
    others = {f"src/mlcycle/stages/{s}.py" for s in STAGES if s != stage}
    assert not imported_modules(module) & others


def test_metrics_and_plot_data_live_in_git() -> None:
    """`dvc metrics diff` and `dvc plots diff` work in a fresh clone without pulling."""
    for name, stage in STAGES.items():
        for entry in stage.get("metrics", []):
            ((path, opts),) = entry.items()
            assert opts.get("cache") is False, f"{name}: metric {path} should be cache: false"
        for entry in stage.get("outs", []):
            if isinstance(entry, str):
                assert not entry.startswith("metrics/"), f"{name}: {entry} should be cache: false"
            else:
                ((path, opts),) = entry.items()
                if path.startswith("metrics/"):
                    assert opts.get("cache") is False, f"{name}: {path} should be cache: false"


def test_one_metrics_file_the_headline() -> None:
    """`dvc metrics show` and `dvc exp show` list the headline only (metrics/summary.json):
    the detailed figures are plain outputs in git, so the tables fit a terminal."""
    declared = [
        next(iter(entry)) if isinstance(entry, dict) else entry
        for stage in STAGES.values()
        for entry in stage.get("metrics", [])
    ]
    assert declared == ["metrics/summary.json"]
    assert "metrics" in STAGES["evaluate"]


def test_git_tracked_outputs_persist_so_a_failed_stage_can_keep_them() -> None:
    """DVC deletes a stage's outputs before running it unless they persist; the stage runner
    (mlcycle.stages.run) puts the git-tracked ones back when the stage fails."""
    for name, stage in STAGES.items():
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key, []):
                if isinstance(entry, dict):
                    ((path, opts),) = entry.items()
                    if opts.get("cache") is False:
                        assert opts.get("persist") is True, f"{name}: {path} needs persist: true"
