"""The README's commands, run as written: every shell line of its set-up block, of "Your own
data" and of "Everyday commands", verbatim, in a fresh copy of the repository (what `git clone`
gives, :func:`fresh_clone`), from a shell whose ``PATH`` does not hold the virtualenv, as a new
user's does (:func:`user_env`). A line that fails fails the test.

What the test changes, and why: the pipeline runs on the suite's fast training settings
(:data:`~tests.conftest.FAST_PARAMS`) and, for Adult, on the suite's sample of it
(:func:`~tests.conftest.sample_adult`, :data:`~tests.conftest.SAMPLE_ROWS` rows, held to
:data:`~tests.conftest.SAMPLE_PARAMS`' bar), put in as a user's edit would be, so that each
pipeline run takes seconds instead of the full run's minutes. The own-data path uses
scikit-learn's diabetes table, so it is also the suite's regression task end to end: the model
it builds is then served and batch-scored.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import (
    BIN,
    FAST_PARAMS,
    ROOT,
    SAMPLE_PARAMS,
    SAMPLE_ROWS,
    SLOW_TIERS,
    Served,
    cli,
    free_port,
    git_commit,
    merge,
    require_marker,
    run,
    sample_adult,
    set_params,
)
from tests.test_pipeline import STAGES, read_json, sha256, stages_run
from tests.test_serve import post_json, request, to_records
from tests.test_tasks import diabetes_frame, score_everywhere

README = ROOT / "README.md"


def bash_lines(text: str) -> list[str]:
    """The command lines of the first ``bash`` block of ``text``."""
    assert "```bash\n" in text, "no bash block"
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def section_commands(title: str) -> list[str]:
    """The command lines of the first ``bash`` block under the README's ``## title``."""
    text = README.read_text(encoding="utf-8")
    assert f"\n## {title}\n" in text, f"the README has no section {title!r}"
    return bash_lines(text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0])


def setup_commands() -> list[str]:
    """The command lines of the README's set-up block: its first, before any section."""
    return bash_lines(README.read_text(encoding="utf-8").split("\n## ", 1)[0])


def command(line: str) -> str:
    """A README line without its comment."""
    return re.sub(r"\s+#.*$", "", line).strip()


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
    """A new user's shell: no virtualenv on ``PATH`` or active, no `make` around it (the suite
    may run under `make test`, whose MAKEFLAGS would change what a `make` here prints).
    ``PYTHONPATH`` holds the clone's ``src`` only, standing in for the editable install `make
    setup` would make of the clone (the suite's virtualenv has another checkout installed): the
    clone's code runs."""
    outer = ("VIRTUAL_ENV", "PYTHONPATH", "MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")
    env = {k: v for k, v in os.environ.items() if k not in outer}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != BIN]
    env.update(
        PATH=os.pathsep.join(path),
        PYTHONPATH=str(project / "src"),
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
    # The set-up block's targets are the Makefile's; the everyday block starts activated.
    targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M)
    for line in setup_commands():
        assert re.fullmatch(r"make [\w-]+", command(line)) and command(line)[5:] in targets
    first = section_commands("Everyday commands")[0]
    assert first.startswith("source .venv/bin/activate") and "not repro, exp run" in first


@pytest.mark.dvc
@pytest.mark.server
def test_the_own_data_path_runs_as_written_on_a_fresh_clone(tmp_path: Path) -> None:
    """The "Your own data" block on diabetes, as written (activated: `dvc repro` runs the
    stages' `python`, which needs it, as step 1 says; `.venv/bin/mlcycle` without the
    activation is the everyday commands' test). The fast training settings go in after
    `mlcycle init` wrote params.yaml."""
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
    repro = bash(carried + lines[at:], fork)
    assert repro.returncode == 0, repro.stdout + repro.stderr
    assert "No module named" not in repro.stderr
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


# --- the set-up block and the everyday commands, on Adult -------------------------------------

# What `make test` and `make test-fast` run (`make -n`, the virtualenv up to date): the suite,
# or the tests that carry no slow tier's marker.
PYTEST_RECIPES = {
    "test": "python -m pytest",
    "test-fast": f'python -m pytest -m "not ({" or ".join(SLOW_TIERS)})"',
}


def runs_stages(line: str) -> bool:
    """Whether the line runs pipeline stages (`dvc repro`, `dvc exp run`): they run `python`,
    which only the activated virtualenv makes the right one."""
    return re.match(r"(\S*/)?dvc (repro|exp run)\b", line) is not None


def succeeded(line: str, proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{line!r} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    assert "No module named" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture(scope="module")
def repro_clone(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess]:
    """A fresh clone after the set-up block's `make repro` (run as written; its `make setup`
    finds the clone's virtualenv up to date), its results committed. Before it, as a user's
    edit: the suite's sample of Adult and its fast settings, committed."""
    fork = fresh_clone(tmp_path_factory.mktemp("readme") / "fork")
    set_params(fork, merge(FAST_PARAMS, SAMPLE_PARAMS))
    sample_adult(fork, SAMPLE_ROWS)
    git_commit(fork, "the suite's sample of Adult, fast training settings")
    (line,) = [line for line in setup_commands() if command(line) == "make repro"]
    proc = bash([line], fork)
    git_commit(fork, "repro")
    return fork, proc


# Outputs a run from scratch writes byte for byte the same as another.
REPRODUCED = (
    "data/raw/snapshot.parquet",
    "data/prepared/train.parquet",
    "data/prepared/test.parquet",
    "models/train/model.ubj",
    "models/train/model.json",
    "models/train/oof.parquet",
    "models/train/baseline/model.ubj",
    "metrics/train.json",
    "metrics/train/params.yaml",
    "metrics/evaluate.json",
    "metrics/plots/roc.json",
    "metrics/plots/importance.json",
)


def test_the_setup_block_runs_as_written(repro_clone: tuple, small_project: Path) -> None:
    """`make repro` runs every stage, and writes the same bytes as the suite's project built
    from the same data and settings in another directory (:func:`small_project`: two runs
    from scratch agree). `make test` and `make test-fast` would run this suite inside itself,
    so of them the test checks what make would run (`make -n`, with the clone's virtualenv
    up to date): the whole suite, and the tests without a slow tier's marker."""
    fork, repro = repro_clone
    lines = setup_commands()
    assert sorted(command(line) for line in lines) == ["make repro", "make test", "make test-fast"]
    succeeded("make repro", repro)
    assert stages_run(repro) == STAGES
    assert read_json(fork / "metrics/gate.json")["passed"] is True
    for rel in REPRODUCED:
        assert sha256(fork / rel) == sha256(small_project / rel), f"{rel} differs between runs"
    for line in lines:
        target = command(line).removeprefix("make ")
        if target in PYTEST_RECIPES:
            dry = succeeded(f"make -n {target}", bash([f"make -n {target}"], fork))
            assert dry.stdout.splitlines() == [PYTEST_RECIPES[target]], dry.stdout


def served_in_background(line: str, project: Path, out: Path) -> Served:
    """The README's `mlcycle serve` line, started in the background as written; on another
    port (``--port`` appended) only if 8000 is taken. Waits for /health."""
    require_marker("server", "starts `mlcycle serve`")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(("127.0.0.1", 8000))
            taken = False
        except OSError:
            taken = True
    port = free_port() if taken else 8000
    shell = f"exec {command(line)} --port {port}" if taken else f"exec {line}"
    with open(out, "wb") as output:
        proc = subprocess.Popen(
            ["bash", "-c", shell], cwd=project, env=user_env(project), stdout=output,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    return Served(f"http://127.0.0.1:{port}", proc, out).ready()


@pytest.mark.dvc
@pytest.mark.server
def test_the_everyday_commands_run_as_written(repro_clone: tuple, tmp_path: Path) -> None:
    """The "Everyday commands" block after `make repro`, each line once, in the README's
    order, in the harder of the two ways the README says it runs:

    - the lines that run stages (`dvc repro`, `dvc exp run`) as written, after the activation
      line: their stages run `python`, which must be the virtualenv's (the activation line's
      comment says prefixing cannot run them);
    - every other line without the activation, prefixed with ``.venv/bin/`` as the comment
      says: activated, the same programs find all they need on PATH, so a second run of
      each would cost time (the sweep alone is most of this test's) and prove nothing more.

    Before `mlcycle release` the user keeps the 60-trial experiment (`git commit`: release
    asks for a committed model) and writes ``new.csv``, records of their data. `mlcycle serve`
    runs in the background (on 8000 as written, another port appended only if 8000 is
    taken), answers /health and one /predict of ``new.csv``'s records, then stops; `mlcycle
    monitor --last 10000` judges what it logged, where serve logs and monitor read by
    default. No labels came back, so `mlcycle retrain` changes nothing and exits with status
    4, as the README says.
    """
    fork, _ = repro_clone
    activate, *lines = section_commands("Everyday commands")
    assert activate.startswith("source .venv/bin/activate") and "not repro, exp run" in activate
    at = next(i for i, line in enumerate(lines) if command(line) == "mlcycle release")
    committed = read_json(fork / "metrics/summary.json")["roc_auc"]
    upstream = {rel: sha256(fork / rel) for rel in ("data/raw/snapshot.parquet",
                "data/prepared/train.parquet", "models/train/model.ubj")}  # fmt: skip
    ran: dict[str, subprocess.CompletedProcess] = {}
    service: dict = {}  # what `mlcycle serve` answered
    seconds: dict[str, float] = {}

    def run_line(line: str) -> None:
        """The line as written after the activation, or prefixed without it."""
        started = time.monotonic()
        written = line if runs_stages(line) else f".venv/bin/{line}"
        if command(line) == "mlcycle serve":
            served = served_in_background(written, fork, tmp_path / "serve.out")
            try:
                service["health"] = request(f"{served.url}/health").json()
                service["predict"] = post_json(
                    f"{served.url}/predict", {"records": to_records(records)}
                )
            finally:
                stopped = served.stop()
            assert stopped == 0, served.output.read_text()
        elif command(line) == "mlcycle retrain":
            ran[command(line)] = bash([written], fork)
        else:
            script = [activate, written] if runs_stages(line) else [written]
            ran[command(line)] = succeeded(written, bash(script, fork))
        seconds[written] = time.monotonic() - started

    def output(start: str) -> subprocess.CompletedProcess:
        (key,) = [key for key in ran if key.startswith(start)]
        return ran[key]

    for line in lines[:at]:
        run_line(line)

    # `dvc repro` after `make repro` runs no stage. A train parameter re-runs train and what
    # follows it, nothing upstream; the experiment's results are left in the workspace.
    assert "Running stage" not in output("dvc repro").stdout + output("dvc repro").stderr
    assert stages_run(output("dvc exp run -S")) == ["train", "evaluate", "gate", "package"]
    for rel, digest in upstream.items():
        assert (sha256(fork / rel) == digest) == (rel != "models/train/model.ubj"), rel
    assert run(["dvc", "status", "--json"], fork).stdout.strip() == "{}"
    auc = read_json(fork / "metrics/summary.json")["roc_auc"]
    assert auc == read_json(fork / "metrics/evaluate.json")["roc_auc"] != committed

    # Each experiment listed under the baseline with its own params and metrics; the queued
    # sweep ran elsewhere: the workspace still holds the 60-trial experiment.
    head = run(["git", "rev-parse", "HEAD"], fork).stdout.strip()
    shown = json.loads(run(["dvc", "exp", "show", "--json"], fork).stdout)
    (baseline,) = [row for row in shown if row["rev"] == head]
    experiments = [rev for group in baseline.get("experiments") or [] for rev in group["revs"]]

    def value(row: dict, file: str, *keys: str):  # noqa: ANN202
        node = row["data"]["params" if file.endswith(".yaml") else "metrics"][file]["data"]
        for key in keys:
            node = node[key]
        return node

    # metrics/summary.json is the one metrics file: the headline, so the table is narrow.
    for row in (baseline, *experiments):
        assert list(row["data"]["metrics"]) == ["metrics/summary.json"], row["data"]["metrics"]
    assert value(baseline, "metrics/summary.json", "roc_auc") == committed
    by_trials = {}
    for exp in experiments:
        by_trials.setdefault(value(exp, "params.yaml", "train", "tuning", "trials"), []).append(exp)
    assert sorted(by_trials) == [0, 60] and len(by_trials[60]) == 1, by_trials
    (tuned,) = by_trials[60]
    assert value(tuned, "metrics/summary.json", "roc_auc") == auc
    sweep = by_trials[0]
    depths = sorted(value(e, "params.yaml", "train", "xgb", "max_depth") for e in sweep)
    assert depths == [4, 6]
    # The chosen model and params dvclive logged show beside params.yaml: where XGBoost won
    # (at both depths on this sample; at 8 a random forest would), the depth the sweep set.
    xgboost_won = []
    for exp in sweep:
        chosen = value(exp, "metrics/train/params.yaml")
        assert chosen["model"] == value(exp, "metrics/summary.json", "model")
        if chosen["model"] == "xgboost":
            depth = value(exp, "params.yaml", "train", "xgb", "max_depth")
            assert chosen["params"]["max_depth"] == depth
            xgboost_won.append(depth)
    assert len(xgboost_won) >= 2, xgboost_won
    for key in ("roc_auc", "cv_roc_auc"):
        assert len({value(e, "metrics/summary.json", key) for e in sweep}) == 2, key
    params = yaml.safe_load((fork / "params.yaml").read_text())["train"]
    assert params["tuning"]["trials"] == 60 and params["xgb"]["max_depth"] == 6
    assert "cv_roc_auc" in output("dvc exp show").stdout

    # The headline figures fit a terminal: `dvc metrics show` and `mlcycle status`.
    shown = output("dvc metrics show").stdout
    assert "metrics/summary.json" in shown
    assert max(len(line.rstrip()) for line in shown.splitlines()) <= 100, shown
    status = output("mlcycle status").stdout
    assert status.splitlines()[0].split() == ["gate", "passed"]
    assert any(line.startswith("roc_auc (test)") for line in status.splitlines()), status
    assert f"{auc:.4f} [" in status
    assert max(len(line) for line in status.splitlines()) <= 100, status

    # What changed against main: the headline only.
    diff = json.loads(run(["dvc", "metrics", "diff", "main", "--json"], fork).stdout)
    assert list(diff) == ["metrics/summary.json"] and len(diff["metrics/summary.json"]) <= 6
    assert diff["metrics/summary.json"]["roc_auc"] == {
        "old": committed, "new": auc, "diff": pytest.approx(auc - committed)
    }  # fmt: skip
    assert "roc_auc" in output("dvc metrics diff main").stdout

    # The change as a reviewer reads it, from git alone: the gate, the primary metric on both
    # sides with intervals, the changed param, the plots as PNG files.
    text = (fork / "reports/pr/report.md").read_text()
    assert text == output("mlcycle report").stdout
    gate = read_json(fork / "metrics/gate.json")
    assert f"**Gate: {'passed' if gate['passed'] else 'REJECTED'}**" in text
    assert all(f"- {reason}" in text for reason in gate["reasons"])
    assert f"**roc_auc**: {committed:.4f} (95 % interval" in text
    assert f"→ {auc:.4f} (95 % interval" in text
    assert re.search(r"The change is \*\*(beyond|within) noise\*\*", text)
    assert "| `train.tuning.trials` | `0` | `60` |" in text
    assert "the same data" in text
    assert "Training data drift: none (the same training split on both sides)." in text
    images = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", text)
    assert len(images) >= 3 and not re.search(r"not drawn", text), text
    for name in images:
        assert (fork / "reports/pr" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = cli(fork, "report", "--base", "no-such-rev", check=False)
    assert bad.returncode != 0 and "'no-such-rev' is not a revision" in bad.stderr

    # The user keeps the experiment, and has a file of new records.
    git_commit(fork, "train: 60 trials")
    test = pd.read_parquet(fork / "data/prepared/test.parquet").head(300)
    target = yaml.safe_load((fork / "params.yaml").read_text())["objectives"]["target"]
    records = test.drop(columns=target)
    records.to_csv(fork / "new.csv", index=False)
    for line in lines[at:]:
        run_line(line)
    print("\n".join(f"{s:6.1f} s  {line}" for line, s in seconds.items()))

    assert re.search(r"^released \S+@v0\.1\.0 to prod", output("mlcycle release").stdout, re.M)
    assert service["health"]["model"]["version"] == "v0.1.0", service["health"]
    answer = service["predict"]
    assert answer.status == 200, answer.body
    # The file scored as the service scored it: the production model, both ways.
    scored = pd.read_parquet(fork / "scored.parquet")
    predictions = answer.json()["predictions"]
    assert len(scored) == len(records) == len(predictions)
    assert scored["prediction"].tolist() == [p["label"] for p in predictions]
    for name in predictions[0]["probabilities"]:
        got = [p["probabilities"][name] for p in predictions]
        np.testing.assert_allclose(scored[f"probability_{name}"], got, rtol=1e-12)
    # The monitor judged what the service logged, where each writes and reads by default.
    monitored = read_json(fork / "reports/monitor/monitor.json")
    assert monitored["rows"] == len(records), monitored["rows"]
    retrain = output("mlcycle retrain")
    assert retrain.returncode == 4, retrain.stdout + retrain.stderr
    assert "0 new labelled row(s) to export, fewer than --min-labels 100" in retrain.stderr
