"""One module per dvc.yaml stage. Each reads its inputs, calls the library, writes its outputs.

The paths here are the ones dvc.yaml declares; stages never import one another.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

SNAPSHOT = "data/raw/snapshot.parquet"
TRAIN = "data/prepared/train.parquet"
TEST = "data/prepared/test.parquet"
MODEL_DIR = "models/train"  # the chosen model: model.ubj or model.skops, and model.json
SIGNATURE_FILE = "models/train/signature.json"
BASELINE_DIR = "models/train/baseline"  # the untuned baseline, scored beside it by evaluate
OOF = "models/train/oof.parquet"  # out-of-fold predictions on the training split
TRIALS = "metrics/tuning/trials.csv"
PREDICTIONS = "data/evaluate/test_predictions.parquet"
BUNDLE = "models/bundle"
METRICS = "metrics"
PLOTS = "metrics/plots"

# Errors a user can cause and fix (bad params, bad data); anything else is a bug and keeps
# its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)


def log(stage: str, message: str) -> None:
    """Progress line on stderr, so DVC shows it while the stage runs."""
    print(f"[{stage}] {message}", file=sys.stderr, flush=True)


def run(stage: str, body: Callable[[], None]) -> None:
    """Run a stage body; a user error prints a one-line reason and exits with status 1."""
    start = time.perf_counter()
    try:
        body()
    except USER_ERRORS as exc:
        print(f"[{stage}] error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    log(stage, f"done in {time.perf_counter() - start:.1f}s")
