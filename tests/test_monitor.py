"""Monitoring: drift against the bundle's reference profile, performance estimated and measured
once labels arrive, history for `dvc plots`, and `mlcycle monitor` on files and on the real
prediction log of a built project."""

from __future__ import annotations

import csv
import json
import os
import shutil
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mlcycle import config, drift, monitor
from mlcycle.bundle import load_bundle
from mlcycle.config import MonitorConfig
from mlcycle.estimate import estimate_kpi
from mlcycle.features import Signature, infer_signature
from mlcycle.io import atomic_folder, write_text
from mlcycle.metrics import compute_kpis
from mlcycle.monitor_report import html_report
from mlcycle.predict import score
from mlcycle.predlog import PredictionLog
from mlcycle.predlog.labels import _label_text
from mlcycle.prepare import clean
from mlcycle.serve.core import prediction_dicts
from mlcycle.sources import SOURCE_COLUMN, read_source, union
from tests.conftest import ROOT, TINY_SIGNATURE, cli, run

TEST_SPLIT = Path("data") / "prepared" / "test.parquet"
SETTINGS = MonitorConfig()


@pytest.fixture(scope="module")
def adult_train() -> pd.DataFrame:
    """The Adult training file, read and cleaned by the library as the pipeline does."""
    raw = config.read_raw(ROOT / "params.yaml")
    source = next(s for s in config.section(raw, "data").sources if s.name == "adult_train")
    cleaned, _ = clean(union([read_source(source, ROOT)]), config.section(raw, "objectives"))
    return cleaned.drop(columns=SOURCE_COLUMN)


@pytest.fixture(scope="module")
def sig(adult_train: pd.DataFrame):  # noqa: ANN201
    return infer_signature(adult_train, "income", ">50K")


def _halves(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    order = np.random.default_rng(0).permutation(len(frame))
    half = len(frame) // 2
    return frame.iloc[order[:half]], frame.iloc[order[half:]].copy()


def shifted(batch: pd.DataFrame) -> pd.DataFrame:
    return batch.assign(age=batch["age"] + 15, workclass="Private")


# --- drift -----------------------------------------------------------------------------------


def test_no_drift_between_random_halves(adult_train, sig) -> None:  # noqa: ANN001
    reference, current = _halves(adult_train)
    results = drift.detect(reference, current, sig, SETTINGS)
    assert [r.feature for r in results] == sig.columns
    assert [r.feature for r in results if r.drifted] == []
    assert all(r.effect < SETTINGS.min_effect for r in results)


def test_shifted_batch_flags_exactly_the_shifted_features(adult_train, sig) -> None:  # noqa: ANN001
    reference, current = _halves(adult_train)
    results = {r.feature: r for r in drift.detect(reference, shifted(current), sig, SETTINGS)}
    assert sorted(f for f, r in results.items() if r.drifted) == ["age", "workclass"]
    assert results["age"].test == "ks" and results["workclass"].test == "chi2"
    assert results["age"].effect == results["age"].statistic  # the KS distance
    assert results["workclass"].current_missing_rate == 0.0
    assert results["workclass"].reference_missing_rate > 0.0
    hist = results["age"].histogram
    assert len(hist["bins"]) == len(hist["reference"]) == len(hist["current"])
    assert sum(hist["current"]) == pytest.approx(1.0, abs=1e-4)


def test_zero_inflated_missing_and_text_shifts_are_alarms(adult_train, sig) -> None:  # noqa: ANN001
    """capital-gain is ~92 % zeros: its PSI bins keep the zero apart, so more non-zero values
    are seen; a column that turns all null, or all text, is flagged for that reason."""
    reference, current = _halves(adult_train)
    rng = np.random.default_rng(1)
    gain = current["capital-gain"].to_numpy(float).copy()
    zeros = np.flatnonzero(gain == 0)
    positive = reference["capital-gain"][reference["capital-gain"] > 0].to_numpy(float)
    raise_to = rng.choice(zeros, size=int(0.5 * len(gain)) - int((gain > 0).sum()), replace=False)
    gain[raise_to] = rng.choice(positive, size=len(raise_to))
    batch = current.assign(**{"capital-gain": gain, "hours-per-week": np.nan})
    batch["capital-loss"] = "n/a"
    for rows in (len(batch), 1000):
        results = {r.feature: r for r in drift.detect(reference, batch.iloc[:rows], sig)}
        assert results["capital-gain"].reasons == ("distribution",)
        assert results["capital-gain"].psi > 0.5
        assert results["capital-gain"].histogram["bins"][0] == "= 0"
        assert results["hours-per-week"].reasons == ("missing",)
        assert results["capital-loss"].reasons == ("type",)
        assert results["capital-loss"].not_numbers_rate == 1.0
        assert sorted(f for f, r in results.items() if r.drifted) == [
            "capital-gain", "capital-loss", "hours-per-week"
        ]  # fmt: skip


def test_few_false_alarms_on_clean_samples_of_every_size(adult_train, sig) -> None:  # noqa: ANN001
    """20 clean samples each of 200, 1,000 and 6,000 rows: at most one flags anything (the
    whole-batch rate is designed to be at most alpha = 1 %)."""
    reference, rest = _halves(adult_train)
    profile = drift.build_profile(reference, sig, 10)
    rng = np.random.default_rng(2)
    settings = MonitorConfig()
    for size in (200, 1000, 6000):
        alarms = 0
        for _ in range(20):
            sample = rest.iloc[rng.choice(len(rest), size=size, replace=False)]
            found = drift.compare_features(profile, sample, sig, settings)
            alarms += any(r.drifted for r in found)
        assert alarms <= 1, (size, alarms)


def test_a_small_shift_is_seen_by_the_test_on_a_small_batch(adult_train, sig) -> None:  # noqa: ANN001
    """Age + 3 years in 1,000 rows: PSI ~0.02 (noise at that size), the KS test sees it."""
    reference, rest = _halves(adult_train)
    sample = rest.sample(1000, random_state=3)
    found = {
        r.feature: r for r in drift.detect(reference, sample.assign(age=sample["age"] + 3), sig)
    }
    assert found["age"].drifted
    assert found["age"].p_value < 0.01 / len(sig.inputs)


def ages(n: int, seed: int, shift: float = 0.0) -> pd.Series:
    """Ages in whole years (spread 10), ``shift`` years older."""
    return pd.Series(np.random.default_rng(seed).normal(40, 10, n).round() + shift)


def test_a_one_year_shift_is_seen_on_either_side_of_5000_rows() -> None:
    """Age + 1 year (PSI under 0.01, a KS distance of about 4 %) was seen by the test at 4,999
    rows and missed by PSI from 5,000: one rule at every size now, and the same rows, one
    more or less, get the same verdict; clean batches of both sizes are not flagged."""
    profile = drift.column_profile(ages(30_000, 1), "numeric", 10)
    older, clean = ages(5_000, 2, shift=1.0), ages(5_000, 3)
    for rows in (4_999, 5_000):
        seen = drift.compare_column("age", profile, older[:rows], SETTINGS, tests=13)
        assert seen.drifted and seen.reasons == ("distribution",), (rows, seen)
        assert seen.psi - seen.psi_noise < 0.025  # the old rule's threshold from 5,000 rows
        assert seen.effect >= SETTINGS.min_effect
        assert not drift.compare_column("age", profile, clean[:rows], SETTINGS, tests=13).drifted


def test_a_huge_batch_does_not_flag_a_trivial_shift() -> None:
    """Half a million rows against as many: a shift of 2 % of a spread is significant (p ~ 0)
    but moves no share of rows by ``min_effect``, so it is no drift; a shift of 10 % is."""
    rng = np.random.default_rng(4)
    n = 500_000
    profile = drift.column_profile(pd.Series(rng.normal(size=n)), "numeric", 10)
    trivial = drift.compare_column("x", profile, pd.Series(rng.normal(0.02, size=n)), SETTINGS)
    assert trivial.p_value < 1e-6 and trivial.effect < SETTINGS.min_effect
    assert not trivial.drifted
    real = drift.compare_column("x", profile, pd.Series(rng.normal(0.1, size=n)), SETTINGS)
    assert real.drifted and real.effect > SETTINGS.min_effect


def test_the_effect_of_a_category_is_the_share_that_moved() -> None:
    """Total variation distance: 3 points of rows moved from "a" to "b" give an effect 0.03."""
    profile = drift.column_profile(pd.Series(["a"] * 5_000 + ["b"] * 5_000), "categorical", 10)
    batch = pd.Series(["a"] * 470 + ["b"] * 530)
    assert drift.compare_column("c", profile, batch, SETTINGS).effect == pytest.approx(0.03)


def test_ks_against_the_profile_matches_scipy() -> None:
    rng = np.random.default_rng(4)
    ref, cur = rng.normal(size=40_000), rng.normal(0.05, 1.0, size=3_000)
    profile = drift.column_profile(pd.Series(ref), "numeric", 10)
    result = drift.compare_column("x", profile, pd.Series(cur), SETTINGS)
    expected = stats.ks_2samp(ref, cur)
    assert result.statistic == pytest.approx(expected.statistic, abs=2e-3)
    assert result.p_value == pytest.approx(expected.pvalue, rel=0.5)


def test_rare_categories_do_not_raise_false_alarms_on_small_batches() -> None:
    """A column with 60 categories, most rare: a 200-row batch of the same mix is no drift
    (rare categories are pooled for the chi-square test), one with a new category is."""
    rng = np.random.default_rng(5)
    levels = [f"c{i}" for i in range(60)]
    weights = np.r_[np.full(5, 0.15), np.full(55, 0.25 / 55)]
    ref = pd.Series(rng.choice(levels, size=30_000, p=weights))
    profile = drift.column_profile(ref, "categorical", 10)
    alarms = sum(
        drift.compare_column(
            "c", profile, pd.Series(rng.choice(levels, 200, p=weights)), SETTINGS
        ).drifted
        for _ in range(40)
    )
    assert alarms <= 2
    batch = pd.Series(rng.choice(levels, 200, p=weights))
    batch[:30] = "brand-new"
    result = drift.compare_column("c", profile, batch, SETTINGS)
    assert result.drifted and "(new)" not in result.histogram["bins"]
    assert "brand-new" in result.histogram["bins"]


def test_drift_needs_the_model_columns(adult_train, sig) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="'age'"):
        drift.detect(adult_train, adult_train.drop(columns="age"), sig)


# --- performance estimated from the probabilities ----------------------------------------------


def test_estimates_match_realised_kpis_when_calibrated() -> None:
    rng = np.random.default_rng(6)
    p = rng.beta(0.5, 1.5, 100_000)
    y = (rng.uniform(size=len(p)) < p).astype(int)
    names = ["roc_auc", "pr_auc", "accuracy", "f1", "mcc", "log_loss", "brier", "recall"]
    real = compute_kpis("binary_classification", y, p, 0.4, names)
    for name in names:
        est = estimate_kpi("binary_classification", name, p, 0.4)
        assert est == pytest.approx(real[name], abs=0.01), name
    P = rng.dirichlet([0.5, 0.5, 0.5], 30_000)
    y = (P.cumsum(axis=1) < rng.uniform(size=(len(P), 1))).sum(axis=1)
    names = ["accuracy", "f1_macro", "log_loss", "roc_auc_ovr", "balanced_accuracy"]
    real = compute_kpis("multiclass_classification", y, P, None, names)
    for name in names:
        est = estimate_kpi("multiclass_classification", name, P)
        assert est == pytest.approx(real[name], abs=0.01), name
    assert estimate_kpi("regression", "rmse", rng.normal(size=10)) is None
    assert estimate_kpi("binary_classification", "roc_auc", np.array([])) is None


def test_judge_needs_the_interval_to_miss() -> None:
    assert monitor.judge("roc_auc", 0.93, 0.925, None) is True
    assert monitor.judge("roc_auc", 0.92, 0.925, {"low": 0.90, "high": 0.94}) is None
    assert monitor.judge("roc_auc", 0.90, 0.925, {"low": 0.88, "high": 0.92}) is False
    assert monitor.judge("log_loss", 0.40, 0.35, {"low": 0.36, "high": 0.44}) is False
    assert monitor.judge("log_loss", 0.36, 0.35, {"low": 0.30, "high": 0.40}) is None
    assert monitor.judge("roc_auc", None, 0.925, None) is None


# --- the reports, on generated data ------------------------------------------------------------


def small_run(labels: int = 1011, version: str | None = "v0.1.0", text: float = 0.0) -> dict:
    """A run over 1,011 generated rows (a score ``x``, a number ``z`` of which ``text`` arrives
    as text), the model's probabilities from ``x``, ``labels`` of them labelled, and an
    objective (ROC AUC 0.76) the labelled rows miss by less than their sampling error."""
    rng = np.random.default_rng(7)
    n = 1011
    x = rng.normal(size=n)
    p = 1 / (1 + np.exp(-1.2 * x))
    y = pd.Series(np.where(rng.random(n) < p, "yes", "no"), dtype=object)
    frame = pd.DataFrame({"x": x, "z": rng.normal(size=n), "y": y})
    sig = infer_signature(frame, "y", "yes")
    objectives = config.section(
        {
            "objectives": {
                "task": "binary_classification",
                "target": "y",
                "positive_class": "yes",
                "minimum": 0.76,
            }
        },
        "objectives",
    )
    batch = frame[["x", "z"]].assign(x=x + 0.1).astype(object)  # x moved, within chance
    batch.loc[: int(text * n) - 1, "z"] = "n/a"
    y[labels:] = None
    return monitor.run(
        drift.build_profile(frame, sig, 10), sig, objectives, SETTINGS, batch,
        np.c_[1 - p, p], y, model={"name": "m", "version": version, "id": "abc"},
        window={"source": "file", "where": "batch.csv"},
    )  # fmt: skip


def test_both_reports_give_one_verdict_on_an_objective() -> None:
    """1,011 labels (min_labels is 200) and a value whose interval reaches the objective: both
    reports say undecided (the Markdown once said "too few labels"); with 50 labels both say it
    was not judged, and why."""
    doc = small_run()
    (o,) = doc["performance"]["objectives"]
    assert o["met"] is None and o["interval"]["high"] > o["limit"] > o["value"]
    assert o["status"] == "undecided"
    md, page = monitor.markdown_report(doc), html_report(doc)
    assert "roc_auc 0.7517 vs 0.76: undecided" in md and "too few" not in md
    assert '<span class="pill">undecided</span>' in page
    few = small_run(labels=50)
    (o,) = few["performance"]["objectives"]
    assert o["status"] == "not judged (50 labelled rows, fewer than min_labels 200)"
    assert o["status"] in monitor.markdown_report(few) and o["status"] in html_report(few)


@pytest.mark.parametrize("version", ["v0.1.0", "0.1.0"])
def test_the_version_is_written_once(version: str) -> None:
    doc = small_run(version=version)
    assert "Model m v0.1.0 (abc)" in monitor.markdown_report(doc)
    page = html_report(doc)
    assert "<h1>Monitoring report: m v0.1.0</h1>" in page and "vv0" not in page


def test_markdown_puts_flagged_columns_first_and_shows_text_in_numbers() -> None:
    """z, flagged for text alone, comes before x, which is not flagged though its PSI is the
    larger, and shows the share of its values that are not numbers."""
    doc = small_run(text=0.3)
    x, z = sorted(doc["features"], key=lambda f: f["feature"])
    assert z["reasons"] == ["type"] and not x["drifted"] and x["psi"] > z["psi"]
    table = [line for line in monitor.markdown_report(doc).splitlines() if line.startswith("| ")]
    assert [line[:4] for line in table if line[:4] in ("| x ", "| z ")] == ["| z ", "| x "]
    assert "| 30.0% | **yes** (type) |" in next(line for line in table if line[:4] == "| z ")


def test_report_files_are_ordinary_files(tmp_path: Path) -> None:
    """Written atomically, yet with the mode `open` gives a new file: 0666 less the umask
    (0644 under the usual 022), not the 0600 of a temporary file; folders 0777 less it."""
    for mask in (0o022, 0o027):
        old = os.umask(mask)
        try:
            write_text(tmp_path / f"{mask:o}" / "monitor.md", "# Monitoring report\n")
            with atomic_folder(tmp_path / f"{mask:o}" / "bundle") as folder:
                (folder / "x").touch()
        finally:
            os.umask(old)
        mode = stat.S_IMODE((tmp_path / f"{mask:o}" / "monitor.md").stat().st_mode)
        assert mode == (0o644 if mask == 0o022 else 0o640)
        assert stat.S_IMODE((tmp_path / f"{mask:o}" / "bundle").stat().st_mode) == 0o777 & ~mask


# --- a run of the monitor on the built project's bundle ----------------------------------------


@pytest.fixture(scope="module")
def bundle(small_project: Path):  # noqa: ANN201
    return load_bundle(small_project / "models" / "bundle")


@pytest.fixture(scope="module")
def test_split(small_project: Path) -> pd.DataFrame:
    return pd.read_parquet(small_project / TEST_SPLIT)


def _run(bundle, records: pd.DataFrame, labels=None, settings=None) -> dict:  # noqa: ANN001
    output = score(bundle, records).output
    return monitor.run(
        bundle.profile,
        bundle.signature,
        monitor.objectives_from_bundle(bundle.metadata),
        settings or MonitorConfig(),
        records,
        output,
        labels,
        model={"name": "m", "version": None, "id": bundle.model_id},
        window={"source": "file", "where": "test"},
    )


def test_the_bundle_carries_the_reference_profile(bundle, small_project: Path) -> None:  # noqa: ANN001
    profile = bundle.profile
    train = pd.read_parquet(small_project / "data" / "prepared" / "train.parquet")
    assert profile["rows"] == len(train)
    assert sorted(profile["features"]) == sorted(bundle.signature.input_columns)
    age = profile["features"]["age"]
    assert sum(age["counts"]) + age["missing"] == len(train)
    assert len(age["quantiles"]) == drift.QUANTILES
    assert set(profile["predictions"]) == {"score", "class_mix"}
    assert sum(profile["target"]["counts"].values()) == len(train)
    perf = profile["performance"]
    evaluate = json.loads((small_project / "metrics" / "evaluate.json").read_text())
    assert perf["realized"] == evaluate[perf["metric"]]
    assert perf["estimated"] == pytest.approx(perf["realized"], abs=0.03)


def test_clean_labelled_batch_meets_the_objectives(bundle, test_split) -> None:  # noqa: ANN001
    batch = test_split.sample(1500, random_state=7)
    doc = _run(bundle, batch, batch["income"].astype(object))
    assert doc["drift"] is False and doc["retrain"] == {"recommended": False, "reasons": []}
    perf = doc["performance"]
    assert perf["labelled_rows"] == 1500 and perf["unusable_labels"] == 0
    y = (batch["income"] == bundle.signature.positive_class).to_numpy().astype(int)
    out = score(bundle, batch).output
    assert (
        perf["kpis"]["roc_auc"]
        == compute_kpis("binary_classification", y, out, bundle.decision, ["roc_auc"])["roc_auc"]
    )
    assert all(o["met"] is not False for o in perf["objectives"])
    assert perf["estimated"]["value"] == pytest.approx(perf["kpis"]["roc_auc"], abs=0.02)
    assert doc["target"]["drifted"] is False and doc["predictions"]["drifted"] is False


def test_positives_sampled_twice_show_in_the_predictions(bundle, test_split) -> None:  # noqa: ANN001
    rng = np.random.default_rng(8)
    weight = np.where(test_split["income"] == ">50K", 2.0, 1.0)
    pick = rng.choice(len(test_split), size=10_000, p=weight / weight.sum())
    batch = test_split.iloc[pick].reset_index(drop=True)
    doc = _run(bundle, batch)
    assert doc["predictions"]["drifted"] and doc["drift"]
    assert doc["predictions"]["class_mix"]["effect"] >= doc["settings"]["min_effect"]
    assert "the predictions drifted" in doc["retrain"]["reasons"]
    mix = doc["predictions"]["class_mix"]["histogram"]
    cur = dict(zip(mix["bins"], mix["current"], strict=True))
    ref = dict(zip(mix["bins"], mix["reference"], strict=True))
    assert cur[">50K"] > ref[">50K"] + 0.05


def test_labels_that_the_model_gets_wrong_miss_the_objectives(bundle, test_split) -> None:  # noqa: ANN001
    """Flipped labels (the world changed, the inputs did not): the labelled KPIs fall below
    the objectives while the estimate, which cannot see it, stays put."""
    batch = test_split.sample(2000, random_state=9)
    flipped = batch["income"].map({">50K": "<=50K", "<=50K": ">50K"}).astype(object)
    flipped.iloc[:5] = "not-a-class"
    doc = _run(bundle, batch, flipped)
    perf = doc["performance"]
    assert perf["unusable_labels"] == 5 and perf["labelled_rows"] == 1995
    missed = [o["metric"] for o in perf["objectives"] if o["met"] is False]
    assert "roc_auc" in missed
    assert perf["estimated"]["met"] is not False
    assert doc["target"]["drifted"]  # the label mix moved too
    assert any("misses the objective" in r for r in doc["retrain"]["reasons"])


def test_too_few_labels_are_not_judged(bundle, test_split) -> None:  # noqa: ANN001
    batch = test_split.sample(500, random_state=10)
    labels = pd.Series([None] * len(batch), index=batch.index, dtype=object)
    labels.iloc[:50] = batch["income"].iloc[:50].map({">50K": "<=50K", "<=50K": ">50K"})
    doc = _run(bundle, batch, labels)
    perf = doc["performance"]
    assert perf["labelled_rows"] == 50
    assert all(o["met"] is None for o in perf["objectives"])


def test_history_appends_runs_and_refuses_a_foreign_file(bundle, test_split, tmp_path) -> None:  # noqa: ANN001
    batch = test_split.sample(1000, random_state=11)
    doc = _run(bundle, batch, batch["income"])
    with pytest.raises(ValueError, match=f"labels has {len(test_split)} rows for 1000"):
        _run(bundle, batch, test_split["income"])
    assert monitor.append_history(tmp_path, doc) == 1
    assert monitor.append_history(tmp_path, doc) == 2
    with (tmp_path / "drift.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["run"] for r in rows} == {"1", "2"}
    assert {r["series"] for r in rows} >= {"age", "(predictions score)", "(target)"}
    kpis = {r["series"] for r in csv.DictReader((tmp_path / "kpis.csv").open())}
    assert {"roc_auc (labelled)", "roc_auc (estimated)", "roc_auc (objective)"} <= kpis
    (tmp_path / "kpis.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a monitoring history"):
        monitor.append_history(tmp_path, doc)
    assert (tmp_path / "kpis.csv").read_text() == "a,b\n1,2\n"
    assert len(list(csv.DictReader((tmp_path / "drift.csv").open()))) == len(rows)


# --- mlcycle monitor --------------------------------------------------------------------------


def test_monitor_a_file_writes_reports_and_history(small_project: Path, tmp_path: Path) -> None:
    batch = small_project / TEST_SPLIT
    out, history = tmp_path / "report", tmp_path / "history"
    proc = cli(
        small_project, "monitor", str(batch), "--out", str(out), "--history", str(history),
        "--fail-on-drift", check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "monitor.json").read_text())
    signature = json.loads((small_project / "models/bundle/signature.json").read_text())
    columns = [f["name"] for f in signature["inputs"]]
    assert [f["feature"] for f in doc["features"]] == columns
    assert "capital-net" not in columns  # raw inputs, not derived features
    assert doc["drifted_features"] == [] and doc["drift"] is False
    assert doc["rows"] == len(pd.read_parquet(batch))
    metadata = json.loads((small_project / "models/bundle/metadata.json").read_text())
    assert doc["model"]["id"] == metadata["model_sha256"][:12]
    assert doc["performance"]["labelled_rows"] == doc["rows"]  # the file holds the target
    assert (out / "monitor.md").read_text().startswith("# Monitoring report")
    assert "<svg" in (out / "monitor.html").read_text() or doc["drifted_features"] == []
    assert sorted(p.name for p in history.iterdir()) == sorted(monitor.HISTORY_FILES)
    assert "retrain" not in proc.stdout or "no action needed" in proc.stdout


def test_monitor_fail_on_drift_exits_3(small_project: Path, tmp_path: Path) -> None:
    batch = tmp_path / "shifted.parquet"
    shifted(pd.read_parquet(small_project / TEST_SPLIT)).to_parquet(batch)
    out = tmp_path / "report"
    args = ("monitor", str(batch), "--out", str(out), "--no-history")
    proc = cli(small_project, *args, "--fail-on-drift", check=False)
    assert proc.returncode == 3, proc.stderr
    assert "age, workclass" in proc.stdout and "retrain recommended" in proc.stdout
    doc = json.loads((out / "monitor.json").read_text())
    assert doc["drifted_features"] == ["age", "workclass"]
    assert "**yes**" in (out / "monitor.md").read_text()
    html = (out / "monitor.html").read_text()
    assert "age" in html and "workclass" in html
    # Without the flag the same drift is reported but the command succeeds.
    assert cli(small_project, *args, check=False).returncode == 0
    history = small_project / "metrics" / "monitor" / "drift.csv"
    assert history.read_text() == ",".join(monitor.HISTORY_COLUMNS) + "\n"  # --no-history


def test_monitor_names_what_is_wrong(small_project: Path, tmp_path: Path) -> None:
    batch = tmp_path / "no_age.csv"
    pd.read_parquet(small_project / TEST_SPLIT).drop(columns="age").to_csv(batch, index=False)
    proc = cli(
        small_project, "monitor", str(batch), "--no-history", "--out", str(tmp_path), check=False
    )
    assert proc.returncode != 0 and "'age'" in proc.stderr
    proc = cli(small_project, "monitor", "--log-url", f"sqlite:///{tmp_path}/none.db", check=False)
    assert proc.returncode != 0 and "none.db" in proc.stderr
    proc = cli(small_project, "monitor", "--since", "yesterday", "--no-history", check=False)
    assert proc.returncode != 0 and "--since" in proc.stderr


def _log_batches(bundle, url: str, batches: list[tuple[pd.DataFrame, str, datetime]]) -> None:  # noqa: ANN001
    """Log each batch as the service does: one request of its records, with its outputs."""
    with PredictionLog(url) as log:
        for frame, request_id, ts in batches:
            records = frame[bundle.signature.input_columns].astype(object)
            records = records.where(records.notna(), None).to_dict("records")
            scores = score(bundle, frame)
            outputs = prediction_dicts(scores.output, scores.labels, bundle.signature)
            assert log.submit(
                request_id, records, outputs, model_name="income-classifier",
                model_id=bundle.model_id, model_version="v0.1.0", ts=ts,
            )  # fmt: skip
        assert log.flush(30)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty prediction log: a SQLite file, or a fresh schema on the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'predictions.db'}"
    return request.getfixturevalue("pg_url")


def test_monitor_reads_a_window_of_the_prediction_log(  # noqa: ANN001
    small_project: Path, bundle, test_split, tmp_path: Path, log_url: str
) -> None:
    url = log_url
    day = datetime(2026, 11, 1, tzinfo=UTC)
    clean_rows = test_split.sample(1500, random_state=12)
    drifted_rows = shifted(test_split.sample(1500, random_state=13))
    # A request logged without its inputs (over the log's limit): left out, and said
    with PredictionLog(url, max_record_bytes=100) as log:
        rows = clean_rows.iloc[:10][bundle.signature.input_columns].astype(object)
        assert log.submit(
            "too-big", rows.where(rows.notna(), None).to_dict("records"),
            [{"label": "<=50K", "probabilities": {"<=50K": 0.9, ">50K": 0.1}}] * 10,
            model_name="income-classifier", model_id=bundle.model_id, ts=day,
        )  # fmt: skip
    assert log.omitted == 10
    _log_batches(
        bundle,
        url,
        [(clean_rows.iloc[i : i + 500], f"clean-{i}", day + timedelta(hours=i // 500))
         for i in range(0, 1500, 500)]
        + [(drifted_rows.iloc[i : i + 500], f"drift-{i}", day + timedelta(days=1, hours=i // 500))
           for i in range(0, 1500, 500)],
    )  # fmt: skip
    history = tmp_path / "history"
    bundle_dir = str(small_project / "models" / "bundle")

    def monitor_cli(*args: str) -> tuple[int, dict]:
        out = tmp_path / "out"
        proc = cli(
            small_project, "monitor", "--log-url", url, "--out", str(out),
            "--history", str(history), "--fail-on-drift", *args, check=False,
        )  # fmt: skip
        assert proc.returncode in (0, 3), proc.stderr
        return proc.returncode, json.loads((out / "monitor.json").read_text())

    code, doc = monitor_cli("--until", "2026-11-02")
    assert code == 0 and doc["rows"] == 1500 and doc["drift"] is False
    assert doc["window"]["omitted"] == 10
    assert "10 records logged without their inputs" in (tmp_path / "out/monitor.md").read_text()
    assert doc["window"]["source"] == "log" and doc["window"]["last_ts"].startswith("2026-11-01")
    code, doc = monitor_cli("--last", "1000")
    assert code == 3 and doc["rows"] == 1000
    assert doc["drifted_features"] == ["age", "workclass"]
    # The records of a version, judged against the bundle given (without --bundle: the
    # version's own, from the registry; see the next test).
    code, doc = monitor_cli(
        "--since", "2026-11-02", "--model-version", "v0.1.0", "--bundle", bundle_dir
    )
    assert doc["rows"] == 1500 and doc["window"]["model_version"] == "v0.1.0"
    assert doc["model"]["version"] == "v0.1.0"
    proc = cli(
        small_project, "monitor", "--log-url", url, "--model-version", "v9", "--bundle", bundle_dir,
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and "no records" in proc.stderr

    # Labels arrive for the clean day: KPIs on the labelled rows.
    labels = [
        (f"clean-{i}", r, label)
        for i in range(0, 1500, 500)
        for r, label in enumerate(clean_rows["income"].iloc[i : i + 500])
    ]
    from mlcycle.predlog import attach_labels

    assert attach_labels(url, labels).matched == 1500
    code, doc = monitor_cli("--until", "2026-11-02")
    perf = doc["performance"]
    assert perf["labelled_rows"] == 1500 and perf["kpis"]["roc_auc"] > 0.85
    runs = {r["run"] for r in csv.DictReader((history / "kpis.csv").open())}
    assert runs == {"1", "2", "3", "4"}


def test_monitor_a_version_against_its_own_bundle(project_copy: Path, tmp_path: Path) -> None:
    """`--model-version v0.1.0` judges v0.1.0's records against v0.1.0's bundle, fetched from
    the registry, not against the workspace's models/bundle (gone here)."""
    cli(project_copy, "release")
    bundle = load_bundle(project_copy / "models" / "bundle")
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    rows = pd.read_parquet(project_copy / TEST_SPLIT).head(300)
    _log_batches(bundle, url, [(rows, "r1", datetime(2026, 11, 1, tzinfo=UTC))])
    shutil.rmtree(project_copy / "models" / "bundle")
    args = ("monitor", "--log-url", url, "--out", "out", "--no-history", "--model-version")
    cli(project_copy, *args, "v0.1.0")
    doc = json.loads((project_copy / "out" / "monitor.json").read_text())
    assert doc["model"]["id"] == bundle.model_id and doc["model"]["version"] == "v0.1.0"
    where = Path(doc["model"]["bundle"])
    assert where == project_copy / "models" / "registry" / doc["model"]["name"] / "v0.1.0"
    proc = cli(project_copy, *args, "v9", check=False)
    assert proc.returncode != 0 and "no model version" in proc.stderr and "v0.1.0" in proc.stderr


def test_dvc_plots_draw_the_monitoring_history(project_copy: Path) -> None:
    """The history as `dvc plots show` draws it, and as PNG files (`--plots`) for a machine
    without the network, where the page of `dvc plots show` stays blank."""
    batch = project_copy / TEST_SPLIT
    for extra in ((), ("--plots",)):
        proc = cli(
            project_copy, "monitor", str(batch), "--out", "reports/monitor", *extra, check=False
        )
        assert proc.returncode == 0, proc.stderr
    pngs = sorted((project_copy / "reports" / "monitor" / "history").iterdir())
    assert [p.name.split("-")[1] for p in pngs] == ["drift", "kpis", "predicted"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)
    out = run(["dvc", "plots", "show", "--json"], project_copy).stdout
    plots = {name: json.dumps(p) for name, p in json.loads(out)["data"].items()}
    drift_plot = next(p for name, p in plots.items() if name.startswith("Monitoring, drift"))
    kpi_plot = next(p for name, p in plots.items() if name.startswith("Monitoring, KPIs"))
    mix_plot = next(p for name, p in plots.items() if name.startswith("Monitoring, predicted"))
    assert '"series": "age"' in drift_plot and '"series": "(predictions score)"' in drift_plot
    assert '"series": "roc_auc (estimated)"' in kpi_plot
    assert '"series": ">50K"' in mix_plot
    assert '"run": "2"' in drift_plot or '"run": 2' in drift_plot


def test_labels_read_as_numbers_are_the_classes_prepare_spells() -> None:
    """A label file (or a JSON label) read as floats says 1.0 for the class "1": the monitor and
    the log spell it as prepare does, so it counts, not "not a class of the model"."""
    sig = Signature(TINY_SIGNATURE.features, "label", positive_class="1", negative_class="0")
    where, codes, unusable = monitor.label_targets(pd.Series([1.0, 0.0, None, 2.0]), sig)
    assert where.tolist() == [0, 1] and codes.tolist() == [1.0, 0.0] and unusable == 1
    assert [_label_text(v) for v in (1.0, np.float64(0.0), 0.5, "1.0", 7)] == [
        "1",
        "0",
        "0.5",
        "1.0",
        "7",
    ]
