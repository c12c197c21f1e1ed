"""The promotion gate: may the new model replace the production one?

A candidate must meet every minimum in the objectives, and must not be worse than the current
production model ("champion") on the primary metric by more than a tolerance, both measured on
the same test split in the same run. With no champion yet, the objectives alone decide. A
classifier that never predicts a class of the test split is rejected too (``gate.degenerate:
fail``, the default) or passed with a warning (``warn``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from mlcycle.tasks import LOWER_IS_BETTER, meets

CHAMPION = "champion"  # the name of the check comparing the candidate with production


@dataclass(frozen=True)
class Decision:
    """The gate's verdict and every reason behind it. ``champion_only``: rejected by the
    comparison with production alone, which `mlcycle release --force` may overrule (a
    production model that learned from a leak is one no honest model beats)."""

    passed: bool
    reasons: list[str] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)
    champion_only: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def decide(
    candidate: dict[str, float],
    minimums: dict[str, float],
    primary: str,
    champion: dict[str, float] | None = None,
    champion_version: str | None = None,
    tolerance: float = 0.0,
    spread: Mapping[str, Any] | None = None,
    degenerate: str = "fail",
) -> Decision:
    """Check ``candidate``'s metrics against ``minimums`` and, if given, the champion's.

    ``minimums`` maps metric -> bound (a maximum for lower-is-better metrics). ``tolerance`` is
    how much worse than the champion the primary metric may be (absolute). ``spread`` is
    evaluate.json's ``prediction_spread`` (:func:`mlcycle.metrics.prediction_spread`): a class
    never predicted fails the gate (``degenerate`` "fail") or is a warning ("warn").
    """
    checks, reasons = [], []
    for name, bound in minimums.items():
        if candidate.get(name) is None:
            checks.append(
                {
                    "check": f"objective {name}",
                    "passed": False,
                    "detail": f"{name} was not measured",
                }
            )
            continue
        value = candidate[name]
        ok = meets(name, value, bound)
        op = "<=" if name in LOWER_IS_BETTER else ">="
        checks.append(
            {
                "check": f"objective {name}",
                "passed": ok,
                "value": value,
                "bound": bound,
                "detail": f"{name} {value:.4f} {op} {bound}",
            }
        )
    if champion is not None and primary in champion:
        new, old = candidate[primary], champion[primary]
        if primary in LOWER_IS_BETTER:
            ok, delta = new <= old + tolerance, old - new
        else:
            ok, delta = new >= old - tolerance, new - old
        checks.append(
            {
                "check": f"{CHAMPION} {champion_version or ''}".strip(),
                "passed": ok,
                "value": new,
                "champion": old,
                "tolerance": tolerance,
                "detail": f"{primary} {new:.4f} vs production {old:.4f} "
                f"(change {delta:+.4f}, tolerance {tolerance})",
            }
        )
    else:
        checks.append(
            {
                "check": CHAMPION,
                "passed": True,
                "detail": "no production model yet: the objectives alone decide",
            }
        )
    if spread and spread.get("never_predicted"):
        checks.append(degenerate_check(spread, degenerate))
    for c in checks:
        word = "WARN " if c.get("warning") else "PASS " if c["passed"] else "FAIL "
        reasons.append(word + c["detail"])
    failed = [c["check"] for c in checks if not c["passed"]]
    champion_only = bool(failed) and all(c.startswith(CHAMPION) for c in failed)
    return Decision(not failed, reasons, checks, champion_only)


def degenerate_check(spread: Mapping[str, Any], degenerate: str) -> dict:
    """The gate's check of a classifier that never predicts some class of the test split
    (:func:`spread_finding` says which and what it predicts instead), with the
    setting that makes it a warning (``gate.degenerate: warn``), or a failure again."""
    warn = degenerate == "warn"
    setting = (
        "gate.degenerate is warn, so it does not fail the gate"
        if warn
        else "set gate.degenerate: warn to let it pass with a warning"
    )
    return {
        "check": "predicted classes",
        "passed": warn,
        "warning": warn,
        "never_predicted": list(spread["never_predicted"]),
        "detail": f"{spread_finding(spread)}; {setting}",
    }


def spread_finding(spread: Mapping[str, Any]) -> str:
    """A :func:`mlcycle.metrics.prediction_spread` with a class never predicted, in words: which
    class(es), their rows, what the model predicts instead, and the settings that can help."""
    never, predicted, actual = spread["never_predicted"], spread["predicted"], spread["actual"]
    missed = ", ".join(f"{c!r} ({actual[c]} test rows)" for c in never)
    made = ", ".join(f"{c!r} {n}" for c, n in predicted.items() if n)
    what = "predicts a single class" if spread["single_class"] else "is degenerate"
    helps = "train.class_weight: balanced"
    if len(actual) == 2:  # binary: the decision threshold is a setting
        helps = f"objectives.threshold.maximize: f1 or balanced_accuracy, or {helps}"
    return (
        f"the classifier {what}: it never predicts {missed}; of {sum(predicted.values())} test "
        f"rows it predicts {made} ({helps} can help)"
    )
