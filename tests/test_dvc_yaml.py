"""Contracts of dvc.yaml that keep `dvc repro` honest."""

from __future__ import annotations

import ast
import functools
import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml

import mlcycle.stages
from mlcycle.pipeline import DVC_YAML, data_hashes, parse_lock, read_lock, read_stages
from tests.conftest import ROOT

PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())
STAGES = PIPELINE["stages"]


# Run in a fresh Python: for each module named, in a child forked before any mlcycle module is
# loaded, import the module, then the mlcycle modules it imports inside its functions (a
# deferred import, kept off the start-up of a run that does not need it: the gate's champion
# scoring), and, where the model registry is loaded, every kind's adapter (it imports a kind's
# adapter when a model of that kind is fitted or loaded); print the files loaded, one JSON line
# a module. Imports for type checkers only are not followed, nor those a library module defers
# (its callers' deferred imports name theirs). The libraries the stages use are imported once,
# before the forks: a child loads only mlcycle's own modules (which of them it loads does not
# depend on what else is loaded), not every library again (about 1.5 s of CPU a stage).
IMPORTS = """
import ast, importlib, json, os, sys

for library in ("numpy", "pandas", "pyarrow.parquet", "scipy", "sklearn", "xgboost", "pydantic",
                "yaml"):
    try:
        importlib.import_module(library)
    except ImportError:
        pass
assert not [n for n in sys.modules if n.startswith("mlcycle")], "mlcycle loaded before the fork"

def deferred(node, in_function=False):
    if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
        return
    if in_function and isinstance(node, ast.ImportFrom) and node.level == 0:
        yield node.module
        yield from (f"{node.module}.{a.name}" for a in node.names)
    elif in_function and isinstance(node, ast.Import):
        yield from (a.name for a in node.names)
    inside = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    for child in ast.iter_child_nodes(node):
        yield from deferred(child, inside)

def loaded(name):
    module = importlib.import_module(name)
    for name in deferred(ast.parse(open(module.__file__).read())):
        if name.startswith("mlcycle"):
            try:
                importlib.import_module(name)
            except ImportError:  # `from mlcycle.x import f`: f is not a module
                pass
    if "mlcycle.models" in sys.modules:
        for kind in sys.modules["mlcycle.models"].KINDS:
            sys.modules["mlcycle.models"].adapter(kind)
    return sorted(m.__file__ for n, m in sys.modules.items()
                  if n.startswith("mlcycle") and getattr(m, "__file__", None))

for name in sys.argv[1:]:
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            print(json.dumps([name, loaded(name)]), flush=True)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        sys.exit(f"importing {name} failed")
"""


@functools.cache
def stage_imports() -> dict[str, frozenset[str]]:
    """Files of the mlcycle package that running each stage's module may load, at import or
    later through a deferred import (:data:`IMPORTS`), as repo-relative paths (once per test
    process, in one Python process for all stages)."""
    modules = sorted({stage["cmd"].split()[2] for stage in STAGES.values()})
    out = subprocess.run(
        [sys.executable, "-c", IMPORTS, *modules],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""},
    ).stdout
    src = ROOT / "src"
    found = dict(json.loads(line) for line in out.splitlines())
    assert sorted(found) == modules, out
    return {
        module: frozenset(
            f"src/{Path(f).resolve().relative_to(src.resolve())}"
            for f in files
            if not f.endswith("mlcycle/__init__.py")
        )
        for module, files in found.items()
    }


def imported_modules(module: str) -> frozenset[str]:
    """:func:`stage_imports` of one stage's module."""
    return stage_imports()[module]


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


def test_every_output_persists_so_a_failed_stage_can_keep_it() -> None:
    """DVC deletes a stage's outputs before running it unless they persist; the stage runner
    (mlcycle.stages.run) puts the git-tracked ones back when the stage fails, and the cached
    ones (data and models) are swapped in whole at the end, so a failure leaves the old ones."""
    for name, stage in STAGES.items():
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key, []):
                assert isinstance(entry, dict), f"{name}: {entry} needs persist: true"
                ((path, opts),) = entry.items()
                assert opts.get("persist") is True, f"{name}: {path} needs persist: true"


# --- stage paths: named once in mlcycle.stages, declared in dvc.yaml; these keep them agreeing --

STAGE_PATHS = {
    name: value
    for name, value in vars(mlcycle.stages).items()
    if name.isupper() and isinstance(value, str)
}
DECLARED = read_stages(ROOT / DVC_YAML)


def _covers(declared: Iterable[str], path: str) -> bool:
    """``path`` is a declared path, inside a declared folder, or a folder of declared paths."""
    return any(Path(path).is_relative_to(d) or Path(d).is_relative_to(path) for d in declared)


def _paths_named_in(module: Path) -> set[str]:
    """The paths a stage's code names: the stage path constants it imports, and f-strings made
    of them and literal text only (``f"{METRICS}/gate.json"``)."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    names = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "mlcycle.stages"
        for alias in node.names
        if alias.name in STAGE_PATHS
    }
    found = {STAGE_PATHS[n] for n in names}
    for node in ast.walk(tree):
        if not isinstance(node, ast.JoinedStr):
            continue
        parts = []
        for part in node.values:
            if isinstance(part, ast.Constant):
                parts.append(str(part.value))
            elif (
                isinstance(part, ast.FormattedValue)
                and isinstance(part.value, ast.Name)
                and part.value.id in names
            ):
                parts.append(STAGE_PATHS[part.value.id])
            else:
                break
        else:
            if node.values and isinstance(node.values[0], ast.FormattedValue):
                found.add("".join(parts))
    return found


def test_the_stage_paths_are_found() -> None:
    """The checks below see the constants and the f-strings built from them."""
    assert {"SNAPSHOT", "TRAIN", "TEST", "MODEL_DIR", "BUNDLE", "METRICS"} <= set(STAGE_PATHS)
    named = _paths_named_in(ROOT / "src/mlcycle/stages/gate.py")
    assert {"metrics/gate.json", "metrics/evaluate.json", STAGE_PATHS["TEST"]} <= named


def test_every_stage_path_is_an_output_in_dvc_yaml() -> None:
    """A path constant renamed on one side only (code or dvc.yaml) fails here."""
    outputs = [out.path for stage in DECLARED.values() for out in stage.outputs]
    for name, path in STAGE_PATHS.items():
        assert _covers(outputs, path), f"mlcycle.stages.{name} = {path!r} is no output in dvc.yaml"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_declares_every_path_its_code_names(stage: str) -> None:
    """Every stage path a stage's code reads or writes is one of its deps or outputs."""
    declared = [*DECLARED[stage].deps, *(out.path for out in DECLARED[stage].outputs)]
    modules = [
        ROOT / "src/mlcycle/stages" / f"{stage}.py",
        ROOT / "src/mlcycle/engines" / f"{stage}.py",
    ]
    for module in [m for m in modules if m.is_file()]:
        for path in sorted(_paths_named_in(module)):
            assert _covers(declared, path), (
                f"{module.relative_to(ROOT)} uses {path!r}, which is no dep or output of stage "
                f"{stage!r} in dvc.yaml"
            )


def test_every_data_and_model_output_is_a_stage_path() -> None:
    """The outputs DVC caches (data and models) are each named by a constant in
    mlcycle.stages; the git-kept ones (metrics and plot data) live under its METRICS."""
    for stage in DECLARED.values():
        for out in stage.outputs:
            if out.in_git:
                assert Path(out.path).is_relative_to(STAGE_PATHS["METRICS"]), out.path
            else:
                assert out.path in STAGE_PATHS.values(), (
                    f"stage {stage.name!r} declares {out.path!r}, not named in mlcycle.stages"
                )


def test_the_lock_hashes_of_data_and_models() -> None:
    """dvc.lock's md5 of every data and model file, whichever stage lists it."""
    lock = parse_lock(
        "schema: '2.0'\nstages:\n"
        "  a:\n    cmd: x\n    deps:\n    - path: src/a.py\n      md5: s1\n"
        "    outs:\n    - path: data/a.parquet\n      md5: d1\n      size: 3\n"
        "    - path: models/m\n      hash: md5\n      md5: m1.dir\n"
        "  b:\n    cmd: y\n    deps:\n    - path: data/a.parquet\n      md5: d1\n"
        "    outs:\n    - path: metrics/b.json\n      md5: b1\n    - path: data/none\n"
    )
    assert lock["a"].deps == {"src/a.py": "s1"}
    assert lock["b"].outs == {"metrics/b.json": "b1", "data/none": None}
    assert data_hashes(lock) == {"data/a.parquet": "d1", "models/m": "m1.dir"}
    assert parse_lock(None) == {} and read_lock(ROOT / "no-such.lock") == {}
