"""The README's own-data path, run as written: its shell block, line for line, in a fresh copy
of the repository (what `git clone` gives), from a shell whose ``PATH`` does not hold the
virtualenv, as a new user's does. Only the training settings are the suite's fast ones
(:data:`~tests.conftest.FAST_PARAMS`, put in after `mlcycle init` wrote params.yaml, as a
user's edit would be). The data is scikit-learn's diabetes table, so this is also the suite's
regression task end to end: the model it builds is then served and batch-scored."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import BIN, FAST_PARAMS, ROOT, git_commit, set_params
from tests.test_tasks import diabetes_frame, score_everywhere

README = ROOT / "README.md"


def section_commands(title: str) -> list[str]:
    """The command lines of the first ``bash`` block under the README's ``## title``."""
    text = README.read_text(encoding="utf-8")
    assert f"\n## {title}\n" in text, f"the README has no section {title!r}"
    section = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    assert "```bash\n" in section, f"the README's {title!r} has no bash block"
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def fresh_clone(dest: Path) -> Path:
    """This checkout's tracked files as they are now (what a clone of it would hold, this
    change included) in a new git repository at ``dest``, with this checkout's virtualenv in
    place of the one `make setup` would build (older lock and pyproject.toml: `make setup`
    finds it up to date)."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    (dest / ".venv").symlink_to(BIN.parent, target_is_directory=True)
    for name in ("requirements.lock", "pyproject.toml"):
        os.utime(dest / name, (0, 0))
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "fork"]):
        subprocess.run(["git", *args], cwd=dest, check=True, env=user_env(dest))
    return dest


def user_env(project: Path) -> dict[str, str]:
    """A new user's shell: no virtualenv on ``PATH`` or active, nothing on ``PYTHONPATH``."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != BIN]
    env.update(
        PATH=os.pathsep.join(path),
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="a user",
        GIT_AUTHOR_EMAIL="user@mlcycle.invalid",
        GIT_COMMITTER_NAME="a user",
        GIT_COMMITTER_EMAIL="user@mlcycle.invalid",
    )
    return env


def bash(lines: list[str], project: Path) -> subprocess.CompletedProcess:
    """``lines`` as one bash script (stopping at the first failing line) in ``project``."""
    script = "set -euo pipefail\n" + "\n".join(lines) + "\n"
    return subprocess.run(
        ["bash", "-c", script], cwd=project, env=user_env(project), capture_output=True, text=True
    )


def is_repro(line: str) -> bool:
    """Whether the line runs `dvc repro` (``dvc`` as found on PATH or by a path)."""
    return re.match(r"(\S*/)?dvc repro\b", line) is not None


def test_the_commands_are_where_the_test_reads_them() -> None:
    lines = section_commands("Your own data")
    assert any(line.startswith("make setup") for line in lines)
    assert any(is_repro(line) for line in lines), lines


@pytest.mark.dvc
@pytest.mark.server
def test_the_own_data_path_runs_as_written_on_a_fresh_clone(tmp_path: Path) -> None:
    fork = fresh_clone(tmp_path / "fork")
    diabetes_frame().rename(columns={"progression": "price"}).to_csv(fork / "my.csv", index=False)
    lines = section_commands("Your own data")
    at = next(i for i, line in enumerate(lines) if is_repro(line))

    setup = bash(lines[:at], fork)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    params = (fork / "params.yaml").read_text()
    assert "task: regression" in params and "positive_class: null" in params
    set_params(fork, {"train": FAST_PARAMS["train"]})  # the suite's fast training settings
    git_commit(fork, "my data")
    # The shell goes on: what the lines before set up for it (an activation) holds here too.
    carried = [line for line in lines[:at] if line.startswith(("source ", ". ", "export "))]
    run = bash(carried + lines[at:], fork)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "No module named" not in run.stderr
    assert json.loads((fork / "models/bundle/metadata.json").read_text())["task"] == "regression"
    git_commit(fork, "repro")

    # The regression model: its KPIs, and the same predictions in evaluation, batch, service.
    got = score_everywhere(fork, tmp_path, "price")
    sig, metrics = got["signature"], got["metrics"]
    assert sig["task"] == "regression" and sig["classes"] == []
    assert metrics["task"] == "regression"
    for kpi in ("rmse", "mae", "r2", "mape", "residual_std"):
        assert metrics[kpi] is not None
    assert metrics["r2"] > 0.2  # diabetes is noisy: published models reach about 0.4-0.5
    assert metrics["rmse"] < float(got["test"]["price"].std())  # beats the mean
    assert {"std", "q05", "q95"} <= set(metrics["residuals"])
    assert metrics["objective"]["met"] is True

    evaluated = got["evaluated"]["prediction"].to_numpy()
    np.testing.assert_allclose(got["batch"]["prediction"].to_numpy(), evaluated, rtol=1e-15)
    served = np.array([p["value"] for p in got["served"]["predictions"]])
    np.testing.assert_array_equal(served, evaluated)
    assert set(got["served"]["predictions"][0]) == {"value"}
    assert got["health"]["model"]["task"] == "regression"
    plots = json.loads((fork / "metrics/plots/predicted_actual.json").read_text())
    assert len(plots) == len(got["test"]) and {"actual", "predicted", "residual"} <= set(plots[0])
