"""The gate stage's step: the production model's KPIs on the test split."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mlcycle.bundle import load_bundle
from mlcycle.engines.base import Engine
from mlcycle.engines.dask import evaluate as on_dask
from mlcycle.features import encode_target
from mlcycle.metrics import compute_kpis
from mlcycle.predict import score

__all__ = ["champion_kpis"]


def champion_kpis(
    engine: Engine, test: str, bundle_dir: Path, names: list[str]
) -> dict[str, float | None]:
    """The KPIs ``names`` of the bundle at ``bundle_dir`` on the test split at ``test`` (on
    Dask scored partition by partition, never gathered here)."""
    if engine.client is not None:
        return on_dask.champion_kpis(engine.client, test, bundle_dir, names)
    bundle = load_bundle(bundle_dir)
    frame = pd.read_parquet(test)
    scores = score(bundle, frame)
    y = encode_target(frame[bundle.signature.target], bundle.signature)
    return compute_kpis(bundle.task, y, scores.output, bundle.threshold, names)
