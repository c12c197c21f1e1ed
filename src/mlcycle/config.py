"""Load ``params.yaml`` into typed, validated settings.

This is the one module that knows the layout of the file. Every stage calls :func:`load`
and reads only its own section, so a mistake is reported with the key that holds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = "params.yaml"
TASKS = ("binary_classification",)
# The metrics mlcycle.metrics computes (its KPI_FUNCTIONS; a test keeps the two equal). Named
# here so that loading params.yaml does not import scikit-learn, and a change to the metric code
# re-runs only the stages that compute metrics.
KPI_NAMES = (
    "roc_auc",
    "pr_auc",
    "log_loss",
    "brier",
    "accuracy",
    "balanced_accuracy",
    "precision",
    "recall",
    "f1",
    "mcc",
)


class ConfigError(ValueError):
    """A value in params.yaml is missing or invalid; the message names the key."""


@dataclass(frozen=True)
class Objectives:
    """What the model is for and the bar it must clear."""

    task: str
    target: str
    positive_class: str
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

    ``models`` holds each candidate's fixed parameters (``xgboost`` is also ``xgb``), and
    ``search`` each candidate's search space: ``{param: {low, high[, log]}}`` or
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
    curve_points: int


@dataclass(frozen=True)
class GateConfig:
    """The promotion gate: tolerance against production and what a rejection does."""

    tolerance: float = 0.0
    fail_on_reject: bool = True
    compare_champion: bool = True


@dataclass(frozen=True)
class MonitorConfig:
    alpha: float
    psi_threshold: float
    bins: int


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


SOURCE_KINDS = ("file", "database", "http", "landing")
SOURCE_FORMATS = ("csv", "parquet", "jsonl")
SPLIT_METHODS = ("by_source", "stratified", "group", "time")
OUTLIER_METHODS = ("none", "iqr", "zscore", "isolation_forest")
SELECTION_METHODS = ("none", "mutual_info")
CANDIDATES = ("xgboost", "logistic_regression", "random_forest")
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


def _section(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    if not isinstance(value, dict):
        raise ConfigError(f"params.yaml: section '{key}' is missing or is not a mapping")
    return value


def _get(section: dict[str, Any], path: str, key: str, kind: type | tuple[type, ...], **default):
    if key not in section:
        if "default" in default:
            return default["default"]
        raise ConfigError(f"params.yaml: '{path}.{key}' is missing")
    value = section[key]
    if value is None and default.get("default", 0) is None:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        raise ConfigError(
            f"params.yaml: '{path}.{key}' should be {getattr(kind, '__name__', kind)}, "
            f"got {value!r}"
        )
    return value


def _fraction(value: float, where: str) -> float:
    if not 0.0 < value < 1.0:
        raise ConfigError(f"params.yaml: '{where}' must be between 0 and 1, got {value}")
    return value


def parse_objectives(raw: dict[str, Any]) -> Objectives:
    """Validate the objectives section: a known task, known metrics and a sensible minimum."""
    s = _section(raw, "objectives")
    task = _get(s, "objectives", "task", str)
    if task not in TASKS:
        raise ConfigError(f"params.yaml: 'objectives.task' is {task!r}; supported: {list(TASKS)}")
    primary = _get(s, "objectives", "primary_metric", str)
    kpis = tuple(_get(s, "objectives", "kpis", list, default=[primary]))
    for name in (primary, *kpis):
        if name not in KPI_NAMES:
            raise ConfigError(
                f"params.yaml: unknown metric {name!r} in 'objectives'; "
                f"known metrics: {sorted(KPI_NAMES)}"
            )
    if primary not in kpis:
        kpis = (primary, *kpis)
    minimum = _get(s, "objectives", "minimum", float)
    minimums = {primary: minimum}
    for name, bound in _get(s, "objectives", "minimums", dict, default={}).items():
        if name not in KPI_NAMES:
            raise ConfigError(
                f"params.yaml: unknown metric {name!r} in 'objectives.minimums'; "
                f"known metrics: {sorted(KPI_NAMES)}"
            )
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            raise ConfigError(f"params.yaml: 'objectives.minimums.{name}' must be a number")
        minimums[name] = float(bound)
    th = _get(s, "objectives", "threshold", dict, default={})
    th_metric = _get(th, "objectives.threshold", "maximize", str, default=None)
    if th_metric is not None and th_metric not in KPI_NAMES:
        raise ConfigError(
            f"params.yaml: unknown metric {th_metric!r} in 'objectives.threshold.maximize'"
        )
    cost_fp = _get(th, "objectives.threshold", "cost_fp", float, default=1.0)
    cost_fn = _get(th, "objectives.threshold", "cost_fn", float, default=1.0)
    if cost_fp < 0 or cost_fn < 0 or cost_fp + cost_fn == 0:
        raise ConfigError("params.yaml: 'objectives.threshold' costs must be >= 0, not both 0")
    kpis = tuple(dict.fromkeys((*kpis, *minimums)))
    slice_min_rows = _get(s, "objectives", "slice_min_rows", int, default=100)
    if slice_min_rows < 2:
        raise ConfigError("params.yaml: 'objectives.slice_min_rows' must be at least 2")
    return Objectives(
        task=task,
        target=_get(s, "objectives", "target", str),
        positive_class=str(_get(s, "objectives", "positive_class", (str, int, bool))),
        primary_metric=primary,
        minimum=minimum,
        kpis=kpis,
        minimums=minimums,
        threshold_metric=th_metric,
        cost_fp=cost_fp,
        cost_fn=cost_fn,
        slices=tuple(_get(s, "objectives", "slices", list, default=[])),
        slice_min_rows=slice_min_rows,
    )


def parse_data(raw: dict[str, Any]) -> DataConfig:
    """Validate the data section: every source has a name, a path and a known format."""
    s = _section(raw, "data")
    columns = s.get("columns")
    if columns is not None and not (
        isinstance(columns, list) and all(isinstance(c, str) for c in columns)
    ):
        raise ConfigError("params.yaml: 'data.columns' must be a list of column names")
    sources_raw = _get(s, "data", "sources", list)
    if not sources_raw:
        raise ConfigError("params.yaml: 'data.sources' is empty; declare at least one source")
    sources, names = [], set()
    for i, src in enumerate(sources_raw):
        where = f"data.sources[{i}]"
        if not isinstance(src, dict):
            raise ConfigError(f"params.yaml: '{where}' must be a mapping")
        name = _get(src, where, "name", str)
        if name in names:
            raise ConfigError(f"params.yaml: source name {name!r} is used twice")
        names.add(name)
        kind = _get(src, where, "kind", str, default="file")
        if kind not in SOURCE_KINDS:
            raise ConfigError(f"params.yaml: '{where}.kind' is {kind!r}; use one of {SOURCE_KINDS}")
        fmt = _get(src, where, "format", str, default="csv")
        if fmt not in SOURCE_FORMATS:
            raise ConfigError(
                f"params.yaml: '{where}.format' is {fmt!r}; use one of {SOURCE_FORMATS}"
            )
        header = _get(src, where, "header", bool, default=True)
        src_columns = src.get("columns", None if header else columns)
        if fmt == "csv" and not header and not src_columns:
            raise ConfigError(
                f"params.yaml: '{where}' has no header line; give 'columns' or 'data.columns'"
            )
        sha = src.get("sha256")
        if sha is not None and not (isinstance(sha, str) and len(sha) == 64):
            raise ConfigError(f"params.yaml: '{where}.sha256' must be 64 hex digits")
        value_map = _get(src, where, "value_map", dict, default={})
        if not all(isinstance(m, dict) for m in value_map.values()):
            raise ConfigError(f"params.yaml: '{where}.value_map' maps a column to {{old: new}}")
        source = Source(
            name=name,
            kind=kind,
            path=_get(src, where, "path", str, default=None),
            format=fmt,
            header=header,
            skip_rows=_get(src, where, "skip_rows", int, default=0),
            na_values=tuple(str(v) for v in _get(src, where, "na_values", list, default=[])),
            sha256=sha.lower() if sha else None,
            columns=tuple(src_columns) if src_columns else None,
            value_map={
                str(c): {str(k): str(v) for k, v in m.items()} for c, m in value_map.items()
            },
            url=_get(src, where, "url", str, default=None),
            url_env=_get(src, where, "url_env", str, default=None),
            table=_get(src, where, "table", str, default=None),
            query=_get(src, where, "query", str, default=None),
            timeout=_get(src, where, "timeout", float, default=30.0),
            retries=_get(src, where, "retries", int, default=3),
        )
        _check_source(source, where)
        sources.append(source)
    return DataConfig(columns=tuple(columns) if columns else None, sources=tuple(sources))


def _check_source(src: Source, where: str) -> None:
    """Each kind of source needs its own keys; credentials never sit in params.yaml."""
    if src.kind in ("file", "landing") and not src.path:
        raise ConfigError(f"params.yaml: '{where}' ({src.kind}) needs 'path'")
    if src.kind == "database":
        if bool(src.url) == bool(src.url_env):
            raise ConfigError(f"params.yaml: '{where}' (database) needs one of 'url' or 'url_env'")
        if bool(src.table) == bool(src.query):
            raise ConfigError(f"params.yaml: '{where}' (database) needs one of 'table' or 'query'")
    if src.kind == "http":
        if not (src.url or src.url_env):
            raise ConfigError(f"params.yaml: '{where}' (http) needs 'url'")
        if not src.sha256:
            raise ConfigError(
                f"params.yaml: '{where}' (http) needs 'sha256': a download is pinned by its digest"
            )
    if src.url and "@" in src.url.split("://", 1)[-1].split("/", 1)[0]:
        raise ConfigError(
            f"params.yaml: '{where}.url' holds credentials; put the whole URL in an environment "
            "variable and name it in 'url_env' instead"
        )
    if src.timeout <= 0 or src.retries < 0:
        raise ConfigError(f"params.yaml: '{where}' needs timeout > 0 and retries >= 0")


def _choice(value: str, choices: tuple[str, ...], where: str) -> str:
    if value not in choices:
        raise ConfigError(f"params.yaml: '{where}' is {value!r}; use one of {list(choices)}")
    return value


def parse_validate(raw: dict[str, Any]) -> ValidateConfig:
    """Validate the validate section: a schema path and a severity per kind of finding."""
    s = _section(raw, "validate")
    severity = dict(_get(s, "validate", "severity", dict, default={}))
    for kind, level in severity.items():
        _choice(kind, FINDING_KINDS, "validate.severity key")
        _choice(level, SEVERITIES, f"validate.severity.{kind}")
    defaults = {k: "error" for k in FINDING_KINDS} | {
        "extra_column": "warning", "unseen_category": "warning", "duplicate_rows": "warning",
    }  # fmt: skip
    return ValidateConfig(
        schema=_get(s, "validate", "schema", str, default="schema.yaml"),
        max_null_rate=_get(s, "validate", "max_null_rate", float, default=0.5),
        examples=_get(s, "validate", "examples", int, default=5),
        severity=defaults | severity,
    )


def parse_features(raw: dict[str, Any]) -> FeaturesConfig:
    """Validate the features section: derived steps with known operations, a selection method."""
    s = raw.get("features") or {}
    derived = _get(s, "features", "derived", list, default=[])
    for i, step in enumerate(derived):
        where = f"features.derived[{i}]"
        if not isinstance(step, dict):
            raise ConfigError(f"params.yaml: '{where}' must be a mapping")
        _get(step, where, "name", str)
        op = _choice(_get(step, where, "op", str), tuple(DERIVED_OPS), f"{where}.op")
        need = DERIVED_OPS[op]
        if need == "columns":
            cols = _get(step, where, "columns", list)
            if len(cols) != 2 and op in ("difference", "ratio"):
                raise ConfigError(f"params.yaml: '{where}.columns' needs two columns for {op}")
            if len(cols) < 2:
                raise ConfigError(f"params.yaml: '{where}.columns' needs at least two columns")
        else:
            _get(step, where, "column", str)
        if op == "bin":
            edges = _get(step, where, "edges", list)
            if len(edges) < 1 or sorted(edges) != edges:
                raise ConfigError(f"params.yaml: '{where}.edges' must be increasing numbers")
    sel = _get(s, "features", "selection", dict, default={})
    k = _get(sel, "features.selection", "k", int, default=0)
    if sel.get("method") == "mutual_info" and k < 1:
        raise ConfigError(
            "params.yaml: 'features.selection.k' must be at least 1 with method mutual_info"
        )
    return FeaturesConfig(
        derived=tuple(derived),
        include=tuple(_get(s, "features", "include", list, default=[])),
        exclude=tuple(_get(s, "features", "exclude", list, default=[])),
        selection_method=_choice(
            _get(sel, "features.selection", "method", str, default="none"),
            SELECTION_METHODS,
            "features.selection.method",
        ),
        selection_k=k,
    )


def parse_prepare(raw: dict[str, Any], data: DataConfig | None = None) -> PrepareConfig:
    """Validate the prepare section; a by-source split must name sources that exist."""
    s = _section(raw, "prepare")
    sp = _get(s, "prepare", "split", dict)
    method = _get(sp, "prepare.split", "method", str)
    if method not in SPLIT_METHODS:
        raise ConfigError(
            f"params.yaml: 'prepare.split.method' is {method!r}; use one of {SPLIT_METHODS}"
        )
    split = SplitConfig(
        method=method,
        train_sources=tuple(_get(sp, "prepare.split", "train_sources", list, default=[])),
        test_sources=tuple(_get(sp, "prepare.split", "test_sources", list, default=[])),
        test_size=_fraction(
            _get(sp, "prepare.split", "test_size", float, default=0.25), "prepare.split.test_size"
        ),
        seed=_get(sp, "prepare.split", "seed", int, default=42),
        group_column=_get(sp, "prepare.split", "group_column", str, default=None),
        time_column=_get(sp, "prepare.split", "time_column", str, default=None),
    )
    if method == "group" and not split.group_column:
        raise ConfigError("params.yaml: 'prepare.split' method group needs 'group_column'")
    if method == "time" and not split.time_column:
        raise ConfigError("params.yaml: 'prepare.split' method time needs 'time_column'")
    if method == "by_source":
        if not split.train_sources or not split.test_sources:
            raise ConfigError(
                "params.yaml: 'prepare.split' by_source needs train_sources and test_sources"
            )
        if set(split.train_sources) & set(split.test_sources):
            raise ConfigError("params.yaml: a source is listed both for training and testing")
        if data is not None:
            known = {src.name for src in data.sources}
            for name in (*split.train_sources, *split.test_sources):
                if name not in known:
                    raise ConfigError(
                        f"params.yaml: 'prepare.split' names source {name!r}, "
                        f"which is not in data.sources {sorted(known)}"
                    )
    cl = _get(s, "prepare", "clean", dict, default={})
    ol = _get(s, "prepare", "outliers", dict, default={})
    outliers = OutliersConfig(
        method=_choice(
            _get(ol, "prepare.outliers", "method", str, default="none"),
            OUTLIER_METHODS,
            "prepare.outliers.method",
        ),
        columns=tuple(_get(ol, "prepare.outliers", "columns", list, default=[])),
        iqr_k=_get(ol, "prepare.outliers", "iqr_k", float, default=3.0),
        zscore=_get(ol, "prepare.outliers", "zscore", float, default=4.0),
        contamination=_fraction(
            _get(ol, "prepare.outliers", "contamination", float, default=0.01),
            "prepare.outliers.contamination",
        ),
        seed=_get(ol, "prepare.outliers", "seed", int, default=42),
    )
    return PrepareConfig(
        drop_columns=tuple(_get(s, "prepare", "drop_columns", list, default=[])),
        clean=CleanConfig(
            drop_duplicates=_get(cl, "prepare.clean", "drop_duplicates", bool, default=True),
            drop_conflicting_labels=_get(
                cl, "prepare.clean", "drop_conflicting_labels", bool, default=True
            ),
        ),
        outliers=outliers,
        split=split,
    )


def parse_train(raw: dict[str, Any]) -> TrainConfig:
    """Validate the train section; unknown XGBoost keys are refused so typos do not pass."""
    s = _section(raw, "train")
    xgb = dict(_get(s, "train", "xgb", dict, default={}))
    unknown = sorted(set(xgb) - XGB_KEYS)
    if unknown:
        raise ConfigError(
            f"params.yaml: unknown key(s) {unknown} in 'train.xgb'; known: {sorted(XGB_KEYS)}"
        )
    n_est = xgb.get("n_estimators", 100)
    if not isinstance(n_est, int) or n_est < 1:
        raise ConfigError(f"params.yaml: 'train.xgb.n_estimators' must be >= 1, got {n_est!r}")
    candidates = tuple(_get(s, "train", "candidates", list, default=["xgboost"]))
    if not candidates:
        raise ConfigError("params.yaml: 'train.candidates' is empty; name at least one model")
    for name in candidates:
        _choice(name, CANDIDATES, "train.candidates entry")
    if len(set(candidates)) != len(candidates):
        raise ConfigError(f"params.yaml: 'train.candidates' names a model twice: {candidates}")
    models = dict(_get(s, "train", "models", dict, default={}))
    for name, fixed in models.items():
        _choice(name, CANDIDATES, "train.models key")
        if not isinstance(fixed, dict):
            raise ConfigError(f"params.yaml: 'train.models.{name}' must map params to values")
        bad = sorted(set(fixed) - XGB_KEYS) if name == "xgboost" else []
        if bad:
            raise ConfigError(
                f"params.yaml: unknown XGBoost key(s) {bad} in 'train.models.xgboost'"
            )
    search = dict(_get(s, "train", "search", dict, default={}))
    for name, space in search.items():
        _choice(name, CANDIDATES, "train.search key")
        if not isinstance(space, dict):
            raise ConfigError(f"params.yaml: 'train.search.{name}' must map params to ranges")
        for param, rng in space.items():
            where = f"train.search.{name}.{param}"
            ok = isinstance(rng, dict) and (
                ("choices" in rng and isinstance(rng["choices"], list) and rng["choices"])
                or ("low" in rng and "high" in rng and rng["low"] < rng["high"])
            )
            if not ok:
                raise ConfigError(
                    f"params.yaml: '{where}' must be {{low, high[, log]}} with low < high, "
                    "or {choices: [...]}"
                )
            if name == "xgboost" and param not in XGB_KEYS:
                raise ConfigError(f"params.yaml: '{where}': unknown XGBoost parameter {param!r}")
    tuning = _get(s, "train", "tuning", dict, default={})
    trials = _get(tuning, "train.tuning", "trials", int, default=0)
    timeout = _get(tuning, "train.tuning", "timeout", float, default=None)
    folds = _get(s, "train", "cv_folds", int, default=5)
    if folds < 2:
        raise ConfigError(f"params.yaml: 'train.cv_folds' must be at least 2, got {folds}")
    if trials < 0 or (timeout is not None and timeout <= 0):
        raise ConfigError("params.yaml: 'train.tuning' needs trials >= 0 and timeout > 0 or null")
    by_candidate = dict(_get(tuning, "train.tuning", "trials_by_candidate", dict, default={}))
    for name, n in by_candidate.items():
        _choice(name, CANDIDATES, "train.tuning.trials_by_candidate key")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ConfigError(
                f"params.yaml: 'train.tuning.trials_by_candidate.{name}' must be an integer >= 0"
            )
    baseline = _get(s, "train", "baseline", str, default=None)
    if baseline is not None:
        _choice(baseline, CANDIDATES, "train.baseline")
    return TrainConfig(
        seed=_get(s, "train", "seed", int, default=42),
        nthread=_get(s, "train", "nthread", int, default=0),
        validation_fraction=_fraction(
            _get(s, "train", "validation_fraction", float, default=0.1),
            "train.validation_fraction",
        ),
        xgb=xgb,
        device=_choice(_get(s, "train", "device", str, default="cpu"), DEVICES, "train.device"),
        candidates=candidates,
        cv_folds=folds,
        class_weight=_choice(
            _get(s, "train", "class_weight", str, default="none"),
            CLASS_WEIGHTS,
            "train.class_weight",
        ),
        tuning_trials=trials,
        tuning_timeout=timeout,
        trials_by_candidate=by_candidate,
        models=models,
        search=search,
        baseline=baseline,
    )


def parse_evaluate(raw: dict[str, Any]) -> EvaluateConfig:
    s = _section(raw, "evaluate")
    return EvaluateConfig(
        curve_points=_get(s, "evaluate", "curve_points", int, default=200),
    )


def parse_gate(raw: dict[str, Any]) -> GateConfig:
    """Validate the gate section (all keys optional)."""
    s = raw.get("gate") or {}
    tolerance = _get(s, "gate", "tolerance", float, default=0.0)
    if tolerance < 0:
        raise ConfigError(f"params.yaml: 'gate.tolerance' must be >= 0, got {tolerance}")
    return GateConfig(
        tolerance=tolerance,
        fail_on_reject=_get(s, "gate", "fail_on_reject", bool, default=True),
        compare_champion=_get(s, "gate", "compare_champion", bool, default=True),
    )


def parse_monitor(raw: dict[str, Any]) -> MonitorConfig:
    s = _section(raw, "monitor")
    return MonitorConfig(
        alpha=_fraction(_get(s, "monitor", "alpha", float, default=0.01), "monitor.alpha"),
        psi_threshold=_get(s, "monitor", "psi_threshold", float, default=0.1),
        bins=_get(s, "monitor", "bins", int, default=10),
    )


def read_raw(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Read params.yaml as plain data, with a clear error if it is absent or not YAML."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found; run from the project root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections")
    return raw


def load(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate every section of params.yaml."""
    raw = read_raw(path)
    data = parse_data(raw)
    return Params(
        objectives=parse_objectives(raw),
        data=data,
        validate=parse_validate(raw),
        prepare=parse_prepare(raw, data),
        features=parse_features(raw),
        train=parse_train(raw),
        evaluate=parse_evaluate(raw),
        monitor=parse_monitor(raw),
    )
