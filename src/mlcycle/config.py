"""Load ``params.yaml`` into typed, validated settings.

This is the one module that knows the layout of the file. Every stage calls :func:`load`
and reads only its own section, so a mistake is reported with the key that holds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlcycle.metrics import KPI_FUNCTIONS, TASKS

PARAMS_FILE = "params.yaml"


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


@dataclass(frozen=True)
class Source:
    """One file the gather stage reads into the snapshot."""

    name: str
    path: str
    format: str = "csv"
    header: bool = True
    skip_rows: int = 0
    na_values: tuple[str, ...] = ()
    sha256: str | None = None
    columns: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DataConfig:
    columns: tuple[str, ...] | None
    sources: tuple[Source, ...]


@dataclass(frozen=True)
class SplitConfig:
    method: str
    train_sources: tuple[str, ...] = ()
    test_sources: tuple[str, ...] = ()
    test_size: float = 0.25
    seed: int = 42


@dataclass(frozen=True)
class PrepareConfig:
    target_strip_suffix: str
    drop_columns: tuple[str, ...]
    split: SplitConfig


@dataclass(frozen=True)
class TrainConfig:
    seed: int
    nthread: int
    validation_fraction: float
    xgb: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluateConfig:
    threshold: float
    curve_points: int


@dataclass(frozen=True)
class MonitorConfig:
    alpha: float
    psi_threshold: float
    bins: int


@dataclass(frozen=True)
class Params:
    objectives: Objectives
    data: DataConfig
    prepare: PrepareConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    monitor: MonitorConfig


SOURCE_FORMATS = ("csv", "parquet", "jsonl")
SPLIT_METHODS = ("by_source", "stratified")
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
        if name not in KPI_FUNCTIONS:
            raise ConfigError(
                f"params.yaml: unknown metric {name!r} in 'objectives'; "
                f"known metrics: {sorted(KPI_FUNCTIONS)}"
            )
    if primary not in kpis:
        kpis = (primary, *kpis)
    return Objectives(
        task=task,
        target=_get(s, "objectives", "target", str),
        positive_class=str(_get(s, "objectives", "positive_class", (str, int, bool))),
        primary_metric=primary,
        minimum=_get(s, "objectives", "minimum", float),
        kpis=kpis,
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
        sources.append(
            Source(
                name=name,
                path=_get(src, where, "path", str),
                format=fmt,
                header=header,
                skip_rows=_get(src, where, "skip_rows", int, default=0),
                na_values=tuple(str(v) for v in _get(src, where, "na_values", list, default=[])),
                sha256=sha.lower() if sha else None,
                columns=tuple(src_columns) if src_columns else None,
            )
        )
    return DataConfig(columns=tuple(columns) if columns else None, sources=tuple(sources))


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
    )
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
    return PrepareConfig(
        target_strip_suffix=_get(s, "prepare", "target_strip_suffix", str, default=""),
        drop_columns=tuple(_get(s, "prepare", "drop_columns", list, default=[])),
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
    return TrainConfig(
        seed=_get(s, "train", "seed", int, default=42),
        nthread=_get(s, "train", "nthread", int, default=0),
        validation_fraction=_fraction(
            _get(s, "train", "validation_fraction", float, default=0.1),
            "train.validation_fraction",
        ),
        xgb=xgb,
    )


def parse_evaluate(raw: dict[str, Any]) -> EvaluateConfig:
    s = _section(raw, "evaluate")
    return EvaluateConfig(
        threshold=_fraction(_get(s, "evaluate", "threshold", float), "evaluate.threshold"),
        curve_points=_get(s, "evaluate", "curve_points", int, default=200),
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
        prepare=parse_prepare(raw, data),
        train=parse_train(raw),
        evaluate=parse_evaluate(raw),
        monitor=parse_monitor(raw),
    )
