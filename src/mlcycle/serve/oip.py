"""The Open Inference Protocol (KServe V2) REST body types, and the translation between its
tensors and our records.

A request carries one named input tensor per raw input of the signature (shape ``[n]`` or
``[n, 1]``, row-major ``data``, nested lists accepted): ``FP32``/``FP64``/``INT*`` for numeric
inputs, ``BYTES`` (strings) for categorical ones; ``null`` in ``data`` is a missing value (JSON
has no NaN). The response's output tensors follow the task: ``label`` (BYTES ``[n]``),
``probabilities`` (FP64 ``[n, k]``, classes in ``parameters.classes``) and, for binary
classification, ``probability`` (FP64 ``[n]``, the positive class); ``value`` (FP64 ``[n]``) for
regression. KServe and MLServer clients (``tritonclient.http``, ``mlserver.codecs``) send and read
exactly this.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mlcycle.features import Signature

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


def records_from_inputs(inputs: list[RequestInput], signature: Signature) -> list[dict[str, Any]]:
    """One record per row of the input tensors; an error names the tensor and the problem."""
    kinds = {f.name: f.kind for f in signature.inputs}
    unused = set(signature.unused_inputs)
    given = {t.name for t in inputs}
    if len(given) != len(inputs):
        raise OipError("an input tensor name occurs twice")
    unknown = sorted(given - set(kinds) - unused)
    if unknown:
        raise OipError(f"unknown input(s) {unknown}; the model's inputs are {list(kinds)}")
    missing = [name for name in kinds if name not in given]
    if missing:
        raise OipError(f"missing input(s) {missing}; the model needs {list(kinds)}")
    columns: dict[str, list[Any]] = {}
    n: int | None = None
    for tensor in inputs:
        if tensor.name in unused:
            continue
        kind = kinds[tensor.name]
        shape = tensor.shape
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 1:
            raise OipError(f"input {tensor.name!r}: shape {shape}; expected [n] or [n, 1]")
        values = _flatten(tensor.data)
        if len(values) != shape[0]:
            raise OipError(
                f"input {tensor.name!r}: shape {shape} needs {shape[0]} values, got {len(values)}"
            )
        if n is not None and shape[0] != n:
            raise OipError(f"input {tensor.name!r} has {shape[0]} rows; the others have {n}")
        n = shape[0]
        if kind == "numeric":
            if tensor.datatype == "BYTES":
                raise OipError(f"input {tensor.name!r} is numeric; send FP64, FP32 or INT64")
            for i, v in enumerate(values):
                if v is None:
                    continue
                if isinstance(v, bool) and tensor.datatype != "BOOL":
                    raise OipError(f"input {tensor.name!r}, row {i}: a boolean, not a number")
                if not isinstance(v, int | float) or not math.isfinite(v):
                    raise OipError(f"input {tensor.name!r}, row {i}: {v!r} is not a finite number")
        else:
            if tensor.datatype != "BYTES":
                raise OipError(f"input {tensor.name!r} is categorical; send BYTES (strings)")
            for i, v in enumerate(values):
                if v is not None and not isinstance(v, str):
                    raise OipError(f"input {tensor.name!r}, row {i}: {v!r} is not a string")
        columns[tensor.name] = values
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


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
        if signature.task == "binary_classification":
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
        if signature.task == "binary_classification":
            outputs.append(TensorMetadata(name="probability", datatype="FP64", shape=[-1]))
    else:
        outputs = [TensorMetadata(name="value", datatype="FP64", shape=[-1])]
    return ModelMetadata(
        name=name, versions=versions, platform="mlcycle", inputs=inputs, outputs=outputs
    )
