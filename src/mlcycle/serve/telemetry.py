"""Prometheus metrics of the service, served at ``/metrics``.

- ``mlcycle_requests_total{route,method,status}`` and ``mlcycle_request_seconds{route}``: every
  request, by its route template (the guard middleware observes them);
- ``mlcycle_rows_scored_total{model_id,role}``: records scored, by model (``role``: ``prod``,
  ``canary`` or ``shadow``, so production and the challenger are told apart);
- ``mlcycle_predicted_class_total{model_id,role,label}`` (classification) and
  ``mlcycle_prediction_score{model_id,role}`` (binary: the positive class's probability;
  regression: the predicted value): what each model is saying, the first sign of drift;
- ``mlcycle_scoring_seconds{role}``: the time a model takes to encode and score a request;
- ``mlcycle_canary_requests_total``: requests the canary answered;
- ``mlcycle_shadow_scored_total`` and ``mlcycle_shadow_dropped_total``: records the shadow
  scored, and records whose shadow scoring was dropped (its queue was full, or it could not
  score them); ``mlcycle_shadow_processes_lost_total``: shadow processes that died before the
  service closed them; ``mlcycle_shadow_queue_depth``: records waiting for the shadow;
- ``mlcycle_log_queue_depth``: records waiting to be written to the prediction log;
- ``mlcycle_refused_total{reason}``: requests answered 503 because the worker was scoring its
  limit of requests already (``busy``), held its limit of connections (``connections``) or
  the prediction log could not take them (``log_full``), and 429 because the client was over
  its rate limit (``rate``);
- ``mlcycle_log_omitted_records_total``: records scored and logged without their inputs, which
  were over the log's size limit for one request;
- ``mlcycle_model_info{model_id,name,version,role}``: 1 for each loaded model (production, and
  the challenger if there is one).

With several worker processes (``mlcycle serve --workers N``) each worker writes its values to
files in ``PROMETHEUS_MULTIPROC_DIR`` (set by ``mlcycle serve``) and ``/metrics`` adds them up,
so a scrape sees the whole service whichever worker answers it.
"""

from __future__ import annotations

import bisect
import math
import os
from collections import Counter as Tally
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
PROBABILITY_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REFUSALS = ("busy", "connections", "log_full", "rate")  # mlcycle_refused_total's reasons


def multiprocess() -> bool:
    """Whether values are shared between worker processes through files."""
    return bool(os.environ.get(MULTIPROC_ENV))


def score_bounds(task_is_probability: bool) -> tuple[float, ...]:
    """The upper bounds of ``mlcycle_prediction_score``'s buckets, +Inf last, as
    prometheus-client keeps them."""
    bounds = PROBABILITY_BUCKETS if task_is_probability else Histogram.DEFAULT_BUCKETS
    return tuple(float(b) for b in bounds) + (() if bounds[-1] == math.inf else (math.inf,))


class Predicted(NamedTuple):
    """What a model predicted for some records, summed as the metrics count it: the records,
    the count of each label (classification), and the scores' counts by bucket (the index in
    :func:`score_bounds` and the count, for the buckets that have any) with their sum
    (binary: the positive class's probability; regression: the value). A shadow process
    sums its requests' in its own interpreter, so the worker only adds the totals
    (:meth:`Telemetry.add_predicted`)."""

    rows: int
    labels: dict[str, int] | None = None
    buckets: tuple[tuple[int, int], ...] | None = None
    total: float = 0.0


def predicted(
    labels: Sequence[str] | None, scores: np.ndarray | None, bounds: tuple[float, ...]
) -> Predicted:
    """The :class:`Predicted` of a model's ``labels`` and ``scores`` (either may be None), a
    score counted, as ``Histogram.observe`` counts it, in the first bucket whose upper bound
    is at least the score (a NaN in none, but in the sum)."""
    n = len(labels) if labels is not None else (len(scores) if scores is not None else 0)
    counts, total = None, 0.0
    if scores is not None and len(scores) == 1:  # a one-record request: no array work
        total = float(scores[0])
        i = bisect.bisect_left(bounds, total) if total == total else len(bounds)  # NaN: none
        counts = ((i, 1),) if i < len(bounds) else ()
    elif scores is not None:
        values = np.asarray(scores, dtype=np.float64)
        where = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
        counts = tuple((i, int(where[i])) for i in np.flatnonzero(where[: len(bounds)]).tolist())
        total = float(values.sum())
    if labels is None or len(labels) != 1:
        tally = None if labels is None else dict(Tally(labels))
    else:  # a one-record request: Counter costs more than the rest
        tally = {labels[0]: 1}
    return Predicted(n, tally, counts, total)


def _add_buckets(hist: Histogram, counts: Sequence[tuple[int, int]], total: float) -> None:
    """Add ``counts`` (bucket index, count) and their ``total`` to ``hist``'s bucket counters:
    a request's 100 scores cost one pass, not 100 ``observe`` calls."""
    buckets, summed = getattr(hist, "_buckets", None), getattr(hist, "_sum", None)
    if buckets is None or summed is None:
        raise RuntimeError(
            "prometheus-client keeps a histogram's buckets otherwise than this service adds "
            "to them (_buckets, _sum): pin the version in requirements.lock"
        )
    for i, count in counts:
        buckets[i].inc(count)
    summed.inc(total)


class Telemetry:
    """The service's metrics, in a registry of their own (one per app, so tests can build
    several apps in one process)."""

    def __init__(self, task_is_probability: bool) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.bounds = score_bounds(task_is_probability)  # mlcycle_prediction_score's
        self._model_labels: list[tuple[str, str, str, str]] = []
        # Labelled children, by label values: ``.labels()`` takes a lock and builds a tuple
        # each call, which costs as much as the rest of a one-record request's bookkeeping.
        self._children: dict[tuple, Any] = {}
        reg = self.registry
        self.requests = Counter(
            "mlcycle_requests", "Requests by route, method and status.",
            ["route", "method", "status"], registry=reg,
        )  # fmt: skip
        self.latency = Histogram(
            "mlcycle_request_seconds", "Time from the request's arrival to its response.",
            ["route"], buckets=LATENCY_BUCKETS, registry=reg,
        )  # fmt: skip
        self.rows = Counter(
            "mlcycle_rows_scored", "Records scored.", ["model_id", "role"], registry=reg
        )
        self.classes = Counter(
            "mlcycle_predicted_class", "Predicted labels.", ["model_id", "role", "label"],
            registry=reg,
        )  # fmt: skip
        self.scores = Histogram(
            "mlcycle_prediction_score",
            "Binary: the positive class's probability; regression: the predicted value.",
            ["model_id", "role"],
            buckets=self.bounds,
            registry=reg,
        )
        self.queue = Gauge(
            "mlcycle_log_queue_depth", "Records waiting to be written to the prediction log.",
            registry=reg, multiprocess_mode="livesum",
        )  # fmt: skip
        self.refusals = Counter(
            "mlcycle_refused",
            "Requests refused with a 503 or 429, by reason (busy, connections, log_full, rate).",
            ["reason"], registry=reg,
        )  # fmt: skip
        for reason in REFUSALS:  # shown at 0 before the first refusal
            self._child(self.refusals, reason)
        self.omitted = Counter(
            "mlcycle_log_omitted_records",
            "Records logged without their inputs (over --log-max-record-bytes).", registry=reg,
        )  # fmt: skip
        self.model = Gauge(
            "mlcycle_model_info", "The loaded models (value 1).",
            ["model_id", "name", "version", "role"], registry=reg, multiprocess_mode="liveall",
        )  # fmt: skip
        self.scoring = Histogram(
            "mlcycle_scoring_seconds", "Time a model takes to encode and score a request.",
            ["role"], buckets=LATENCY_BUCKETS, registry=reg,
        )  # fmt: skip
        self.canary_requests = Counter(
            "mlcycle_canary_requests", "Requests the canary answered.", registry=reg
        )
        self.shadow_scored = Counter(
            "mlcycle_shadow_scored", "Records the shadow model scored.", registry=reg
        )
        self.shadow_dropped = Counter(
            "mlcycle_shadow_dropped",
            "Records the shadow did not score: its queue was full, or it could not.",
            registry=reg,
        )
        self.shadow_lost = Counter(
            "mlcycle_shadow_processes_lost",
            "Shadow processes that stopped before the service closed them (their records are "
            "counted dropped; the next request starts another).",
            registry=reg,
        )
        self.shadow_queue = Gauge(
            "mlcycle_shadow_queue_depth", "Records waiting for the shadow model.",
            registry=reg, multiprocess_mode="livesum",
        )  # fmt: skip

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count and time one request (called by the guard middleware)."""
        self._child(self.requests, route, method, str(status)).inc()
        self._child(self.latency, route).observe(seconds)

    def observe_predictions(
        self, model_id: str, role: str, labels: list[str] | None, scores: np.ndarray | None
    ) -> None:
        """Count a model's scored rows, their labels and the distribution of their scores."""
        self.add_predicted(model_id, role, predicted(labels, scores, self.bounds))

    def add_predicted(self, model_id: str, role: str, summed: Predicted) -> None:
        """Add what a model predicted (:func:`predicted`: its records, labels and scores
        summed) to its series."""
        self._child(self.rows, model_id, role).inc(summed.rows)
        for value, count in (summed.labels or {}).items():
            self._child(self.classes, model_id, role, str(value)).inc(count)
        if summed.buckets is not None:
            _add_buckets(self._child(self.scores, model_id, role), summed.buckets, summed.total)

    def refused(self, reason: str) -> None:
        """Count a request refused, by one of :data:`REFUSALS`."""
        self._child(self.refusals, reason).inc()

    def observe_scoring(self, role: str, seconds: float) -> None:
        """Time one request's scoring by the model of ``role``."""
        self._child(self.scoring, role).observe(seconds)

    def set_models(self, models: Sequence[Any]) -> None:
        """Mark the loaded models (:class:`~mlcycle.serve.core.Loaded`; a reload sets the
        previous ones to 0)."""
        for labels in self._model_labels:
            self.model.labels(*labels).set(0)
        self._model_labels = [(m.bundle.model_id, m.name, m.version or "", m.role) for m in models]
        for labels in self._model_labels:
            self.model.labels(*labels).set(1)

    def exposition(self) -> tuple[bytes, str]:
        """The text format for a scrape: this process's registry, or every worker's values."""
        if multiprocess():
            from prometheus_client import multiprocess as mp

            registry = CollectorRegistry()
            mp.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
