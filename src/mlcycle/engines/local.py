"""The local engine: every step in one process with pandas, each data set one Parquet file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mlcycle import config, tasks
from mlcycle.bundle import load_bundle
from mlcycle.drift import data_profile
from mlcycle.engines.base import (
    Checked,
    Engine,
    Evaluated,
    EvaluatePaths,
    PreparedSplits,
    SourceSet,
    Trained,
)
from mlcycle.evaluation import measure
from mlcycle.features import (
    Signature,
    encode_target,
    infer_signature,
    to_model_frame,
    unseen_categories,
)
from mlcycle.io import write_parquet
from mlcycle.metrics import compute_kpis, prediction_frame
from mlcycle.models import fit, load_model_dir
from mlcycle.predict import score
from mlcycle.prepare import prepare
from mlcycle.schema import BOOKKEEPING_COLUMNS, Schema
from mlcycle.schema.findings import check
from mlcycle.sources import (
    SOURCE_COLUMN,
    canonical_order,
    describe,
    quarantine_folder,
    read_source,
    type_conflicts,
    union,
    write_quarantine,
)
from mlcycle.tuning import fit_options, tune

PROGRESS_ROUNDS = 100  # the final fit reports every this many boosting rounds


class LocalEngine(Engine):
    """pandas in this process: the data sets are single Parquet files."""

    def read_sources(
        self, sources: tuple[config.Source, ...], root: Path, text_columns: tuple[str, ...]
    ) -> SourceSet:
        reads = []
        for source in sources:
            read = read_source(source.with_text_columns(text_columns), root)
            self.say(f"{source.name}: {read.lineage['rows']} rows from {describe(source)}")
            if source.kind == "landing":
                write_quarantine(read, quarantine_folder(root, source.name))
                for q in read.quarantined:
                    self.say(f"{source.name}: quarantined {q.file}: {q.reason}")
            reads.append(read)
        conflicts = type_conflicts([(r.lineage["name"], r.frame) for r in reads])
        # A canonical row order: the same rows in another order are the same snapshot.
        snapshot = canonical_order(union(reads))
        columns = [c for c in snapshot.columns if c != SOURCE_COLUMN]
        return SourceSet([r.lineage for r in reads], conflicts, columns, snapshot)

    def write_snapshot(self, read: SourceSet, path: str) -> int:
        write_parquet(path, read.rows)
        return len(read.rows)

    def check_snapshot(
        self, path: str, schema: Schema, settings: config.ValidateConfig, target: str
    ) -> Checked:
        snapshot = pd.read_parquet(path)
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
        return Checked(snapshot, findings, len(snapshot), columns)

    def prepare(
        self, params: config.Params, snapshot: str, train: str, test: str
    ) -> PreparedSplits:
        obj = params.objectives
        task = tasks.get(obj.task)
        frame = pd.read_parquet(snapshot)
        self.say(f"snapshot: {len(frame)} rows")
        result = prepare(frame, params.prepare, obj, progress=self.say)
        write_parquet(train, result.train)
        write_parquet(test, result.test)
        return PreparedSplits(
            report=result.report,
            train_rows_split=result.report["split"]["train_rows"],
            train_rows=len(result.train),
            train_target=task.target_summary(result.train[obj.target], obj.positive_class),
            test_rows=len(result.test),
            test_target=task.target_summary(result.test[obj.target], obj.positive_class),
            profile=data_profile(result.train, params.monitor.bins),
        )

    def train(self, params: config.Params, path: str) -> Trained:
        obj, cfg = params.objectives, params.train
        say = self.say
        train = pd.read_parquet(path)
        signature = infer_signature(
            train,
            obj.target,
            obj.positive_class,
            params.features,
            seed=cfg.seed,
            progress=say,
            task=obj.task,
        )
        X = to_model_frame(train, signature)
        y = encode_target(train[obj.target], signature)
        derived = [s.name for s in signature.derived if s.name in signature.columns]
        described = tasks.get(signature.task).describe_target(y, signature.classes)
        say(
            f"{obj.task}: {len(X)} rows ({described}), {X.shape[1]} features "
            f"({len(derived)} derived: {derived}) from {len(signature.inputs)} raw inputs; "
            f"candidates {list(cfg.candidates)}, selected by cv {obj.primary_metric}"
        )

        result = tune(
            X, y, cfg, obj.primary_metric, progress=say, task=obj.task, classes=signature.classes
        )
        win = result.winner
        n_classes = len(signature.classes)
        say(f"winner: {win.name} (trial {win.best_trial}), ranking {result.ranking}")

        def on_round(i: int) -> None:
            if (i + 1) % PROGRESS_ROUNDS == 0:
                say(f"final fit: round {i + 1}/{win.cv.final_rounds}")

        final = fit(
            win.name,
            X,
            y,
            win.params,
            obj.task,
            n_classes,
            rounds=win.cv.final_rounds,
            on_round=on_round,
            **fit_options(cfg),
        )
        oof = prediction_frame(win.cv.oof, y, obj.task, signature.classes)
        baseline = None
        if result.baseline:
            base = result.baseline
            if base.name == win.name and base.params == win.params:
                baseline = final  # the untuned configuration won: the same model
            else:
                baseline = fit(
                    base.name, X, y, base.params, obj.task, n_classes,
                    rounds=base.cv.final_rounds, **fit_options(cfg),
                )  # fmt: skip
        return Trained(signature, result, final, baseline, oof, len(X))

    def evaluate(
        self, params: config.Params, signature: Signature, paths: EvaluatePaths
    ) -> Evaluated:
        task = params.objectives.task
        model, _ = load_model_dir(paths.model_dir)
        test = pd.read_parquet(paths.test)
        y = encode_target(test[params.objectives.target], signature)
        X = to_model_frame(test, signature)
        out = model.output(X)
        base_out = None
        if Path(paths.baseline_dir).is_dir():
            base_model, _ = load_model_dir(paths.baseline_dir)
            base_out = (base_model.kind, base_model.output(X))
        unseen = {k: len(v) for k, v in unseen_categories(test, signature).items()}
        write_parquet(paths.predictions, prediction_frame(out, y, task, signature.classes))
        evaluation = measure(params, signature, test, y, out, base_out, unseen, paths.oof)
        return Evaluated(evaluation, model, X)

    def champion_kpis(
        self, test: str, bundle_dir: Path, names: list[str]
    ) -> dict[str, float | None]:
        bundle = load_bundle(bundle_dir)
        frame = pd.read_parquet(test)
        scores = score(bundle, frame)
        y = encode_target(frame[bundle.signature.target], bundle.signature)
        return compute_kpis(bundle.task, y, scores.output, bundle.threshold, names)
