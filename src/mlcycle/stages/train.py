"""Stage `train`: engineer and select features, tune every candidate by cross-validation on the
training split, pick the best, refit it on the whole training split.

Feature selection (``features.selection``) is fitted here, on the training split only; the
chosen features, the derived steps and the raw inputs they need go into the signature, which
evaluation, batch prediction and the service apply with the same code. Tuning and model
selection see only the training split (see :mod:`mlcycle.tuning`).
Inputs: data/prepared/train.parquet; params `train`, `features`, `objectives.task`,
`objectives.target`, `objectives.positive_class`, `objectives.primary_metric`.
Outputs: models/train/ (the chosen model, model.json, signature.json, oof.parquet and the
untuned baseline); metrics/train.json (the selection); metrics/tuning/trials.csv (every trial);
metrics/train/ (dvclive: learning curves of a boosting winner, tuning history per candidate,
chosen params).
"""

from __future__ import annotations

from pathlib import Path

from dvclive import Live

from mlcycle import config
from mlcycle.engines import Engine, open_engine
from mlcycle.engines.train import Trained, train
from mlcycle.io import atomic_folder, write_json, write_parquet, write_text
from mlcycle.models import save_model_dir
from mlcycle.stages import (
    BASELINE_DIR,
    METRICS,
    MODEL_DIR,
    OOF,
    SIGNATURE_FILE,
    TRAIN,
    TRIALS,
    log,
    run,
)
from mlcycle.tuning import mean_curves, summary, trials_csv

# The learning-curve series dvc.yaml plots: the early-stopping metric of a boosting winner
# (log loss for classification, RMSE for regression), named alike for every task.
CURVE_SERIES = (("train", "loss"), ("valid", "loss"))


def main() -> None:
    params = config.load()
    with open_engine(params.engine, lambda msg: log("train", msg)) as engine:
        execute(params, engine)


def execute(params: config.Params, engine: Engine) -> None:
    """Tune, select and refit on the training split; write the model and the selection.

    models/train/ is built in a new folder beside it and swapped in once everything else is
    written: a failed or killed run leaves the last good model as it was (dvc.yaml marks it
    ``persist: true``, so DVC does not delete it first), and no file of it outlives a run."""
    with atomic_folder(MODEL_DIR) as model_dir:
        write(params, train(engine, params, TRAIN), model_dir)


def write(params: config.Params, trained: Trained, model_dir: Path) -> None:
    """Write the train stage's outputs (either engine): the chosen model, its signature, the
    out-of-fold predictions and the baseline into ``model_dir`` (the folder that becomes
    models/train/), the selection, every trial and the curves under metrics/."""
    obj, cfg = params.objectives, params.train
    signature, result, final = trained.signature, trained.result, trained.final
    baseline, oof, rows = trained.baseline, trained.oof, trained.rows
    say = lambda msg: log("train", msg)  # noqa: E731
    inside = lambda path: model_dir / Path(path).relative_to(MODEL_DIR)  # noqa: E731
    win = result.winner
    info = {"params": win.params, "rounds": final.rounds, "trial": win.best_trial}
    save_model_dir(model_dir, final.model, info)
    write_json(
        inside(SIGNATURE_FILE),
        {**signature.to_dict(), "train_config": cfg.record(), "best_rounds": final.rounds},
    )
    write_parquet(inside(OOF), oof)
    say(
        f"refitted {win.name} on all {rows} rows"
        + (f" with {final.rounds} rounds" if final.rounds else "")
        + f" -> {MODEL_DIR}"
    )
    if result.baseline and baseline is not None:
        base = result.baseline
        save_model_dir(
            inside(BASELINE_DIR), baseline.model, {"params": base.params, "rounds": baseline.rounds}
        )
        say(f"baseline: untuned {base.name} refitted -> {BASELINE_DIR}")

    selection = summary(result)
    if trained.cluster is not None:  # the Dask engine's workers lost and retries
        selection["cluster"] = trained.cluster
    write_json(f"{METRICS}/train.json", selection)
    write_text(TRIALS, trials_csv(result.records, obj.primary_metric))

    with Live(dir=f"{METRICS}/train", dvcyaml=False, save_dvc_exp=False, report=None) as live:
        # The tuning history, one series per candidate (step = trial number), whatever wins.
        for rec in result.records:
            live.step = rec.trial
            name = f"tuning/{rec.candidate}/cv_{obj.primary_metric}"
            live.log_metric(name, round(rec.cv_mean, 6))
        del live.summary["tuning"]  # the last trial's score is no summary
        # A boosting winner's learning curves of its early-stopping metric ("loss"): the final
        # refit on the training data, and the mean over the winning trial's folds of the inner
        # validation that chose the number of rounds.
        curves = {
            "train": {"loss": final.curves.get("train", {}).get("loss", [])},
            "valid": {"loss": mean_curves(win.cv.valid_curves).get("loss", [])},
        }
        steps = max((len(v) for d in curves.values() for v in d.values()), default=0)
        for i in range(steps):
            live.step = i
            for split_name, by_metric in curves.items():
                for metric, values in by_metric.items():
                    if i < len(values):
                        live.log_metric(f"{split_name}/{metric}", round(values[i], 6))
        if not steps:
            say(f"no learning curve for a {win.name} model: its curve plots stay empty")
        live.log_params({"model": win.name, "rounds": final.rounds, "params": info["params"]})
        live.summary.update(
            {
                "model": win.name,
                "rounds": final.rounds,
                "features": len(signature.features),
                f"cv_{obj.primary_metric}": selection["candidates"][win.name]["cv_mean"],
            }
        )
    if not steps:
        # dvc.yaml plots these files whichever model wins; header-only files give empty plots
        # where missing ones would make `dvc plots show` report errors.
        for split_name, metric in CURVE_SERIES:
            write_text(
                f"{METRICS}/train/plots/metrics/{split_name}/{metric}.tsv", f"step\t{metric}\n"
            )


if __name__ == "__main__":
    run("train", main)
