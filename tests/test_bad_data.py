"""Bad data is a finding, never a crash: corrupted inputs through real `dvc repro`.

Each case breaks the training source of a built project (the suite's sample of Adult) the way
upstream exports break (a missing column, text in a number, another delimiter, nothing at all, a
cut-off download, too many nulls, unknown labels, impossible numbers) and pins the broken
content's digest, so the fault itself is what the pipeline meets. Every run must stop at the
stage that owns the fault, with a message naming the source and the column, a non-zero exit
status, and the bundle, the model and every metrics file in git exactly as they were (only
gather's lineage, which records the new snapshot just as dvc.lock does, may change when gather
itself succeeded).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import adult_records, run, set_params

TRAIN = "data/external/adult/adult.data.gz"
SOURCE = "adult_train"
RUNNING_STAGE = re.compile(r"^Running stage '([^']+)'", re.MULTILINE)
KEPT = ("models/bundle", "models/train")  # the last good model, byte for byte
GATHER_LINEAGE = "metrics/gather.json"


def tracked_metrics(project: Path) -> dict[str, str]:
    """SHA-256 of every file git tracks under metrics/ (read from the work tree)."""
    names = subprocess.run(
        ["git", "ls-files", "metrics"], cwd=project, capture_output=True, text=True, check=True
    ).stdout.split()
    return {n: hashlib.sha256((project / n).read_bytes()).hexdigest() for n in names}


def tree_digests(project: Path, *relative: str) -> dict[str, str]:
    out = {}
    for rel in relative:
        for path in sorted(p for p in (project / rel).rglob("*") if p.is_file()):
            out[str(path.relative_to(project))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def lines(project: Path) -> list[str]:
    """The training file's records (the trailing blank line dropped)."""
    text = gzip.decompress((project / TRAIN).read_bytes()).decode()
    return [line for line in text.split("\n") if line]


def fields(line: str) -> list[str]:
    return line.split(", ")


def write_pinned(project: Path, content: bytes, raw: bytes | None = None) -> None:
    """Replace the training file by ``content`` gzipped (or by ``raw`` bytes as they are) and pin
    the content's SHA-256 in params.yaml, so only the fault itself can stop the run."""
    (project / TRAIN).write_bytes(raw if raw is not None else gzip.compress(content, mtime=0))
    params = yaml.safe_load((project / "params.yaml").read_text())
    for src in params["data"]["sources"]:
        if src["name"] == SOURCE:
            src["sha256"] = hashlib.sha256(content).hexdigest()
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def every_nth(project: Path, n: int, change: Callable[[list[str]], list[str]]) -> None:
    """Apply ``change`` to the fields of every ``n``-th record."""
    out = []
    for i, line in enumerate(lines(project)):
        out.append(", ".join(change(fields(line))) if i % n == 0 else line)
    write_pinned(project, ("\n".join(out) + "\n").encode())


def drop_a_column(project: Path) -> None:
    out = [", ".join(f[:2] + f[3:]) for f in map(fields, lines(project))]
    write_pinned(project, ("\n".join(out) + "\n").encode())


def text_in_age(project: Path) -> None:
    """Several spellings of 'not a number' in the integer column age (5 % of rows)."""
    words = iter(["unknown", "39 years", "thirty-nine", "39.5", "--"] * 2000)
    every_nth(project, 20, lambda f: [next(words), *f[1:]])


def semicolons(project: Path) -> None:
    out = [";".join(fields(line)) for line in lines(project)]
    write_pinned(project, ("\n".join(out) + "\n").encode())


def empty_file(project: Path) -> None:
    write_pinned(project, b"", raw=b"")


def gzip_of_nothing(project: Path) -> None:
    write_pinned(project, b"")


def mostly_null_occupation(project: Path) -> None:
    rows = lines(project)
    out = []
    for i, line in enumerate(rows):
        f = fields(line)
        if i % 5 < 3:  # 60 % of the rows
            f[6] = "?"
        out.append(", ".join(f))
    write_pinned(project, ("\n".join(out) + "\n").encode())


def unknown_labels(project: Path) -> None:
    every_nth(project, 50, lambda f: [*f[:-1], "maybe"])


def truncated_gzip(project: Path) -> None:
    raw = (project / TRAIN).read_bytes()
    (project / TRAIN).write_bytes(raw[: len(raw) // 2])  # the digest stays: decompression fails


def negative_hours(project: Path) -> None:
    every_nth(project, 100, lambda f: [*f[:12], "-5", *f[13:]])


# (corruption, the stage that must stop the run, what the error must say: regular expressions
# whose {records} is the training file's record count, {rows} the snapshot's, {every_20th} the
# number of every 20th record (and so on), all counted in the project before the corruption)
CASES = {
    "headerless file missing a column": (
        drop_a_column,
        "gather",
        [r"source 'adult_train'", r"15 columns are declared \(age, workclass, fnlwgt",
         r"{records} of {records} records have another number of fields \(14 fields"],
    ),
    "text in a numeric column": (
        text_in_age,
        "validate",
        [r"age: {every_20th} of {rows} rows hold values of the wrong type; expected integer values",
         r"'unknown'", r"'39 years'", r"'thirty-nine'", r"'39\.5'", r"'--'",
         r"from source 'adult_train' \({every_20th}\)"],
    ),
    "semicolon-delimited file": (
        semicolons,
        "gather",
        [r"source 'adult_train'", r"seems to be delimited by ';', not ','",
         r"set delimiter: ';' on the source"],
    ),
    "empty file": (
        empty_file,
        "gather",
        [r"source 'adult_train' \(data/external/adult/adult.data.gz\) holds no rows"],
    ),
    "gzip of nothing": (
        gzip_of_nothing,
        "gather",
        [r"source 'adult_train' \(data/external/adult/adult.data.gz\) holds no rows"],
    ),
    "60 % nulls in one column": (
        mostly_null_occupation,
        "validate",
        [r"occupation: \d+ of {rows} rows are null \(4\d\.\d\d%\); expected at most 10\.00% nulls",
         r"from source 'adult_test' \(\d+\), 'adult_train' \(\d+\)"],
    ),
    "target values outside the schema": (
        unknown_labels,
        "validate",
        [r"income: {every_50th} of {rows} rows hold an unexpected target value", r"'maybe'",
         r"from source 'adult_train' \({every_50th}\)"],
    ),
    "truncated gzip": (
        truncated_gzip,
        "gather",
        [r"source 'adult_train': data/external/adult/adult.data.gz is not valid gzip"],
    ),
    "out-of-range numbers": (
        negative_hours,
        "validate",
        [r"hours-per-week: {every_100th} of {rows} rows are out of range; "
         r"expected between 1 and 99",
         r"examples: -5", r"from source 'adult_train' \({every_100th}\)"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_corrupted_input_stops_at_its_stage_and_keeps_everything(
    case: str, small_project: Path, tmp_path: Path
) -> None:
    corrupt, stage, messages = CASES[case]
    project = tmp_path / "project"
    shutil.copytree(small_project, project, symlinks=True)
    metrics, kept = tracked_metrics(project), tree_digests(project, *KEPT)
    records = len(lines(project))
    counts = {"records": records, "rows": adult_records(project)}
    counts.update({f"every_{n}th": -(-records // n) for n in (20, 50, 100)})
    corrupt(project)
    proc = run(["dvc", "repro"], project, check=False)
    assert proc.returncode != 0, proc.stdout
    assert RUNNING_STAGE.findall(proc.stdout)[-1] == stage, proc.stdout
    error = proc.stderr
    assert f"[{stage}] error:" in error, error
    assert "Traceback" not in error, error
    for pattern in (message.format(**counts) for message in messages):
        assert re.search(pattern, error), f"{pattern!r} not in:\n{error}"
    assert tree_digests(project, *KEPT) == kept
    changed = {n for n, d in tracked_metrics(project).items() if metrics.get(n) != d}
    assert changed <= ({GATHER_LINEAGE} if stage != "gather" else set()), changed
    status = subprocess.run(
        ["git", "status", "--porcelain", "--", "metrics", "models"],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert all(line.endswith(GATHER_LINEAGE) for line in status.splitlines()), status


def test_settings_that_do_not_fit_the_data_are_all_reported_before_any_work(
    small_project: Path, tmp_path: Path
) -> None:
    """Misspelt columns in four settings: the run stops at validate, after seconds, with every
    problem and its key path, and prepare and train never start."""
    project = tmp_path / "project"
    shutil.copytree(small_project, project, symlinks=True)
    metrics = tracked_metrics(project)
    set_params(
        project,
        {
            "objectives": {"slices": ["sex", "Race"]},
            "prepare": {
                "outliers": {"method": "iqr", "columns": ["age", "workclass"]},
                "split": {"method": "group", "group_column": "household"},
            },
            "features": {"exclude": ["fnlwgt", "capital_gain"]},
        },
    )
    proc = run(["dvc", "repro"], project, check=False)
    assert proc.returncode != 0
    assert RUNNING_STAGE.findall(proc.stdout) == ["validate"], proc.stdout
    for expected in (
        "objectives.slices: ['Race'] not a column of the data",
        "prepare.outliers.columns: ['workclass'] not numeric",
        "prepare.split.group_column: ['household'] not a column of the data",
        "features.exclude: ['capital_gain'] not input columns",
        "4 setting(s) do not fit the data",
    ):
        assert expected in proc.stderr, proc.stderr
    assert {n for n, d in tracked_metrics(project).items() if metrics[n] != d} == set()
    report = json.loads((project / "reports" / "validation.json").read_text())
    assert report["passed"] is False and len(report["settings"]) == 4
