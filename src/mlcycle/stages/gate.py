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

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from mlcycle import config, registry
from mlcycle.bundle import load_bundle
from mlcycle.engines import dask_client
from mlcycle.engines.evaluate import champion_kpis
from mlcycle.features import encode_target
from mlcycle.gate import decide
from mlcycle.io import read_json, write_json
from mlcycle.metrics import compute_kpis
from mlcycle.predict import score
from mlcycle.stages import METRICS, TEST, log, run
from mlcycle.summary import fingerprint


class GateRejected(ValueError):
    """The gate refused the model; the message lists the failed checks."""


def champion_metrics(
    name: str,
    primary: str,
    test: pd.DataFrame | None,
    task: str,
    kpis_of: Callable[[Path, list[str]], dict[str, float | None]] | None = None,
) -> tuple[dict[str, float] | None, str | None]:
    """The production model's primary metric on the test split, or (None, None) if there is
    none or it predicts another task (then it cannot be compared, and the objectives alone
    decide). ``test`` is scored here; or, without it, ``kpis_of(bundle_dir, [primary])``
    scores the split elsewhere (the Dask engine, partition by partition)."""
    prod = registry.production(Path.cwd(), name)
    if prod is None:
        return None, None
    bundle_dir = registry.fetch_bundle(Path.cwd(), prod)
    bundle = load_bundle(bundle_dir)
    if bundle.task != task:
        log(
            "gate",
            f"champion {name}@{prod.version} is a {bundle.task} model, the candidate a {task} "
            "one: not comparable, the objectives alone decide",
        )
        return None, None
    if test is not None:
        scores = score(bundle, test)
        y = encode_target(test[bundle.signature.target], bundle.signature)
        kpis = compute_kpis(task, y, scores.output, bundle.threshold, [primary])
    else:
        assert kpis_of is not None
        kpis = kpis_of(Path(bundle_dir), [primary])
    log("gate", f"champion {name}@{prod.version} ({prod.commit[:12]}) scored on the test split")
    return {k: v for k, v in kpis.items() if v is not None}, prod.version


def champion_metrics_dask(
    params: config.Params, name: str, primary: str, task: str
) -> tuple[dict[str, float] | None, str | None]:
    """:func:`champion_metrics` on the Dask engine: the test split (a folder of parts) is
    scored partition by partition on the cluster, never gathered here; a cluster is started
    only when there is a champion to score."""

    def kpis_of(bundle_dir: Path, names: list[str]) -> dict[str, float | None]:
        with dask_client(params.engine, lambda msg: log("gate", msg)) as client:
            return champion_kpis(client, TEST, bundle_dir, names)

    return champion_metrics(name, primary, None, task, kpis_of)


def main() -> None:
    params = config.load()
    objectives, gate_cfg = params.objectives, params.gate
    name = params.package.name
    evaluated = Path(f"{METRICS}/evaluate.json").read_bytes()
    candidate = read_json(f"{METRICS}/evaluate.json")
    champion, version = None, None
    if gate_cfg.compare_champion:
        if params.engine.is_dask:
            champion, version = champion_metrics_dask(
                params, name, objectives.primary_metric, objectives.task
            )
        else:
            champion, version = champion_metrics(
                name, objectives.primary_metric, pd.read_parquet(TEST), objectives.task
            )
    decision = decide(
        {k: v for k, v in candidate.items() if isinstance(v, int | float)},
        objectives.minimums,
        objectives.primary_metric,
        champion,
        version,
        gate_cfg.tolerance,
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
        raise GateRejected("model rejected: " + "; ".join(failed))
    else:
        log("gate", "REJECTED (gate.fail_on_reject is false, so the run goes on)")


if __name__ == "__main__":
    run("gate", main)
