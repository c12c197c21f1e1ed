"""Atomic file writing, content hashing, tables, and values as text and YAML.

Every stage output goes through these helpers: the bytes land in a temporary file or folder
next to the target and are renamed into place whole, so a killed run never leaves a
half-written artifact, and the next write of the target removes the temporary it left.
A cell value becomes text through :func:`value_text` wherever mlcycle writes or compares one,
and YAML files are written with :func:`yaml_scalar` and its companions.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError as Yaml12Error

CHUNK = 1 << 20


# A temporary beside its target: ``.<name>.<pid>.<12 hex>.tmp`` while it is written, ``.old``
# for the target moved aside during a folder's swap. Only the writer's process id tells a live
# one from one a killed run left behind.
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{12}\.(?P<kind>tmp|old)")
_WRITING: set[Path] = set()  # this process's temporaries being written now


def _beside(target: Path, kind: str = "tmp") -> Path:
    """A fresh hidden name beside ``target`` for its temporary file or folder."""
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(6)}.{kind}")


def _writer_alive(pid: int, path: Path) -> bool:
    """Whether the process that named a temporary ``path`` may still be writing it."""
    if pid == os.getpid():  # this process, or a killed one whose id it was given again
        return path.absolute() in _WRITING
    if os.name == "nt":  # os.kill would end the process there: keep what may be in use
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return not _ended(pid)


def _ended(pid: int) -> bool:
    """Whether process ``pid`` has ended and only waits to be reaped (a zombie: a killed
    stage whose parent died with it, adopted by an init process that does not reap, as in
    some containers): it writes nothing more, though ``os.kill(pid, 0)`` still finds it.
    False where there is no ``/proc`` to tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")  # after "(command name)"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _clear_leftovers(target: str | Path) -> None:
    """Remove what a killed writer of ``target`` left beside it (its temporary file or
    folder); a target it had moved aside and not yet replaced is put back."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    for path in sorted(target.parent.glob(f".{glob.escape(target.name)}.*")):
        found = _TEMPORARY.fullmatch(path.name)
        if not found or found["name"] != target.name:
            continue
        if _writer_alive(int(found["pid"]), path):
            continue
        if found["kind"] == "old" and not (target.exists() or target.is_symlink()):
            os.replace(path, target)  # killed between the two renames of a swap
        else:
            _remove(path)


def _swap_in(new: Path, target: Path) -> None:
    """Rename ``new`` over ``target``. A folder cannot be renamed over (nor onto a file), so
    then the old target is moved aside first and removed after: only a kill between those
    two renames leaves no target, and :func:`_clear_leftovers` puts the old one back."""
    if not (target.is_dir() or (new.is_dir() and (target.exists() or target.is_symlink()))):
        os.replace(new, target)
        return
    old = _beside(target, "old")
    os.replace(target, old)
    os.replace(new, target)
    _remove(old)


@contextmanager
def _written_beside(target: str | Path, folder: bool) -> Iterator[Path]:
    """Yield a new temporary file or folder beside ``target`` (leftovers of a killed writer
    removed first); on success it replaces ``target`` whole, on failure it is removed and
    ``target`` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _clear_leftovers(target)
    tmp = _beside(target)
    _WRITING.add(tmp.absolute())
    try:
        # Made here, not by tempfile (0600 files, 0700 folders): 0666 for a file, 0777 for a
        # folder, less the umask, as `open` and `mkdir` make them.
        if folder:
            tmp.mkdir(0o777)
        else:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        yield tmp
        _swap_in(tmp, target)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)
        _WRITING.discard(tmp.absolute())


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success."""
    with _written_beside(target, folder=False) as tmp:
        yield tmp


@contextmanager
def atomic_folder(target: str | Path) -> Iterator[Path]:
    """Yield a new, empty folder beside ``target`` to write a whole output into; on success it
    replaces ``target`` (whatever was there, a file or a folder, goes only then), so nothing
    of an earlier output survives; on failure it is removed and ``target`` is left as it was.
    A killed run leaves it beside ``target`` (``.<name>.<pid>.<hex>.tmp``) until the next
    write of ``target`` removes it."""
    with _written_beside(target, folder=True) as tmp:
        yield tmp


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


# --- values as text ------------------------------------------------------------------------------


def value_text(value: Any) -> str | None:
    """One cell value as text: numbers as they are written (``39``, ``1.5``; a whole float as
    an integer), booleans as ``true``/``false``, dates in ISO form, lists and mappings as JSON;
    None for a missing value. Categories, target values and text columns all compare and store
    values in this form, so ``1.0`` and ``1`` agree."""
    if value is None or (not isinstance(value, list | dict | np.ndarray) and pd.isna(value)):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        value = float(value)
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, list | dict | np.ndarray):
        data = value.tolist() if isinstance(value, np.ndarray) else value
        return json.dumps(data, sort_keys=True, default=str)
    return str(value)


# --- YAML ----------------------------------------------------------------------------------------

# The two readers of the YAML mlcycle writes: PyYAML (YAML 1.1; schema.yaml) and the one DVC
# uses (ruamel.yaml, YAML 1.2; params.yaml). Text is written plain only where both read it back.
_YAML12 = YAML(typ="safe", pure=True)


def _reads_back(probe: str, expected: Any) -> bool:
    """Whether PyYAML and ruamel.yaml both read ``probe`` as ``expected``."""
    for load in (yaml.safe_load, _YAML12.load):
        try:
            if load(probe) != expected:
                return False
        except (yaml.YAMLError, Yaml12Error):
            return False
    return True


def yaml_scalar(value: Any, flow: bool = False) -> str:
    """``value`` as a YAML scalar that reads back as the same value, plain where it can be,
    else a JSON (double-quoted) string; ``flow`` for an item of a ``[...]`` list."""
    if not isinstance(value, str):
        return yaml.safe_dump(value).split("\n", 1)[0]
    probe, expected = (f"[{value}]", [value]) if flow else (f"k: {value}", {"k": value})
    plain = value[:1].isalnum() and value == value.strip() and "#" not in value
    if plain and _reads_back(probe, expected):
        return value
    return json.dumps(value, ensure_ascii=False)


def yaml_key(name: str) -> str:
    """A mapping key as YAML: plain where it reads back as ``name``, else JSON-quoted."""
    plain = name == name.strip() and "#" not in name
    return name if plain and _reads_back(f"{name}: 1", {name: 1}) else json.dumps(name)


def yaml_flow_list(key: str, items: Iterable[Any], indent: str, width: int) -> list[str]:
    """``key: [a, b, ...]`` as lines of at most ``width`` characters where the items allow,
    continuation lines indented two more than ``indent``."""
    lines, line = [], f"{indent}{key}: ["
    parts = [yaml_scalar(v, flow=True) for v in items]
    for i, part in enumerate(parts):
        piece = part + ("," if i < len(parts) - 1 else "]")
        if len(line) + len(piece) + 1 > width and not line.endswith("["):
            lines.append(line)
            line = f"{indent}  {piece}"
        else:
            line += piece if line.endswith("[") else f" {piece}"
    if not parts:
        line += "]"
    lines.append(line)
    return lines
