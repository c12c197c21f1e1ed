"""Load ``params.yaml`` into typed, validated, frozen settings.

This is the one module that knows the layout of the file. One frozen pydantic model per
section (:class:`Objectives`, :class:`DataConfig`, ... and :class:`Params` for the whole file)
declares every key, its type, its default, its description and its checks, and is what the
stages read. :func:`load` validates the whole file at once, :func:`section` one section; the
defaults that depend on another key (a task's metrics and candidates, the columns of a source
without a header line) are filled in by validation. A mistake is reported as a
:class:`ConfigError` naming each bad key by its path (``data.sources[1].kind``), what was
expected and what was found, every problem at once, one per line.

The same models give the JSON Schema of the file (:func:`json_schema`) for editors, committed
as ``params.schema.json`` (``python -m mlcycle.config > params.schema.json``), the params
reference (:mod:`mlcycle.paramsdoc`) and the comments of the params.yaml `mlcycle init`
writes (:func:`descriptions`). The file is parsed as DVC parses it: ruamel.yaml, YAML 1.2.
"""

from __future__ import annotations

import json
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML, YAMLError

from mlcycle import tasks

PARAMS_FILE = "params.yaml"
TASKS = tasks.TASKS
# Every metric some task reports (mlcycle.metrics computes them; a test keeps the two equal).
# Named in mlcycle.tasks so that loading params.yaml does not import scikit-learn.
KPI_NAMES = tasks.ALL_KPI_NAMES
CANDIDATES = tasks.MODEL_KINDS

SOURCE_KINDS = ("file", "database", "http", "landing")
SOURCE_FORMATS = ("csv", "parquet", "jsonl")
SPLIT_METHODS = ("by_source", "random", "stratified", "group", "time")
OUTLIER_METHODS = ("none", "iqr", "zscore", "isolation_forest")
SELECTION_METHODS = ("none", "mutual_info")
CLASS_WEIGHTS = ("none", "balanced")
DEVICES = ("cpu", "cuda")
# Derived-feature operations and the keys each needs besides `name` and `op`.
DERIVED_OPS = {
    "sum": "columns", "difference": "columns", "product": "columns", "ratio": "columns",
    "log1p": "column", "sqrt": "column", "bin": "column",
}  # fmt: skip
FINDING_KINDS = (
    "missing_column", "extra_column", "type", "null_rate", "unseen_category",
    "out_of_range", "duplicate_rows", "target_values",
)  # fmt: skip
SEVERITIES = ("error", "warning", "ignore")
# How serious each kind of finding is unless validate.severity says otherwise.
DEFAULT_SEVERITY = {k: "error" for k in FINDING_KINDS} | {
    "extra_column": "warning", "unseen_category": "warning", "duplicate_rows": "warning",
}  # fmt: skip
XGB_KEYS = {
    "n_estimators",
    "early_stopping_rounds",
    "learning_rate",
    "max_depth",
    "min_child_weight",
    "subsample",
    "colsample_bytree",
    "reg_lambda",
    "reg_alpha",
    "gamma",
    "max_cat_to_onehot",
    "max_bin",
    "scale_pos_weight",
    "tree_method",
}
# A model's registry name (GTO's rule, which `dvc artifacts` applies too).
PACKAGE_NAME = r"[a-zA-Z0-9]([a-zA-Z0-9/_-]*[a-zA-Z0-9])?"
ENGINE_KINDS = ("local", "dask")
SCHEDULER = r"(tcp|tls|ws|wss|inproc|ucx)://\S+"
MEMORY = r"auto|0|[0-9]+(\.[0-9]+)?\s*([kKMGT]i?B|[kKMGT]|B)?"


class ConfigError(ValueError):
    """A value in params.yaml is missing or invalid; the message names the key.

    ``problems`` holds one line per problem (each also a line of the message).
    """

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems or (message,)


# --- checks and types --------------------------------------------------------------------------
#
# Validators report a problem by raising _Invalid with (sub-path, message) pairs: the sub-path
# extends the location pydantic is at, and the message either holds the placeholder "{at}"
# for the quoted key path or is put after it.


class _Invalid(ValueError):
    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]]) -> None:
        super().__init__("; ".join(message for _, message in problems))
        self.problems = problems


def _fail(message: str, *at: str | int) -> typing.NoReturn:
    raise _Invalid([(at, message)])


def _raise_all(problems: list[tuple[tuple[str | int, ...], str]]) -> None:
    if problems:
        raise _Invalid(problems)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(f"should be a number, got {_show(value)}")
    return value


def _scalar_text(value: Any) -> Any:
    """A YAML scalar (``?``, ``-1``, ``yes``) as the text a data file would hold."""
    return str(value) if isinstance(value, bool | int | float) else value


def _fraction(value: float) -> float:
    if not 0.0 < value < 1.0:
        _fail(f"must be between 0 and 1 (exclusive), got {value}")
    return value


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


T = TypeVar("T")
# A YAML list, held as a tuple: settings are frozen.
Items = Annotated[tuple[T, ...], BeforeValidator(_as_tuple)]
# Column names if any are given (an empty list is none: None).
Names = Annotated[Items[str] | None, AfterValidator(lambda names: names or None)]
# A number kept as written (an int stays an int: a search range of two ints is searched as
# integers).
Number = Annotated[Any, PlainValidator(_number), WithJsonSchema({"type": "number"})]
Fraction = Annotated[
    float,
    AfterValidator(_fraction),
    WithJsonSchema({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}),
]
# Text that may be written as a YAML number or boolean (turned into its text).
ScalarText = Annotated[
    str, BeforeValidator(_scalar_text), WithJsonSchema({"type": ["string", "number", "boolean"]})
]
Label = Annotated[
    str, BeforeValidator(_scalar_text), WithJsonSchema({"type": ["string", "integer", "boolean"]})
]
NonNegativeInt = Annotated[int, Field(ge=0)]
Task = Literal[tasks.TASKS]
ModelKind = Literal[tasks.MODEL_KINDS]
Metric = Annotated[str, WithJsonSchema({"type": "string", "enum": list(KPI_NAMES)})]


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, use_attribute_docstrings=True
    )

    @model_validator(mode="before")
    @classmethod
    def _null_is_empty(cls, data: Any) -> Any:
        """A list or mapping key written with nothing under it (``minimums:`` whose entries
        are all commented out) is YAML null: it means empty, its default."""
        if not isinstance(data, dict):
            return data
        empty = {f.alias or n for n, f in cls.model_fields.items() if f.default in ([], {}, ())}
        return {k: v for k, v in data.items() if not (v is None and k in empty)}


def _context(info: ValidationInfo, key: str) -> Any:
    return (info.context or {}).get(key)


def _metric_problem(names: list[str], task: str | None) -> str | None:
    """Why ``names`` are no metrics of ``task`` (of any task if None); None if they all are."""
    known = tasks.KPI_NAMES[task] if task else KPI_NAMES
    bad = [name for name in names if name not in known]
    if not bad:
        return None
    verb = "is" if len(bad) == 1 else "are"
    if task is None:
        return f"{verb} not a known metric; known metrics: {list(known)}"
    others = tasks.task_of_kpi(bad[0]) if len(bad) == 1 else ()
    hint = f" (it is a {' and '.join(others)} metric)" if others else ""
    what = "a metric" if len(bad) == 1 else "metrics"
    return f"{verb} not {what} of {task}{hint}; {task} metrics: {list(known)}"


# --- the sections --------------------------------------------------------------------------------


class Threshold(_Section):
    """How the decision threshold is chosen (binary classification only), on out-of-fold
    training predictions: maximise a metric, or else minimise the cost of errors."""

    maximize: Metric | None = None
    """A metric to maximise; null: minimise the cost below. The cost is cost_fp * false positives +
    cost_fn * false negatives."""
    cost_fp: float = Field(1.0, ge=0)
    """Cost of a false positive."""
    cost_fn: float = Field(1.0, ge=0)
    """Cost of a false negative."""

    @model_validator(mode="after")
    def _costs(self) -> Threshold:
        if self.cost_fp + self.cost_fn == 0:
            _fail("costs cost_fp and cost_fn must not both be 0")
        return self


class Objectives(_Section):
    """What the model is for, and the bar it must clear."""

    task: Task
    """binary_classification, multiclass_classification or regression."""
    target: str
    """The column to predict."""
    positive_class: Label | None = Field(None, validate_default=True)
    """The label counted as positive (binary_classification only). Required for
    binary_classification, absent (or null) otherwise."""
    primary_metric: Metric | None = None
    """The metric that decides (model choice, gate). Default per task: roc_auc, f1_macro, rmse."""
    minimum: float
    """The value primary_metric must reach on the test split. A maximum if lower is better
    (log_loss, rmse ...)."""
    kpis: Items[Metric] | None = None
    """Metrics also reported (default: the task's usual set)."""
    minimums: dict[str, float] = {}
    """Bounds for other KPIs the gate checks, e.g. {mae: 40.0}. A bound on a lower-is-better metric
    is a maximum."""
    threshold: Threshold | None = None
    """The decision threshold (binary_classification only)."""
    slices: Items[str] = ()
    """Columns whose values get KPIs of their own, and the gap best-worst."""
    slice_min_rows: int = Field(100, ge=2)
    """Smaller slices get only their size: their KPIs would be noise."""

    @field_validator("positive_class")
    @classmethod
    def _positive_class(cls, value: str | None, info: ValidationInfo) -> str | None:
        task = info.data.get("task")
        kind = tasks.TASK.get(task)
        if kind is None:
            return value
        if kind.has_positive_class and value is None:
            _fail("is missing: binary_classification needs the label counted as positive")
        if not kind.has_positive_class and value is not None:
            _fail(
                f"applies only to binary_classification; remove it (or set it to null) for {task}"
            )
        return value

    @field_validator("primary_metric")
    @classmethod
    def _primary(cls, value: str | None, info: ValidationInfo) -> str | None:
        problem = value and _metric_problem([value], info.data.get("task"))
        if problem:
            _fail(f"is {value!r}, which {problem}")
        return value

    @field_validator("kpis")
    @classmethod
    def _kpis(cls, value: tuple[str, ...] | None, info: ValidationInfo) -> Any:
        task = info.data.get("task")
        bad = [(i, name) for i, name in enumerate(value or ()) if _metric_problem([name], task)]
        if len(bad) == 1:
            i, name = bad[0]
            _fail(f"is {name!r}, which {_metric_problem([name], task)}", i)
        if bad:
            names = ", ".join(repr(name) for _, name in bad)
            where = ", ".join(f"[{i}]" for i, _ in bad)
            problem = _metric_problem([name for _, name in bad], task)
            _fail(f"lists {names} (items {where}), which {problem}")
        return value

    @field_validator("minimums")
    @classmethod
    def _minimums(cls, value: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        task = info.data.get("task")
        bad = [name for name in value if _metric_problem([name], task)]
        if len(bad) == 1:
            _fail(f"names {bad[0]!r}, which {_metric_problem(bad, task)}", bad[0])
        if bad:
            _fail(f"names {', '.join(map(repr, bad))}, which {_metric_problem(bad, task)}")
        return value

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, value: Threshold | None, info: ValidationInfo) -> Any:
        task = info.data.get("task")
        if value is None:
            return value
        if task in tasks.TASK and not tasks.TASK[task].thresholded and value.model_fields_set:
            _fail(
                "applies only to binary_classification (a threshold on the positive class's "
                f"probability); remove it for {task}"
            )
        problem = value.maximize and _metric_problem([value.maximize], task)
        if problem:
            _fail(f"is {value.maximize!r}, which {problem}", "maximize")
        return value

    @model_validator(mode="after")
    def _task_defaults(self) -> Objectives:
        """Fill in what the file leaves to the task: the primary metric, the KPIs (with the
        primary metric and every bounded metric among them) and the primary metric's bound
        among ``minimums``."""
        primary = self.primary_metric or tasks.DEFAULT_PRIMARY[self.task]
        kpis = self.kpis if self.kpis is not None else tasks.DEFAULT_KPIS[self.task]
        if primary not in kpis:
            kpis = (primary, *kpis)
        minimums = {primary: self.minimum} | self.minimums
        object.__setattr__(self, "primary_metric", primary)  # frozen: set once, here
        object.__setattr__(self, "minimums", minimums)
        object.__setattr__(self, "kpis", tuple(dict.fromkeys((*kpis, *minimums))))
        return self

    @property
    def threshold_metric(self) -> str | None:
        """The metric the threshold maximises; None: it minimises the cost of errors."""
        return self.threshold.maximize if self.threshold else None

    @property
    def cost_fp(self) -> float:
        return (self.threshold or Threshold()).cost_fp

    @property
    def cost_fn(self) -> float:
        return (self.threshold or Threshold()).cost_fn


class Source(_Section):
    """One source of the snapshot: kind file (path), database (url or url_env, and table or
    query), http (url and sha256) or landing (a folder devices drop files into; malformed
    files are quarantined under data/quarantine/<name>/)."""

    name: str
    """Its name in the snapshot's source column; by_source splits name it."""
    kind: Literal[SOURCE_KINDS] = "file"
    """file, database, http or landing."""
    path: str | None = None
    """file: a path or glob; landing: a folder."""
    format: Literal[SOURCE_FORMATS] = "csv"
    """csv, parquet or jsonl (optionally gzipped)."""
    header: bool = True
    """Whether a CSV file's first line names the columns."""
    delimiter: str = Field(",", min_length=1, max_length=1)
    """The character between a CSV file's fields (',', ';', '|', a tab)."""
    skip_rows: int = Field(0, ge=0)
    """Lines to skip at the start of the file."""
    na_values: Items[ScalarText] = ()
    """Cell values read as missing."""
    sha256: str | None = Field(None, json_schema_extra={"pattern": "^[0-9a-fA-F]{64}$"})
    """Expected SHA-256 of the content, which pins it (required for http)."""
    columns: Names = None
    """Column names of a file without a header line (default: data.columns)."""
    value_map: dict[
        Annotated[str, BeforeValidator(_scalar_text)], dict[ScalarText, ScalarText | None]
    ] = {}
    """Per column, values to replace: {column: {old: new}}; new null means missing. Keys and
    values are read as the column's type: in a numeric column "6" and 6.0 both match 6. An
    entry that matches nothing is a warning of gather; one that cannot be of the column's
    type is an error."""
    url: str | None = None
    """database: a SQLAlchemy URL without credentials; http: the URL to download."""
    url_env: str | None = None
    """The environment variable that holds the URL (with credentials)."""
    table: str | None = None
    """database: the table to read."""
    query: str | None = None
    """database: the SQL query to run."""
    timeout: float = Field(30.0, gt=0)
    """Seconds before a download or a connection gives up."""
    retries: int = Field(3, ge=0)
    """Further attempts after a failed download or connection."""
    allow_empty: bool = False
    """The source may hold no rows (a landing folder between uploads). Otherwise an empty or
    header-only source is an error."""
    # Not a setting: the columns gather reads as text whatever they look like (the schema's
    # category and string columns), so "02134" keeps its leading zero.
    _text_columns: tuple[str, ...] = PrivateAttr(())

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str) -> str:
        if value in ('"', "\r", "\n") or value.isalnum():
            _fail(f"is {value!r}; a delimiter is a punctuation character or a tab, such as ';'")
        return value

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            _fail("must be 64 hex digits")
        return value.lower() if value else value

    @model_validator(mode="after")
    def _needs(self) -> Source:
        """Each kind of source needs its own keys; credentials never sit in params.yaml."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.kind in ("file", "landing") and not self.path:
            problems.append(((), f"({self.kind}) needs 'path'"))
        if self.kind == "database":
            if bool(self.url) == bool(self.url_env):
                problems.append(((), "(database) needs one of 'url' or 'url_env'"))
            if bool(self.table) == bool(self.query):
                problems.append(((), "(database) needs one of 'table' or 'query'"))
        if self.kind == "http":
            if not (self.url or self.url_env):
                problems.append(((), "(http) needs 'url'"))
            if not self.sha256:
                problems.append(((), "(http) needs 'sha256': a download is pinned by its digest"))
        if self.url and "@" in self.url.split("://", 1)[-1].split("/", 1)[0]:
            problems.append(
                (
                    ("url",),
                    "holds credentials; put the whole URL in an environment variable and name "
                    "it in 'url_env' instead",
                )
            )
        _raise_all(problems)
        return self

    @property
    def text_columns(self) -> tuple[str, ...]:
        """The columns read as text whatever they hold (see :meth:`with_text_columns`)."""
        return self._text_columns

    def with_text_columns(self, columns: tuple[str, ...]) -> Source:
        """This source, reading ``columns`` as text (the schema's category and string columns,
        so "02134" keeps its leading zero): what gather knows, not a setting."""
        copy = self.model_copy()
        copy._text_columns = tuple(columns)
        return copy


class DataConfig(_Section):
    """Where the data comes from: sources unioned into one snapshot. See docs/data-sources.md."""

    columns: Names = None
    """Column names for sources whose files have no header line."""
    sources: Items[Source]
    """The sources, unioned into one snapshot: at least one, names unique."""

    @field_validator("sources")
    @classmethod
    def _sources(cls, value: tuple[Source, ...], info: ValidationInfo) -> tuple[Source, ...]:
        """Names are unique; a CSV file without a header line gets data.columns."""
        if not value:
            _fail("is empty; declare at least one source")
        problems: list[tuple[tuple[str | int, ...], str]] = []
        first: dict[str, int] = {}
        for i, src in enumerate(value):
            if src.name in first:
                problems.append(
                    (
                        (i, "name"),
                        f"is {src.name!r}: source name {src.name!r} is used twice "
                        f"(also data.sources[{first[src.name]}])",
                    )
                )
            first.setdefault(src.name, i)
            if (
                "columns" in info.data
                and src.format == "csv"
                and not src.header
                and not (src.columns or info.data["columns"])
            ):
                problems.append(((i,), "has no header line; give 'columns' or 'data.columns'"))
        _raise_all(problems)
        columns = info.data.get("columns")
        return tuple(
            s.model_copy(update={"columns": columns}) if s.columns is None and not s.header else s
            for s in value
        )


class ValidateConfig(_Section):
    """The data gate before prepare. Where the schema is, and how serious each kind of finding
    is."""

    schema_: str = Field("schema.yaml", alias="schema")
    """Types, ranges, categories: drafted by `mlcycle init`; review it. `mlcycle schema infer`
    drafts one from a snapshot."""
    max_null_rate: float = Field(0.5, ge=0, le=1)
    """For columns whose schema entry gives none. Like every share limit, it holds for the
    snapshot and for each source on its own rows."""
    max_unseen_share: float = Field(0.01, ge=0, le=1)
    """Unseen categories in more than this share of a column's rows (of the snapshot, or of one
    source) are an error. This holds whatever validate.severity.unseen_category says: a few new
    values are news, many are a break."""
    examples: int = Field(5, ge=0)
    """Example values shown per finding."""
    severity: dict[Literal[FINDING_KINDS], Literal[SEVERITIES]] = Field({}, validate_default=True)
    """Per kind of finding: error stops `dvc repro`, warning is reported, ignore is not. The
    package stage puts them in the bundle: the service and `mlcycle predict` refuse a record
    breaking a per-row rule (type, null_rate where nullable is false, out_of_range,
    unseen_category) whose severity is error, and warn of one of warning."""

    @field_validator("severity")
    @classmethod
    def _severity(cls, value: dict[str, str]) -> dict[str, str]:
        return DEFAULT_SEVERITY | value

    @property
    def schema(self) -> str:  # type: ignore[override]  # BaseModel.schema is deprecated
        """The schema file's path (``validate.schema``)."""
        return self.schema_


class CleanConfig(_Section):
    """Row removals, applied to the training split only."""

    drop_duplicates: bool = True
    """Exact duplicates, and training rows that repeat a test row."""
    drop_conflicting_labels: bool = True
    """Feature vectors seen with different labels."""


class OutliersConfig(_Section):
    """Outlier and noise removal, on the training split only. The test split is never filtered."""

    method: Literal[OUTLIER_METHODS] = "none"
    """none, iqr, zscore or isolation_forest."""
    columns: Items[str] = ()
    """Numeric columns to check (empty: all numeric)."""
    iqr_k: float = Field(3.0, gt=0)
    """iqr: rows beyond k interquartile ranges from the quartiles."""
    zscore: float = Field(4.0, gt=0)
    """zscore: rows beyond this many standard deviations."""
    contamination: float = Field(0.01, gt=0, le=0.5)
    """isolation_forest: the share of rows expected to be outliers."""
    seed: int = 42
    """isolation_forest's seed."""


class SplitConfig(_Section):
    """How rows are split into training and test."""

    method: Literal[SPLIT_METHODS]
    """by_source, random, stratified (classification: class shares kept), group or time."""
    train_sources: Items[str] = ()
    """by_source: the sources that make the training split."""
    test_sources: Items[str] = ()
    """by_source: the sources that make the test split."""
    test_size: Fraction = 0.25
    """random, stratified, group and time: the test split's share of rows."""
    seed: int = 42
    """The split's seed: the same seed, the same split."""
    group_column: str | None = None
    """group: rows sharing a value stay on one side."""
    time_column: str | None = None
    """time: the latest rows become the test split."""

    @model_validator(mode="after")
    def _method_needs(self, info: ValidationInfo) -> SplitConfig:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.method == "group" and not self.group_column:
            problems.append(((), "method group needs 'group_column'"))
        if self.method == "time" and not self.time_column:
            problems.append(((), "method time needs 'time_column'"))
        task = tasks.TASK.get(_context(info, "task"))
        if self.method == "stratified" and task and not task.classification:
            problems.append(
                (
                    ("method",),
                    "is 'stratified', which keeps class proportions and applies only to "
                    "classification; for regression use 'random'",
                )
            )
        if self.method == "by_source":
            if not self.train_sources or not self.test_sources:
                problems.append(((), "by_source needs train_sources and test_sources"))
            both = sorted(set(self.train_sources) & set(self.test_sources))
            if both:
                problems.append(((), f"lists source(s) {both} both for training and testing"))
            known = _context(info, "sources")
            if known:  # none: data.sources has its own problem, or was not given
                for side in ("train_sources", "test_sources"):
                    for i, name in enumerate(getattr(self, side)):
                        if name not in known:
                            problems.append(
                                (
                                    (side, i),
                                    f"names source {name!r}, which is not in data.sources "
                                    f"{sorted(set(known))}",
                                )
                            )
        _raise_all(problems)
        return self


class PrepareConfig(_Section):
    """Cleaning, outliers and the split into training and test."""

    drop_columns: Items[str] = ()
    """Columns never used as features."""
    clean: CleanConfig = CleanConfig()
    outliers: OutliersConfig = OutliersConfig()
    split: SplitConfig


class DerivedStep(_Section):
    """A numeric feature computed from columns: sum, difference, product, ratio (of
    'columns') or log1p, sqrt, bin (of one 'column'; bin needs increasing 'edges')."""

    name: str
    """The new feature's name."""
    op: Literal[tuple(DERIVED_OPS)]
    """sum, difference, product, ratio, log1p, sqrt or bin."""
    columns: list[str] | None = None
    """sum, difference, product, ratio: the columns (difference and ratio: exactly two)."""
    column: str | None = None
    """log1p, sqrt, bin: the column."""
    edges: list[Number] | None = None
    """bin: increasing bin edges."""

    @model_validator(mode="after")
    def _op_needs(self) -> DerivedStep:
        op = self.op
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if DERIVED_OPS[op] == "columns":
            if self.column is not None:
                problems.append((("column",), f"does not apply to {op}; give 'columns' (a list)"))
            if self.columns is None:
                problems.append((("columns",), f"is missing: {op} needs 'columns'"))
            elif op in ("difference", "ratio") and len(self.columns) != 2:
                problems.append(
                    (("columns",), f"needs two columns for {op}, got {len(self.columns)}")
                )
            elif len(self.columns) < 2:
                problems.append((("columns",), f"needs at least two columns for {op}"))
        else:
            if self.columns is not None:
                problems.append((("columns",), f"does not apply to {op}; give one 'column'"))
            if self.column is None:
                problems.append((("column",), f"is missing: {op} needs 'column'"))
        if op == "bin":
            if self.edges is None:
                problems.append((("edges",), "is missing: bin needs 'edges'"))
            elif not self.edges or sorted(self.edges) != self.edges:
                problems.append((("edges",), "must be increasing numbers"))
        elif self.edges is not None:
            problems.append((("edges",), "applies only to op bin"))
        _raise_all(problems)
        return self


# A derived step, held as the mapping the feature code reads (keys not given left out).
Step = Annotated[
    DerivedStep,
    AfterValidator(lambda step: step.model_dump(exclude_none=True)),
    PlainSerializer(dict),
]


class Selection(_Section):
    """Feature selection, fitted on the training split only."""

    method: Literal[SELECTION_METHODS] = "none"
    """none or mutual_info (fitted on the training split only)."""
    k: int = Field(0, ge=0)
    """mutual_info: the number of features to keep (at least 1)."""

    @model_validator(mode="after")
    def _k(self) -> Selection:
        if self.method == "mutual_info" and self.k < 1:
            _fail("must be at least 1 with method mutual_info", "k")
        return self


class FeaturesConfig(_Section):
    """Feature engineering and selection. The same code applies them in training, batch scoring and
    the service."""

    derived: Items[Step] = ()
    """Features computed from others, e.g. {name: net, op: difference, columns: [gain, loss]}. In
    order: a step may read earlier ones."""
    include: Items[str] = ()
    """If set, only these input columns (and derived ones) are used."""
    exclude: Items[str] = ()
    """Inputs not used as features (identifiers, leaks of the target). Derived steps may still read
    them."""
    selection: Selection = Selection()

    @property
    def selection_method(self) -> str:
        return self.selection.method

    @property
    def selection_k(self) -> int:
        return self.selection.k


class SearchRange(_Section):
    """A searched parameter: {low, high[, log]} (integers if both bounds are) or
    {choices: [...]}."""

    low: Number | None = None
    """The lowest value tried."""
    high: Number | None = None
    """The highest value tried (greater than low)."""
    log: bool = False
    """Search on a log scale (needs low > 0)."""
    choices: list[Any] | None = None
    """The values tried, instead of a range."""

    @model_validator(mode="after")
    def _range(self) -> SearchRange:
        shape = "must be {low, high[, log]} with low < high, or {choices: [...]}"
        if self.choices is not None:
            if {"low", "high", "log"} & self.model_fields_set:
                _fail(f"gives both choices and a range; it {shape}")
            if not self.choices:
                _fail("is empty", "choices")
        elif self.low is None or self.high is None or not self.low < self.high:
            _fail(shape)
        elif self.log and self.low <= 0:
            _fail(f"must be greater than 0 with log: true, got {self.low}", "low")
        return self


# A search range, held as the mapping it was written as: the tuner reads the keys given.
Range = Annotated[
    SearchRange, AfterValidator(lambda r: r.model_dump(exclude_unset=True)), PlainSerializer(dict)
]


class Tuning(_Section):
    """An Optuna (TPE) search per candidate: its budget and when it stops."""

    trials: int = Field(0, ge=0)
    """Trials per candidate after trial 0 (the fixed params); 0: no search."""
    timeout: float | None = Field(None, gt=0)
    """Seconds per candidate, from its trial 0's start; null: none. Trial 0 always runs whole;
    after it no trial or fold starts past the deadline, and running ones stop at their next
    boosting round, not counted. A time budget makes the results depend on the machine."""
    trials_by_candidate: dict[ModelKind, NonNegativeInt] = {}
    """A budget of their own for some model kinds."""
    pruner: Literal["none", "median"] = "median"
    """median: stop trials behind after a fold; none: every fold runs. A trial is stopped between
    folds when its running CV mean is worse than the median of the earlier trials' at the same
    fold; a stopped trial is listed in trials.csv (pruned_after) and never wins."""
    pruner_startup: NonNegativeInt = 5
    """median: trials (trial 0 included) that run every fold before any trial is stopped."""
    pruner_warmup: NonNegativeInt = 0
    """median: folds a trial always runs before it can be stopped after the next one."""
    patience: NonNegativeInt = 10
    """Stop a candidate's search after this many trials without a new best; 0: never. It counts
    trials in a row, not seconds: reproducible."""
    select: Literal["one_se", "best"] = "one_se"
    """Which trial a candidate keeps. one_se: trial 0 (untuned) if its CV mean is within one
    standard error of the best trial's, else the simplest trial within it (XGBoost: fewest
    rounds x max_depth); best: the best CV mean. A lead inside the CV noise is not kept."""


class TrainConfig(_Section):
    """Candidates tuned by cross-validation on the training split only. The best CV score of
    primary_metric wins and is refit on the whole split."""

    candidates: Items[ModelKind] | None = Field(None, validate_default=True)
    """Model kinds cross-validated and tuned; the best wins. Default per task."""
    baseline: ModelKind | None = None
    """A kind also refit untuned, scored beside the winner; null: none."""
    seed: int = 42
    """Folds, sampler, inner validation slices and models."""
    cv_folds: int = Field(5, ge=2)
    """Folds of the training split."""
    validation_fraction: Fraction = 0.1
    """XGBoost: slice of each fold's training part for early stopping."""
    class_weight: Literal[CLASS_WEIGHTS] = "none"
    """none or balanced (classification): trial 0's; an imbalanced split's search tries both."""
    device: Literal[DEVICES] = "cpu"
    """XGBoost: cpu or cuda."""
    nthread: int = Field(0, ge=0)
    """XGBoost threads, scikit-learn n_jobs (0: all cores)."""
    parallel_folds: int = Field(2, ge=1)
    """Folds fitted side by side in threads sharing nthread; same scores. Each fit gets nthread /
    parallel_folds threads (at least 1) and pruning is the same as one at a time; small data
    gains most, as one fit uses threads poorly."""
    tuning: Tuning = Tuning()
    xgb: dict[str, Any] = Field({}, json_schema_extra={"propertyNames": {"enum": sorted(XGB_KEYS)}})
    """XGBoost's fixed params: trial 0, and the base of every trial."""
    models: dict[ModelKind, dict[str, Any]] = {}
    """Other model kinds' fixed params (scikit-learn names), per kind."""
    search: dict[ModelKind, dict[str, Range]] = {}
    """Per kind: {param: {low, high[, log]}} or {param: {choices: [...]}}. `mlcycle init` writes
    ranges derived from the data's rows, width, classes and task; train searches what is here."""

    @field_validator("candidates")
    @classmethod
    def _candidates(cls, value: tuple[str, ...] | None, info: ValidationInfo) -> Any:
        task = _context(info, "task")
        if value is None:  # the task's, where it is known
            return tasks.DEFAULT_CANDIDATES[task] if task else None
        if not value:
            _fail("is empty; name at least one model")
        if len(set(value)) != len(value):
            _fail(f"names a model twice: {list(value)}")
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for i, kind in enumerate(value):
            if task and kind not in tasks.kinds_for(task):
                usable = tasks.kinds_for(task)
                problems.append(
                    ((i,), f"is {kind!r}, which cannot learn {task}; {task} can use {usable}")
                )
        _raise_all(problems)
        return value

    @field_validator("baseline")
    @classmethod
    def _baseline(cls, value: str | None, info: ValidationInfo) -> str | None:
        task = _context(info, "task")
        usable = tasks.kinds_for(task) if task else []
        if value is not None and task and value not in usable:
            _fail(f"is {value!r}, which cannot learn {task}; {task} can use {usable}")
        return value

    @field_validator("xgb")
    @classmethod
    def _xgb(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - XGB_KEYS)
        if unknown:
            _fail(f"unknown key(s) {unknown} in {{at}}; known: {sorted(XGB_KEYS)}")
        n_est = value.get("n_estimators", 100)
        if isinstance(n_est, bool) or not isinstance(n_est, int) or n_est < 1:
            _fail(f"must be an integer >= 1, got {n_est!r}", "n_estimators")
        return value

    @field_validator("models")
    @classmethod
    def _models(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        bad = sorted(set(value.get("xgboost", {})) - XGB_KEYS)
        if bad:
            _fail(f"unknown XGBoost key(s) {bad} in {{at}}; known: {sorted(XGB_KEYS)}", "xgboost")
        return value

    @field_validator("search")
    @classmethod
    def _search(cls, value: dict[str, dict[str, dict[str, Any]]]) -> Any:
        unknown = [p for p in value.get("xgboost", {}) if p not in XGB_KEYS]
        _raise_all(
            [
                (("xgboost", p), f"unknown XGBoost parameter {p!r}; known: {sorted(XGB_KEYS)}")
                for p in unknown
            ]
        )
        return value

    # train.tuning's keys under the names the tuner reads them by.
    @property
    def tuning_trials(self) -> int:
        return self.tuning.trials

    @property
    def tuning_timeout(self) -> float | None:
        return self.tuning.timeout

    @property
    def tuning_pruner(self) -> str:
        return self.tuning.pruner

    @property
    def pruner_startup(self) -> int:
        return self.tuning.pruner_startup

    @property
    def pruner_warmup(self) -> int:
        return self.tuning.pruner_warmup

    @property
    def tuning_patience(self) -> int:
        return self.tuning.patience

    @property
    def trials_by_candidate(self) -> dict[str, int]:
        return self.tuning.trials_by_candidate

    def trials_for(self, candidate: str) -> int:
        """The number of search trials for ``candidate`` (0 without a search space)."""
        if not self.search.get(candidate):
            return 0
        return self.trials_by_candidate.get(candidate, self.tuning_trials)

    def record(self) -> dict[str, Any]:
        """The settings as one flat mapping, train.tuning's keys by the names above: what the
        bundle's signature.json has always recorded as ``train_config``."""
        tuning = {
            "tuning_trials": self.tuning_trials,
            "tuning_timeout": self.tuning_timeout,
            "tuning_pruner": self.tuning_pruner,
            "pruner_startup": self.pruner_startup,
            "pruner_warmup": self.pruner_warmup,
            "tuning_patience": self.tuning_patience,
            "tuning_select": self.tuning.select,
            "trials_by_candidate": dict(self.trials_by_candidate),
        }
        return self.model_dump(exclude={"tuning"}) | tuning


class EvaluateConfig(_Section):
    """Evaluation on the test split, the only stage that reads it."""

    curve_points: int = Field(200, ge=2)
    """Points kept in the ROC and PR plot data."""


class GateConfig(_Section):
    """May the new model replace the production one?"""

    tolerance: float = Field(0.0, ge=0)
    """How much worse than production (primary metric) is acceptable."""
    fail_on_reject: bool = True
    """A rejection fails `dvc repro`."""
    compare_champion: bool = True
    """Score the production model on the same test split."""
    degenerate: Literal["fail", "warn"] = "fail"
    """A classifier that never predicts some class of the test split: `fail` rejects it, `warn`
    says so and lets the other checks decide. A model predicting the majority class for every
    row (as a threshold maximising accuracy on imbalanced data can make it) is one."""


class MonitorConfig(_Section):
    """How `mlcycle monitor` judges drift from the training data. The measurements are in
    docs/monitoring.md."""

    alpha: Fraction = 0.01
    """False-alarm rate of a whole batch (each column tested at alpha/columns)."""
    min_effect: float = Field(0.02, ge=0, le=1)
    """Smallest change in the share of rows of a range of values (KS or total variation
    distance) that is drift, so a huge batch does not flag a trivial shift."""
    psi_threshold: float = Field(0.025, ge=0)
    """`mlcycle report`: PSI (less what chance gives) from which a training column moved. PSI: the
    population stability index."""
    bins: int = Field(10, ge=2)
    """Bins of numeric features (PSI, plots), fixed at `package` time."""
    missing_threshold: Fraction = 0.05
    """A move of a column's missing or non-number share that alarms."""
    min_labels: int = Field(200, ge=1)
    """Labelled rows before production KPIs are held to the objectives."""


RELEASE_STAGES = ("prod", "shadow", "canary")


class RolloutConfig(_Section):
    """How a challenger (a version released as shadow or canary) is weighed against production
    by `mlcycle monitor --compare`, and how `mlcycle retrain` releases. See docs/releases.md."""

    min_labels: int = Field(200, ge=1)
    """Labelled records before any call: on both models' scores (shadow), or in the smaller
    group (canary). Fewer: keep watching."""
    max_labels: int = Field(5000, ge=1)
    """Labelled records after which a challenger with no proven gain is rolled back."""
    metric: Metric | None = None
    """The metric the challenger must beat production on. null: the primary metric."""
    margin: float = Field(0.0, ge=0)
    """How much better than production the challenger must be: it is promoted when the lower
    end of the interval of its gain is above the margin, rolled back when the upper end is
    below it."""
    max_loss: float = Field(0.01, ge=0)
    """The largest loss allowed on any other objective's metric: more blocks promotion, and a
    proven one (the interval's upper end below it) rolls back."""
    level: Fraction = 0.95
    """Confidence level of the bootstrap intervals of the differences."""
    release_as: Literal[RELEASE_STAGES] = "prod"
    """How `mlcycle retrain` releases its model: prod (replaces production), shadow (scores
    every request beside it) or canary (answers canary_share of requests)."""
    canary_share: float = Field(10.0, gt=0, lt=100)
    """Percent of requests a canary answers, when release_as is canary."""

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str | None, info: ValidationInfo) -> str | None:
        problem = value and _metric_problem([value], _context(info, "task"))
        if problem:
            _fail(f"is {value!r}, which {problem}")
        return value

    @model_validator(mode="after")
    def _labels(self) -> RolloutConfig:
        if self.max_labels < self.min_labels:
            _fail(
                f"max_labels ({self.max_labels}) is below min_labels ({self.min_labels}): "
                "no call could ever be made before the challenger is rolled back"
            )
        return self


class PackageConfig(_Section):
    """The model bundle."""

    name: str = Field("model", json_schema_extra={"pattern": f"^{PACKAGE_NAME}$"})
    """The model's name in the bundle and the registry (git tags). Letters, digits, '-', '_' and
    '/'."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(PACKAGE_NAME, value):
            _fail(
                f"is {value!r}; a registry name is letters, digits, '-', '_' or '/', starting "
                "and ending with a letter or digit"
            )
        return value


class EngineConfig(_Section):
    """Where the stages compute: pandas in one process, or a Dask cluster. See docs/engines.md for
    when to switch."""

    kind: Literal[ENGINE_KINDS] = "local"
    """local: pandas in one process; dask: partitioned, on a Dask cluster."""
    scheduler: str | None = Field(None, json_schema_extra={"pattern": f"^{SCHEDULER}$"})
    """A running scheduler (tcp://host:8786); null: a LocalCluster here."""
    connect_timeout: float = Field(30.0, gt=0)
    """Seconds from the stage's start (its start-up included) to reach the scheduler and a worker,
    then an error. A worker is waited for only if the scheduler has none yet."""
    task_timeout: float | None = Field(None, gt=0)
    """Seconds any one blocking call on the cluster (a fit, a computation, a gather) may take, then
    the stage fails naming it. null: 600 plus 1 per 1,000 rows of the stage's data set."""
    retries: int = Field(2, ge=0)
    """Times work that failed because a worker was lost is run again before the stage fails."""
    workers: int = Field(2, ge=1)
    """LocalCluster: worker processes."""
    threads_per_worker: int = Field(1, ge=1)
    """LocalCluster: threads per worker."""
    memory_limit: str = Field("auto", json_schema_extra={"pattern": f"^({MEMORY})$"})
    """LocalCluster: memory per worker: "4GiB", or auto (memory / workers)."""
    dashboard: str = ":8787"
    """LocalCluster: the dashboard's address (":0": any free port). The link is printed."""
    partition_rows: int = Field(1_000_000, ge=1)
    """Rows per partition of the data sets the stages write."""
    sklearn_max_rows: int = Field(1_000_000, ge=0)
    """Training rows above which scikit-learn candidates are skipped. They need the whole split in
    one process."""
    trial_max_rows: int = Field(2_000_000, ge=0)
    """Training rows up to which trials run side by side, one per worker. Up to it every worker gets
    a copy of the split; above it, each trial trains across the cluster with xgboost.dask."""

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(SCHEDULER, value):
            _fail(f"is {value!r}; a scheduler address looks like tcp://10.0.0.5:8786")
        return value

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not re.fullmatch(MEMORY, value):
            _fail(f"is {value!r}; a memory size looks like 4GiB, 512MB or auto")
        return value

    @property
    def is_dask(self) -> bool:
        return self.kind == "dask"


def _per_task_rules() -> list[dict[str, Any]]:
    """JSON Schema conditions that depend on objectives.task (pydantic checks them in code)."""
    rules = []
    for task, kind in tasks.TASK.items():
        names = list(kind.kpis)
        kinds = tasks.kinds_for(task)
        objectives: dict[str, Any] = {
            "properties": {
                "primary_metric": {"enum": [*names, None]},
                "kpis": {"items": {"enum": names}},
                "minimums": {"propertyNames": {"enum": names}},
            }
        }
        if kind.has_positive_class:
            objectives["required"] = ["positive_class"]
            objectives["properties"]["positive_class"] = {"type": ["string", "integer", "boolean"]}
            objectives["properties"]["threshold"] = {
                "anyOf": [{"type": "null"}, {"properties": {"maximize": {"enum": [*names, None]}}}]
            }
        else:
            objectives["properties"]["positive_class"] = {"type": "null"}
            objectives["properties"]["threshold"] = {
                "anyOf": [{"type": "null"}, {"type": "object", "maxProperties": 0}]
            }
        then: dict[str, Any] = {
            "objectives": objectives,
            "train": {
                "properties": {
                    "candidates": {"items": {"enum": kinds}},
                    "baseline": {"enum": [*kinds, None]},
                }
            },
        }
        then["rollout"] = {"properties": {"metric": {"enum": [*names, None]}}}
        if not kind.classification:
            then["prepare"] = {
                "properties": {
                    "split": {"properties": {"method": {"not": {"const": "stratified"}}}}
                }
            }
        rules.append(
            {
                "if": {
                    "properties": {"objectives": {"properties": {"task": {"const": task}}}},
                    "required": ["objectives"],
                },
                "then": {"properties": then},
            }
        )
    return rules


class Params(BaseModel):
    """mlcycle's params.yaml: every knob of the pipeline, grouped by the stage that reads it.
    Sections other than these are allowed (and ignored)."""

    model_config = ConfigDict(
        extra="allow",
        strict=True,
        frozen=True,
        use_attribute_docstrings=True,
        title="mlcycle params.yaml",
        json_schema_extra={"allOf": _per_task_rules()},
    )

    objectives: Objectives
    data: DataConfig
    validate_: ValidateConfig = Field(alias="validate")
    prepare: PrepareConfig
    features: FeaturesConfig = FeaturesConfig()
    train: TrainConfig
    evaluate: EvaluateConfig = EvaluateConfig()
    monitor: MonitorConfig = MonitorConfig()
    rollout: RolloutConfig = RolloutConfig()
    gate: GateConfig = GateConfig()
    package: PackageConfig = PackageConfig()
    engine: EngineConfig = EngineConfig()

    @field_validator("features", "evaluate", "monitor", "rollout", "gate", "package", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        """An optional section written with nothing under it (``gate:``) takes its defaults."""
        return {} if value is None else value

    @property
    def validate(self) -> ValidateConfig:  # type: ignore[override]  # BaseModel's is deprecated
        """The validate section."""
        return self.validate_


# --- reporting problems ---------------------------------------------------------------------

_EXPECTED = {  # what a key should be, by pydantic's error type
    "float_type": "a number (float)", "int_type": "an integer (int)",
    "int_from_float": "an integer (int)", "bool_type": "true or false (bool)",
    "string_type": "text (str)", "list_type": "a list", "tuple_type": "a list",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
}  # fmt: skip
_BOUNDS = {
    "greater_than": ("gt", "greater than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "at most"),
}


def _key_path(loc: tuple[str | int, ...]) -> str:
    """``('data', 'sources', 1, 'kind')`` as ``data.sources[1].kind``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != "[key]":
            out += f".{part}" if out else part
    return out


def _bare(declared: Any) -> Any:
    """A declared type without its ``Annotated`` checks and its ``| None``."""
    while typing.get_origin(declared) in (Annotated, typing.Union, types.UnionType):
        declared = next(t for t in typing.get_args(declared) if t is not type(None))
    return declared


def _model(declared: Any) -> type[BaseModel] | None:
    declared = _bare(declared)
    return declared if isinstance(declared, type) and issubclass(declared, BaseModel) else None


def _keys(model: type[BaseModel]) -> dict[str, Any]:
    """A model's fields by the key params.yaml writes them with."""
    return {info.alias or name: info for name, info in model.model_fields.items()}


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model params.yaml declares at ``loc`` (None where it declares none)."""
    declared: Any = Params
    for part in loc:
        model, declared = _model(declared), _bare(declared)
        if model is not None:
            declared = _keys(model)[part].annotation if part in _keys(model) else None
        else:  # a list's items or a mapping's values
            args = typing.get_args(declared)
            declared = args[-1] if typing.get_origin(declared) is dict else (args or (None,))[0]
    return _model(declared)


def _describe(error: Any, prefix: tuple[str | int, ...]) -> list[str]:
    """One pydantic error as lines naming the key path, what was expected and what was got."""
    loc = (*prefix, *error["loc"])
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    at = f"'{_key_path(loc)}'"
    if kind == "value_error" and isinstance(ctx.get("error"), _Invalid):
        lines = []
        for sub, message in ctx["error"].problems:
            where = f"'{_key_path((*loc, *sub))}'"
            lines.append(
                message.replace("{at}", where) if "{at}" in message else f"{where} {message}"
            )
        return lines
    if kind == "missing":
        return [f"{at} is missing"]
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        known = sorted(_keys(parent)) if parent else []
        return [f"{at} is not a known key; '{_key_path(loc[:-1])}' takes {known}"]
    if kind == "literal_error":  # expected: "'a', 'b' or 'c'"
        choices = "[" + ctx["expected"].replace(" or ", ", ") + "]"
        if loc[-1] == "[key]":
            return [f"'{_key_path(loc[:-2])}' has key {value!r}; use one of {choices}"]
        return [f"{at} is {_show(value)}; use one of {choices}"]
    if kind in _EXPECTED:
        return [f"{at} should be {_EXPECTED[kind]}, got {_show(value)}"]
    if kind in _BOUNDS:
        bound, words = _BOUNDS[kind]
        return [f"{at} must be {words} {ctx[bound]}, got {_show(value)}"]
    message = str(ctx["error"]) if kind == "value_error" and "error" in ctx else error["msg"]
    return [f"{at}: {message}, got {_show(value)}"]


def _config_error(problems: list[str]) -> ConfigError:
    lines = tuple(f"{PARAMS_FILE}: {p}" for p in dict.fromkeys(problems))
    return ConfigError("\n".join(lines), lines)


def _validate(model: type[BaseModel], value: Any, prefix: tuple[str, ...], context: dict) -> Any:
    try:
        return model.model_validate(value, context=context)
    except ValidationError as exc:
        problems = [line for err in exc.errors() for line in _describe(err, prefix)]
        raise _config_error(problems) from None


# --- reading params.yaml ----------------------------------------------------------------------


def _task_of(raw: dict[str, Any]) -> str | None:
    """objectives.task if it names a task (else None: its own check reports it)."""
    objectives = raw.get("objectives")
    task = objectives.get("task") if isinstance(objectives, dict) else None
    return task if isinstance(task, str) and task in tasks.TASK else None


def _file_context(raw: dict[str, Any]) -> dict[str, Any]:
    """What checks in one section need of the others: objectives.task and the sources' names
    (None where the file does not give them, then those checks are skipped)."""
    data = raw.get("data")
    sources = data.get("sources") if isinstance(data, dict) else None
    names = None
    if isinstance(sources, list):
        names = [
            s["name"] for s in sources if isinstance(s, dict) and isinstance(s.get("name"), str)
        ]
    return {"task": _task_of(raw), "sources": names}


def section(raw: dict[str, Any], key: str) -> Any:
    """Validate one section of an already-read params.yaml on its own, for a caller that needs
    only it (the rest may be incomplete): ``section(raw, "package").name``. A missing optional
    section takes its defaults; checks against other sections use what ``raw`` holds of them
    (train's candidates need objectives.task)."""
    if not isinstance(raw, dict):
        raise _config_error([f"should be a mapping of sections, got {_show(raw)}"])
    info = _keys(Params)[key]
    if key not in raw and info.is_required():
        raise _config_error([f"'{key}' is missing"])
    value = raw.get(key)
    if value is None and not info.is_required():
        value = {}
    settings = _validate(info.annotation, value, (key,), _file_context(raw))
    if key == "train" and _task_of(raw) is None:
        raise _config_error(
            [f"'objectives.task' is missing or not one of {list(TASKS)}; train depends on it"]
        )
    return settings


def parse_params(raw: dict[str, Any]) -> Params:
    """Validate every section of an already-read params.yaml; every problem is reported at
    once, in one :class:`ConfigError`."""
    return _validate(Params, raw, (), _file_context(raw))


def load_yaml(text: str) -> Any:
    """Parse YAML text as DVC parses params.yaml: ruamel.yaml's safe loader, YAML 1.2 (so
    ``yes``, ``on`` are strings, ``010`` is ten, ``1e3`` a number). Raises :class:`YAMLError`."""
    return YAML(typ="safe").load(text)


def read_raw(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Read params.yaml as plain data, as DVC reads it, with a clear error if it is absent or
    not YAML (naming the line and column)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found; run from the project root or pass --params")
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections")
    return raw


def load(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate every section of params.yaml."""
    return parse_params(read_raw(path))


def descriptions(model: type[BaseModel] = Params, prefix: str = "") -> dict[str, str]:
    """Every key's description by key path (``data.sources.kind``: a list's items share its
    path); a key that holds a mapping of keys and has no description of its own gets its
    model's. Whitespace is collapsed."""
    out = {}
    for key, info in _keys(model).items():
        declared = _bare(info.annotation)
        inner = _model(
            typing.get_args(declared)[0] if typing.get_origin(declared) is tuple else declared
        )
        text = info.description or (inner.__doc__ if inner else None)
        if text:
            out[prefix + key] = " ".join(text.split())
        if inner:
            out |= descriptions(inner, f"{prefix}{key}.")
    return out


def json_schema() -> dict[str, Any]:
    """The JSON Schema of params.yaml (for editors: ``# yaml-language-server: $schema=...``)."""
    schema = Params.model_json_schema(by_alias=True)

    def drop_field_titles(node: Any) -> None:
        if isinstance(node, dict):
            for prop in (node.get("properties") or {}).values():
                if isinstance(prop, dict):
                    prop.pop("title", None)
            for child in node.values():
                drop_field_titles(child)
        elif isinstance(node, list):
            for child in node:
                drop_field_titles(child)

    drop_field_titles(schema)
    for model in schema["$defs"].values():
        for prop in model.get("properties", {}).values():
            if prop.get("default") in ([], {}) and prop.get("type") in ("array", "object"):
                prop["type"] = [prop["type"], "null"]  # null means empty: see _null_is_empty
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def json_schema_text() -> str:
    """:func:`json_schema` as committed in params.schema.json: sorted keys, indent 2."""
    return json.dumps(json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(json_schema_text())
