"""The stage runner: a failed stage leaves its git-tracked metrics as they were; a stage's
process ends without the interpreter's teardown."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlcycle.stages import run, tracked_outputs

DVC_YAML = """\
stages:
  score:
    cmd: python -m score
    outs:
      - models/out                 # cached: not the runner's business
      - metrics/curves:
          cache: false
          persist: true
    metrics:
      - metrics/score.json:
          cache: false
          persist: true
      - metrics/new.json:
          cache: false
          persist: true
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    (tmp_path / "metrics" / "curves").mkdir(parents=True)
    (tmp_path / "metrics" / "score.json").write_text('{"auc": 0.9}\n')
    (tmp_path / "metrics" / "curves" / "roc.json").write_text("[1, 2]\n")
    return tmp_path


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def overwrite_everything(root: Path) -> None:
    (root / "metrics" / "score.json").write_text('{"auc": 0.1}\n')
    (root / "metrics" / "new.json").write_text("{}\n")
    (root / "metrics" / "curves" / "roc.json").unlink()
    (root / "metrics" / "curves" / "pr.json").write_text("[3]\n")
    (root / "models").mkdir()
    (root / "models" / "out").write_text("partial")


def test_the_tracked_outputs_are_the_cache_false_ones(workdir: Path) -> None:
    assert tracked_outputs("score") == [
        Path("metrics/curves"),
        Path("metrics/score.json"),
        Path("metrics/new.json"),
    ]
    assert tracked_outputs("other") == []
    assert tracked_outputs("score", workdir / "missing.yaml") == []


@pytest.mark.parametrize("error", [ValueError("bad data"), KeyboardInterrupt(), RuntimeError()])
def test_a_failed_stage_puts_its_metrics_back(workdir: Path, error: BaseException) -> None:
    before = snapshot(workdir)

    def body() -> None:
        overwrite_everything(workdir)
        raise error

    expected = SystemExit if isinstance(error, ValueError) else type(error)
    with pytest.raises(expected):
        run("score", body)
    after = snapshot(workdir)
    assert after.pop("models/out") == b"partial"  # DVC's own outputs are DVC's business
    assert after == before


def test_a_stage_that_succeeds_keeps_what_it_wrote(workdir: Path) -> None:
    run("score", lambda: overwrite_everything(workdir))
    assert (workdir / "metrics" / "score.json").read_text() == '{"auc": 0.1}\n'
    assert (workdir / "metrics" / "new.json").exists()
    assert sorted(p.name for p in (workdir / "metrics" / "curves").iterdir()) == ["pr.json"]


def test_a_folder_the_failed_stage_created_is_removed(workdir: Path) -> None:
    import shutil

    shutil.rmtree(workdir / "metrics" / "curves")

    def body() -> None:
        (workdir / "metrics" / "curves").mkdir()
        (workdir / "metrics" / "curves" / "roc.json").write_text("[]")
        raise ValueError("no")

    with pytest.raises(SystemExit):
        run("score", body)
    assert not (workdir / "metrics" / "curves").exists()


# A process ending through end_process: an exit handler, output without a newline, an object
# whose finalizer only the interpreter's teardown runs, and (given a file) a thread still
# writing to that file when the process ends.
ENDING = """\
import atexit, sys, threading, time
from mlcycle.stages import end_process

class TornDown:
    def __del__(self):
        print("torn down", flush=True)

kept = TornDown()
atexit.register(print, "exit handler ran")
if len(sys.argv) > 1:
    def late():
        time.sleep(0.5)
        open(sys.argv[1], "w").write("written")
    threading.Thread(target=late).start()
sys.stdout.write("partial ")
end_process(3)
"""


def test_a_stage_process_ends_without_the_teardown() -> None:
    """The exit handlers run and the output is flushed, with the status given; the modules
    are not torn down (what costs a stage's process about 0.45 s of CPU)."""
    proc = subprocess.run([sys.executable, "-c", ENDING], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "partial exit handler ran\n"


def test_a_thread_still_running_is_waited_for(tmp_path: Path) -> None:
    """A thread still running when the stage ends finishes its work: the process exits as
    any process does then, teardown included."""
    out = tmp_path / "late.txt"
    proc = subprocess.run([sys.executable, "-c", ENDING, str(out)], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    assert out.read_text() == "written"
    assert proc.stdout == "partial exit handler ran\ntorn down\n"
