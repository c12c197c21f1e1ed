"""Data sets in either layout: one Parquet file (the local engine) or a folder of Parquet parts
(the Dask engine), and the row hashes that make decisions independent of partitioning.

Every function here works on both layouts with pandas and pyarrow alone, so the package stage
hashes and samples either engine's output the same way, and the Dask engine's partition code
computes the same row hashes on any worker.

Decisions that must not depend on how rows are partitioned (the test split, the CV folds,
inner validation slices, the snapshot's order) come from :func:`row_hash`: a 64-bit hash of a
row's values, the same whichever partition, worker or engine computes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


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


def parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


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
    return sum(parquet_rows(p) for p in parts(path))


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
