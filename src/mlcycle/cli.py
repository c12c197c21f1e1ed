"""The `mlcycle` command: set a project up for your data; serve, predict and monitor with a
model bundle; draft the schema; release and trace models."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from mlcycle import tasks
from mlcycle.constants import ADMIN_TOKEN_ENV

# Each command imports the modules it uses inside its function: `mlcycle --help` imports this
# module alone (about 0.03 s, `python -X importtime -c "import mlcycle.cli"`), while even
# mlcycle.io or mlcycle.config costs 0.3 to 1 s (pandas, pydantic) and mlcycle.bundle several.

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
    return config.section(raw, "package").name


def version_bundle(version: str | None, params: str = "params.yaml") -> Path:
    """A registered version's bundle (the production version's when ``version`` is None),
    fetched from the registry into models/registry."""
    from mlcycle import registry

    v = registry.resolve(Path.cwd(), model_name(params), version)
    print(f"model {v.name}@{v.version} (commit {v.commit[:12]})", file=sys.stderr)
    return registry.fetch_bundle(Path.cwd(), v)


def bundle_path(args: argparse.Namespace) -> Path:
    """The bundle to load: --bundle if given, else a registered version (--version), else the
    production version from the registry's git tags."""
    return Path(args.bundle) if args.bundle else version_bundle(args.version)


def cmd_release(args: argparse.Namespace) -> int:
    """Register HEAD's model as the next version and promote it to production, or release it
    as the challenger (``--shadow``, ``--canary PCT``); with ``--service``, reload that service
    and undo the release if it does not serve it (a release is a transaction, as in `mlcycle
    retrain --service`)."""
    from mlcycle import registry

    name, root = model_name(), Path.cwd()
    token = os.environ.get(ADMIN_TOKEN_ENV) if args.service else None
    if args.service and not token:
        return _err(
            f"--service {args.service}: set {ADMIN_TOKEN_ENV} to the service's admin token; "
            "nothing was released"
        )
    stage, share = registry.PROD, 0.0
    if args.canary is not None:
        stage, share = registry.CANARY, registry.check_share(args.canary)
    elif args.shadow:
        stage = registry.SHADOW
    how = {"stage": stage, "share": share, "reason": args.reason, "force": args.force}
    version = registry.release(root, name, args.bump, say=print, **how)
    if stage != registry.PROD:
        prod = registry.production(root, name)
        answers = f", answering {share:.0%} of requests" if stage == registry.CANARY else ""
        print(f"released {name}@{version} as {stage}{answers}; {registry.PROD} stays "
              f"{prod.version if prod else 'empty'}. `mlcycle monitor --compare` weighs it, "
              "`mlcycle promote` or `rollback` ends it")  # fmt: skip
        if not token:
            return 0

        def undo() -> str:
            registry.rollback(root, name, f"{args.service} did not take it")
            return f"{name}@{version} was rolled back out of {stage}"

        return _follow(root, name, args.service, str(token), undo)
    prod_tag = registry.production_tag(root, name)
    print(
        f"released {name}@{version} to {registry.PROD} (tags {name}@{version}, {prod_tag}); "
        "share with `git push --tags` and `dvc push`"
    )
    return _reload_released(root, name, version, args.service, str(token)) if token else 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Put the shadow or canary version in production (``--service``: then reload it)."""
    from mlcycle import registry

    name, root = model_name(), Path.cwd()
    token = _admin_token(args.service)
    v = registry.promote(root, name, args.reason)
    print(f"promoted {name}@{v.version} to {registry.PROD}: {args.reason}")
    return _follow(root, name, args.service, token) if args.service else 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """End the shadow or canary release (``--production``: take production's version out,
    the one before it serves again); ``--service``: then reload it."""
    from mlcycle import registry

    name, root = model_name(), Path.cwd()
    token = _admin_token(args.service)
    if args.production:
        prod = registry.production(root, name)
        if prod is None:
            return _err(f"{name} has no version in {registry.PROD}")
        now = registry.withdraw(root, name, prod.version, f"rolled back: {args.reason}")
        print(f"took {name}@{prod.version} out of {registry.PROD}; "
              f"{registry.PROD} is {now.version if now else 'empty'}: {args.reason}")  # fmt: skip
    else:
        c = registry.rollback(root, name, args.reason)
        print(f"rolled back {name}@{c.version.version} ({c.stage}): {args.reason}")
    return _follow(root, name, args.service, token) if args.service else 0


def _admin_token(service: str | None) -> str:
    """The admin token a ``--service`` reload needs (checked before anything is moved)."""
    token = os.environ.get(ADMIN_TOKEN_ENV, "")
    if service and not token:
        raise ValueError(f"--service {service}: set {ADMIN_TOKEN_ENV} to the service's admin token")
    return token


def _follow(
    root: Path, name: str, service: str, token: str, undo: Callable[[], str] | None = None
) -> int:
    """Reload ``service`` and check it serves what the registry now says (production and the
    challenger, :func:`mlcycle.retrain.follow_registry`); if not, ``undo()`` (if given) and
    exit 7 saying what serves what."""
    from mlcycle import retrain

    try:
        body = retrain.follow_registry(root, name, service, token)
    except retrain.RetrainError as exc:
        done = f"; {undo()}" if undo else "; restart the service or reload it again"
        print(f"mlcycle: error: {exc}{done}", file=sys.stderr)
        return exc.code
    challenger = (body.get("challenger") or {}).get("version")
    print(f"{service} serves {name}@{body.get('version')}"
          + (f", challenger {challenger}" if challenger else ""))  # fmt: skip
    return 0


def _reload_released(root: Path, name: str, version: str, service: str, token: str) -> int:
    """Reload ``service`` to the version just released, or take it out of production."""
    from mlcycle import registry, retrain
    from mlcycle.bundle import load_bundle

    result = retrain.Result(
        version=version,
        model_id=load_bundle(root / retrain.BUNDLE).model_id,
        commit=registry.find_version(root, name, version).commit,
    )
    try:
        model = retrain.reload_or_withdraw(root, name, service, token, result)
    except retrain.RetrainError as exc:
        print(f"mlcycle release: error: {exc}", file=sys.stderr)
        return exc.code
    print(f"{service} serves {name}@{model.get('version')} (model {model.get('id')})")
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
    for e in info["stages"]:
        print(
            f"{e['action']} {e['stage']}: {e['time']} by {e['by']}  {e['message'].splitlines()[0]}"
        )
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    """Print the registry's stage moves: who served what, when, and why."""
    import json

    from mlcycle import registry

    events = registry.history(Path.cwd(), model_name())
    if args.json:
        print(json.dumps(events, indent=2))
        return 0
    for e in events:
        where = f" {e['stage']}" if e["stage"] else ""
        reason = e["message"].splitlines()[0] if e["message"] else ""
        print(f"{e['time']}  {e['version']:<10} {e['action']}{where:<8}  {e['by']}  {reason}")
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    """Export labelled production rows into the landing source, `dvc repro`, and on a passed
    gate commit, release and reload the service. Exit status: 0 done; 1 bad input or state
    (nothing changed); 4 too few new labelled rows (nothing changed); 5 the gate rejected the
    model; 6 `dvc repro` failed or did not use the export; 7 the service did not take the new
    model (the release is undone: out of production, or out of its shadow or canary stage)."""
    from mlcycle import retrain

    def say(line: str) -> None:
        print(f"mlcycle retrain: {line}", file=sys.stderr, flush=True)

    try:
        opts = retrain.Options(
            log_url=args.log_url or retrain.DEFAULT_LOG_URL,
            source=args.source,
            since=retrain.parse_time(args.since, "--since"),
            until=retrain.parse_time(args.until, "--until"),
            model_version=args.model_version,
            min_labels=args.min_labels,
            bump=args.bump,
            release=not args.no_release,
            service=args.service,
            token_env=args.token_env,
            dry_run=args.dry_run,
        )
        result = retrain.retrain(Path.cwd(), opts, say=say)
    except retrain.RetrainError as exc:
        print(f"mlcycle retrain: error: {exc}", file=sys.stderr)
        return exc.code
    for note in result.notes:
        say(note)
    by = f"labels by {retrain.authors_text(result.labelled_by)}"
    if opts.dry_run:
        print(f"dry run: {result.rows} row(s) would be exported ({by}); nothing was changed")
    elif result.version:
        print(f"retrained on {result.rows} production row(s) ({by}): released {result.version}")
    else:
        print(f"retrained on {result.rows} production row(s) ({by}): committed {result.commit}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Check the credentials against where the service listens, verify the bundle, then serve
    it with uvicorn (several worker processes by default)."""
    from mlcycle.serve import auth

    try:  # before anything is loaded: a refusal costs nothing
        credentials = auth.from_environment()
    except auth.CredentialsError as exc:
        return _err(str(exc))
    problem = auth.exposure_problem(args.host, credentials, logging=not args.no_log)
    if problem:
        return _err(f"{problem}; see docs/security.md")
    for warning in credentials.warnings:
        print(f"mlcycle: warning: {warning}", file=sys.stderr)

    from mlcycle import signing
    from mlcycle.serve.app import ServeSettings
    from mlcycle.serve.runner import DEFAULT_LOG_URL, default_workers, serve
    from mlcycle.sources import redact_url

    keys_file = signing.trusted_keys_file(args.trusted_keys)
    if keys_file is None:
        print(
            "mlcycle serve: no trusted keys (--trusted-keys or "
            f"{signing.TRUSTED_KEYS_ENV}): bundles are checked for corruption, not for origin",
            file=sys.stderr,
        )
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
        max_header_bytes=args.max_header_bytes,
        max_headers=args.max_headers,
        header_timeout=args.header_timeout,
        max_records=args.max_records,
        max_in_flight=args.max_in_flight,
        max_connections=args.max_connections,
        rate_limit=args.rate_limit,
        rate_burst=args.rate_burst,
        bundle_dir=str(Path(args.bundle).resolve()) if args.bundle else None,
        project=str(Path.cwd()),
        model_name=None if args.bundle else model_name(),
        model_version=version,
        trusted_keys=keys_file,
        shadow_bundle=str(Path(args.shadow_bundle).resolve()) if args.shadow_bundle else None,
        canary_bundle=str(Path(args.canary_bundle).resolve()) if args.canary_bundle else None,
        canary_share=args.canary_share / 100,
        canary_key=args.canary_key,
        shadow_queue=args.shadow_queue,
        shadow_priority=args.shadow_priority,
    )
    log_bounds = _log_bounds(args)
    print(
        f"serving {path} on http://{args.host}:{args.port} with {workers} worker(s); "
        f"prediction log: {redact_url(log_url) if log_url else 'off'}; "
        f"credentials: {credentials.summary()}",
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
        log_bounds=log_bounds,
        settings=settings,
        log_level=args.log_level,
    )
    return 0


def _log_bounds(args: argparse.Namespace) -> dict[str, float | None]:
    """The prediction log's bounds from ``mlcycle serve``'s options (0: none), checked here,
    before any worker starts."""
    bounds = {
        "--log-max-record-bytes": ("max_record_bytes", args.log_max_record_bytes),
        "--log-max-bytes": ("max_bytes", args.log_max_bytes),
        "--log-retention-days": ("retention_days", args.log_retention_days),
    }
    for option, (_, value) in bounds.items():
        if not 0 <= value < float("inf"):
            raise ValueError(f"{option} must be 0 (no bound) or above, got {value}")
    return {name: value or None for name, value in bounds.values()}


def cmd_predict(args: argparse.Namespace) -> int:
    """Score a CSV/Parquet/JSON Lines file (a glob, or a folder of parts) into a file of
    predictions, or into a folder of Parquet parts when the output is a folder, chunk by
    chunk: memory stays flat however large the input, and a failure leaves no partial output."""
    from mlcycle import signing
    from mlcycle.batch import predict_file
    from mlcycle.bundle import load_bundle

    trusted = signing.trusted_keys(signing.trusted_keys_file(args.trusted_keys))
    bundle = load_bundle(bundle_path(args), trusted)
    result = predict_file(
        bundle,
        args.input,
        args.output,
        chunk_rows=args.chunk_rows,
        progress=not args.quiet,
        part_rows=args.part_rows,
    )
    for note in result.notes:
        print(f"mlcycle: note: {note}", file=sys.stderr)
    where = f"{result.parts} part(s) in {args.output}" if result.parts else args.output
    print(
        f"wrote {result.rows} predictions to {where} (model {bundle.model_id}) "
        f"in {result.seconds:.1f} s",
        file=sys.stderr,
    )
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    """Attach true labels from a file to the logged predictions (by request id and row)."""
    from mlcycle.predlog import PredictionLogError, attach_labels, labels_from_file, local_author
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
        attached = attach_labels(url, triples, by=local_author(), overwrite=args.overwrite)
    except PredictionLogError as exc:
        return _err(str(exc))
    kept = (
        f"; {attached.conflicts} kept another label given earlier (--overwrite replaces them)"
        if attached.conflicts
        else ""
    )
    print(
        f"{len(triples)} label(s) read, {attached.matched} logged record(s) labelled "
        f"({attached.changed} changed) in {redact_url(url)}{kept}",
        file=sys.stderr,
    )
    return 1 if attached.conflicts and not attached.matched else 0


def _monitor_settings(args: argparse.Namespace):  # noqa: ANN202 (config is imported late)
    from mlcycle import config

    raw = config.read_raw(args.params) if Path(args.params).exists() else {}
    changes = {k: getattr(args, k) for k in ("alpha", "min_effect") if getattr(args, k) is not None}
    # Validated as params.yaml's own settings are (an --alpha of 5 is refused, named).
    return config.section({**raw, "monitor": {**(raw.get("monitor") or {}), **changes}}, "monitor")


def _monitor_batch(args: argparse.Namespace, bundle) -> tuple:  # noqa: ANN001
    """The batch to judge: a file (scored here) or a window of the prediction log; and the
    whole window of the log (every model's records with --compare; None for a file)."""
    import pandas as pd

    from mlcycle import monitor, predict
    from mlcycle.io import read_table
    from mlcycle.schema import SchemaError

    sig = bundle.signature
    if args.new is not None:
        records = read_table(args.new)
        labels = None
        if sig.target in records.columns:
            labels = records[sig.target].astype(object).where(records[sig.target].notna(), None)
        output, note = None, None
        missing = [c for c in sig.input_columns if c not in records.columns]
        if not missing:
            try:
                output = predict.score(bundle, records).output
            except (SchemaError, ValueError, TypeError) as exc:
                note = f"predictions not judged: the records could not be scored ({exc})"
        window = {"source": "file", "where": str(args.new)}
        return records, output, labels, window, note, args.model_version, None

    from mlcycle.predlog import read_log
    from mlcycle.serve.runner import DEFAULT_LOG_URL
    from mlcycle.sources import redact_url

    url = args.log_url or DEFAULT_LOG_URL
    since, until = (_when(v, f) for v, f in ((args.since, "--since"), (args.until, "--until")))
    model_id = None if (args.all_models or args.model_version) else bundle.model_id
    # --compare reads every model's records of the window (the challenger's too), then judges
    # production's own as monitor does
    whole = read_log(
        url, last=args.last, since=since, until=until,
        model_version=args.model_version, model_id=None if args.compare else model_id,
    )  # fmt: skip
    log = whole[whole["model_id"] == model_id] if args.compare and model_id else whole
    if log.empty:
        scope = f"model {model_id}" if model_id else "any model"
        raise ValueError(
            f"the prediction log {redact_url(str(url))} holds no records of {scope} in this "
            "window" + ("" if args.all_models else " (--all-models: of any model)")
        )
    records, output, labels = monitor.log_batch(log, sig)
    ts = pd.to_datetime(log["ts"])
    window = {
        "source": "log",
        "where": redact_url(str(url)),
        "last": args.last,
        "since": args.since,
        "until": args.until,
        "model_version": args.model_version,
        "model_id": model_id,
        "first_ts": ts.min().isoformat(),
        "last_ts": ts.max().isoformat(),
        # records logged without their inputs (over --log-max-record-bytes): not judged
        "omitted": log.attrs.get("omitted", 0),
    }
    note = None if output is not None else "predictions not judged: outputs of another model"
    versions = log["model_version"].dropna().unique()
    version = args.model_version or (str(versions[0]) if len(versions) == 1 else None)
    return records, output, labels, window, note, version, whole


def _when(value: str | None, flag: str):  # noqa: ANN202
    from datetime import datetime

    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{flag} {value!r} is not an ISO time (e.g. 2026-11-28T09:00)") from None


def cmd_monitor(args: argparse.Namespace) -> int:
    """Judge a batch (a file, or a window of the prediction log) against the served model's
    reference profile: drift of inputs, predictions and labels, KPIs once labels arrived, an
    estimate before; reports, and a line of history."""
    from mlcycle import compare, drift, monitor
    from mlcycle.bundle import load_bundle
    from mlcycle.io import read_table, write_json

    if args.new is not None and (args.log_url or args.last or args.since or args.until):
        raise ValueError(
            "give a file or a log window (--log-url, --last, --since, --until), not both"
        )
    settings = _monitor_settings(args)
    token = _check_compare_options(args)
    # The records of a version are judged against that version's own reference profile;
    # --compare sets the registry's production version against its challenger.
    if args.bundle or not (args.model_version or args.compare):
        bundle_dir = Path(args.bundle or DEFAULT_BUNDLE)
    else:
        bundle_dir = version_bundle(args.model_version, args.params)
    bundle = load_bundle(bundle_dir)
    sig = bundle.signature
    profile = bundle.profile
    if args.reference is not None or profile is None:
        reference = args.reference or DEFAULT_REFERENCE
        if not Path(reference).exists():
            raise ValueError(
                f"bundle {bundle_dir} has no reference profile (packaged by an older mlcycle: "
                f"run `dvc repro` to re-package it) and {reference} does not exist"
            )
        profile = drift.build_profile(read_table(reference), sig, settings.bins)
    records, output, labels, window, note, version, whole = _monitor_batch(args, bundle)
    m = bundle.metadata
    if args.compare and not args.bundle:
        version = _production_version(args.params)
    doc = monitor.run(
        profile,
        sig,
        monitor.objectives_from_bundle(m),
        settings,
        records,
        output,
        labels,
        model={
            "name": m.get("name"),
            "version": version,
            "id": bundle.model_id,
            "bundle": str(bundle_dir),
        },
        window=window,
    )
    if note:
        doc["notes"] = [note]
        print(note, file=sys.stderr)
    comparison, found = None, None
    if args.compare:
        try:
            comparison, found = _compare(args, bundle, whole, profile, settings, doc)
        except compare.NothingToCompare as exc:
            print(f"mlcycle monitor --compare: nothing to compare: {exc}", file=sys.stderr)
    out = _monitor_reports(args, doc, comparison)
    print(f"{monitor.summary_line(doc)}; report in {out / 'monitor.html'}")
    if args.compare:
        if comparison is None:
            return EXIT_NOTHING_TO_COMPARE
        print(compare.summary_line(comparison))
        if args.act:
            code = _act(args, comparison, found, token)
            write_json(out / "compare.json", comparison)  # with what was done
            if code:
                return code
    return 3 if doc["retrain"]["recommended"] and args.fail_on_drift else 0


def _monitor_reports(args: argparse.Namespace, doc: dict, comparison: dict | None) -> Path:
    """Write a monitoring run's reports (JSON, Markdown, HTML; the comparison's beside them)
    into ``--out``, append its history and draw the history's plots when asked; returns
    ``--out``."""
    from mlcycle import compare, monitor
    from mlcycle.io import write_json, write_text
    from mlcycle.monitor_report import html_report

    out = Path(args.out)
    write_json(out / "monitor.json", doc)
    markdown = monitor.markdown_report(doc)
    if comparison:
        write_json(out / "compare.json", comparison)
        markdown += "\n" + compare.markdown(comparison)
    write_text(out / "monitor.md", markdown)
    write_text(out / "monitor.html", html_report(doc, comparison))
    if not args.no_history:
        run_no = monitor.append_history(args.history, doc)
        print(f"history: run {run_no} appended under {args.history}", file=sys.stderr)
    if args.plots:
        from mlcycle.report import draw_plots

        links, problems = draw_plots(Path.cwd(), ["show"], ("Monitoring",), out / "history")
        for problem in problems:
            print(f"history plot not drawn: {problem}", file=sys.stderr)
        print(f"history: {len(links)} plot(s) drawn in {out / 'history'}", file=sys.stderr)
    return out


EXIT_NOTHING_TO_COMPARE = 4  # mlcycle monitor --compare: no challenger, or none of its records


def _check_compare_options(args: argparse.Namespace) -> str:
    """--compare's options checked before any work; the admin token --service needs."""
    if (args.act or args.challenger_bundle) and not args.compare:
        raise ValueError("--act and --challenger-bundle go with --compare")
    if args.service and not args.act:
        raise ValueError("--service reloads the service after --act moved the registry")
    if args.compare and args.new is not None:
        raise ValueError("--compare reads the prediction log (the service logs both models)")
    if args.compare and args.model_version:
        raise ValueError("--compare sets production against its challenger, not --model-version")
    if args.act and args.challenger_bundle:
        raise ValueError("--act moves the registry's challenger, not a --challenger-bundle")
    return _admin_token(args.service)


def _production_version(params: str) -> str | None:
    """The registry's production version (its number), or None when there is none."""
    from mlcycle import registry

    v = registry.production(Path.cwd(), model_name(params))
    return v.version if v else None


def _compare(args: argparse.Namespace, bundle, log, profile, settings, doc):  # noqa: ANN001, ANN202
    """The challenger set against production on the window (:func:`mlcycle.compare.compare`):
    the comparison's document, and the registry's challenger (None with --challenger-bundle)."""
    from mlcycle import compare, config, monitor, registry
    from mlcycle.bundle import load_bundle

    root, name = Path.cwd(), model_name(args.params)
    raw = config.read_raw(args.params) if Path(args.params).exists() else {}
    rollout = config.section(raw, "rollout")
    found = None if args.challenger_bundle else registry.challenger(root, name)
    if args.challenger_bundle:
        challenger_dir = Path(args.challenger_bundle)
    elif found is None:
        raise compare.NothingToCompare(
            f"{name} has no shadow or canary version in the registry (`mlcycle release "
            "--shadow` or `--canary PCT` releases one; --challenger-bundle compares a folder)"
        )
    else:
        challenger_dir = registry.fetch_bundle(root, found.version)
    if log is None:
        raise compare.NothingToCompare("--compare reads the prediction log")
    challenger = load_bundle(challenger_dir)
    m = doc["model"]
    canary = found is not None and found.stage == registry.CANARY
    return compare.compare(
        log,
        bundle.signature,
        compare.Model(bundle.model_id, bundle.decision, m),
        compare.Model(
            challenger.model_id,
            challenger.decision,
            {
                "name": challenger.metadata.get("name"),
                "version": found.version.version if found else None,
                "id": challenger.model_id,
                "bundle": str(challenger_dir),
            },
        ),  # fmt: skip
        monitor.objectives_from_bundle(bundle.metadata),
        rollout,
        stage=found.stage if found else None,
        share=found.share if canary else None,
        profile=profile,
        settings=settings,
        window=doc["window"],
    ), found


def _act(args: argparse.Namespace, comparison: dict, found, token: str) -> int:  # noqa: ANN001
    """Apply the decision: promote or roll back the challenger in the registry with the
    decision's reason, then with --service reload the service and check it follows."""
    from mlcycle import compare, registry

    decision = comparison["decision"]
    outcome = decision["outcome"]
    if outcome == compare.WATCH:
        comparison["acted"] = {"outcome": outcome, "moved": None}
        return 0
    root, name = Path.cwd(), model_name(args.params)
    now = registry.challenger(root, name)
    if now is None or now.version != found.version:  # moved by someone else meanwhile
        raise ValueError(
            f"the registry's challenger changed during the comparison (now "
            f"{now.version.version if now else 'none'}); nothing was done, compare again"
        )
    reason = f"mlcycle monitor --compare: {decision['reason']}"
    if outcome == compare.PROMOTE:
        registry.promote(root, name, reason)
        print(f"promoted {name}@{found.version.version} to {registry.PROD}")
    else:
        registry.rollback(root, name, reason)
        print(f"rolled back {name}@{found.version.version} ({found.stage})")
    comparison["acted"] = {"outcome": outcome, "moved": found.version.version,
                           "service": args.service}  # fmt: skip
    return _follow(root, name, args.service, token) if args.service else 0


def cmd_report(args: argparse.Namespace) -> int:
    """The change between two revisions as a Markdown report (a pull request's comment)."""
    from mlcycle import report
    from mlcycle.io import write_text

    out = Path(args.out)
    text = report.build(Path.cwd(), args.base, args.head, plots_dir=None if args.no_plots else out)
    write_text(out / "report.md", text)
    print(text, end="")
    print(f"report in {out / 'report.md'}", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """The headline figures of the workspace, grouped to fit a terminal."""
    from mlcycle import status

    root = Path.cwd()
    if args.readme:
        readme = Path(args.readme)
        if not readme.is_file():
            return _err(f"no README at {readme}")
        old = readme.read_text(encoding="utf-8")
        new = status.fill_readme(old, status.markdown(root))
        if new != old:
            readme.write_text(new, encoding="utf-8")
        print(f"{readme}: results table {'updated' if new != old else 'already current'}")
        return 0
    if not args.service:
        print(status.markdown(root) if args.markdown else status.text(root), end="")
        return 0
    try:
        row, agrees = status.service_row(root, args.service)
    except status.ServiceError as exc:
        return _err(str(exc))
    print(status.text(root, extra=[row]), end="")
    return 0 if agrees else 3


def cmd_pr_comment(args: argparse.Namespace) -> int:
    """Post the report on the pull request as one comment, edited on later pushes."""
    from mlcycle import prcomment

    path = Path(args.report)
    if not path.is_file():
        return _err(f"no report at {path}: run `mlcycle report --base REV` first")
    try:
        target = prcomment.target_from_env(args.repo, args.pr, args.api_url)
        run_url = args.run_url or prcomment.run_url_from_env()
        done = prcomment.post(path.read_text(encoding="utf-8"), target, run_url)
    except prcomment.CommentError as exc:
        _err(str(exc))
        return 8
    except OSError as exc:  # network: connection refused, DNS, timeout
        _err(f"cannot reach {args.api_url or 'the GitHub API'}: {exc}")
        return 8
    print(f"comment {done['action']}: {done['url'] or done['id']}")
    return 0


def cmd_keys_generate(args: argparse.Namespace) -> int:
    """Write a new signing key (mode 0600, outside the project) and print its public line."""
    from mlcycle import signing

    path = signing.write_signing_key(signing.generate_key(), args.out or signing.DEFAULT_KEY)
    _public_key_out(path, args.name, args.trusted_keys)
    print(
        f"wrote the signing key {path} (mode 0600); releases sign with it once "
        f"{signing.SIGNING_KEY_ENV}={path} is set",
        file=sys.stderr,
    )
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    """Replace the signing key with a new one; the old public key stays trusted until removed."""
    from mlcycle import signing

    path = signing.signing_key_path(args.key)
    old = signing.key_id(signing.load_signing_key(path).public_key())
    signing.write_signing_key(signing.generate_key(), path, replace=True)
    new = _public_key_out(path, args.name, args.trusted_keys)
    print(
        f"rotated {path}: key {new} replaces key {old}, whose private key is gone. Add the new "
        f"public line to every trusted keys file ({signing.TRUSTED_KEYS_ENV}) beside the old "
        "one, sign the versions you may still serve with `mlcycle keys sign VERSION`, then "
        f"remove key {old}'s line (versions signed by it alone are refused from then on)",
        file=sys.stderr,
    )
    return 0


def _public_key_out(path: Path, name: str | None, trusted_keys: str | None) -> str:
    """Print the public line of the key at ``path`` (also written to ``path``.pub, appended to
    ``trusted_keys`` if given); returns its key id."""
    from datetime import date

    from mlcycle import signing

    public = signing.load_signing_key(path).public_key()
    line = signing.public_line(public, name or f"mlcycle-{date.today().isoformat()}")
    path.with_name(f"{path.name}.pub").write_text(line + "\n", encoding="utf-8")
    if trusted_keys:
        with open(trusted_keys, "a", encoding="utf-8") as out:
            out.write(line + "\n")
        print(f"appended the public key to {trusted_keys}", file=sys.stderr)
    print(line)
    return signing.key_id(public)


def cmd_keys_sign(args: argparse.Namespace) -> int:
    """Sign a released version with the current signing key (after a rotation, say)."""
    from mlcycle import registry, signing

    path = signing.signing_key_path(args.key)
    key = signing.load_signing_key(path)
    v = registry.find_version(Path.cwd(), model_name(), args.version)
    tag = registry.sign_version(Path.cwd(), v, key)
    print(f"signed {v.name}@{v.version} with key {signing.key_id(key.public_key())} (tag {tag})")
    return 0


def cmd_schema_infer(args: argparse.Namespace) -> int:
    """Draft schema.yaml from a snapshot, for a person to review; never overwrites by accident."""
    from mlcycle import config
    from mlcycle.io import read_table, write_text
    from mlcycle.schema.infer import draft_text

    out = Path(args.out)
    if out.exists() and not args.force:
        return _err(f"{out} exists; it may hold reviewed edits. Pass --force to overwrite it")
    raw = config.read_raw(args.params) if args.target is None or Path(args.params).exists() else {}
    objectives = raw.get("objectives") or {}
    target = args.target or config.section(raw, "objectives").target
    # A regression target gets no list of allowed values nor a range: a new price is no error.
    regression = objectives.get("task") == "regression" and target == objectives.get("target")
    frame = read_table(args.snapshot)
    # The project's limit on missing values (a column above it gets its own in the draft).
    settings = config.section(raw, "validate") if "validate" in raw else config.ValidateConfig()
    draft, text = draft_text(frame, target, args.snapshot, target_values=not regression,
                             max_null_rate=settings.max_null_rate)  # fmt: skip
    write_text(out, text)
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


Subparsers = argparse._SubParsersAction  # what add_subparsers returns


def _log_url(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log-url",
        help="SQLAlchemy URL of the prediction log (default: sqlite:///logs/predictions.db)",
    )


def _time_window(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", help="records logged at or after this ISO time (UTC if naive)")
    p.add_argument("--until", help="records logged before this ISO time")


def _bundle_or_version(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", help="a bundle directory (default: the production version)")
    p.add_argument("--version", help="a registered version, e.g. v0.1.0")


def _trusted_keys(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trusted-keys",
        metavar="FILE",
        help="public keys ('ed25519 <base64> [name]' lines): refuse a bundle none of them "
        "signed (default: $MLCYCLE_TRUSTED_KEYS; neither: no signature check)",
    )


def _add_init(sub: Subparsers) -> None:
    p = sub.add_parser("init", help="set the project up for your own data file")
    p.add_argument("--data", required=True, help="CSV, Parquet or JSON Lines (optionally .gz)")
    p.add_argument("--target", required=True, help="the column to predict")
    p.add_argument(
        "--task",
        choices=list(tasks.TASKS),
        help="default: inferred from the target (text or few whole numbers: classes)",
    )
    p.add_argument("--name", help="the model's registry name (default: <file stem>-model)")
    p.add_argument(
        "--force", action="store_true", help="replace an existing params.yaml and schema.yaml"
    )
    p.set_defaults(func=cmd_init)


def _log_bounds_options(p: argparse.ArgumentParser) -> None:
    """``mlcycle serve``'s bounds of the prediction log (:func:`_log_bounds` checks them)."""
    p.add_argument(
        "--log-max-record-bytes",
        type=int,
        default=1024 * 1024,
        help="bytes of one request's inputs the log stores; past it the request is scored and "
        "answered, and logged with a marker in place of its inputs (default: 1 MiB; 0: no limit)",
    )
    p.add_argument(
        "--log-max-bytes",
        type=int,
        default=1024**3,
        help="bytes the log may take (as the database reports them); past it the oldest "
        "predictions are deleted, with their labels (default: 1 GiB; 0: no limit)",
    )
    p.add_argument(
        "--log-retention-days",
        type=float,
        default=0,
        help="days a prediction is kept; older ones are deleted, with their labels (default: "
        "0, kept until the size bound needs the room)",
    )


def _add_serve(sub: Subparsers) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the model bundle as a REST API",
        description="Serve the model bundle as a REST API. Credentials (named tokens with "
        "scopes predict, feedback, admin) come from MLCYCLE_TOKENS_FILE, MLCYCLE_TOKENS and "
        "MLCYCLE_ADMIN_TOKEN, never from the command line (docs/serving.md, Credentials).",
    )
    _bundle_or_version(p)
    _trusted_keys(p)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1); beyond loopback with the prediction "
        "log on, a credential with the feedback scope is required",
    )
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--log-level", default="info")
    p.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: one per core)"
    )
    _log_url(p)
    p.add_argument("--no-log", action="store_true", help="do not log predictions")
    p.add_argument(
        "--log-when-full",
        choices=["reject", "block"],
        default="reject",
        help="when the log cannot keep up: answer 503 (default) or wait for room",
    )
    _log_bounds_options(p)
    p.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024)
    p.add_argument(
        "--body-timeout", type=float, default=10.0, help="seconds a client has to send its body"
    )
    p.add_argument(
        "--max-header-bytes",
        type=int,
        default=16 * 1024,
        help="bytes of a request's line and headers; past it: 431 (414 for the URL alone)",
    )
    p.add_argument(
        "--max-headers", type=int, default=100, help="headers of a request; past it: 431"
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds a client has to send a request's line and headers, from connecting or "
        "from its first byte; past it: 408 and the connection closed",
    )
    p.add_argument("--max-records", type=int, default=10_000, help="records per request")
    p.add_argument(
        "--max-in-flight",
        type=int,
        default=64,
        help="scoring requests a worker holds at once (being scored or waiting); past it a "
        "request is answered 503 with Retry-After (default: 64)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=1000,
        help="open connections a worker holds (idle ones too); past it a new connection is "
        "answered 503 with Retry-After and closed (default: 1000, per worker)",
    )
    p.add_argument(
        "--rate-limit",
        type=float,
        default=0,
        help="requests per second one client (IP address) may send to a worker; past it: 429 "
        "with Retry-After; health and metrics are exempt (default: 0, off)",
    )
    p.add_argument(
        "--rate-burst",
        type=int,
        default=0,
        help="requests a client may send at once within its rate (default: the rate)",
    )
    _challenger_options(p)
    p.set_defaults(func=cmd_serve)


def _challenger_options(p: argparse.ArgumentParser) -> None:
    """``mlcycle serve``'s challenger beside production (docs/serving.md, Shadow and canary)."""
    one = p.add_mutually_exclusive_group()
    one.add_argument(
        "--shadow-bundle",
        metavar="DIR",
        help="with --bundle: a second bundle that scores every request production answers, off "
        "the request path, its outputs logged beside production's; it answers nobody (served "
        "from the registry, the challenger is the one `mlcycle release --shadow` released)",
    )
    one.add_argument(
        "--canary-bundle",
        metavar="DIR",
        help="with --bundle: a second bundle that answers --canary-share of requests (served "
        "from the registry: the one `mlcycle release --canary PCT` released)",
    )
    p.add_argument(
        "--canary-share",
        type=float,
        default=0,
        metavar="PCT",
        help="percent of requests the --canary-bundle answers, above 0 and at most 100",
    )
    p.add_argument(
        "--canary-key",
        metavar="FIELD",
        help="choose the canary by this input's value in a request's first record (a client "
        "sending the same value always meets the same model); default: by the request id "
        "(the X-Request-ID header, else the one the service makes)",
    )
    p.add_argument(
        "--shadow-queue",
        type=int,
        default=10_000,
        metavar="RECORDS",
        help="records waiting for the shadow model, at most; past it a request's shadow "
        "scoring is dropped and counted, never delaying the answer (default: 10000)",
    )
    p.add_argument(
        "--shadow-priority",
        choices=("low", "idle"),  # mlcycle.serve.shadow.PRIORITIES (numpy stays unimported)
        default="low",
        help="the shadow process's CPU priority: low (default, niceness 10) gives it about a "
        "tenth of a busy core; idle runs it only on cores the machine leaves idle (on a busy "
        "host it scores little and drops the rest, counted)",
    )


def _add_predict(sub: Subparsers) -> None:
    p = sub.add_parser("predict", help="score a file of records")
    p.add_argument(
        "input",
        help="CSV, Parquet or JSON Lines file of records (optionally .gz), a quoted glob "
        "('data/*.parquet') or a folder of such files (e.g. parts of a Dask data set)",
    )
    p.add_argument(
        "output",
        help="where to write the records with their predictions: a file (format by suffix, as "
        "input), or a folder (existing, ending with /, or without a suffix) of Parquet parts",
    )
    _bundle_or_version(p)
    _trusted_keys(p)
    p.add_argument(
        "--chunk-rows",
        type=int,
        default=100_000,
        help="records read, scored and written at a time (memory grows with it; default 100000)",
    )
    p.add_argument(
        "--part-rows",
        type=int,
        default=1_000_000,
        help="rows per Parquet part when the output is a folder (default 1000000)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)


def _add_feedback(sub: Subparsers) -> None:
    p = sub.add_parser("feedback", help="attach true labels to logged predictions")
    p.add_argument(
        "file", help="CSV, Parquet or JSON Lines with request_id, label and optionally row"
    )
    _log_url(p)
    p.add_argument(
        "--bundle", help="check the labels against this bundle's classes (default: models/bundle)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace labels given earlier (else they are kept, and counted; exit 1 when every "
        "record matched kept its label)",
    )
    p.set_defaults(func=cmd_feedback)


def _add_monitor(sub: Subparsers) -> None:
    p = sub.add_parser(
        "monitor",
        help="judge production data (a file, or a window of the prediction log) against the "
        "model's training data: drift, KPIs once labelled, estimated performance; --compare: "
        "the challenger against production. Exit status: 0; 1 bad input; 3 --fail-on-drift "
        "and retraining recommended; 4 --compare found nothing to compare; 7 --service did "
        "not follow --act",
    )
    p.add_argument(
        "new", nargs="?", help="CSV, Parquet or JSON Lines of new records (default: the log)"
    )
    _log_url(p)
    p.add_argument("--last", type=int, help="the log's last N records")
    _time_window(p)
    p.add_argument(
        "--model-version",
        help="records served by this registered version, judged against its own bundle",
    )
    p.add_argument(
        "--all-models",
        action="store_true",
        help="records of any model (default: only those the bundle's model served)",
    )
    p.add_argument(
        "--bundle",
        help=f"the model bundle (default: --model-version's from the registry, else "
        f"{DEFAULT_BUNDLE})",
    )
    p.add_argument(
        "--reference", help="profile this file instead of the bundle's reference profile"
    )
    p.add_argument("--out", default="reports/monitor", help="monitor.json, .md and .html")
    p.add_argument(
        "--history", default="metrics/monitor", help="where each run appends (dvc plots)"
    )
    p.add_argument("--no-history", action="store_true", help="do not append to the history")
    p.add_argument(
        "--plots",
        action="store_true",
        help="draw dvc.yaml's monitoring plots as PNG files in OUT/history (offline)",
    )
    p.add_argument("--params", default="params.yaml", help="where the monitor section is read")
    p.add_argument("--alpha", type=float)
    p.add_argument("--min-effect", type=float)
    p.add_argument(
        "--fail-on-drift",
        action="store_true",
        help="exit with status 3 when retraining is recommended (drift, or an objective missed)",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="also set the registry's shadow or canary version against production (default "
        "bundle: production's, from the registry) on the window, decide by params.yaml's "
        "rollout rule (promote, watch, rollback) and write OUT/compare.json; exit 4 when there "
        "is nothing to compare",
    )
    p.add_argument(
        "--challenger-bundle",
        metavar="DIR",
        help="--compare: the challenger's bundle folder instead of the registry's",
    )
    p.add_argument(
        "--act",
        action="store_true",
        help="--compare: apply the decision (`mlcycle promote` or `rollback`, with its reason)",
    )
    p.add_argument(
        "--service",
        metavar="URL",
        help="--act: then reload the service at URL (admin token in MLCYCLE_ADMIN_TOKEN) and "
        "check it serves what the registry says (exit 7 if not)",
    )
    p.set_defaults(func=cmd_monitor)


def _add_report(sub: Subparsers) -> None:
    p = sub.add_parser(
        "report", help="the model change between two revisions, for a pull request (Markdown)"
    )
    p.add_argument("--base", required=True, help="the revision compared with (e.g. origin/main)")
    p.add_argument("--head", default="workspace", help="a revision, or workspace (default)")
    p.add_argument("--out", default="reports/pr", help="report.md and the plots' PNG files")
    p.add_argument("--no-plots", action="store_true", help="no plot images")
    p.set_defaults(func=cmd_report)


def _add_status(sub: Subparsers) -> None:
    p = sub.add_parser(
        "status",
        help="the headline figures at a glance (gate, KPIs, model, data). Exit status: 0; 1 "
        "--service did not answer; 3 --service serves another model than production",
    )
    p.add_argument("--markdown", action="store_true", help="as a Markdown table")
    p.add_argument(
        "--service",
        metavar="URL",
        help="also ask the running service at URL which model it serves, and say (exit 3) "
        "when that is not the registry's production version",
    )
    p.add_argument(
        "--readme",
        nargs="?",
        const="README.md",
        help="rewrite the table between the README's results markers (default README.md)",
    )
    p.set_defaults(func=cmd_status)


def _add_pr_comment(sub: Subparsers) -> None:
    p = sub.add_parser(
        "pr-comment", help="post the report on the pull request (one comment, updated)"
    )
    p.add_argument("report", nargs="?", default="reports/pr/report.md", help="the report file")
    p.add_argument("--repo", help="OWNER/NAME (default: $GITHUB_REPOSITORY)")
    p.add_argument("--pr", type=int, help="pull request number (default: from $GITHUB_EVENT_PATH)")
    p.add_argument("--api-url", help="GitHub API (default: $GITHUB_API_URL or api.github.com)")
    p.add_argument("--run-url", help="link to the CI run holding the plots (default: from env)")
    p.set_defaults(func=cmd_pr_comment)


def _add_release(sub: Subparsers) -> None:
    p = sub.add_parser(
        "release",
        help="register HEAD's model (gate passed) and promote to prod, or release it as shadow "
        "or canary. Exit status: 0; 1 bad state; 7 --service did not take the new model (the "
        "release was undone)",
    )
    p.add_argument("--bump", choices=["patch", "minor", "major"], default="patch")
    stage = p.add_mutually_exclusive_group()
    stage.add_argument(
        "--shadow",
        action="store_true",
        help="release as shadow: the service scores every request with it too, production answers",
    )
    stage.add_argument(
        "--canary",
        type=float,
        metavar="PCT",
        help="release as canary answering PCT %% of requests (each client always the same model)",
    )
    p.add_argument(
        "--service",
        metavar="URL",
        help="then reload the running service at URL (admin token in MLCYCLE_ADMIN_TOKEN) and "
        "check it serves the new version; if not, the release is undone",
    )
    p.add_argument("--reason", help="why: recorded in the registry's tags (`mlcycle history`)")
    p.add_argument(
        "--force",
        action="store_true",
        help="release a model the gate rejected only for scoring below production (a "
        "production model that learned from a leak, say); needs --reason. The objectives "
        "must still pass",
    )
    p.set_defaults(func=cmd_release)


def _add_promote(sub: Subparsers) -> None:
    for name, func, text in (
        ("promote", cmd_promote, "put the shadow or canary version in production"),
        ("rollback", cmd_rollback, "end the shadow or canary release (--production: take "
         "production's version out; the one before serves again)"),
    ):  # fmt: skip
        p = sub.add_parser(name, help=text + ". Exit status: 0; 1 nothing to do; 7 --service "
                           "did not follow")  # fmt: skip
        p.add_argument("--reason", default="by hand", help="recorded in the registry's tag")
        p.add_argument(
            "--service", metavar="URL", help="then reload the service at URL (admin token in "
            "MLCYCLE_ADMIN_TOKEN) and check it serves what the registry says"
        )  # fmt: skip
        if name == "rollback":
            p.add_argument("--production", action="store_true", help=text.split("(")[1][:-1])
        p.set_defaults(func=func)


def _add_history(sub: Subparsers) -> None:
    p = sub.add_parser("history", help="who released, promoted and rolled back what, when")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_history)


def _add_lineage(sub: Subparsers) -> None:
    p = sub.add_parser("lineage", help="where the production (or a named) model came from")
    p.add_argument("--version", help="a registered version, e.g. v0.1.0")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_lineage)


def _add_retrain(sub: Subparsers) -> None:
    p = sub.add_parser(
        "retrain",
        help="labelled production rows back into training: export, `dvc repro`, gate, "
        "commit, release, reload the service",
        description="Export the labelled records of the prediction log into a landing source, "
        "run `dvc repro`, and if the gate passes commit, release and reload. Exit status: 0 "
        "done; 1 bad input or state (nothing changed); 4 too few new labelled rows (nothing "
        "changed); 5 the gate rejected the model; 6 `dvc repro` failed or did not use the "
        "export; 7 the service did not take the new model (the release is undone: out of "
        "production, or out of its shadow or canary stage as rollout.release_as made it).",
    )
    _log_url(p)
    p.add_argument(
        "--source",
        default="production",
        help="the landing source (data.sources in params.yaml) to export into",
    )
    _time_window(p)
    p.add_argument("--model-version", help="only records served by this registered version")
    p.add_argument(
        "--min-labels",
        type=int,
        default=100,
        help="stop (exit 4, nothing changed) with fewer new labelled rows (default 100)",
    )
    p.add_argument("--bump", choices=["patch", "minor", "major"], default="patch")
    p.add_argument("--no-release", action="store_true", help="commit, but do not release")
    p.add_argument("--service", help="a running service's URL to reload afterwards")
    p.add_argument(
        "--token-env",
        default="MLCYCLE_ADMIN_TOKEN",
        help="the environment variable holding the service's admin token",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="export to a temporary folder and say what would happen; change nothing",
    )
    p.set_defaults(func=cmd_retrain)


def _add_keys(sub: Subparsers) -> None:
    p = sub.add_parser("keys", help="the Ed25519 key releases are signed with")
    keys_sub = p.add_subparsers(dest="keys_command", required=True)
    trusted = "also append the public key line to this trusted keys file"
    p = keys_sub.add_parser(
        "generate",
        help="write a new private key (mode 0600, refused inside the project or over a file) "
        "and print its public key line for the trusted keys files",
    )
    p.add_argument("--out", help="where to write it (default: ~/.config/mlcycle/signing-key.pem)")
    p.add_argument("--name", help="the name on its public key line (default: mlcycle-<date>)")
    p.add_argument("--trusted-keys", metavar="FILE", help=trusted)
    p.set_defaults(func=cmd_keys_generate)
    p = keys_sub.add_parser(
        "rotate",
        help="replace the signing key with a new one (the old private key is deleted; its "
        "public key stays trusted until you remove its line) and print the new public line",
    )
    key_help = "the signing key (default: $MLCYCLE_SIGNING_KEY, else ~/.config/mlcycle/...)"
    p.add_argument("--key", help=key_help)
    p.add_argument("--name", help="the name on the new public key line (default: mlcycle-<date>)")
    p.add_argument("--trusted-keys", metavar="FILE", help=trusted)
    p.set_defaults(func=cmd_keys_rotate)
    p = keys_sub.add_parser(
        "sign", help="sign a released version with the signing key (a signature tag beside it)"
    )
    p.add_argument("version", help="a registered version, e.g. v0.1.0")
    p.add_argument("--key", help=key_help)
    p.set_defaults(func=cmd_keys_sign)


def _add_schema(sub: Subparsers) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlcycle", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_init,
        _add_serve,
        _add_predict,
        _add_feedback,
        _add_monitor,
        _add_report,
        _add_status,
        _add_pr_comment,
        _add_release,
        _add_promote,
        _add_history,
        _add_lineage,
        _add_retrain,
        _add_keys,
        _add_schema,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mlcycle` command. Called from the command line (``argv`` None: the
    console script, ``python -m mlcycle.cli``), it ends the process once the command returns,
    without the interpreter's teardown of what the command imported, as a stage's process
    does (:func:`mlcycle.stages.end_process`: about 0.45 s of CPU for `mlcycle predict`)."""
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        code = _err(str(exc))
    if argv is None:
        from mlcycle.stages import end_process

        end_process(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
