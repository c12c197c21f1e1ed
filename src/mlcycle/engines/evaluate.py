"""The evaluate stage on the Dask engine: the test split scored partition by partition.

Each worker loads the model (and the untuned baseline) once and scores its partitions; the
test predictions are written as Parquet parts beside the local engine's columns. What the
metrics need comes back to this process: the label, the model's and the baseline's outputs and
the slice columns (a few numbers per row, not the rows), up to ``EXACT_ROWS`` test rows; then
every KPI, interval, slice, plot and summary is computed by the local engine's own code, so
both engines report the same figures for the same predictions. Unseen categories are counted
per partition; the SHAP summary uses a sample of ``SHAP_ROWS`` rows chosen by row hash.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlcycle import config
from mlcycle.engines import dataset_rows, read_dataset, sample_dataset, write_dataset
from mlcycle.features import Signature, encode_target, to_model_frame, unseen_categories
from mlcycle.metrics import prediction_frame

if TYPE_CHECKING:
    from distributed import Client

EXACT_ROWS = 20_000_000  # test rows whose labels and outputs this process gathers
SHAP_ROWS = 2_000
_MODELS: dict[tuple[str, float], Any] = {}


def _model(directory: str) -> Any:
    """The model in ``directory``, loaded once per worker (and again when it changes)."""
    from mlcycle.models import MODEL_INFO, load_model_dir

    key = (directory, Path(directory, MODEL_INFO).stat().st_mtime)
    if key not in _MODELS:
        _MODELS[key] = load_model_dir(directory)[0]
    return _MODELS[key]


def score_part(
    part: pd.DataFrame, model_dir: str, baseline_dir: str | None, sig_doc: dict, slices: list
) -> pd.DataFrame:
    """One partition's predictions (the local file's columns), the baseline's output
    (``__base_*``) and the slice columns."""
    sig = Signature.from_dict(sig_doc)
    X = to_model_frame(part, sig)
    y = encode_target(part[sig.target], sig)
    out = prediction_frame(_model(model_dir).output(X), y, sig.task, sig.classes)
    if baseline_dir:
        base = prediction_frame(_model(baseline_dir).output(X), y, sig.task, sig.classes)
        for col in base.columns.drop("actual"):
            out[f"__base_{col}"] = base[col].to_numpy()
    for col in slices:
        out[f"__slice_{col}"] = part[col].to_numpy()
    return out


def _unseen(part: pd.DataFrame, sig_doc: dict) -> pd.Series:
    found = unseen_categories(part, Signature.from_dict(sig_doc))
    return pd.Series([{k: set(v) for k, v in found.items()}])


def output_of(frame: pd.DataFrame, sig: Signature, prefix: str = "") -> np.ndarray:
    """The model output matrix (or vector) from prediction-file columns."""
    if not sig.is_classification:
        return frame[f"{prefix}prediction"].to_numpy(float)
    if sig.task == "binary_classification":
        p = frame[f"{prefix}probability"].to_numpy(float)
        return np.column_stack([1 - p, p])
    return frame[[f"{prefix}probability_{c}" for c in sig.classes]].to_numpy(float)


def main_dask(params: config.Params, signature: Signature, client: Client) -> None:
    """Score the test split on the cluster and report as the local engine does."""
    from mlcycle.models import load_model_dir
    from mlcycle.stages import BASELINE_DIR, MODEL_DIR, PREDICTIONS, TEST, log
    from mlcycle.stages.evaluate import report

    say = lambda msg: log("evaluate", msg)  # noqa: E731
    obj = params.objectives
    rows = dataset_rows(TEST)
    if rows > EXACT_ROWS:
        raise ValueError(
            f"the test split has {rows} rows; the Dask engine's evaluation gathers labels and "
            f"outputs of at most {EXACT_ROWS} rows. Test on a smaller split (prepare.split)"
        )
    test = read_dataset(TEST)
    unknown = [c for c in obj.slices if c not in test.columns]
    if unknown:
        raise ValueError(
            f"objectives.slices names column(s) {unknown} that the test split does not have; "
            f"columns are {list(test.columns)}"
        )
    model_dir = str(Path(MODEL_DIR).resolve())
    base_dir = str(Path(BASELINE_DIR).resolve()) if Path(BASELINE_DIR).is_dir() else None
    doc = signature.to_dict()
    scored = test.map_partitions(
        score_part, model_dir, base_dir, doc, list(obj.slices),
        meta=score_part(test._meta, model_dir, base_dir, doc, list(obj.slices)),
    ).persist()  # fmt: skip
    local_cols = [c for c in scored.columns if not c.startswith("__")]
    write_dataset(PREDICTIONS, scored[local_cols], say)
    narrow = scored.compute()
    y = narrow["actual"].to_numpy()
    out = output_of(narrow, signature)
    base_out = None
    if base_dir:
        base_out = (load_model_dir(base_dir)[0].kind, output_of(narrow, signature, "__base_"))
    slice_frame = pd.DataFrame(
        {c: narrow[f"__slice_{c}"].to_numpy() for c in obj.slices}, index=range(len(narrow))
    )
    unseen_sets: dict[str, set] = {}
    for found in test.map_partitions(_unseen, doc, meta=(None, object)).compute():
        for k, v in found.items():
            unseen_sets.setdefault(k, set()).update(v)
    unseen = {k: len(v) for k, v in sorted(unseen_sets.items())}
    X = to_model_frame(sample_dataset(TEST, SHAP_ROWS), signature)
    model = load_model_dir(MODEL_DIR)[0]
    say(f"scored {len(narrow)} test rows in {test.npartitions} partition(s)")
    report(params, signature, model, slice_frame, y, out, X, base_out, unseen)
