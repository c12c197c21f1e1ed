"""The online comparison of a challenger with production (:mod:`mlcycle.compare`) on generated
prediction-log frames, in the shape :func:`mlcycle.predlog.read_log` gives them (with the
service's ``role`` and ``shadow_*`` columns), and the rollout rule's decision."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlcycle import compare, config, drift, monitor
from mlcycle.bundle import load_bundle
from mlcycle.config import ConfigError, MonitorConfig
from mlcycle.features import infer_signature
from mlcycle.monitor_report import html_report
from mlcycle.predict import score
from mlcycle.predlog import PredictionLog
from mlcycle.serve.core import prediction_dicts
from tests.conftest import cli
from tests.test_monitor_report import assert_self_contained

ROLLOUT = config.section({}, "rollout")
N = 3000


def _objectives(minimums: dict | None = None):  # noqa: ANN202
    return config.section(
        {"objectives": {"task": "binary_classification", "target": "y", "positive_class": "yes",
                        "minimum": 0.7, "minimums": minimums or {}}},
        "objectives",
    )  # fmt: skip


def _world(n: int = N, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Records (x1, x2, c), the true labels, and two models' positive-class probabilities:
    the ``weak`` one sees x1 only, the ``strong`` one x1 and x2 (the truth)."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    c = rng.choice(["a", "b", "c"], size=n)
    strong = 1 / (1 + np.exp(-(1.5 * x1 + 1.0 * x2)))
    weak = 1 / (1 + np.exp(-1.5 * x1))
    y = np.where(rng.random(n) < strong, "yes", "no")
    return pd.DataFrame({"x1": x1, "x2": x2, "c": c}), y, weak, strong


RECORDS, LABELS, WEAK, STRONG = _world()
SIG = infer_signature(RECORDS.assign(y=LABELS), "y", "yes")
PROFILE = drift.build_profile(RECORDS.assign(y=LABELS), SIG, 10)
PROD = compare.Model("prod-id", 0.5, {"name": "m", "version": "v0.1.0", "id": "prod-id"})
CHAL = compare.Model("chal-id", 0.5, {"name": "m", "version": "v0.2.0", "id": "chal-id"})


def _outputs(p: np.ndarray) -> list[dict]:
    return [{"label": "yes" if v >= 0.5 else "no", "probabilities": {"no": 1 - v, "yes": v}}
            for v in p]  # fmt: skip


def log_frame(
    records: pd.DataFrame,
    answered: np.ndarray,
    labels: np.ndarray,
    labelled: int,
    *,
    role: np.ndarray | None = None,
    shadow: np.ndarray | None = None,
    start: int = 0,
) -> pd.DataFrame:
    """A read_log frame of one record per request: ``answered`` the answering model's
    probabilities, ``role`` which model answered (default: production), ``shadow`` the
    shadow's probabilities (None: no shadow); the first ``labelled`` records labelled."""
    n = len(records)
    role = np.full(n, "prod", dtype=object) if role is None else role
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    label = np.array([v if i < labelled else None for i, v in enumerate(labels)], dtype=object)
    ids = np.arange(start + 1, start + n + 1)
    return pd.DataFrame(
        {
            "id": ids,
            "request_id": [f"r{i}" for i in ids],
            "row": 0,
            "ts": [t0 + timedelta(seconds=int(i)) for i in ids],
            "model_name": "m",
            "model_version": np.where(role == "canary", "v0.2.0", "v0.1.0"),
            "model_id": np.where(role == "canary", CHAL.id, PROD.id),
            "inputs": records.astype(object).to_dict("records"),
            "outputs": _outputs(answered),
            "label": label,
            "label_ts": None,
            "labelled_by": None,
            "role": role,
            "shadow_output": _outputs(shadow) if shadow is not None else [None] * n,
            "shadow_model_id": np.where(role == "prod", CHAL.id, None) if shadow is not None
            else [None] * n,
            "shadow_model_version": np.where(role == "prod", "v0.2.0", None)
            if shadow is not None else [None] * n,
        }
    )  # fmt: skip


def _shadow(prod: np.ndarray, chal: np.ndarray, labelled: int = N, objectives=None) -> dict:  # noqa: ANN001
    log = log_frame(RECORDS, prod, LABELS, labelled, shadow=chal)
    return compare.compare(log, SIG, PROD, CHAL, objectives or _objectives(), ROLLOUT)


def test_a_better_shadow_is_proven_ahead_and_promoted() -> None:
    doc = _shadow(WEAK, STRONG)
    assert doc["stage"] == "shadow" and doc["records"] == N and doc["labelled"] == N
    auc = next(k for k in doc["kpis"] if k["metric"] == "roc_auc")
    assert auc["gain"] > 0.02 and auc["interval"]["low"] > 0
    assert auc["gain"] == pytest.approx(auc["challenger"] - auc["production"], abs=1e-6)
    assert 0.5 < doc["agreement"] < 1.0
    assert doc["decision"]["outcome"] == "promote"
    assert "above the margin" in doc["decision"]["reason"]


def test_a_worse_shadow_is_rolled_back_and_log_loss_is_oriented() -> None:
    doc = _shadow(STRONG, WEAK, labelled=1000, objectives=_objectives({"log_loss": 0.6}))
    assert doc["decision"]["outcome"] == "rollback", doc["decision"]
    loss = next(k for k in doc["kpis"] if k["metric"] == "log_loss")
    # a lower log loss is better: the weaker challenger's higher log loss is a negative gain
    assert loss["difference"] > 0 and loss["gain"] == -loss["difference"]
    assert loss["interval"]["high"] < 0  # an objective's metric: its interval is computed
    assert next(k for k in doc["kpis"] if k["metric"] == "f1")["interval"] is None


def test_too_few_labels_keep_watching_with_the_estimate() -> None:
    doc = _shadow(WEAK, STRONG, labelled=150)
    assert doc["labelled"] == 150
    assert doc["decision"]["outcome"] == "watch"
    assert "fewer than min_labels 200" in doc["decision"]["reason"]
    est = {e["metric"]: e for e in doc["estimated"]}
    assert est["roc_auc"]["gain"] > 0  # before labels: the estimate's difference
    none = _shadow(WEAK, STRONG, labelled=0)
    assert none["kpis"] == [] and none["decision"]["outcome"] == "watch"


def test_the_paired_interval_is_narrower_than_two_groups_on_the_same_records() -> None:
    """The same labelled records, scored by both models: compared paired (shadow) and as two
    groups (a canary whose groups happen to hold the same records)."""
    paired = _shadow(WEAK, STRONG)
    twice = np.repeat(np.arange(len(RECORDS)), 2)  # each record answered once by each
    role = np.tile(np.array(["canary", "prod"], dtype=object), len(RECORDS))
    answered = np.where(role == "prod", WEAK[twice], STRONG[twice])
    log = log_frame(RECORDS.iloc[twice], answered, LABELS[twice], len(twice), role=role)
    groups = compare.compare(log, SIG, PROD, CHAL, _objectives(), ROLLOUT, share=0.5)
    assert groups["stage"] == "canary"

    def width(doc: dict) -> float:
        i = next(k for k in doc["kpis"] if k["metric"] == "roc_auc")["interval"]
        return i["high"] - i["low"]

    gain = {d["stage"]: next(k["gain"] for k in d["kpis"] if k["metric"] == "roc_auc")
            for d in (paired, groups)}  # fmt: skip
    assert gain["shadow"] == pytest.approx(gain["canary"], abs=1e-6)  # the same records
    assert width(paired) < 0.75 * width(groups)  # here 0.56 times


def test_a_canary_with_skewed_inputs_shows_its_groups_drift_and_split() -> None:
    rng = np.random.default_rng(1)
    canary = rng.random(N) < 0.35  # configured 20 %: the split is off too
    canary[0] = True  # (the comparison starts at the challenger's first record)
    records = RECORDS.copy()
    records.loc[canary, "x1"] += 1.5  # the canary gets other clients
    role = np.where(canary, "canary", "prod").astype(object)
    log = log_frame(records, np.where(canary, STRONG, WEAK), LABELS, N, role=role)
    doc = compare.compare(log, SIG, PROD, CHAL, _objectives(), ROLLOUT, share=0.2,
                          profile=PROFILE, settings=MonitorConfig())  # fmt: skip
    groups = doc["groups"]
    assert groups["challenger"]["drift"]["drifted_features"] == ["x1"]
    assert groups["production"]["drift"]["drifted_features"] == []
    assert doc["drift_differs"] == ["x1"]
    split = doc["split"]
    assert split["configured"] == 0.2
    assert split["observed"] == pytest.approx(canary.mean(), abs=1e-6)
    assert split["skewed"] is True
    assert doc["labelled"] == min(canary.sum(), (~canary).sum())


def test_a_canary_on_its_share_is_not_skewed_and_records_before_it_are_left_out() -> None:
    rng = np.random.default_rng(2)
    canary = rng.random(N) < 0.2
    canary[0] = True  # the comparison starts at the challenger's first record
    role = np.where(canary, "canary", "prod").astype(object)
    before = log_frame(RECORDS.iloc[:500], WEAK[:500], LABELS[:500], 0)  # production alone
    during = log_frame(RECORDS, np.where(canary, STRONG, WEAK), LABELS, N, role=role, start=500)
    doc = compare.compare(pd.concat([before, during], ignore_index=True), SIG, PROD, CHAL,
                          _objectives(), ROLLOUT, share=0.2)  # fmt: skip
    assert doc["records"] == N
    assert doc["split"]["skewed"] is False
    assert doc["split"]["observed"] == pytest.approx(canary.mean(), abs=1e-6)


def test_a_loss_beyond_max_loss_on_another_objective_blocks_promotion() -> None:
    """The challenger ranks better (ROC AUC) but decides at a poor threshold: its accuracy,
    an objective, falls by more than max_loss."""
    objectives = _objectives({"accuracy": 0.6})
    log = log_frame(RECORDS, WEAK, LABELS, 1000, shadow=STRONG)
    poor = compare.Model(CHAL.id, 0.95, CHAL.info)
    doc = compare.compare(log, SIG, PROD, poor, objectives, ROLLOUT)
    auc = next(k for k in doc["kpis"] if k["metric"] == "roc_auc")
    acc = next(k for k in doc["kpis"] if k["metric"] == "accuracy")
    assert auc["interval"]["low"] > 0 and acc["gain"] < -ROLLOUT.max_loss
    assert doc["decision"]["outcome"] == "rollback"
    assert "accuracy loses" in doc["decision"]["reason"]
    # without accuracy among the objectives, the same figures promote
    assert compare.compare(log, SIG, PROD, poor, _objectives(), ROLLOUT)["decision"][
        "outcome"] == "promote"  # fmt: skip


def test_a_regression_shadow_is_compared_on_lower_is_better_errors() -> None:
    """Regression: no decisions to agree on (the predictions' mean distance instead), and a
    challenger with half the error is ahead on RMSE, a lower-is-better metric."""
    rng = np.random.default_rng(4)
    truth = RECORDS["x1"].to_numpy() * 3 + RECORDS["x2"].to_numpy()
    sig = infer_signature(RECORDS.assign(y=truth), "y", None, task="regression")
    objectives = config.section(
        {"objectives": {"task": "regression", "target": "y", "minimum": 2.0}}, "objectives"
    )
    prod, chal = truth + rng.normal(0, 1.0, N), truth + rng.normal(0, 0.5, N)
    log = log_frame(RECORDS, prod, truth.astype(str), N, shadow=chal)
    log["outputs"] = [{"value": v} for v in prod]
    log["shadow_output"] = [{"value": v} for v in chal]
    doc = compare.compare(log, sig, PROD, CHAL, objectives, ROLLOUT)
    assert doc["agreement"] is None and 0.8 < doc["mean_abs_difference"] < 1.0
    rmse = next(k for k in doc["kpis"] if k["metric"] == "rmse")
    assert rmse["better"] == "lower" and rmse["difference"] < -0.3 and rmse["gain"] > 0.3
    assert rmse["interval"]["low"] > 0 and doc["decision"]["outcome"] == "promote"
    assert doc["estimated"] == []  # no label-free estimate for a regression


def _kpi(metric: str, gain: float, low: float, high: float) -> dict:
    return {"metric": metric, "production": 0.8, "challenger": 0.8 + gain, "gain": gain,
            "interval": {"low": low, "high": high, "level": 0.95, "resamples": 400}}  # fmt: skip


def test_the_rule_watches_an_unproven_gain_until_max_labels_then_rolls_back() -> None:
    objectives = _objectives({"accuracy": 0.6})
    kpis = [_kpi("roc_auc", 0.004, -0.002, 0.01), _kpi("accuracy", 0.0, -0.01, 0.01)]
    assert compare.decide(kpis, 1000, objectives, ROLLOUT)["outcome"] == "watch"
    late = compare.decide(kpis, 5000, objectives, ROLLOUT)
    assert late["outcome"] == "rollback" and "max_labels 5,000" in late["reason"]
    margin = config.section({"rollout": {"margin": 0.005}}, "rollout")
    ahead = [_kpi("roc_auc", 0.008, 0.003, 0.013)]
    assert compare.decide(ahead, 1000, objectives, ROLLOUT)["outcome"] == "promote"
    assert compare.decide(ahead, 1000, objectives, margin)["outcome"] == "watch"
    # an unproven loss beyond max_loss holds the promotion back; it is no rollback
    lossy = [ahead[0], _kpi("accuracy", -0.02, -0.04, -0.005)]
    held = compare.decide(lossy, 1000, objectives, ROLLOUT)
    assert held["outcome"] == "watch" and "accuracy loses 0.0200" in held["reason"]
    # the rule's metric can be another than the primary one
    on_acc = config.section({"rollout": {"metric": "accuracy"}}, "rollout")
    assert compare.decide(lossy, 1000, objectives, on_acc)["outcome"] == "rollback"


def test_nothing_to_compare_is_said_not_crashed() -> None:
    log = log_frame(RECORDS, WEAK, LABELS, N).drop(
        columns=["role", "shadow_output", "shadow_model_id", "shadow_model_version"]
    )  # a log written before the service held a challenger
    with pytest.raises(compare.NothingToCompare, match="no record answered or scored"):
        compare.compare(log, SIG, PROD, CHAL, _objectives(), ROLLOUT)
    with pytest.raises(compare.NothingToCompare, match="production's own model"):
        compare.compare(log, SIG, PROD, PROD, _objectives(), ROLLOUT)


@pytest.mark.parametrize(
    ("rollout", "says"),
    [
        ({"metric": "rmse"}, "'rollout.metric' is 'rmse', which is not a metric of binary"),
        ({"min_labels": 500, "max_labels": 100}, "max_labels (100) is below min_labels (500)"),
        ({"margin": -0.01}, "'rollout.margin'"),
        ({"level": 1.0}, "'rollout.level' must be between 0 and 1"),
        ({"release_as": "beta"}, "'rollout.release_as' is 'beta'"),
        ({"canary_share": 0}, "'rollout.canary_share'"),
        ({"max_loss": "a lot"}, "'rollout.max_loss'"),
    ],
)
def test_bad_rollout_settings_are_named(rollout: dict, says: str) -> None:
    raw = {"objectives": {"task": "binary_classification"}, "rollout": rollout}
    with pytest.raises(ConfigError, match=None) as err:
        config.section(raw, "rollout")
    assert says in str(err.value)


def test_the_reports_show_the_decision_the_gains_and_the_split() -> None:
    rng = np.random.default_rng(3)
    canary = rng.random(N) < 0.3
    canary[0] = True
    role = np.where(canary, "canary", "prod").astype(object)
    log = log_frame(RECORDS, np.where(canary, STRONG, WEAK), LABELS, N, role=role)
    doc = compare.compare(log, SIG, PROD, CHAL, _objectives(), ROLLOUT, share=0.2,
                          profile=PROFILE)  # fmt: skip
    text = compare.markdown(doc)
    assert f"**Decision: {doc['decision']['outcome']}.**" in text
    assert "| roc_auc (higher is better) |" in text and "(**skewed**)" in text
    line = compare.summary_line(doc)
    assert line.startswith(f"compare: canary v0.2.0 vs production on {N:,} records")
    assert doc["decision"]["outcome"].upper() in line
    run = monitor.run(PROFILE, SIG, _objectives(), MonitorConfig(), RECORDS, None, None,
                      model=PROD.info, window={"source": "log", "where": "x"})  # fmt: skip
    page = html_report(run, doc)
    assert 'id="decision"' in page and "Challenger against production" in page
    assert 'aria-label="gain of the challenger over production' in page
    assert "skewed</span>" in page
    assert "id=comparison" not in html_report(run)  # no comparison: no section


# --- mlcycle monitor --compare, on a real project and a real SQLite log -----------------------

NAME = "income-classifier"


@pytest.fixture
def released(small_project: Path, tmp_path: Path) -> Path:
    """A copy of the small project, its model released to production as v0.1.0."""
    project = tmp_path / "project"
    shutil.copytree(small_project, project, symlinks=True)
    cli(project, "release")
    return project


def log_scored(url: str, rows: pd.DataFrame, bundle, version: str) -> None:  # noqa: ANN001
    """Log ``rows`` as the service does, in requests of 100 records answered by ``bundle``."""
    with PredictionLog(url) as log:
        for start in range(0, len(rows), 100):
            part = rows.iloc[start : start + 100]
            records = part[bundle.signature.input_columns].astype(object)
            records = records.where(records.notna(), None).to_dict("records")
            s = score(bundle, part)
            outputs = prediction_dicts(s.output, s.labels, bundle.signature)
            assert log.submit(f"r{start}", records, outputs, model_name=NAME,
                              model_id=bundle.model_id, model_version=version)  # fmt: skip
        assert log.flush(30)


def test_monitor_compare_without_a_challenger_says_so(released: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    rows = pd.read_parquet(released / "data/prepared/test.parquet").head(300)
    log_scored(url, rows, load_bundle(released / "models/bundle"), "v0.1.0")
    out = tmp_path / "out"
    args = ("monitor", "--log-url", url, "--out", str(out), "--no-history")
    proc = cli(released, *args, "--compare", check=False)
    assert proc.returncode == 4, proc.stderr
    assert f"nothing to compare: {NAME} has no shadow or canary version" in proc.stderr
    doc = json.loads((out / "monitor.json").read_text())  # the monitoring is done all the same
    assert doc["rows"] == 300 and doc["model"]["version"] == "v0.1.0"
    assert not (out / "compare.json").exists()
    for extra, says in (
        (("--act",), "--act and --challenger-bundle go with --compare"),
        (("--compare", "--service", "http://127.0.0.1:9"), "--service reloads the service"),
        (("--compare", "--model-version", "v0.1.0"), "not --model-version"),
    ):
        proc = cli(released, *args, *extra, check=False)
        assert proc.returncode == 1 and says in proc.stderr, proc.stderr


def test_the_same_model_released_again_starts_a_comparison_of_its_own() -> None:
    """A model shadowed as v0.2.0, then released again as a canary v0.3.0 (the same model
    id): the canary's comparison starts at its own first record, not the shadow's."""
    n = len(RECORDS) // 2
    earlier = log_frame(RECORDS.iloc[:n], WEAK[:n], LABELS[:n], n, shadow=STRONG[:n])
    role = np.where(np.arange(len(RECORDS) - n) % 5 == 0, "canary", "prod").astype(object)
    later = log_frame(RECORDS.iloc[n:], np.where(role == "canary", WEAK[n:], STRONG[n:]),
                      LABELS[n:], len(RECORDS) - n, role=role, start=n)  # fmt: skip
    later["model_version"] = np.where(role == "canary", "v0.3.0", "v0.1.0")
    again = compare.Model(CHAL.id, 0.5, {**CHAL.info, "version": "v0.3.0"})
    doc = compare.compare(pd.concat([earlier, later], ignore_index=True), SIG, PROD, again,
                          _objectives(), ROLLOUT, stage="canary", share=0.2)  # fmt: skip
    assert doc["records"] == len(RECORDS) - n, doc["records"]
    assert doc["window"]["from"] == later["ts"].min().isoformat()
    # a service serving folders logs no version: the model id alone tells the records apart
    unversioned = log_frame(RECORDS, WEAK, LABELS, len(RECORDS), shadow=STRONG)
    unversioned[["model_version", "shadow_model_version"]] = None
    doc = compare.compare(unversioned, SIG, PROD, CHAL, _objectives(), ROLLOUT)
    assert doc["stage"] == "shadow" and doc["labelled"] == len(RECORDS)


def test_the_comparison_section_escapes_what_it_shows() -> None:
    hostile = "<script>alert(1)</script>"
    chal = compare.Model(CHAL.id, 0.5, {**CHAL.info, "version": hostile, "name": hostile})
    log = log_frame(RECORDS, WEAK, LABELS, 100, shadow=STRONG)
    log["shadow_model_version"] = hostile  # the version as logged: the comparison shows it
    doc = compare.compare(log, SIG, PROD, chal, _objectives(), ROLLOUT)
    assert doc["decision"]["outcome"] == "watch"  # 100 labelled records: too few
    run = monitor.run(PROFILE, SIG, _objectives(), MonitorConfig(), RECORDS, None, None,
                      model=PROD.info, window={"source": "log", "where": "x"})  # fmt: skip
    page = html_report(run, doc)
    assert hostile not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert_self_contained(page)
