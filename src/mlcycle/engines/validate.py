"""The validate stage's step: the schema's findings over the snapshot."""

from __future__ import annotations

import pandas as pd

from mlcycle import config
from mlcycle.engines.base import Checked, Engine
from mlcycle.engines.dask import validate as on_dask
from mlcycle.preflight import class_counts
from mlcycle.schema import BOOKKEEPING_COLUMNS, Schema
from mlcycle.schema.findings import check

__all__ = ["Checked", "check_snapshot"]


def check_snapshot(
    engine: Engine,
    path: str,
    schema: Schema,
    settings: config.ValidateConfig,
    target: str,
    count_classes: bool = False,
) -> Checked:
    """The schema's findings over the snapshot at ``path`` (on Dask, counted partition by
    partition with the same rules and merged), and with ``count_classes`` the rows per source
    and class of the target."""
    if engine.client is not None:
        return on_dask.check_snapshot(
            engine.client, path, schema, settings, target, count_classes, engine.cfg, engine.say
        )
    snapshot = pd.read_parquet(path)
    findings = check(
        snapshot,
        schema,
        severity=settings.severity,
        max_null_rate=settings.max_null_rate,
        examples=settings.examples,
        ignore=BOOKKEEPING_COLUMNS,
        max_unseen_share=settings.max_unseen_share,
    )
    columns = sum(1 for c in snapshot.columns if c not in BOOKKEEPING_COLUMNS)
    classes = class_counts(snapshot, target) if count_classes else {}
    return Checked(snapshot, findings, len(snapshot), columns, classes)
