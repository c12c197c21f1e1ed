"""The model service: a verified bundle behind REST, with a prediction log and metrics.

Routes:

- ``POST /predict``: records in (typed from the signature's raw inputs, so a wrong or missing
  field is a 422 naming ``records.0.age``), labels and probabilities (or values) out;
- the Open Inference Protocol V2 (:mod:`mlcycle.serve.oip`): ``/v2``, ``/v2/health/live``,
  ``/v2/health/ready``, ``/v2/models/{name}[/versions/{version}][/ready|/infer]``;
- ``GET /health`` (liveness and the model's identity), ``GET /metadata`` (provenance and
  signature), ``GET /metrics`` (Prometheus), ``POST /admin/reload`` (only with a token).

Scoring goes through the compiled encoder (:mod:`mlcycle.encoder`) and the model's
``output_encoded``: bit for bit the values of ``to_model_frame`` + ``output`` that evaluation
and batch prediction use, without a pandas frame per request. Every scored record is put on
the prediction log's queue (:mod:`mlcycle.predlog`) with the request id; when the queue is full
the request is answered 503 instead of losing a logged prediction.
"""

import asyncio
import functools
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NotRequired

import numpy as np
import orjson
from fastapi import Body, FastAPI, Header, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints, with_config
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from typing_extensions import TypedDict

from mlcycle.bundle import Bundle, load_bundle
from mlcycle.encoder import Encoder
from mlcycle.features import SchemaError, Signature
from mlcycle.predict import decide
from mlcycle.predlog import PredictionLogError
from mlcycle.serve import oip
from mlcycle.serve.guard import Guard
from mlcycle.serve.telemetry import Telemetry
from mlcycle.tasks import BINARY

logger = logging.getLogger("mlcycle.serve")

MAX_RECORDS = 10_000
MAX_TEXT = 1_000  # characters in one text field; a longer one is refused, never echoed
SHOWN = 60  # characters of an unseen category a warning repeats


# --- settings and the model in service ------------------------------------------------------


@dataclass(frozen=True)
class ServeSettings:
    """How the service behaves; ``mlcycle serve`` fills it from its options."""

    max_body_bytes: int = 8 * 1024 * 1024
    body_timeout: float = 10.0
    max_records: int = MAX_RECORDS
    admin_token: str | None = None
    # Where a reload finds the model: a bundle directory, or None for the registry's
    # production version of ``model_name`` in ``project``.
    bundle_dir: str | None = None
    project: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    # Bumped by a reload in any worker; the others see it and reload too.
    generation_file: str | None = None


@dataclass(frozen=True, eq=False)
class Loaded:
    """The model in service: swapped as one object by a reload, so a request sees one model."""

    bundle: Bundle
    encoder: Encoder
    name: str
    version: str | None

    @property
    def signature(self) -> Signature:
        return self.bundle.signature

    @classmethod
    def of(cls, bundle: Bundle, version: str | None) -> "Loaded":
        name = bundle.metadata.get("name", "model")
        bundle.model.set_threads(1)  # one worker process per core: no thread pool per request
        return cls(bundle, Encoder.compile(bundle.signature), name, version)

    @functools.cached_property
    def info_json(self) -> bytes:
        """The ``model`` part of every /predict answer, serialised once per loaded model."""
        return orjson.dumps(model_info(self).model_dump(exclude_none=True))


@dataclass
class State:
    loaded: Loaded
    settings: ServeSettings
    log: Any = None  # mlcycle.predlog.PredictionLog or None
    telemetry: Telemetry | None = None
    generation: float = 0.0
    next_check: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


# --- request and response bodies ------------------------------------------------------------


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


def _text(value: Any) -> Any:
    """Text must be valid Unicode (no lone surrogates, which JSON allows as escapes) and at most
    :data:`MAX_TEXT` characters (for values that did not come through pydantic)."""
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise ValueError(f"text of {len(value)} characters; at most {MAX_TEXT} are accepted")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("not valid Unicode text (it holds a lone surrogate)") from None
    return value


def example_record(signature: Signature) -> dict[str, Any]:
    """A record for the documentation: each category input's first category, 0 for numbers."""
    return {
        f.name: (f.categories[0] if f.categories else None) if f.kind != "numeric" else 0.0
        for f in signature.inputs
    }


def record_model(signature: Signature) -> type:
    """The type of one input record: a TypedDict keyed by the raw inputs' names.

    Every raw input the model needs must be present (null allowed); derived features are
    computed by the service, never sent. Columns the training data had but the model does not
    use may be sent and are ignored; any other field is refused. Validated records are plain
    dicts, ready for the encoder.
    """
    fields: dict[str, Any] = {
        feat.name: Number if feat.kind == "numeric" else Text for feat in signature.inputs
    }
    for name in signature.unused_inputs:
        fields[name] = NotRequired[Annotated[Text | float, Field(description="ignored")]]
    record = TypedDict("Record", fields)  # type: ignore[misc]
    record.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]
    return record


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
    version: str | None = Field(None, description="the registered version, if served from one")
    id: str = Field(description="first 12 hex digits of the model file's SHA-256")
    kind: str = Field(description="the model kind: xgboost, logistic_regression, ridge, ...")
    task: str = Field(description="binary_classification, multiclass_classification or regression")
    classes: list[str] = Field(description="classification: the classes, in the model's order")
    threshold: float | None = Field(
        None, description="binary classification: the decision threshold"
    )


class PredictResponse(BaseModel):
    request_id: str
    predictions: list[Prediction]
    model: ModelInfo
    warnings: list[str] = Field(default_factory=list)


class ErrorDetail(BaseModel):
    detail: Any


def model_info(loaded: Loaded) -> ModelInfo:
    b = loaded.bundle
    return ModelInfo(
        name=loaded.name,
        version=loaded.version,
        id=b.model_id,
        kind=b.kind,
        task=b.task,
        classes=list(b.signature.classes),
        threshold=b.threshold,
    )


def prediction_dicts(
    output: np.ndarray, labels: list[str] | None, signature: Signature
) -> list[dict[str, Any]]:
    """Each record's prediction as plain JSON-ready dicts (what /predict returns and the log
    stores), shaped by the task."""
    if not signature.is_classification:
        return [{"value": v} for v in np.asarray(output, dtype=np.float64).tolist()]
    classes = signature.classes
    rows = np.asarray(output, dtype=np.float64).tolist()
    if signature.task == BINARY:
        return [
            {
                "label": lab,
                "probabilities": dict(zip(classes, row, strict=True)),
                "probability": row[1],
            }
            for lab, row in zip(labels or [], rows, strict=True)
        ]
    return [
        {"label": lab, "probabilities": dict(zip(classes, row, strict=True))}
        for lab, row in zip(labels or [], rows, strict=True)
    ]


# --- the service ----------------------------------------------------------------------------


class _JsonRequest(Request):
    """A request whose JSON body is parsed by orjson, three times faster than the standard
    library on a 100-record body. UTF-8 only (RFC 8259; a leading BOM is ignored). What orjson
    refuses but the standard library reads (NaN, Infinity, 1e400, lone surrogates) is read by
    the latter, so validation names the field; anything else is a JSONDecodeError, which
    FastAPI turns into a 400 naming the position."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            body = body[3:] if body.startswith(b"\xef\xbb\xbf") else body
            try:
                self._json = orjson.loads(body)
            except orjson.JSONDecodeError:
                # NaN, Infinity, 1e400 or a lone surrogate: the standard library reads them, so
                # the validation names the field (422); what it cannot read is a 400
                try:
                    text = body.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise json.JSONDecodeError("the body is not UTF-8", "", exc.start) from None
                self._json = json.loads(text)
        return self._json


class _Route(APIRoute):
    """Routes whose handlers get a :class:`_JsonRequest` (FastAPI's documented way to change
    how a body is read)."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(_JsonRequest(request.scope, request.receive))

        return route


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _route_of(app: FastAPI) -> Callable[[dict], str]:
    """The route template a request matched (``/v2/models/{name}/infer``), for metric labels
    that do not grow with every model name or unknown path."""

    def route_of(scope: dict) -> str:
        for route in app.router.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return getattr(route, "path", "other")
        return "unmatched"

    return route_of


def create_app(
    bundle: Bundle,
    settings: ServeSettings | None = None,
    *,
    log: Any = None,
    version: str | None = None,
) -> FastAPI:
    """Build the service around an already verified bundle (and an optional prediction log,
    which the app closes, flushing it, when it shuts down)."""
    settings = settings or ServeSettings()
    loaded = Loaded.of(bundle, version or settings.model_version)
    sig = loaded.signature
    telemetry = Telemetry(task_is_probability=sig.task == BINARY)
    state = State(loaded=loaded, settings=settings, log=log, telemetry=telemetry)
    telemetry.set_model(bundle.model_id, loaded.name, loaded.version)
    if settings.generation_file and os.path.exists(settings.generation_file):
        state.generation = os.path.getmtime(settings.generation_file)
    Record = record_model(sig)

    @with_config(
        ConfigDict(
            extra="forbid", json_schema_extra={"examples": [{"records": [example_record(sig)]}]}
        )
    )
    class PredictRequest(TypedDict):
        records: Annotated[
            list[Record],  # type: ignore[valid-type]
            Field(min_length=1, max_length=settings.max_records),
        ]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if state.log is not None:
            lost = state.log.close()
            if lost:
                logger.error("prediction log: %d record(s) could not be written", lost)

    errors = {
        400: {"model": ErrorDetail, "description": "malformed request (e.g. invalid JSON)"},
        408: {"model": ErrorDetail, "description": "the body did not arrive in time"},
        413: {"model": ErrorDetail, "description": "the body is too large"},
        415: {"model": ErrorDetail, "description": "the body is not application/json"},
        422: {"model": ErrorDetail, "description": "a field is missing or of the wrong type"},
        503: {"model": ErrorDetail, "description": "the prediction log is full; retry later"},
    }
    app = FastAPI(
        title="mlcycle model service",
        description=f"Predicts {sig.target!r} ({sig.task}"
        + (f", classes {list(sig.classes)}" if sig.classes else "")
        + "). Also speaks the Open Inference Protocol V2 under /v2.",
        version=bundle.model_id,
        lifespan=lifespan,
    )
    app.router.route_class = _Route
    app.state.mlcycle = state
    blocking_log = log is not None and getattr(log, "when_full", "reject") == "block"

    # -- errors: always JSON, never a 500 for a client's fault -----------------------------

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        """422 naming the field; the offending input is not echoed (it may be NaN/Infinity,
        which JSON cannot carry, a whole record, or megabytes of text)."""
        errors_ = _merge_union_errors(
            [
                {k: v for k, v in err.items() if k not in ("input", "ctx")}
                | (
                    {"msg": f"invalid JSON: {err.get('ctx', {}).get('error', 'cannot parse')}"}
                    if err.get("type") == "json_invalid"
                    else {}
                )
                for err in exc.errors()
            ]
        )
        status = 400 if any(e.get("type") == "json_invalid" for e in errors_) else 422
        if request.url.path.startswith("/v2/"):
            return _json({"error": _first_error(errors_)}, status)
        return _json({"detail": jsonable_encoder(errors_)}, status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = getattr(exc, "headers", None)
        if request.url.path.startswith("/v2/"):
            return _json({"error": str(exc.detail)}, exc.status_code, headers)
        return _json({"detail": exc.detail}, exc.status_code, headers)

    @app.exception_handler(RecursionError)
    async def too_deep(request: Request, exc: RecursionError) -> Response:
        return _json({"detail": "the JSON body is nested too deeply"}, 400)

    # -- the model --------------------------------------------------------------------------

    def current() -> Loaded:
        """The model to use for this request (reloading first if another worker did)."""
        gen_file = settings.generation_file
        if gen_file and time.monotonic() >= state.next_check:
            state.next_check = time.monotonic() + 1.0
            try:
                mtime = os.path.getmtime(gen_file)
            except OSError:
                mtime = state.generation
            if mtime > state.generation:
                reload_model(touch=False)
        return state.loaded

    def reload_model(touch: bool) -> Loaded:
        """Load and verify the model again (from the bundle folder, or the registry's current
        production version), then swap it in; a failure leaves the old one serving."""
        with state.lock:
            if settings.bundle_dir:
                new_bundle, new_version = load_bundle(settings.bundle_dir), settings.model_version
            else:
                from mlcycle import registry

                root = Path(settings.project or ".")
                v = registry.resolve(root, settings.model_name or loaded.name, None)
                new_bundle, new_version = load_bundle(registry.fetch_bundle(root, v)), v.version
            if new_bundle.signature.to_dict() != state.loaded.signature.to_dict():
                raise HTTPException(
                    409,
                    "the new model has another signature (inputs or classes): restart the "
                    "service with it instead of reloading",
                )
            state.loaded = Loaded.of(new_bundle, new_version)
            telemetry.set_model(new_bundle.model_id, state.loaded.name, new_version)
            if settings.generation_file:
                if touch:
                    Path(settings.generation_file).touch()
                state.generation = os.path.getmtime(settings.generation_file)
            logger.info("reloaded model %s (%s)", new_bundle.model_id, new_version)
            return state.loaded

    def score(
        records: list[dict[str, Any]], request_id: str
    ) -> tuple[Loaded, np.ndarray, list[str] | None, dict]:
        model = current()
        try:
            encoded = model.encoder.encode_with_unseen(records)
            output = model.bundle.model.output_encoded(encoded.matrix, model.signature)
        except SchemaError as exc:  # a value the model cannot take (beyond float32, ...)
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        labels = decide(output, model.signature, model.bundle.threshold)
        return model, output, labels, encoded.unseen

    def observe(model: Loaded, output: np.ndarray, labels: list[str] | None) -> None:
        sig_ = model.signature
        scores = output[:, 1] if sig_.task == BINARY else (None if labels else output)
        telemetry.observe_predictions(model.bundle.model_id, labels, scores)

    async def log_request(
        model: Loaded,
        request_id: str,
        inputs: list[dict] | str,
        outputs: list[dict[str, Any]] | bytes,
        n: int,
    ) -> None:
        """Queue one request's records and outputs for the prediction log (as JSON already
        made when there is some: the body as received, the predictions as answered); 503 if
        the log cannot take them."""
        if state.log is None:
            return
        submit = functools.partial(
            state.log.submit,
            request_id,
            inputs,
            outputs,
            model_name=model.name,
            model_id=model.bundle.model_id,
            model_version=model.version,
            n=n,
        )
        if blocking_log:  # waits for room: not on the event loop
            accepted = await asyncio.to_thread(submit)
        else:
            accepted = submit()
        telemetry.queue.set(state.log.depth)
        if not accepted:
            raise HTTPException(
                503,
                "the prediction log cannot keep up; the request was not scored into the log, "
                "retry later",
                headers={"Retry-After": "1"},
            )

    def warnings_for(records: list[dict], unseen: dict[str, list[str]]) -> list[str]:
        out = [
            f"field {col!r}: unseen categor{'y' if len(v) == 1 else 'ies'} "
            f"{[s if len(s) <= SHOWN else s[:SHOWN] + '...' for s in v[:5]]}"
            f"{f' and {len(v) - 5} more' if len(v) > 5 else ''} treated as missing"
            for col, v in unseen.items()
        ]
        empty = [i for i, r in enumerate(records) if all(v is None for v in r.values())]
        if empty:
            shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
            out.append(f"record(s) {shown}: every input is null; the prediction is a prior")
        return out

    # -- our REST API -------------------------------------------------------------------------

    @app.post(
        "/predict",
        response_model=PredictResponse,
        response_model_exclude_none=True,
        responses=errors,
    )
    async def predict(request: PredictRequest, http: Request) -> Response:
        """Score one or many records."""
        request_id = http.scope["state"]["request_id"]
        records = request["records"]
        if sig.unused_inputs:  # accepted and ignored
            for r in records:
                for name in sig.unused_inputs:
                    r.pop(name, None)
        model, output, labels, unseen = score(records, request_id)
        preds = orjson.dumps(prediction_dicts(output, labels, model.signature))
        # the body as received is the log's record of the inputs (it passed validation, so it
        # is JSON text); the predictions are serialised once, for the answer and the log
        raw = await http.body()
        try:  # the parser took it, so it is UTF-8 (a leading BOM is dropped)
            inputs: Any = raw.decode("utf-8-sig")
        except UnicodeDecodeError:  # not reached: logged as parsed then
            inputs = records
        await log_request(model, request_id, inputs, preds, len(records))
        observe(model, output, labels)
        body = b"".join(
            (
                b'{"request_id":',
                orjson.dumps(request_id),
                b',"predictions":',
                preds,
                b',"model":',
                model.info_json,
                b',"warnings":',
                orjson.dumps(warnings_for(records, unseen)),
                b"}",
            )
        )
        return Response(body, media_type="application/json")

    class FeedbackItem(BaseModel):
        """The true label of one record (``row``) or of every record of a request."""

        model_config = ConfigDict(extra="forbid")
        request_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
        row: Annotated[int, Field(ge=0)] | None = Field(
            None, description="the record's position in its request; null: every record"
        )
        label: (
            Annotated[str, StringConstraints(max_length=MAX_TEXT)] | Annotated[int, Strict()]
            if sig.is_classification
            else Annotated[float, Strict(), Field(allow_inf_nan=False)]
        ) = Field(description="the true class" if sig.is_classification else "the true value")

    class FeedbackRequest(BaseModel):
        model_config = ConfigDict(
            extra="forbid",
            json_schema_extra={
                "examples": [
                    {
                        "labels": [
                            {
                                "request_id": "4f1c...",
                                "row": 0,
                                "label": sig.classes[0] if sig.is_classification else 1.0,
                            }
                        ]
                    }
                ]
            },
        )
        labels: Annotated[list[FeedbackItem], Field(min_length=1, max_length=settings.max_records)]

    class FeedbackResponse(BaseModel):
        received: int = Field(description="labels in the request")
        matched: int = Field(description="logged records that got their label")

    @app.post(
        "/feedback",
        response_model=FeedbackResponse,
        responses={**errors, 409: {"model": ErrorDetail, "description": "no prediction log"}},
    )
    async def feedback(request: FeedbackRequest) -> FeedbackResponse:
        """Attach true labels to logged predictions, by request id (and record position), for
        monitoring performance once labels arrive. A label for a record that was never logged
        matches nothing (``matched`` says how many did)."""
        if state.log is None:
            raise HTTPException(
                409, "the prediction log is off (mlcycle serve --no-log): labels have no home"
            )
        classes = set(sig.classes)
        triples = []
        for i, item in enumerate(request.labels):
            label = item.label
            if sig.is_classification:
                label = str(label)
                if label not in classes:
                    raise HTTPException(
                        422,
                        f"labels.{i}.label: {label[:SHOWN]!r} is not a class of the model "
                        f"({sorted(classes)})",
                    )
            triples.append((item.request_id, item.row, label))
        try:
            matched = await asyncio.to_thread(state.log.attach_labels, triples)
        except PredictionLogError as exc:  # the database is down: the client may retry
            logger.warning("feedback: attaching labels failed: %s", exc)
            raise HTTPException(
                503,
                "the prediction log's database is not available; retry later",
                headers={"Retry-After": "5"},
            ) from None
        return FeedbackResponse(received=len(triples), matched=matched)

    @app.get("/health")
    async def health() -> dict:
        """Liveness and the identity of the loaded model."""
        return {"status": "ok", "model": model_info(current()).model_dump()}

    @app.get("/metadata")
    async def metadata() -> dict:
        """Where the model came from (params, metrics, data hashes, commit) and its signature."""
        model = current()
        return {
            "model": model_info(model).model_dump(),
            "signature": model.signature.to_dict(),
            "metadata": model.bundle.metadata,
        }

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        """Prometheus metrics (text exposition format)."""
        if state.log is not None:
            telemetry.queue.set(state.log.depth)
        body, ctype = telemetry.exposition()
        return Response(body, media_type=ctype)

    @app.post("/admin/reload", response_model=ModelInfo, responses=errors)
    async def admin_reload(authorization: Annotated[str | None, Header()] = None) -> ModelInfo:
        """Load and verify the current model again and switch to it between requests. Off
        unless the service was started with an admin token (``MLCYCLE_ADMIN_TOKEN``)."""
        token = settings.admin_token
        if not token:
            raise HTTPException(404, "not found")
        if authorization != f"Bearer {token}":
            raise HTTPException(401, "a valid 'Authorization: Bearer <token>' is required")
        try:
            return model_info(reload_model(touch=True))
        except HTTPException:
            raise
        except (ValueError, OSError) as exc:
            raise HTTPException(
                409, f"reload refused, the current model keeps serving: {exc}"
            ) from exc

    # -- Open Inference Protocol V2 -----------------------------------------------------------

    def check_model(name: str, version: str | None) -> Loaded:
        model = current()
        if name != model.name:
            raise HTTPException(404, f"model {name!r} is not served here; {model.name!r} is")
        if version is not None and version not in (model.version, model.bundle.model_id):
            raise HTTPException(
                404,
                f"version {version!r} of {name!r} is not served; {versions(model)[0]!r} is",
            )
        return model

    def versions(model: Loaded) -> list[str]:
        return [model.version or model.bundle.model_id]

    @app.get("/v2", response_model=oip.ServerMetadata)
    async def v2_server() -> oip.ServerMetadata:
        """Server metadata."""
        from mlcycle import __version__

        return oip.ServerMetadata(name="mlcycle", version=__version__, extensions=[])

    @app.get("/v2/health/live")
    async def v2_live() -> dict:
        """The process is up."""
        return {"live": True}

    @app.get("/v2/health/ready", responses={503: {"model": oip.ErrorResponse}})
    async def v2_ready() -> Response:
        """Ready: the bundle is verified and loaded, and the prediction log takes records."""
        ok = state.log is None or state.log.accepting
        return _json({"ready": ok}, 200 if ok else 503)

    model_responses = {404: {"model": oip.ErrorResponse}}
    # The served model's name and version as the documented examples of the path parameters.
    Name = Annotated[str, PathParam(examples=[loaded.name], description="the model's name")]
    example = example_record(sig)
    InferBody = Annotated[
        oip.InferenceRequest,
        Body(
            examples=[
                {
                    "inputs": [
                        {
                            "name": k,
                            "shape": [1],
                            "datatype": "BYTES" if isinstance(v, str) else "FP64",
                            "data": [v],
                        }
                        for k, v in example.items()
                    ]
                }
            ]
        ),
    ]
    Version = Annotated[
        str,
        PathParam(
            examples=[loaded.version or bundle.model_id],
            description="its version (or model id)",
        ),
    ]
    infer_responses = {
        400: {"model": oip.ErrorResponse},
        404: {"model": oip.ErrorResponse},
        413: {"model": ErrorDetail},
        415: {"model": ErrorDetail},
        503: {"model": oip.ErrorResponse},
    }

    def model_metadata(name: str, version: str | None) -> oip.ModelMetadata:
        model = check_model(name, version)
        return oip.model_metadata(model.signature, model.name, versions(model))

    def model_ready(name: str, version: str | None) -> dict:
        return {"name": check_model(name, version).name, "ready": True}

    async def infer(
        name: str, version: str | None, body: oip.InferenceRequest, http: Request
    ) -> Response:
        model = check_model(name, version)
        request_id = body.id or http.scope["state"]["request_id"]
        try:
            records = oip.records_from_inputs(body.inputs, model.signature)
            if len(records) > settings.max_records:
                raise oip.OipError(f"{len(records)} records; at most {settings.max_records}")
            for rec in records:
                for value in rec.values():
                    _text(value)
        except ValueError as exc:  # OipError, or text that is not valid or too long
            raise HTTPException(400, str(exc)) from exc
        model, output, labels, _ = score(records, request_id)
        try:
            outputs = oip.outputs_for(model.signature, output, labels, body.outputs)
        except oip.OipError as exc:
            raise HTTPException(400, str(exc)) from exc
        preds = prediction_dicts(output, labels, model.signature)
        await log_request(model, request_id, records, preds, len(records))
        observe(model, output, labels)
        return _json(
            {
                "model_name": model.name,
                "model_version": versions(model)[0],
                "id": request_id,
                "outputs": [o.model_dump(exclude_none=True) for o in outputs],
            }
        )

    @app.get(
        "/v2/models/{name}",
        response_model=oip.ModelMetadata,
        response_model_exclude_none=True,
        responses=model_responses,
    )
    async def v2_model(name: Name) -> oip.ModelMetadata:
        """The model's inputs (one tensor per raw input) and outputs."""
        return model_metadata(name, None)

    @app.get(
        "/v2/models/{name}/versions/{version}",
        response_model=oip.ModelMetadata,
        response_model_exclude_none=True,
        responses=model_responses,
    )
    async def v2_model_version(name: Name, version: Version) -> oip.ModelMetadata:
        """The model's inputs and outputs, for one version."""
        return model_metadata(name, version)

    @app.get("/v2/models/{name}/ready", responses=model_responses)
    async def v2_model_ready(name: Name) -> dict:
        """Whether this model is ready."""
        return model_ready(name, None)

    @app.get("/v2/models/{name}/versions/{version}/ready", responses=model_responses)
    async def v2_model_version_ready(name: Name, version: Version) -> dict:
        """Whether this version of the model is ready."""
        return model_ready(name, version)

    @app.post(
        "/v2/models/{name}/infer",
        response_model=oip.InferenceResponse,
        response_model_exclude_none=True,
        responses=infer_responses,
    )
    async def v2_infer(name: Name, body: InferBody, http: Request) -> Response:
        """Score the records the input tensors hold (one tensor per raw input)."""
        return await infer(name, None, body, http)

    @app.post(
        "/v2/models/{name}/versions/{version}/infer",
        response_model=oip.InferenceResponse,
        response_model_exclude_none=True,
        responses=infer_responses,
    )
    async def v2_infer_version(
        name: Name, version: Version, body: InferBody, http: Request
    ) -> Response:
        """Score the records with one version of the model."""
        return await infer(name, version, body, http)

    app.add_middleware(
        Guard,
        max_body_bytes=settings.max_body_bytes,
        body_timeout=settings.body_timeout,
        observe=telemetry.observe_request,
        route_of=_route_of(app),
    )
    return app


# The branch names pydantic puts at the end of an error's location for a :data:`Number`.
UNION_BRANCHES = ("float", "constrained-str", "str")


def _merge_union_errors(errors: list[dict]) -> list[dict]:
    """One error per field for a :data:`Number` (pydantic reports each branch of the union)."""
    out: list[dict] = []
    seen: set[tuple] = set()
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if len(loc) > 1 and loc[-1] in UNION_BRANCHES:
            field_loc = loc[:-1]
            if field_loc in seen:
                continue
            seen.add(field_loc)
            msg = (
                "Input should be a finite number"
                if err.get("type") == "finite_number"
                else "Input should be a number (or a string holding one), or null"
            )
            out.append({"type": "number_type", "loc": list(field_loc), "msg": msg})
        else:
            out.append(err)
    return out


def _first_error(errors: list[dict]) -> str:
    if not errors:
        return "invalid request"
    err = errors[0]
    where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
    return f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid"))
