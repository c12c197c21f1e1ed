"""The Dask engine: every step on a Dask cluster, each data set a folder of Parquet parts.

One module per stage holds its partition code (:mod:`.gather`, :mod:`.validate`,
:mod:`.prepare`, :mod:`.train`, :mod:`.evaluate`); :mod:`.cluster` opens the client and
:mod:`.data` reads and writes partitioned data sets. Decisions that must not depend on how
rows are partitioned come from :func:`mlcycle.datasets.row_hash`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mlcycle import config
from mlcycle.engines.base import (
    Checked,
    Engine,
    Evaluated,
    EvaluatePaths,
    PreparedSplits,
    Say,
    SourceSet,
    Trained,
)
from mlcycle.engines.dask import evaluate, gather, prepare, train, validate
from mlcycle.engines.dask.cluster import dask_client
from mlcycle.features import Signature
from mlcycle.schema import Schema

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["DaskEngine", "dask_client"]


class DaskEngine(Engine):
    """A Dask cluster reached through ``client`` (opened and closed by the caller)."""

    def __init__(self, cfg: config.EngineConfig, say: Say, client: Client) -> None:
        super().__init__(cfg, say)
        self.client = client

    def read_sources(
        self, sources: tuple[config.Source, ...], root: Path, text_columns: tuple[str, ...]
    ) -> SourceSet:
        return gather.read_sources(self.client, sources, root, text_columns, self.say)

    def write_snapshot(self, read: SourceSet, path: str) -> int:
        return gather.write_snapshot(self.client, read, path, self.cfg, self.say)

    def check_snapshot(
        self, path: str, schema: Schema, settings: config.ValidateConfig, target: str
    ) -> Checked:
        return validate.check_snapshot(path, schema, settings, target)

    def prepare(
        self, params: config.Params, snapshot: str, train: str, test: str
    ) -> PreparedSplits:
        return prepare.prepare_dask(params, self.client, snapshot, train, test, self.say)

    def train(self, params: config.Params, path: str) -> Trained:
        return train.train_dask(params, self.client, path, self.say)

    def evaluate(
        self, params: config.Params, signature: Signature, paths: EvaluatePaths
    ) -> Evaluated:
        return evaluate.evaluate_dask(params, signature, self.client, paths, self.say)

    def champion_kpis(
        self, test: str, bundle_dir: Path, names: list[str]
    ) -> dict[str, float | None]:
        return evaluate.champion_kpis(self.client, test, bundle_dir, names)
