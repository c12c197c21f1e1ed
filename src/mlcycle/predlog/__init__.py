"""The prediction log: every prediction the service makes, stored for monitoring, audit and labels.

A :class:`PredictionLog` sits behind a SQLAlchemy URL: ``sqlite:///logs/predictions.db`` (a
relative path is relative to the current directory; missing folders are created) or
``postgresql+psycopg://user:password@host/db`` in production. It writes its tables, created if
missing. ``predictions`` holds one row per request (one :meth:`PredictionLog.submit` call), its
records and their outputs as JSON arrays:

=============  ==========================  ==================================================
column         type                        what
=============  ==========================  ==================================================
id             integer, primary key        autoincrement; the order requests were inserted in
request_id     text, not null, indexed     the request's id
ts             timestamp with time zone,   when the prediction was made (UTC)
               not null, indexed
records        integer, not null           how many records the request had (``n``)
model_name     text, not null              the model's name
model_version  text, nullable              the deployed version, if the service has one
model_id       text, not null, indexed     the model file's SHA-256 prefix (its identity)
inputs         text, not null              JSON of the records as received: an array of
                                           records, or an object whose ``"records"`` key holds
                                           that array (a ``/predict`` body, verbatim)
outputs        text, not null              JSON array of the answers, one per record:
                                           ``{"label": ..., "probabilities": {...}}`` or
                                           ``{"value": ...}``
role           text, not null,             which model answered: ``prod`` or ``canary`` (a
               default ``prod``            log made before it existed gets the column)
=============  ==========================  ==================================================

``prediction_shadows`` holds a shadow model's outputs for the requests it scored
(:meth:`PredictionLog.submit_shadow`), a row per request: ``id``, ``request_id`` (indexed),
``ts``, ``model_name``, ``model_version``, ``model_id`` and ``outputs`` (as in
``predictions``). They are deleted with their requests by the log's bounds.

``prediction_labels`` holds the true labels that arrive later (:func:`attach_labels`), one row
per labelled record, primary key ``(request_id, row)`` (a log created before ``labelled_by``
existed gets the column, null for its labels):

=============  ==========================  ==================================================
request_id     text, not null              the request the record came in
row            integer, not null           the record's position in its request (0-based)
label          text, not null              the true label
ts             timestamp with time zone,   when the label was attached (UTC)
               not null
labelled_by    text                        who gave it: the service's credential name,
                                           ``anonymous`` (no credentials, on loopback) or
                                           ``cli:<user>`` (``mlcycle feedback``)
=============  ==========================  ==================================================

``prediction_label_changes`` is the audit of those labels: a row per label given, replaced or
removed (``id``, ``request_id``, ``row``, ``ts``, ``labelled_by``, ``previous``: null for a
first label, ``label``: null when removed), only ever inserted. A label already given is
replaced only when asked for (``overwrite``).

A row per request, not per record, because the writer thread shares the service's CPU (and
GIL): one insert and, when the service hands over the JSON it already has (the request body as
received, the bytes of the predictions it answered), no serialisation at all, whatever the
number of records. Counters, the queue bound and batch sizes still count records.

Writes are off the request path: :meth:`PredictionLog.submit` puts one request on a bounded
in-memory queue and returns at once; a background thread writes requests in batches, one
transaction per batch (whole requests up to ``batch_size`` records, or whatever is waiting
every ``flush_interval`` seconds). A full queue refuses the whole call (``submit`` returns
False, the service answers 503) instead of dropping a logged prediction. A failing database is
retried with backoff and reported through :mod:`logging`; records are only ever given up when
:meth:`PredictionLog.close` runs out of time, and then their number is logged and returned.
Messages never carry the URL's credentials.

SQLite runs in WAL mode with ``synchronous=NORMAL`` and a busy timeout, so several worker
processes can append to the same file. Create one :class:`PredictionLog` per process (after a
fork: the writer thread does not survive one).

:func:`read_log` reads the log back as a pandas frame with one row per record (``inputs`` and
``outputs`` as dicts, labels and the shadow's outputs joined in), and :func:`attach_labels`
records true labels.

The package's modules: :mod:`~mlcycle.predlog.store` (the tables, engines, SQLite and
PostgreSQL specifics), :mod:`~mlcycle.predlog.writer` (:class:`PredictionLog`),
:mod:`~mlcycle.predlog.reader` (:func:`read_log`) and :mod:`~mlcycle.predlog.labels`
(:func:`attach_labels`, :func:`labels_from_file`); import from ``mlcycle.predlog``.
"""

from mlcycle.predlog.labels import Attached, attach_labels, labels_from_file, local_author
from mlcycle.predlog.reader import COLUMNS, read_log
from mlcycle.predlog.store import (
    DEFAULT_URL,
    INSERT_COLUMNS,
    LABEL_CHANGES_TABLE,
    LABELS_TABLE,
    SHADOWS_TABLE,
    TABLE,
    PredictionLogError,
    metadata,
    prediction_label_changes,
    prediction_labels,
    prediction_shadows,
    predictions,
)
from mlcycle.predlog.writer import PredictionLog

__all__ = [
    "COLUMNS",
    "LABEL_CHANGES_TABLE",
    "DEFAULT_URL",
    "INSERT_COLUMNS",
    "Attached",
    "LABELS_TABLE",
    "SHADOWS_TABLE",
    "TABLE",
    "PredictionLog",
    "PredictionLogError",
    "attach_labels",
    "labels_from_file",
    "local_author",
    "metadata",
    "prediction_label_changes",
    "prediction_labels",
    "prediction_shadows",
    "predictions",
    "read_log",
]
