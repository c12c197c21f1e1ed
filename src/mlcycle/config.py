"""Load ``params.yaml`` into typed, validated settings.

This is the one module that knows the layout of the file. Pydantic models mirror that layout
(:class:`ParamsModel` and one model per section) and declare every key, its type, its default
and its checks; :func:`load` validates the whole file at once and turns it into the frozen
dataclasses the stages read (:class:`Params` and one per section). A mistake is reported as a
:class:`ConfigError` naming each bad key by its path (``data.sources[1].kind``), what was
expected and what was found, every problem at once, one per line.

The same models give a JSON Schema of the file (:func:`json_schema`) for editors; it is
committed as ``params.schema.json``: ``python -m mlcycle.config > params.schema.json``.
"""

from __future__ import annotations

import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

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


class ConfigError(ValueError):
    """A value in params.yaml is missing or invalid; the message names the key.

    ``problems`` holds one line per problem (each also a line of the message).
    """

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems or (message,)


# --- the settings the stages read ------------------------------------------------------------


@dataclass(frozen=True)
class Objectives:
    """What the model is for and the bar it must clear.

    ``positive_class`` is the label counted as positive (binary classification only, else
    None). ``minimums`` holds ``primary_metric: minimum`` and the further bounds; for a
    lower-is-better metric (log loss, RMSE ...) a bound is a maximum.
    """

    task: str
    target: str
    positive_class: str | None
    primary_metric: str
    minimum: float
    kpis: tuple[str, ...]
    minimums: dict[str, float] = field(default_factory=dict)
    threshold_metric: str | None = None
    cost_fp: float = 1.0
    cost_fn: float = 1.0
    slices: tuple[str, ...] = ()
    slice_min_rows: int = 100


@dataclass(frozen=True)
class Source:
    """One source the gather stage reads into the snapshot.

    ``kind`` is ``file`` (a path or glob of CSV/Parquet/JSON Lines, optionally gzipped),
    ``database`` (a SQLAlchemy URL, given in ``url`` or, with credentials, in the environment
    variable named by ``url_env``, plus a ``table`` or a ``query``), ``http`` (a URL with an
    expected ``sha256``) or ``landing`` (a folder where devices and apps drop files; malformed
    ones are quarantined under ``data/quarantine/<name>/``).
    """

    name: str
    kind: str = "file"
    path: str | None = None
    format: str = "csv"
    header: bool = True
    delimiter: str = ","
    skip_rows: int = 0
    na_values: tuple[str, ...] = ()
    sha256: str | None = None
    columns: tuple[str, ...] | None = None
    value_map: dict[str, dict[str, str]] = field(default_factory=dict)
    url: str | None = None
    url_env: str | None = None
    table: str | None = None
    query: str | None = None
    timeout: float = 30.0
    retries: int = 3
    allow_empty: bool = False
    # Not a setting: the columns gather reads as text whatever they look like (the schema's
    # category and string columns), so "02134" keeps its leading zero.
    text_columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataConfig:
    columns: tuple[str, ...] | None
    sources: tuple[Source, ...]


@dataclass(frozen=True)
class ValidateConfig:
    """The validation gate: where the schema is and how serious each kind of finding is."""

    schema: str
    max_null_rate: float
    examples: int
    severity: dict[str, str]
    max_unseen_share: float = 0.01


@dataclass(frozen=True)
class CleanConfig:
    drop_duplicates: bool = True
    drop_conflicting_labels: bool = True


@dataclass(frozen=True)
class OutliersConfig:
    """Outlier and noise removal, applied to the training split only."""

    method: str = "none"
    columns: tuple[str, ...] = ()
    iqr_k: float = 3.0
    zscore: float = 4.0
    contamination: float = 0.01
    seed: int = 42


@dataclass(frozen=True)
class SplitConfig:
    method: str
    train_sources: tuple[str, ...] = ()
    test_sources: tuple[str, ...] = ()
    test_size: float = 0.25
    seed: int = 42
    group_column: str | None = None
    time_column: str | None = None


@dataclass(frozen=True)
class PrepareConfig:
    drop_columns: tuple[str, ...]
    clean: CleanConfig
    outliers: OutliersConfig
    split: SplitConfig


@dataclass(frozen=True)
class FeaturesConfig:
    """Feature engineering and selection, fitted in training and stored in the signature.

    ``derived`` steps are mappings such as ``{name: capital-net, op: difference,
    columns: [capital-gain, capital-loss]}``; see :data:`DERIVED_OPS`.
    """

    derived: tuple[dict[str, Any], ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    selection_method: str = "none"
    selection_k: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """Candidates, tuning budget and cross-validation for the train stage.

    ``models`` holds each model kind's fixed parameters (``xgboost`` is also ``xgb``), and
    ``search`` each kind's search space: ``{param: {low, high[, log]}}`` or
    ``{param: {choices: [...]}}``. ``baseline`` names a model kind whose untuned model is also
    fitted (a candidate or not) and scored by evaluation beside the chosen one (None: none).
    ``tuning_trials`` is each candidate's search budget unless ``trials_by_candidate`` gives
    one of its own; see :meth:`trials_for`.
    """

    seed: int
    nthread: int
    validation_fraction: float
    xgb: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    candidates: tuple[str, ...] = ("xgboost",)
    cv_folds: int = 5
    class_weight: str = "none"
    tuning_trials: int = 0
    tuning_timeout: float | None = None
    tuning_pruner: str = "none"  # none | median: see mlcycle.tuning.make_pruner
    pruner_startup: int = 5
    pruner_warmup: int = 0
    tuning_patience: int = 0  # stop a candidate's search this many trials after its best
    parallel_folds: int = 1  # folds fitted side by side (threads); see mlcycle.tuning
    trials_by_candidate: dict[str, int] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    search: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    baseline: str | None = None

    def trials_for(self, candidate: str) -> int:
        """The number of search trials for ``candidate`` (0 without a search space)."""
        if not self.search.get(candidate):
            return 0
        return self.trials_by_candidate.get(candidate, self.tuning_trials)


@dataclass(frozen=True)
class EvaluateConfig:
    curve_points: int = 200


@dataclass(frozen=True)
class GateConfig:
    """The promotion gate: tolerance against production and what a rejection does."""

    tolerance: float = 0.0
    fail_on_reject: bool = True
    compare_champion: bool = True


@dataclass(frozen=True)
class MonitorConfig:
    """How `mlcycle monitor` judges a batch (see :mod:`mlcycle.drift` and the README)."""

    alpha: float = 0.01
    psi_threshold: float = 0.025
    bins: int = 10
    large_batch: int = 5000
    missing_threshold: float = 0.05
    min_labels: int = 200


@dataclass(frozen=True)
class PackageConfig:
    """The model's name in the bundle and the registry (git tags, `dvc artifacts`)."""

    name: str = "model"


@dataclass(frozen=True)
class EngineConfig:
    """Where the stages compute: pandas in this process (``local``) or a Dask cluster.

    With ``dask``, ``scheduler`` is a running scheduler's address (``tcp://host:8786``), or
    None to start a ``LocalCluster`` (a scheduler not reached within ``connect_timeout``
    seconds is an error) of ``workers`` processes with ``threads_per_worker``
    threads and ``memory_limit`` each (Dask's syntax: "4GiB", "auto"). ``partition_rows``
    sizes the partitions the stages write; ``sklearn_max_rows`` is the training-split size
    above which the scikit-learn candidates are skipped (they need the split in one process);
    ``trial_max_rows`` the size up to which a copy of the split goes to every worker and
    tuning trials run side by side, one per worker (above it each trial trains on the whole
    cluster through ``xgboost.dask``).
    """

    kind: str = "local"
    scheduler: str | None = None
    connect_timeout: float = 30.0
    workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str = "auto"
    dashboard: str = ":8787"
    partition_rows: int = 1_000_000
    sklearn_max_rows: int = 1_000_000
    trial_max_rows: int = 2_000_000

    @property
    def is_dask(self) -> bool:
        return self.kind == "dask"


@dataclass(frozen=True)
class Params:
    objectives: Objectives
    data: DataConfig
    validate: ValidateConfig
    prepare: PrepareConfig
    features: FeaturesConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    monitor: MonitorConfig
    gate: GateConfig
    package: PackageConfig
    engine: EngineConfig = EngineConfig()


# --- the file's layout, declared -------------------------------------------------------------
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
    model_config = ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_empty(cls, data: Any) -> Any:
        """A list or mapping key written with nothing under it (``minimums:`` whose entries
        are all commented out) is YAML null: it means empty, its default."""
        if not isinstance(data, dict):
            return data
        empty = {f.alias or n for n, f in cls.model_fields.items() if f.default in ([], {})}
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


def _usable_kinds(task: str) -> list[str]:
    return [kind for kind in tasks.MODEL_KINDS if task in tasks.MODEL_TASKS[kind]]


class ThresholdModel(_Section):
    """How the decision threshold is chosen (binary classification only), on out-of-fold
    training predictions: maximise a metric, or else minimise the cost of errors."""

    maximize: Metric | None = None
    """A metric to maximise; null: minimise cost_fp * false positives + cost_fn * false
    negatives."""
    cost_fp: float = Field(1.0, ge=0)
    """Cost of a false positive."""
    cost_fn: float = Field(1.0, ge=0)
    """Cost of a false negative."""

    @model_validator(mode="after")
    def _costs(self) -> ThresholdModel:
        if self.cost_fp + self.cost_fn == 0:
            _fail("costs cost_fp and cost_fn must not both be 0")
        return self


class ObjectivesModel(_Section):
    """What the model is for and the bar it must clear."""

    task: Task
    """binary_classification, multiclass_classification or regression."""
    target: str
    """The column to predict."""
    positive_class: Label | None = Field(None, validate_default=True)
    """The label counted as positive: required for binary_classification, absent otherwise."""
    primary_metric: Metric | None = None
    """The metric that decides (default per task: roc_auc, f1_macro, rmse)."""
    minimum: float
    """The value primary_metric must reach on the test split (a maximum if lower is better)."""
    kpis: list[Metric] | None = None
    """Metrics also reported (default: the task's usual set)."""
    minimums: dict[str, float] = {}
    """Further bounds the gate checks, per metric (a maximum for lower-is-better metrics)."""
    threshold: ThresholdModel | None = None
    """The decision threshold (binary_classification only)."""
    slices: list[str] = []
    """Columns whose values get KPIs of their own, and the gap best-worst."""
    slice_min_rows: int = Field(100, ge=2)
    """Smaller slices get only their size: their KPIs would be noise."""

    @field_validator("positive_class")
    @classmethod
    def _positive_class(cls, value: str | None, info: ValidationInfo) -> str | None:
        task = info.data.get("task")
        if task == tasks.BINARY and value is None:
            _fail("is missing: binary_classification needs the label counted as positive")
        if task in (tasks.MULTICLASS, tasks.REGRESSION) and value is not None:
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
    def _kpis(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
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
    def _threshold(cls, value: ThresholdModel | None, info: ValidationInfo) -> Any:
        task = info.data.get("task")
        if value is None:
            return value
        if task in (tasks.MULTICLASS, tasks.REGRESSION) and value.model_fields_set:
            _fail(
                "applies only to binary_classification (a threshold on the positive class's "
                f"probability); remove it for {task}"
            )
        problem = value.maximize and _metric_problem([value.maximize], task)
        if problem:
            _fail(f"is {value.maximize!r}, which {problem}", "maximize")
        return value


class SourceModel(_Section):
    """One source of the snapshot: kind file (path), database (url or url_env, and table or
    query), http (url and sha256) or landing (a folder devices drop files into)."""

    name: str
    """Its name in the snapshot's source column; by_source splits name it."""
    kind: Literal[SOURCE_KINDS] = "file"
    """file, database, http or landing."""
    path: str | None = None
    """file: a path or glob; landing: a folder."""
    format: Literal[SOURCE_FORMATS] = "csv"
    """csv, parquet or jsonl (optionally gzipped)."""
    header: bool = True
    """Whether a CSV file starts with a header line."""
    delimiter: str = Field(",", min_length=1, max_length=1)
    """The character between a CSV file's fields: ',' (default), ';', a tab, '|' ..."""
    skip_rows: int = Field(0, ge=0)
    """Lines to skip at the start of the file."""
    na_values: list[ScalarText] = []
    """Cell values read as missing."""
    sha256: str | None = Field(None, json_schema_extra={"pattern": "^[0-9a-fA-F]{64}$"})
    """Expected SHA-256 of the content (required for http)."""
    columns: list[str] | None = None
    """Column names of a file without a header line (default: data.columns)."""
    value_map: dict[
        Annotated[str, BeforeValidator(_scalar_text)], dict[ScalarText, ScalarText]
    ] = {}
    """Per column, values to replace: {column: {old: new}}."""
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
    """The source may hold no rows (a landing folder between uploads); otherwise an empty or
    header-only source is an error."""

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
    def _needs(self) -> SourceModel:
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


class DataModel(_Section):
    """Where the data comes from: sources unioned into one snapshot."""

    columns: list[str] | None = None
    """Column names for sources whose files have no header line."""
    sources: list[SourceModel]
    """The sources, at least one; names are unique."""

    @field_validator("sources")
    @classmethod
    def _sources(cls, value: list[SourceModel], info: ValidationInfo) -> list[SourceModel]:
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
        return value


class ValidateModel(_Section):
    """The validation gate: where the schema is and how serious each kind of finding is."""

    schema_: str = Field("schema.yaml", alias="schema")
    """Column types, ranges, categories; `mlcycle schema infer` drafts it."""
    max_null_rate: float = Field(0.5, ge=0, le=1)
    """For columns whose schema entry gives none."""
    max_unseen_share: float = Field(0.01, ge=0, le=1)
    """Unseen categories in more than this share of a column's rows are an error, whatever
    validate.severity.unseen_category says: a few new values are news, many are a break."""
    examples: int = Field(5, ge=0)
    """Example values shown per finding."""
    severity: dict[Literal[FINDING_KINDS], Literal[SEVERITIES]] = {}
    """Per kind of finding: error stops `dvc repro`, warning is reported, ignore is not."""


class CleanModel(_Section):
    """Row removals, applied to the training split only."""

    drop_duplicates: bool = True
    """Exact duplicates, and training rows that repeat a test row."""
    drop_conflicting_labels: bool = True
    """Feature vectors seen with different labels."""


class OutliersModel(_Section):
    """Outlier and noise removal, on the training split only."""

    method: Literal[OUTLIER_METHODS] = "none"
    """none, iqr, zscore or isolation_forest."""
    columns: list[str] = []
    """Numeric columns to check (empty: all numeric)."""
    iqr_k: float = Field(3.0, gt=0)
    """iqr: rows beyond k interquartile ranges from the quartiles."""
    zscore: float = Field(4.0, gt=0)
    """zscore: rows beyond this many standard deviations."""
    contamination: float = Field(0.01, gt=0, le=0.5)
    """isolation_forest: the share of rows expected to be outliers."""
    seed: int = 42
    """isolation_forest's seed."""


class SplitModel(_Section):
    """How rows are split into training and test."""

    method: Literal[SPLIT_METHODS]
    """by_source, random, stratified (classification), group or time."""
    train_sources: list[str] = []
    """by_source: the sources that make the training split."""
    test_sources: list[str] = []
    """by_source: the sources that make the test split."""
    test_size: Fraction = 0.25
    """random, stratified, group and time: the test split's share of rows."""
    seed: int = 42
    """The split's seed."""
    group_column: str | None = None
    """group: rows sharing a value stay on one side."""
    time_column: str | None = None
    """time: the latest rows become the test split."""

    @model_validator(mode="after")
    def _method_needs(self, info: ValidationInfo) -> SplitModel:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.method == "group" and not self.group_column:
            problems.append(((), "method group needs 'group_column'"))
        if self.method == "time" and not self.time_column:
            problems.append(((), "method time needs 'time_column'"))
        if self.method == "stratified" and _context(info, "task") == tasks.REGRESSION:
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


class PrepareModel(_Section):
    """Cleaning, outlier removal and the train/test split."""

    drop_columns: list[str] = []
    """Columns never used as features."""
    clean: CleanModel = CleanModel()
    outliers: OutliersModel = OutliersModel()
    split: SplitModel


class DerivedModel(_Section):
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
    def _op_needs(self) -> DerivedModel:
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


class SelectionModel(_Section):
    """Feature selection, fitted on the training split only."""

    method: Literal[SELECTION_METHODS] = "none"
    """none or mutual_info."""
    k: int = Field(0, ge=0)
    """mutual_info: the number of features to keep (at least 1)."""

    @model_validator(mode="after")
    def _k(self) -> SelectionModel:
        if self.method == "mutual_info" and self.k < 1:
            _fail("must be at least 1 with method mutual_info", "k")
        return self


class FeaturesModel(_Section):
    """Feature engineering and selection, applied by the same code in training, batch scoring
    and the service."""

    derived: list[DerivedModel] = []
    """Features computed from others, in order (a step may read earlier ones)."""
    include: list[str] = []
    """If set, only these input columns (and derived ones) are used."""
    exclude: list[str] = []
    """Input columns not used as model features (derived steps may still read them)."""
    selection: SelectionModel = SelectionModel()


class SearchRangeModel(_Section):
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
    def _range(self) -> SearchRangeModel:
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


class TuningModel(_Section):
    """The search budget of every candidate (Optuna, TPE)."""

    trials: int = Field(0, ge=0)
    """Trials per candidate after trial 0 (the fixed params); 0: no search."""
    timeout: float | None = Field(None, gt=0)
    """Seconds per candidate (null: none; a time budget is not reproducible)."""
    trials_by_candidate: dict[ModelKind, NonNegativeInt] = {}
    """A budget of their own for some model kinds."""
    pruner: Literal["none", "median"] = "median"
    """Stop a trial between folds when its running CV mean is worse than the median of the
    earlier trials' at the same fold (median), or never (none: every trial runs every fold).
    A stopped trial is listed in trials.csv (pruned_after) and never wins."""
    pruner_startup: NonNegativeInt = 5
    """median: trials (trial 0 included) that run every fold before any trial is stopped."""
    pruner_warmup: NonNegativeInt = 0
    """median: folds a trial always runs before it can be stopped after the next one."""
    patience: NonNegativeInt = 10
    """Stop a candidate's search once this many trials in a row have not beaten its best CV
    score (0: every trial of the budget runs). Reproducible: it counts trials, not seconds."""


class TrainModel(_Section):
    """Candidates, tuning and cross-validation on the training split."""

    candidates: list[ModelKind] | None = None
    """Model kinds cross-validated and tuned; the best wins (default per task)."""
    baseline: ModelKind | None = None
    """A model kind also refit untuned and scored beside the winner; null: none."""
    seed: int = 42
    """Folds, sampler, inner validation slices and models."""
    cv_folds: int = Field(5, ge=2)
    """Folds of the training split."""
    validation_fraction: Fraction = 0.1
    """XGBoost: slice of each fold's training part for early stopping."""
    class_weight: Literal[CLASS_WEIGHTS] = "none"
    """none or balanced."""
    device: Literal[DEVICES] = "cpu"
    """XGBoost: cpu or cuda."""
    nthread: int = Field(0, ge=0)
    """XGBoost threads, scikit-learn n_jobs (0: all cores)."""
    parallel_folds: int = Field(2, ge=1)
    """Cross-validation folds fitted side by side, in threads sharing ``nthread`` (each fit
    gets nthread / parallel_folds, at least 1); the scores and pruning are the same as one at
    a time. Small data gains most: one fit uses threads poorly."""
    tuning: TuningModel = TuningModel()
    xgb: dict[str, Any] = Field({}, json_schema_extra={"propertyNames": {"enum": sorted(XGB_KEYS)}})
    """XGBoost's fixed params: trial 0, and the base of every trial."""
    models: dict[ModelKind, dict[str, Any]] = {}
    """Other model kinds' fixed params (scikit-learn names), per kind."""
    search: dict[ModelKind, dict[str, SearchRangeModel]] = {}
    """Per model kind, {param: {low, high[, log]}} or {param: {choices: [...]}}."""

    @field_validator("candidates")
    @classmethod
    def _candidates(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is None:
            return value
        if not value:
            _fail("is empty; name at least one model")
        if len(set(value)) != len(value):
            _fail(f"names a model twice: {value}")
        task = _context(info, "task")
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for i, kind in enumerate(value):
            if task and task not in tasks.MODEL_TASKS[kind]:
                usable = _usable_kinds(task)
                problems.append(
                    ((i,), f"is {kind!r}, which cannot learn {task}; {task} can use {usable}")
                )
        _raise_all(problems)
        return value

    @field_validator("baseline")
    @classmethod
    def _baseline(cls, value: str | None, info: ValidationInfo) -> str | None:
        task = _context(info, "task")
        if value is not None and task and task not in tasks.MODEL_TASKS[value]:
            _fail(f"is {value!r}, which cannot learn {task}; {task} can use {_usable_kinds(task)}")
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
    def _search(cls, value: dict[str, dict[str, SearchRangeModel]]) -> Any:
        unknown = [p for p in value.get("xgboost", {}) if p not in XGB_KEYS]
        _raise_all(
            [
                (("xgboost", p), f"unknown XGBoost parameter {p!r}; known: {sorted(XGB_KEYS)}")
                for p in unknown
            ]
        )
        return value


class EvaluateModel(_Section):
    """Evaluation on the test split."""

    curve_points: int = Field(200, ge=2)
    """Points kept in ROC and PR plot data."""


class GateModel(_Section):
    """May the new model replace the production one?"""

    tolerance: float = Field(0.0, ge=0)
    """How much worse than production (primary metric) is acceptable."""
    fail_on_reject: bool = True
    """A rejection fails `dvc repro`."""
    compare_champion: bool = True
    """Score the production model on the same test split."""


class MonitorModel(_Section):
    """Drift monitoring of production data against the training data."""

    alpha: Fraction = 0.01
    """A small batch's false-alarm rate: each column is tested at alpha / columns."""
    psi_threshold: float = Field(0.025, ge=0)
    """A large batch: the population stability index from which a column drifts."""
    bins: int = Field(10, ge=2)
    """Bins of numeric features (PSI, plots)."""
    large_batch: int = Field(5000, ge=1)
    """Rows from which a batch is judged by PSI instead of by tests."""
    missing_threshold: Fraction = 0.05
    """A move of a column's missing share (or share of non-numbers) that is an alarm."""
    min_labels: int = Field(200, ge=1)
    """Labelled rows needed before production KPIs are checked against the objectives."""


class PackageModel(_Section):
    """The model bundle."""

    name: str = Field("model", json_schema_extra={"pattern": f"^{PACKAGE_NAME}$"})
    """The model's name in the bundle and the registry: letters, digits, '-', '_', '/'."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(PACKAGE_NAME, value):
            _fail(
                f"is {value!r}; a registry name is letters, digits, '-', '_' or '/', starting "
                "and ending with a letter or digit"
            )
        return value


ENGINE_KINDS = ("local", "dask")
SCHEDULER = r"(tcp|tls|ws|wss|inproc|ucx)://\S+"
MEMORY = r"auto|0|[0-9]+(\.[0-9]+)?\s*([kKMGT]i?B|[kKMGT]|B)?"


class EngineModel(_Section):
    """Where the stages compute: pandas in one process, or a Dask cluster."""

    kind: Literal[ENGINE_KINDS] = "local"
    """local: pandas in the stage's process; dask: partitioned data on a Dask cluster."""
    scheduler: str | None = Field(None, json_schema_extra={"pattern": f"^{SCHEDULER}$"})
    """A running Dask scheduler's address (tcp://host:8786); null: a LocalCluster here."""
    connect_timeout: float = Field(30.0, gt=0)
    """Seconds to reach ``scheduler`` and, if it has none yet, a worker; then an error."""
    workers: int = Field(2, ge=1)
    """LocalCluster: worker processes."""
    threads_per_worker: int = Field(1, ge=1)
    """LocalCluster: threads per worker."""
    memory_limit: str = Field("auto", json_schema_extra={"pattern": f"^({MEMORY})$"})
    """LocalCluster: memory per worker ("4GiB"; auto: this machine's memory / workers)."""
    dashboard: str = ":8787"
    """LocalCluster: the dashboard's address (":0": any free port); the link is printed."""
    partition_rows: int = Field(1_000_000, ge=1)
    """Rows per partition of the data sets the stages write."""
    sklearn_max_rows: int = Field(1_000_000, ge=0)
    """Training rows above which scikit-learn candidates are skipped (they need one process)."""
    trial_max_rows: int = Field(2_000_000, ge=0)
    """Training rows up to which every worker gets a copy and tuning trials run side by
    side; above it, each trial trains across the cluster with xgboost.dask."""

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


def _per_task_rules() -> list[dict[str, Any]]:
    """JSON Schema conditions that depend on objectives.task (pydantic checks them in code)."""
    rules = []
    for task in tasks.TASKS:
        names = list(tasks.KPI_NAMES[task])
        kinds = _usable_kinds(task)
        objectives: dict[str, Any] = {
            "properties": {
                "primary_metric": {"enum": [*names, None]},
                "kpis": {"items": {"enum": names}},
                "minimums": {"propertyNames": {"enum": names}},
            }
        }
        if task == tasks.BINARY:
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
        if task == tasks.REGRESSION:
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


class ParamsModel(BaseModel):
    """mlcycle's params.yaml: every knob of the pipeline, grouped by the stage that reads it.
    Sections other than these are allowed (and ignored)."""

    model_config = ConfigDict(
        extra="allow",
        strict=True,
        use_attribute_docstrings=True,
        title="mlcycle params.yaml",
        json_schema_extra={"allOf": _per_task_rules()},
    )

    objectives: ObjectivesModel
    data: DataModel
    validate_: ValidateModel = Field(alias="validate")
    prepare: PrepareModel
    features: FeaturesModel = FeaturesModel()
    train: TrainModel
    evaluate: EvaluateModel = EvaluateModel()
    monitor: MonitorModel = MonitorModel()
    gate: GateModel = GateModel()
    package: PackageModel = PackageModel()
    engine: EngineModel = EngineModel()

    @field_validator("features", "evaluate", "monitor", "gate", "package", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        """An optional section written with nothing under it (``gate:``) takes its defaults."""
        return {} if value is None else value


# --- reporting problems ---------------------------------------------------------------------

_TYPE_NAMES = {
    "float_type": "a number (float)",
    "int_type": "an integer (int)",
    "int_from_float": "an integer (int)",
    "bool_type": "true or false (bool)",
    "string_type": "text (str)",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}
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
        if part == "[key]":
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _declared(loc: tuple[str | int, ...]) -> Any:
    """The type params.yaml declares at ``loc`` (None where the layout says nothing)."""
    annotation: Any = ParamsModel
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        annotation = _unwrap(annotation)
        origin = typing.get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields = {(f.alias or n): f for n, f in annotation.model_fields.items()}
            if part not in fields:
                return None
            annotation = fields[part].annotation
        elif origin is list:
            annotation = typing.get_args(annotation)[0]
        elif origin is dict:
            key, value = typing.get_args(annotation)
            if parts and parts[0] == "[key]":
                parts.pop(0)
                annotation = key
            else:
                annotation = value
        else:
            return None
    return _unwrap(annotation)


def _describe(error: dict[str, Any], prefix: tuple[str | int, ...]) -> list[str]:
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
        parent = _declared(loc[:-1])
        known = (
            sorted(f.alias or n for n, f in parent.model_fields.items())
            if isinstance(parent, type) and issubclass(parent, BaseModel)
            else []
        )
        return [f"{at} is not a known key; '{_key_path(loc[:-1])}' takes {known}"]
    if kind == "literal_error":
        declared = _declared(loc)
        choices = list(typing.get_args(declared)) if declared is not None else ctx.get("expected")
        if "[key]" in loc:
            return [f"'{_key_path(loc[:-2])}' has key {value!r}; use one of {choices}"]
        return [f"{at} is {_show(value)}; use one of {choices}"]
    if kind in _TYPE_NAMES:
        return [f"{at} should be {_TYPE_NAMES[kind]}, got {_show(value)}"]
    if kind in _BOUNDS:
        bound, words = _BOUNDS[kind]
        return [f"{at} must be {words} {ctx.get(bound)}, got {_show(value)}"]
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


def _task_of(raw: dict[str, Any]) -> str | None:
    """objectives.task if it names a task (else None: its own check reports it)."""
    objectives = raw.get("objectives")
    task = objectives.get("task") if isinstance(objectives, dict) else None
    return task if isinstance(task, str) and task in tasks.TASKS else None


def _source_names(raw: dict[str, Any]) -> list[str] | None:
    data = raw.get("data")
    sources = data.get("sources") if isinstance(data, dict) else None
    if not isinstance(sources, list):
        return None
    return [s["name"] for s in sources if isinstance(s, dict) and isinstance(s.get("name"), str)]


def _section(raw: dict[str, Any], key: str, **context: Any) -> Any:
    """Validate one section of ``raw`` on its own (the parse_* functions)."""
    if not isinstance(raw, dict):
        raise _config_error([f"should be a mapping of sections, got {_show(raw)}"])
    name = "validate_" if key == "validate" else key
    info = ParamsModel.model_fields[name]
    if key not in raw and info.is_required():
        raise _config_error([f"'{key}' is missing"])
    value = raw.get(key)
    if value is None and not info.is_required():
        value = {}
    return _validate(info.annotation, value, (key,), context)


# --- from the declared layout to the settings ------------------------------------------------


def _objectives(m: ObjectivesModel) -> Objectives:
    primary = m.primary_metric or tasks.DEFAULT_PRIMARY[m.task]
    kpis = tuple(m.kpis) if m.kpis is not None else tasks.DEFAULT_KPIS[m.task]
    if primary not in kpis:
        kpis = (primary, *kpis)
    minimums = {primary: m.minimum} | dict(m.minimums)
    th = m.threshold or ThresholdModel()
    return Objectives(
        task=m.task,
        target=m.target,
        positive_class=m.positive_class,
        primary_metric=primary,
        minimum=m.minimum,
        kpis=tuple(dict.fromkeys((*kpis, *minimums))),
        minimums=minimums,
        threshold_metric=th.maximize,
        cost_fp=th.cost_fp,
        cost_fn=th.cost_fn,
        slices=tuple(m.slices),
        slice_min_rows=m.slice_min_rows,
    )


def _data(m: DataModel) -> DataConfig:
    def source(s: SourceModel) -> Source:
        columns = s.columns if s.columns is not None else (None if s.header else m.columns)
        return Source(
            name=s.name,
            kind=s.kind,
            path=s.path,
            format=s.format,
            header=s.header,
            delimiter=s.delimiter,
            skip_rows=s.skip_rows,
            na_values=tuple(s.na_values),
            sha256=s.sha256,
            columns=tuple(columns) if columns else None,
            value_map={c: dict(mapping) for c, mapping in s.value_map.items()},
            url=s.url,
            url_env=s.url_env,
            table=s.table,
            query=s.query,
            timeout=s.timeout,
            retries=s.retries,
            allow_empty=s.allow_empty,
        )

    return DataConfig(
        columns=tuple(m.columns) if m.columns else None,
        sources=tuple(source(s) for s in m.sources),
    )


def _validate_config(m: ValidateModel) -> ValidateConfig:
    defaults = {k: "error" for k in FINDING_KINDS} | {
        "extra_column": "warning", "unseen_category": "warning", "duplicate_rows": "warning",
    }  # fmt: skip
    return ValidateConfig(
        schema=m.schema_,
        max_null_rate=m.max_null_rate,
        examples=m.examples,
        severity=defaults | dict(m.severity),
        max_unseen_share=m.max_unseen_share,
    )


def _prepare(m: PrepareModel) -> PrepareConfig:
    sp, ol = m.split, m.outliers
    return PrepareConfig(
        drop_columns=tuple(m.drop_columns),
        clean=CleanConfig(m.clean.drop_duplicates, m.clean.drop_conflicting_labels),
        outliers=OutliersConfig(
            method=ol.method,
            columns=tuple(ol.columns),
            iqr_k=ol.iqr_k,
            zscore=ol.zscore,
            contamination=ol.contamination,
            seed=ol.seed,
        ),
        split=SplitConfig(
            method=sp.method,
            train_sources=tuple(sp.train_sources),
            test_sources=tuple(sp.test_sources),
            test_size=sp.test_size,
            seed=sp.seed,
            group_column=sp.group_column,
            time_column=sp.time_column,
        ),
    )


def _features(m: FeaturesModel) -> FeaturesConfig:
    return FeaturesConfig(
        derived=tuple(step.model_dump(exclude_none=True) for step in m.derived),
        include=tuple(m.include),
        exclude=tuple(m.exclude),
        selection_method=m.selection.method,
        selection_k=m.selection.k,
    )


def _train(m: TrainModel, task: str) -> TrainConfig:
    return TrainConfig(
        seed=m.seed,
        nthread=m.nthread,
        validation_fraction=m.validation_fraction,
        xgb=dict(m.xgb),
        device=m.device,
        candidates=(
            tuple(m.candidates) if m.candidates is not None else tasks.DEFAULT_CANDIDATES[task]
        ),
        cv_folds=m.cv_folds,
        class_weight=m.class_weight,
        tuning_trials=m.tuning.trials,
        tuning_timeout=m.tuning.timeout,
        tuning_pruner=m.tuning.pruner,
        pruner_startup=m.tuning.pruner_startup,
        pruner_warmup=m.tuning.pruner_warmup,
        tuning_patience=m.tuning.patience,
        parallel_folds=m.parallel_folds,
        trials_by_candidate=dict(m.tuning.trials_by_candidate),
        models={kind: dict(fixed) for kind, fixed in m.models.items()},
        search={
            kind: {p: rng.model_dump(exclude_unset=True) for p, rng in space.items()}
            for kind, space in m.search.items()
        },
        baseline=m.baseline,
    )


def _evaluate(m: EvaluateModel) -> EvaluateConfig:
    return EvaluateConfig(curve_points=m.curve_points)


def _gate(m: GateModel) -> GateConfig:
    return GateConfig(m.tolerance, m.fail_on_reject, m.compare_champion)


def _monitor(m: MonitorModel) -> MonitorConfig:
    return MonitorConfig(
        alpha=m.alpha,
        psi_threshold=m.psi_threshold,
        bins=m.bins,
        large_batch=m.large_batch,
        missing_threshold=m.missing_threshold,
        min_labels=m.min_labels,
    )


def _package(m: PackageModel) -> PackageConfig:
    return PackageConfig(name=m.name)


def _engine(m: EngineModel) -> EngineConfig:
    return EngineConfig(**m.model_dump())


# --- the public functions -------------------------------------------------------------------


def parse_objectives(raw: dict[str, Any]) -> Objectives:
    """Validate the objectives section: a known task, its metrics and a minimum."""
    return _objectives(_section(raw, "objectives"))


def parse_data(raw: dict[str, Any]) -> DataConfig:
    """Validate the data section: every source has a name and what its kind needs."""
    return _data(_section(raw, "data"))


def parse_validate(raw: dict[str, Any]) -> ValidateConfig:
    """Validate the validate section: a schema path and a severity per kind of finding."""
    return _validate_config(_section(raw, "validate"))


def parse_prepare(raw: dict[str, Any], data: DataConfig | None = None) -> PrepareConfig:
    """Validate the prepare section; a by-source split must name sources of ``data`` (if
    given), and a stratified split needs a classification task."""
    names = [s.name for s in data.sources] if data is not None else None
    return _prepare(_section(raw, "prepare", task=_task_of(raw), sources=names))


def parse_features(raw: dict[str, Any]) -> FeaturesConfig:
    """Validate the features section: derived steps with known operations, a selection method."""
    return _features(_section(raw, "features"))


def parse_train(raw: dict[str, Any]) -> TrainConfig:
    """Validate the train section against objectives.task: candidates that can learn it;
    unknown XGBoost keys are refused so typos do not pass."""
    task = _task_of(raw)
    model = _section(raw, "train", task=task)
    if task is None:
        raise _config_error(
            [f"'objectives.task' is missing or not one of {list(TASKS)}; train depends on it"]
        )
    return _train(model, task)


def parse_evaluate(raw: dict[str, Any]) -> EvaluateConfig:
    """Validate the evaluate section (optional)."""
    return _evaluate(_section(raw, "evaluate"))


def parse_gate(raw: dict[str, Any]) -> GateConfig:
    """Validate the gate section (optional)."""
    return _gate(_section(raw, "gate"))


def parse_monitor(raw: dict[str, Any]) -> MonitorConfig:
    """Validate the monitor section (optional)."""
    return _monitor(_section(raw, "monitor"))


def parse_package(raw: dict[str, Any]) -> PackageConfig:
    """Validate the package section (optional)."""
    return _package(_section(raw, "package"))


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's core schema for booleans and numbers, the way DVC
    (ruamel.yaml) reads params.yaml: ``yes``, ``no``, ``on``, ``off`` are strings (YAML 1.1
    made them booleans), ``010`` is ten, ``1e3`` is a number and ``1:20`` is a string.

    Otherwise ``positive_class: yes`` would be ``True`` here and ``"yes"`` for DVC.
    """


_BOOL, _INT, _FLOAT = (f"tag:yaml.org,2002:{t}" for t in ("bool", "int", "float"))
Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
Yaml12Loader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?[0-9][0-9_]*|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
Yaml12Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)


def _yaml12_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    text = str(loader.construct_scalar(node)).replace("_", "")  # 1_000, as ruamel reads it
    if text.startswith(("0x", "0o")):
        return int(text, 0)
    return int(text, 10)  # "010" is ten, not YAML 1.1's octal eight


Yaml12Loader.add_constructor(_INT, _yaml12_int)


def load_yaml(text: str) -> Any:
    """Parse YAML text as DVC does (YAML 1.2 core schema; see :class:`Yaml12Loader`)."""
    return yaml.load(text, Loader=Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


def read_raw(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Read params.yaml as plain data, as DVC reads it (YAML 1.2), with a clear error if it is
    absent or not YAML."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found; run from the project root or pass --params")
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections")
    return raw


def parse_params(raw: dict[str, Any]) -> Params:
    """Validate every section of an already-read params.yaml; every problem is reported at
    once, in one :class:`ConfigError`."""
    context = {"task": _task_of(raw), "sources": _source_names(raw)}
    m: ParamsModel = _validate(ParamsModel, raw, (), context)
    return Params(
        objectives=_objectives(m.objectives),
        data=_data(m.data),
        validate=_validate_config(m.validate_),
        prepare=_prepare(m.prepare),
        features=_features(m.features),
        train=_train(m.train, m.objectives.task),
        evaluate=_evaluate(m.evaluate),
        monitor=_monitor(m.monitor),
        gate=_gate(m.gate),
        package=_package(m.package),
        engine=_engine(m.engine),
    )


def load(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate every section of params.yaml."""
    return parse_params(read_raw(path))


def json_schema() -> dict[str, Any]:
    """The JSON Schema of params.yaml (for editors: ``# yaml-language-server: $schema=...``)."""
    schema = ParamsModel.model_json_schema(by_alias=True)

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
