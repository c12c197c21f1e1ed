"""params.yaml as declared settings: what each task accepts, defaults per task, unknown keys,
every problem reported at once with its key path, and the committed JSON Schema."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlcycle import config, tasks
from mlcycle.config import ConfigError
from tests.conftest import ROOT

PROJECT = yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.fixture
def raw() -> dict:
    """A private, editable copy of the project's params.yaml (binary classification)."""
    return copy.deepcopy(PROJECT)


def for_task(raw: dict, task: str) -> dict:
    """``raw`` turned into a valid params file for ``task``: the objectives a user would write
    for it (no positive class or threshold beyond binary), the train settings untouched."""
    obj = raw["objectives"]
    obj["task"] = task
    for key in ("primary_metric", "kpis", "minimums"):
        obj.pop(key)
    if task != tasks.BINARY:
        for key in ("positive_class", "threshold"):
            obj.pop(key)
        raw["train"]["candidates"] = list(tasks.DEFAULT_CANDIDATES[task])
    return raw


def problems(raw: dict) -> tuple[str, ...]:
    """The lines of the ConfigError that validating ``raw`` raises."""
    with pytest.raises(ConfigError) as exc:
        config.parse_params(raw)
    assert str(exc.value) == "\n".join(exc.value.problems)
    assert all(line.startswith("params.yaml: ") for line in exc.value.problems)
    return exc.value.problems


def problem(raw: dict) -> str:
    """The one problem validating ``raw`` finds."""
    found = problems(raw)
    assert len(found) == 1, found
    return found[0]


# --- the project's own file ------------------------------------------------------------------


def test_project_params_load_with_every_section() -> None:
    params = config.load(ROOT / "params.yaml")
    assert params.objectives.task == tasks.BINARY
    assert params.objectives.threshold_metric == "accuracy"
    assert params.objectives.minimums == {"roc_auc": 0.925, "accuracy": 0.85}
    assert params.gate == config.GateConfig(tolerance=0.002)
    assert params.package == config.PackageConfig(name="income-classifier")
    assert params.monitor == config.MonitorConfig()
    assert params.rollout == config.RolloutConfig()  # the defaults, written out
    assert params.engine == config.EngineConfig()  # local, the default
    assert params.train.search["xgboost"]["max_depth"] == {"low": 5, "high": 10}  # derived
    assert isinstance(params.train.search["xgboost"]["max_depth"]["low"], int)  # searched as int
    assert params.features.derived == (
        {"name": "capital-net", "op": "difference", "columns": ["capital-gain", "capital-loss"]},
    )
    assert [f.alias or name for name, f in config.Params.model_fields.items()] == [
        "objectives", "data", "validate", "prepare", "features", "train", "evaluate",
        "monitor", "rollout", "gate", "package", "engine",
    ]  # fmt: skip


def test_committed_schema_is_up_to_date() -> None:
    """params.schema.json is what `python -m mlcycle.config` prints; regenerate it with
    `python -m mlcycle.config > params.schema.json` after changing the settings."""
    committed = (ROOT / "params.schema.json").read_text(encoding="utf-8")
    assert committed == config.json_schema_text()
    printed = subprocess.run(
        [sys.executable, "-m", "mlcycle.config"],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""},
    ).stdout
    assert printed == committed
    assert json.loads(committed) == config.json_schema()
    # Editors find it from the first line of params.yaml.
    first = (ROOT / "params.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=params.schema.json"


def test_schema_declares_the_layout_with_descriptions() -> None:
    schema = config.json_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    assert set(schema["required"]) == {"objectives", "data", "validate", "prepare", "train"}
    assert schema["additionalProperties"] is True  # other sections are the user's business
    defs = schema["$defs"]
    objectives = defs["Objectives"]
    assert objectives["additionalProperties"] is False
    assert objectives["properties"]["task"]["enum"] == list(tasks.TASKS)
    assert objectives["properties"]["target"]["description"] == "The column to predict."
    split = defs["SplitConfig"]["properties"]
    assert split["method"]["enum"] == list(config.SPLIT_METHODS)
    assert split["test_size"]["exclusiveMaximum"] == 1
    # Free parameter names under train.models.<kind>; none under a search range.
    assert defs["TrainConfig"]["properties"]["models"]["additionalProperties"]["type"] == "object"
    assert defs["SearchRange"]["additionalProperties"] is False
    # Every key a user can write is documented.
    for name, model in defs.items():
        for key, prop in model.get("properties", {}).items():
            assert "description" in prop or "$ref" in prop, f"{name}.{key} has no description"
    # Per-task rules for editors: regression has no positive class and no stratified split.
    rules = {r["if"]["properties"]["objectives"]["properties"]["task"]["const"]: r["then"]
             for r in schema["allOf"]}  # fmt: skip
    reg = rules[tasks.REGRESSION]["properties"]
    assert reg["objectives"]["properties"]["positive_class"] == {"type": "null"}
    assert reg["prepare"]["properties"]["split"]["properties"]["method"] == {
        "not": {"const": "stratified"}
    }
    assert "ridge" in reg["train"]["properties"]["candidates"]["items"]["enum"]
    assert rules[tasks.BINARY]["properties"]["objectives"]["required"] == ["positive_class"]


# --- objectives per task ---------------------------------------------------------------------


@pytest.mark.parametrize("task", tasks.TASKS)
def test_defaults_follow_the_task(raw: dict, task: str) -> None:
    params = config.parse_params(for_task(raw, task))
    obj = params.objectives
    assert obj.primary_metric == tasks.DEFAULT_PRIMARY[task]
    assert obj.kpis == tuple(dict.fromkeys((obj.primary_metric, *tasks.DEFAULT_KPIS[task])))
    assert obj.minimums == {obj.primary_metric: raw["objectives"]["minimum"]}
    assert (obj.positive_class is None) == (task != tasks.BINARY)
    del raw["train"]["candidates"]
    assert config.section(raw, "train").candidates == tasks.DEFAULT_CANDIDATES[task]


def test_optional_sections_take_their_defaults(raw: dict) -> None:
    for key in ("features", "evaluate", "monitor", "gate", "package"):
        del raw[key]
    raw["gate"] = None  # a section written with nothing under it
    params = config.parse_params(raw)
    assert params.evaluate == config.EvaluateConfig(curve_points=200)
    assert params.monitor == config.MonitorConfig()
    assert params.gate == config.GateConfig()
    assert params.package == config.PackageConfig(name="model")
    assert params.features == config.FeaturesConfig()


def test_a_list_or_mapping_written_empty_is_empty(raw: dict) -> None:
    """`minimums:` with every entry commented out is YAML null: it means none."""
    raw["objectives"].update(minimums=None, slices=None)
    raw["train"]["search"] = None
    params = config.parse_params(raw)
    assert params.objectives.minimums == {"roc_auc": 0.925} and params.objectives.slices == ()
    assert params.train.search == {} and params.train.trials_for("xgboost") == 0
    raw["objectives"]["minimum"] = None  # a value, not a list or mapping: still required
    assert problem(raw).startswith("params.yaml: 'objectives.minimum' should be a number")


@pytest.mark.parametrize("task", [tasks.MULTICLASS, tasks.REGRESSION])
def test_positive_class_is_refused_beyond_binary(raw: dict, task: str) -> None:
    raw = for_task(raw, task)
    raw["objectives"]["positive_class"] = "yes"
    found = problem(raw)
    assert "'objectives.positive_class'" in found
    assert "applies only to binary_classification" in found and task in found
    raw["objectives"]["positive_class"] = None  # null is the same as absent
    assert config.parse_params(raw).objectives.positive_class is None


def test_binary_needs_a_positive_class_and_takes_yaml_scalars_as_text(raw: dict) -> None:
    raw["objectives"]["positive_class"] = 1
    assert config.section(raw, "objectives").positive_class == "1"
    raw["objectives"]["positive_class"] = True
    assert config.section(raw, "objectives").positive_class == "True"
    del raw["objectives"]["positive_class"]
    with pytest.raises(ConfigError, match=r"'objectives.positive_class' is missing: binary"):
        config.section(raw, "objectives")


def test_metrics_are_checked_against_the_task(raw: dict) -> None:
    raw = for_task(raw, tasks.REGRESSION)
    raw["objectives"]["primary_metric"] = "roc_auc"
    found = problem(raw)
    assert found.startswith("params.yaml: 'objectives.primary_metric' is 'roc_auc'")
    assert "not a metric of regression" in found
    assert str(list(tasks.KPI_NAMES[tasks.REGRESSION])) in found  # what the task knows

    raw["objectives"]["primary_metric"] = "rmse"
    raw["objectives"]["kpis"] = ["mae", "accuracy", "f1_macro"]
    raw["objectives"]["minimums"] = {"r2": 0.3, "brier": 0.1}
    found = problems(raw)
    assert len(found) == 2
    assert "'objectives.kpis' lists 'accuracy', 'f1_macro' (items [1], [2])" in found[0]
    assert "'objectives.minimums.brier' names 'brier'" in found[1]
    assert "regression metrics" in found[1]


def test_a_metric_of_the_task_is_accepted(raw: dict) -> None:
    raw = for_task(raw, tasks.MULTICLASS)
    raw["objectives"].update(primary_metric="f1_macro", kpis=["accuracy"], minimums={"mcc": 0.5})
    obj = config.parse_params(raw).objectives
    assert obj.kpis == ("f1_macro", "accuracy", "mcc")
    raw["objectives"]["kpis"] = ["roc_auc"]  # binary's, not multiclass's
    assert "'objectives.kpis[0]' is 'roc_auc'" in problem(raw)


def test_threshold_applies_only_to_binary(raw: dict) -> None:
    raw["objectives"]["threshold"] = {"maximize": "rmse"}
    assert "'objectives.threshold.maximize' is 'rmse'" in problem(raw)

    raw = for_task(raw, tasks.REGRESSION)
    raw["objectives"]["threshold"] = {"cost_fp": 2.0}
    found = problem(raw)
    assert "'objectives.threshold' applies only to binary_classification" in found
    for empty in (None, {}):
        raw["objectives"]["threshold"] = empty
        assert config.parse_params(raw).objectives.threshold_metric is None


# --- train per task --------------------------------------------------------------------------


def test_candidates_must_learn_the_task(raw: dict) -> None:
    raw = for_task(raw, tasks.REGRESSION)
    raw["train"]["candidates"] = ["xgboost", "logistic_regression"]
    raw["train"]["baseline"] = "logistic_regression"
    found = problems(raw)
    usable = str([k for k in tasks.MODEL_KINDS if tasks.REGRESSION in tasks.MODEL_TASKS[k]])
    assert found[0].startswith("params.yaml: 'train.candidates[1]' is 'logistic_regression'")
    assert found[1].startswith("params.yaml: 'train.baseline' is 'logistic_regression'")
    for line in found:
        assert "cannot learn regression" in line and usable in line


def test_settings_of_other_kinds_may_stay(raw: dict) -> None:
    """A regression file may keep logistic_regression's settings: only candidates and baseline
    must fit the task."""
    raw = for_task(raw, tasks.REGRESSION)
    raw["train"]["baseline"] = "ridge"
    raw["train"]["models"]["ridge"] = {"alpha": 1.0}
    raw["train"]["search"]["ridge"] = {"alpha": {"low": 0.01, "high": 100.0, "log": True}}
    train = config.parse_params(raw).train
    assert train.candidates == tasks.DEFAULT_CANDIDATES[tasks.REGRESSION]
    assert "logistic_regression" in train.models and "logistic_regression" in train.search
    assert train.models["ridge"] == {"alpha": 1.0}
    assert train.trials_for("ridge") == raw["train"]["tuning"]["trials"]
    # Binary cannot use ridge.
    binary = copy.deepcopy(PROJECT)
    binary["train"]["candidates"] = ["ridge"]
    assert "'train.candidates[0]' is 'ridge', which cannot learn binary" in problem(binary)


@pytest.mark.parametrize(
    ("where", "kind", "expected"),
    [
        (("train", "models"), "svm", "'train.models' has key 'svm'"),
        (("train", "search"), "svm", "'train.search' has key 'svm'"),
        (("train", "tuning", "trials_by_candidate"), "svm", "trials_by_candidate' has key 'svm'"),
    ],
)
def test_model_kinds_must_exist(raw: dict, where: tuple, kind: str, expected: str) -> None:
    section = raw
    for key in where:
        section = section[key]
    section[kind] = 1 if where[-1] == "trials_by_candidate" else {}
    found = problem(raw)
    assert expected in found and str(list(tasks.MODEL_KINDS)) in found


def test_candidates_not_empty_and_not_twice(raw: dict) -> None:
    raw["train"]["candidates"] = []
    assert "'train.candidates' is empty" in problem(raw)
    raw["train"]["candidates"] = ["xgboost", "xgboost"]
    assert "'train.candidates' names a model twice" in problem(raw)


def test_train_section_needs_the_task(raw: dict) -> None:
    del raw["objectives"]["task"]
    with pytest.raises(ConfigError, match=r"'objectives.task' is missing or not one of"):
        config.section(raw, "train")


# --- the split per task ----------------------------------------------------------------------


def test_stratified_split_is_refused_for_regression(raw: dict) -> None:
    raw = for_task(raw, tasks.REGRESSION)
    raw["prepare"]["split"]["method"] = "stratified"
    found = problem(raw)
    assert "'prepare.split.method' is 'stratified'" in found and "use 'random'" in found
    with pytest.raises(ConfigError, match="use 'random'"):
        config.section(raw, "prepare")
    raw["prepare"]["split"]["method"] = "random"
    assert config.parse_params(raw).prepare.split.method == "random"


@pytest.mark.parametrize("task", [tasks.BINARY, tasks.MULTICLASS])
def test_stratified_and_random_split_for_classification(raw: dict, task: str) -> None:
    raw = for_task(raw, task)
    for method in ("stratified", "random"):
        raw["prepare"]["split"]["method"] = method
        assert config.parse_params(raw).prepare.split.method == method


@pytest.mark.parametrize(
    ("split", "expected"),
    [
        ({"method": "group"}, "'prepare.split' method group needs 'group_column'"),
        ({"method": "time"}, "'prepare.split' method time needs 'time_column'"),
        ({"test_sources": []}, "'prepare.split' by_source needs train_sources and test_sources"),
        ({"test_sources": ["adult_train"]}, "lists source(s) ['adult_train'] both for training"),
        ({"test_sources": ["adult_tset"]}, "'prepare.split.test_sources[0]' names source "),
        ({"method": "by_sorce"}, "'prepare.split.method' is 'by_sorce'; use one of"),
        ({"test_size": 1.0}, "'prepare.split.test_size' must be between 0 and 1"),
    ],
)
def test_split_needs(raw: dict, split: dict, expected: str) -> None:
    raw["prepare"]["split"].update(split)
    assert expected in problem(raw)


def test_by_source_names_are_checked_only_against_known_sources(raw: dict) -> None:
    raw["prepare"]["split"]["test_sources"] = ["adult_tset"]
    no_data = {"prepare": raw["prepare"]}
    assert config.section(no_data, "prepare").split.test_sources == ("adult_tset",)
    with pytest.raises(ConfigError, match=r"'adult_tset', which is not in data.sources"):
        config.section(raw, "prepare")


# --- unknown keys and several problems -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "key"),
    [
        (("objectives",), "treshold"),
        (("objectives", "threshold"), "maximise"),
        (("data", "sources", 1), "heder"),
        (("validate",), "max_nul_rate"),
        (("prepare", "split"), "methd"),
        (("prepare", "outliers"), "k"),
        (("features", "derived", 0), "colums"),
        (("features", "selection"), "top_k"),
        (("train",), "cv_fold"),
        (("train", "tuning"), "trails"),
        (("train", "search", "xgboost", "max_depth"), "step"),
        (("evaluate",), "points"),
        (("monitor",), "bin"),
        (("gate",), "tolerence"),
        (("package",), "nmae"),
    ],
)
def test_unknown_key_is_refused_with_its_path(raw: dict, path: tuple, key: str) -> None:
    section = raw
    for part in path:
        section = section[part]
    section[key] = 1
    dotted = config._key_path((*path, key))
    found = problem(raw)
    assert found.startswith(f"params.yaml: '{dotted}' is not a known key; ")
    assert "takes [" in found  # the keys that are known there


def test_free_keys_where_the_layout_leaves_them_free(raw: dict) -> None:
    raw["my_notes"] = {"anything": [1, 2]}  # a section of the user's own
    raw["train"]["models"]["random_forest"]["max_samples"] = 0.5  # checked by the model code
    raw["train"]["search"]["random_forest"]["max_depth"] = {"low": 4, "high": 12}
    params = config.parse_params(raw)
    assert params.train.models["random_forest"]["max_samples"] == 0.5
    raw["train"]["xgb"]["max_dept"] = 4  # XGBoost's own keys stay checked
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['max_dept'\] in 'train.xgb'"):
        config.parse_params(raw)


def test_several_problems_are_reported_together(raw: dict) -> None:
    raw["objectives"]["minimum"] = "high"
    raw["data"]["sources"][1]["kind"] = "ftp"
    raw["prepare"]["split"]["method"] = "group"
    raw["train"]["cv_folds"] = 1
    raw["train"]["tuning"]["trials"] = -1
    raw["monitor"]["bins"] = "ten"
    found = problems(raw)
    assert found == (
        "params.yaml: 'objectives.minimum' should be a number (float), got 'high'",
        "params.yaml: 'data.sources[1].kind' is 'ftp'; use one of "
        "['file', 'database', 'http', 'landing']",
        "params.yaml: 'prepare.split' method group needs 'group_column'",
        "params.yaml: 'train.cv_folds' must be at least 2, got 1",
        "params.yaml: 'train.tuning.trials' must be at least 0, got -1",
        "params.yaml: 'monitor.bins' should be an integer (int), got 'ten'",
    )


def test_load_reports_a_file_with_problems(raw: dict, tmp_path: Path) -> None:
    raw["objectives"]["task"] = "ranking"
    raw["package"]["name"] = "my model"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    assert exc.value.problems == (
        "params.yaml: 'objectives.task' is 'ranking'; use one of "
        "['binary_classification', 'multiclass_classification', 'regression']",
        "params.yaml: 'package.name' is 'my model'; a registry name is letters, digits, '-', "
        "'_' or '/', starting and ending with a letter or digit",
    )


# --- what the hand-written checks checked, still checked -------------------------------------


def _source(**keys: Any) -> dict:
    return {"data": {"sources": [{"name": "s", **keys}]}}


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"kind": "file"}, ["'data.sources[0]' (file) needs 'path'"]),
        ({"kind": "landing"}, ["'data.sources[0]' (landing) needs 'path'"]),
        (
            {"kind": "database"},
            [
                "'data.sources[0]' (database) needs one of 'url' or 'url_env'",
                "'data.sources[0]' (database) needs one of 'table' or 'query'",
            ],
        ),
        (
            {"kind": "database", "url": "sqlite:///x.db", "url_env": "DB", "table": "t"},
            ["'data.sources[0]' (database) needs one of 'url' or 'url_env'"],
        ),
        (
            {"kind": "database", "url_env": "DB", "table": "t", "query": "select 1"},
            ["'data.sources[0]' (database) needs one of 'table' or 'query'"],
        ),
        (
            {"kind": "http", "url": "https://example.org/a.csv"},
            ["'data.sources[0]' (http) needs 'sha256'"],
        ),
        (
            {"kind": "database", "url": "postgresql://me:pw@db/x", "table": "t"},
            ["'data.sources[0].url' holds credentials", "url_env"],
        ),
        ({"path": "a.csv", "sha256": "abc"}, ["'data.sources[0].sha256' must be 64 hex digits"]),
        ({"path": "a.csv", "header": False}, ["has no header line; give 'columns'"]),
        ({"path": "a.csv", "timeout": 0}, ["'data.sources[0].timeout' must be greater than 0"]),
        ({"path": "a.csv", "retries": -1}, ["'data.sources[0].retries' must be at least 0"]),
        ({"path": "a.csv", "format": "xlsx"}, ["'data.sources[0].format' is 'xlsx'"]),
    ],
)
def test_source_needs(keys: dict, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as exc:
        config.section(_source(**keys), "data")
    for text in expected:
        assert text in str(exc.value)


def test_source_values_and_defaults() -> None:
    raw = _source(path="a.csv", header=False, na_values=["?", -1], value_map={"y": {1: "yes"}})
    raw["data"]["columns"] = ["x", "y"]
    raw["data"]["sources"][0]["sha256"] = "AB" * 32
    (src,) = config.section(raw, "data").sources
    assert src.columns == ("x", "y")  # from data.columns, as the file has no header
    assert src.na_values == ("?", "-1") and src.value_map == {"y": {"1": "yes"}}
    assert src.sha256 == "ab" * 32 and src.kind == "file" and src.format == "csv"


def test_source_names_are_unique_and_sources_declared(raw: dict) -> None:
    raw["data"]["sources"][1]["name"] = "adult_train"
    found = problems(raw)
    assert "'data.sources[1].name'" in found[0] and "used twice" in found[0]
    assert "'prepare.split.test_sources[0]' names source 'adult_test'" in found[1]
    raw["data"]["sources"] = []
    assert "'data.sources' is empty" in problem(raw)


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ({"name": "d", "op": "difference", "columns": ["a", "b", "c"]}, "needs two columns"),
        ({"name": "s", "op": "sum", "columns": ["a"]}, "needs at least two columns"),
        ({"name": "l", "op": "log1p"}, "'features.derived[1].column' is missing"),
        ({"name": "l", "op": "log1p", "column": "a", "columns": ["a"]}, "does not apply to log1p"),
        ({"name": "b", "op": "bin", "column": "a", "edges": [3, 1]}, "must be increasing"),
        ({"name": "b", "op": "bin", "column": "a"}, "'features.derived[1].edges' is missing"),
        ({"name": "p", "op": "power", "column": "a"}, "'features.derived[1].op' is 'power'"),
        ({"op": "sqrt", "column": "a"}, "'features.derived[1].name' is missing"),
    ],
)
def test_derived_steps_are_checked(raw: dict, step: dict, expected: str) -> None:
    raw["features"]["derived"].append(step)
    assert expected in problem(raw)


def test_selection_k_with_mutual_info(raw: dict) -> None:
    raw["features"]["selection"] = {"method": "mutual_info"}
    with pytest.raises(ConfigError, match="'features.selection.k' must be at least 1"):
        config.section(raw, "features")
    raw["features"]["selection"]["k"] = 3
    assert config.section(raw, "features").selection_k == 3


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("validate", "severity", {"type": "fatal"}, "'validate.severity.type' is 'fatal'"),
        ("validate", "severity", {"typo": "error"}, "'validate.severity' has key 'typo'"),
        ("train", "validation_fraction", 0.0, "'train.validation_fraction' must be between"),
        ("train", "device", "tpu", "'train.device' is 'tpu'"),
        ("train", "class_weight", "auto", "'train.class_weight' is 'auto'"),
        ("monitor", "alpha", 1.0, "'monitor.alpha' must be between 0 and 1"),
        ("gate", "tolerance", -0.1, "'gate.tolerance' must be at least 0"),
        ("objectives", "slices", "sex", "'objectives.slices' should be a list"),
    ],
)
def test_values_are_checked(raw: dict, section: str, key: str, value: Any, expected: str) -> None:
    raw[section][key] = value
    assert expected in problem(raw)


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ({"max_depth": {"low": 9, "high": 5}}, "'train.search.xgboost.max_depth' must be {low"),
        ({"max_depth": {"choices": []}}, "'train.search.xgboost.max_depth.choices' is empty"),
        ({"gamma": {"low": 0, "high": 1, "log": True}}, "must be greater than 0 with log"),
        ({"max_deph": {"low": 1, "high": 2}}, "unknown XGBoost parameter 'max_deph'"),
    ],
)
def test_search_spaces_are_checked(raw: dict, space: dict, expected: str) -> None:
    raw["train"]["search"]["xgboost"] = space
    assert expected in problem(raw)


def test_missing_section_and_not_a_mapping(raw: dict) -> None:
    del raw["train"]
    assert problem(raw) == "params.yaml: 'train' is missing"
    raw["train"] = ["xgboost"]
    assert problem(raw) == "params.yaml: 'train' should be a mapping, got ['xgboost']"


# --- params.yaml is read as DVC reads it (YAML 1.2) -------------------------------------------


def test_yaml_values_read_as_dvc_reads_them() -> None:
    """`yes` is a string for DVC (ruamel.yaml, YAML 1.2) and must be one here too, or a
    positive class `yes` would become 'True' and never match the data."""
    from dvc.utils.serialize import parse_yaml

    from mlcycle.config import load_yaml

    text = "\n".join(
        f"k{i}: {v}"
        for i, v in enumerate(
            ["yes", "no", "on", "off", "Yes", "y", "n", "true", "False", "010", "1e3", "1:20",
             "0.5", ".inf", "-.inf", "~", "null", "0x1F", "-3", "1_000", "2.", "+7", "0o17",
             "1.5e-3", "abc", "'yes'", "'010'"]
        )
    )  # fmt: skip
    ours = load_yaml(text)
    theirs = dict(parse_yaml(text, "params.yaml"))
    assert ours == theirs
    assert ours["k0"] == "yes" and ours["k9"] == 10 and ours["k11"] == "1:20"
