"""The service's own REST API: ``POST /predict``, ``GET /health``, ``GET /metadata`` and
``GET /metrics``.

``/predict`` takes records typed from the signature's raw inputs (a wrong, missing or unknown
field is a 422 naming ``records.0.age``; so is a value the schema's per-row rules refuse, see
:mod:`mlcycle.serve.rules`) and answers labels and probabilities (or values).
"""

from collections.abc import Sequence
from typing import Annotated, Any, NotRequired

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints, with_config
from typing_extensions import TypedDict

from mlcycle.features import Signature
from mlcycle.serve.core import (
    MAX_TEXT,
    Core,
    ModelInfo,
    example_record,
    prediction_dicts,
    warnings_for,
)
from mlcycle.serve.http import AUTH_ERRORS, ERRORS, requires
from mlcycle.serve.rules import RecordsRefused, check_records, optional_fields

# A number: JSON numbers (never true/false, never NaN or infinities), or a string holding one
# (converted exactly as batch files are). All checked inside pydantic-core: no Python call per
# field, which is most of a small request's time.
NUMBER_TEXT = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
Number = (
    Annotated[float, Strict(), Field(allow_inf_nan=False)]
    | Annotated[str, StringConstraints(pattern=NUMBER_TEXT)]
    | None
)
# Text: at most MAX_TEXT characters (pydantic-core also refuses lone surrogates).
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)] | None


def record_model(signature: Signature, optional: Sequence[str] = ()) -> type:
    """The type of one input record: a TypedDict keyed by the raw inputs' names.

    Every raw input the model needs must be present (null allowed); derived features are
    computed by the service, never sent. The ``optional`` fields (columns of the data the
    model does not use, :func:`mlcycle.serve.rules.optional_fields`) may be sent: logged, not
    scored; any other field is refused. Validated records are plain dicts, ready for the
    encoder.
    """
    fields: dict[str, Any] = {
        feat.name: Number if feat.kind == "numeric" else Text for feat in signature.inputs
    }
    for name in optional:
        fields[name] = NotRequired[Annotated[Number | Text, Field(description="not scored")]]
    record = TypedDict("Record", fields)  # type: ignore[misc]
    record.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]
    return record


def predict_request(signature: Signature, max_records: int, optional: Sequence[str] = ()) -> type:
    """The body of ``/predict``: ``{"records": [...]}``, 1 to ``max_records`` records."""
    Record = record_model(signature, optional)

    @with_config(
        ConfigDict(
            extra="forbid",
            json_schema_extra={"examples": [{"records": [example_record(signature)]}]},
        )
    )
    class PredictRequest(TypedDict):
        records: Annotated[
            list[Record],  # type: ignore[valid-type]
            Field(min_length=1, max_length=max_records),
        ]

    return PredictRequest


class Prediction(BaseModel):
    """One record's prediction; which fields are present follows the model's task."""

    label: str | None = Field(
        None,
        description="classification: the predicted class, by the model's decision (binary: "
        "at its threshold; multiclass: the class of the largest weighted probability)",
    )
    probabilities: dict[str, float] | None = Field(
        None, description="classification: the probability of every class"
    )
    probability: float | None = Field(
        None, description="binary classification: the probability of the positive class"
    )
    value: float | None = Field(None, description="regression: the predicted value")


class PredictResponse(BaseModel):
    request_id: str
    predictions: list[Prediction]
    model: ModelInfo
    warnings: list[str] = Field(default_factory=list)


def add_routes(routes: APIRouter, core: Core) -> None:
    """Add the REST routes over ``core`` to ``routes`` (the app's router)."""
    sig = core.signature
    optional = optional_fields(core.loaded.bundle)
    PredictRequest = predict_request(sig, core.settings.max_records, optional)

    @routes.post(
        "/predict",
        response_model=PredictResponse,
        response_model_exclude_none=True,
        responses={**ERRORS, **AUTH_ERRORS} if core.credentials.required("predict") else ERRORS,
        dependencies=requires(core.credentials, "predict"),
    )
    async def predict(request: PredictRequest, http: Request) -> Response:
        """Score one or many records."""
        request_id = http.scope["state"]["request_id"]
        records = request["records"]
        try:
            rule_warnings = check_records(core.loaded.bundle, records)
        except RecordsRefused as exc:
            raise HTTPException(422, exc.detail) from None
        key = core.key_of(records)
        if optional:  # logged (the body as received), not scored
            for r in records:
                for name in optional:
                    r.pop(name, None)
        model, output, labels, unseen = core.score(records, request_id, key=key)
        preds = orjson.dumps(prediction_dicts(output, labels, model.signature))
        # the body as received is the log's record of the inputs (it passed validation, so it
        # is JSON text); the predictions are serialised once, for the answer and the log
        raw = await http.body()
        try:  # the parser took it, so it is UTF-8 (a leading BOM is dropped)
            inputs: Any = raw.decode("utf-8-sig")
        except UnicodeDecodeError:  # not reached: logged as parsed then
            inputs = records
        await core.log_request(model, request_id, inputs, preds, len(records))
        core.observe(model, output, labels)
        body = b"".join(
            (
                b'{"request_id":',
                orjson.dumps(request_id),
                b',"predictions":',
                preds,
                b',"model":',
                model.info_json,
                b',"warnings":',
                orjson.dumps(warnings_for(records, unseen) + rule_warnings),
                b"}",
            )
        )
        return Response(body, media_type="application/json")

    @routes.get("/health")
    async def health() -> dict:
        """Liveness and the identity of the production model, and of the challenger (with its
        stage and share) when one is served."""
        served = core.current()
        return {"status": "ok", "model": served.prod.info.model_dump(), **served.described()}

    @routes.get("/metadata")
    async def metadata() -> dict:
        """Where the production model came from (params, metrics, data hashes, commit), its
        signature, and the challenger as /health names it."""
        served = core.current()
        model = served.prod
        return {
            "model": model.info.model_dump(),
            "signature": model.signature.to_dict(),
            "metadata": model.bundle.metadata,
            **served.described(),
        }

    @routes.get(
        "/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}}
    )
    async def metrics() -> Response:
        """Prometheus metrics (text exposition format)."""
        body, ctype = core.exposition()
        return Response(body, media_type=ctype)
