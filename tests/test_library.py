"""Unit tests of the library modules: config, sources, prepare, features, metrics, drift, and the
`mlcycle monitor` command on a built project."""

from __future__ import annotations

import copy
import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from ruamel.yaml import YAML
from sklearn import metrics as skm

from mlcycle import config
from mlcycle.config import (
    ConfigError,
    Objectives,
    PrepareConfig,
    Source,
    SplitConfig,
)
from mlcycle.features import (
    Feature,
    SchemaError,
    Signature,
    encode_target,
    infer_signature,
    to_model_frame,
    unseen_categories,
)
from mlcycle.io import (
    atomic_folder,
    atomic_path,
    sha256_bytes,
    value_text,
    yaml_key,
    yaml_scalar,
)
from mlcycle.metrics import KPI_FUNCTIONS, compute_kpis
from mlcycle.prepare import PrepareError, clean, split
from mlcycle.sources import SOURCE_COLUMN, SourceError, read_source, union
from mlcycle.tasks import meets
from tests.conftest import ROOT

TRAIN_SPLIT = Path("data") / "prepared" / "train.parquet"


@pytest.fixture(scope="module")
def raw_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.fixture
def raw(raw_params: dict) -> dict:
    """A private, editable copy of the project's params.yaml."""
    return copy.deepcopy(raw_params)


@pytest.fixture(scope="module")
def adult_sources(raw_params: dict) -> dict[str, Source]:
    return {s.name: s for s in config.section(raw_params, "data").sources}


@pytest.fixture(scope="module")
def adult_train(adult_sources: dict[str, Source], raw_params: dict) -> pd.DataFrame:
    """The Adult training file, read and cleaned by the library as the pipeline does."""
    read = read_source(adult_sources["adult_train"], ROOT)
    cleaned, _ = clean(union([read]), config.section(raw_params, "objectives"))
    return cleaned.drop(columns=SOURCE_COLUMN)


# --- config -------------------------------------------------------------------------------


def test_project_params_load() -> None:
    params = config.load(ROOT / "params.yaml")
    assert params.objectives.primary_metric == "roc_auc"
    assert params.objectives.positive_class == ">50K"
    assert [s.name for s in params.data.sources] == ["adult_train", "adult_test", "production"]
    assert params.prepare.split.method == "by_source"
    assert params.train.xgb["max_depth"] == 6


@pytest.mark.parametrize(
    ("section", "key", "value", "named"),
    [
        ("objectives", "primary_metric", "roc_aucc", ["'roc_aucc'", "'objectives.primary_metric'"]),
        ("objectives", "kpis", ["accuracy", "f2"], ["'f2'", "'objectives.kpis[1]'"]),
        ("objectives", "task", "ranking", ["'objectives.task'", "'ranking'"]),
        ("objectives", "minimum", "high", ["'objectives.minimum'", "float", "'high'"]),
        ("objectives", "minimum", True, ["'objectives.minimum'"]),
        ("objectives", "minimum", [0.9], ["'objectives.minimum'"]),
        ("objectives", "slice_min_rows", 1, ["'objectives.slice_min_rows'", "at least 2"]),
        ("objectives", "slice_min_rows", True, ["'objectives.slice_min_rows'", "int"]),
    ],
)
def test_invalid_objectives_name_the_key(
    raw: dict, section: str, key: str, value: object, named: list[str]
) -> None:
    raw[section][key] = value
    with pytest.raises(ConfigError) as exc:
        config.section(raw, "objectives")
    for text in named:
        assert text in str(exc.value)


def test_integer_minimum_is_accepted_as_float(raw: dict) -> None:
    raw["objectives"]["minimum"] = 1
    assert config.section(raw, "objectives").minimum == 1.0


def test_unknown_xgb_key_is_named(raw: dict) -> None:
    raw["train"]["xgb"]["max_dept"] = 4
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['max_dept'\] in 'train.xgb'"):
        config.section(raw, "train")


def test_by_source_split_naming_an_unknown_source_is_refused(raw: dict, tmp_path: Path) -> None:
    raw["prepare"]["split"]["test_sources"] = ["adult_tset"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    assert "'adult_tset'" in str(exc.value)
    assert "prepare.split" in str(exc.value)


def test_missing_key_is_named(raw: dict) -> None:
    del raw["objectives"]["minimum"]
    with pytest.raises(ConfigError, match=r"'objectives.minimum' is missing"):
        config.section(raw, "objectives")


# --- sources ------------------------------------------------------------------------------

ADULT_LIKE = (
    b"|1x3 Cross validator\n"
    b"25, Private, 226802, <=50K.\n"
    b"38, ?, 89814, >50K.\n"
    b"\n"
    b"28, Local-gov, 336951, <=50K.\n"
)


def adult_like_source(tmp_path: Path, content: bytes = ADULT_LIKE, **overrides) -> Source:
    (tmp_path / "tiny.csv.gz").write_bytes(gzip.compress(content))
    fields = dict(
        name="tiny",
        path="tiny.csv.gz",
        format="csv",
        header=False,
        skip_rows=1,
        na_values=("?",),
        sha256=sha256_bytes(content),
        columns=("age", "workclass", "fnlwgt", "income"),
    )
    return Source(**{**fields, **overrides})


def test_reads_a_gzip_csv_with_the_adult_quirks(tmp_path: Path) -> None:
    read = read_source(adult_like_source(tmp_path), tmp_path)
    df = read.frame
    assert list(df.columns) == ["age", "workclass", "fnlwgt", "income"]
    assert len(df) == 3  # junk first line skipped, blank line ignored
    assert df["age"].tolist() == [25, 38, 28]
    assert pd.api.types.is_integer_dtype(df["age"])
    assert df["workclass"].iloc[0] == "Private"  # ", " separator: no leading space
    assert pd.isna(df["workclass"].iloc[1])  # "?" is missing
    assert df["workclass"].iloc[2] == "Local-gov"
    assert df["income"].tolist() == ["<=50K.", ">50K.", "<=50K."]
    assert read.lineage["sha256"] == sha256_bytes(ADULT_LIKE)  # of the content, not the gz
    assert read.lineage["rows"] == 3


def test_the_real_adult_test_file(adult_sources: dict[str, Source]) -> None:
    source = adult_sources["adult_test"]
    df = read_source(source, ROOT).frame
    assert len(df) == 16281
    assert df.iloc[0].tolist()[:4] == [25, "Private", 226802, "11th"]
    assert df["workclass"].isna().sum() > 0
    for col in df.select_dtypes(exclude="number").columns:
        values = df[col].dropna()
        assert not values.isin(["?"]).any(), col
        assert not values.str.startswith(" ").any(), col
    # Without skip_rows the junk line is not read as a record: it is an error that says so.
    with pytest.raises(
        SourceError,
        match=r"1 of 16282 records have another number of fields \(1 field in 1 line; lines 1\)"
        r"; if they are not records, set skip_rows: 1 on the source",
    ):
        read_source(Source(**{**source.__dict__, "skip_rows": 0}), ROOT)


def test_wrong_checksum_names_the_source(tmp_path: Path) -> None:
    source = adult_like_source(tmp_path, sha256="0" * 64)
    with pytest.raises(SourceError, match=r"source 'tiny'.*SHA-256"):
        read_source(source, tmp_path)


def test_real_file_with_wrong_checksum_is_refused(adult_sources: dict[str, Source]) -> None:
    source = Source(**{**adult_sources["adult_train"].__dict__, "sha256": "f" * 64})
    with pytest.raises(SourceError, match="source 'adult_train'"):
        read_source(source, ROOT)


def test_missing_file_names_the_source(tmp_path: Path) -> None:
    source = Source(name="gone", path="nowhere/data.csv.gz", header=True)
    with pytest.raises(SourceError, match=r"source 'gone'.*nowhere/data.csv.gz.*does not exist"):
        read_source(source, tmp_path)


def test_union_with_mismatched_columns_is_refused(tmp_path: Path) -> None:
    a = read_source(adult_like_source(tmp_path), tmp_path)
    other = b"age,workclass,hours,income\n30,Private,40,>50K\n"
    (tmp_path / "other.csv").write_bytes(other)
    b = read_source(Source(name="other", path="other.csv", header=True), tmp_path)
    with pytest.raises(SourceError) as exc:
        union([a, b])
    message = str(exc.value)
    assert "'other'" in message and "'tiny'" in message
    assert "['fnlwgt']" in message and "['hours']" in message


def test_union_tags_each_record_with_its_source(tmp_path: Path) -> None:
    a = read_source(adult_like_source(tmp_path), tmp_path)
    (tmp_path / "b").mkdir()
    b = read_source(adult_like_source(tmp_path / "b", name="second"), tmp_path / "b")
    merged = union([a, b])
    assert len(merged) == 6
    assert merged[SOURCE_COLUMN].tolist() == ["tiny"] * 3 + ["second"] * 3


# --- prepare ------------------------------------------------------------------------------

OBJECTIVES = Objectives(
    task="binary_classification",
    target="income",
    positive_class=">50K",
    primary_metric="roc_auc",
    minimum=0.8,
    kpis=("roc_auc",),
)


def labelled(labels: list[str | None]) -> pd.DataFrame:
    return pd.DataFrame({"age": range(len(labels)), "income": labels, SOURCE_COLUMN: "s"})


def test_clean_drops_unlabelled_rows() -> None:
    df = labelled(["<=50K", ">50K", " >50K", "<=50K", None, ""])
    out, report = clean(df, OBJECTIVES)
    assert out["income"].tolist() == ["<=50K", ">50K", ">50K", "<=50K"]
    assert out["age"].tolist() == [0, 1, 2, 3]
    assert report.rows_in == 6 and report.rows_out == 4
    assert report.target_missing_dropped == 2


def test_unmapped_test_labels_make_four_classes() -> None:
    with pytest.raises(PrepareError, match="exactly two classes"):
        clean(labelled(["<=50K.", ">50K.", ">50K", "<=50K"]), OBJECTIVES)


def test_three_classes_are_refused() -> None:
    with pytest.raises(PrepareError, match=r"exactly two classes.*found 3"):
        clean(labelled(["<=50K", ">50K", "unknown", ">50K"]), OBJECTIVES)


def test_absent_positive_class_is_refused() -> None:
    with pytest.raises(PrepareError, match=r"positive_class '>50K' never occurs"):
        clean(labelled(["<=50K", "<=50K", "poor"]), OBJECTIVES)


def test_missing_target_column_is_refused() -> None:
    with pytest.raises(PrepareError, match="'income' is not a column"):
        clean(labelled([">50K"]).rename(columns={"income": "salary"}), OBJECTIVES)


def _stratified(seed: int) -> PrepareConfig:
    return PrepareConfig(split=SplitConfig(method="stratified", test_size=0.25, seed=seed))


def test_stratified_split_keeps_class_ratios_and_is_seeded(adult_train: pd.DataFrame) -> None:
    df = adult_train.assign(**{SOURCE_COLUMN: "adult_train", "row": range(len(adult_train))})
    rate = (df["income"] == ">50K").mean()
    train, test = split(df, _stratified(7), "income")
    assert SOURCE_COLUMN not in train.columns and SOURCE_COLUMN not in test.columns
    assert len(train) + len(test) == len(df)
    assert len(test) == pytest.approx(0.25 * len(df), abs=1)
    assert set(train["row"]).isdisjoint(test["row"])
    for side in (train, test):
        assert abs((side["income"] == ">50K").mean() - rate) < 1.0 / len(side) + 1e-12

    again_train, again_test = split(df, _stratified(7), "income")
    pd.testing.assert_frame_equal(train, again_train)
    pd.testing.assert_frame_equal(test, again_test)
    other_train, _ = split(df, _stratified(8), "income")
    assert set(other_train["row"]) != set(train["row"])


def test_by_source_split_follows_the_sources() -> None:
    df = pd.DataFrame(
        {
            "x": range(5),
            "income": ["a", "b", "a", "b", "a"],
            SOURCE_COLUMN: ["tr", "tr", "te", "tr", "te"],
        }
    )
    cfg = PrepareConfig(
        split=SplitConfig(method="by_source", train_sources=("tr",), test_sources=("te",))
    )
    train, test = split(df, cfg, "income")
    assert train["x"].tolist() == [0, 1, 3]
    assert test["x"].tolist() == [2, 4]


# --- features -----------------------------------------------------------------------------

SIG = Signature(
    features=(
        Feature("age", "numeric"),
        Feature("workclass", "categorical", ("Private", "State-gov")),
    ),
    target="income",
    positive_class=">50K",
    negative_class="<=50K",
)


def test_to_model_frame_names_a_missing_column() -> None:
    with pytest.raises(SchemaError, match=r"missing column\(s\) \['workclass'\]"):
        to_model_frame(pd.DataFrame({"age": [30]}), SIG)


def test_to_model_frame_names_column_row_and_value_of_a_non_number() -> None:
    df = pd.DataFrame(
        {"age": ["39", "40", "forty", None], "workclass": ["Private"] * 4}, index=[10, 11, 12, 13]
    )
    with pytest.raises(SchemaError) as exc:
        to_model_frame(df, SIG)
    message = str(exc.value)
    assert "'age'" in message and "row 12" in message and "'forty'" in message


def test_to_model_frame_types_orders_and_encodes() -> None:
    df = pd.DataFrame(
        {
            "extra": [1, 2, 3, 4],
            "workclass": [" State-gov", "Private", "Martian", None],
            "age": [30, None, 41.5, "52"],
        }
    )
    out = to_model_frame(df, SIG)
    assert list(out.columns) == ["age", "workclass"]
    assert out["age"].dtype == np.float64
    assert out["age"].tolist()[0] == 30.0 and np.isnan(out["age"].iloc[1])
    assert out["age"].tolist()[2:] == [41.5, 52.0]
    assert list(out["workclass"].cat.categories) == ["Private", "State-gov"]
    assert out["workclass"].cat.codes.tolist() == [1, 0, -1, -1]  # unseen -> missing
    assert unseen_categories(df, SIG) == {"workclass": ["Martian"]}


@pytest.mark.filterwarnings("error")
def test_unseen_categories_are_encoded_without_deprecated_pandas_behaviour() -> None:
    """pandas 3 deprecates building a Categorical from values outside its categories (it will
    raise in pandas 4); unseen categories must keep becoming missing values."""
    df = pd.DataFrame({"age": [1, 2, 3], "workclass": ["Martian", "Private", None]})
    assert to_model_frame(df, SIG)["workclass"].cat.codes.tolist() == [-1, 0, -1]


def test_booleans_are_not_numbers() -> None:
    df = pd.DataFrame({"age": [True, False], "workclass": ["Private", "Private"]})
    with pytest.raises(SchemaError, match="'age'"):
        to_model_frame(df, SIG)


def test_encode_target() -> None:
    assert encode_target(pd.Series([">50K", "<=50K", " >50K"]), SIG).tolist() == [1, 0, 1]
    with pytest.raises(SchemaError, match=r"unexpected value '>50K\.'.*1 row"):
        encode_target(pd.Series([">50K", ">50K."]), SIG)
    with pytest.raises(SchemaError, match="'income'"):
        encode_target(pd.Series([">50K", None]), SIG)


def test_infer_signature() -> None:
    train = pd.DataFrame(
        {"age": [30, 40, 50], "workclass": ["b", "a", None], "income": [">50K", "<=50K", ">50K"]}
    )
    sig = infer_signature(train, "income", ">50K")
    assert sig.features == (
        Feature("age", "numeric"),
        Feature("workclass", "categorical", ("a", "b")),
    )
    assert (sig.positive_class, sig.negative_class) == (">50K", "<=50K")
    assert Signature.from_dict(json.loads(json.dumps(sig.to_dict()))) == sig


# --- metrics ------------------------------------------------------------------------------


def test_compute_kpis_matches_sklearn() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=500)
    p = np.clip(0.35 * y + rng.uniform(0, 0.65, size=500), 0.001, 0.999)
    p[:5] = 0.6  # exactly at the threshold: predicted positive
    t = 0.6
    pred = (p >= t).astype(int)
    expected = {
        "roc_auc": skm.roc_auc_score(y, p),
        "pr_auc": skm.average_precision_score(y, p),
        "log_loss": skm.log_loss(y, p),
        "brier": skm.brier_score_loss(y, p),
        "accuracy": skm.accuracy_score(y, pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred),
        "recall": skm.recall_score(y, pred),
        "f1": skm.f1_score(y, pred),
        "mcc": skm.matthews_corrcoef(y, pred),
    }
    assert set(expected) == set(KPI_FUNCTIONS["binary_classification"])
    got = compute_kpis("binary_classification", y, p, t, list(expected))
    assert got == {k: round(float(v), 6) for k, v in expected.items()}
    # The (n, 2) probability matrix gives the same figures as the positive-class vector.
    matrix = np.column_stack([1 - p, p])
    assert compute_kpis("binary_classification", y, matrix, t, list(expected)) == got
    other = compute_kpis("binary_classification", y, p, 0.5, ["accuracy"])
    assert got["accuracy"] != other["accuracy"]


def test_meets() -> None:
    assert meets("roc_auc", 0.93, 0.925) and not meets("roc_auc", 0.92, 0.925)
    assert meets("roc_auc", 0.925, 0.925)
    # Lower is better: the bound is a maximum.
    assert meets("log_loss", 0.30, 0.35) and not meets("log_loss", 0.40, 0.35)
    assert meets("brier", 0.1, 0.1) and not meets("brier", 0.11, 0.1)


def test_config_knows_exactly_the_metrics_the_metrics_module_computes() -> None:
    from mlcycle import tasks
    from mlcycle.metrics import KPI_FUNCTIONS

    assert {task: tuple(kpis) for task, kpis in KPI_FUNCTIONS.items()} == tasks.KPI_NAMES
    assert config.KPI_NAMES == tasks.ALL_KPI_NAMES


# --- values as text and YAML (mlcycle.io) ------------------------------------------------------

TRICKY_TEXT = [
    "adult.csv",
    "<=50K",
    ">50K",
    " >50K",
    "yes",
    "no",
    "on",
    "1e3",
    "1_000",
    "0x1F",
    "010",
    "",
    "a b",
    "a#b",
    "a: b",
    "-",
    "?",
    "null",
    "~",
    "true",
    "1.0",
    ".5",
    "2020-01-01",
    "a,b",
    "[x]",
    "{x}",
    "é",
    "x'y",
    '"q"',
    "@x",
    "*x",
    "&x",
    "!x",
    "|x",
    "12:30",
    ":8787",
    "NaN",
    ".inf",
]


@pytest.mark.parametrize("flow", [False, True])
def test_yaml_scalars_read_back_the_same_in_yaml_1_1_and_1_2(flow: bool) -> None:
    """schema.yaml is read by PyYAML (YAML 1.1), params.yaml by DVC (ruamel.yaml, YAML 1.2):
    whatever mlcycle writes reads back as itself in both."""
    yaml12 = YAML(typ="safe", pure=True)
    for value in [*TRICKY_TEXT, 3, 1.5, 1e20, -0.0, True, None]:
        text = yaml_scalar(value, flow=flow)
        doc = f"k: [{text}]" if flow else f"k: {text}"
        expected = {"k": [value] if flow else value}
        assert yaml.safe_load(doc) == expected, (value, text)
        assert yaml12.load(doc) == expected, (value, text)
    for name in TRICKY_TEXT:
        doc = f"{yaml_key(name)}: 1"
        assert yaml.safe_load(doc) == yaml12.load(doc) == {name: 1}, name
    # Plain where it can be, JSON-quoted otherwise (the style of the shipped files).
    assert [yaml_scalar(v) for v in ("Self-emp-inc", ">50K", "yes", "1e3")] == [
        "Self-emp-inc",
        '">50K"',
        '"yes"',
        '"1e3"',
    ]


def test_value_text_writes_values_as_they_are_written() -> None:
    """One text form for a cell value, so 1.0 and 1 agree and missing stays missing."""
    assert [value_text(v) for v in (1.0, 1, np.int64(7), 1.5, True, np.bool_(False))] == [
        "1",
        "1",
        "7",
        "1.5",
        "true",
        "false",
    ]
    assert value_text(2.0**60) == repr(2.0**60)  # beyond exact integers: as the float reads
    assert value_text(pd.Timestamp("2024-05-01 12:00")) == "2024-05-01T12:00:00"
    assert value_text({"b": 1, "a": [1, 2]}) == '{"a": [1, 2], "b": 1}'
    assert [value_text(v) for v in (None, np.nan, pd.NA, pd.NaT)] == [None] * 4
    assert value_text("  kept as is ") == "  kept as is "


# --- outputs replaced whole: a failed or killed write keeps the old one -------------------------


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (by relative path) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_an_output_folder_is_replaced_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "models" / "train"
    (target / "baseline").mkdir(parents=True)
    (target / "model.ubj").write_bytes(b"last good model")
    (target / "baseline" / "model.json").write_text("{}")
    before = tree(target)

    with pytest.raises(RuntimeError), atomic_folder(target) as tmp:
        (tmp / "model.ubj").write_bytes(b"half a model")
        raise RuntimeError("the fit failed")
    assert tree(target) == before
    assert os.listdir(target.parent) == ["train"]  # no temporary left beside it

    with atomic_folder(target) as tmp:
        (tmp / "model.skops").write_bytes(b"new model")
    assert tree(target) == {"model.skops": b"new model"}  # nothing of the old one survives
    assert os.listdir(target.parent) == ["train"]

    # A data set changes layout with the engine: a file (local) and a folder of parts (Dask)
    # replace one another.
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"one file")
    assert target.read_bytes() == b"one file"
    with atomic_folder(target) as tmp:
        (tmp / "part-00000.parquet").write_bytes(b"part")
    assert tree(target) == {"part-00000.parquet": b"part"}
    assert os.listdir(target.parent) == ["train"]


# Writes a new folder in place of argv[1] and is killed by SIGKILL: "writing" waits inside the
# write for the test to kill it; "swapping" kills itself between the two renames of the swap
# (the old folder moved aside, the new one not yet in).
KILLED_WRITER = """
import os, signal, sys
from mlcycle.io import atomic_folder
target, when = sys.argv[1:]
if when == "swapping":
    rename, renames = os.replace, []
    def replace(src, dst):
        renames.append(src)
        if len(renames) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        rename(src, dst)
    os.replace = replace
with atomic_folder(target) as tmp:
    (tmp / "new.txt").write_text("new")
    print(tmp, flush=True)
    sys.stdin.read()
"""


def killed_writer(target: Path, when: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(target), when],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )


def test_what_a_killed_write_leaves_the_next_write_clears(tmp_path: Path) -> None:
    target = tmp_path / "train"
    target.mkdir()
    (target / "model.ubj").write_bytes(b"last good model")

    writer = killed_writer(target, "writing")
    tmp = Path(writer.stdout.readline().strip())
    with atomic_path(tmp_path / "other") as other:  # a write beside it, of another target
        other.write_text("x")
    with atomic_folder(target) as mine:  # another writer of the same target, still alive:
        (mine / "model.ubj").write_bytes(b"written meanwhile")
    assert tmp.is_dir()  # its temporary is left alone
    writer.kill()
    writer.communicate()
    assert tree(target) == {"model.ubj": b"written meanwhile"}
    with atomic_folder(target) as mine:
        (mine / "model.ubj").write_bytes(b"the next run's model")
    assert not tmp.exists()  # the killed writer's temporary is gone
    assert sorted(os.listdir(tmp_path)) == ["other", "train"]

    writer = killed_writer(target, "swapping")
    writer.communicate()
    assert writer.returncode == -signal.SIGKILL
    assert not target.exists()  # killed with the old folder aside and the new one not in
    with pytest.raises(RuntimeError), atomic_folder(target):
        raise RuntimeError("the next run fails too")
    assert tree(target) == {"model.ubj": b"the next run's model"}  # the old one is back
    assert sorted(os.listdir(tmp_path)) == ["other", "train"]
