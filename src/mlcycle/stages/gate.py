"""Stage `gate`: may the new model be promoted?

It must meet every minimum in the objectives, and must not be worse than the production model
(the "champion", found through the registry's git tags) on the primary metric by more than
`gate.tolerance`; the champion is scored here, on the same test split, in the same run.
Inputs: metrics/evaluate.json, data/prepared/test.parquet, the production bundle (if any);
params `gate`, `objectives`, `package.name`.
Outputs: metrics/gate.json (the decision and its reasons) and reports/gate.json (the same, kept
even when the stage fails). A rejection fails the stage when `gate.fail_on_reject` is true, so
`dvc repro` (and CI) stop, nothing is packaged and metrics/gate.json stays as it was.
"""

from __future__ import annotations

from pathlib import Path

from mlcycle import config, registry
from mlcycle.gate import decide
from mlcycle.io import read_json, write_json
from mlcycle.stages import METRICS, TEST, log, run
from mlcycle.summary import fingerprint

RETIRE = (
    "To retire production, set gate.fail_on_reject: false in params.yaml so `dvc repro` packages "
    f"this model with its rejection recorded, and commit; then {registry.FORCE_HINT}"
)


class GateRejected(ValueError):
    """The gate refused the model; the message lists the failed checks."""


def say(message: str) -> None:
    """A progress line of the gate stage (the engine's too)."""
    log("gate", message)


def champion_metrics(
    params: config.Params, name: str, primary: str, task: str
) -> tuple[dict[str, float] | None, str | None]:
    """The production model's primary metric on the test split, or (None, None) if there is
    none or it predicts another task (then it cannot be compared, and the objectives alone
    decide). The engine scores it (on Dask partition by partition, never gathered here); an
    engine is opened only when there is a champion to score."""
    prod = registry.production(Path.cwd(), name)
    if prod is None:
        return None, None
    # Here, not at the top: loading and scoring a model imports XGBoost and scikit-learn
    # (1.0 of the stage's 1.4 s of imports), which a gate without a champion never needs.
    from mlcycle.bundle import load_bundle
    from mlcycle.engines import open_engine
    from mlcycle.engines.gate import champion_kpis

    bundle_dir = registry.fetch_bundle(Path.cwd(), prod)
    bundle = load_bundle(bundle_dir)
    if bundle.task != task:
        say(
            f"champion {name}@{prod.version} is a {bundle.task} model, the candidate a {task} "
            "one: not comparable, the objectives alone decide"
        )
        return None, None
    with open_engine(params.engine, say) as engine:
        kpis = champion_kpis(engine, TEST, Path(bundle_dir), [primary])
    say(f"champion {name}@{prod.version} ({prod.commit[:12]}) scored on the test split")
    return {k: v for k, v in kpis.items() if v is not None}, prod.version


def main() -> None:
    params = config.load()
    objectives, gate_cfg = params.objectives, params.gate
    name = params.package.name
    evaluated = Path(f"{METRICS}/evaluate.json").read_bytes()
    candidate = read_json(f"{METRICS}/evaluate.json")
    champion, version = None, None
    if gate_cfg.compare_champion:
        champion, version = champion_metrics(
            params, name, objectives.primary_metric, objectives.task
        )
    decision = decide(
        {k: v for k, v in candidate.items() if isinstance(v, int | float)},
        objectives.minimums,
        objectives.primary_metric,
        champion,
        version,
        gate_cfg.tolerance,
        candidate.get("prediction_spread"),
        gate_cfg.degenerate,
    )
    # The evaluation judged, so a report can tell a current decision from a stale one.
    doc = {
        **decision.to_dict(),
        "model": name,
        "champion_version": version,
        "evaluation_sha256": fingerprint(evaluated, config.read_raw()),
    }
    write_json("reports/gate.json", doc)
    write_json(f"{METRICS}/gate.json", doc)
    for reason in decision.reasons:
        log("gate", reason)
    if decision.passed:
        log("gate", "PASSED: the model may be promoted (`mlcycle release` after committing)")
    elif gate_cfg.fail_on_reject:
        failed = [r for r in decision.reasons if r.startswith("FAIL")]
        way_out = f". {RETIRE}" if decision.champion_only else ""
        raise GateRejected("model rejected: " + "; ".join(failed) + way_out)
    else:
        log("gate", "REJECTED (gate.fail_on_reject is false, so the run goes on)")
        if decision.champion_only:
            alone = "rejected by the comparison with production alone: commit; then "
            log("gate", alone + registry.FORCE_HINT)


if __name__ == "__main__":
    run("gate", main)
