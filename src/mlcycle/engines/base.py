"""The engine interface: the compute steps whose algorithms differ between engines, with typed
inputs and results.

A stage reads its settings, asks an :class:`Engine` for these steps and does everything else
(checks, the metrics JSON, reports, plots) once for both engines. An engine reads and writes
data sets in its own layout (one Parquet file locally, a folder of Parquet parts on Dask) and
reports progress through the ``say`` callback it was opened with. Paths come in as arguments:
nothing here knows the pipeline's layout.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mlcycle import config

if TYPE_CHECKING:
    from mlcycle.evaluation import Evaluation
    from mlcycle.features import Signature
    from mlcycle.models import FitResult, Model
    from mlcycle.schema import Schema
    from mlcycle.schema.findings import Finding
    from mlcycle.tuning import TuningResult

Say = Callable[[str], None]


class EngineError(ValueError):
    """The Dask cluster cannot be reached or started; the message says what to check."""


@dataclass
class SourceSet:
    """Every source read (gather), not yet written: each source's lineage, the columns read as
    text (``{column: {source: kind}}``), the snapshot's data columns (without the source
    column) and the engine's own handle on the rows."""

    lineage: list[dict[str, Any]]
    conflicts: dict[str, dict[str, str]]
    columns: list[str]
    rows: Any


@dataclass
class Checked:
    """The snapshot checked against the schema (validate): a frame standing for the data in the
    settings check, the findings, and the rows and data columns counted."""

    sample: pd.DataFrame
    findings: list[Finding]
    rows: int
    columns: int


@dataclass
class PreparedSplits:
    """The prepare stage's figures once both splits are written: the report of every step, the
    rows of each side (the training side before and after its removals), the target's make-up
    on each side and the training split's profile."""

    report: dict[str, Any]
    train_rows_split: int
    train_rows: int
    train_target: dict[str, Any]
    test_rows: int
    test_target: dict[str, Any]
    profile: dict[str, Any]


@dataclass
class Trained:
    """What the train stage writes: the signature, the search, the refitted winner and
    baseline, the winner's out-of-fold predictions and the rows trained on."""

    signature: Signature
    result: TuningResult
    final: FitResult
    baseline: FitResult | None
    oof: pd.DataFrame
    rows: int


@dataclass
class Evaluated:
    """The test split scored and measured (evaluate): the evaluation, the chosen model and
    the rows its SHAP summary samples."""

    evaluation: Evaluation
    model: Model
    X: pd.DataFrame


@dataclass(frozen=True)
class EvaluatePaths:
    """Where evaluate reads the test split, the models and the out-of-fold predictions, and
    writes the test predictions."""

    test: str
    model_dir: str
    baseline_dir: str
    oof: str
    predictions: str


class Engine(abc.ABC):
    """Where the stages compute: :class:`~mlcycle.engines.local.LocalEngine` (pandas, one
    process) or :class:`~mlcycle.engines.dask.DaskEngine` (a Dask cluster)."""

    def __init__(self, cfg: config.EngineConfig, say: Say) -> None:
        self.cfg = cfg
        self.say = say

    @abc.abstractmethod
    def read_sources(
        self, sources: tuple[config.Source, ...], root: Path, text_columns: tuple[str, ...]
    ) -> SourceSet:
        """Read and verify every source (quarantining malformed landing files) and unify them."""

    @abc.abstractmethod
    def write_snapshot(self, read: SourceSet, path: str) -> int:
        """Write the unified sources in a canonical row order at ``path``; the rows written."""

    @abc.abstractmethod
    def check_snapshot(
        self, path: str, schema: Schema, settings: config.ValidateConfig, target: str
    ) -> Checked:
        """The schema's findings over the snapshot at ``path``."""

    @abc.abstractmethod
    def prepare(
        self, params: config.Params, snapshot: str, train: str, test: str
    ) -> PreparedSplits:
        """Clean the snapshot, split it, remove training rows; write both splits."""

    @abc.abstractmethod
    def train(self, params: config.Params, path: str) -> Trained:
        """Tune every candidate on the training split at ``path``; refit the winner."""

    @abc.abstractmethod
    def evaluate(
        self, params: config.Params, signature: Signature, paths: EvaluatePaths
    ) -> Evaluated:
        """Score the test split (writing the predictions) and measure every figure."""

    @abc.abstractmethod
    def champion_kpis(
        self, test: str, bundle_dir: Path, names: list[str]
    ) -> dict[str, float | None]:
        """The KPIs ``names`` of the bundle at ``bundle_dir`` on the test split (the gate)."""
