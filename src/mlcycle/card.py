"""The model card: what the model is for, what it was trained on, how well it does and for whom.

Built from the bundle's metadata, so it says nothing the pipeline did not measure.
"""

from __future__ import annotations

from mlcycle import tasks


def _predicts(objectives: dict, classes: list[str]) -> str:
    """What the model predicts, in words (bundles from before tasks: binary)."""
    task = tasks.TASK.get(objectives.get("task"), tasks.TASK[tasks.BINARY])
    return task.predicts(objectives.get("target"), classes, objectives.get("positive_class"))


def _decision(meta: dict) -> str | None:
    """What the model's labels are decided by, in words: a threshold, weights per class, or
    the most probable class; None for regression (bundles from before multiclass decisions
    hold a ``threshold``)."""
    task = tasks.TASK.get(meta.get("task") or meta.get("objectives", {}).get("task"))
    value = meta.get("decision", meta.get("threshold"))
    if isinstance(value, list):
        pairs = zip(meta.get("classes") or [], value, strict=False)
        return "weights per class " + ", ".join(f"{c}: {w:g}" for c, w in pairs)
    if value is not None:
        return f"the threshold {value:g} on the positive class's probability"
    return None if task and not task.classification else "the most probable class"


def card_data(meta: dict) -> dict:
    """The card's content as JSON-ready data (a subset of the metadata, arranged for people)."""
    objectives = meta.get("objectives", {})
    metrics = meta.get("metrics", {})
    return {
        "name": meta.get("name"),
        "model_kind": meta.get("model_kind", "xgboost"),
        "intended_use": {
            "task": objectives.get("task"),
            "predicts": _predicts(objectives, meta.get("classes") or []),
            "primary_metric": objectives.get("primary_metric"),
            "minimum": objectives.get("minimum"),
        },
        "decision": _decision(meta),
        "decision_rule": meta.get("decision_rule", meta.get("threshold_rule")),
        "data": meta.get("data", {}),
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, int | float)},
        "confidence_interval": metrics.get("confidence_interval"),
        "slice_gaps": meta.get("slice_gaps", {}),
        "limitations": meta.get("limitations", []),
        "possible_leaks": meta.get("possible_leaks", []),
        "lineage": {"git": meta.get("git"), "created": meta.get("created")},
    }


def card_markdown(card: dict) -> str:
    """The card as a short markdown page."""
    use = card["intended_use"]
    lines = [
        f"# Model card: {card['name']}",
        "",
        "## Intended use",
        f"- Task: {use['task']}; predicts {use['predicts']}.",
        f"- Judged by {use['primary_metric']} (minimum {use['minimum']}) on a held-out test split.",
        f"- Model: {card['model_kind']}"
        + (f"; labels decided by {card['decision']}" if card.get("decision") else "")
        + (f" ({card['decision_rule']})" if card.get("decision_rule") else "")
        + ".",
        "",
        "## Metrics on the test split",
        "",
        "| metric | value |",
        "|---|---:|",
        *(
            f"| {k} | {v:.4f} |"
            for k, v in sorted(card["metrics"].items())
            if isinstance(v, int | float) and not isinstance(v, bool)
        ),
    ]
    ci = card.get("confidence_interval")
    if ci and ci.get("low") is not None:
        lines += [
            "",
            f"{use['primary_metric']} {ci['level']:.0%} bootstrap interval: "
            f"[{ci['low']:.4f}, {ci['high']:.4f}] ({ci['resamples']} resamples).",
        ]
    if card["slice_gaps"]:
        lines += [
            "",
            "## Who it serves worse",
            "",
            "| slice column | metric | best | worst | gap | beyond noise |",
            "|---|---|---|---|---:|---|",
        ]
        for column, gaps in sorted(card["slice_gaps"].items()):
            for metric, g in sorted(gaps.items()):
                noise = {True: "yes", False: "no"}.get(g.get("beyond_noise"), "")
                lines.append(
                    f"| {column} | {metric} | {g['best']} | {g['worst']} | {g['gap']:.4f} "
                    f"| {noise} |"
                )
        lines += [
            "",
            "Beyond noise: the two slices' bootstrap intervals of the primary metric do not "
            "overlap.",
        ]
    lines += ["", "## Data", ""]
    lines += [f"- `{path}`: sha256 `{digest}`" for path, digest in sorted(card["data"].items())]
    if card.get("possible_leaks"):
        lines += [
            "",
            "## Possible leaks",
            "",
            "Features the model uses that alone nearly determine the target or one of its classes "
            "(found by `validate` on the snapshot). Unless each is known before the outcome, "
            "the test metrics above overstate what the model does on new rows.",
            "",
            *(f"- {leak['message']}" for leak in card["possible_leaks"]),
        ]
    if card["limitations"]:
        lines += ["", "## Limitations", "", *(f"- {item}" for item in card["limitations"])]
    git = (card.get("lineage") or {}).get("git") or {}
    lines += [
        "",
        "## Lineage",
        "",
        f"- git commit: {git.get('commit')} (dirty: {git.get('dirty')})",
        f"- created: {card['lineage'].get('created')}",
    ]
    return "\n".join(lines) + "\n"
