"""Tests of every kind of data source against the real thing.

Files are written in a temporary folder; SQLite is a real database file; PostgreSQL is the real
server `.ci/run` starts (URL in ``MLCYCLE_TEST_POSTGRES_URL``; without it these tests skip, and
fail under CI); HTTP is a real server on 127.0.0.1 in a thread of this process. Nothing is mocked.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import socket
import sqlite3
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlcycle.config import ConfigError, Source, section
from mlcycle.io import sha256_bytes, sha256_file, write_parquet
from mlcycle.sources import (
    REASON_SUFFIX,
    SourceError,
    combined_digest,
    frame_digest,
    quarantine_folder,
    read_source,
    redact_url,
    type_conflicts,
    union,
    write_quarantine,
)
from tests.conftest import ROOT, git_commit, make_project, run

# Three records with the quirks every kind must handle the same way: padding, "?" for missing,
# and a label spelt two ways (value_map).
RECORDS = pd.DataFrame(
    {
        "id": [1, 2, 3],
        "city": ["Oslo", " Lima ", "?"],
        "temp": [3.5, 19.0, None],
        "label": ["cold", "hot.", "cold"],
    }
)
COLUMNS = ("id", "city", "temp", "label")
QUIRKS = {"na_values": ("?",), "value_map": {"label": {"hot.": "hot"}}}


def source(**fields) -> Source:
    """A source named ``readings`` with the quirk settings, overridden by ``fields``."""
    return Source(**{"name": "readings", **QUIRKS, **fields})


def assert_clean_records(df: pd.DataFrame) -> None:
    """The three RECORDS, cleaned: whitespace stripped, "?" missing, labels mapped."""
    assert [str(c) for c in df.columns] == list(COLUMNS)
    assert df["id"].tolist() == [1, 2, 3]
    assert df["city"].iloc[:2].tolist() == ["Oslo", "Lima"]
    assert pd.isna(df["city"].iloc[2])
    assert df["temp"].iloc[:2].tolist() == [3.5, 19.0]
    assert pd.isna(df["temp"].iloc[2])
    assert df["label"].tolist() == ["cold", "hot", "cold"]


def csv_bytes(df: pd.DataFrame = RECORDS) -> bytes:
    return df.to_csv(index=False).encode()


def jsonl_bytes(df: pd.DataFrame = RECORDS) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in df.to_dict("records")).encode()


def parquet_bytes(df: pd.DataFrame, path: Path) -> bytes:
    df.to_parquet(path, index=False)
    return path.read_bytes()


def plain_rows(df: pd.DataFrame = RECORDS) -> list[list]:
    """The frame's rows as Python values, ``None`` for missing: what a DB driver binds."""
    return df.astype(object).where(df.notna(), None).values.tolist()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- value_map: recoding values of any type -------------------------------------------------

GRADES = pd.DataFrame({"grade": [6, 7, 8, 6], "city": ["Oslo", "6", "Lima", "Oslo"]})


def recoded(tmp_path: Path, value_map: dict, frame: pd.DataFrame = GRADES):
    """The source read from a CSV of ``frame`` with ``value_map`` (as params.yaml gives it)."""
    frame.to_csv(tmp_path / "g.csv", index=False)
    raw = {"name": "grades", "path": "g.csv", "value_map": value_map}
    (src,) = section({"data": {"sources": [raw]}}, "data").sources
    return read_source(src, tmp_path)


def test_value_map_recodes_numbers_by_value_and_null_means_missing(tmp_path: Path) -> None:
    read = recoded(tmp_path, {"grade": {"6": None, 8.0: 9}, "city": {6: "Six", "Oslo": None}})
    assert read.frame["grade"].tolist()[1:3] == [7, 9] and read.frame["grade"].isna().sum() == 2
    assert read.frame["city"].tolist()[1:3] == ["Six", "Lima"]  # text matches text: "6"
    assert read.frame["city"].isna().sum() == 2
    assert read.lineage["value_map"] == {"grade": {"6": 2, "8.0": 1}, "city": {"6": 1, "Oslo": 2}}
    assert "warnings" not in read.lineage
    assert recoded(tmp_path, {"grade": {6.0: 5.5}}).frame["grade"].tolist() == [5.5, 7, 8, 5.5]


def test_value_map_entry_that_matches_nothing_is_a_warning(tmp_path: Path) -> None:
    read = recoded(tmp_path, {"grade": {"9": 1, "6": 5}, "city": {"oslo": "Oslo"}})
    assert read.frame["grade"].tolist() == [5, 7, 8, 5]
    assert read.lineage["value_map"] == {"grade": {"9": 0, "6": 2}, "city": {"oslo": 0}}
    assert read.lineage["warnings"] == [
        "source 'grades': value_map grade: '9' matches no value of column 'grade'; nothing was "
        "recoded (check the spelling and the column's type)",
        "source 'grades': value_map city: 'oslo' matches no value of column 'city'; nothing was "
        "recoded (check the spelling and the column's type)",
    ]


@pytest.mark.parametrize(
    ("value_map", "message"),
    [
        ({"grade": {"6.0": ""}}, "key '6.0' cannot apply: column 'grade' holds number values in "
                                 "this source, and its new value '' is not a number"),
        ({"grade": {"six": 6}}, "key 'six' cannot apply: column 'grade' holds number values in "
                                "this source, and the key 'six' is not a number"),
        ({"grade": {"6": 1, 6.0: 2}}, "value_map grade: keys '6' and '6.0' are the same value"),
    ],
)  # fmt: skip
def test_value_map_that_cannot_apply_to_the_column_is_refused(
    tmp_path: Path, value_map: dict, message: str
) -> None:
    with pytest.raises(SourceError, match="^source 'grades': value_map grade: ") as exc:
        recoded(tmp_path, value_map)
    assert message in str(exc.value)


# --- file ----------------------------------------------------------------------------------


def test_csv_file_is_cleaned_and_hashed(tmp_path: Path) -> None:
    content = csv_bytes()
    (tmp_path / "r.csv").write_bytes(content)
    read = read_source(source(path="r.csv", sha256=sha256_bytes(content)), tmp_path)
    assert_clean_records(read.frame)
    assert read.lineage == {
        "name": "readings",
        "kind": "file",
        "path": "r.csv",
        "format": "csv",
        "sha256": sha256_bytes(content),
        "value_map": {"label": {"hot.": 1}},  # the rows each entry recoded
        "rows": 3,
        "columns": list(COLUMNS),
    }


def test_parquet_file(tmp_path: Path) -> None:
    content = parquet_bytes(RECORDS, tmp_path / "r.parquet")
    read = read_source(source(path="r.parquet", format="parquet"), tmp_path)
    assert_clean_records(read.frame)
    assert read.lineage["sha256"] == sha256_bytes(content)


def test_gzipped_json_lines_file_is_hashed_by_its_content(tmp_path: Path) -> None:
    content = jsonl_bytes()
    (tmp_path / "r.jsonl.gz").write_bytes(gzip.compress(content))
    read = read_source(source(path="r.jsonl.gz", format="jsonl"), tmp_path)
    assert_clean_records(read.frame)
    assert read.lineage["sha256"] == sha256_bytes(content)


def test_json_lines_keys_in_any_order_follow_the_declared_columns(tmp_path: Path) -> None:
    lines = [{"label": "cold", "id": 1, "temp": 3.5, "city": "Oslo"}]
    (tmp_path / "r.jsonl").write_text(json.dumps(lines[0]) + "\n")
    read = read_source(source(path="r.jsonl", format="jsonl", columns=COLUMNS), tmp_path)
    assert list(read.frame.columns) == list(COLUMNS)


def test_a_declared_delimiter_reads_a_semicolon_file(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_bytes(RECORDS.to_csv(index=False, sep=";").encode())
    assert_clean_records(read_source(source(path="r.csv", delimiter=";"), tmp_path).frame)


@pytest.mark.parametrize(("sep", "shown"), [(";", "';'"), ("\t", "a tab"), ("|", "'|'")])
def test_a_file_in_another_delimiter_says_which(tmp_path: Path, sep: str, shown: str) -> None:
    (tmp_path / "r.csv").write_bytes(RECORDS.to_csv(index=False, sep=sep).encode())
    with pytest.raises(SourceError, match=f"seems to be delimited by {shown}, not ','"):
        read_source(source(path="r.csv"), tmp_path)
    # Without a header, against the declared columns.
    (tmp_path / "h.csv").write_bytes(RECORDS.to_csv(index=False, header=False, sep=sep).encode())
    with pytest.raises(SourceError, match=f"seems to be delimited by {shown}"):
        read_source(source(path="h.csv", header=False, columns=COLUMNS), tmp_path)


def test_records_with_more_or_fewer_fields_than_the_header_are_named(tmp_path: Path) -> None:
    text = "id,city,temp,label\n1,Oslo,3.5,cold\n2,Lima,19.0\n3,Rome,9.0,cold,extra\n"
    (tmp_path / "r.csv").write_text(text)
    with pytest.raises(
        SourceError,
        match=r"the header \(line 1\) has 4 fields, but 2 of 3 records have another number of "
        r"fields \(3 fields in 1 line, 5 fields in 1 line; lines 3, 4\)",
    ):
        read_source(source(path="r.csv"), tmp_path)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_columns_the_schema_types_as_text_are_read_as_text(tmp_path: Path, fmt: str) -> None:
    """A postcode is text: "02134" keeps its leading zero, 10115 becomes "10115"."""
    data = pd.DataFrame({"zip": ["02134", "10115", None], "n": [1, 2, 3]})
    path = tmp_path / f"z.{fmt}"
    if fmt == "csv":
        path.write_text("zip,n\n02134,1\n10115,2\n,3\n")
    elif fmt == "jsonl":
        path.write_text('{"zip": "02134", "n": 1}\n{"zip": 10115, "n": 2}\n{"zip": null, "n": 3}\n')
    else:
        data.assign(zip=[2134, 10115, None]).to_parquet(path)  # stored as numbers upstream
    zips = Source(name="zips", path=path.name, format=fmt).with_text_columns(("zip",))
    read = read_source(zips, tmp_path)
    expected = ["02134", "10115", None] if fmt != "parquet" else ["2134", "10115", None]
    assert [None if pd.isna(v) else v for v in read.frame["zip"]] == expected
    assert read.frame["n"].tolist() == [1, 2, 3]
    plain = read_source(Source(name="zips", path=path.name, format=fmt), tmp_path).frame
    assert not pd.api.types.is_string_dtype(plain["zip"]) or fmt == "jsonl"


def test_gather_reads_the_schemas_text_columns(tmp_path: Path) -> None:
    from mlcycle.stages.gather import text_columns

    assert text_columns(tmp_path / "none.yaml") == ()
    assert "workclass" in text_columns(ROOT / "schema.yaml")
    assert "age" not in text_columns(ROOT / "schema.yaml")


def test_quoted_fields_may_hold_the_delimiter_and_line_breaks(tmp_path: Path) -> None:
    text = 'id,city,temp,label\r\n1,"Oslo, NO",3.5,cold\r\n\r\n2,"Lima\nPE",19.0,hot\r\n'
    (tmp_path / "r.csv").write_text(text, newline="")
    frame = read_source(source(path="r.csv"), tmp_path).frame
    assert frame["city"].tolist() == ["Oslo, NO", "Lima\nPE"]
    (tmp_path / "bad.csv").write_text(text + '3,"Rome, IT",9.0\n', newline="")
    with pytest.raises(SourceError, match=r"1 of 3 records have another number of fields"):
        read_source(source(path="bad.csv"), tmp_path)


def test_a_column_of_several_types_becomes_text_and_the_snapshot_can_be_written(
    tmp_path: Path,
) -> None:
    """Numbers in one source and words in another (or both in one JSON file) would crash
    pyarrow; they become text, and validate reports the words."""
    (tmp_path / "a.csv").write_bytes(csv_bytes())
    words = RECORDS.astype({"id": object})
    words.loc[1, "id"] = "two"
    (tmp_path / "b.csv").write_bytes(csv_bytes(words))
    mixed = [{"id": 1, "city": "Oslo", "temp": "warm", "label": "cold"},
             {"id": "x", "city": "Lima", "temp": 2.5, "label": "hot"}]  # fmt: skip
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mixed))
    reads = [
        read_source(source(name="a", path="a.csv"), tmp_path),
        read_source(source(name="b", path="b.csv"), tmp_path),
        read_source(source(name="c", path="c.jsonl", format="jsonl"), tmp_path),
    ]
    assert type_conflicts([(r.lineage["name"], r.frame) for r in reads]) == {
        "id": {"a": "number", "b": "text", "c": "text"},
        "temp": {"a": "number", "b": "number", "c": "text"},
    }
    merged = union(reads)
    assert merged["id"].tolist() == ["1", "2", "3", "1", "two", "3", "1", "x"]
    assert merged["temp"].tolist()[:2] == ["3.5", "19"] and merged["temp"].tolist()[6] == "warm"
    assert merged["city"].tolist()[:2] == ["Oslo", "Lima"]  # columns that agree keep their type
    write_parquet(tmp_path / "snapshot.parquet", merged)
    back = pd.read_parquet(tmp_path / "snapshot.parquet")
    assert back["id"].tolist() == merged["id"].tolist()


def test_glob_reads_matching_files_in_sorted_order_with_a_combined_hash(tmp_path: Path) -> None:
    parts = {"b.csv": RECORDS.iloc[1:2], "a.csv": RECORDS.iloc[0:1], "c.csv.gz": RECORDS.iloc[2:]}
    (tmp_path / "in").mkdir()
    digests = {}
    for name, part in parts.items():
        content = csv_bytes(part)
        digests[f"in/{name}"] = sha256_bytes(content)
        raw = gzip.compress(content) if name.endswith(".gz") else content
        (tmp_path / "in" / name).write_bytes(raw)
    (tmp_path / "in" / "ignored.txt").write_text("not matched")
    read = read_source(source(path="in/*.csv*"), tmp_path)
    assert_clean_records(read.frame)  # a, b, c: sorted by path, whatever the creation order
    names = ["in/a.csv", "in/b.csv", "in/c.csv.gz"]
    assert [f["file"] for f in read.lineage["files"]] == names
    assert [f["sha256"] for f in read.lineage["files"]] == [digests[n] for n in names]
    # The documented combined hash: SHA-256 of the SHA256SUMS-style listing.
    listing = "".join(f"{digests[n]}  {n}\n" for n in names).encode()
    assert read.lineage["sha256"] == hashlib.sha256(listing).hexdigest()
    assert combined_digest([(n, digests[n]) for n in names]) == read.lineage["sha256"]
    pinned = read_source(source(path="in/*.csv*", sha256=read.lineage["sha256"]), tmp_path)
    assert pinned.lineage == read.lineage


def test_glob_with_a_changed_file_fails_its_pinned_hash(tmp_path: Path) -> None:
    for i in range(2):
        (tmp_path / f"p{i}.csv").write_bytes(csv_bytes(RECORDS.iloc[[i]]))
    pinned = read_source(source(path="p*.csv"), tmp_path).lineage["sha256"]
    (tmp_path / "p1.csv").write_bytes(csv_bytes(RECORDS.iloc[[2]]))
    with pytest.raises(SourceError, match=r"source 'readings'.*'p\*\.csv' \(combined\).*SHA-256"):
        read_source(source(path="p*.csv", sha256=pinned), tmp_path)


def test_glob_matching_nothing_names_the_pattern(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"source 'readings': no file matches .*'data/\*\.csv'"):
        read_source(source(path="data/*.csv"), tmp_path)


def test_glob_files_with_different_columns_are_named(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(csv_bytes())
    (tmp_path / "b.csv").write_bytes(csv_bytes(RECORDS.rename(columns={"temp": "t"})))
    with pytest.raises(SourceError, match=r"columns .* of b\.csv differ from .* of a\.csv"):
        read_source(source(path="*.csv"), tmp_path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"source 'readings': file data/r\.csv does not exist"):
        read_source(source(path="data/r.csv"), tmp_path)


def test_file_with_wrong_checksum_is_refused(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_bytes(csv_bytes())
    with pytest.raises(SourceError, match=r"source 'readings'.*has SHA-256 .* expects 0{64}"):
        read_source(source(path="r.csv", sha256="0" * 64), tmp_path)


def test_unparseable_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_text('{"id": 1}\nnot json\n')
    with pytest.raises(SourceError, match=r"source 'readings': cannot parse r\.jsonl"):
        read_source(source(path="r.jsonl", format="jsonl"), tmp_path)


# --- database: SQLite ------------------------------------------------------------------------


def make_sqlite(path: Path, primary_key: bool = True) -> Path:
    """A real SQLite file with RECORDS in table ``readings``, inserted in reverse order."""
    with sqlite3.connect(path) as db:
        pk = " PRIMARY KEY" if primary_key else ""
        db.execute(f"CREATE TABLE readings (id INTEGER{pk}, city TEXT, temp REAL, label TEXT)")
        db.executemany("INSERT INTO readings VALUES (?, ?, ?, ?)", plain_rows()[::-1])
    db.close()
    return path


@pytest.mark.parametrize("primary_key", [True, False])
def test_sqlite_table_comes_back_in_a_stable_order(tmp_path: Path, primary_key: bool) -> None:
    make_sqlite(tmp_path / "shop.db", primary_key)
    s = source(kind="database", url="sqlite:///shop.db", table="readings")
    read = read_source(s, tmp_path)
    assert_clean_records(read.frame)  # by primary key, or by all columns without one
    assert read.lineage["url"] == "sqlite:///shop.db"
    assert read.lineage["table"] == "readings"
    assert read.lineage["rows"] == 3
    assert read_source(s, tmp_path).lineage["sha256"] == read.lineage["sha256"]


def test_sqlite_query_from_a_bare_path_keeps_the_query_order(tmp_path: Path) -> None:
    make_sqlite(tmp_path / "shop.db")
    query = "SELECT id, city, temp, label FROM readings ORDER BY id DESC"
    read = read_source(source(kind="database", url="shop.db", query=query), tmp_path)
    assert read.frame["id"].tolist() == [3, 2, 1]
    assert read.frame["label"].tolist() == ["cold", "hot", "cold"]
    assert read.lineage["query"] == query
    assert "table" not in read.lineage


def test_database_hash_is_of_the_result_and_can_be_pinned(tmp_path: Path) -> None:
    make_sqlite(tmp_path / "shop.db")
    s = source(kind="database", url="sqlite:///shop.db", query="SELECT * FROM readings ORDER BY id")
    raw = pd.DataFrame(
        {"id": [1, 2, 3], "city": ["Oslo", " Lima ", "?"], "temp": [3.5, 19.0, None]}
    ).assign(label=["cold", "hot.", "cold"])
    digest = read_source(s, tmp_path).lineage["sha256"]
    assert digest == frame_digest(raw)  # CSV of the result before cleaning, \N for NULL
    assert read_source(Source(**{**s.__dict__, "sha256": digest}), tmp_path).lineage["rows"] == 3
    with sqlite3.connect(tmp_path / "shop.db") as db:
        db.execute("UPDATE readings SET temp = 20.0 WHERE id = 2")
    db.close()
    with pytest.raises(SourceError, match=r"source 'readings': the result \(as CSV\) has SHA-256"):
        read_source(Source(**{**s.__dict__, "sha256": digest}), tmp_path)


def test_sqlite_unknown_table_is_named(tmp_path: Path) -> None:
    make_sqlite(tmp_path / "shop.db")
    s = source(kind="database", url="sqlite:///shop.db", table="sales")
    with pytest.raises(SourceError, match=r"source 'readings' \(sqlite:///shop.db\).*'sales'"):
        read_source(s, tmp_path)


def test_sqlite_bad_sql_is_reported(tmp_path: Path) -> None:
    make_sqlite(tmp_path / "shop.db")
    s = source(kind="database", url="sqlite:///shop.db", query="SELEC id FROM readings")
    with pytest.raises(SourceError, match=r"source 'readings'.*the query failed.*syntax error"):
        read_source(s, tmp_path)


def test_missing_sqlite_file_is_named_and_not_created(tmp_path: Path) -> None:
    s = source(kind="database", url="sqlite:///gone.db", table="readings")
    with pytest.raises(SourceError, match=r"database file gone\.db does not exist"):
        read_source(s, tmp_path)
    assert not (tmp_path / "gone.db").exists()


def test_unset_url_env_names_the_variable(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MLCYCLE_TEST_NO_SUCH_URL", raising=False)
    s = source(kind="database", url_env="MLCYCLE_TEST_NO_SUCH_URL", table="readings")
    with pytest.raises(SourceError, match=r"environment variable MLCYCLE_TEST_NO_SUCH_URL is not"):
        read_source(s, tmp_path)


def test_malformed_url_in_the_environment_is_not_echoed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLCYCLE_TEST_DB_URL", "postgresql+psycopg://u:hunter2@127.0.0.1:notaport/x")
    s = source(kind="database", url_env="MLCYCLE_TEST_DB_URL", table="readings")
    with pytest.raises(SourceError, match="MLCYCLE_TEST_DB_URL does not hold a valid") as exc:
        read_source(s, tmp_path)
    assert "hunter2" not in str(exc.value)


def test_credentials_in_params_are_refused_by_config() -> None:
    url = "postgresql+psycopg://me:secret@db.example/x"
    raw = {"data": {"sources": [{"name": "db", "kind": "database", "table": "t", "url": url}]}}
    with pytest.raises(ConfigError, match="url_env"):
        section(raw, "data")


def test_redact_url_drops_user_password_and_query() -> None:
    url = "https://me:s%40cret@example.org:8443/data/file.csv.gz?token=abc#frag"
    assert redact_url(url) == "https://example.org:8443/data/file.csv.gz"
    assert redact_url("postgresql+psycopg://u:p@h:5432/db") == "postgresql+psycopg://h:5432/db"


# --- database: PostgreSQL --------------------------------------------------------------------


@pytest.fixture
def postgres_table(postgres_url: str, monkeypatch) -> Iterator[str]:
    """A fresh table holding RECORDS (inserted in reverse order); its URL in $MLCYCLE_TEST_PG."""
    from sqlalchemy import create_engine, text

    name = f"readings_{uuid.uuid4().hex[:12]}"
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                f"CREATE TABLE {name} (id integer PRIMARY KEY, city text, "
                "temp double precision, label text)"
            )
        )
        rows = [dict(zip(COLUMNS, r, strict=True)) for r in plain_rows()]
        conn.execute(
            text(f"INSERT INTO {name} VALUES (:id, :city, :temp, :label)"), list(reversed(rows))
        )
    monkeypatch.setenv("MLCYCLE_TEST_PG", postgres_url)
    yield name
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
    engine.dispose()


def pg_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    password = make_url(url).password
    assert password, "the test server's URL should carry a password"
    return password


def test_postgres_table(postgres_table: str, postgres_url: str, tmp_path: Path) -> None:
    s = source(kind="database", url_env="MLCYCLE_TEST_PG", table=postgres_table)
    read = read_source(s, tmp_path)
    assert_clean_records(read.frame)
    lineage = json.dumps(read.lineage)
    assert pg_password(postgres_url) not in lineage
    assert "@" not in read.lineage["url"] and read.lineage["url_env"] == "MLCYCLE_TEST_PG"
    assert read_source(s, tmp_path).lineage["sha256"] == read.lineage["sha256"]


def test_postgres_query(postgres_table: str, tmp_path: Path) -> None:
    query = f"SELECT id, city, temp::float8 AS temp, label FROM {postgres_table} ORDER BY id DESC"
    read = read_source(source(kind="database", url_env="MLCYCLE_TEST_PG", query=query), tmp_path)
    assert read.frame["id"].tolist() == [3, 2, 1]
    assert read.frame["city"].iloc[1] == "Lima"


def test_postgres_unknown_table(postgres_url: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLCYCLE_TEST_PG", postgres_url)
    s = source(kind="database", url_env="MLCYCLE_TEST_PG", table="no_such_table")
    with pytest.raises(SourceError, match=r"source 'readings' .*'no_such_table' does not exist"):
        read_source(s, tmp_path)


def test_postgres_bad_sql(postgres_url: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLCYCLE_TEST_PG", postgres_url)
    s = source(kind="database", url_env="MLCYCLE_TEST_PG", query="SELECT FROM WHERE")
    with pytest.raises(SourceError, match=r"source 'readings' .*the query failed: .*syntax") as exc:
        read_source(s, tmp_path)
    assert pg_password(postgres_url) not in str(exc.value)


def test_postgres_wrong_password_is_not_echoed(
    postgres_url: str, tmp_path: Path, monkeypatch
) -> None:
    from sqlalchemy.engine import make_url

    wrong = make_url(postgres_url).set(password="Wr0ngPassw0rd").render_as_string(False)
    monkeypatch.setenv("MLCYCLE_TEST_PG", wrong)
    s = source(kind="database", url_env="MLCYCLE_TEST_PG", table="readings", retries=0)
    with pytest.raises(SourceError, match=r"cannot connect .*password authentication") as exc:
        read_source(s, tmp_path)
    assert "Wr0ngPassw0rd" not in str(exc.value)


def test_refused_postgres_connection(tmp_path: Path, monkeypatch) -> None:
    port = free_port()
    monkeypatch.setenv("MLCYCLE_TEST_PG", f"postgresql+psycopg://u:s3cr3t@127.0.0.1:{port}/db")
    s = source(kind="database", url_env="MLCYCLE_TEST_PG", table="t", retries=1, timeout=2)
    with pytest.raises(SourceError) as exc:
        read_source(s, tmp_path)
    message = str(exc.value)
    assert f"source 'readings' (postgresql+psycopg://127.0.0.1:{port}/db)" in message
    assert "cannot connect to the database (2 attempts)" in message
    assert "refused" in message.lower()
    assert "s3cr3t" not in message


# --- http ------------------------------------------------------------------------------------


@dataclass
class Route:
    """What the test server does for a path: ``body`` after ``fail`` 500s; or a ``status``;
    or a body cut short of the ``Content-Length`` it announces; or no answer at all."""

    body: bytes = b""
    status: int = 200
    fail: int = 0
    truncate: bool = False
    hang: bool = False
    auth: str | None = None  # "user:password" the request must carry


@dataclass
class HttpServer:
    base: str
    routes: dict[str, Route]
    hits: Counter = field(default_factory=Counter)


@pytest.fixture
def http_server(monkeypatch) -> Iterator[HttpServer]:
    """A real HTTP server on 127.0.0.1, in a thread; fill ``routes`` before requesting."""
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    release = threading.Event()
    state = HttpServer(base="", routes={})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server API)
            path = self.path.split("?")[0]
            state.hits[path] += 1
            route = state.routes.get(path)
            if route is None:
                return self.send_error(404)
            if route.hang:
                release.wait(30)
                return None
            if route.auth:
                token = base64.b64encode(route.auth.encode()).decode()
                if self.headers.get("Authorization") != f"Basic {token}":
                    return self.send_error(401)
            if state.hits[path] <= route.fail:
                return self.send_error(500)
            if route.status != 200:
                return self.send_error(route.status)
            self.send_response(200)
            self.send_header("Content-Length", str(len(route.body) * (10 if route.truncate else 1)))
            self.end_headers()
            self.wfile.write(route.body)
            self.close_connection = True
            return None

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def http_source(server: HttpServer, path: str, content: bytes, **fields) -> Source:
    return source(kind="http", url=server.base + path, sha256=sha256_bytes(content), **fields)


def test_http_download_is_verified_and_parsed(http_server: HttpServer, tmp_path: Path) -> None:
    content = csv_bytes()
    http_server.routes["/r.csv"] = Route(body=content)
    read = read_source(http_source(http_server, "/r.csv", content), tmp_path)
    assert_clean_records(read.frame)
    assert read.lineage["url"] == f"{http_server.base}/r.csv"
    assert read.lineage["sha256"] == sha256_bytes(content)
    assert read.lineage["bytes"] == len(content)


def test_http_gz_is_decompressed_before_hashing(http_server: HttpServer, tmp_path: Path) -> None:
    content = jsonl_bytes()
    http_server.routes["/r.jsonl.gz"] = Route(body=gzip.compress(content))
    s = http_source(http_server, "/r.jsonl.gz", content, format="jsonl")
    assert_clean_records(read_source(s, tmp_path).frame)


def test_http_credentials_from_the_environment_stay_out_of_lineage(
    http_server: HttpServer, tmp_path: Path, monkeypatch
) -> None:
    content = csv_bytes()
    http_server.routes["/private.csv"] = Route(body=content, auth="me:pa55word")
    url = http_server.base.replace("://", "://me:pa55word@") + "/private.csv?token=t0k3n"
    monkeypatch.setenv("MLCYCLE_TEST_HTTP_URL", url)
    s = source(kind="http", url_env="MLCYCLE_TEST_HTTP_URL", sha256=sha256_bytes(content))
    read = read_source(s, tmp_path)
    assert_clean_records(read.frame)
    assert read.lineage["url"] == f"{http_server.base}/private.csv"
    assert "pa55word" not in json.dumps(read.lineage) and "t0k3n" not in json.dumps(read.lineage)


def test_http_changed_content_is_refused(http_server: HttpServer, tmp_path: Path) -> None:
    http_server.routes["/r.csv"] = Route(body=csv_bytes())
    s = http_source(http_server, "/r.csv", b"what we pinned", retries=3)
    with pytest.raises(SourceError, match=r"source 'readings': the content downloaded from .*"):
        read_source(s, tmp_path)
    assert http_server.hits["/r.csv"] == 1  # a wrong digest is not retried


def test_http_truncated_download_is_an_error(http_server: HttpServer, tmp_path: Path) -> None:
    content = csv_bytes()
    http_server.routes["/r.csv"] = Route(body=content, truncate=True)
    s = http_source(http_server, "/r.csv", content, retries=1)
    with pytest.raises(SourceError, match=r"download of .*/r\.csv failed \(2 attempts\).*truncat"):
        read_source(s, tmp_path)
    assert http_server.hits["/r.csv"] == 2


def test_http_404_is_not_retried(http_server: HttpServer, tmp_path: Path) -> None:
    s = http_source(http_server, "/missing.csv", b"", retries=3)
    with pytest.raises(SourceError, match=r"/missing\.csv answered HTTP 404"):
        read_source(s, tmp_path)
    assert http_server.hits["/missing.csv"] == 1


def test_http_500_is_retried_until_it_works(http_server: HttpServer, tmp_path: Path) -> None:
    content = csv_bytes()
    http_server.routes["/flaky.csv"] = Route(body=content, fail=1)
    read = read_source(http_source(http_server, "/flaky.csv", content, retries=2), tmp_path)
    assert_clean_records(read.frame)
    assert http_server.hits["/flaky.csv"] == 2


def test_http_500_retries_are_bounded(http_server: HttpServer, tmp_path: Path) -> None:
    http_server.routes["/down.csv"] = Route(status=503)
    s = http_source(http_server, "/down.csv", b"", retries=1)
    with pytest.raises(SourceError, match=r"failed \(2 attempts\): HTTP 503"):
        read_source(s, tmp_path)
    assert http_server.hits["/down.csv"] == 2


def test_http_timeout(http_server: HttpServer, tmp_path: Path) -> None:
    http_server.routes["/slow.csv"] = Route(hang=True)
    s = http_source(http_server, "/slow.csv", b"", timeout=0.5, retries=0)
    with pytest.raises(SourceError, match=r"failed \(1 attempt\): no answer within .* 0\.5 s"):
        read_source(s, tmp_path)


def test_http_refused_connection(tmp_path: Path) -> None:
    s = source(kind="http", url=f"http://127.0.0.1:{free_port()}/r.csv", sha256="0" * 64)
    with pytest.raises(SourceError, match=r"source 'readings': download .* connection failed"):
        read_source(Source(**{**s.__dict__, "retries": 0}), tmp_path)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/r.csv", "not a url", "http:///r.csv"])
def test_http_bad_url(url: str, tmp_path: Path) -> None:
    s = source(kind="http", url=url, sha256="0" * 64)
    with pytest.raises(SourceError, match=r"source 'readings': .* is not an http\(s\) URL"):
        read_source(s, tmp_path)


# --- landing ---------------------------------------------------------------------------------


def landing(tmp_path: Path, files: dict[str, bytes]) -> Path:
    folder = tmp_path / "data" / "landing" / "devices"
    folder.mkdir(parents=True)
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


GOOD_FILES = {
    "2024-01-02.csv": csv_bytes(RECORDS.iloc[1:2]),
    "2024-01-01.jsonl": jsonl_bytes(RECORDS.iloc[0:1]),
    "sensor-7/2024-01-03.jsonl.gz": gzip.compress(jsonl_bytes(RECORDS.iloc[2:])),
    ".2024-01-04.jsonl.part": b'{"half": ',  # still being written: not a record yet
    "README.md": b"# what lands here\n",
}
LANDING = Source(name="devices", kind="landing", path="data/landing/devices", **QUIRKS)


def test_landing_reads_every_file_and_quarantines_the_malformed(tmp_path: Path) -> None:
    bad = {
        "2024-01-05.jsonl": b'{"id": 9, "city": "Rome"\n',  # cut off: unparseable
        "2024-01-06.csv": b"id,town,temp,label\n4,Rome,25.0,hot\n",  # a renamed column
        "notes.txt": b"hello",
    }
    landing(tmp_path, {**GOOD_FILES, **bad})
    read = read_source(LANDING, tmp_path)
    assert_clean_records(read.frame)  # 01-01, 01-02, then sensor-7/01-03: sorted by path
    assert [f["file"] for f in read.lineage["files"]] == [
        "2024-01-01.jsonl",
        "2024-01-02.csv",
        "sensor-7/2024-01-03.jsonl.gz",
    ]
    assert read.lineage["files"][0]["sha256"] == sha256_bytes(jsonl_bytes(RECORDS.iloc[0:1]))
    reasons = {q["file"]: q["reason"] for q in read.lineage["quarantined"]}
    assert sorted(reasons) == ["2024-01-05.jsonl", "2024-01-06.csv", "notes.txt"]
    assert "cannot parse data/landing/devices/2024-01-05.jsonl" in reasons["2024-01-05.jsonl"]
    assert "missing ['city'], extra ['town']" in reasons["2024-01-06.csv"]
    assert "unsupported file type" in reasons["notes.txt"]

    folder = quarantine_folder(tmp_path, "devices")
    (folder / "stale.csv").parent.mkdir(parents=True)
    (folder / "stale.csv").write_text("from an earlier run")
    write_quarantine(read, folder)
    kept = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert kept == sorted([*bad, *(name + REASON_SUFFIX for name in bad)])
    for name, content in bad.items():
        assert (folder / name).read_bytes() == content
        assert (folder / (name + REASON_SUFFIX)).read_text().strip() == reasons[name]


def test_landing_checks_declared_columns(tmp_path: Path) -> None:
    extra = RECORDS.iloc[:1].assign(battery=0.9)
    landing(tmp_path, {**GOOD_FILES, "2024-01-07.jsonl": jsonl_bytes(extra)})
    read = read_source(Source(**{**LANDING.__dict__, "columns": COLUMNS}), tmp_path)
    assert_clean_records(read.frame)
    (q,) = read.lineage["quarantined"]
    assert q["file"] == "2024-01-07.jsonl" and "differ from the declared" in q["reason"]


def test_landing_snapshot_is_byte_identical_on_a_rerun(tmp_path: Path) -> None:
    landing(tmp_path, GOOD_FILES)
    for i in range(2):
        write_parquet(tmp_path / f"snap{i}.parquet", union([read_source(LANDING, tmp_path)]))
    assert sha256_file(tmp_path / "snap0.parquet") == sha256_file(tmp_path / "snap1.parquet")


def test_landing_with_only_malformed_files_is_an_error(tmp_path: Path) -> None:
    landing(tmp_path, {"a.jsonl": b"{oops\n", "b.csv": b'"unclosed\n1,2\n'})
    with pytest.raises(SourceError, match=r"source 'devices': no file .* could be read: a\.jsonl"):
        read_source(LANDING, tmp_path)


def test_empty_or_missing_landing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"landing folder data/landing/devices does not exist"):
        read_source(LANDING, tmp_path)
    landing(tmp_path, {"README.md": b"nothing yet"})
    with pytest.raises(SourceError, match=r"landing folder data/landing/devices has no files"):
        read_source(LANDING, tmp_path)


def test_quarantine_folder_refuses_a_name_that_leaves_it(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="plain folder name"):
        quarantine_folder(tmp_path, "../elsewhere")


# --- the gather stage, end to end with real dvc ------------------------------------------------

ADULT_COLUMNS = yaml.safe_load((ROOT / "params.yaml").read_text())["data"]["columns"]


def gather_outputs(project: Path) -> dict[str, bytes]:
    return {
        rel: (project / rel).read_bytes()
        for rel in ("data/raw/snapshot.parquet", "metrics/gather.json")
    }


def stages_run(proc) -> list[str]:
    return [line for line in proc.stdout.splitlines() if line.startswith("Running stage")]


@pytest.mark.dvc
def test_gather_stage_with_every_local_kind(tmp_path: Path) -> None:
    """`dvc repro -s gather` with files, an SQLite table and a landing folder: one snapshot and
    its lineage; a second run does nothing; a forced one writes the identical snapshot."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    project = make_project(tmp_path / "project")
    # Twenty Adult records in a real SQLite database, five more as a device upload.
    adult = read_source(section(params, "data").sources[0], ROOT).frame
    with sqlite3.connect(project / "data/external/people.db") as db:
        adult.iloc[:20].to_sql("people", db, index=False)
    db.close()
    devices = project / "data/landing/devices"
    devices.mkdir(parents=True)
    upload = adult.iloc[20:25]
    (devices / "app-1.jsonl").write_text(upload.to_json(orient="records", lines=True))
    (devices / "app-2.jsonl").write_bytes(b'{"age": 40, "workclass": \n')
    extra = [
        {"name": "people_db", "kind": "database", "url": "sqlite:///data/external/people.db",
         "table": "people"},
        {"name": "devices", "kind": "landing", "path": "data/landing/devices"},
    ]  # fmt: skip
    params["data"]["sources"] += extra
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git_commit(project, "sources of every local kind")

    first = run(["dvc", "repro", "-s", "gather"], project)
    assert stages_run(first) == ["Running stage 'gather':"]
    lineage = json.loads((project / "metrics/gather.json").read_text())
    by_name = {s["name"]: s for s in lineage["sources"]}
    assert [s["rows"] for s in lineage["sources"]] == [32561, 16281, 0, 20, 5]
    assert by_name["people_db"]["url"] == "sqlite:///data/external/people.db"
    assert by_name["people_db"]["columns"] == ADULT_COLUMNS
    assert [f["file"] for f in by_name["devices"]["files"]] == ["app-1.jsonl"]
    assert [q["file"] for q in by_name["devices"]["quarantined"]] == ["app-2.jsonl"]
    assert (project / "data/quarantine/devices/app-2.jsonl.reason.txt").is_file()
    snapshot = pd.read_parquet(project / "data/raw/snapshot.parquet")
    assert len(snapshot) == lineage["rows"] == 32561 + 16281 + 25
    assert snapshot["_source"].value_counts()["devices"] == 5
    outputs = gather_outputs(project)

    again = run(["dvc", "repro", "-s", "gather"], project)
    assert stages_run(again) == []
    # Forced, as for a database DVC cannot look into: unchanged data, the same bytes.
    forced = run(["dvc", "repro", "-s", "-f", "gather"], project)
    assert stages_run(forced) == ["Running stage 'gather':"]
    assert gather_outputs(project) == outputs

    # A new upload re-runs gather (the landing folder is a dependency) and changes the snapshot.
    (devices / "app-3.jsonl").write_text(upload.iloc[:2].to_json(orient="records", lines=True))
    third = run(["dvc", "repro", "-s", "gather"], project)
    assert stages_run(third) == ["Running stage 'gather':"]
    assert (
        gather_outputs(project)["data/raw/snapshot.parquet"] != outputs["data/raw/snapshot.parquet"]
    )


@pytest.mark.dvc
def test_gather_stage_failure_names_the_source(tmp_path: Path) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["sources"].append(
        {"name": "warehouse", "kind": "database", "url_env": "MLCYCLE_TEST_UNSET", "table": "t"}
    )
    project = make_project(tmp_path / "project", {"data": params["data"]})
    (project / "data/landing").mkdir(parents=True, exist_ok=True)
    proc = run(["dvc", "repro", "-s", "gather"], project, check=False)
    assert proc.returncode != 0
    assert "source 'warehouse': environment variable MLCYCLE_TEST_UNSET is not set" in proc.stderr
    assert not (project / "data/raw/snapshot.parquet").exists()


# --- empty sources ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "header"),
    [
        ("empty.csv", b"", False),
        ("nothing.csv.gz", gzip.compress(b"", mtime=0), False),
        ("header-only.csv", b"a,b\n", True),
        ("blank-lines.csv", b"\n\n", False),
        ("empty.jsonl", b"", True),
    ],
    ids=["empty", "gzip-of-nothing", "header-only", "blank-lines", "empty-jsonl"],
)
def test_an_empty_source_is_an_error_naming_it(
    tmp_path: Path, name: str, content: bytes, header: bool
) -> None:
    (tmp_path / name).write_bytes(content)
    fmt = "jsonl" if name.endswith(".jsonl") else "csv"
    src = Source(name="upstream", path=name, format=fmt, header=header, columns=("a", "b"))
    with pytest.raises(SourceError, match=rf"source 'upstream' \({name}\) holds no rows|no col"):
        read_source(src, tmp_path)
    if content or header:  # parseable: with allow_empty it is simply no rows
        ok = Source(name="upstream", path=name, format=fmt, header=header,
                    columns=("a", "b"), allow_empty=True)  # fmt: skip
        assert len(read_source(ok, tmp_path).frame) == 0


def test_a_landing_folder_may_be_empty_between_uploads_when_it_says_so(tmp_path: Path) -> None:
    landing(tmp_path, {"README.md": b"nothing yet"})
    quiet = Source(name="devices", kind="landing", path="data/landing/devices", allow_empty=True)
    read = read_source(quiet, tmp_path)
    assert len(read.frame) == 0
    (tmp_path / "other.csv").write_bytes(b"a,b\n1,2\n")
    other = read_source(Source(name="other", path="other.csv"), tmp_path)
    merged = union([other, read])
    assert len(merged) == 1 and list(merged["_source"]) == ["other"]


def test_an_empty_source_stops_gather_and_keeps_the_bundle(project_copy: Path) -> None:
    """A gzip of nothing in place of the test file, with its (new) digest declared: gather
    stops naming the source, and the bundle of the last good run is untouched."""
    project = project_copy
    bundle = {p.name: p.read_bytes() for p in (project / "models/bundle").iterdir()}
    empty = gzip.compress(b"", mtime=0)
    (project / "data/external/adult/adult.test.gz").write_bytes(empty)
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    for src in params["data"]["sources"]:
        if src["name"] == "adult_test":
            src["sha256"] = hashlib.sha256(b"").hexdigest()
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    proc = run(["dvc", "repro"], project, check=False)
    assert proc.returncode != 0
    assert "source 'adult_test' (data/external/adult/adult.test.gz) holds no rows" in proc.stderr
    assert {p.name: p.read_bytes() for p in (project / "models/bundle").iterdir()} == bundle


def test_the_same_rows_in_another_order_change_nothing_downstream(project_copy: Path) -> None:
    """Shuffle the rows of a source (and declare its new digest): gather re-runs and writes a
    byte-identical snapshot, so DVC re-runs nothing after it; the model and metrics stay."""
    project = project_copy
    lock_before = yaml.safe_load((project / "dvc.lock").read_text())
    path = project / "data/external/adult/adult.data.gz"
    lines = gzip.decompress(path.read_bytes()).decode().splitlines(keepends=True)
    body = [line for line in lines if line.strip()]
    shuffled = "".join(pd.Series(body).sample(frac=1.0, random_state=7).tolist())
    assert shuffled != "".join(body)
    path.write_bytes(gzip.compress(shuffled.encode(), mtime=0))
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    for src in params["data"]["sources"]:
        if src["name"] == "adult_train":
            src["sha256"] = hashlib.sha256(shuffled.encode()).hexdigest()
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    proc = run(["dvc", "repro"], project)
    ran = [line for line in proc.stdout.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'gather':"], proc.stdout
    lock_after = yaml.safe_load((project / "dvc.lock").read_text())

    def outs(lock: dict) -> dict:
        return {
            o["path"]: o.get("md5")
            for stage, body in lock["stages"].items()
            if stage != "gather"
            for o in body.get("outs", [])
        }

    assert outs(lock_after) == outs(lock_before)
    snap = [o for o in lock_after["stages"]["gather"]["outs"] if o["path"].endswith(".parquet")]
    old = [o for o in lock_before["stages"]["gather"]["outs"] if o["path"].endswith(".parquet")]
    assert snap == old
