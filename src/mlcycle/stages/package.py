"""Stage `package`: assemble the verified, traceable model bundle.

Inputs: models/train/, metrics/evaluate.json, the data snapshot and splits (hashed, not read);
params `package`, `objectives`, `train`, `evaluate`.
Outputs: models/bundle/ (model.ubj, signature.json, metadata.json, SHA256SUMS).
"""

from __future__ import annotations

from pathlib import Path

from mlcycle import config
from mlcycle.bundle import git_state, library_versions, write_bundle
from mlcycle.config import read_raw
from mlcycle.features import Signature
from mlcycle.io import read_json, sha256_file
from mlcycle.stages import (
    BUNDLE,
    METRICS,
    MODEL_FILE,
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
    metadata = {
        "name": raw.get("package", {}).get("name", "model"),
        "task": params.objectives.task,
        "threshold": params.evaluate.threshold,
        "best_rounds": signature_doc.get("best_rounds"),
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
    write_bundle(BUNDLE, Path(MODEL_FILE).read_bytes(), signature, metadata)
    log("package", f"bundle written to {BUNDLE} (model {metadata['name']})")


if __name__ == "__main__":
    run("package", main)
