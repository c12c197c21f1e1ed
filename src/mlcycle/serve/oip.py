"""The Open Inference Protocol (KServe V2) REST body types, and the translation between its
tensors and our records.

A request carries one named input tensor per raw input of the signature (shape ``[n]`` or
``[n, 1]``, row-major ``data``, nested lists accepted): ``FP32``/``FP64``/``INT*`` for numeric
inputs, ``BYTES`` (strings) for categorical ones; ``null`` in ``data`` is a missing value (JSON
has no NaN). The response's output tensors follow the task: ``label`` (BYTES ``[n]``),
``probabilities`` (FP64 ``[n, k]``, classes in ``parameters.classes``) and, for binary
classification, ``probability`` (FP64 ``[n]``, the positive class); ``value`` (FP64 ``[n]``) for
regression. KServe and MLServer clients (``tritonclient.http``, ``mlserver.codecs``) send and read
exactly this. A tensor may also hold a column of the schema the model does not use (kept in the
prediction log, not scored); the schema's per-row rules apply as on ``/predict``
(:mod:`mlcycle.serve.rules`), a refusal being a 400 as every error of the protocol.

:func:`add_routes` serves it over the service's :class:`~mlcycle.serve.core.Core`: ``/v2``,
``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/{name}[/versions/{version}]`` and
their ``/ready`` and ``/infer``.
"""

import math
import sys
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Body, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from mlcycle import __version__, registry, tasks
from mlcycle.features import Signature
from mlcycle.serve.core import (
    MAX_TEXT,
    Core,
    Loaded,
    example_record,
    prediction_dicts,
    shown,
)
from mlcycle.serve.http import ErrorDetail, json_response, requires
from mlcycle.serve.rules import check_columns, extra_fields

NUMERIC_TYPES = (
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64",
)  # fmt: skip
Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip


class OipError(ValueError):
    """A request that does not fit the protocol or the model; answered 400 with ``error``."""


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="the raw input (column) this tensor holds")
    shape: list[int] = Field(description="[n] or [n, 1]: one value per record")
    datatype: Datatype
    parameters: dict[str, Any] | None = None
    data: list[Any] = Field(description="the values, row-major (nested lists accepted)")


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(None, max_length=128)
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Datatype
    parameters: dict[str, Any] | None = None
    data: list[Any]


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


class TensorMetadata(BaseModel):
    name: str
    datatype: Datatype
    shape: list[int]
    parameters: dict[str, Any] | None = None


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ErrorResponse(BaseModel):
    error: str


def _flatten(data: list[Any]) -> list[Any]:
    """Nested lists flattened row-major (iteratively: no recursion limit to hit)."""
    if not any(isinstance(v, list) for v in data):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            out.append(value)
        else:
            stack.pop()
    return out


def columns_from_inputs(
    inputs: list[RequestInput], signature: Signature, extra: Mapping[str, str] | None = None
) -> dict[str, list[Any]]:
    """The values of each raw input (its tensor flattened), every value checked (numbers
    finite, texts valid and at most :data:`~mlcycle.serve.core.MAX_TEXT` characters: tensors
    do not come through the pydantic types of ``/predict``, which check both); an error names
    the tensor, the row and the problem. Columns, not records: the encoder takes them as they
    are. ``extra`` (name -> kind, :func:`mlcycle.serve.rules.extra_fields`) are the schema's
    columns the model does not use: a tensor of one is optional and kept (for the log), not
    scored; a tensor of another column of the training data the model does not use is
    ignored."""
    required = [f.name for f in signature.inputs]
    kinds = {f.name: f.kind for f in signature.inputs} | dict(extra or {})
    unused = set(signature.unused_inputs) - set(kinds)
    given = {t.name for t in inputs}
    if len(given) != len(inputs):
        raise OipError("an input tensor name occurs twice")
    unknown = sorted(given - set(kinds) - unused)
    if unknown:
        also = f"; it may also send {sorted({*kinds} - {*required})}" if extra else ""
        named = ", ".join(map(shown, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
        raise OipError(f"unknown input(s) [{named}]; the model's inputs are {required}{also}")
    missing = [name for name in required if name not in given]
    if missing:
        raise OipError(f"missing input(s) {missing}; the model needs {required}")
    columns: dict[str, list[Any]] = {}
    n: int | None = None
    for tensor in inputs:
        if tensor.name in unused:
            continue
        kind = kinds[tensor.name]
        shape = tensor.shape
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 1:
            raise OipError(f"input {shown(tensor.name)}: shape {shape}; expected [n] or [n, 1]")
        values = _flatten(tensor.data)
        if len(values) != shape[0]:
            raise OipError(
                f"input {shown(tensor.name)}: shape {shape} needs {shape[0]} values, "
                f"got {len(values)}"
            )
        if n is not None and shape[0] != n:
            raise OipError(f"input {shown(tensor.name)} has {shape[0]} rows; the others have {n}")
        n = shape[0]
        if kind == "numeric":
            if tensor.datatype == "BYTES":
                raise OipError(f"input {shown(tensor.name)} is numeric; send FP64, FP32 or INT64")
            for i, v in enumerate(values):
                if v is None:
                    continue
                if isinstance(v, bool) and tensor.datatype != "BOOL":
                    raise OipError(f"input {shown(tensor.name)}, row {i}: a boolean, not a number")
                if not isinstance(v, int | float) or not _finite(v):
                    raise OipError(
                        f"input {shown(tensor.name)}, row {i}: {shown(v)} is not a finite number"
                    )
        else:
            if tensor.datatype != "BYTES":
                raise OipError(f"input {shown(tensor.name)} is categorical; send BYTES (strings)")
            for i, v in enumerate(values):
                if v is not None and not isinstance(v, str):
                    raise OipError(
                        f"input {shown(tensor.name)}, row {i}: {shown(v)} is not a string"
                    )
            _check_texts(tensor.name, values)
        columns[tensor.name] = values
    return columns


def _finite(v: int | float) -> bool:
    """A float finite, an integer within a float's range (``math.isfinite(10**400)`` raises
    OverflowError instead of answering)."""
    return math.isfinite(v) if isinstance(v, float) else abs(v) <= sys.float_info.max


def _check_texts(name: str, values: list[str | None]) -> None:
    """Texts at most MAX_TEXT characters and valid Unicode (no lone surrogates, which JSON
    allows as escapes): one pass over the column, the row looked for only when one fails."""
    texts = [v for v in values if v is not None]
    if max(map(len, texts), default=0) > MAX_TEXT:
        i, v = next((i, v) for i, v in enumerate(values) if v is not None and len(v) > MAX_TEXT)
        raise OipError(
            f"input {shown(name)}, row {i}: text of {len(v)} characters; at most {MAX_TEXT} "
            "are accepted"
        )
    try:
        "".join(texts).encode("utf-8")
    except UnicodeEncodeError:
        for i, v in enumerate(values):
            try:
                (v or "").encode("utf-8")
            except UnicodeEncodeError:
                raise OipError(
                    f"input {shown(name)}, row {i}: not valid Unicode text (it holds a lone "
                    "surrogate)"
                ) from None


OUTPUT_NAMES = {"label", "probabilities", "probability", "value"}


def outputs_for(
    signature: Signature,
    output: np.ndarray,
    labels: list[str] | None,
    wanted: list[RequestOutput] | None,
) -> list[ResponseOutput]:
    """The response tensors for the task, restricted to the requested ones (all by default)."""
    n = len(output)
    tensors: list[ResponseOutput] = []
    if signature.is_classification:
        classes = list(signature.classes)
        tensors.append(ResponseOutput(name="label", shape=[n], datatype="BYTES", data=labels or []))
        tensors.append(
            ResponseOutput(
                name="probabilities",
                shape=[n, len(classes)],
                datatype="FP64",
                parameters={"classes": classes},
                data=np.asarray(output, dtype=np.float64).ravel().tolist(),
            )
        )
        if tasks.get(signature.task).has_positive_class:
            tensors.append(
                ResponseOutput(
                    name="probability",
                    shape=[n],
                    datatype="FP64",
                    parameters={"class": classes[1]},
                    data=np.asarray(output[:, 1], dtype=np.float64).tolist(),
                )
            )
    else:
        data = np.asarray(output, dtype=np.float64).tolist()
        tensors.append(ResponseOutput(name="value", shape=[n], datatype="FP64", data=data))
    if wanted:
        have = {t.name: t for t in tensors}
        unknown = [w.name for w in wanted if w.name not in have]
        if unknown:
            raise OipError(f"unknown output(s) {unknown}; this model gives {list(have)}")
        tensors = [have[w.name] for w in wanted]
    return tensors


def model_metadata(signature: Signature, name: str, versions: list[str]) -> ModelMetadata:
    """The model's inputs (one tensor per raw input) and outputs, as the protocol lists them."""
    inputs = [
        TensorMetadata(
            name=f.name,
            datatype="FP64" if f.kind == "numeric" else "BYTES",
            shape=[-1],
            parameters={"categories": list(f.categories)} if f.kind != "numeric" else None,
        )
        for f in signature.inputs
    ]
    if signature.is_classification:
        k = len(signature.classes)
        outputs = [
            TensorMetadata(name="label", datatype="BYTES", shape=[-1]),
            TensorMetadata(
                name="probabilities",
                datatype="FP64",
                shape=[-1, k],
                parameters={"classes": list(signature.classes)},
            ),
        ]
        if tasks.get(signature.task).has_positive_class:
            outputs.append(TensorMetadata(name="probability", datatype="FP64", shape=[-1]))
    else:
        outputs = [TensorMetadata(name="value", datatype="FP64", shape=[-1])]
    return ModelMetadata(
        name=name, versions=versions, platform="mlcycle", inputs=inputs, outputs=outputs
    )


# --- the routes --------------------------------------------------------------------------------


def versions(model: Loaded) -> list[str]:
    """The versions a model answers to: its registered version, else its model id."""
    return [model.version or model.bundle.model_id]


def served_model(core: Core, name: str, version: str | None) -> Loaded:
    """The model in service asked for: production, or the challenger when ``version`` is its
    version (a version may be the registered one or the model id; without one, production,
    or the challenger if only its name is ``name``); 404 otherwise."""
    served = core.current()
    named = [m for m in served.models if m.name == name]
    if not named:
        raise HTTPException(404, f"model {shown(name)} is not served here; {served.prod.name!r} is")
    if version is None:
        return named[0]
    for model in named:
        if version in (model.version, model.bundle.model_id):
            return model
    raise HTTPException(
        404,
        f"version {shown(version)} of {shown(name)} is not served; "
        f"{' and '.join(repr(versions(m)[0]) for m in named)} "
        f"{'is' if len(named) == 1 else 'are'}",
    )


def request_columns(
    body: InferenceRequest, model: Loaded, max_records: int
) -> dict[str, list[Any]]:
    """The columns a request's tensors hold, every value checked and the schema's per-row
    rules applied (:mod:`mlcycle.serve.rules`); 400 naming the problem."""
    try:
        columns = columns_from_inputs(body.inputs, model.signature, extra_fields(model.bundle))
        n = len(next(iter(columns.values())))
        if n > max_records:
            raise OipError(f"{n} records; at most {max_records}")
        check_columns(model.bundle, columns)  # warnings: the protocol's answer has no place
    except ValueError as exc:  # OipError, a rule's refusal
        raise HTTPException(400, str(exc)) from exc
    return columns


async def infer(
    core: Core, name: str, version: str | None, body: InferenceRequest, http: Request
) -> Response:
    """Score the records of ``body`` with the model asked for, log them, and answer the
    output tensors asked for (all by default). Without a version, production answers, or the
    canary for its share of requests (:meth:`~mlcycle.serve.core.Core.route`); with one, that
    version answers (a shadow's answers nobody: 404)."""
    model = served_model(core, name, version)
    if model.role == registry.SHADOW:
        raise HTTPException(
            404, f"version {versions(model)[0]!r} of {shown(name)} is the shadow: it answers nobody"
        )
    request_id = body.id or http.scope["state"]["request_id"]
    columns = request_columns(body, model, core.settings.max_records)
    pinned = model if version is not None else None
    key = core.key_of({t.name: _flatten(t.data) for t in body.inputs if t.name == core.key})
    model, output, labels, _ = core.score(columns, request_id, pinned, key)
    try:
        outputs = outputs_for(model.signature, output, labels, body.outputs)
    except OipError as exc:
        raise HTTPException(400, str(exc)) from exc
    if core.log is not None:  # the log holds records, as /predict's do
        names = list(columns)
        records = [
            dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)
        ]
        preds = prediction_dicts(output, labels, model.signature)
        await core.log_request(model, request_id, records, preds, len(records))
    core.observe(model, output, labels)
    return json_response(
        {
            "model_name": model.name,
            "model_version": versions(model)[0],
            "id": request_id,
            "outputs": [o.model_dump(exclude_none=True) for o in outputs],
        }
    )


def infer_body(signature: Signature) -> Any:
    """The type of an inference request, documented with one example record as tensors."""
    example = example_record(signature)
    tensors = [
        {
            "name": k,
            "shape": [1],
            "datatype": "BYTES" if isinstance(v, str) else "FP64",
            "data": [v],
        }
        for k, v in example.items()
    ]
    return Annotated[InferenceRequest, Body(examples=[{"inputs": tensors}])]


MODEL_RESPONSES: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse}}
INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
    413: {"model": ErrorDetail},
    415: {"model": ErrorDetail},
    # the prediction log is full ({"error"}), or the worker holds its limit of requests (the
    # guard's {"detail"}, before the protocol's route is reached)
    503: {"model": ErrorResponse | ErrorDetail},
    401: {"model": ErrorResponse, "description": "no valid token (predict credentials set)"},
    403: {"model": ErrorResponse, "description": "the token lacks the scope 'predict'"},
}


def add_routes(routes: APIRouter, core: Core) -> None:
    """Add the protocol's routes over ``core`` to ``routes`` (the app's router): the
    server's, then the model's."""
    add_server_routes(routes, core)
    add_model_routes(routes, core)


def add_server_routes(routes: APIRouter, core: Core) -> None:
    """The server's metadata, liveness and readiness."""

    @routes.get("/v2", response_model=ServerMetadata)
    async def v2_server() -> ServerMetadata:
        """Server metadata."""
        return ServerMetadata(name="mlcycle", version=__version__, extensions=[])

    @routes.get("/v2/health/live")
    async def v2_live() -> dict:
        """The process is up."""
        return {"live": True}

    @routes.get("/v2/health/ready", responses={503: {"model": ErrorResponse}})
    async def v2_ready() -> Response:
        """Ready: the bundle is verified and loaded, and the prediction log takes records."""
        ok = core.ready
        return json_response({"ready": ok}, 200 if ok else 503)


def add_model_routes(routes: APIRouter, core: Core) -> None:
    """The served model's metadata, readiness and inference, with its name and version as the
    documented examples of the path parameters."""
    served = core.loaded
    Name = Annotated[str, PathParam(examples=[served.name], description="the model's name")]
    Version = Annotated[
        str, PathParam(examples=versions(served), description="its version (or model id)")
    ]
    InferBody = infer_body(core.signature)

    def metadata(name: str, version: str | None) -> ModelMetadata:
        """The model's metadata; without a version, every version served under its name
        (production's first, then the challenger's)."""
        model = served_model(core, name, version)
        named = [m for m in core.current().models if m.name == name] if version is None else []
        listed = [v for m in named for v in versions(m)] or versions(model)
        return model_metadata(model.signature, model.name, list(dict.fromkeys(listed)))

    def ready(name: str, version: str | None) -> dict:
        return {"name": served_model(core, name, version).name, "ready": True}

    @routes.get(
        "/v2/models/{name}",
        response_model=ModelMetadata,
        response_model_exclude_none=True,
        responses=MODEL_RESPONSES,
    )
    async def v2_model(name: Name) -> ModelMetadata:
        """The model's inputs (one tensor per raw input) and outputs."""
        return metadata(name, None)

    @routes.get(
        "/v2/models/{name}/versions/{version}",
        response_model=ModelMetadata,
        response_model_exclude_none=True,
        responses=MODEL_RESPONSES,
    )
    async def v2_model_version(name: Name, version: Version) -> ModelMetadata:
        """The model's inputs and outputs, for one version."""
        return metadata(name, version)

    @routes.get("/v2/models/{name}/ready", responses=MODEL_RESPONSES)
    async def v2_model_ready(name: Name) -> dict:
        """Whether this model is ready."""
        return ready(name, None)

    @routes.get("/v2/models/{name}/versions/{version}/ready", responses=MODEL_RESPONSES)
    async def v2_model_version_ready(name: Name, version: Version) -> dict:
        """Whether this version of the model is ready."""
        return ready(name, version)

    @routes.post(
        "/v2/models/{name}/infer",
        response_model=InferenceResponse,
        response_model_exclude_none=True,
        responses=INFER_RESPONSES,
        dependencies=requires(core.credentials, "predict"),
    )
    async def v2_infer(name: Name, body: InferBody, http: Request) -> Response:
        """Score the records the input tensors hold (one tensor per raw input)."""
        return await infer(core, name, None, body, http)

    @routes.post(
        "/v2/models/{name}/versions/{version}/infer",
        response_model=InferenceResponse,
        response_model_exclude_none=True,
        responses=INFER_RESPONSES,
        dependencies=requires(core.credentials, "predict"),
    )
    async def v2_infer_version(
        name: Name, version: Version, body: InferBody, http: Request
    ) -> Response:
        """Score the records with one version of the model."""
        return await infer(core, name, version, body, http)
