"""The ``params.yaml`` reference page, generated from the settings model (``mlcycle.config``).

``python -m mlcycle.paramsdoc > docs/reference/params.md`` writes it; a test checks the
committed page is what this prints, so the reference cannot drift from the code. Every key,
type, default, constraint and description comes from the model's JSON Schema: a new field
appears here without anyone writing about it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from mlcycle.config import json_schema

_CONSTRAINTS = (
    ("minimum", "≥ {}"),
    ("exclusiveMinimum", "> {}"),
    ("maximum", "≤ {}"),
    ("exclusiveMaximum", "< {}"),
    ("minLength", "at least {} characters"),
    ("maxLength", "at most {} characters"),
    ("minItems", "at least {} items"),
    ("maxItems", "at most {} items"),
    ("pattern", "matches `{}`"),
)


def _resolve(node: dict, defs: dict) -> dict:
    """``node`` with a ``$ref`` replaced by its definition (its own keys win)."""
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _variants(node: dict) -> list[dict]:
    return node.get("anyOf") or node.get("oneOf") or [node]


def _type(node: dict, defs: dict) -> str:
    """A readable type: ``integer``, ``list of string``, ``map of string → number``, one of…"""
    parts = []
    for v in _variants(node):
        v = _resolve(v, defs)
        if "enum" in v:
            parts.append("one of " + ", ".join(f"`{json.dumps(e)}`" for e in v["enum"]))
            continue
        if "const" in v:
            parts.append(f"`{json.dumps(v['const'])}`")
            continue
        kinds = v.get("type")
        kinds = kinds if isinstance(kinds, list) else [kinds]
        for kind in kinds:
            if kind == "array":
                items = v.get("items")
                inner = _type(items, defs) if isinstance(items, dict) and items else "any"
                parts.append(f"list of {inner}")
            elif kind == "object":
                extra = v.get("additionalProperties")
                if v.get("properties") or v.get("title", "").endswith("Model"):
                    parts.append("mapping (below)")
                elif isinstance(extra, dict) and extra:
                    parts.append(f"map of string → {_type(extra, defs)}")
                else:
                    parts.append("mapping")
            elif kind is None:
                parts.append("any")
            else:
                parts.append(str(kind))
    seen = list(dict.fromkeys(parts))
    if "null" in seen and len(seen) > 1:
        seen.remove("null")
        return " or ".join(seen) + " (or null)"
    return " or ".join(seen)


def _constraints(node: dict, defs: dict) -> str:
    found = []
    for v in [node, *_variants(node)]:
        v = _resolve(v, defs)
        if v.get("minLength") is not None and v.get("minLength") == v.get("maxLength"):
            n = v["minLength"]
            found.append(f"exactly {n} character{'s' if n != 1 else ''}")
            v = {k: x for k, x in v.items() if k not in ("minLength", "maxLength")}
        for key, text in _CONSTRAINTS:
            if key in v:
                found.append(text.format(v[key]))
    return ", ".join(dict.fromkeys(found))


def _default(prop: dict, required: bool) -> str:
    if required:
        return "required"
    if "default" not in prop:
        return ""
    value = prop["default"]
    if isinstance(value, dict) and value:
        return "see below"
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _model_of(prop: dict, defs: dict) -> tuple[dict | None, str]:
    """The nested model a property holds, and how its keys are written: ``.`` for a mapping,
    ``[].`` for a list of mappings, ``.<name>.`` for each level of a map of mappings."""
    for v in _variants(prop):
        v = _resolve(v, defs)
        if v.get("properties"):
            return v, "."
        items = v.get("items")
        if isinstance(items, dict):
            inner, joint = _model_of(items, defs)
            if inner is not None:
                return inner, "[]" + joint
        extra = v.get("additionalProperties")
        if isinstance(extra, dict):
            inner, joint = _model_of(extra, defs)
            if inner is not None:
                return inner, ".<name>" + joint
    return None, ""


def _rows(model: dict, prefix: str, defs: dict) -> list[str]:
    """Table rows for every key of ``model``, nested models after their own row."""
    rows, nested = [], []
    required = set(model.get("required") or [])
    for key, prop in (model.get("properties") or {}).items():
        path = f"{prefix}{key}"
        inner, joint = _model_of(prop, defs)
        about = prop.get("description") or (inner or {}).get("description", "")
        rows.append(
            f"| `{path}` | {_cell(_type(prop, defs))} | {_cell(_default(prop, key in required))}"
            f" | {_cell(_constraints(prop, defs))} | {_cell(about)} |"
        )
        if inner is not None:
            nested.append((f"{path}{joint}", inner))
    for sub_prefix, inner in nested:
        rows += _rows(inner, sub_prefix, defs)
    return rows


def markdown() -> str:
    """The whole reference page."""
    schema = json_schema()
    defs = schema.get("$defs", {})
    required = set(schema.get("required") or [])
    lines = [
        "# params.yaml reference",
        "",
        "Every key of `params.yaml`: its type, its default, the values it accepts and what it",
        "does. This page is generated from the settings model (`src/mlcycle/config.py`) by",
        "`python -m mlcycle.paramsdoc > docs/reference/params.md`, and a test fails when it is",
        "out of date. `dvc exp run -S key=value` changes one key for an experiment; editors that",
        "read `params.schema.json` (the same model) complete and check the file as you type.",
        "",
        "In the tables, `a.b` is key `b` inside mapping `a`, `a[].b` is key `b` of each item of",
        "list `a`, and `a.<name>.b` is key `b` under each name of mapping `a`. A list or mapping",
        "given as `null` means empty.",
    ]
    for key, prop in (schema.get("properties") or {}).items():
        model = _resolve(prop, defs)
        lines += ["", f"## {key}", ""]
        if model.get("description"):
            lines += [" ".join(model["description"].split()), ""]
        lines.append("Required." if key in required else "Optional: every key below has a default.")
        lines += [
            "",
            "| key | type | default | accepts | description |",
            "|---|---|---|---|---|",
            *_rows(model, f"{key}.", defs),
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
