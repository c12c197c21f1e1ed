"""Settings checked against the data before any work.

params.yaml is validated on its own when it is read (:mod:`mlcycle.config`), but the settings
that name columns or values (slices, the split's group or time column, outlier columns,
features, the positive class, train.cv_folds against the rows of each class ...) can only be
checked once the data is known. The ``validate``
stage runs :func:`settings_problems` on the snapshot, so a misspelt column stops the run in
seconds, with every problem at once and its key path, instead of after minutes of tuning.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import pandas as pd

from mlcycle import tasks
from mlcycle.config import DERIVED_OPS, Params
from mlcycle.prepare import PrepareError, check_target, clean_part
from mlcycle.schema import BOOKKEEPING_COLUMNS, NUMERIC_TYPES, Schema

SOURCE = BOOKKEEPING_COLUMNS[0]
ClassCounts = dict[tuple[str, str], int]  # rows per (source, class label)


def class_counts(part: pd.DataFrame, target: str) -> ClassCounts:
    """Rows per (source, class) of one partition of a snapshot, the labels as prepare makes
    them (:func:`mlcycle.prepare.clean_part`: stripped, missing tokens and rows without a
    target dropped); partitions' counts add up. Empty when ``target`` is not a column."""
    if target not in part.columns:
        return {}
    columns = [target, *([SOURCE] if SOURCE in part.columns else [])]
    labels, _ = clean_part(part[columns], [target], set(), target)
    origin = labels[SOURCE].astype(str) if SOURCE in labels.columns else ""
    pairs = pd.DataFrame({"source": origin, "label": labels[target].astype(str)})
    return {(str(s), str(c)): int(n) for (s, c), n in pairs.value_counts(sort=False).items()}


def fold_problems(params: Params, counts: Mapping[tuple[str, str], int]) -> list[str]:
    """train.cv_folds against the rows of each class the training split can have (``counts``:
    rows per source and class, :func:`class_counts` of the whole snapshot): the training
    sources' rows for a by_source split, else the snapshot's (an upper bound). A line like
    :func:`settings_problems`' for classes too rare for the folds."""
    split = params.prepare.split
    by_source = split.method == "by_source"
    per_class: Counter[str] = Counter()
    for (source, label), n in counts.items():
        if not by_source or source in split.train_sources:
            per_class[label] += n
    where = "rows per class in the " + ("training sources" if by_source else "snapshot")
    task = tasks.get(params.objectives.task)
    problem = task.fold_problem(per_class, params.train.cv_folds, where)
    return [f"train.cv_folds: {problem}"] if problem else []


def _numeric(frame: pd.DataFrame, schema: Schema | None, column: str) -> bool:
    """Whether ``column`` holds numbers: by its schema type, else by its values."""
    if schema is not None and column in schema.names:
        return schema.column(column).type in NUMERIC_TYPES
    values = frame[column].dropna()
    return pd.api.types.is_numeric_dtype(values) or bool(
        len(values) and pd.to_numeric(values.astype(str), errors="coerce").notna().all()
    )


def _shown(columns: list[str], limit: int = 30) -> str:
    head = ", ".join(columns[:limit])
    return head + (f", ... ({len(columns)} in all)" if len(columns) > limit else "")


def _target_problems(params: Params, frame: pd.DataFrame, schema: Schema | None) -> list[str]:
    """The task and positive class against the target: against the schema's ``values`` when
    it lists them (values outside them are the schema's own findings), else against the
    data's values."""
    obj = params.objectives
    spec = schema.column(obj.target) if schema is not None and obj.target in schema.names else None
    # A boolean target's values are listed as validate reads them (true/false), its classes
    # as prepare spells them (True/False, as positive_class reads them): those from the data.
    if spec is not None and spec.values is not None and spec.type != "boolean":
        labels = pd.Series(list(spec.values), dtype=object)
    elif not tasks.get(obj.task).classification and spec is not None and spec.type in NUMERIC_TYPES:
        return []  # values that are not numbers are the schema's type findings
    else:
        labels = frame[obj.target].dropna()
        if not pd.api.types.is_numeric_dtype(labels):
            labels = labels.astype(str).str.strip()
    try:
        check_target(labels, obj)
    except PrepareError as exc:
        key = "objectives.positive_class" if "positive_class" in str(exc) else "objectives.task"
        text = str(exc)
        return [text if text.startswith(key) else f"{key}: {text}"]
    return []


def settings_problems(
    params: Params, frame: pd.DataFrame, schema: Schema | None = None
) -> list[str]:
    """Every setting that does not fit the data's columns and values, one line each, starting
    with its key path. ``schema`` (when given) says which columns are numeric."""
    columns = [str(c) for c in frame.columns if c not in BOOKKEEPING_COLUMNS]
    known = set(columns)
    listing = f"the data's columns are {_shown(columns)}"
    problems: list[str] = []

    def need(key: str, names: tuple[str, ...] | list[str], numeric: bool = False) -> None:
        unknown = [n for n in names if n not in known]
        if unknown:
            problems.append(f"{key}: {unknown} not a column of the data; {listing}")
        if numeric:
            text = [n for n in names if n in known and not _numeric(frame, schema, n)]
            if text:
                problems.append(f"{key}: {text} not numeric; these settings need numbers")

    obj = params.objectives
    if obj.target not in known:
        problems.append(f"objectives.target: {obj.target!r} is not a column of the data; {listing}")
    else:
        problems += _target_problems(params, frame, schema)
    need("objectives.slices", list(obj.slices))
    if obj.target in obj.slices:
        problems.append(f"objectives.slices: the target {obj.target!r} cannot be a slice")

    prep = params.prepare
    need("prepare.drop_columns", list(prep.drop_columns))
    if obj.target in prep.drop_columns:
        problems.append(f"prepare.drop_columns: must not drop the target {obj.target!r}")
    need("prepare.outliers.columns", list(prep.outliers.columns), numeric=True)
    split = prep.split
    if split.method == "group" and split.group_column:
        need("prepare.split.group_column", [split.group_column])
    if split.method == "time" and split.time_column:
        need("prepare.split.time_column", [split.time_column])
    if split.method == "by_source" and SOURCE in frame.columns:
        present = sorted(frame[SOURCE].dropna().astype(str).unique())
        by_source = (("train_sources", split.train_sources), ("test_sources", split.test_sources))
        # A source that may be empty (a landing folder before its first file, such as the
        # production rows `mlcycle retrain` exports) may have no rows yet.
        may_be_empty = {s.name for s in params.data.sources if s.allow_empty}
        for key, names in by_source:
            unknown = [n for n in names if n not in present and n not in may_be_empty]
            if unknown:
                problems.append(
                    f"prepare.split.{key}: {unknown} not a source with rows in the snapshot "
                    f"(its sources are {present})"
                )

    feats = params.features
    inputs = [c for c in columns if c != obj.target and c not in prep.drop_columns]
    for key, names in (("include", feats.include), ("exclude", feats.exclude)):
        unknown = [n for n in names if n not in inputs]
        if unknown:
            problems.append(
                f"features.{key}: {unknown} not input columns; inputs are {_shown(inputs)}"
            )
    made: set[str] = set()
    for i, step in enumerate(feats.derived):
        name = step.get("name")
        cols = step.get("columns") or ([step["column"]] if "column" in step else [])
        key = f"features.derived[{i}]"
        if step.get("op") not in DERIVED_OPS:
            continue  # config already refuses it
        unknown = [c for c in cols if c not in inputs and c not in made]
        if unknown:
            problems.append(
                f"{key} ({name}): {unknown} neither an input column nor an earlier derived "
                f"feature; inputs are {_shown(inputs)}"
            )
        text = [c for c in cols if c in inputs and not _numeric(frame, schema, c)]
        if text:
            problems.append(f"{key} ({name}): {text} not numeric; derived features need numbers")
        if name in known:
            problems.append(f"{key}: {name!r} is already a column of the data")
        made.add(str(name))
    return problems
