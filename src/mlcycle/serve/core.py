"""The scoring and logging core every router of the service shares.

One :class:`Core` per app holds the models in service (a :class:`Served`: production and an
optional challenger, each a :class:`Loaded`, swapped as one by a reload, so a request sees one
consistent pair), the prediction log and the metrics. A canary challenger answers a share of
requests, chosen by a stable hash of a key (:meth:`Core.route`); a shadow challenger scores
the requests production answered, off the request path, in a process of its own
(:mod:`mlcycle.serve.shadow`, :mod:`mlcycle.serve.shadow_process`), and its outputs go to the
log beside production's. Scoring goes through the compiled encoder
(:mod:`mlcycle.encoder`) and the model's ``output_encoded``: bit for bit the values of
``to_model_frame`` + ``output`` that evaluation and batch prediction use, without a pandas
frame per request; labels come from :func:`mlcycle.predict.decide`, as everywhere.
Every scored record is put on the prediction log's queue (:mod:`mlcycle.predlog`) with the
request id; when the queue is full the request is answered 503 instead of losing a logged
prediction.
"""

import asyncio
import functools
import gc
import hashlib
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
from mlcycle.serve.rules import optional_fields
from mlcycle.serve.shadow import (
    DEFAULT_PRIORITY,
    DEFAULT_RECORDS,
    PRIORITIES,
    Job,
    Report,
    ShadowQueue,
)
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
    # A challenger beside production in bundle mode (in registry mode the registry names it):
    # a shadow's bundle, or a canary's and the share (0 to 1) of requests it answers.
    shadow_bundle: str | None = None
    canary_bundle: str | None = None
    canary_share: float = 0.0
    # The canary is chosen per request by a hash of this field of its first record (None: of
    # the request id).
    canary_key: str | None = None
    # Records waiting for the shadow model, at most; past it a request's shadow scoring is
    # dropped (counted).
    shadow_queue: int = DEFAULT_RECORDS
    # The shadow process's CPU priority (mlcycle.serve.shadow.PRIORITIES).
    shadow_priority: str = DEFAULT_PRIORITY
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
        if self.shadow_bundle and self.canary_bundle:
            raise ValueError("--shadow-bundle and --canary-bundle: one challenger at a time")
        if (self.shadow_bundle or self.canary_bundle) and not self.bundle_dir:
            raise ValueError(
                "--shadow-bundle and --canary-bundle go with --bundle; served from the "
                "registry, the challenger is the registry's (mlcycle release --shadow/--canary)"
            )
        if self.canary_share and not self.canary_bundle:
            raise ValueError(
                "--canary-share goes with --canary-bundle (served from the registry, the share "
                "is the release's: mlcycle release --canary PCT)"
            )
        if self.canary_bundle and not 0 < self.canary_share <= 1:  # NaN too
            raise ValueError(
                f"--canary-share must be above 0 and at most 100 (percent of requests), got "
                f"{self.canary_share * 100:g}"
            )
        if self.shadow_queue < 1:
            raise ValueError(f"--shadow-queue must be at least 1 record, got {self.shadow_queue}")
        if self.shadow_priority not in PRIORITIES:
            raise ValueError(
                f"--shadow-priority must be one of {PRIORITIES}, got {self.shadow_priority!r}"
            )


class ModelInfo(BaseModel):
    """A served model's identity."""

    name: str
    version: str | None = Field(None, description="the registered version, if served from one")
    id: str = Field(description="first 12 hex digits of the model file's SHA-256")
    kind: str = Field(description="the model kind: xgboost, logistic_regression, ridge, ...")
    task: str = Field(description="binary_classification, multiclass_classification or regression")
    classes: list[str] = Field(description="classification: the classes, in the model's order")
    decision: float | list[float] | None = Field(
        None,
        description="what labels are decided by: binary, the threshold on the positive class's "
        "probability; multiclass, a weight per class (the label is the class of the largest "
        "weighted probability); absent: the most probable class",
    )


class ChallengerInfo(ModelInfo):
    """The challenger's identity, its stage and the share of requests it answers."""

    stage: str = Field(description="shadow (scores every request, answers none) or canary")
    share: float = Field(description="canary: the share of requests it answers, 0 to 1")


class ServedInfo(ModelInfo):
    """Production's identity and, when there is one, the challenger's."""

    challenger: ChallengerInfo | None = Field(None, description="absent without a challenger")


@dataclass(frozen=True, eq=False)
class Loaded:
    """A model in service, production or the challenger: ``role`` says which (``prod``,
    ``shadow`` or ``canary``; a canary answers ``share`` of requests)."""

    bundle: Bundle
    encoder: Encoder
    name: str
    version: str | None
    role: str = registry.PROD
    share: float = 0.0

    @property
    def signature(self) -> Signature:
        return self.bundle.signature

    @classmethod
    def of(
        cls, bundle: Bundle, version: str | None, role: str = registry.PROD, share: float = 0.0
    ) -> "Loaded":
        name = bundle.metadata.get("name", "model")
        bundle.model.set_threads(1)  # one worker process per core: no thread pool per request
        return cls(bundle, Encoder.compile(bundle.signature), name, version, role, share)

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
            decision=b.decision,
        )

    @property
    def challenger_info(self) -> ChallengerInfo:
        """The identity of this model as a challenger: its stage and share too."""
        return ChallengerInfo(**self.info.model_dump(), stage=self.role, share=self.share)

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
            decide(output, self.signature, self.bundle.decision)
        except Exception as exc:  # anything the model's library raises
            raise ValueError(f"the new model cannot score an example record: {exc}") from exc
        self.info_json  # noqa: B018 (computed here, off the event loop)


@dataclass(frozen=True, eq=False)
class Served:
    """Production and the optional challenger, swapped as one object by a reload, so a
    request sees one consistent pair."""

    prod: Loaded
    challenger: Loaded | None = None

    @property
    def models(self) -> tuple[Loaded, ...]:
        """Production, then the challenger if there is one."""
        return (self.prod,) if self.challenger is None else (self.prod, self.challenger)

    @functools.cached_property
    def shadow(self) -> Loaded | None:
        """The challenger if it is a shadow."""
        c = self.challenger
        return c if c is not None and c.role == registry.SHADOW else None

    @functools.cached_property
    def same_encoding(self) -> bool:
        """Whether the shadow encodes records as production does (same signature): then it
        scores production's input matrix instead of encoding the records again."""
        return self.shadow is not None and self.shadow.signature == self.prod.signature

    @property
    def info(self) -> ServedInfo:
        """Production's identity and the challenger's: what /admin/reload answers."""
        c = self.challenger
        also = {} if c is None else {"challenger": c.challenger_info}  # else absent, not null
        return ServedInfo(**self.prod.info.model_dump(), **also)

    def described(self) -> dict[str, Any]:
        """``{"challenger": ...}`` (its identity, stage and share) when there is one, else
        empty: what /health and /metadata add to production's ``model``."""
        c = self.challenger
        return {} if c is None else {"challenger": c.challenger_info.model_dump()}


def canary_point(key: str) -> float:
    """Where ``key`` falls in [0, 1): a stable hash (BLAKE2b), the same in every process and
    worker, so a key keeps its model for as long as the canary lasts."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


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


def first_value(records: Records, field: str) -> Any:
    """The value of ``field`` in the first record of ``records`` (records, or columns)."""
    if isinstance(records, dict):
        column = records.get(field)
        return column[0] if column is not None and len(column) else None
    return records[0].get(field) if len(records) else None


def key_text(value: Any) -> str:
    """A canary key's text: a string as it is, anything else as JSON (``5`` and ``5.0`` differ
    as the client sent them; a missing value is ``null``)."""
    return value if type(value) is str else orjson.dumps(value, default=str).decode()


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


def metric_scores(signature: Signature, output: np.ndarray) -> np.ndarray | None:
    """What ``mlcycle_prediction_score`` observes of a model's ``output``: one score per
    record (binary: the positive class's probability; regression: the value), else None."""
    task = tasks.get(signature.task)
    return task.score(output) if task.one_score else None


def freeze_loaded() -> None:
    """Take what the worker has loaded (the libraries, the models: about 190,000 objects)
    out of the garbage collector's reach, once it is loaded: a full collection then walks only
    what requests create. Without it, each full collection walked them all, 80 ms or more
    (360 ms on a busy machine) during which no request is answered: a tail on p99 that any
    extra allocation (a shadow's reports) makes come sooner. Called at start and after each
    reload (what a reload unloads is collected first)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class Core:
    """The models in service, the prediction log and the metrics, shared by every router.

    ``log`` (optional) is closed, flushing it, by :meth:`close` when the app shuts down;
    ``credentials`` say who may call which route (:mod:`mlcycle.serve.auth`).
    :attr:`signature` is the one the service started with: a reload takes a model whose
    categories or features differ but refuses one that takes other requests or answers in
    another shape (:meth:`~mlcycle.features.Signature.contract_changes`), so request bodies
    typed from it stay valid across reloads; a challenger is held to the same contract.
    Scoring uses the scoring model's own signature.
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
        prod = Loaded.of(bundle, version or settings.model_version)
        #: The model's name at start: what a reload asks the registry for (unless
        #: ``settings.model_name`` says otherwise).
        self.name = prod.name
        self.signature = prod.signature
        self.log = log
        self.blocking_log = log is not None and getattr(log, "when_full", "reject") == "block"
        self.omitted_seen = 0  # the log's omitted records already counted in the metrics
        self.telemetry = Telemetry(task_is_probability=tasks.get(self.signature.task).thresholded)
        self.key = settings.canary_key
        fields = [f.name for f in self.signature.inputs] + list(optional_fields(prod.bundle))
        if self.key is not None and self.key not in fields:
            raise ValueError(
                f"--canary-key {shown(self.key)} is not a field a request's records may hold; "
                f"they are {fields}"
            )
        self.shadows = ShadowQueue(
            settings.shadow_queue,
            self.shadow_reported,
            self.telemetry.shadow_dropped.inc,
            self.telemetry.shadow_lost.inc,
            settings.shadow_priority,
        )
        try:
            challenger = self.load_challenger(signing.trusted_keys(settings.trusted_keys), prod)
        except (ValueError, OSError) as exc:
            if settings.bundle_dir:  # named on the command line: the start fails
                raise
            # the registry's: production serves alone (a reload tries the challenger again)
            logger.error("the challenger was refused, production serves alone: %s", exc)
            challenger = None
        self.served = Served(prod, challenger)
        self.telemetry.set_models(self.served.models)
        self.generation = 0.0  # what generation_seen gives without a generation file
        self.next_check = 0.0
        self.following = False  # a thread is following another worker's reload
        self.lock = threading.Lock()  # one reload at a time
        start = settings.generation_at_start
        self.generation = self.generation_seen() if start is None else start
        if self.generation_seen() > self.generation:  # started after a reload: take it now,
            self.follow()  # before this worker answers anything

    # -- the model ----------------------------------------------------------------------------

    @property
    def loaded(self) -> Loaded:
        """Production, as served now."""
        return self.served.prod

    def current(self) -> Served:
        """The models for this request. When another worker has reloaded (the generation file
        is newer than what this one serves), this worker follows in a thread of its own:
        requests keep the models in service until the new ones are loaded and swapped in."""
        gen_file = self.settings.generation_file
        if gen_file and not self.following and time.monotonic() >= self.next_check:
            self.next_check = time.monotonic() + 1.0
            if self.generation_seen() > self.generation:
                self.following = True
                threading.Thread(target=self.follow, name="mlcycle-reload", daemon=True).start()
        return self.served

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

    def reload(self, touch: bool) -> Served:
        """Load, verify and try the models again (production and the challenger, from the
        bundle folders, or the registry's current production version and challenger), then
        swap them in as one reference: requests in flight finish on the models they started
        with. Slow (checksums, model files, perhaps fetches), so callers run it off the event
        loop. A model that takes other requests or answers in another shape
        (:meth:`~mlcycle.features.Signature.contract_changes`), or cannot load or answer,
        raises ValueError or OSError and the old pair keeps serving. ``touch``: bump the
        generation file, so the other workers reload too."""
        settings = self.settings
        with self.lock:
            seen = self.generation_seen()
            if not touch and seen <= self.generation:  # a reload here got there first
                return self.served
            trusted = signing.trusted_keys(settings.trusted_keys)
            if settings.bundle_dir:
                new_bundle = load_bundle(settings.bundle_dir, trusted)
                new_version = settings.model_version
            else:
                root = Path(settings.project or ".")
                v = registry.resolve(root, settings.model_name or self.name, None)
                new_bundle = load_bundle(registry.fetch_bundle(root, v), trusted)
                new_version = v.version
            loaded = self.checked(new_bundle, new_version, registry.PROD, 0.0)
            served = Served(loaded, self.load_challenger(trusted, loaded))
            self.served = served  # the swap: the next request takes the new pair
            freeze_loaded()
            self.telemetry.set_models(served.models)
            if settings.generation_file and touch:
                Path(settings.generation_file).touch()
                seen = self.generation_seen()
            self.generation = seen
            logger.info(
                "reloaded model %s (%s)%s",
                new_bundle.model_id,
                new_version,
                f", {served.challenger.role} {served.challenger.bundle.model_id} "
                f"({served.challenger.version})"
                if served.challenger
                else "",
            )
            return served

    def checked(self, bundle: Bundle, version: str | None, role: str, share: float) -> Loaded:
        """``bundle`` as a :class:`Loaded` ``role``, once it is known to take the requests the
        service takes and answer in the same shape, and to score an example record;
        ValueError saying why not."""
        changes = self.signature.contract_changes(bundle.signature)
        what = "the new model" if role == registry.PROD else f"the {role} model"
        if changes:
            raise ValueError(
                f"{what} takes other requests or answers in another shape "
                f"({'; '.join(changes)}): "
                + (
                    "restart the service with it instead of reloading"
                    if role == registry.PROD
                    else "it cannot score the requests production answers"
                )
            )
        loaded = Loaded.of(bundle, version, role, share)
        try:
            loaded.try_out()
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
        return loaded

    def load_challenger(self, trusted: Any, prod: Loaded) -> Loaded | None:
        """The challenger to serve beside ``prod``, loaded, verified (with the ``trusted``
        keys, as production) and tried: in bundle mode the shadow's or canary's bundle
        folder, else the registry's shadow or canary version; None without one, or when it
        is production's own version (or the service was not started from a project).
        ValueError or OSError when it cannot serve."""
        settings = self.settings
        if settings.bundle_dir:
            path = settings.shadow_bundle or settings.canary_bundle
            if not path:
                return None
            role = registry.SHADOW if settings.shadow_bundle else registry.CANARY
            bundle, version, share = load_bundle(path, trusted), None, settings.canary_share
        elif settings.project is None:  # not from a project: nowhere to look for one
            return None
        else:
            root = Path(settings.project)
            found = registry.challenger(root, settings.model_name or self.name)
            if found is None or found.version.version == prod.version:
                return None
            bundle = load_bundle(registry.fetch_bundle(root, found.version), trusted)
            version, role, share = found.version.version, found.stage, found.share
        return self.checked(bundle, version, role, share if role == registry.CANARY else 0.0)

    # -- scoring ------------------------------------------------------------------------------

    def score(
        self,
        records: Records,
        request_id: str,
        pinned: Loaded | None = None,
        key: Any = None,
    ) -> tuple[Loaded, np.ndarray, list[str] | None, dict]:
        """The model that scored ``records`` (records, or columns: what the encoder takes), its
        output, the labels decided from it, and the unseen categories per field; a value the
        model cannot take is a 422. The model is production, or the canary for its share of
        requests (:meth:`route`, by ``key``: :meth:`key_of` the request as sent), or ``pinned``
        (a request that named its version); when production answered and a shadow is served,
        the records are queued for it."""
        served = self.current()
        model = served.prod
        if served.challenger is not None:
            model = pinned or self.route(served, request_id, key)
            if model is served.challenger:
                self.telemetry.canary_requests.inc()
        start = time.perf_counter()
        try:
            encoded = model.encoder.encode_with_unseen(records)
            output = model.bundle.model.output_encoded(encoded.matrix, model.signature)
        except SchemaError as exc:  # a value the model cannot take (beyond float32, ...)
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        labels = decide(output, model.signature, model.bundle.decision)
        self.telemetry.observe_scoring(model.role, time.perf_counter() - start)
        shadow = served.shadow
        if shadow is not None and model is served.prod:
            matrix = encoded.matrix if served.same_encoding else None
            self.shadows.offer(Job(shadow, request_id, records, matrix, len(output)))
        return model, output, labels, encoded.unseen

    def key_of(self, records: Records) -> Any:
        """The request's canary key as sent: the ``--canary-key`` field of its first record
        (read before the fields the model does not use are dropped), or None."""
        return None if self.key is None else first_value(records, self.key)

    def route(self, served: Served, request_id: str, key: Any = None) -> Loaded:
        """The model that answers a request when a challenger is served: the canary when the
        request's ``key`` (:meth:`key_of`; the request id when there is none or it is null)
        falls within its share (:func:`canary_point`), else production."""
        canary = served.challenger
        if canary is None or canary.role != registry.CANARY:
            return served.prod
        text = request_id if key is None else key_text(key)
        return canary if canary_point(text) < canary.share else served.prod

    def shadow_reported(self, report: Report) -> None:
        """Put the shadow's outputs on the prediction log (a request it has no room for is
        counted dropped) and count what the shadow process scored, dropped and predicted in
        this worker's metrics (the shadow queue's reader thread calls it)."""
        dropped = report.dropped
        if self.log is not None:
            for request_id, outputs, name, model_id, version, n in report.rows:
                if not self.log.submit_shadow(
                    request_id, outputs, model_name=name, model_id=model_id,
                    model_version=version, n=n,
                ):  # fmt: skip
                    dropped += n
        self.telemetry.shadow_scored.inc(report.scored)
        if dropped:
            self.telemetry.shadow_dropped.inc(dropped)
        for model_id, role, seconds, summed in report.observed:
            self.telemetry.observe_scoring(role, seconds)
            self.telemetry.add_predicted(model_id, role, summed)

    def observe(self, model: Loaded, output: np.ndarray, labels: list[str] | None) -> None:
        """Count what the model predicted, for the metrics."""
        scores = metric_scores(model.signature, output)
        self.telemetry.observe_predictions(model.bundle.model_id, model.role, labels, scores)

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
            role=model.role,
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
        """The Prometheus metrics and their content type, the log's and the shadow queue's
        own figures updated."""
        self._log_gauges()
        self.telemetry.shadow_queue.set(self.shadows.depth)
        return self.telemetry.exposition()

    def close(self) -> None:
        """Let the shadow score what it has queued (a few seconds at most), then close the
        prediction log, flushing it (the app's shutdown)."""
        self.shadows.close()
        if self.log is not None:
            lost = self.log.close()
            if lost:
                logger.error("prediction log: %d record(s) could not be written", lost)
