"""dvc.yaml and dvc.lock, read in one place.

``dvc.yaml`` declares the stages: each one's command, the files it depends on and the outputs
it writes (``cache: false`` outputs, the metrics and plot data, live in git rather than DVC's
cache). ``dvc.lock`` records what DVC saw when each stage last ran: the md5 of every dep and
output. The stage runner, packaging, the registry and retraining read them through here.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DVC_YAML = "dvc.yaml"
DVC_LOCK = "dvc.lock"
# The keys of a dvc.yaml stage that declare outputs, in the order they are read.
OUTPUT_KEYS = ("outs", "metrics", "plots")
# Where the data and model files live (the hashes a bundle and a release record).
DATA_PREFIXES = ("data/", "models/")


def dvc_command() -> list[str]:
    """`dvc` of this Python environment, whatever PATH holds: ``.venv/bin/mlcycle`` run without
    the virtualenv activated finds the DVC installed beside it, with the same packages."""
    here = Path(sys.executable).parent / ("dvc.exe" if os.name == "nt" else "dvc")
    return [str(here)] if here.is_file() else [sys.executable, "-m", "dvc"]


@dataclass(frozen=True)
class Output:
    """One output a stage declares; ``in_git`` for ``cache: false`` (git tracks it, not DVC)."""

    path: str
    in_git: bool = False


@dataclass(frozen=True)
class Stage:
    """One stage of dvc.yaml: its command, deps (paths) and outputs (outs, metrics, plots)."""

    name: str
    cmd: str
    deps: tuple[str, ...]
    outputs: tuple[Output, ...]

    @property
    def git_outputs(self) -> list[Path]:
        """The outputs git tracks (``cache: false``): the stage's metrics and plot data."""
        return [Path(out.path) for out in self.outputs if out.in_git]


@dataclass(frozen=True)
class LockedStage:
    """What dvc.lock recorded for one stage: the md5 of each dep and output, by path (None
    where the entry has no md5)."""

    deps: dict[str, str | None]
    outs: dict[str, str | None]


def _path(entry: Any) -> str:
    """The path of a dvc.yaml list entry: ``- path`` or ``- path: {options}``."""
    return str(next(iter(entry))) if isinstance(entry, dict) else str(entry)


def _output(entry: Any) -> Output:
    if isinstance(entry, dict):
        ((name, opts),) = entry.items()
        return Output(str(name), isinstance(opts, dict) and opts.get("cache") is False)
    return Output(str(entry))


def parse_stages(text: str) -> dict[str, Stage]:
    """The stages of dvc.yaml ``text``, by name, in the file's order."""
    spec = (yaml.safe_load(text) or {}).get("stages") or {}
    stages = {}
    for name, body in spec.items():
        body = body or {}
        outputs = tuple(_output(e) for key in OUTPUT_KEYS for e in body.get(key) or [])
        deps = tuple(_path(d) for d in body.get("deps") or [])
        stages[str(name)] = Stage(str(name), str(body.get("cmd", "")), deps, outputs)
    return stages


def read_stages(path: str | Path = DVC_YAML) -> dict[str, Stage]:
    """The stages of the dvc.yaml at ``path``; none when there is no such file (a stage run by
    hand, outside a project)."""
    path = Path(path)
    if not path.is_file():
        return {}
    return parse_stages(path.read_text(encoding="utf-8"))


def parse_lock(text: str | None) -> dict[str, LockedStage]:
    """The stages dvc.lock ``text`` records, by name; none for no text (no dvc.lock yet)."""
    doc = (yaml.safe_load(text) if text else None) or {}
    stages = {}
    for name, body in (doc.get("stages") or {}).items():
        stages[str(name)] = LockedStage(
            deps={e["path"]: e.get("md5") for e in body.get("deps") or []},
            outs={e["path"]: e.get("md5") for e in body.get("outs") or []},
        )
    return stages


def read_lock(path: str | Path = DVC_LOCK) -> dict[str, LockedStage]:
    """The stages the dvc.lock at ``path`` records; none when it does not exist yet."""
    path = Path(path)
    return parse_lock(path.read_text(encoding="utf-8") if path.is_file() else None)


def data_hashes(lock: dict[str, LockedStage]) -> dict[str, str]:
    """The md5 dvc.lock recorded for every data and model file (deps and outs of every stage
    under data/ or models/), sorted by path."""
    found: dict[str, str] = {}
    for stage in lock.values():
        for path, md5 in (*stage.deps.items(), *stage.outs.items()):
            if path.startswith(DATA_PREFIXES) and md5 is not None:
                found[path] = md5
    return dict(sorted(found.items()))
