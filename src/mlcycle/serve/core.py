"""The scoring and logging core every router of the service shares.

One :class:`Core` per app holds the model in service (a :class:`Loaded`, swapped whole by a
reload, so a request sees one model), the prediction log and the metrics. Scoring goes through
the compiled encoder (:mod:`mlcycle.encoder`) and the model's ``output_encoded``: bit for bit
the values of ``to_model_frame`` + ``output`` that evaluation and batch prediction use, without
a pandas frame per request; labels come from :func:`mlcycle.predict.decide`, as everywhere.
Every scored record is put on the prediction log's queue (:mod:`mlcycle.predlog`) with the
request id; when the queue is full the request is answered 503 instead of losing a logged
prediction.
"""

import asyncio
import functools
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from fastapi import HTTPException
from pydantic import BaseModel, Field

from mlcycle import registry, signing, tasks
from mlcycle.bundle import Bundle, load_bundle
from mlcycle.encoder import Encoder, Records
from mlcycle.features import SchemaError, Signature
from mlcycle.predict import decide
from mlcycle.predlog import PredictionLog
from mlcycle.serve.auth import Credentials
from mlcycle.serve.telemetry import Telemetry

logger = logging.getLogger("mlcycle.serve")

MAX_RECORDS = 10_000
MAX_IN_FLIGHT = 64  # requests with a body a worker holds at once; past it: 503 (guard.py)
MAX_CONNECTIONS = 1000  # open connections a worker holds; past it: 503 (runner.py)
RETRY_AFTER = "1"  # seconds, in a 503's Retry-After
MAX_TEXT = 1_000  # characters in one text field; a longer one is refused, never echoed
SHOWN = 60  # characters of a client's value an error or warning repeats at most


def shown(value: object) -> str:
    """``value`` as a message quotes it (its ``repr``), cut to :data:`SHOWN` characters: a
    message names what was wrong without echoing a megabyte back."""
    text = repr(value)
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}... ({len(text)} characters)"


@dataclass(frozen=True)
class ServeSettings:
    """How the service behaves; ``mlcycle serve`` fills it from its options."""

    max_body_bytes: int = 8 * 1024 * 1024
    body_timeout: float = 10.0
    # The request line and headers (runner.BoundedHttpTools): bytes, count, and the seconds a
    # client has to send them from its first byte (or from connecting).
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    max_records: int = MAX_RECORDS
    max_in_flight: int = MAX_IN_FLIGHT
    max_connections: int = MAX_CONNECTIONS
    # Requests per second per client (guard.RateLimiter), and the burst a client may send at
    # once; 0: no rate limit.
    rate_limit: float = 0.0
    rate_burst: int = 0  # 0: the rate, rounded up (at least 1)
    # The trusted keys file (mlcycle.signing): with one, every load and reload refuses a bundle
    # no key in it signed; read at each load, so a key removed from it is refused at the next.
    trusted_keys: str | None = None
    # Where a reload finds the model: a bundle directory, or None for the registry's
    # production version of ``model_name`` in ``project``.
    bundle_dir: str | None = None
    project: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    # Bumped by a reload in any worker; the others see it and reload too.
    generation_file: str | None = None
    # The generation file's time when the service started: a worker started later (uvicorn
    # starts a worker again when one dies) that finds the file newer follows the reloads
    # made since, instead of serving the model the service started with.
    generation_at_start: float | None = None

    def __post_init__(self) -> None:
        for option, value in (
            ("--max-header-bytes", self.max_header_bytes),
            ("--max-headers", self.max_headers),
            ("--header-timeout", self.header_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{option} must be above 0, got {value}")
        if self.max_in_flight < 1:
            raise ValueError(
                f"--max-in-flight must be at least 1 (the requests a worker holds at once), "
                f"got {self.max_in_flight}"
            )
        if self.max_connections < 1:
            raise ValueError(
                f"--max-connections must be at least 1 (the connections a worker holds), "
                f"got {self.max_connections}"
            )
        if not (0 <= self.rate_limit < float("inf") and self.rate_burst >= 0):  # NaN too
            raise ValueError(
                f"--rate-limit and --rate-burst must be 0 (off, or the rate) or above, got "
                f"{self.rate_limit} and {self.rate_burst}"
            )


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

    @property
    def info(self) -> ModelInfo:
        """The model's identity, as /health, /metadata and /predict give it."""
        b = self.bundle
        return ModelInfo(
            name=self.name,
            version=self.version,
            id=b.model_id,
            kind=b.kind,
            task=b.task,
            classes=list(b.signature.classes),
            threshold=b.threshold,
        )

    @functools.cached_property
    def info_json(self) -> bytes:
        """The ``model`` part of every /predict answer, serialised once per loaded model."""
        return orjson.dumps(self.info.model_dump(exclude_none=True))

    def try_out(self) -> None:
        """Score one example record, as a request would, before this model takes requests: a
        model that cannot answer is refused (ValueError) while the old one still serves, and
        the first request on it pays no first-call cost."""
        record = example_record(self.signature)
        try:
            encoded = self.encoder.encode_with_unseen([record])
            output = self.bundle.model.output_encoded(encoded.matrix, self.signature)
            decide(output, self.signature, self.bundle.threshold)
        except Exception as exc:  # anything the model's library raises
            raise ValueError(f"the new model cannot score an example record: {exc}") from exc
        self.info_json  # noqa: B018 (computed here, off the event loop)


def example_record(signature: Signature) -> dict[str, Any]:
    """A record for the documentation: each category input's first category, 0 for numbers."""
    return {
        f.name: (f.categories[0] if f.categories else None) if f.kind != "numeric" else 0.0
        for f in signature.inputs
    }


def prediction_dicts(
    output: np.ndarray, labels: list[str] | None, signature: Signature
) -> list[dict[str, Any]]:
    """Each record's prediction as plain JSON-ready dicts (what /predict returns and the log
    stores), shaped by the task."""
    if not signature.is_classification:
        return [{"value": v} for v in np.asarray(output, dtype=np.float64).tolist()]
    classes = signature.classes
    rows = np.asarray(output, dtype=np.float64).tolist()
    if tasks.get(signature.task).has_positive_class:
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


def warnings_for(records: list[dict], unseen: dict[str, list[str]]) -> list[str]:
    """What a client should know about its records: unseen categories (treated as missing)
    and records whose every input is null (their prediction is a prior)."""
    out = [
        f"field {col!r}: unseen categor{'y' if len(v) == 1 else 'ies'} "
        f"[{', '.join(map(shown, v[:5]))}]"
        f"{f' and {len(v) - 5} more' if len(v) > 5 else ''} treated as missing"
        for col, v in unseen.items()
    ]
    empty = [i for i, r in enumerate(records) if all(v is None for v in r.values())]
    if empty:
        rows = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        out.append(f"record(s) {rows}: every input is null; the prediction is a prior")
    return out


class Core:
    """The model in service, the prediction log and the metrics, shared by every router.

    ``log`` (optional) is closed, flushing it, by :meth:`close` when the app shuts down;
    ``credentials`` say who may call which route (:mod:`mlcycle.serve.auth`).
    :attr:`signature` is the one the service started with: a reload takes a model whose
    categories or features differ but refuses one that takes other requests or answers in
    another shape (:meth:`~mlcycle.features.Signature.contract_changes`), so request bodies
    typed from it stay valid across reloads. Scoring uses the loaded model's own signature.
    """

    def __init__(
        self,
        bundle: Bundle,
        settings: ServeSettings,
        log: PredictionLog | None = None,
        version: str | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.settings = settings
        self.credentials = credentials or Credentials()
        self.loaded = Loaded.of(bundle, version or settings.model_version)
        #: The model's name at start: what a reload asks the registry for (unless
        #: ``settings.model_name`` says otherwise).
        self.name = self.loaded.name
        self.signature = self.loaded.signature
        self.log = log
        self.blocking_log = log is not None and getattr(log, "when_full", "reject") == "block"
        self.omitted_seen = 0  # the log's omitted records already counted in the metrics
        self.telemetry = Telemetry(task_is_probability=tasks.get(self.signature.task).thresholded)
        self.telemetry.set_model(bundle.model_id, self.loaded.name, self.loaded.version)
        self.generation = 0.0  # what generation_seen gives without a generation file
        self.next_check = 0.0
        self.following = False  # a thread is following another worker's reload
        self.lock = threading.Lock()  # one reload at a time
        start = settings.generation_at_start
        self.generation = self.generation_seen() if start is None else start
        if self.generation_seen() > self.generation:  # started after a reload: take it now,
            self.follow()  # before this worker answers anything

    # -- the model ----------------------------------------------------------------------------

    def current(self) -> Loaded:
        """The model for this request. When another worker has reloaded (the generation file
        is newer than what this one serves), this worker follows in a thread of its own:
        requests keep the model in service until the new one is loaded and swapped in."""
        gen_file = self.settings.generation_file
        if gen_file and not self.following and time.monotonic() >= self.next_check:
            self.next_check = time.monotonic() + 1.0
            if self.generation_seen() > self.generation:
                self.following = True
                threading.Thread(target=self.follow, name="mlcycle-reload", daemon=True).start()
        return self.loaded

    def generation_seen(self) -> float:
        """The generation file's time: when a worker last reloaded."""
        try:
            return os.path.getmtime(self.settings.generation_file or "")
        except OSError:
            return self.generation

    def follow(self) -> None:
        """Reload because another worker did (in a thread, or as this worker starts); a
        failure is logged and the current model keeps serving (tried again at the next
        check)."""
        try:
            self.reload(touch=False)
        except Exception:
            logger.exception("following another worker's reload failed; the model keeps serving")
        finally:
            self.following = False

    def reload(self, touch: bool) -> Loaded:
        """Load, verify and try the model again (from the bundle folder, or the registry's
        current production version), then swap it in as one reference: requests in flight
        finish on the model they started with. Slow (a checksum, a model file, perhaps a
        fetch), so callers run it off the event loop. A model that takes other requests or
        answers in another shape (:meth:`~mlcycle.features.Signature.contract_changes`), or
        cannot load or answer, raises ValueError or OSError and the old one keeps serving.
        ``touch``: bump the generation file, so the other workers reload too."""
        settings = self.settings
        with self.lock:
            seen = self.generation_seen()
            if not touch and seen <= self.generation:  # a reload here got there first
                return self.loaded
            trusted = signing.trusted_keys(settings.trusted_keys)
            if settings.bundle_dir:
                new_bundle = load_bundle(settings.bundle_dir, trusted)
                new_version = settings.model_version
            else:
                root = Path(settings.project or ".")
                v = registry.resolve(root, settings.model_name or self.name, None)
                new_bundle = load_bundle(registry.fetch_bundle(root, v), trusted)
                new_version = v.version
            changes = self.signature.contract_changes(new_bundle.signature)
            if changes:
                raise ValueError(
                    f"the new model takes other requests or answers in another shape "
                    f"({'; '.join(changes)}): restart the service with it instead of reloading"
                )
            loaded = Loaded.of(new_bundle, new_version)
            loaded.try_out()
            self.loaded = loaded  # the swap: the next request takes the new model
            self.telemetry.set_model(new_bundle.model_id, loaded.name, new_version)
            if settings.generation_file and touch:
                Path(settings.generation_file).touch()
                seen = self.generation_seen()
            self.generation = seen
            logger.info("reloaded model %s (%s)", new_bundle.model_id, new_version)
            return loaded

    # -- scoring ------------------------------------------------------------------------------

    def score(
        self, records: Records, request_id: str
    ) -> tuple[Loaded, np.ndarray, list[str] | None, dict]:
        """The model that scored ``records`` (records, or columns: what the encoder takes), its
        output, the labels decided from it, and the unseen categories per field; a value the
        model cannot take is a 422."""
        model = self.current()
        try:
            encoded = model.encoder.encode_with_unseen(records)
            output = model.bundle.model.output_encoded(encoded.matrix, model.signature)
        except SchemaError as exc:  # a value the model cannot take (beyond float32, ...)
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        labels = decide(output, model.signature, model.bundle.threshold)
        return model, output, labels, encoded.unseen

    def observe(self, model: Loaded, output: np.ndarray, labels: list[str] | None) -> None:
        """Count what the model predicted, for the metrics."""
        task = tasks.get(model.signature.task)
        scores = task.score(output) if task.one_score else None
        self.telemetry.observe_predictions(model.bundle.model_id, labels, scores)

    # -- the prediction log -------------------------------------------------------------------

    async def log_request(
        self,
        model: Loaded,
        request_id: str,
        inputs: list[dict] | str,
        outputs: list[dict[str, Any]] | bytes,
        n: int,
    ) -> None:
        """Queue one request's records and outputs for the prediction log (as JSON already
        made when there is some: the body as received, the predictions as answered); 503 if
        the log cannot take them."""
        if self.log is None:
            return
        submit = functools.partial(
            self.log.submit,
            request_id,
            inputs,
            outputs,
            model_name=model.name,
            model_id=model.bundle.model_id,
            model_version=model.version,
            n=n,
        )
        if self.blocking_log:  # waits for room: not on the event loop
            accepted = await asyncio.to_thread(submit)
        else:
            accepted = submit()
        self._log_gauges()
        if not accepted:
            self.telemetry.refused("log_full")
            raise HTTPException(
                503,
                "the prediction log cannot keep up; the request was not scored into the log, "
                "retry later",
                headers={"Retry-After": RETRY_AFTER},
            )

    @property
    def ready(self) -> bool:
        """Whether the prediction log (if any) takes records: what readiness means."""
        return self.log is None or self.log.accepting

    def _log_gauges(self) -> None:
        """The metrics that follow the log's own counters: its queue depth, and the records
        it stored without their inputs (counted by its writer thread, so caught up here)."""
        log = self.log
        if log is None:
            return
        self.telemetry.queue.set(log.depth)
        omitted = log.omitted
        if omitted > self.omitted_seen:
            self.telemetry.omitted.inc(omitted - self.omitted_seen)
            self.omitted_seen = omitted

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus metrics and their content type, the log's own figures updated."""
        self._log_gauges()
        return self.telemetry.exposition()

    def close(self) -> None:
        """Close the prediction log, flushing it (the app's shutdown)."""
        if self.log is not None:
            lost = self.log.close()
            if lost:
                logger.error("prediction log: %d record(s) could not be written", lost)
