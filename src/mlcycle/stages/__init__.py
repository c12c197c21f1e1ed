"""One module per dvc.yaml stage. Each reads its inputs, calls the library, writes its outputs.

The paths here are the ones dvc.yaml declares: each is an output there, and each stage lists
the ones its code names as deps or outputs (tests/test_dvc_yaml.py checks both). Stages never
import one another.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from mlcycle import pipeline

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


def tracked_outputs(stage: str, dvc_yaml: str | Path = pipeline.DVC_YAML) -> list[Path]:
    """The outputs of ``stage`` that git tracks (``cache: false`` in dvc.yaml): its metrics
    and plot data. None when there is no dvc.yaml (a stage run by hand)."""
    found = pipeline.read_stages(dvc_yaml).get(stage)
    return found.git_outputs if found is not None else []


Saved = dict[Path, bytes | None]


def save_files(paths: list[Path]) -> Saved:
    """The bytes of every file at or under ``paths``; None for a path that does not exist."""
    saved: Saved = {}
    for path in paths:
        if path.is_dir():
            saved.update({p: p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()})
        else:
            saved[path] = path.read_bytes() if path.is_file() else None
    return saved


def restore_files(paths: list[Path], saved: Saved) -> None:
    """Put ``paths`` back as :func:`save_files` found them: files written since are removed
    (a folder that did not exist goes), changed ones get their old bytes back."""
    for path in paths:
        if path.is_dir():
            for p in [p for p in path.rglob("*") if p.is_file() and saved.get(p) is None]:
                p.unlink()
            if not any(k.is_relative_to(path) and v is not None for k, v in saved.items()):
                shutil.rmtree(path)
        elif path.is_file() and saved.get(path) is None:
            path.unlink()
    for path, data in saved.items():
        if data is not None and (not path.is_file() or path.read_bytes() != data):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


def run(stage: str, body: Callable[[], None]) -> None:
    """Run a stage body; a user error prints a one-line reason and exits with status 1.

    A stage that fails, for any reason, leaves its git-tracked metrics and plot data as they
    were before it ran (dvc.yaml marks them ``persist: true`` so DVC does not delete them
    first): ``git status`` and ``dvc metrics diff`` then show no change from a failed run.
    """
    start = time.perf_counter()
    outputs = tracked_outputs(stage)
    saved = save_files(outputs)
    try:
        body()
    except BaseException as exc:
        restore_files(outputs, saved)
        if outputs:
            log(stage, "failed: its metrics files are left as they were")
        if isinstance(exc, KeyboardInterrupt) and stage_process():
            end_interrupted(stage)
        if isinstance(exc, USER_ERRORS):
            print(f"[{stage}] error: {exc}", file=sys.stderr, flush=True)
            if stage_process():
                end_process(1)
            raise SystemExit(1) from None
        raise
    log(stage, f"done in {time.perf_counter() - start:.1f}s")
    if stage_process():
        end_process(0)


def stage_process() -> bool:
    """Whether this process is a stage's command (``python -m mlcycle.stages.<stage>``, as
    dvc.yaml runs it), not a caller running a stage body in its own process (a test)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec is not None and spec.name.startswith(f"{__name__}.")


def end_process(code: int) -> NoReturn:
    """End a stage's process with ``code`` once its work is written, without the interpreter's
    teardown: the exit handlers run (logging's, multiprocessing's) and the standard streams are
    flushed, but the 2,000 modules a stage imports (pandas, scikit-learn, XGBoost) are not torn
    down one by one. That teardown costs about 0.5 s of CPU a process (6 processes importing
    train's and evaluate's modules: 14.7 to 15.4 s of CPU with it, 11.6 to 12.1 s without),
    paid by every stage of every `dvc repro`: a whole run on the suite's sample of Adult took
    15.6 and 17.8 s of CPU with it, 13.3 and 14.2 s without. A thread still running (none of
    ours is, at the end) is waited for as at any exit: then the process ends normally."""
    main = threading.main_thread()
    if any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def end_interrupted(stage: str) -> NoReturn:
    """End the stage's process at once, as SIGINT's default action does (Ctrl-C): a fit running
    in a worker thread (a scikit-learn fit, an XGBoost round) cannot be stopped, and Python
    would wait for it to end before exiting (it joins its threads). The stage's outputs are
    written atomically and its tracked files restored by now, so nothing is left half-written;
    dying by SIGINT tells dvc and the shell that the run was interrupted."""
    log(stage, "interrupted")
    sys.stdout.flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
    os._exit(128 + signal.SIGINT)  # if the signal is not delivered before kill returns
