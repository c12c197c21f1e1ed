"""Training data between two revisions: the profile the prepare stage keeps in git, compared
profile to profile (what `mlcycle report` shows under "Data")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mlcycle.config import MonitorConfig
from mlcycle.drift import compare_profiles, data_profile
from tests.conftest import ROOT, run


def frame(n: int, seed: int, age_shift: float = 0.0, missing: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 12, n).round() + age_shift
    gain = np.where(rng.random(n) < 0.9, 0.0, rng.lognormal(8, 1, n))  # a heavy atom at 0
    work = rng.choice(["private", "state", "self"], n, p=[0.7, 0.2, 0.1]).astype(object)
    work[rng.random(n) < missing] = None
    return pd.DataFrame({"age": age, "capital-gain": gain, "workclass": work})


def test_the_same_distribution_does_not_move() -> None:
    base, head = data_profile(frame(30_000, 1), 10), data_profile(frame(30_000, 2), 10)
    cmp = compare_profiles(base, head, MonitorConfig())
    assert [c["column"] for c in cmp["columns"] if c["drifted"]] == []
    assert all(c["psi"] < 0.01 for c in cmp["columns"])
    assert cmp["added"] == cmp["removed"] == []


def test_shifts_new_categories_missing_and_columns_are_named() -> None:
    base = data_profile(frame(30_000, 1), 10)
    changed = frame(20_000, 2, age_shift=8, missing=0.2)
    changed.loc[:500, "workclass"] = "never-worked"
    changed = changed.drop(columns=["capital-gain"]).assign(hours=40)
    cmp = compare_profiles(base, data_profile(changed, 10), MonitorConfig())
    by = {c["column"]: c for c in cmp["columns"]}
    assert by["age"]["drifted"] and "distribution" in by["age"]["reasons"]
    assert by["age"]["median"][1] - by["age"]["median"][0] == 8
    assert 0.2 < by["age"]["ks"] < 0.35  # a shift of 2/3 sd: KS ~ 0.26
    assert by["workclass"]["drifted"] and "missing" in by["workclass"]["reasons"]
    assert by["workclass"]["new"] == ["never-worked"]
    assert cmp["removed"] == ["capital-gain"] and cmp["added"] == ["hours"]
    assert cmp["columns"][0]["column"] in ("age", "workclass")  # largest PSI first


def test_profile_in_git_is_the_training_split_and_small() -> None:
    """The example project's profile: every column of the training split, under 200 KB."""
    path = ROOT / "metrics/data_profile.json"
    doc = json.loads(path.read_text())
    prepared = json.loads((ROOT / "metrics/prepare.json").read_text())
    assert doc["rows"] == prepared["train"]["rows"]
    assert "age" in doc["features"] and doc["features"]["age"]["kind"] == "numeric"
    assert path.stat().st_size < 200_000


def test_report_shows_the_training_data_that_moved(tmp_path: Path) -> None:
    """Two commits whose profiles differ: the report's data section names the moved columns,
    from git alone."""
    from mlcycle.report import _data_drift

    run(["git", "init", "-q", "-b", "main"], tmp_path)
    (tmp_path / "metrics").mkdir()
    profile = tmp_path / "metrics/data_profile.json"
    for seed, shift in ((1, 0), (2, 8)):
        profile.write_text(json.dumps(data_profile(frame(20_000, seed, age_shift=shift), 10)))
        run(["git", "add", "-A"], tmp_path)
        run(["git", "commit", "-q", "-m", f"data {seed}"], tmp_path)
    lines = _data_drift(tmp_path, "HEAD~1", "HEAD")
    assert lines[0].startswith("Training data drift: 1 of 3 columns moved (a column moved if")
    (age,) = [line for line in lines if line.startswith("| `age`")]
    assert "**moved**" in age and "median 40 → 48" in age
    assert not any(line.startswith("| `workclass`") and "moved" in line for line in lines)
    assert _data_drift(tmp_path, "HEAD", "HEAD") == [
        "Training data drift: none (the same training split on both sides)."
    ]
