"""Atomic file writing and content hashing.

Every stage output goes through these helpers: the bytes land in a temporary file next to the
target and are renamed into place, so a killed run never leaves a half-written artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

CHUNK = 1 << 20


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_folder(target: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it is renamed over ``target``
    (whatever was there, a file or a folder, goes only then); on failure it is removed and
    ``target`` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_bytes(target: str | Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``target`` atomically."""
    write_bytes(target, text.encode("utf-8"))


def dumps_json(obj: Any) -> str:
    """Serialise ``obj`` as stable, human-readable JSON (sorted keys, trailing newline)."""
    return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_json(target: str | Path, obj: Any) -> None:
    """Write ``obj`` as stable JSON to ``target`` atomically."""
    write_text(target, dumps_json(obj))


def read_json(path: str | Path) -> Any:
    """Read a JSON file, naming the file if it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc


def write_parquet(target: str | Path, df: pd.DataFrame) -> None:
    """Write ``df`` to Parquet atomically, without the index."""
    with atomic_path(target) as tmp:
        df.to_parquet(tmp, index=False)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".jsonl", ".jsonl.gz")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in TABLE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise ValueError(f"{path}: unsupported file type; use one of {', '.join(TABLE_SUFFIXES)}")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV, Parquet or JSON Lines file (by its suffix), or a folder of Parquet parts,
    naming the file on failure."""
    path = Path(path)
    suffix = _suffix(path)
    if suffix == ".parquet" and path.is_dir():  # a folder of parts (the Dask engine's layout)
        return pd.read_parquet(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        if suffix.startswith(".csv"):
            return pd.read_csv(path, skipinitialspace=True)
        if suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_json(path, lines=True)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise ValueError(f"{path}: cannot read as {suffix}: {exc}") from exc


def write_table(path: str | Path, df: pd.DataFrame) -> None:
    """Write ``df`` atomically as CSV, Parquet or JSON Lines, by the suffix of ``path``."""
    path = Path(path)
    suffix = _suffix(path)
    with atomic_path(path) as tmp:
        if suffix.startswith(".csv"):
            df.to_csv(tmp, index=False, compression="gzip" if suffix.endswith(".gz") else None)
        elif suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_json(
                tmp,
                orient="records",
                lines=True,
                compression="gzip" if suffix.endswith(".gz") else None,
            )
