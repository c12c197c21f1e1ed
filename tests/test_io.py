"""Atomic writes (:mod:`mlcycle.io`): what a killed writer left beside its target is cleared
by the next writer, and only then."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlcycle import io


def leftover(target: Path, pid: int) -> Path:
    """A temporary folder as a writer with process id ``pid`` names it beside ``target``."""
    path = target.with_name(f".{target.name}.{pid}.0123456789ab.tmp")
    path.mkdir()
    (path / "part").write_text("half-written")
    return path


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_a_killed_writer_not_yet_reaped_is_taken_as_ended(tmp_path: Path) -> None:
    """A writer killed with its parent is a zombie until something reaps it (an init process
    that does not reap, in some containers, never does): its process id still answers, but it
    writes nothing more, so the next writer clears what it left."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # not waited for: a zombie
    try:
        stat = Path(f"/proc/{child.pid}/stat")
        for _ in range(500):
            if stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z":
                break
            time.sleep(0.01)
        os.kill(child.pid, 0)  # it still answers
        target = tmp_path / "model"
        left = leftover(target, child.pid)
        with io.atomic_folder(target) as folder:
            (folder / "part").write_text("new")
        assert not left.exists()
        assert (target / "part").read_text() == "new"
    finally:
        child.wait()


def test_a_live_writers_temporary_is_left_alone(tmp_path: Path) -> None:
    """A temporary of a process that is still running (this test's parent) is not touched."""
    target = tmp_path / "model"
    left = leftover(target, os.getppid())
    with io.atomic_folder(target) as folder:
        (folder / "part").write_text("new")
    assert left.exists()
