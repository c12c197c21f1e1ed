"""The validation metrics document and reports/validation.md, from the findings."""

from __future__ import annotations

from typing import Any

from mlcycle.config import SEVERITIES
from mlcycle.schema.findings import Finding, render


def summarize(
    findings: list[Finding], rows: int, columns: int, schema_path: str = "schema.yaml"
) -> dict[str, Any]:
    """The metrics document: passed (no errors), counts by severity and every finding."""
    counts = {level: 0 for level in SEVERITIES if level != "ignore"}
    for f in findings:
        counts[f.severity] = counts.get(f.severity, 0) + 1
    return {
        "passed": counts["error"] == 0,
        "rows": rows,
        "columns": columns,
        "schema": schema_path,
        "counts": counts,
        "findings": [f.as_dict() for f in findings],
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def format_table(findings: list[Finding]) -> str:
    """A Markdown table of findings, padded so it also reads well in a terminal."""
    head = ("severity", "kind", "column", "rows", "expected", "examples")
    body = [
        (
            f.severity,
            f.kind,
            f.column if f.column is not None else "(all columns)",
            f"{f.rows} of {f.total}",
            f.expected,
            ", ".join(render(v) for v in f.examples),
        )
        for f in findings
    ]
    body = [tuple(_cell(c) for c in row) for row in body]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), rule, *(line(r) for r in body)])


def markdown_report(doc: dict[str, Any], findings: list[Finding]) -> str:
    """reports/validation.md: the verdict, the counts and the table of findings."""
    counts = doc["counts"]
    verdict = "passed" if doc["passed"] else "FAILED"
    lines = [
        "# Data validation",
        "",
        f"Snapshot of {doc['rows']} rows and {doc['columns']} columns checked against "
        f"`{doc['schema']}`: **{verdict}** ({counts['error']} error(s), "
        f"{counts['warning']} warning(s)).",
        "",
    ]
    if findings:
        lines += [format_table(findings), "", "Details:", ""]
        lines += [f"- **{f.severity}** `{f.kind}` {f.message}" for f in findings]
    else:
        lines.append("No findings.")
    return "\n".join(lines) + "\n"
