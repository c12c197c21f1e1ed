"""Stage `validate`: check the snapshot against schema.yaml before anything learns from it.

Inputs: data/raw/snapshot.parquet; schema.yaml; params `validate`, `objectives`, `prepare`,
`features`, `train.cv_folds` (the settings checked against the data).
Outputs: metrics/validation.json (passed, counts by severity, every finding, under
``features`` warnings about features that look like identifiers or free text, and under
``leaks`` the features that alone nearly determine the target or one of its classes, with
their out-of-fold scores: :mod:`mlcycle.schema.leaks`);
reports/validation.md (the same as a table, for people) and reports/validation.json, always
written. An error-level finding prints the table and exits with status 1, so `dvc repro` stops
here, the last good model stays in place and metrics/validation.json keeps the last passing
run's findings.
"""

from __future__ import annotations

from collections.abc import Sequence

from mlcycle import config, tasks
from mlcycle.engines import Engine, open_engine
from mlcycle.engines.validate import Checked, check_snapshot
from mlcycle.io import write_json, write_text
from mlcycle.preflight import fold_problems, settings_problems
from mlcycle.schema import Schema, SchemaError, load_schema
from mlcycle.schema.leaks import Leak, leak_warnings
from mlcycle.schema.report import format_table, markdown_report, summarize
from mlcycle.schema.roles import feature_warnings
from mlcycle.stages import METRICS, SNAPSHOT, log, run

VALIDATION = f"{METRICS}/validation.json"
REPORT = "reports/validation.md"  # git-ignored, for people; not a DVC output
REPORT_JSON = "reports/validation.json"  # the same document as the metrics, failed runs too


class ValidationFailed(ValueError):
    """The snapshot broke a rule of the schema whose severity is error."""


def stage_schema(params: config.Params) -> Schema:
    """schema.yaml, whose target must be the objectives' target."""
    settings = params.validate
    schema = load_schema(settings.schema)
    target = params.objectives.target
    if schema.target != target:
        raise SchemaError(
            f"{settings.schema}: target is {schema.target!r} but objectives.target in "
            f"params.yaml is {target!r}; make them agree"
        )
    return schema


def main() -> None:
    params = config.load()
    with open_engine(params.engine, lambda msg: log("validate", msg)) as engine:
        execute(params, engine)


def execute(params: config.Params, engine: Engine) -> None:
    """Check the snapshot against the schema and the settings against the data; write."""
    schema = stage_schema(params)
    obj = params.objectives
    classification = tasks.get(obj.task).classification
    checked = check_snapshot(engine, SNAPSHOT, schema, params.validate, obj.target, classification)
    # Settings that name columns or values (and train.cv_folds), checked against the data.
    problems = settings_problems(params, checked.sample, schema)
    problems += fold_problems(params, checked.classes)
    write(params, problems, checked, looks_wrong(params, checked), leaks(params, checked))


def looks_wrong(params: config.Params, checked: Checked) -> list[str]:
    """Features that look like identifiers or free text (:mod:`mlcycle.schema.roles`, as
    ``mlcycle init`` excludes them), judged on the snapshot (on Dask, its sample): columns
    added after init, or put back by hand. Warnings: they do not stop the run."""
    features = params.features
    excluded = [*features.exclude, *params.prepare.drop_columns]
    return feature_warnings(checked.sample, params.objectives.target, excluded, features.include)


def leaks(params: config.Params, checked: Checked) -> list[Leak]:
    """Features that alone nearly determine the target or one of its classes
    (:mod:`mlcycle.schema.leaks`, as ``mlcycle init`` says them), judged on the snapshot (on
    Dask, the same sample as :func:`looks_wrong`). Warnings: a leak is a question about how
    the column was recorded, which only the user can answer."""
    features, obj = params.features, params.objectives
    excluded = [*features.exclude, *params.prepare.drop_columns]
    classification = tasks.get(obj.task).classification
    return leak_warnings(checked.sample, obj.target, classification, excluded, features.include)


def write(
    params: config.Params,
    problems: list[str],
    checked: Checked,
    warnings: Sequence[str] = (),
    leaked: Sequence[Leak] = (),
) -> None:
    """Write the metrics and reports, log the findings, the ``warnings`` about features
    (:func:`looks_wrong`) and the features that may leak the target (:func:`leaks`), and fail
    on errors (either engine)."""
    settings = params.validate
    findings, rows, columns = checked.findings, checked.rows, checked.columns
    doc = summarize(findings, rows, columns, settings.schema)
    if problems:
        doc.update(passed=False, settings=problems)
    if warnings:
        doc["features"] = list(warnings)
    if leaked:
        doc["leaks"] = [
            {"column": k.column, "class": k.target_class, "score": k.score, "message": k.message}
            for k in leaked
        ]
    report = markdown_report(doc, findings)
    if problems:
        report += "\n## Settings that do not fit the data\n\n"
        report += "".join(f"- {p}\n" for p in problems)
    if warnings:
        report += "\n## Features that look like identifiers or free text (warnings)\n\n"
        report += "".join(f"- {w}\n" for w in warnings)
    if leaked:
        report += "\n## Features that alone nearly determine the target (possible leaks)\n\n"
        report += "".join(f"- {k.message}\n" for k in leaked)
    write_json(REPORT_JSON, doc)
    write_text(REPORT, report)
    write_json(VALIDATION, doc)  # put back as it was if the stage fails (stages.run)
    counts = doc["counts"]
    log(
        "validate",
        f"{rows} rows, {columns} columns: {counts['error']} error(s), "
        f"{counts['warning']} warning(s) -> {VALIDATION if doc['passed'] else REPORT_JSON}, "
        f"{REPORT}",
    )
    if findings:
        log("validate", "findings:\n" + format_table(findings))
    if problems:
        log("validate", "settings that do not fit the data:\n  " + "\n  ".join(problems))
    if warnings:
        log("validate", "warning: features that look wrong:\n  " + "\n  ".join(warnings))
    if leaked:
        lines = "\n  ".join(k.message for k in leaked)
        log("validate", f"warning: features that may leak the target:\n  {lines}")
    if not doc["passed"]:
        errors = [f for f in findings if f.severity == "error"]
        lines = [f"params.yaml {p}" for p in problems] + [f.message for f in errors]
        what = [f"{len(problems)} setting(s) do not fit the data"] if problems else []
        if errors:
            what.append(f"the snapshot fails {len(errors)} rule(s) of {settings.schema}")
        raise ValidationFailed(
            " and ".join(what)
            + ":\n  "
            + "\n  ".join(lines)
            + f"\nSee {REPORT} ({REPORT_JSON}). Fix the data, or if the data is right, edit "
            + f"{settings.schema} "
            "(or validate.severity in params.yaml)."
        )


if __name__ == "__main__":
    run("validate", main)
