"""The promotion gate: may the new model replace the production one?

A candidate must meet every minimum in the objectives, and must not be worse than the current
production model ("champion") on the primary metric by more than a tolerance, both measured on
the same test split in the same run. With no champion yet, the objectives alone decide.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from mlcycle.tasks import LOWER_IS_BETTER, meets


@dataclass(frozen=True)
class Decision:
    """The gate's verdict and every reason behind it."""

    passed: bool
    reasons: list[str] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def decide(
    candidate: dict[str, float],
    minimums: dict[str, float],
    primary: str,
    champion: dict[str, float] | None = None,
    champion_version: str | None = None,
    tolerance: float = 0.0,
) -> Decision:
    """Check ``candidate``'s metrics against ``minimums`` and, if given, the champion's.

    ``minimums`` maps metric -> bound (a maximum for lower-is-better metrics). ``tolerance`` is
    how much worse than the champion the primary metric may be (absolute).
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
                "check": f"champion {champion_version or ''}".strip(),
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
                "check": "champion",
                "passed": True,
                "detail": "no production model yet: the objectives alone decide",
            }
        )
    for c in checks:
        reasons.append(("PASS " if c["passed"] else "FAIL ") + c["detail"])
    return Decision(passed=all(c["passed"] for c in checks), reasons=reasons, checks=checks)
