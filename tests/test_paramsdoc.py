"""The params.yaml reference page is generated from the settings model, so it cannot drift: the
committed page is what the model prints, and it documents every key of params.yaml and every
field of every model, readably."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from mlcycle import paramsdoc, tasks
from mlcycle.config import json_schema, read_raw
from tests.conftest import ROOT

PAGE = ROOT / "docs/reference/params.md"
REGENERATE = "regenerate it: python -m mlcycle.paramsdoc > docs/reference/params.md"
HEADER = "| key | type | default | constraints | description |"
COLUMNS = ("type", "default", "constraints", "description")


def rows(page: str) -> dict[str, list[dict[str, str]]]:
    """The rows of the page's key tables, by key path (a path in several variant tables has
    several rows): each row's cells by column name."""
    out: dict[str, list[dict[str, str]]] = {}
    in_table = False
    for line in page.splitlines():
        if line == HEADER:
            in_table = True
        elif not line.startswith("|"):
            in_table = False
        elif in_table and not line.startswith("|---"):
            key, *cells = (c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1])
            assert key.startswith("`") and key.endswith("`") and len(cells) == 4, line
            out.setdefault(key.strip("`"), []).append(dict(zip(COLUMNS, cells, strict=True)))
    return out


def test_committed_page_is_what_the_model_generates() -> None:
    assert PAGE.read_text(encoding="utf-8") == paramsdoc.markdown(), (
        f"docs/reference/params.md is out of date; {REGENERATE}"
    )


def test_module_prints_the_page(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mlcycle.paramsdoc"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        encoding="utf-8",
    )
    assert proc.stdout == paramsdoc.markdown()


def _leaf_paths(node: Any, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Every leaf key path of a params.yaml; the items of a list of mappings under ``[]``."""
    if isinstance(node, dict) and node:
        return [p for k, v in node.items() for p in _leaf_paths(v, (*prefix, str(k)))]
    if isinstance(node, list) and node and all(isinstance(i, dict) for i in node):
        *head, last = prefix
        paths = (p for item in node for p in _leaf_paths(item, (*head, f"{last}[]")))
        return list(dict.fromkeys(paths))
    return [prefix]


def _matches(key: str, path: tuple[str, ...]) -> bool:
    """Whether page key ``key`` (``<name>``: any one key) is the key path ``path``."""
    parts = key.split(".")
    if len(parts) != len(path):
        return False
    return all(k in ("<name>", p) for k, p in zip(parts, path, strict=True))


def test_every_key_of_the_example_params_is_on_the_page() -> None:
    """Each leaf of params.yaml has its row, or sits in a free-form mapping that has one (and
    is one of the keys that mapping's row allows, if it lists them)."""
    table = rows(paramsdoc.markdown())
    free = {  # mappings whose keys have no rows of their own
        key
        for key, found in table.items()
        if found[0]["type"].startswith("map")
        and not any(k.startswith((f"{key}.", f"{key}[]")) for k in table)
    }
    missing = []
    for path in _leaf_paths(read_raw(ROOT / "params.yaml"), ()):
        if any(_matches(key, path) for key in table):
            continue
        owners = [k for k in free for n in range(1, len(path)) if _matches(k, path[:n])]
        if not owners:
            missing.append(".".join(path))
        for owner in owners:
            allowed = table[owner][0]["constraints"]
            key = path[len(owner.split("."))]
            if "keys: one of" in allowed and f"`{key}`" not in allowed:
                missing.append(f"{'.'.join(path)} (not among the keys {owner} lists)")
    assert len(_leaf_paths(read_raw(ROOT / "params.yaml"), ())) > 100
    assert not missing, (
        f"keys of params.yaml not on the page (declared in mlcycle.config?): {missing}"
    )


def test_every_field_of_every_model_is_on_the_page() -> None:
    """Every property of every model in the JSON Schema has a row, under one parent path with
    its siblings, with a type, a default and a description."""
    schema, page = json_schema(), paramsdoc.markdown()
    table = rows(page)
    siblings: dict[str, set[str]] = {}
    for key in table:
        parent, _, name = key.rpartition(".")
        siblings.setdefault(parent, set()).add(name)
    for name, model in schema["$defs"].items():
        fields = set(model.get("properties") or {})
        assert any(fields <= found for found in siblings.values()), f"{name}: {fields}"
        if model.get("description"):
            assert " ".join(model["description"].split()) in page, name
    sections = [line[3:] for line in page.splitlines() if line.startswith("## ")]
    assert sections == list(schema["properties"])  # one per section, in the model's order
    for key, found in table.items():
        for row in found:
            assert row["type"] and row["default"], key
            assert row["description"], f"{key} has no description: give it a docstring"
    assert "$ref" not in page and "None" not in page and "{}" not in page


def test_per_task_values_are_those_of_mlcycle_tasks() -> None:
    """The table of keys that depend on objectives.task gives each task its own metrics and
    model kinds."""
    lines = paramsdoc.markdown().splitlines()
    start = lines.index("### Keys that depend on `objectives.task`")
    header = next(line for line in lines[start:] if line.startswith("| key |"))
    columns = [c.strip(" `") for c in header.strip("|").split("|")][1:]
    assert columns == list(tasks.TASKS)
    table = {}
    for line in lines[lines.index(header) + 2 :]:
        if not line.startswith("|"):
            break
        key, *cells = (c.strip() for c in line.strip("|").split("|"))
        table[key.strip("`")] = dict(zip(columns, cells, strict=True))
    for task in tasks.TASKS:
        metrics = set(re.findall(r"`([^`]+)`", table["objectives.primary_metric"][task]))
        assert metrics - {"null"} == set(tasks.KPI_NAMES[task]), task
        kinds = set(re.findall(r"`([^`]+)`", table["train.candidates"][task]))
        assert kinds == {k for k in tasks.MODEL_KINDS if task in tasks.MODEL_TASKS[k]}, task
    assert "required" in table["objectives.positive_class"][tasks.BINARY]


# --- the renderer, on a model of its own -----------------------------------------------------


class _File(BaseModel):
    """Read a file."""

    model_config = ConfigDict(use_attribute_docstrings=True)
    kind: Literal["file"]
    """The kind."""
    path: str = Field(pattern=r"^(csv|tsv)$")
    """Where it is (one | two)."""


class _Database(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)
    kind: Literal["database"]
    """The kind."""
    url: str
    """The URL."""


class _Inner(BaseModel):
    """Inner settings."""

    model_config = ConfigDict(use_attribute_docstrings=True)
    depth: int = 2
    """How deep."""


class _Section(BaseModel):
    """A section."""

    model_config = ConfigDict(use_attribute_docstrings=True)
    count: int = Field(3, ge=1)
    """How many."""
    share: float | None = Field(None, gt=0, lt=1)
    """A share."""
    mode: Literal["a", "null"] = "a"
    """The mode."""
    names: list[str] = []
    """Names."""
    weights: dict[str, float] = {}
    """Weights."""
    inner: _Inner = _Inner()
    per_name: dict[str, _Inner] = {}
    """Inner settings per name."""
    sources: list[Annotated[_File | _Database, Field(discriminator="kind")]]
    """The sources."""


class _Root(BaseModel):
    section: _Section
    extra: _Inner = _Inner()


def test_rows_are_readable_and_nested_models_recurse() -> None:
    page = paramsdoc.markdown(_Root.model_json_schema())
    for row in (
        "| `section.count` | integer | `3` | ≥ 1 | How many. |",
        "| `section.share` | number (or `null`) | `null` | > 0, < 1 | A share. |",
        '| `section.mode` | one of `a`, `"null"` | `a` |  | The mode. |',
        "| `section.names` | list of string | empty |  | Names. |",
        "| `section.weights` | map of string → number | empty |  | Weights. |",
        "| `section.inner` | mapping (keys below) | its keys' defaults |  | Inner settings. |",
        "| `section.inner.depth` | integer | `2` |  | How deep. |",
        "| `section.per_name.<name>.depth` | integer | `2` |  | How deep. |",
        "| `section.sources` | list of mapping (one of the variants below) | required |  "
        "| The sources. |",
        "| `section.sources[].path` | string | required | matches <code>^(csv&#124;tsv)$</code> "
        "| Where it is (one \\| two). |",
        "| `section.sources[].url` | string | required |  | The URL. |",
    ):
        assert row + "\n" in page, row
    headings = [line for line in page.splitlines() if line.startswith("#")]
    assert headings[1:] == [
        "## section",
        "### `section.sources[]` with `kind: file`",
        "### `section.sources[]` with `kind: database`",
        "## extra",
    ]
    assert "Read a file." in page


def test_rules_on_another_key_get_a_table_and_an_unknown_rule_is_an_error() -> None:
    schema = _Root.model_json_schema()
    schema["allOf"] = [
        {
            "if": {"properties": {"section": {"properties": {"mode": {"const": "a"}}}}},
            "then": {"properties": {"section": {"properties": {"count": {"oddRule": 1}}}}},
        }
    ]
    with pytest.raises(ValueError, match="oddRule"):
        paramsdoc.markdown(schema)
    schema["allOf"][0]["then"]["properties"]["section"]["properties"]["count"] = {"maximum": 9}
    page = paramsdoc.markdown(schema)
    assert "### Keys that depend on `section.mode`" in page
    assert "| key | `a` |\n|---|---|\n| `section.count` | ≤ 9 |\n" in page
