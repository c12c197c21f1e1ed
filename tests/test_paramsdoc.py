"""The params.yaml reference page is generated from the settings model, so it cannot drift."""

from __future__ import annotations

import subprocess
import sys

import yaml

from mlcycle import paramsdoc
from mlcycle.config import json_schema
from tests.conftest import ROOT

PAGE = ROOT / "docs/reference/params.md"


def test_committed_page_is_what_the_model_generates() -> None:
    assert PAGE.read_text(encoding="utf-8") == paramsdoc.markdown(), (
        "docs/reference/params.md is out of date: "
        "python -m mlcycle.paramsdoc > docs/reference/params.md"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mlcycle.paramsdoc"], capture_output=True, text=True, check=True
    )
    assert proc.stdout == paramsdoc.markdown()


def _leaf_paths(node: object, prefix: str) -> list[str]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _leaf_paths(v, f"{prefix}.{k}")] or [prefix]
    if isinstance(node, list) and node and all(isinstance(i, dict) for i in node):
        return sorted({p for item in node for p in _leaf_paths(item, f"{prefix}[]")})
    return [prefix]


def test_every_key_of_the_example_params_is_documented() -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    keys = set(paramsdoc.markdown().split("`"))
    missing = []
    for path in [p.lstrip(".") for p in _leaf_paths(params, "")]:
        # Free-form maps (xgb params, per-kind settings) are documented at their own key.
        parts = path.split(".")
        if not any(".".join(parts[:n]) in keys for n in range(len(parts), 1, -1)):
            missing.append(path)
    assert not missing, missing


def test_every_field_of_every_model_is_on_the_page() -> None:
    schema = json_schema()
    page = paramsdoc.markdown()
    models = [schema, *schema["$defs"].values()]
    fields = {name for m in models for name in (m.get("properties") or {})}
    rows = {
        cell.strip("`").rsplit(".", 1)[-1]
        for line in page.splitlines()
        if line.startswith("| `")
        for cell in [line.split("|")[1].strip()]
    }
    sections = {line[3:] for line in page.splitlines() if line.startswith("## ")}
    assert fields - rows - sections == set()
    assert sections == set(schema["properties"])
    assert "$ref" not in page and "None" not in page
