"""The prediction log's writer: :class:`PredictionLog`, a bounded in-memory queue of requests
and the background thread that writes them to the store in batches.

Writes are off the request path: :meth:`PredictionLog.submit` puts one request on the queue and
returns at once; the thread writes whole requests in batches, one transaction per batch (up to
``batch_size`` records, or whatever is waiting every ``flush_interval`` seconds). A full queue
refuses the whole call instead of dropping a logged prediction. A failing database is retried
with backoff and reported through :mod:`logging`; records are only ever given up when
:meth:`PredictionLog.close` runs out of time, and then their number is logged and returned.
The same thread keeps the log within its bounds (:mod:`~mlcycle.predlog.bounds`): one
request's inputs over ``max_record_bytes`` are stored as a marker, and it prunes the oldest
requests past ``retention_days`` or ``max_bytes`` now and then, not per request.
"""

from __future__ import annotations

import atexit
import functools
import logging
import math
import operator
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, Literal

import orjson
from sqlalchemy import exc as sa_exc

from mlcycle.predlog import bounds, store
from mlcycle.predlog.labels import Attached, attach_labels
from mlcycle.predlog.store import DEFAULT_URL, PredictionLogError

logger = logging.getLogger(__package__)  # mlcycle.predlog, as before it was a package

RETRY_FIRST_SECONDS = 0.05  # the first retry of a failed write waits this long, doubling
RETRY_MAX_SECONDS = 2.0  # up to this
PRUNE_INTERVAL = 60.0  # seconds between two checks of the log's bounds, at most


def _json_default(obj: Any) -> Any:
    """JSON for what orjson does not know: other mappings and sequences, numpy values orjson
    leaves out (e.g. object arrays), dates, else the text."""
    if isinstance(obj, Mapping):
        return dict(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, date):
        return obj.isoformat()
    if isinstance(obj, Sequence) and not isinstance(obj, str | bytes):
        return list(obj)
    return str(obj)


_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _dumps(obj: Any) -> str:
    """Compact JSON text, by orjson (the writer thread shares the GIL with the requests, so its
    time is the service's). NaN and infinities become null, as JSON has no such numbers."""
    return orjson.dumps(obj, default=_json_default, option=_ORJSON_OPTIONS).decode()


def _json_text(value: Any, what: str, records: bool) -> str:
    """``value`` (JSON text or bytes, kept verbatim, or a sequence to serialise) as the text to
    store; ``records``: the items must be mappings. Raises ValueError/TypeError for a value
    that can never be stored (the entry is dropped)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{what} are not UTF-8 text: {exc}") from None
    if type(value) is not list and type(value) is not tuple:
        value = list(value)
    if records:
        for i, record in enumerate(value):
            if type(record) is not dict and not isinstance(record, Mapping):
                raise TypeError(f"{what}[{i}] is a {type(record).__name__}, not a mapping")
    return _dumps(value)


def _length(value: Any, what: str) -> int:
    """The number of items of ``value``, a sequence (not a mapping, not a one-shot iterator)."""
    if type(value) is list or type(value) is tuple:
        return len(value)
    if isinstance(value, Mapping) or not hasattr(value, "__len__"):
        raise TypeError(
            f"{what} must be a sequence (one item per record) or JSON text/bytes, "
            f"not a {type(value).__name__}"
        )
    return len(value)


def _row_level(exc: BaseException, dbapi: Any = None) -> bool:
    """Whether ``exc`` is about the rows (a value the database refuses), not the database being
    unavailable: then the batch is written request by request and only the bad ones are
    dropped. ``dbapi`` is the driver's module, for its own errors (PostgreSQL's COPY bypasses
    SQLAlchemy)."""
    if isinstance(exc, sa_exc.DataError | sa_exc.IntegrityError):
        return True
    if dbapi is not None and isinstance(exc, dbapi.DataError | dbapi.IntegrityError):
        return True
    if isinstance(exc, sa_exc.StatementError) and not isinstance(exc, sa_exc.DBAPIError):
        exc = exc.orig or exc
    return isinstance(exc, TypeError | ValueError | OverflowError)


# --- the writer ----------------------------------------------------------------------------

#: One accepted call on the queue: (monotonic time queued, records, request_id, model_name,
#: model_version, model_id, inputs, outputs, ts: a UTC datetime or, the time of the call,
#: microseconds since the epoch, role: who answered, or ``store.SHADOW`` for a shadow's
#: outputs, whose inputs are None).
_Entry = tuple[float, int, Any, Any, Any, Any, Any, Any, datetime | int, str]


def _count(
    request_id: Any, inputs: Any, outputs: Any, model_name: Any, model_id: Any, n: Any
) -> int:
    """The number of records of a :meth:`PredictionLog.submit` call, its arguments checked: a
    missing id or name, a length that disagrees with ``n``, or inputs that are neither a
    sequence nor JSON are programming errors (ValueError or TypeError, nothing queued)."""
    if request_id is None or model_name is None or model_id is None:
        missing = [
            k
            for k, v in (
                ("request_id", request_id),
                ("model_name", model_name),
                ("model_id", model_id),
            )
            if v is None
        ]
        raise ValueError(f"{', '.join(missing)} is None: every request needs them")
    if isinstance(inputs, str | bytes):
        if n is None:
            raise ValueError("n, the number of records, is needed when inputs is JSON text")
    else:
        size = _length(inputs, "inputs")
        if n is None:
            n = size
        elif n != size:
            raise ValueError(f"n is {n} but inputs holds {size} record(s)")
    if not isinstance(outputs, str | bytes) and _length(outputs, "outputs") != n:
        raise ValueError(f"{len(outputs)} output(s) for {n} record(s)")
    if type(n) is not int:
        n = operator.index(n)  # numpy integers too; TypeError for anything else
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    return n


def _close_at_exit(ref: weakref.ref[PredictionLog]) -> None:
    log = ref()
    if log is not None:
        log.close()


class PredictionLog:
    """A bounded queue of requests' predictions and the thread that writes them to ``url``.

    ``submit(...)`` queues one request (its records and outputs, and which model answered) or
    refuses it, ``submit_shadow(...)`` a shadow model's outputs for a request; requests are
    written whole, in batches of up to ``batch_size`` records (more when one request brings
    more), at least every ``flush_interval`` seconds. At most ``max_queue`` records wait (a
    single request larger than that is taken when nothing waits). When full, ``submit`` returns
    False at once (``when_full="reject"``) or after waiting up to ``block_timeout`` seconds for
    room (``"block"``; it blocks the calling thread, so call it from a worker thread in async
    code). ``db_timeout`` bounds one wait for a lock (SQLite busy timeout) or a connection
    (connect timeout). The tables are created, and the database reached, before the
    constructor returns: a wrong URL fails at start-up with :class:`PredictionLogError`.
    Every counter counts records, not requests.

    Bounds (:mod:`~mlcycle.predlog.bounds`; None: none): a request whose inputs take more than
    ``max_record_bytes`` (UTF-8, as stored) is stored with a marker in their place
    (:attr:`omitted` counts its records); the requests older than ``retention_days`` and, while
    the log takes more than ``max_bytes`` (SQLite and PostgreSQL), the oldest are deleted with
    their labels, by the writer thread when it starts, every ``prune_interval`` seconds, and
    sooner when what it wrote since its last check could have filled half the room left.
    """

    def __init__(
        self,
        url: str | os.PathLike[str] = DEFAULT_URL,
        *,
        batch_size: int = 1000,
        flush_interval: float = 0.5,
        max_queue: int = 100_000,
        when_full: Literal["reject", "block"] = "reject",
        block_timeout: float = 1.0,
        db_timeout: float = 5.0,
        max_record_bytes: int | None = None,
        max_bytes: int | None = None,
        retention_days: float | None = None,
        prune_interval: float = PRUNE_INTERVAL,
    ) -> None:
        if batch_size < 1 or max_queue < 1:
            raise ValueError("batch_size and max_queue must be at least 1")
        if flush_interval <= 0 or block_timeout < 0 or db_timeout <= 0:
            raise ValueError("flush_interval and db_timeout must be > 0, block_timeout >= 0")
        if when_full not in ("reject", "block"):
            raise ValueError(f"when_full must be 'reject' or 'block', not {when_full!r}")
        bounds.check(
            max_record_bytes=max_record_bytes,
            max_bytes=max_bytes,
            retention_days=retention_days,
            prune_interval=prune_interval,
        )
        self._url = store.parse_url(url)
        #: The URL without credentials, for messages.
        self.url = store.shown(self._url)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.when_full = when_full
        self.block_timeout = block_timeout
        self._engine = store.make_engine(self._url, writer=True, timeout=db_timeout)
        if max_bytes and not bounds.supports_size(self._engine):
            self._engine.dispose()
            raise PredictionLogError(
                f"prediction log {self.url}: a size bound needs SQLite or PostgreSQL, which "
                "report the log's size"
            )
        self.max_record_bytes, self.max_bytes = max_record_bytes, max_bytes
        self.retention_days, self.prune_interval = retention_days, prune_interval
        self._mode = store.insert_mode(self._url)  # how _commit inserts
        # the column types for a binary COPY (None: text COPY), see store.binary_copy_types
        self._copy_types: list[str] | None = None
        self._open(attempts=3)
        self._dbapi = self._engine.dialect.dbapi
        self._ts_value = store.SqliteTimes() if self._mode == "sqlite" else store.as_datetime

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the writer waits on it
        self._room = threading.Condition(self._lock)  # blocked submitters and flush() wait
        self._queue: deque[_Entry] = deque()  # accepted calls, oldest first
        self._queued = 0  # records in _queue
        self._inflight = 0  # records taken by the writer, not yet written or given up
        self._accepted = 0
        self._written = 0
        self._failed = 0
        self._rejected = 0
        self._write_errors = 0
        self._batches = 0
        self._closing = False
        self._deadline = math.inf
        self._abandoned = False  # records were given up: the writer stops
        self._flush_now = False  # flush() asked for the queue to be written now
        self._lost = 0  # records given up when closing
        self._omitted = 0  # records stored without their inputs (max_record_bytes)
        self._pruned = 0  # records deleted by the bounds
        self._next_prune = 0.0  # monotonic time of the next check of the bounds: at start
        self._room_left = math.inf  # bytes the log could still take at the last check
        self._since_prune = 0  # bytes written since
        self._close_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="mlcycle-predlog", daemon=True)
        self._thread.start()
        self._at_exit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._at_exit)

    def __repr__(self) -> str:
        return f"PredictionLog({self.url!r}, depth={self.depth}, written={self.written})"

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, attempts: int) -> None:
        """Reach the database and create the tables, retrying a few times (another process may
        be creating them at the same moment)."""
        for attempt in range(attempts):
            try:
                bounds.prepare(self._engine)
                store.create_tables(self._engine)
                if self._mode == "copy":
                    self._copy_types = store.binary_copy_types(self._engine)
                return
            except PredictionLogError as exc:
                self._engine.dispose()
                raise PredictionLogError(f"prediction log {self.url}: {exc}") from None
            except sa_exc.SQLAlchemyError as exc:
                if attempt + 1 == attempts:
                    self._engine.dispose()
                    raise PredictionLogError(
                        f"prediction log {self.url}: cannot open the database "
                        f"({attempts} attempts): {store.reason(exc, self._url)}"
                    ) from None
                time.sleep(0.2 * 2**attempt)

    # --- counters (read without the lock: each is one int) --------------------------------------

    @property
    def depth(self) -> int:
        """Records accepted and not yet written (queued or being written): the queue gauge."""
        return self._queued + self._inflight

    @property
    def written(self) -> int:
        """Records written (committed) so far (a shadow's outputs count their records too, as
        do every counter and the queue bound)."""
        return self._written

    @property
    def failed(self) -> int:
        """Records accepted that will never be written: their request could not be stored
        (invalid UTF-8, refused by the database) or was given up when :meth:`close` ran out of
        time. Each is logged."""
        return self._failed

    @property
    def rejected(self) -> int:
        """Records refused by :meth:`submit` (queue full or closed): the service answered 503."""
        return self._rejected

    @property
    def write_errors(self) -> int:
        """Failed write attempts (each retried): how often the database was unavailable."""
        return self._write_errors

    @property
    def batches(self) -> int:
        """Transactions committed."""
        return self._batches

    @property
    def omitted(self) -> int:
        """Records stored without their inputs, which were over ``max_record_bytes``."""
        return self._omitted

    @property
    def pruned(self) -> int:
        """Records deleted to keep the log within ``retention_days`` and ``max_bytes``."""
        return self._pruned

    @property
    def accepting(self) -> bool:
        """Open and with room in the queue: what a readiness probe asks."""
        return not self._closing and self.depth < self.max_queue

    # --- the request side -----------------------------------------------------------------------

    def _fits(self, n: int) -> bool:
        depth = self._queued + self._inflight
        return depth + n <= self.max_queue or depth == 0

    def submit(
        self,
        request_id: str,
        inputs: Sequence[Mapping[str, Any]] | str | bytes,
        outputs: Sequence[Any] | str | bytes,
        *,
        model_name: str,
        model_id: str,
        model_version: str | None = None,
        n: int | None = None,
        ts: datetime | None = None,
        role: str = store.PROD,
    ) -> bool:
        """Queue one request's records and outputs for writing; never waits on the database
        (with ``when_full="block"`` it may wait for room in the queue). ``role`` says who
        answered: ``"prod"`` or ``"canary"``.

        ``inputs`` is either the records, a sequence of mappings (JSON-able: numpy values and
        dates are converted, NaN becomes null), or JSON text or UTF-8 bytes stored verbatim:
        an array of records or an object whose ``"records"`` key holds one (a ``/predict``
        body as received). ``outputs`` is one answer per record, a sequence or the JSON text
        or bytes of an array. ``n`` is the number of records: required with JSON inputs (they
        are not parsed here), else their length by default. ``ts`` (naive meaning UTC)
        defaults to now. Nothing is serialised or decoded here, so a call costs the same
        whatever ``n``: the writer thread does it, so do not change the sequences after
        submitting. JSON text is not checked either: :func:`read_log` refuses an entry whose
        arrays do not have ``n`` items. JSON inputs over ``max_record_bytes`` are replaced by
        the marker here, so the queue does not hold them (sequences: by the writer, once
        serialised).

        Returns True when the request was queued, False when it was not (queue full, or
        closed); an empty request (``n == 0``) is not queued and counts as accepted. A missing
        id or name, a length that disagrees with ``n``, or inputs that are neither a sequence
        nor JSON are programming errors: ValueError or TypeError, nothing queued.
        """
        n = _count(request_id, inputs, outputs, model_name, model_id, n)
        if role not in store.ROLES:
            raise ValueError(f"role must be one of {store.ROLES}, not {role!r}")
        when = time.time_ns() // 1000 if ts is None else store.utc(ts)
        omitted = 0
        if self.max_record_bytes and isinstance(inputs, str | bytes):
            size = bounds.over(inputs, self.max_record_bytes)
            if size:
                inputs, omitted = bounds.marker(size, self.max_record_bytes), n
        return self._queue_entry(
            n, request_id, model_name, model_version, model_id, inputs, outputs, when, role,
            omitted, self.when_full,
        )  # fmt: skip

    def submit_shadow(
        self,
        request_id: str,
        outputs: Sequence[Any] | str | bytes,
        *,
        model_name: str,
        model_id: str,
        model_version: str | None = None,
        n: int,
        ts: datetime | None = None,
    ) -> bool:
        """Queue a shadow model's outputs for the ``n`` records of request ``request_id``
        (to ``prediction_shadows``, in the same batches as the predictions). Never waits: a
        full queue refuses it at once (False), whatever ``when_full`` says, as the shadow's
        scoring is dropped rather than slowing the service."""
        n = _count(request_id, range(n), outputs, model_name, model_id, n)
        when = time.time_ns() // 1000 if ts is None else store.utc(ts)
        return self._queue_entry(
            n, request_id, model_name, model_version, model_id, None, outputs, when,
            store.SHADOW, 0, "reject",
        )  # fmt: skip

    def _queue_entry(
        self,
        n: int,
        request_id: Any,
        model_name: Any,
        model_version: Any,
        model_id: Any,
        inputs: Any,
        outputs: Any,
        when: datetime | int,
        role: str,
        omitted: int,
        when_full: str,
    ) -> bool:
        """Put one checked call on the queue, or refuse it (closed, or full)."""
        with self._lock:
            if self._closing:
                self._rejected += n
                return False
            if not n:
                return True
            depth = self._queued + self._inflight  # self._fits(n), inlined: the hot path
            if (
                depth + n > self.max_queue
                and depth
                and (when_full == "reject" or not self._wait_for_room(n))
            ):
                self._rejected += n
                return False
            was = self._queued
            self._queue.append(
                (
                    time.monotonic(),
                    n,
                    request_id,
                    model_name,
                    model_version,
                    model_id,
                    inputs,
                    outputs,
                    when,
                    role,
                )
            )
            self._queued += n
            self._accepted += n
            self._omitted += omitted
            if was == 0 or was < self.batch_size <= self._queued:
                self._wake.notify()
        return True

    def _wait_for_room(self, n: int) -> bool:
        """Wait (lock held) up to ``block_timeout`` s for room for ``n`` records."""
        end = time.monotonic() + self.block_timeout
        while not self._fits(n):
            left = end - time.monotonic()
            if left <= 0 or self._closing:
                return False
            self._room.wait(left)
        return not self._closing

    def flush(self, timeout: float | None = None) -> bool:
        """Write now what was submitted before this call and wait for it; True when it is all
        written (or given up, see :attr:`failed`) within ``timeout`` seconds."""
        end = math.inf if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._accepted
            while self._written + self._failed < target:
                if self._abandoned:
                    return True
                self._flush_now = True
                self._wake.notify()
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._room.wait(None if left == math.inf else left)
            return True

    def attach_labels(
        self,
        labels: Iterable[tuple[str, int | None, Any]],
        *,
        by: str | None = None,
        overwrite: bool = False,
        flush_timeout: float = 10.0,
    ) -> Attached:
        """:func:`attach_labels` of ``(request_id, row, label)`` triples on this log's
        database (given ``by``, replacing other labels only with ``overwrite``), after writing
        what is queued (a label may arrive before its prediction's batch was written). When
        fewer records matched or conflicted than labels were given, another worker process's
        log (which this one cannot flush) may still hold the predictions: the labels are
        attached again, once, after two flush intervals (the same label twice changes
        nothing). Blocks: call it from a worker thread in async code."""
        triples = list(labels)
        url = self._url.render_as_string(hide_password=False)
        self.flush(flush_timeout)
        attached = attach_labels(url, triples, by=by, overwrite=overwrite)
        if attached.matched + attached.conflicts < len(triples):
            time.sleep(2 * self.flush_interval)
            again = attach_labels(url, triples, by=by, overwrite=overwrite)
            attached = Attached(again.matched, attached.changed + again.changed, again.conflicts)
        return attached

    def close(self, timeout: float = 10.0) -> int:
        """Stop accepting requests, write everything queued, and stop the writer thread.

        Returns the number of accepted records still unwritten after ``timeout`` seconds (0
        normally): the database stayed unavailable, and they are lost (logged as an error,
        counted in :attr:`failed`). Safe to call again: later calls return the same number.
        """
        with self._close_lock:
            if self._closed:
                return self._lost
            with self._lock:
                self._closing = True
                self._deadline = time.monotonic() + timeout
                self._wake.notify_all()
                self._room.notify_all()
            self._thread.join(timeout)
            if self._thread.is_alive():  # stuck in a database call: give the rest up now
                with self._lock:
                    self._give_up(f"close() timed out after {timeout:g} s")
                self._thread.join(0.5)
            if not self._thread.is_alive():
                self._engine.dispose()
            self._closed = True
            atexit.unregister(self._at_exit)
            return self._lost

    # --- the writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                entries = self._take()
                if entries is None:
                    return
                batch = self._convert(entries)
                if batch:
                    self._write(batch)
                self._keep_bounds()
            except Exception:  # a bug here must not stop the log: say so and go on
                logger.exception("prediction log %s: the writer failed", self.url)
                with self._lock:
                    lost, self._inflight = self._inflight, 0
                    self._failed += lost
                    self._room.notify_all()
                if lost:
                    logger.error("prediction log %s: %d prediction(s) lost", self.url, lost)

    def _take(self) -> list[_Entry] | None:
        """Wait until a batch is due, then take whole requests off the queue, up to
        ``batch_size`` records (at least one request); None when closed and empty."""
        with self._lock:
            while True:
                if self._abandoned:
                    return None
                if self._queued >= self.batch_size or (self._queued and self._closing):
                    break
                if self._closing:
                    return None
                if self._queued and self._flush_now:
                    break
                if self._queued:
                    left = self._queue[0][0] + self.flush_interval - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(left)
                else:
                    self._flush_now = False
                    if self._prune_due():
                        return []
                    self._wake.wait(self._prune_wait())
            entries, n = [], 0
            while self._queue and n < self.batch_size:
                entry = self._queue.popleft()
                entries.append(entry)
                n += entry[1]
            self._queued -= n
            self._inflight += n
            if not self._queued:
                self._flush_now = False
            return entries

    def _convert(self, entries: list[_Entry]) -> list[tuple]:
        """Insert values (:data:`INSERT_COLUMNS`) of the taken requests, their records and
        outputs serialised now if they are not JSON already; a request that cannot be
        converted (e.g. bytes that are not UTF-8) is dropped and logged: it would fail the same
        way every time."""
        batch: list[tuple] = []
        bad = omitted = 0
        as_db = self._ts_value
        for _, n, request_id, name, version, model_id, inputs, outputs, when, role in entries:
            try:
                cut, limit = 0, self.max_record_bytes
                if inputs is None:  # a shadow's outputs: (store.SHADOW_COLUMNS)
                    batch.append(
                        (
                            str(request_id),
                            as_db(when),
                            n,
                            str(name),
                            version if version is None else str(version),
                            str(model_id),
                            None,
                            _json_text(outputs, "outputs", False),
                            role,
                        )
                    )
                    continue
                if limit and type(inputs) is not str and not isinstance(inputs, bytes):
                    inputs = _json_text(inputs, "inputs", True)  # its size known once serialised
                    size = bounds.over(inputs, limit)
                    if size:
                        inputs, cut = bounds.marker(size, limit), n
                batch.append(
                    (
                        request_id if type(request_id) is str else str(request_id),
                        as_db(when),
                        n,
                        name if type(name) is str else str(name),
                        version if version is None or type(version) is str else str(version),
                        model_id if type(model_id) is str else str(model_id),
                        inputs if type(inputs) is str else _json_text(inputs, "inputs", True),
                        outputs if type(outputs) is str else _json_text(outputs, "outputs", False),
                        role,
                    )
                )
                omitted += cut
            except Exception as exc:
                bad += n
                logger.error(
                    "prediction log %s: dropped request %r (%d record(s)): %s",
                    self.url,
                    request_id,
                    n,
                    exc,
                )
        if bad:
            self._dropped(bad)
        if omitted:
            with self._lock:
                self._omitted += omitted
        return batch

    def _write(self, batch: list[tuple]) -> None:
        """Write ``batch`` in one transaction, retrying with backoff while the database is
        unavailable; requests the database refuses are found by writing them one by one."""
        attempt = 0
        while batch:
            try:
                self._commit(batch)
                if attempt:
                    logger.info(
                        "prediction log %s: writing again after %d failure(s)", self.url, attempt
                    )
                return
            except Exception as exc:
                if _row_level(exc, self._dbapi):
                    batch = self._write_one_by_one(batch)
                    continue
                attempt += 1
                reason = store.reason(exc, self._url)
                with self._lock:
                    self._write_errors += 1
                logger.warning(
                    "prediction log %s: writing %d request(s) failed (attempt %d), retrying: %s",
                    self.url,
                    len(batch),
                    attempt,
                    reason,
                )
                if not self._backoff(attempt):
                    with self._lock:
                        self._give_up(f"the database stayed unavailable: {reason}")
                    return

    def _commit(self, batch: list[tuple]) -> None:
        """Insert ``batch`` in one transaction (:func:`~mlcycle.predlog.store.insert_rows`, and
        :func:`~mlcycle.predlog.store.insert_shadows` for a shadow's outputs: those without
        inputs) and count it written."""
        rows = [values for values in batch if values[6] is not None]
        with self._engine.begin() as conn:
            if rows:
                store.insert_rows(conn, self._mode, rows, self._copy_types)
            if len(rows) < len(batch):
                shadows = [v[:2] + v[3:6] + v[7:8] for v in batch if v[6] is None]
                store.insert_shadows(conn, self._mode, shadows)
        records = sum(values[2] for values in batch)
        self._since_prune += sum(len(values[6] or "") + len(values[7]) for values in batch)
        with self._lock:
            self._batches += 1
            if self._abandoned:  # close() counted these as lost; they made it after all
                self._failed -= records
                self._lost = max(0, self._lost - records)
                logger.warning(
                    "prediction log %s: %d record(s) counted as lost were written after all",
                    self.url,
                    records,
                )
            else:
                self._inflight -= records
            self._written += records
            self._room.notify_all()

    def _write_one_by_one(self, batch: list[tuple]) -> list[tuple]:
        """Write each request alone, dropping (and logging) those the database refuses;
        returns the requests left when the database itself fails, to retry as a batch."""
        for i, values in enumerate(batch):
            if self._abandoned:
                return []
            try:
                self._commit([values])
            except Exception as exc:
                if not _row_level(exc, self._dbapi):
                    return batch[i:]
                logger.error(
                    "prediction log %s: the database refused request %r (%d record(s)): %s",
                    self.url,
                    values[0],
                    values[2],
                    store.reason(exc, self._url),
                )
                self._dropped(values[2])
        return []

    # --- the bounds (writer thread) ------------------------------------------------------------

    def _prune_due(self) -> bool:
        """Whether to check the bounds now: at start, every ``prune_interval`` seconds, and
        when what was written since the last check could have filled half the room left."""
        if not (self.max_bytes or self.retention_days):
            return False
        written = self._since_prune  # 0: nothing new, whatever the room (none, if it is full)
        return time.monotonic() >= self._next_prune or 0 < written * 2 >= self._room_left

    def _prune_wait(self) -> float | None:
        """Seconds the idle writer may sleep before a check of the bounds is due."""
        if not (self.max_bytes or self.retention_days):
            return None
        return max(0.0, self._next_prune - time.monotonic())

    def _keep_bounds(self) -> None:
        """Prune the log to its bounds when due (:func:`~mlcycle.predlog.bounds.prune`); a
        failure is logged and tried again at the next check."""
        if not self._prune_due():
            return
        self._next_prune = time.monotonic() + self.prune_interval
        self._since_prune = 0
        try:
            requests, records, used = bounds.prune(
                self._engine, max_bytes=self.max_bytes, retention_days=self.retention_days
            )
        except sa_exc.SQLAlchemyError as exc:
            logger.warning(
                "prediction log %s: pruning to its bounds failed, tried again later: %s",
                self.url,
                store.reason(exc, self._url),
            )
            return
        if used is not None and self.max_bytes:
            self._room_left = max(0, self.max_bytes - used)
        if requests:
            with self._lock:
                self._pruned += records
            logger.info(
                "prediction log %s: deleted the oldest %d request(s) (%d record(s)) to keep it "
                "within its bounds%s",
                self.url,
                requests,
                records,
                f"; it takes {used} bytes" if used is not None else "",
            )

    def _dropped(self, n: int) -> None:
        with self._lock:
            if not self._abandoned:
                self._inflight -= n
                self._failed += n
            self._room.notify_all()

    def _backoff(self, attempt: int) -> bool:
        """Wait before retry ``attempt``; False when it is time to give up instead (closing and
        past the deadline)."""
        delay = min(RETRY_FIRST_SECONDS * 2 ** (attempt - 1), RETRY_MAX_SECONDS)
        end = time.monotonic() + delay
        with self._lock:
            while True:
                if self._abandoned:
                    return False
                now = time.monotonic()
                if self._closing and now >= self._deadline:
                    return False
                if now >= end:
                    return True
                self._wake.wait(min(end, self._deadline) - now)

    def _give_up(self, reason: str) -> None:
        """(Lock held.) Count every record not yet written as lost, log it, and stop the
        writer."""
        lost = self._queued + self._inflight
        self._queue.clear()
        self._queued = self._inflight = 0
        self._abandoned = True
        if lost:
            self._failed += lost
            self._lost += lost
            logger.error(
                "prediction log %s: %d prediction(s) lost, not written: %s", self.url, lost, reason
            )
        self._wake.notify_all()
        self._room.notify_all()
