"""Stage `package`: assemble the verified, traceable model bundle.

Inputs: models/train/ (the chosen model only; not the baseline), metrics/train.json,
metrics/evaluate.json, metrics/validation.json (its possible leaks, for the model card), the
data snapshot and test split (hashed), the training split (hashed and profiled), the test
predictions (profiled; at most PROFILE_ROWS rows of each); params
`package`, `objectives`, `train`, `monitor.bins`; schema.yaml and the severities of
`validate.severity` (the rules one record can break, which the service and the batch scorer
apply). Each data set is a Parquet file or a folder of parts (the Dask engine).
Outputs: models/bundle/ (model.ubj or model.skops, signature.json, metadata.json,
reference_profile.json, row_rules.json, the model card, SHA256SUMS).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from mlcycle import config, drift, tasks
from mlcycle.bundle import PROFILE_FILE, RULES_FILE, git_state, library_versions, write_bundle
from mlcycle.card import card_data, card_markdown
from mlcycle.config import read_raw
from mlcycle.datasets import dataset_digest, sample_dataset
from mlcycle.estimate import estimate_kpi
from mlcycle.features import Signature
from mlcycle.io import dumps_json, read_json
from mlcycle.models import MODEL_INFO, model_files
from mlcycle.pipeline import data_hashes, read_lock
from mlcycle.schema import load_schema
from mlcycle.schema.rows import RowRules
from mlcycle.stages import (
    BUNDLE,
    METRICS,
    MODEL_DIR,
    PREDICTIONS,
    SIGNATURE_FILE,
    SNAPSHOT,
    TEST,
    TRAIN,
    log,
    run,
)
from mlcycle.tasks import Decision, as_decision

# The reference profile (monitoring's baseline) is built from at most this many rows of the
# training split and of the test predictions, chosen by row hash: quantile bins and category
# shares from a million rows are as good as from all, and the package stage's memory stays
# flat however large the data (the Dask engine's data sets). Smaller data is profiled whole.
PROFILE_ROWS = 1_000_000


def reference_output(predictions: pd.DataFrame, signature: Signature) -> np.ndarray:
    """The model's output on the test split, from evaluate's prediction file (binary
    ``probability``, multiclass ``probability_<class>``, regression ``prediction``)."""
    return tasks.get(signature.task).output_from_columns(predictions, signature.classes)


def reference_profile(params: config.Params, signature: Signature, decision: Decision) -> dict:
    """The training split's profile, with the model's predictions on the test split and its
    primary metric there, realised and estimated from the probabilities."""
    output = reference_output(sample_dataset(PREDICTIONS, PROFILE_ROWS), signature)
    primary = params.objectives.primary_metric
    realized = read_json(f"{METRICS}/evaluate.json").get(primary)
    performance = {
        "metric": primary,
        "realized": realized,
        "estimated": estimate_kpi(signature.task, primary, output, decision),
    }
    return drift.build_profile(
        sample_dataset(TRAIN, PROFILE_ROWS, columns=[*signature.input_columns, signature.target]),
        signature,
        params.monitor.bins,
        reference_output=output,
        decision=decision,
        performance=performance,
    )


def used_leaks(validation: dict, signature: Signature) -> list[dict]:
    """The possible leaks validate found (:mod:`mlcycle.schema.leaks`) among the columns the
    model uses: the ones excluded or unused since are no concern of its card."""
    inputs = {f.name for f in signature.inputs or signature.features}
    used = inputs - set(signature.unused_inputs)
    return [leak for leak in validation.get("leaks", []) if leak["column"] in used]


def main() -> None:
    params = config.load()
    raw = read_raw()
    signature_doc = read_json(SIGNATURE_FILE)
    signature = Signature.from_dict(signature_doc)
    model_info = read_json(Path(MODEL_DIR) / MODEL_INFO)
    kind = model_info["kind"]
    training = read_json(f"{METRICS}/train.json")
    chosen = read_json(f"{METRICS}/threshold.json")
    metadata = {
        "name": params.package.name,
        "task": params.objectives.task,
        "classes": list(signature.classes),
        "decision": chosen["decision"],
        "decision_rule": chosen["rule"],
        "best_rounds": model_info.get("rounds"),
        "model_params": model_info.get("params"),
        "selection": {
            k: training.get(k)
            for k in ("metric", "cv_folds", "winner", "runner_up", "lead", "candidates")
        },
        "objectives": raw["objectives"],
        "params": {
            "train": raw["train"],
            "prepare": raw["prepare"],
            "features": raw.get("features", {}),
        },
        "metrics": read_json(f"{METRICS}/evaluate.json"),
        "data": {path: dataset_digest(path) for path in (SNAPSHOT, TRAIN, TEST)},
        "git": git_state(),
        "libraries": library_versions(),
    }
    metadata["slice_gaps"] = read_json(f"{METRICS}/slices.json")["gaps"]
    metadata["gate"] = read_json(f"{METRICS}/gate.json")
    metadata["possible_leaks"] = used_leaks(read_json(f"{METRICS}/validation.json"), signature)
    metadata["dvc_lock"] = data_hashes(read_lock())  # this run's stages so far
    metadata["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    metadata["limitations"] = [
        "Trained and tested on the data named below; other populations may be served worse.",
        "Slices smaller than 30 rows are not scored; see slice_gaps for measured gaps.",
        "Probabilities are as calibrated as the calibration plot shows; no recalibration.",
    ]
    card = card_data({**metadata, "model_kind": kind})
    profile = reference_profile(params, signature, as_decision(chosen["decision"]))
    rules = RowRules.of(load_schema(params.validate.schema), params.validate.severity)
    extra = {
        PROFILE_FILE: dumps_json(profile).encode(),
        RULES_FILE: dumps_json(rules.to_dict()).encode(),
        "model_card.json": dumps_json(card).encode(),
        "model_card.md": card_markdown(card).encode(),
    }
    model_bytes = (Path(MODEL_DIR) / model_files()[kind]).read_bytes()
    write_bundle(BUNDLE, model_bytes, signature, metadata, kind=kind, extra_files=extra)
    log("package", f"bundle written to {BUNDLE} (model {metadata['name']}, a {kind})")


if __name__ == "__main__":
    run("package", main)
