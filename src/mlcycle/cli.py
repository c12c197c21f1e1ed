"""The `mlcycle` command: set a project up for your data; serve, predict and monitor with a
model bundle; draft the schema; release and trace models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_BUNDLE = "models/bundle"
DEFAULT_REFERENCE = "data/prepared/train.parquet"
DEFAULT_SNAPSHOT = "data/raw/snapshot.parquet"
DEFAULT_SCHEMA = "schema.yaml"


def _err(message: str) -> int:
    print(f"mlcycle: error: {message}", file=sys.stderr)
    return 1


def model_name(params: str = "params.yaml") -> str:
    """The model's registry name: `package.name` in params.yaml."""
    from mlcycle import config

    raw = config.read_raw(params) if Path(params).exists() else {}
    return (raw.get("package") or {}).get("name", "model")


def bundle_path(args: argparse.Namespace) -> Path:
    """The bundle to load: --bundle if given, else a registered version (--version), else the
    production version from the registry's git tags."""
    from mlcycle import registry

    if args.bundle:
        return Path(args.bundle)
    v = registry.resolve(Path.cwd(), model_name(), args.version)
    print(f"model {v.name}@{v.version} (commit {v.commit[:12]})", file=sys.stderr)
    return registry.fetch_bundle(Path.cwd(), v)


def cmd_release(args: argparse.Namespace) -> int:
    """Register HEAD's model as the next version and promote it to production."""
    from mlcycle import registry

    name = model_name()
    version = registry.release(Path.cwd(), name, bump=args.bump)
    prod_tag = registry.production_tag(Path.cwd(), name)
    print(
        f"released {name}@{version} to {registry.PROD} (tags {name}@{version}, {prod_tag}); "
        "share with `git push --tags` and `dvc push`"
    )
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    """Print where the production (or a named) model came from."""
    import json

    from mlcycle import registry

    v = registry.resolve(Path.cwd(), model_name(), args.version)
    info = registry.lineage(Path.cwd(), v)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    print(f"{info['model']}  commit {info['commit']}  ({info['commit_time']})")
    print("data:")
    for path, digest in info["data"].items():
        print(f"  {path}  {digest}")
    metrics = info.get("metrics") or {}
    print(
        "metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    )
    gate = info.get("gate") or {}
    print("gate: " + ("passed" if gate.get("passed") else "not passed"))
    for reason in gate.get("reasons", []):
        print(f"  {reason}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Verify the bundle, then serve it with uvicorn (several worker processes by default)."""
    from mlcycle.serve.app import ServeSettings
    from mlcycle.serve.runner import DEFAULT_LOG_URL, default_workers, serve
    from mlcycle.sources import redact_url

    path = bundle_path(args)
    version = args.version
    if not args.bundle:
        from mlcycle import registry

        version = registry.resolve(Path.cwd(), model_name(), args.version).version
    workers = args.workers or default_workers()
    log_url = None if args.no_log else (args.log_url or DEFAULT_LOG_URL)
    settings = ServeSettings(
        max_body_bytes=args.max_body_bytes,
        body_timeout=args.body_timeout,
        max_records=args.max_records,
        bundle_dir=str(Path(args.bundle).resolve()) if args.bundle else None,
        project=str(Path.cwd()),
        model_name=None if args.bundle else model_name(),
        model_version=version,
    )
    print(
        f"serving {path} on http://{args.host}:{args.port} with {workers} worker(s); "
        f"prediction log: {redact_url(log_url) if log_url else 'off'}",
        file=sys.stderr,
    )
    serve(
        path,
        version=version,
        host=args.host,
        port=args.port,
        workers=workers,
        log_url=log_url,
        log_when_full=args.log_when_full,
        settings=settings,
        log_level=args.log_level,
    )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Score a CSV/Parquet/JSON Lines file into a file of predictions, chunk by chunk: memory
    stays flat however large the file, and a failure leaves no partial output."""
    from mlcycle.batch import predict_file
    from mlcycle.bundle import load_bundle

    bundle = load_bundle(bundle_path(args))
    result = predict_file(
        bundle, args.input, args.output, chunk_rows=args.chunk_rows, progress=not args.quiet
    )
    for note in result.notes:
        print(f"mlcycle: note: {note}", file=sys.stderr)
    print(
        f"wrote {result.rows} predictions to {args.output} (model {bundle.model_id}) "
        f"in {result.seconds:.1f} s",
        file=sys.stderr,
    )
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    """Attach true labels from a file to the logged predictions (by request id and row)."""
    from mlcycle.predlog import PredictionLogError, attach_labels, labels_from_file
    from mlcycle.serve.runner import DEFAULT_LOG_URL
    from mlcycle.sources import redact_url

    triples = labels_from_file(args.file)
    bundle_dir = Path(args.bundle or DEFAULT_BUNDLE)
    if (bundle_dir / "signature.json").is_file() or args.bundle:
        from mlcycle.bundle import load_bundle

        sig = load_bundle(bundle_dir).signature
        if sig.is_classification:
            classes = set(sig.classes)
            bad = [i for i, (_, _, label) in enumerate(triples) if label not in classes]
            if bad:
                shown = sorted({triples[i][2] for i in bad})[:5]
                raise ValueError(
                    f"{args.file}: {len(bad)} label(s) are not classes of the model "
                    f"({sorted(classes)}): {shown}, first at record(s) {bad[:5]}"
                )
    url = args.log_url or DEFAULT_LOG_URL
    try:
        matched = attach_labels(url, triples)
    except PredictionLogError as exc:
        return _err(str(exc))
    print(
        f"{len(triples)} label(s) read, {matched} logged record(s) labelled in {redact_url(url)}",
        file=sys.stderr,
    )
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    """Compare new records with the training data, feature by feature."""
    from mlcycle import config, drift
    from mlcycle.bundle import load_bundle
    from mlcycle.io import read_table, write_json, write_text

    cfg = (
        config.parse_monitor(config.read_raw(args.params))
        if Path(args.params).exists()
        else config.MonitorConfig(alpha=0.01, psi_threshold=0.1, bins=10)
    )
    alpha = args.alpha if args.alpha is not None else cfg.alpha
    psi_threshold = args.psi_threshold if args.psi_threshold is not None else cfg.psi_threshold
    bundle = load_bundle(args.bundle)
    reference = read_table(args.reference)
    current = read_table(args.new)
    results = drift.detect(reference, current, bundle.signature, alpha, psi_threshold, cfg.bins)
    doc = drift.summary(results, len(reference), len(current))
    doc.update({"alpha": alpha, "psi_threshold": psi_threshold, "model": bundle.model_id})
    out = Path(args.out)
    write_json(out / "drift.json", doc)
    write_text(out / "drift.md", drift.markdown_report(doc, alpha, psi_threshold))
    drifted = doc["drifted_features"]
    print(
        f"{len(drifted)} of {len(results)} features drifted: {', '.join(drifted) or 'none'}; "
        f"report in {out / 'drift.md'}"
    )
    return 3 if drifted and args.fail_on_drift else 0


def cmd_schema_infer(args: argparse.Namespace) -> int:
    """Draft schema.yaml from a snapshot, for a person to review; never overwrites by accident."""
    from mlcycle import config, schema
    from mlcycle.io import read_table, write_text

    out = Path(args.out)
    if out.exists() and not args.force:
        return _err(f"{out} exists; it may hold reviewed edits. Pass --force to overwrite it")
    raw = config.read_raw(args.params) if args.target is None or Path(args.params).exists() else {}
    objectives = raw.get("objectives") or {}
    target = args.target or config.parse_objectives(raw).target
    # A regression target gets no list of allowed values nor a range: a new price is no error.
    regression = objectives.get("task") == "regression" and target == objectives.get("target")
    frame = read_table(args.snapshot)
    draft = schema.infer_schema(
        frame, target, ignore=schema.BOOKKEEPING_COLUMNS, target_values=not regression
    )
    header = schema.DRAFT_HEADER.format(snapshot=args.snapshot)
    write_text(out, schema.dump_schema(draft, header, schema.observed_notes(frame, draft)))
    print(
        f"wrote a draft schema of {len(draft.columns)} columns (target {target!r}) to {out}; "
        "review its types, ranges and categories before committing it",
        file=sys.stderr,
    )
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    """Set the project up for a data file: params.yaml and a draft schema.yaml, decided in
    full before anything is written."""
    from mlcycle import scaffold

    root = Path.cwd()
    plan = scaffold.plan(root, Path(args.data), args.target, args.task, args.name)
    for line in scaffold.write(root, plan, force=args.force):
        print(line, file=sys.stderr)
    for line in plan.messages:
        print(line, file=sys.stderr)
    print(
        f"next: review {plan.schema_path} and params.yaml (objectives.minimum above all), "
        "then run `dvc repro`",
        file=sys.stderr,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlcycle", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="set the project up for your own data file")
    p.add_argument("--data", required=True, help="CSV, Parquet or JSON Lines (optionally .gz)")
    p.add_argument("--target", required=True, help="the column to predict")
    p.add_argument(
        "--task",
        choices=["binary_classification", "multiclass_classification", "regression"],
        help="default: inferred from the target (text or few whole numbers: classes)",
    )
    p.add_argument("--name", help="the model's registry name (default: <file stem>-model)")
    p.add_argument(
        "--force", action="store_true", help="replace an existing params.yaml and schema.yaml"
    )
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("serve", help="serve the model bundle as a REST API")
    p.add_argument("--bundle", help="a bundle directory (default: the production version)")
    p.add_argument("--version", help="a registered version, e.g. v0.1.0")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--log-level", default="info")
    p.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: one per core)"
    )
    p.add_argument(
        "--log-url",
        help="SQLAlchemy URL of the prediction log (default: sqlite:///logs/predictions.db)",
    )
    p.add_argument("--no-log", action="store_true", help="do not log predictions")
    p.add_argument(
        "--log-when-full",
        choices=["reject", "block"],
        default="reject",
        help="when the log cannot keep up: answer 503 (default) or wait for room",
    )
    p.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024)
    p.add_argument(
        "--body-timeout", type=float, default=10.0, help="seconds a client has to send its body"
    )
    p.add_argument("--max-records", type=int, default=10_000, help="records per request")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("predict", help="score a file of records")
    p.add_argument("input", help="CSV, Parquet or JSON Lines file of records (optionally .gz)")
    p.add_argument(
        "output",
        help="where to write the records with their predictions (format by suffix, as input)",
    )
    p.add_argument("--bundle", help="a bundle directory (default: the production version)")
    p.add_argument("--version", help="a registered version, e.g. v0.1.0")
    p.add_argument(
        "--chunk-rows",
        type=int,
        default=100_000,
        help="records read, scored and written at a time (memory grows with it; default 100000)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("feedback", help="attach true labels to logged predictions")
    p.add_argument(
        "file", help="CSV, Parquet or JSON Lines with request_id, label and optionally row"
    )
    p.add_argument(
        "--log-url",
        help="SQLAlchemy URL of the prediction log (default: sqlite:///logs/predictions.db)",
    )
    p.add_argument(
        "--bundle", help="check the labels against this bundle's classes (default: models/bundle)"
    )
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser("monitor", help="detect drift of new records against the training data")
    p.add_argument("new", help="CSV, Parquet or JSON Lines file of new records")
    p.add_argument("--reference", default=DEFAULT_REFERENCE)
    p.add_argument("--bundle", default=DEFAULT_BUNDLE)
    p.add_argument("--out", default="reports/monitor")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--alpha", type=float)
    p.add_argument("--psi-threshold", type=float)
    p.add_argument(
        "--fail-on-drift", action="store_true", help="exit with status 3 if a feature drifted"
    )
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("release", help="register HEAD's model (gate passed) and promote to prod")
    p.add_argument("--bump", choices=["patch", "minor", "major"], default="patch")
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("lineage", help="where the production (or a named) model came from")
    p.add_argument("--version", help="a registered version, e.g. v0.1.0")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_lineage)

    p = sub.add_parser("schema", help="work with the data schema (schema.yaml)")
    schema_sub = p.add_subparsers(dest="schema_command", required=True)
    p = schema_sub.add_parser("infer", help="draft a schema from a data snapshot")
    p.add_argument(
        "--snapshot",
        default=DEFAULT_SNAPSHOT,
        help="data to draft from (CSV, Parquet or JSON Lines)",
    )
    p.add_argument("--out", default=DEFAULT_SCHEMA, help="where to write the draft")
    p.add_argument("--params", default="params.yaml", help="where objectives.target is read")
    p.add_argument("--target", help="the target column (default: objectives.target)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.set_defaults(func=cmd_schema_infer)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mlcycle` command."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        return _err(str(exc))


if __name__ == "__main__":
    sys.exit(main())
