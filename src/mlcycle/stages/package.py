"""Stage `package`: assemble the verified, traceable model bundle.

Inputs: models/train/ (the chosen model only; not the baseline), metrics/train.json,
metrics/evaluate.json, the data snapshot and splits (hashed, not read); params `package`,
`objectives`, `train`, `evaluate`.
Outputs: models/bundle/ (model.ubj or model.skops, signature.json, metadata.json, SHA256SUMS).
"""

from __future__ import annotations

from pathlib import Path

from mlcycle import config
from mlcycle.bundle import git_state, library_versions, write_bundle
from mlcycle.config import read_raw
from mlcycle.features import Signature
from mlcycle.io import read_json, sha256_file
from mlcycle.models import MODEL_FILES, MODEL_INFO
from mlcycle.stages import (
    BUNDLE,
    METRICS,
    MODEL_DIR,
    SIGNATURE_FILE,
    SNAPSHOT,
    TEST,
    TRAIN,
    log,
    run,
)


def main() -> None:
    params = config.load()
    raw = read_raw()
    signature_doc = read_json(SIGNATURE_FILE)
    signature = Signature.from_dict(signature_doc)
    model_info = read_json(Path(MODEL_DIR) / MODEL_INFO)
    kind = model_info["kind"]
    training = read_json(f"{METRICS}/train.json")
    metadata = {
        "name": raw.get("package", {}).get("name", "model"),
        "task": params.objectives.task,
        "threshold": params.evaluate.threshold,
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
        "data": {path: sha256_file(path) for path in (SNAPSHOT, TRAIN, TEST)},
        "git": git_state(),
        "libraries": library_versions(),
    }
    model_bytes = (Path(MODEL_DIR) / MODEL_FILES[kind]).read_bytes()
    write_bundle(BUNDLE, model_bytes, signature, metadata, kind=kind)
    log("package", f"bundle written to {BUNDLE} (model {metadata['name']}, a {kind})")


if __name__ == "__main__":
    run("package", main)
