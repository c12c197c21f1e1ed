"""The schema's rules at the service's door: which fields a record may hold, and which values it
may not (for ``/predict`` and the Open Inference Protocol alike).

A record holds the model's raw inputs and may hold the schema's other columns (the target
excepted), which are kept with it in the prediction log, so that retrain exports complete
rows, and not scored; any other field is refused. A record that breaks a per-row rule of the
bundle's schema (:mod:`mlcycle.schema.rows`) whose severity is ``error`` is refused, naming
the record, the column and the rule: ``validate`` would refuse it as training data, so a
prediction log never holds a row retraining cannot use. A rule whose severity is ``warning``
is said in the answer. Bundles packaged before they carried the rules
(:data:`mlcycle.bundle.RULES_FILE`) check no rule and take only the training data's columns
besides the inputs, as before.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from mlcycle.bundle import Bundle
from mlcycle.schema.rows import RowBreak, errors, warnings

SHOWN_BREAKS = 20  # refused values a 422 names (the count says how many in all)


def extra_fields(bundle: Bundle) -> dict[str, str]:
    """The schema's columns that are not the model's inputs nor the target, each with the kind
    its values have (``numeric`` or ``categorical``): a record may hold them; they are logged,
    not scored. Empty for a bundle without row rules."""
    rules = bundle.rules
    if rules is None:
        return {}
    inputs = set(bundle.signature.input_columns)
    return {
        name: "numeric" if rules.numeric(name) else "categorical"
        for name in rules.data_columns
        if name not in inputs
    }


def optional_fields(bundle: Bundle) -> tuple[str, ...]:
    """Every field a ``/predict`` record may hold besides the model's inputs: the training
    data's columns the model does not use and :func:`extra_fields`."""
    return tuple(dict.fromkeys([*bundle.signature.unused_inputs, *extra_fields(bundle)]))


class RecordsRefused(ValueError):
    """Records that break a per-row rule whose severity is error; :attr:`detail` names each
    (record, column, rule) as FastAPI's validation errors do."""

    def __init__(self, refused: Sequence[RowBreak]) -> None:
        self.detail: list[dict[str, Any]] = []
        for item in refused:
            for row, value in zip(item.rows, item.values, strict=True):
                self.detail.append(
                    {
                        "loc": ["body", "records", row, item.column],
                        "msg": item.problem(value),
                        "type": f"schema_{item.kind}",
                    }
                )
        total = len(self.detail)
        self.detail = sorted(self.detail, key=lambda d: d["loc"][2])[:SHOWN_BREAKS]
        first = self.detail[0]
        more = f" ({total} such values in all)" if total > 1 else ""
        super().__init__(f"record {first['loc'][2]}, {first['loc'][3]!r}: {first['msg']}{more}")


def check_records(bundle: Bundle, records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Apply the bundle's per-row rules to a request's ``records``: raise
    :class:`RecordsRefused` if one breaks a rule whose severity is error, else return a
    warning per rule of severity warning that some break (none without rules)."""
    if bundle.rules is None:
        return []
    return _verdict(bundle.rules.check_records(records))


def check_columns(bundle: Bundle, columns: Mapping[str, Sequence[Any]]) -> list[str]:
    """:func:`check_records` for a request that comes as columns (rows aligned)."""
    if bundle.rules is None:
        return []
    return _verdict(bundle.rules.check_columns(columns))


def _verdict(breaks: Sequence[RowBreak]) -> list[str]:
    refused = errors(breaks)
    if refused:
        raise RecordsRefused(refused)
    return [f"{item.message()}; scored" for item in warnings(breaks)]
