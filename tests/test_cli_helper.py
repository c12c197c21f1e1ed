"""tests/conftest.py's ``cli``: `mlcycle` in the pytest process gives what the console script
gives (exit status, stdout, stderr, a child process's output too) and leaves the process as it
found it (working directory, environment, logging handlers)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import cli, descriptors, logged_to


def test_status_and_output_are_the_console_scripts_and_nothing_leaks(tmp_path: Path) -> None:
    cwd, env, handlers = os.getcwd(), dict(os.environ), list(logging.getLogger().handlers)
    (tmp_path / "README.md").write_text("# no markers\n")
    for process in (False, True):
        shown = cli(tmp_path, "--help", process=process)
        assert shown.returncode == 0 and shown.stdout.startswith("usage: mlcycle")
        wrong = cli(tmp_path, "no-such-command", check=False, process=process)
        assert wrong.returncode == 2 and "invalid choice: 'no-such-command'" in wrong.stderr
        refused = cli(tmp_path, "status", "--readme", check=False, env={"X": "1"}, process=process)
        assert (refused.returncode, refused.stdout) == (1, "")
        assert refused.stderr.startswith("mlcycle: error: the README has no <!-- results")
    with pytest.raises(AssertionError, match="exited 1\nstdout:\n\nstderr:\nmlcycle: error"):
        cli(tmp_path, "status", "--readme")
    assert (os.getcwd(), dict(os.environ)) == (cwd, env)
    assert logging.getLogger().handlers == handlers


def test_a_child_process_output_and_warnings_logged_are_captured_once() -> None:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        for i in range(2):
            with descriptors(out, err), open(2, "w", closefd=False) as stderr, logged_to(stderr):
                logging.getLogger("mlcycle.test").warning("logged %d", i)
                logging.getLogger("mlcycle.test").info("not shown")
                stderr.flush()
                code = "import sys; print('child out'); print('child err', file=sys.stderr)"
                subprocess.run([sys.executable, "-c", code], check=True)
        out.seek(0)
        err.seek(0)
        assert out.read() == b"child out\n" * 2
        assert err.read() == b"logged 0\nchild err\nlogged 1\nchild err\n"
