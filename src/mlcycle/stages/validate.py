"""Stage `validate`: check the snapshot against schema.yaml before anything learns from it.

Inputs: data/raw/snapshot.parquet; schema.yaml; params `validate`, `objectives.target`.
Outputs: metrics/validation.json (passed, counts by severity, every finding), always written;
reports/validation.md (the same as a table, for people). An error-level finding prints the table
and exits with status 1, so `dvc repro` stops here and the last good model stays in place.
"""

from __future__ import annotations

import pandas as pd

from mlcycle import config
from mlcycle.io import write_json, write_text
from mlcycle.schema import (
    BOOKKEEPING_COLUMNS,
    SchemaError,
    check,
    format_table,
    load_schema,
    markdown_report,
    summarize,
)
from mlcycle.stages import METRICS, SNAPSHOT, log, run

VALIDATION = f"{METRICS}/validation.json"
REPORT = "reports/validation.md"  # git-ignored, for people; not a DVC output


class ValidationFailed(ValueError):
    """The snapshot broke a rule of the schema whose severity is error."""


def main() -> None:
    params = config.load()
    settings = params.validate
    schema = load_schema(settings.schema)
    target = params.objectives.target
    if schema.target != target:
        raise SchemaError(
            f"{settings.schema}: target is {schema.target!r} but objectives.target in "
            f"params.yaml is {target!r}; make them agree"
        )
    snapshot = pd.read_parquet(SNAPSHOT)
    findings = check(
        snapshot,
        schema,
        severity=settings.severity,
        max_null_rate=settings.max_null_rate,
        examples=settings.examples,
        ignore=BOOKKEEPING_COLUMNS,
        max_unseen_share=settings.max_unseen_share,
    )
    columns = sum(1 for c in snapshot.columns if c not in BOOKKEEPING_COLUMNS)
    doc = summarize(findings, len(snapshot), columns, settings.schema)
    write_json(VALIDATION, doc)
    write_text(REPORT, markdown_report(doc, findings))
    counts = doc["counts"]
    log(
        "validate",
        f"{len(snapshot)} rows, {columns} columns: {counts['error']} error(s), "
        f"{counts['warning']} warning(s) -> {VALIDATION}, {REPORT}",
    )
    if findings:
        log("validate", "findings:\n" + format_table(findings))
    if not doc["passed"]:
        errors = [f for f in findings if f.severity == "error"]
        raise ValidationFailed(
            f"the snapshot fails {len(errors)} rule(s) of {settings.schema}:\n  "
            + "\n  ".join(f.message for f in errors)
            + f"\nSee {REPORT}. Fix the data, or if the data is right, edit {settings.schema} "
            "(or validate.severity in params.yaml)."
        )


if __name__ == "__main__":
    run("validate", main)
