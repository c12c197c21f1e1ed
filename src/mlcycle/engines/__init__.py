"""The Dask engine's shared pieces: the cluster connection, partitioned data sets, row hashes.

``engine.kind: dask`` in params.yaml runs the data stages on a Dask cluster: a running
scheduler (``engine.scheduler``) or a ``LocalCluster`` started here. The stage modules in
:mod:`mlcycle.stages` keep their inputs and outputs; with Dask, the data sets they write
(``data/raw/snapshot.parquet``, ``data/prepared/*.parquet``) are folders of Parquet parts
rather than single files. Both engines read both layouts (``pd.read_parquet`` and
``dd.read_parquet`` take either), so a project can switch engines without re-gathering.

Decisions that must not depend on how rows are partitioned (the test split, the CV folds,
inner validation slices, the snapshot's order) come from :func:`row_hash`: a 64-bit hash of a
row's values, the same whichever partition, worker or engine computes it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mlcycle.config import EngineConfig
from mlcycle.io import atomic_folder

if TYPE_CHECKING:
    import dask.dataframe as dd
    from distributed import Client

Say = Callable[[str], None]
PART_NAME = "part-{:05d}.parquet"


class EngineError(ValueError):
    """The Dask cluster cannot be reached or started; the message says what to check."""


@contextlib.contextmanager
def dask_client(cfg: EngineConfig, say: Say) -> Iterator[Client]:
    """A Dask client for ``cfg``: connected to ``cfg.scheduler``, or to a LocalCluster started
    (and shut down on exit) here. Prints the workers and the dashboard link."""
    import logging

    from distributed import Client, LocalCluster

    # The P2P shuffle logs every shuffle it starts and ends at WARNING: noise in a stage's log.
    logging.getLogger("distributed.shuffle").setLevel(logging.ERROR)
    if cfg.scheduler:
        try:
            client = Client(cfg.scheduler, timeout=f"{cfg.connect_timeout}s")
        except (OSError, TimeoutError) as exc:
            raise EngineError(
                f"engine.scheduler {cfg.scheduler}: cannot connect ({exc}); is `dask "
                "scheduler` running there, and is its port reachable from this machine?"
            ) from None
        with client:
            workers = client.scheduler_info().get("workers", {})
            if not workers:
                say(f"dask: waiting for a worker at {cfg.scheduler}")
                client.wait_for_workers(1, timeout=cfg.connect_timeout)
                workers = client.scheduler_info().get("workers", {})
            threads = sum(w.get("nthreads", 0) for w in workers.values())
            say(
                f"dask: scheduler {cfg.scheduler}, {len(workers)} worker(s), {threads} "
                f"thread(s); dashboard {client.dashboard_link}"
            )
            yield client
        return
    with (
        LocalCluster(
            n_workers=cfg.workers,
            threads_per_worker=cfg.threads_per_worker,
            memory_limit=cfg.memory_limit,
            dashboard_address=cfg.dashboard,
            processes=True,
        ) as cluster,
        Client(cluster) as client,
    ):
        say(
            f"dask: LocalCluster of {cfg.workers} worker(s) x {cfg.threads_per_worker} "
            f"thread(s), memory {cfg.memory_limit} each; dashboard {client.dashboard_link}"
        )
        yield client


def _mix(h: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: every output bit depends on every input bit."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def row_hash(frame: pd.DataFrame, seed: int = 0, purpose: str = "") -> pd.Series:
    """A 64-bit hash of each row's values (the index plays no part), keyed by ``seed``.

    The same row gets the same hash in any partition and on any engine. Categorical and text
    columns of equal values hash alike; an integer 1 and a float 1.0 do not. The seed is mixed
    into pandas' row hash with SplitMix64 (pandas' own ``hash_key`` gives badly skewed hashes
    for some keys), so every seed gives uniform hashes. ``purpose`` names the decision the
    hash makes ("split", "folds", "sample"...): two decisions over the same columns with the
    same seed must not use the same hash, or a sample of the training split would be drawn
    from the very hashes that chose it (and hold no row under the test share).
    """
    import zlib

    base = pd.util.hash_pandas_object(frame, index=False, categorize=True).to_numpy()
    key = (seed & 0xFFFFFFFF) << 32 | zlib.crc32(purpose.encode())
    salt = _mix(np.array([key], dtype=np.uint64))[0]
    return pd.Series(_mix(base ^ salt), index=frame.index, dtype="uint64")


def unit_interval(hashes: pd.Series | np.ndarray) -> np.ndarray:
    """Hashes as floats uniform in [0, 1): the top 53 bits over 2**53."""
    h = np.asarray(hashes, dtype=np.uint64)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def is_dataset(path: str | Path) -> bool:
    """Whether ``path`` is a partitioned data set (a folder of Parquet parts)."""
    return Path(path).is_dir()


def read_dataset(path: str | Path, columns: list[str] | None = None) -> dd.DataFrame:
    """A Parquet file or a folder of Parquet parts as a lazy Dask frame, one partition per
    part (or row group)."""
    import dask.dataframe as dd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run the stage that writes it")
    return dd.read_parquet(str(path), columns=columns, index=False)


def write_dataset(target: str | Path, frame: dd.DataFrame, say: Say | None = None) -> int:
    """Write ``frame`` as a folder of Parquet parts (``part-00000.parquet``...) in place of
    ``target`` (a file or folder), without an index; returns the rows written.

    The parts are written to a temporary folder beside ``target`` and renamed into place, so
    a killed run leaves the previous data set, not a half-written one.
    """
    target = Path(target)
    start = time.perf_counter()
    with atomic_folder(target) as tmp:
        frame.to_parquet(
            str(tmp),
            write_index=False,
            name_function=PART_NAME.format,
            write_metadata_file=False,
        )
        rows = sum(_parquet_rows(p) for p in sorted(tmp.glob("*.parquet")))
    if say:
        parts = len(list(target.glob("*.parquet")))
        say(
            f"wrote {rows} rows in {parts} part(s) -> {target} ({time.perf_counter() - start:.1f}s)"
        )
    return rows


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def partitions_for(rows: int, cfg: EngineConfig) -> int:
    """The number of partitions for ``rows`` rows at ``cfg.partition_rows`` per partition."""
    return max(1, -(-rows // cfg.partition_rows))


def parts(path: str | Path) -> list[Path]:
    """The Parquet files of a data set in order: the file itself, or a folder's parts."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.rglob("*.parquet") if p.is_file())
    return [path]


def dataset_digest(path: str | Path) -> str:
    """SHA-256 of a data set: of the file's bytes, or of each part's name and bytes in order
    (a folder's digest changes when any part does, and only then)."""
    import hashlib

    from mlcycle.io import sha256_file

    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    digest = hashlib.sha256()
    for part in parts(path):
        digest.update(f"{part.relative_to(path).as_posix()}\0{sha256_file(part)}\n".encode())
    return digest.hexdigest()


def dataset_rows(path: str | Path) -> int:
    """Rows of a data set, from the Parquet footers (no data is read)."""
    return sum(_parquet_rows(p) for p in parts(path))


def sample_dataset(
    path: str | Path, max_rows: int, seed: int = 0, columns: list[str] | None = None
) -> pd.DataFrame:
    """At most about ``max_rows`` rows of a data set, chosen by row hash (the same rows
    whatever the partitioning), read one part at a time: memory is one part plus the sample.
    All rows when the data set has no more than ``max_rows``."""
    import pyarrow.parquet as pq

    total = dataset_rows(path)
    share = 1.0 if total <= max_rows else max_rows / total
    frames = []
    for part in parts(path):
        pf = pq.ParquetFile(part)
        for i in range(pf.num_row_groups):
            chunk = pf.read_row_group(i, columns=columns).to_pandas()
            if share < 1.0:
                chunk = chunk[unit_interval(row_hash(chunk, seed, "sample")) < share]
            frames.append(chunk)
    if not frames:
        return pd.read_parquet(parts(path)[0], columns=columns)
    return pd.concat(frames, ignore_index=True)
