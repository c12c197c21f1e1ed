"""The gate stage's step: the production model's KPIs on the test split."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mlcycle.bundle import load_bundle
from mlcycle.engines.base import Engine
from mlcycle.engines.dask import evaluate as on_dask
from mlcycle.evaluation import frame_kpis, summarize
from mlcycle.features import encode_target
from mlcycle.metrics import prediction_frame, rounded
from mlcycle.predict import score

__all__ = ["champion_kpis"]


def champion_kpis(
    engine: Engine, test: str, bundle_dir: Path, names: list[str]
) -> dict[str, float | None]:
    """The KPIs ``names`` of the bundle at ``bundle_dir`` on the test split at ``test`` (on
    Dask scored partition by partition, never gathered here; locally the one partition)."""
    if engine.client is not None:
        return on_dask.champion_kpis(engine.client, test, bundle_dir, names)
    bundle = load_bundle(bundle_dir)
    sig = bundle.signature
    frame = pd.read_parquet(test)
    y = encode_target(frame[sig.target], sig)
    scored = prediction_frame(score(bundle, frame).output, y, sig.task, sig.classes)
    summary = summarize(scored, sig, bundle.decision, [], share=0.0)
    return rounded(frame_kpis(summary, scored, sig, bundle.decision, names))
