"""FastAPI application serving a verified model bundle.

Request bodies are typed from the raw inputs in the bundle's signature, so a wrong or missing
field is a 422 naming the field (``records.0.age``), never a 500. Scoring uses the same library
code as evaluation and batch prediction (:func:`mlcycle.features.to_model_frame`), derived
features included.
"""

from typing import Annotated, Any

import pandas as pd
from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from mlcycle.bundle import Bundle
from mlcycle.features import SchemaError, Signature, unseen_categories
from mlcycle.predict import Scores, score
from mlcycle.tasks import BINARY

MAX_RECORDS = 10_000


def _not_bool(value: Any) -> Any:
    """JSON true/false is not a number, whatever Python's bool-is-int says."""
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    return value


Number = Annotated[float, BeforeValidator(_not_bool)]


def record_model(signature: Signature) -> type[BaseModel]:
    """A pydantic model of one input record.

    Every raw input the model needs must be present (null allowed); derived features are
    computed by the service, never sent. Columns the training data had but the model does not
    use may be sent and are ignored; any other field is refused.
    """
    fields: dict[str, Any] = {}
    for i, feat in enumerate(signature.inputs):
        kind = (Number | None) if feat.kind == "numeric" else (str | None)
        extra = {"allow_inf_nan": False} if feat.kind == "numeric" else {}
        fields[f"f{i}"] = (kind, Field(..., alias=feat.name, **extra))
    for i, name in enumerate(signature.unused_inputs):
        fields[f"u{i}"] = (str | float | None, Field(None, alias=name, description="ignored"))
    return create_model(
        "Record", __config__=ConfigDict(extra="forbid", populate_by_name=False), **fields
    )


class Prediction(BaseModel):
    """One record's prediction; which fields are present follows the model's task."""

    label: str | None = Field(
        None,
        description="classification: the predicted class (binary: at the model's decision "
        "threshold; multiclass: the most probable class)",
    )
    probabilities: dict[str, float] | None = Field(
        None, description="classification: the probability of every class"
    )
    probability: float | None = Field(
        None, description="binary classification: the probability of the positive class"
    )
    value: float | None = Field(None, description="regression: the predicted value")


class ModelInfo(BaseModel):
    name: str
    id: str = Field(description="first 12 hex digits of the model file's SHA-256")
    kind: str = Field(description="the model kind: xgboost, logistic_regression, ridge, ...")
    task: str = Field(description="binary_classification, multiclass_classification or regression")
    classes: list[str] = Field(description="classification: the classes, in the model's order")
    threshold: float | None = Field(
        None, description="binary classification: the decision threshold"
    )


def predictions(scores: Scores, signature: Signature) -> list[Prediction]:
    """The response's predictions, shaped by the task."""
    if not signature.is_classification:
        return [Prediction(value=float(v)) for v in scores.output]
    binary = signature.task == BINARY
    classes = signature.classes
    return [
        Prediction(
            label=label,
            probabilities={c: float(p) for c, p in zip(classes, row, strict=True)},
            probability=float(row[1]) if binary else None,
        )
        for label, row in zip(scores.labels or [], scores.output, strict=True)
    ]


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    model: ModelInfo
    warnings: list[str] = Field(default_factory=list)


def create_app(bundle: Bundle) -> FastAPI:
    """Build the service around an already verified bundle."""
    sig = bundle.signature
    Record = record_model(sig)
    info = ModelInfo(
        name=bundle.metadata.get("name", "model"),
        id=bundle.model_id,
        kind=bundle.kind,
        task=bundle.task,
        classes=list(sig.classes),
        threshold=bundle.threshold,
    )

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        records: list[Record] = Field(..., min_length=1, max_length=MAX_RECORDS)  # type: ignore[valid-type]

    app = FastAPI(
        title="mlcycle model service",
        description=f"Predicts {sig.target!r} ({sig.task}"
        + (f", classes {list(sig.classes)}" if sig.classes else "")
        + ").",
        version=info.id,
    )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 naming the field; the offending input is not echoed (it may be NaN/Infinity,
        which JSON cannot carry, or a whole record)."""
        errors = [{k: v for k, v in err.items() if k != "input"} for err in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})

    @app.get("/health")
    def health() -> dict:
        """Liveness and the identity of the loaded model."""
        return {"status": "ok", "model": info.model_dump()}

    @app.get("/metadata")
    def metadata() -> dict:
        """Where the model came from (params, metrics, data hashes, commit) and its signature."""
        return {"model": info.model_dump(), "signature": sig.to_dict(), "metadata": bundle.metadata}

    @app.post("/predict", response_model=PredictResponse, response_model_exclude_none=True)
    def predict(request: PredictRequest) -> PredictResponse:
        """Score one or many records."""
        frame = pd.DataFrame(
            [r.model_dump(by_alias=True) for r in request.records], columns=sig.input_columns
        )
        try:
            scores = score(bundle, frame)
        except SchemaError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        warnings = [
            f"field {col!r}: unseen categor{'y' if len(v) == 1 else 'ies'} {v} treated as missing"
            for col, v in unseen_categories(frame, sig).items()
        ]
        return PredictResponse(
            predictions=predictions(scores, sig),
            model=info,
            warnings=warnings,
        )

    return app
