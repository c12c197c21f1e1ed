"""The evaluate stage and the gate's champion scoring on the Dask engine.

Sums per partition give the same KPIs as the row-level functions; the dask evaluation of a
trained model on a test split stored as a folder of parts writes the same files, keys and
figures as the local engine's on the same split (through the stage's own dispatch, on a real
`dask scheduler` with two workers); above the row bound nothing per row is gathered: ROC AUC,
PR AUC and the one-vs-rest AUC stay exact (a sorted score table on the workers) with DeLong's
interval, the curves and slices come from a histogram, evaluate.json says so and no other
interval is faked; the gate scores a champion bundle partition by partition to the local
engine's figures.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from mlcycle import config, tasks
from mlcycle.bundle import load_bundle
from mlcycle.features import Signature, encode_target
from mlcycle.metrics import (
    KPI_FUNCTIONS,
    RANKING_KPIS,
    THRESHOLD_GRID,
    confusion_from_sums,
    kpi,
    kpis_from_sums,
    merge_sums,
    partial_sums,
    threshold_counts,
    threshold_curve,
    threshold_curve_from_counts,
)
from mlcycle.predict import score
from tests.conftest import run, set_params

BINARY, MULTICLASS, REGRESSION = (
    "binary_classification",
    "multiclass_classification",
    "regression",
)
TEST = "data/prepared/test.parquet"


def summed(task: str, y: np.ndarray, out: np.ndarray, threshold, k: int, hist: bool = False):
    """Sums over five uneven partitions (one of them empty), merged in order."""
    total = None
    for ix in np.array_split(np.arange(len(y)), [0, 7, 800, 2500]):
        part = partial_sums(task, y[ix], out[ix], threshold, k, hist)
        total = part if total is None else merge_sums(total, part)
    return total


def random_case(task: str, n: int = 4000, seed: int = 3):
    rng = np.random.default_rng(seed)
    if task == BINARY:
        y = rng.integers(0, 2, n)
        p = np.clip(rng.beta(2, 3, n) * 0.6 + 0.4 * y, 0, 1)
        p[:50] = np.round(p[:50], 1)  # ties
        return y, np.column_stack([1 - p, p]), 0.37, 2
    if task == MULTICLASS:
        return rng.integers(0, 3, n), rng.dirichlet([1, 2, 1], n), (1.0, 0.8, 1.5), 3
    y = rng.normal(1000, 50, n)
    return y, y + rng.normal(3, 20, n), None, 0


@pytest.mark.parametrize("task", [BINARY, MULTICLASS, REGRESSION])
def test_kpis_from_partition_sums_equal_the_row_kpis(task: str) -> None:
    y, out, t, k = random_case(task)
    names = list(KPI_FUNCTIONS[task])
    s = summed(task, y, out, t, k)
    exact = kpis_from_sums(task, s, names, t, (y, out), k)
    for name in names:
        expected = kpi(task, name, y, out, t)
        assert exact[name] == pytest.approx(expected, abs=1e-9), name
    without_rows = kpis_from_sums(task, s, names, t, None, k)
    for name in set(names) - RANKING_KPIS:
        assert without_rows[name] == pytest.approx(exact[name], abs=1e-9), name
    if k:  # the confusion counts and per-class report from the sums: scikit-learn's
        labels = tasks.get(task).decide(out, t)
        detail = confusion_from_sums(task, s, tuple("abc"[:k]))
        matrix = skm.confusion_matrix(y, labels, labels=list(range(k)))
        assert detail["confusion"] == tasks.get(task).confusion_summary(matrix, "abc"[:k])
        p, r, f, n = skm.precision_recall_fscore_support(y, labels, zero_division=0)
        for i, c in enumerate("abc"[:k]):
            expected = {"precision": p[i], "recall": r[i], "f1": f[i], "support": n[i]}
            assert detail["per_class"][c] == pytest.approx(expected, abs=1e-6), c


@pytest.mark.parametrize("task", [BINARY, MULTICLASS])
def test_histogram_ranking_kpis_are_close(task: str) -> None:
    y, out, t, k = random_case(task)
    names = [n for n in KPI_FUNCTIONS[task] if n in RANKING_KPIS]
    approx = kpis_from_sums(task, summed(task, y, out, t, k, hist=True), names, t, None, k)
    for name in names:
        assert approx[name] == pytest.approx(kpi(task, name, y, out, t), abs=1e-3), name


def delong_reference(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """DeLong's AUC and its standard error from midranks (Sun & Xu's fast form), row by row."""
    from scipy.stats import rankdata

    pos, neg = p[y == 1], p[y == 0]
    m, n = len(pos), len(neg)
    tz = rankdata(np.r_[pos, neg])
    v10 = (tz[:m] - rankdata(pos)) / n
    v01 = 1.0 - (tz[m:] - rankdata(neg)) / m
    auc = v10.mean()
    return auc, float(np.sqrt(v10.var(ddof=1) / m + v01.var(ddof=1) / n))


@pytest.mark.parametrize("task", [BINARY, MULTICLASS])
def test_rank_kpis_from_the_workers_are_exact(task: str, dask_local_client) -> None:
    """ROC AUC, PR AUC and the macro one-vs-rest AUC from the sorted score table on a
    LocalCluster equal scikit-learn's on the rows (ties included); DeLong's interval equals
    the reference computed from midranks."""
    import dask.dataframe as dd

    from mlcycle.engines.dask.evaluate import Z95, rank_kpis
    from mlcycle.features import Feature

    y, out, _, k = random_case(task, n=6000)
    if task == BINARY:
        frame = pd.DataFrame({"probability": out[:, 1]})
        classes = ["<=50K", ">50K"]
    else:
        out[1000:2000] = out[:1000]  # tied scores across partitions
        classes = ["a", "b", "c"]
        frame = pd.DataFrame({f"probability_{c}": out[:, i] for i, c in enumerate(classes)})
    frame["actual"] = y
    sig = Signature(
        features=(Feature("x", "numeric"),), target="t", task=task, classes=tuple(classes)
    )
    scored = dd.from_pandas(frame, npartitions=5)
    names = [n for n in KPI_FUNCTIONS[task] if n in RANKING_KPIS]
    values, interval = rank_kpis(scored, sig, names, "roc_auc")
    for name in names:
        assert values[name] == pytest.approx(kpi(task, name, y, out, 0.5), abs=1e-12), name
    if task == BINARY:
        auc, se = delong_reference(y, out[:, 1])
        assert values["roc_auc"] == pytest.approx(auc, abs=1e-12)
        assert interval["low"] == pytest.approx(auc - Z95 * se, abs=1e-6)
        assert interval["high"] == pytest.approx(auc + Z95 * se, abs=1e-6)
    else:
        assert interval is None
    # one class absent: undefined, as the row functions have it
    gone = dd.from_pandas(frame[frame["actual"] != 0], npartitions=3)
    values, _ = rank_kpis(gone, sig, names)
    if task == BINARY:
        assert np.isnan(values["roc_auc"]) and values["pr_auc"] == 1.0
    else:
        assert np.isnan(values["roc_auc_ovr"])


def calibration_points(y_true: np.ndarray, proba: np.ndarray, bins: int = 10) -> list[dict]:
    """The reliability diagram row by row: per tenth of the score, its rows' mean score and
    observed rate."""
    which = np.clip(np.digitize(proba, np.linspace(0.0, 1.0, bins + 1)[1:-1]), 0, bins - 1)
    return [
        {
            "bin": b,
            "mean_predicted": round(float(proba[which == b].mean()), 6),
            "fraction_positive": round(float(y_true[which == b].mean()), 6),
            "count": int((which == b).sum()),
        }
        for b in range(bins)
        if (which == b).any()
    ]


def test_calibration_and_threshold_curve_from_sums() -> None:
    from mlcycle.metrics import calibration_from_sums

    y, out, t, k = random_case(BINARY)
    assert calibration_from_sums(summed(BINARY, y, out, t, k)) == calibration_points(y, out[:, 1])
    counts = sum(threshold_counts(y[ix], out[ix]) for ix in np.array_split(np.arange(len(y)), 3))
    ranking = {"roc_auc": kpi(BINARY, "roc_auc", y, out)}
    for metric in ("f1", "mcc", "balanced_accuracy", "accuracy", "precision", "roc_auc", None):
        expected = threshold_rows(y, out[:, 1], metric, 1.0, 3.0)
        assert threshold_curve(y, out, metric, 1.0, 3.0) == expected, metric
        assert threshold_curve_from_counts(counts, metric, 1.0, 3.0, ranking) == expected, metric


def threshold_rows(y: np.ndarray, p: np.ndarray, metric, cost_fp: float, cost_fn: float):
    """The threshold curve row by row: at each threshold of the grid, the labels decided and
    scikit-learn's metric of them, and the mean cost of the errors."""
    rows = []
    for t in THRESHOLD_GRID:
        labels = (p >= t).astype(np.int64)
        fp, fn = int((labels > y).sum()), int((labels < y).sum())
        row = {"threshold": float(t), "cost": round((cost_fp * fp + cost_fn * fn) / len(y), 6)}
        if metric:
            row[metric] = round(float(KPI_FUNCTIONS[BINARY][metric](y, p, float(t))), 6)
        rows.append(row)
    return rows


# --- the stage, end to end ------------------------------------------------------------------


def as_parts(project: Path, n: int = 3) -> None:
    """Rewrite the project's test split as a folder of ``n`` Parquet parts (same rows)."""
    path = project / TEST
    frame = pd.read_parquet(path)
    path.unlink()
    path.mkdir()
    for i, ix in enumerate(np.array_split(np.arange(len(frame)), n)):
        frame.iloc[ix].to_parquet(path / f"part-{i:05d}.parquet", index=False)


def read(project: Path, name: str):
    return json.loads((project / name).read_text())


@pytest.fixture(scope="module")
def engines(small_project: Path, tmp_path_factory: pytest.TempPathFactory, dask_scheduler: str):
    """The sample project evaluated twice on the same split of 3 parts: by the local engine and
    by the Dask engine on a real scheduler, each through `python -m mlcycle.stages.evaluate`."""
    root = tmp_path_factory.mktemp("engines")
    copies = {}
    for name in ("local", "dask"):
        dest = root / name
        shutil.copytree(small_project, dest, symlinks=True)
        as_parts(dest)
        if name == "dask":
            set_params(dest, {"engine": {"kind": "dask", "scheduler": dask_scheduler}})
        out = run([str(Path(os.sys.executable)), "-m", "mlcycle.stages.evaluate"], dest)
        copies[name] = (dest, out.stderr)
    return copies


def test_dask_evaluation_writes_the_local_figures(engines) -> None:
    (local, _), (dask, log) = engines["local"], engines["dask"]
    assert "dask: scheduler tcp://127.0.0.1" in log
    a, b = read(local, "metrics/evaluate.json"), read(dask, "metrics/evaluate.json")
    assert set(a) == set(b)
    assert set(read(local, "metrics/summary.json")) == set(read(dask, "metrics/summary.json"))
    for key in (*KPI_FUNCTIONS[BINARY], "rows", "decision"):
        assert b[key] == pytest.approx(a[key], abs=1e-9), key
    # the interval, baseline, confusion counts, per-class report and objective: all equal
    for key in ("confidence_interval", "baseline", "confusion", "per_class", "objective",
                "slice_gaps", "unseen_categories", "model", "task",
                "prediction_spread"):  # fmt: skip
        assert b[key] == a[key], key
    for name in ("metrics/slices.json", "metrics/threshold.json", "metrics/plots/roc.json",
                 "metrics/plots/precision_recall.json", "metrics/plots/calibration.json",
                 "metrics/plots/threshold.json", "metrics/plots/slices.json",
                 "metrics/plots/importance.json"):  # fmt: skip
        assert read(dask, name) == read(local, name), name
    # confusion.csv: every row here (fewer than the sample bound), in partition order
    assert (dask / "metrics/plots/confusion.csv").read_text() == (
        local / "metrics/plots/confusion.csv"
    ).read_text()


def test_dask_predictions_are_parts_equal_to_the_local_file(engines) -> None:
    (local, _), (dask, _) = engines["local"], engines["dask"]
    path = dask / "data/evaluate/test_predictions.parquet"
    assert path.is_dir() and sorted(p.name for p in path.iterdir())[0] == "part-00000.parquet"
    mine, theirs = pd.read_parquet(path), pd.read_parquet(local / path.relative_to(dask))
    assert list(mine.columns) == list(theirs.columns) == ["probability", "actual"]
    np.testing.assert_array_equal(mine["actual"], theirs["actual"])
    np.testing.assert_allclose(mine["probability"], theirs["probability"], rtol=0, atol=1e-12)


def test_above_the_row_bound_nothing_per_row_is_gathered(
    engines, dask_local_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a bound below the test split's rows nothing per row is gathered: the sums KPIs
    and ROC/PR AUC stay exact (and say how), the interval is DeLong's, the slices' intervals
    are not faked."""
    from mlcycle.engines.dask.evaluate import evaluate_dask
    from mlcycle.stages import SIGNATURE_FILE
    from mlcycle.stages import evaluate as stage

    local, _ = engines["local"]
    project = engines["dask"][0].parent / "bounded"
    shutil.copytree(engines["dask"][0], project, symlinks=True)
    monkeypatch.chdir(project)
    params = config.load()
    signature = Signature.from_dict(read(project, SIGNATURE_FILE))
    evaluated = evaluate_dask(
        params, signature, dask_local_client, stage.PATHS, print, exact_rows=1_000
    )
    stage.write_report(params, signature, evaluated)
    a, b = read(local, "metrics/evaluate.json"), read(project, "metrics/evaluate.json")
    assert b["roc_auc_method"] == b["pr_auc_method"] == "distributed sort"
    assert b["confidence_interval_method"] == "delong"
    assert b["slice_ranking_method"] == "histogram"
    assert set(b) - set(a) == {
        "roc_auc_method", "pr_auc_method", "confidence_interval_method", "slice_ranking_method"
    }  # fmt: skip
    for key in KPI_FUNCTIONS[BINARY]:
        assert b[key] == pytest.approx(a[key], abs=1e-6), key
    # DeLong's interval beside the local engine's bootstrap one, on the same metric
    ci_a, ci_b = a["confidence_interval"], b["confidence_interval"]
    assert ci_b["metric"] == ci_a["metric"] == "roc_auc" and ci_b["resamples"] == 0
    assert ci_b["low"] < b["roc_auc"] < ci_b["high"]
    assert ci_b["low"] == pytest.approx(ci_a["low"], abs=2e-3)
    assert ci_b["high"] == pytest.approx(ci_a["high"], abs=2e-3)
    base_a, base_b = a["baseline"], b["baseline"]
    assert base_a and base_b.keys() == base_a.keys() and base_b["model"] == base_a["model"]
    for key in set(base_a) - {"model"}:  # the untuned baseline's ranking KPIs exact too
        assert base_b[key] == pytest.approx(base_a[key], abs=1e-6), key
    assert b["confusion"] == a["confusion"] and b["decision"] == a["decision"]
    slices = read(project, "metrics/slices.json")["slices"]
    for col, groups in read(local, "metrics/slices.json")["slices"].items():
        assert set(slices[col]) == set(groups)
        for value, entry in groups.items():
            assert slices[col][value]["rows"] == entry["rows"]
            if "accuracy" in entry:
                assert slices[col][value]["accuracy"] == entry["accuracy"]
                assert slices[col][value]["interval"]["low"] is None
    roc = read(project, "metrics/plots/roc.json")
    assert roc and roc[0]["fpr"] == 0.0 and roc[-1]["tpr"] == 1.0


def test_a_large_out_of_fold_set_gives_the_threshold_from_sums(
    engines, dask_local_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlcycle.engines.dask.evaluate import decision
    from mlcycle.evaluation import decision as decision_of_rows
    from mlcycle.stages import OOF

    monkeypatch.chdir(engines["local"][0])
    obj = config.load().objectives
    sig = load_bundle("models/bundle").signature
    assert decision(obj, sig, dask_local_client, OOF, exact_rows=10) == decision_of_rows(
        obj, sig, OOF
    )


def test_the_gate_scores_a_champion_by_partitions(engines, dask_local_client) -> None:
    from mlcycle.engines.dask.evaluate import champion_kpis

    local, _ = engines["local"]
    bundle = load_bundle(local / "models/bundle")
    test = pd.read_parquet(local / TEST)
    y = encode_target(test[bundle.signature.target], bundle.signature)
    out = score(bundle, test).output
    names = ["roc_auc", "f1", "log_loss"]
    expected = {n: kpi(BINARY, n, y, out, bundle.decision) for n in names}
    exact = champion_kpis(dask_local_client, local / TEST, local / "models/bundle", names)
    approx = champion_kpis(dask_local_client, local / TEST, local / "models/bundle", names, 10)
    for n in names:
        assert exact[n] == pytest.approx(expected[n], abs=1e-6), n
        assert approx[n] == pytest.approx(expected[n], abs=1e-4), n
