"""The engine interface: the compute steps whose algorithms differ between engines, with typed
inputs and results.

A stage reads its settings, runs these steps through its step module
(``mlcycle.engines.<stage>``, which holds the local code and calls the Dask one in
``mlcycle.engines.dask.<stage>``) and does everything else (checks, the metrics JSON, reports,
plots) once for both engines. One module per stage keeps each stage's ``dvc.yaml`` deps to the
code it runs: a change to training code re-runs train, not gather. An engine reads and writes
data sets in its own layout (one Parquet file locally, a folder of Parquet parts on Dask) and
reports progress through the ``say`` callback it was opened with. Paths come in as arguments:
nothing here knows the pipeline's layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from mlcycle import config

if TYPE_CHECKING:
    from distributed import Client

    from mlcycle.evaluation import Evaluation
    from mlcycle.features import Signature
    from mlcycle.models import FitResult, Model
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
    settings check, the findings, the rows and data columns counted, and (classification) the
    rows per source and class (:func:`mlcycle.preflight.class_counts`)."""

    sample: pd.DataFrame
    findings: list[Finding]
    rows: int
    columns: int
    classes: dict[tuple[str, str], int] = field(default_factory=dict)


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
    baseline, the winner's out-of-fold predictions, the rows trained on and (Dask only) the
    workers lost and the retries (``{"workers_lost": [...], "retries": n}``)."""

    signature: Signature
    result: TuningResult
    final: FitResult
    baseline: FitResult | None
    oof: pd.DataFrame
    rows: int
    cluster: dict[str, Any] | None = None


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


class Engine:
    """An open engine (:func:`mlcycle.engines.open_engine`): its settings, the ``say`` callback
    for progress lines and, on Dask, the cluster's ``client`` (None locally: pandas in this
    process). A stage passes it to its step module (:mod:`mlcycle.engines.gather` ...), which
    runs the step where the engine says."""

    def __init__(self, cfg: config.EngineConfig, say: Say, client: Client | None = None) -> None:
        self.cfg = cfg
        self.say = say
        self.client = client
