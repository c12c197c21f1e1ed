"""The whole pipeline on the Dask engine, driven by real `dvc repro` in a temporary project.

Against a real cluster (a `dask scheduler` and two `dask worker` processes on 127.0.0.1) and
against a LocalCluster the stages start themselves: the data sets become folders of Parquet
parts, the KPIs on a sample of Adult match the local engine's within its bootstrap interval,
the model is the same byte for byte on a rerun, and the bundle serves as any other.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mlcycle.bundle import load_bundle
from mlcycle.predict import score_frame
from tests.conftest import SAMPLE_ROWS, git_commit, make_project, run, set_params

DASK = {"engine": {"kind": "dask", "dashboard": ":0", "partition_rows": 20_000}}
pytestmark = [pytest.mark.dvc, pytest.mark.cluster]  # the stages start clusters of their own too


def read(project: Path, name: str) -> dict:
    return json.loads((project / name).read_text())


@pytest.fixture(scope="module")
def dask_project(tmp_path_factory: pytest.TempPathFactory, dask_scheduler: str) -> Path:
    """The sample project (as :func:`small_project`) run end to end on the real cluster, in
    parts of 2,000 rows, committed."""
    engine = {**DASK["engine"], "scheduler": dask_scheduler, "partition_rows": 2_000}
    project = make_project(
        tmp_path_factory.mktemp("dask") / "project", {"engine": engine}, rows=SAMPLE_ROWS
    )
    out = run(["dvc", "repro"], project)
    assert "dask: scheduler tcp://127.0.0.1" in out.stderr + out.stdout
    git_commit(project, "repro on dask")
    return project


def test_data_sets_are_folders_of_parts(dask_project: Path, small_project: Path) -> None:
    for name in ("data/raw/snapshot.parquet", "data/prepared/train.parquet"):
        path = dask_project / name
        assert path.is_dir(), name
        assert len(list(path.glob("part-*.parquet"))) >= 2, name
    rows = read(small_project, "metrics/gather.json")["rows"]
    assert read(dask_project, "metrics/gather.json")["rows"] == rows
    assert len(pd.read_parquet(dask_project / "data/raw/snapshot.parquet")) == rows


def test_kpis_match_the_local_engine(dask_project: Path, small_project: Path) -> None:
    """On the same sample of Adult the two engines see the same split (by source); their test
    KPIs agree within the local model's 95 % bootstrap interval."""
    local = read(small_project, "metrics/evaluate.json")
    dask = read(dask_project, "metrics/evaluate.json")
    assert dask["rows"] == local["rows"]
    assert set(dask) == set(local)
    low, high = local["confidence_interval"]["low"], local["confidence_interval"]["high"]
    assert low <= dask["roc_auc"] <= high, (dask["roc_auc"], low, high)
    prep_local = read(small_project, "metrics/prepare.json")
    prep_dask = read(dask_project, "metrics/prepare.json")
    assert prep_dask["train"]["rows"] == prep_local["train"]["rows"]
    assert prep_dask["test"]["rows"] == prep_local["test"]["rows"]


def test_the_model_is_the_same_byte_for_byte_on_a_rerun(dask_project: Path, tmp_path: Path):
    model = dask_project / "models/train/model.ubj"
    before = model.read_bytes()
    trials = (dask_project / "metrics/tuning/trials.csv").read_text()
    copy = tmp_path / "again"
    shutil.copytree(dask_project, copy, symlinks=True)
    run(["dvc", "repro", "-f", "-s", "train"], copy)  # the train stage alone
    assert (copy / "models/train/model.ubj").read_bytes() == before
    cols = lambda text: [line.split(",")[:5] for line in text.splitlines()]  # noqa: E731
    assert cols((copy / "metrics/tuning/trials.csv").read_text()) == cols(trials)


def test_the_bundle_serves_like_any_other(dask_project: Path) -> None:
    bundle = load_bundle(dask_project / "models/bundle")
    test = pd.read_parquet(dask_project / "data/prepared/test.parquet").head(50)
    scores = score_frame(bundle, test.drop(columns=["income"]))
    assert len(scores) == 50


def test_local_cluster_and_switching_back(tmp_path: Path) -> None:
    """Without a scheduler the stages start a LocalCluster; switching back to the local engine
    reads the folders the Dask engine wrote."""
    # One worker: each of the three stages starts its own cluster, and a worker process costs
    # seconds of CPU to start; the tests on a shared cluster use two.
    engine = {**DASK["engine"], "workers": 1}
    project = make_project(tmp_path / "project", {"engine": engine}, rows=SAMPLE_ROWS)
    out = run(["dvc", "repro", "prepare"], project)
    assert "dask: LocalCluster of 1 worker(s)" in out.stderr + out.stdout
    assert (project / "data/prepared/train.parquet").is_dir()
    set_params(project, {"engine": {"kind": "local"}})
    run(["dvc", "repro", "-s", "train"], project)
    assert (project / "models/train/model.ubj").is_file()


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path: Path) -> None:
    from tests.conftest import free_port

    address = f"tcp://127.0.0.1:{free_port()}"
    engine = {"kind": "dask", "scheduler": address, "connect_timeout": 2}
    project = make_project(tmp_path / "project", {"engine": engine})
    out = run(["dvc", "repro", "gather"], project, check=False)
    assert out.returncode != 0
    assert f"engine.scheduler {address}: cannot connect" in out.stderr
    assert not (project / "data/raw/snapshot.parquet").exists()
