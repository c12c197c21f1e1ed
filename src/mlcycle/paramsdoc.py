"""The ``params.yaml`` reference page, generated from the settings model (``mlcycle.config``).

``python -m mlcycle.paramsdoc > docs/reference/params.md`` writes it; a test checks that the
committed page is what this prints, so the reference cannot drift from the code. Every key,
type, default, constraint and description comes from the model's JSON Schema
(:func:`mlcycle.config.json_schema`): a new field appears here without anyone writing about it.

The page has one section per top-level key, in the model's order, each with one table whose
rows are dotted key paths (``train.tuning.trials``; ``data.sources[].name`` for the items of a
list, ``train.search.<name>.<name>.low`` for the values of a map). A key that holds one of
several mappings gets a table per variant; the schema's rules that depend on another key's
value (``objectives.task``) get a table of their own.
"""

from __future__ import annotations

import html
import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from mlcycle.config import YAMLError, json_schema, load_yaml

Node = dict[str, Any]

_BOUNDS = (
    ("minimum", "≥"),
    ("exclusiveMinimum", ">"),
    ("maximum", "≤"),
    ("exclusiveMaximum", "<"),
)
# (lower, upper, what is counted) for strings, lists and mappings.
_COUNTS = (
    ("minLength", "maxLength", "character"),
    ("minItems", "maxItems", "item"),
    ("minProperties", "maxProperties", "key"),
)
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
_HEADER = ("| key | type | default | constraints | description |", "|---|---|---|---|---|")


# --- text ------------------------------------------------------------------------------------


def _code(text: str) -> str:
    """``text`` as inline code that a table cell can hold: mkdocs (Python-Markdown) and GitHub
    disagree on ``\\|`` inside backticks, so code with a pipe is written as HTML."""
    if "|" in text:
        return f"<code>{html.escape(text, quote=False).replace('|', '&#124;')}</code>"
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _value(value: Any) -> str:
    """A value as it is written in params.yaml, as code: a string bare unless YAML would read
    the bare text as something else (``"null"``, ``"1"``, ``">50K"``), then quoted."""
    if isinstance(value, str):
        try:
            bare = value != "" and load_yaml(value) == value
        except YAMLError:
            bare = False
        if bare:
            return _code(value)
    return _code(json.dumps(value, ensure_ascii=False))


def _cell(text: str) -> str:
    """One line of text for a table cell: whitespace collapsed, ``|`` escaped (in code spans
    too, by :func:`_code`)."""
    text = " ".join(text.split())
    out, at = [], 0
    for match in _CODE_SPAN.finditer(text):
        out.append(text[at : match.start()].replace("|", "\\|"))
        span = match.group(2)
        out.append(_code(span.strip()) if "|" in span else match.group(0))
        at = match.end()
    out.append(text[at:].replace("|", "\\|"))
    return "".join(out)


def _paragraph(text: str) -> str:
    """Text outside a table: one line (a paragraph needs no escapes)."""
    return " ".join(text.split())


def _join(parts: list[str], word: str = "or") -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    parts = list(dict.fromkeys(parts))
    if len(parts) <= 1:
        return "".join(parts)
    return f"{', '.join(parts[:-1])} {word} {parts[-1]}"


def _one_of(values: list[Any]) -> str:
    return "one of " + ", ".join(_value(v) for v in values)


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if not text or text.endswith((".", "?", "!", ":")) else text + "."


# --- reading the schema ----------------------------------------------------------------------


@dataclass
class _Variant:
    """A table for one of several mappings a key may hold."""

    path: str
    title: str
    about: str
    rows: list[str] = field(default_factory=list)


class _Schema:
    """One JSON Schema, with its ``$defs``, rendered into table rows."""

    def __init__(self, schema: Node) -> None:
        self.defs: dict[str, Node] = schema.get("$defs", {})
        self.paths: list[str] = []  # every key path with a row, in page order

    def resolve(self, node: Node) -> Node:
        """``node`` with ``$ref`` replaced by its definition (the node's own keys win)."""
        while "$ref" in node:
            target = self.defs[node["$ref"].rsplit("/", 1)[-1]]
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return node

    def alternatives(self, node: Node) -> tuple[list[Node], bool]:
        """The non-null forms ``node`` takes (``anyOf``/``oneOf`` flattened, ``$ref``
        resolved) and whether ``null`` is allowed."""
        node = self.resolve(node)
        options = node.get("anyOf") or node.get("oneOf")
        if options:
            out: list[Node] = []
            nullable = False
            for option in options:
                forms, null = self.alternatives(option)
                out += forms
                nullable = nullable or null
            return out, nullable
        kinds = node.get("type")
        if kinds == "null" or ("const" in node and node["const"] is None):
            return [], True
        if isinstance(kinds, list) and "null" in kinds:
            rest = [k for k in kinds if k != "null"]
            return ([{**node, "type": rest[0] if len(rest) == 1 else rest}] if rest else []), True
        if "enum" in node and None in node["enum"]:
            values = [v for v in node["enum"] if v is not None]
            return ([{**node, "enum": values}] if values else []), True
        return [node], False

    # -- type

    def type_text(self, node: Node, mapping: str = "mapping (keys below)") -> str:
        """A readable type: ``integer``, ``list of string``, ``map of string → number``,
        ``one of `a`, `b```; ``(or `null`)`` when null is allowed."""
        forms, nullable = self.alternatives(node)
        parts = [part for form in forms for part in self._parts(form, mapping)]
        if not parts:
            return _code("null") if nullable else "any"
        text = _join(parts)
        return f"{text} (or {_code('null')})" if nullable else text

    def _parts(self, node: Node, mapping: str) -> list[str]:
        if "enum" in node:
            return [_one_of(node["enum"])]
        if "const" in node:
            return [_value(node["const"])]
        if node.get("properties"):
            return [mapping]
        kinds = node.get("type")
        if kinds is None:
            return ["any"]
        out = []
        for kind in kinds if isinstance(kinds, list) else [kinds]:
            if kind == "array":
                out.append(self._container("list of ", node.get("items"), mapping))
            elif kind == "object":
                extra = node.get("additionalProperties")
                if isinstance(extra, dict):
                    out.append(self._container("map of string → ", extra, mapping))
                else:
                    out.append("mapping")
            else:
                out.append(str(kind))
        return out

    def _container(self, prefix: str, inner: Any, mapping: str) -> str:
        text = self.type_text(inner, mapping) if isinstance(inner, dict) and inner else "any"
        if prefix.startswith("list") and text.startswith("one of "):
            return "list, each " + text
        return prefix + text

    # -- constraints

    def constraints(self, node: Node, each: str = "") -> list[str]:
        """The checks on a value beyond its type (bounds, lengths, patterns, allowed keys), on
        the value itself and on its items and map values (``each item ≥ 0``)."""
        node = self.resolve(node)
        forms, _ = self.alternatives(node)
        found: list[str] = []
        for form in [node, *forms]:
            found += [each + text for text in _own_constraints(form)]
            if form.get("properties"):
                continue  # a nested model: its keys have rows of their own
            names = form.get("propertyNames")
            if isinstance(names, dict):
                found += [f"{each}keys: {text}" for text in self._key_rules(names)]
            items = form.get("items")
            if isinstance(items, dict):
                found += self.constraints(items, each + "each item ")
            extra = form.get("additionalProperties")
            if isinstance(extra, dict):
                found += self.constraints(extra, each + "each value ")
        return list(dict.fromkeys(found))

    def _key_rules(self, names: Node) -> list[str]:
        names = self.resolve(names)
        out = [_one_of(names["enum"])] if "enum" in names else []
        return out + _own_constraints(names)

    # -- nesting

    def nested(self, node: Node) -> tuple[list[Node], str]:
        """The mappings with keys of their own that ``node`` holds, and how their keys are
        written after its path: ``.`` (a mapping), ``[].`` (a list of mappings), ``.<name>.``
        (a map of mappings; once per level)."""
        forms = self.alternatives(node)[0]
        for form in forms:
            if form.get("properties"):
                return [f for f in forms if f.get("properties")], "."
            items = form.get("items")
            if isinstance(items, dict):
                models, joint = self.nested(items)
                if models:
                    return models, "[]" + joint
            extra = form.get("additionalProperties")
            if isinstance(extra, dict):
                models, joint = self.nested(extra)
                if models:
                    return models, ".<name>" + joint
        return [], ""

    def rows(self, model: Node, prefix: str, variants: list[_Variant]) -> list[str]:
        """The table rows of every key of ``model``, each nested mapping's keys right after
        its own row; a key that holds one of several mappings adds a table per variant to
        ``variants``."""
        out = []
        required = set(model.get("required") or [])
        for key, prop in (model.get("properties") or {}).items():
            path = prefix + key
            self.paths.append(path)
            models, joint = self.nested(prop)
            union = len(models) > 1
            mapping = "mapping (one of the variants below)" if union else "mapping (keys below)"
            about = [prop.get("description", "")]
            if len(models) == 1 and models[0].get("description"):
                about.append(models[0]["description"])
            cells = (
                _code(path),
                self.type_text(prop, mapping),
                "required" if key in required else _default(self.resolve(prop)),
                ", ".join(self.constraints(prop)),
                " ".join(_sentence(text) for text in about if text),
            )
            out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
            if len(models) == 1:
                out += self.rows(models[0], path + joint, variants)
            for variant in models if union else []:
                table = _Variant(path + joint[:-1], _title(variant), variant.get("description", ""))
                variants.append(table)
                table.rows = self.rows(variant, path + joint, variants)
        return out


def _own_constraints(node: Node) -> list[str]:
    """The checks a schema node states itself (not those of its items or values)."""
    out = [f"{sign} {_number(node[key])}" for key, sign in _BOUNDS if key in node]
    for low, high, what in _COUNTS:
        lo, hi = node.get(low), node.get(high)
        if lo is not None and lo == hi:
            out.append(f"exactly {lo} {what}{'s' if lo != 1 else ''}")
            continue
        if lo is not None:
            out.append(f"at least {lo} {what}{'s' if lo != 1 else ''}")
        if hi is not None:
            out.append(f"at most {hi} {what}{'s' if hi != 1 else ''}")
    if node.get("uniqueItems"):
        out.append("no duplicates")
    if "multipleOf" in node:
        out.append(f"a multiple of {_number(node['multipleOf'])}")
    if "pattern" in node:
        out.append(f"matches {_code(node['pattern'])}")
    if "format" in node:
        out.append(f"format {node['format']}")
    if isinstance(node.get("not"), dict) and "const" in node["not"]:
        out.append(f"not {_value(node['not']['const'])}")
    return out


def _number(value: Any) -> str:
    return json.dumps(value)


def _default(prop: Node) -> str:
    if "default" not in prop:
        return "—"
    value = prop["default"]
    if value in ([], {}):
        return "empty"
    if isinstance(value, dict) and prop.get("properties"):
        return "its keys' defaults"
    return _value(value)


def _title(variant: Node) -> str:
    """A variant's name: the key that tells it apart (``kind: file``), else its title."""
    for key, prop in (variant.get("properties") or {}).items():
        if "const" in prop:
            return f"{key}: {prop['const']}"
        if len(prop.get("enum") or ()) == 1:
            return f"{key}: {prop['enum'][0]}"
    return str(variant.get("title", "variant"))


# --- rules that depend on another key's value -----------------------------------------------


def _condition(rule: Node) -> tuple[str, Any]:
    """The key path and value of an ``if`` that tests one key for one value."""
    path, node = [], rule
    while "const" not in node:
        props = node.get("properties")
        if not isinstance(props, dict) or len(props) != 1:
            raise ValueError(f"paramsdoc cannot describe the condition {json.dumps(rule)}")
        ((key, node),) = props.items()
        path.append(key)
    return ".".join(path), node["const"]


def _effects(node: Node, path: str, out: dict[str, list[str]]) -> None:
    """What a ``then`` requires, per key path, into ``out``."""
    for name in node.get("required") or ():
        out.setdefault(f"{path}.{name}".lstrip("."), []).append("required")
    for name, sub in (node.get("properties") or {}).items():
        _effects(sub, f"{path}.{name}".lstrip("."), out)
    text = _effect(node, path, out)
    if text:
        out.setdefault(path, []).append(text)


def _effect(node: Node, path: str, out: dict[str, list[str]]) -> str | None:
    """What ``node`` allows at ``path`` (None: anything; nested keys go to ``out``)."""
    if node.get("maxProperties") == 0 and set(node) <= {"maxProperties", "type"}:
        return "an empty mapping"
    texts = []
    for key, value in node.items():
        if key in ("properties", "required"):
            continue
        if key == "enum":
            values = [v for v in value if v is not None]
            null = f" (or {_code('null')})" if None in value else ""
            texts.append(_one_of(values) + null)
        elif key == "const":
            texts.append(_value(value))
        elif key == "type" and value == "null":
            texts.append(f"only {_code('null')}")
        elif key == "type":
            kinds = value if isinstance(value, list) else [value]
            texts.append(_join([_code("null") if k == "null" else k for k in kinds]))
        elif key in ("items", "propertyNames"):
            inner = _effect(value, f"{path}[]" if key == "items" else path, out)
            if inner:
                texts.append(f"{'each item' if key == 'items' else 'keys:'} {inner}")
        elif key == "anyOf":
            options = []
            for option in value:
                if set(option) <= {"properties", "required"}:
                    _effects(option, path, out)
                    return None  # a mapping whose keys are checked: its own rows say how
                null = option == {"type": "null"}
                options.append(_code("null") if null else _effect(option, path, out))
            texts.append(_join([o for o in options if o]))
        elif _own_constraints({key: value}):
            texts += _own_constraints({key: value})
        else:
            raise ValueError(f"paramsdoc cannot describe {key!r} in a rule on {path!r}")
    return " ".join(texts) or None


def _rule_tables(schema: Node, order: list[str]) -> dict[str, list[str]]:
    """Per top-level key, the lines of a table of the keys whose allowed values depend on the
    value of a key in that section (``objectives.task``), rows in page ``order``."""
    by_condition: dict[str, dict[Any, dict[str, list[str]]]] = {}
    for rule in schema.get("allOf") or ():
        if set(rule) - {"if", "then"}:
            raise ValueError(f"paramsdoc cannot describe the rule {json.dumps(rule)}")
        path, value = _condition(rule["if"])
        effects: dict[str, list[str]] = {}
        _effects(rule.get("then") or {}, "", effects)
        by_condition.setdefault(path, {})[value] = effects
    tables: dict[str, list[str]] = {}
    for path, cases in by_condition.items():
        keys = list(dict.fromkeys(k for effects in cases.values() for k in effects))
        keys.sort(key=lambda k: order.index(k) if k in order else len(order))
        lines = [
            "",
            f"### Keys that depend on `{path}`",
            "",
            f"What some keys accept for each value of `{path}`, besides what their rows above"
            " say (—: only that).",
            "",
            "| key | " + " | ".join(_cell(_value(v)) for v in cases) + " |",
            "|---|" + "---|" * len(cases),
        ]
        for key in keys:
            cells = [_code(key)] + ["; ".join(e.get(key, [])) or "—" for e in cases.values()]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        tables.setdefault(path.split(".", 1)[0], []).extend(lines)
    return tables


# --- the page -------------------------------------------------------------------------------


def markdown(schema: Node | None = None) -> str:
    """The reference page of ``schema`` (by default params.yaml's, :func:`json_schema`)."""
    schema = json_schema() if schema is None else schema
    doc = _Schema(schema)
    required = set(schema.get("required") or [])
    sections: dict[str, list[str]] = {}
    for key, prop in (schema.get("properties") or {}).items():
        model = doc.resolve(prop)
        lines = ["", f"## {key}", ""]
        if model.get("description"):
            lines += [_paragraph(model["description"]), ""]
        if key in required:
            lines.append("Required.")
        else:
            lines.append("Optional: left out, each of its keys takes its default.")
        variants: list[_Variant] = []
        lines += ["", *_HEADER, *doc.rows(model, f"{key}.", variants)]
        for variant in variants:
            lines += ["", f"### `{variant.path}` with {_code(variant.title)}", ""]
            if variant.about:
                lines += [_paragraph(variant.about), ""]
            lines += [*_HEADER, *variant.rows]
        sections[key] = lines
    for key, lines in _rule_tables(schema, doc.paths).items():
        sections.setdefault(key, []).extend(lines)
    page = [
        "# params.yaml reference",
        "",
        "Every key of `params.yaml`: its type, its default, the values or range it accepts and",
        "what it does. This page is generated from the settings model in `mlcycle.config`",
        "(`src/mlcycle/config.py`) by `python -m mlcycle.paramsdoc > docs/reference/params.md`,",
        "and a test fails when it is out of date: change the model, then regenerate the page.",
        "`dvc exp run -S key=value` changes one key for one experiment; editors that read",
        "`params.schema.json` (the same model) complete and check the file as you type.",
    ]
    if schema.get("description"):
        page += ["", _paragraph(schema["description"])]
    page += [
        "",
        "In the key column, `a.b` is key `b` inside mapping `a`, `a[].b` is key `b` of each item",
        "of list `a`, and `a.<name>.b` is key `b` under each name of mapping `a` (the row of `a`",
        "says which names it takes). A list or mapping written as `null`, or with nothing under",
        "it, is empty. *required*: the key must be given wherever its mapping is.",
    ]
    for lines in sections.values():
        page += lines
    return "\n".join(page) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
