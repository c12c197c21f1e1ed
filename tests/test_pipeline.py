"""End-to-end tests of the DVC pipeline: real `dvc` and `git` in temporary repositories.

Every test works on its own project: a private copy of the session-built project on a sample of
Adult (:func:`project_copy`) or a fresh project where the test needs one. No test changes a
session-built project itself. A second `dvc repro` that runs nothing, two runs from scratch
giving the same bytes, a train parameter's change (an experiment, `dvc metrics diff`, `mlcycle
report`) and queued sweeps are tests/test_readme_commands.py's: it runs the README's commands
for them.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_project, project_env, run, set_params

STAGES = ["gather", "validate", "prepare", "train", "evaluate", "gate", "package"]
KPIS = ("roc_auc", "accuracy", "pr_auc", "precision", "recall", "f1", "log_loss")
RUNNING_STAGE = re.compile(r"^Running stage '([^']+)'", re.MULTILINE)
BUNDLE_FILES = (
    "model.ubj",
    "signature.json",
    "metadata.json",
    "model_card.json",
    "model_card.md",
    "reference_profile.json",
    "row_rules.json",
    "SHA256SUMS",
)
PLOT_FILES = ("roc.json", "precision_recall.json", "calibration.json", "importance.json")
TRAIN_SOURCE = "data/external/adult/adult.data.gz"
DROPPED_RECORDS = 1000
pytestmark = pytest.mark.dvc


def stages_run(proc: subprocess.CompletedProcess) -> list[str]:
    """The stages a `dvc repro` or `dvc exp run` executed, in order ("Running stage" lines)."""
    return RUNNING_STAGE.findall(proc.stdout)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def is_number(value) -> bool:
    """Whether Vega-Lite reads ``value`` as a number (TSV plot data gives numeric strings)."""
    if isinstance(value, bool):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def dvc_json(project: Path, *args: str):
    """Run a `dvc ... --json` command and parse its standard output."""
    return json.loads(run(["dvc", *args, "--json"], project).stdout)


def drop_last_records(path: Path, n: int) -> bytes:
    """Rewrite a gzipped CSV without its last ``n`` records; return the new decompressed content.

    The trailing newlines of the original (Adult ends with a blank line) are kept as they were.
    """
    content = gzip.decompress(path.read_bytes())
    body = content.rstrip(b"\n")
    records = body.split(b"\n")
    assert len(records) > n
    new = b"\n".join(records[:-n]) + content[len(body) :]
    path.write_bytes(gzip.compress(new, mtime=0))
    return new


def set_source_sha256(project: Path, name: str, digest: str) -> None:
    """Set ``data.sources[name].sha256`` in the project's params.yaml."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    (source,) = [s for s in params["data"]["sources"] if s["name"] == name]
    source["sha256"] = digest
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def bundle_digests(project: Path) -> dict[str, str]:
    bundle = project / "models" / "bundle"
    return {p.name: sha256(p) for p in sorted(bundle.iterdir())}


# 1. A full run writes every output.


def test_repro_writes_every_output(small_project: Path) -> None:
    p = small_project
    for rel in (
        "data/raw/snapshot.parquet",
        "data/prepared/train.parquet",
        "data/prepared/test.parquet",
        "models/train/model.ubj",
        "models/train/model.json",
        "models/train/oof.parquet",
        "models/train/baseline/model.ubj",
        *(f"models/bundle/{name}" for name in BUNDLE_FILES),
        "metrics/train.json",
        "metrics/tuning/trials.csv",
        "metrics/evaluate.json",
        *(f"metrics/plots/{name}" for name in PLOT_FILES),
        "metrics/plots/confusion.csv",
    ):
        assert (p / rel).is_file(), f"{rel} is missing after dvc repro"
        assert (p / rel).stat().st_size > 0, f"{rel} is empty"

    metrics = read_json(p / "metrics/evaluate.json")
    for kpi in KPIS:
        assert isinstance(metrics.get(kpi), float), f"metrics/evaluate.json lacks {kpi}: {metrics}"
        assert 0.0 <= metrics[kpi] <= 1.0 or kpi == "log_loss", (kpi, metrics[kpi])
    assert metrics["roc_auc"] > 0.85  # a real model, not a constant
    # With the tests' small settings XGBoost wins the cross-validation; the untuned baseline is
    # scored on the same rows.
    assert metrics["model"] == "xgboost"
    assert read_json(p / "metrics/train.json")["winner"] == "xgboost"
    assert set(metrics["baseline"]) >= {"model", "roc_auc", "accuracy", "improvement"}

    for name in PLOT_FILES:
        rows = read_json(p / "metrics/plots" / name)
        assert isinstance(rows, list) and rows, f"metrics/plots/{name} holds no rows"
    lines = (p / "metrics/plots/confusion.csv").read_text().splitlines()
    assert lines[0] == "actual,predicted"
    assert len(lines) - 1 == metrics["rows"]

    # The bundle ships the trained model byte for byte, and SHA256SUMS covers every other file.
    bundle = p / "models" / "bundle"
    assert sha256(bundle / "model.ubj") == sha256(p / "models/train/model.ubj")
    sums = dict(
        reversed(line.split("  ", 1)) for line in (bundle / "SHA256SUMS").read_text().splitlines()
    )
    assert sums == {name: sha256(bundle / name) for name in BUNDLE_FILES if name != "SHA256SUMS"}


@pytest.mark.parametrize("name", BUNDLE_FILES)
def test_one_edited_byte_of_any_file_of_the_built_bundle_is_refused(
    small_project: Path, tmp_path: Path, name: str
) -> None:
    """The bundle the pipeline wrote (model card included), one byte of one file flipped at its
    start, middle and end: loading refuses each, naming the file."""
    from mlcycle.bundle import BundleError, load_bundle

    load_bundle(small_project / "models" / "bundle")  # the untouched bundle loads
    size = (small_project / "models" / "bundle" / name).stat().st_size
    for position in sorted({0, size // 2, size - 1}):
        copy = tmp_path / f"bundle-{position}"
        shutil.copytree(small_project / "models" / "bundle", copy)
        data = bytearray((copy / name).read_bytes())
        data[position] ^= 0x01
        (copy / name).write_bytes(bytes(data))
        # An edit of SHA256SUMS breaks its format or the digest it gives for some file.
        expected = (
            r"SHA256SUMS|does not match" if name == "SHA256SUMS" else rf"{re.escape(name)} does not"
        )
        with pytest.raises(BundleError, match=expected):
            load_bundle(copy)


# 2. Changed source data: with its new checksum everything re-runs; without it, nothing does.


def test_changed_source_data_with_new_checksum_reruns_every_stage(project_copy: Path) -> None:
    p = project_copy
    before = read_json(p / "metrics/gather.json")
    content = drop_last_records(p / TRAIN_SOURCE, DROPPED_RECORDS)
    set_source_sha256(p, "adult_train", hashlib.sha256(content).hexdigest())

    proc = run(["dvc", "repro"], p)
    assert stages_run(proc) == STAGES
    assert dvc_json(p, "status") == {}

    after = read_json(p / "metrics/gather.json")
    assert after["rows"] == before["rows"] - DROPPED_RECORDS
    rows = {s["name"]: s["rows"] for s in after["sources"]}
    old_rows = {s["name"]: s["rows"] for s in before["sources"]}
    assert rows == {**old_rows, "adult_train": old_rows["adult_train"] - DROPPED_RECORDS}
    prepared = read_json(p / "metrics/prepare.json")
    assert prepared["train"]["rows_split"] == old_rows["adult_train"] - DROPPED_RECORDS
    metadata = read_json(p / "models/bundle/metadata.json")
    assert metadata["data"]["data/raw/snapshot.parquet"] == sha256(p / "data/raw/snapshot.parquet")


def test_changed_source_data_without_new_checksum_fails_and_keeps_outputs(
    project_copy: Path,
) -> None:
    p = project_copy
    bundle_before = bundle_digests(p)
    model_before = sha256(p / "models/train/model.ubj")
    snapshot_before = sha256(p / "data/raw/snapshot.parquet")
    drop_last_records(p / TRAIN_SOURCE, DROPPED_RECORDS)

    proc = run(["dvc", "repro"], p, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert stages_run(proc) == ["gather"]
    assert "'adult_train'" in output
    assert "SHA-256" in output
    assert "Traceback" not in output

    # Nothing downstream ran, so the previous model and bundle are intact; so is gather's own
    # output (persist: DVC does not delete it first, and the failed stage never replaced it).
    assert bundle_digests(p) == bundle_before
    assert sha256(p / "models/train/model.ubj") == model_before
    assert sha256(p / "data/raw/snapshot.parquet") == snapshot_before


def test_a_killed_train_stage_leaves_the_last_good_model(project_copy: Path) -> None:
    """DVC does not delete models/train/ before the stage runs (persist) and the stage builds
    the new one aside: killed mid-run, it leaves the last good model byte for byte, and the
    next run clears the killed one's temporary folder."""
    p = project_copy
    models = p / "models"
    before = {str(f.relative_to(p)): sha256(f) for f in models.rglob("*") if f.is_file()}
    set_params(p, {"train": {"seed": 7}})
    repro = subprocess.Popen(
        ["dvc", "repro", "-s", "train"],
        cwd=p,
        env=project_env(p),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: dvc and the stage it runs
    )
    output = []
    for line in repro.stdout:  # until a candidate's first CV score: training is under way
        output.append(line)
        if "trial 0 (untuned): cv" in line:
            os.killpg(repro.pid, signal.SIGKILL)
            break
    repro.communicate()
    assert "trial 0 (untuned): cv" in "".join(output), "".join(output)

    after = {str(f.relative_to(p)): sha256(f) for f in models.rglob("*") if f.is_file()}
    assert after == before
    (aside,) = models.glob(".train.*")  # the new model's folder, being built
    run(["dvc", "repro", "-s", "train"], p)
    assert not aside.exists()
    assert sorted(f.name for f in models.iterdir()) == [".gitignore", "bundle", "train"]
    assert dvc_json(p, "status", "train") == {}


# 3. Plots.


def test_plots_show_renders_every_plot_in_dvc_yaml(project_copy: Path) -> None:
    p = project_copy
    proc = run(["dvc", "plots", "show", "--json"], p)
    # DVC exits 0 even when a plot fails to load; it says so on stderr and in "errors".
    assert not re.search(r"error|warning|failed", proc.stderr, re.IGNORECASE), proc.stderr
    shown = json.loads(proc.stdout)
    assert "errors" not in shown, shown.get("errors")

    pipeline = yaml.safe_load((p / "dvc.yaml").read_text())
    top_level = [next(iter(entry)) for entry in pipeline["plots"]]
    assert len(top_level) == 16
    # Plots of another task (regression's predicted vs actual, residuals) have no data for
    # this binary project, nor the monitoring history before `mlcycle monitor` first runs
    # (tests/test_monitor.py draws it): DVC lists them with nothing to draw, and no error.
    other_task = [p for p in top_level if "(regression" in p or p.startswith("Monitoring")]
    assert len(other_task) == 5
    assert sorted(shown["data"]) == sorted(top_level), "plots drawn twice or missing"
    for plot_id in top_level:
        assert plot_id in shown["data"], f"plot {plot_id!r} not in `dvc plots show`"
        if plot_id in other_task:
            assert shown["data"][plot_id] == []
            continue
        (rendered,) = shown["data"][plot_id]
        assert rendered["type"] == "vega"
        values = rendered["content"]["data"]["values"]
        assert values, f"plot {plot_id!r} has no data"
        # Every encoded field exists in the data, and a quantitative axis gets numbers: a
        # nominal column on a quantitative axis renders as an empty chart without any error.
        spec = rendered["content"]
        layers = [spec, *spec.get("layer", []), *([spec["spec"]] if "spec" in spec else [])]
        computed = {t.get("as") for layer in layers for t in layer.get("transform", [])}
        encodings = [item for layer in layers for item in layer.get("encoding", {}).items()]
        assert encodings, f"plot {plot_id!r} encodes nothing"
        for channel, enc in encodings:
            field = enc.get("field") if isinstance(enc, dict) else None
            if not field or field in computed:
                continue
            assert all(field in row for row in values), (plot_id, channel, field)
            if enc.get("type") == "quantitative":
                # Off the axes, null is allowed: a missing value (SHAP dots of missing inputs).
                bad = [
                    row[field]
                    for row in values
                    if not is_number(row[field])
                    and (channel in ("x", "y") or row[field] is not None)
                ]
                assert not bad, f"plot {plot_id!r}: {channel} {field!r} is not numeric: {bad[:3]}"


# 4. Invalid objectives stop the first stage with a message naming the problem.


@pytest.mark.parametrize(
    ("objectives", "message"),
    [
        ({"primary_metric": "foo"}, "'objectives.primary_metric' is 'foo', which is not a metric"),
        ({"target": "salary"}, "'salary'"),
    ],
    ids=["primary_metric", "target"],
)
def test_invalid_objectives_stop_the_first_stage(
    tmp_path: Path, objectives: dict, message: str
) -> None:
    p = make_project(tmp_path / "project", {"objectives": objectives})
    proc = run(["dvc", "repro"], p, check=False)
    assert proc.returncode != 0
    assert stages_run(proc) == ["gather"]
    assert message in proc.stderr
    assert "[gather] error:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (p / "data/raw/snapshot.parquet").exists()
    assert not (p / "models").exists()
