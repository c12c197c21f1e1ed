"""`mlcycle init`: set the project up for a user's own data file.

Reads the file exactly as the `gather` stage will, infers the task from the target (or takes
the one given), and writes a commented ``params.yaml`` and a draft ``schema.yaml`` for it.
Settings that do not depend on the data (validation, tuning, gate, monitoring) are kept from
the current ``params.yaml`` so a user's choices survive. Nothing is written unless everything
checks out, an existing ``params.yaml`` or ``schema.yaml`` is replaced only with ``force``, and
nothing else is ever removed: a data file outside ``data/external/`` is copied there (gather's
dvc.yaml deps track that folder), never moved.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mlcycle import config, schema
from mlcycle.config import ConfigError, Source
from mlcycle.prepare import MISSING_TOKENS
from mlcycle.sources import read_source
from mlcycle.tasks import (
    BINARY,
    DEFAULT_CANDIDATES,
    DEFAULT_KPIS,
    DEFAULT_PRIMARY,
    MODEL_TASKS,
    MULTICLASS,
    REGRESSION,
    TASKS,
)

DATA_DIR = Path("data/external")
# A numeric target with at most this many distinct integer values is taken as classes.
MAX_INTEGER_CLASSES = 20
# More classes than this is not a classification problem mlcycle should guess.
MAX_CLASSES = 100
# Labels that say "this is the positive class", by their negative partner.
POSITIVE_PAIRS = {"0": "1", "false": "true", "no": "yes", "n": "y", "negative": "positive"}
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
           ".json": "jsonl", ".ndjson": "jsonl"}  # fmt: skip
DEFAULT_TRAIN: dict[str, Any] = {
    "baseline": "xgboost",
    "seed": 42,
    "cv_folds": 4,
    "validation_fraction": 0.1,
    "class_weight": "none",
    "device": "cpu",
    "nthread": 2,
    "tuning": {"trials": 30, "trials_by_candidate": {}, "timeout": None},
    "xgb": {
        "n_estimators": 2000,
        "early_stopping_rounds": 50,
        "learning_rate": 0.05,
        "max_depth": 6,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
    },
    "models": {},
    "search": {},
}
RIDGE = {"models": {"alpha": 1.0}, "search": {"alpha": {"low": 0.001, "high": 100.0, "log": True}}}


class InitError(ValueError):
    """The data or the options do not allow a project to be set up; the message says why."""


@dataclass(frozen=True)
class Plan:
    """What init will write: the params document and the schema text."""

    params: dict[str, Any]
    params_text: str
    schema_text: str
    task: str
    positive_class: str | None
    data_path: str
    copied_from: Path | None


def source_format(path: Path) -> str:
    """The source format of a data file, from its name (``.gz`` allowed)."""
    name = path.name.lower().removesuffix(".gz")
    for suffix, fmt in FORMATS.items():
        if name.endswith(suffix):
            return fmt
    raise InitError(f"{path}: unknown file type; use .csv, .parquet or .jsonl (optionally .gz)")


def source_name(path: Path) -> str:
    """A source name from the file name: letters, digits and underscores."""
    stem = path.name.split(".")[0]
    return re.sub(r"[^A-Za-z0-9_]+", "_", stem).strip("_").lower() or "data"


def package_name(path: Path) -> str:
    """The registry name: the file stem in lowercase letters, digits and dashes, + "-model"."""
    stem = re.sub(r"[^a-z0-9]+", "-", path.name.split(".")[0].lower()).strip("-")
    return f"{stem or 'data'}-model"


def target_labels(values: pd.Series) -> pd.Series:
    """The target as the prepare stage will see it: stripped text, missing tokens dropped."""
    text = values.astype("string").str.strip()
    return text[text.notna() & ~text.isin(MISSING_TOKENS)]


def infer_task(values: pd.Series) -> str:
    """binary or multiclass classification for text, booleans and few distinct integers;
    regression for any other numbers."""
    present = values.dropna()
    numbers = pd.to_numeric(target_labels(values), errors="coerce")
    numeric = len(present) > 0 and numbers.notna().all() and not pd.api.types.is_bool_dtype(values)
    if numeric:
        integral = bool(np.all(np.mod(numbers.to_numpy(dtype=float), 1) == 0))
        if not (integral and numbers.nunique() <= MAX_INTEGER_CLASSES):
            return REGRESSION
    return BINARY if target_labels(values).nunique() <= 2 else MULTICLASS


def positive_class(labels: pd.Series) -> str:
    """The positive class of a two-class target: the positive-looking label of a known pair
    (1, true, yes, y, positive), else the rarer one (ties: the later in sorted order)."""
    classes = sorted(labels.unique())
    lower = {c.lower(): c for c in classes}
    for neg, pos in POSITIVE_PAIRS.items():
        if set(lower) == {neg, pos}:
            return lower[pos]
    counts = labels.value_counts()
    return min(classes, key=lambda c: (counts[c], [-ord(ch) for ch in c]))


def check_task(values: pd.Series, target: str, task: str) -> None:
    """Refuse a task that cannot work for this target, naming the column and what to do."""
    labels = target_labels(values)
    if labels.empty:
        raise InitError(f"target {target!r} has no values")
    if task == REGRESSION:
        numbers = pd.to_numeric(labels, errors="coerce")
        if numbers.isna().any():
            examples = sorted(set(labels[numbers.isna()]))[:5]
            raise InitError(
                f"target {target!r} holds text (e.g. {examples}); regression needs numbers. "
                "Use --task binary_classification or multiclass_classification, or another "
                "--target"
            )
        return
    counts = labels.value_counts()
    if len(counts) < 2:
        raise InitError(
            f"target {target!r} has a single class {list(counts.index)}; classification needs "
            "at least two"
        )
    if task == BINARY and len(counts) != 2:
        raise InitError(
            f"target {target!r} has {len(counts)} classes; binary_classification needs exactly "
            "two. Use --task multiclass_classification"
        )
    if len(counts) > MAX_CLASSES:
        raise InitError(
            f"target {target!r} has {len(counts)} distinct values: too many to learn as classes. "
            "Use --task regression if it is a quantity, or choose another --target"
        )
    rare = counts[counts < 2]
    if len(rare):
        raise InitError(
            f"target {target!r}: class(es) {rare.to_dict()} have a single row; the stratified "
            "split and cross-validation need at least two per class. Drop or merge them, or "
            "gather more rows"
        )


def no_skill(values: pd.Series, task: str) -> float:
    """The primary metric of a model that knows nothing: ROC AUC 0.5; the macro F1 of always
    predicting the most frequent class; the RMSE of predicting the mean."""
    labels = target_labels(values)
    if task == BINARY:
        return 0.5
    if task == REGRESSION:
        return round(float(pd.to_numeric(labels).std(ddof=0)), 6)
    share = labels.value_counts(normalize=True).iloc[0]
    # Macro F1 of a constant guess: the majority class's F1 over k classes, the others 0.
    return round(float(2 * share / (1 + share) / labels.nunique()), 6)


def _current(root: Path) -> dict[str, Any]:
    """The current params.yaml as plain data, or {} if it is absent or not valid YAML."""
    try:
        raw = config.load_yaml((root / config.PARAMS_FILE).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _train_section(current: dict[str, Any], task: str) -> dict[str, Any]:
    """The shipped/current train settings, with the candidates and model settings that fit
    ``task`` (and ridge's for regression)."""
    train = {**DEFAULT_TRAIN, **(current.get("train") or {})}
    fits = {k for k, tasks in MODEL_TASKS.items() if task in tasks}
    out = dict(train)
    out["candidates"] = list(DEFAULT_CANDIDATES[task])
    if out.get("baseline") not in fits:
        out["baseline"] = "xgboost"
    for key in ("models", "search"):
        kept = {k: v for k, v in (train.get(key) or {}).items() if k in fits}
        if task == REGRESSION:
            kept.setdefault("ridge", RIDGE[key])
        out[key] = kept
    tuning = dict(out.get("tuning") or {})
    tuning["trials_by_candidate"] = {
        k: v for k, v in (tuning.get("trials_by_candidate") or {}).items() if k in fits
    }
    out["tuning"] = tuning
    return out


def draft_params(
    root: Path, data_path: str, fmt: str, target: str, task: str, frame: pd.DataFrame, name: str
) -> dict[str, Any]:
    """The params document for this data (validated by :mod:`mlcycle.config` before use)."""
    current = _current(root)
    values = frame[target]
    positive = positive_class(target_labels(values)) if task == BINARY else None
    objectives: dict[str, Any] = {
        "task": task,
        "target": target,
        "positive_class": positive,
        "primary_metric": DEFAULT_PRIMARY[task],
        "minimum": no_skill(values, task),
        "kpis": list(DEFAULT_KPIS[task]),
        "minimums": {},
    }
    if task == BINARY:
        objectives["threshold"] = {"maximize": "accuracy", "cost_fp": 1.0, "cost_fn": 1.0}
    objectives.update(slices=[], slice_min_rows=100)
    prepare = dict(current.get("prepare") or {})
    outliers = dict(prepare.get("outliers") or {"method": "none"})
    outliers["columns"] = []
    return {
        "objectives": objectives,
        "gate": current.get("gate")
        or {"tolerance": 0.002, "fail_on_reject": True, "compare_champion": True},
        "data": {
            "columns": None,
            "sources": [
                {
                    "name": source_name(Path(data_path)),
                    "kind": "file",
                    "path": data_path,
                    "format": fmt,
                    "header": True,
                }
            ],
        },
        "validate": current.get("validate") or {"schema": "schema.yaml"},
        "prepare": {
            "drop_columns": [],
            "clean": prepare.get("clean")
            or {"drop_duplicates": True, "drop_conflicting_labels": True},
            "outliers": outliers,
            "split": {
                "method": "random" if task == REGRESSION else "stratified",
                "test_size": 0.2,
                "seed": 42,
            },
        },
        "features": {
            "derived": [],
            "include": [],
            "exclude": [],
            "selection": {"method": "none", "k": 0},
        },
        "train": _train_section(current, task),
        "evaluate": current.get("evaluate") or {"curve_points": 200},
        "monitor": current.get("monitor") or {"alpha": 0.01, "psi_threshold": 0.1, "bins": 10},
        "package": {"name": name},
    }


SECTION_NOTES = {
    "objectives": (
        "What the model is for. task: binary_classification | multiclass_classification |\n"
        "regression. positive_class: binary only (null otherwise). minimum: the bound the\n"
        "primary metric must reach on the test split (a maximum for lower-is-better metrics\n"
        "such as rmse and log_loss). `mlcycle init` set it to the no-skill baseline,\n"
        "{skill}: raise it to your real bar."
    ),
    "gate": "May a new model replace the production one? (tolerance on the primary metric)",
    "data": "The sources unioned into the snapshot; see the README's 'Data sources'.",
    "validate": "The schema (drafted by `mlcycle init`: review it) and each finding's severity.",
    "prepare": "Cleaning, outliers (training split only) and the split.",
    "features": "Derived features, include/exclude lists and automatic selection.",
    "train": (
        "Candidates tuned by cross-validation on the training split; the best by CV wins.\n"
        "`dvc exp run -S train.tuning.trials=60` for an experiment."
    ),
    "evaluate": "Points kept in the curve plots.",
    "monitor": "Drift checks of `mlcycle monitor`.",
    "package": "The model's name in the bundle and the registry (git tags).",
}


def params_text(params: dict[str, Any], skill: str) -> str:
    """The params document as commented YAML, one section at a time."""
    lines = [
        "# yaml-language-server: $schema=params.schema.json",
        "# Every knob of the pipeline, grouped by the stage that reads it; written by",
        "# `mlcycle init` for your data. `dvc repro` runs it; `dvc exp run -S key=value` varies",
        "# one setting for an experiment.",
        "",
    ]
    for section, value in params.items():
        note = SECTION_NOTES.get(section, "").format(skill=skill)
        lines += [f"# {line}" for line in note.splitlines()]
        body = yaml.safe_dump({section: value}, sort_keys=False, width=96, allow_unicode=True)
        lines += [body.rstrip("\n"), ""]
    return "\n".join(lines)


def plan(
    root: Path,
    data: Path,
    target: str,
    task: str | None = None,
    name: str | None = None,
) -> Plan:
    """Read ``data`` as gather will and decide everything init writes; raises
    :class:`InitError` (naming what is wrong) before anything is written."""
    root = root.resolve()
    data = Path(data)
    if not data.is_file():
        raise InitError(f"{data}: no such file")
    fmt = source_format(data)
    resolved = data.resolve()
    external = (root / DATA_DIR).resolve()
    copied_from = None
    if external in resolved.parents:
        rel = resolved.relative_to(root).as_posix()
    else:
        rel = (DATA_DIR / data.name).as_posix()
        copied_from = resolved
    source = Source(name=source_name(data), kind="file", path=str(resolved), format=fmt)
    try:
        frame = read_source(source, root).frame
    except ValueError as exc:
        raise InitError(f"{data}: cannot be read as {fmt}: {exc}") from exc
    if frame.empty:
        raise InitError(f"{data}: holds no rows")
    if target not in frame.columns:
        raise InitError(
            f"target {target!r} is not a column of {data.name}; columns are "
            f"{[str(c) for c in frame.columns if c not in schema.BOOKKEEPING_COLUMNS]}"
        )
    if task is not None and task not in TASKS:
        raise InitError(f"--task {task!r}; use one of {list(TASKS)}")
    task = task or infer_task(frame[target])
    check_task(frame[target], target, task)
    params = draft_params(root, rel, fmt, target, task, frame, name or package_name(data))
    try:
        config.parse_params(params)
    except ConfigError as exc:  # a bug here, or a current params.yaml we cannot carry over
        raise InitError(f"the params drafted for {data.name} do not validate: {exc}") from exc
    skill = {BINARY: "ROC AUC 0.5", MULTICLASS: "F1 of always guessing the majority class",
             REGRESSION: "RMSE of predicting the mean"}[task]  # fmt: skip
    draft = schema.infer_schema(frame, target, target_values=task != REGRESSION)
    schema_text = schema.dump_schema(
        draft, schema.DRAFT_HEADER.format(snapshot=rel), schema.observed_notes(frame, draft)
    )
    return Plan(
        params=params,
        params_text=params_text(params, skill),
        schema_text=schema_text,
        task=task,
        positive_class=params["objectives"]["positive_class"],
        data_path=rel,
        copied_from=copied_from,
    )


def write(root: Path, p: Plan, force: bool = False) -> list[str]:
    """Write the plan: refuses (changing nothing) to replace params.yaml or schema.yaml
    without ``force``; copies the data into data/external/ if needed. Returns what it did."""
    root = Path(root)
    schema_path = p.params["validate"].get("schema", "schema.yaml")
    targets = {root / config.PARAMS_FILE: p.params_text, root / schema_path: p.schema_text}
    existing = [str(path.relative_to(root)) for path in targets if path.exists()]
    if existing and not force:
        raise InitError(
            f"{existing} exist(s) and would be replaced; pass --force to overwrite (git keeps "
            "the old version)"
        )
    done = []
    if p.copied_from is not None:
        dest = root / p.data_path
        if dest.exists() and dest.read_bytes() != p.copied_from.read_bytes():
            raise InitError(f"{p.data_path} exists with other content; rename your file")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p.copied_from, dest)
        done.append(f"copied {p.copied_from} to {p.data_path} (the gather stage tracks it there)")
    for path, text in targets.items():
        path.write_text(text, encoding="utf-8")
        done.append(f"wrote {path.relative_to(root)}")
    return done
