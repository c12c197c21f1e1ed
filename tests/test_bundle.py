"""Unit tests of the model bundle (src/mlcycle/bundle.py) with a small real XGBoost model.

Bundles of the scikit-learn kinds (model.skops) and the refusal of untrusted skops types are
tested in tests/test_train.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from mlcycle import signing
from mlcycle.adapters.xgboost_model import XGBoostModel, dmatrix
from mlcycle.bundle import (
    CHECKSUM_FILE,
    METADATA_FILE,
    MODEL_FILE,
    RULES_FILE,
    SIGNATURE_FILE,
    BundleError,
    load_bundle,
    write_bundle,
)
from mlcycle.features import encode_target, to_model_frame
from mlcycle.io import sha256_bytes
from mlcycle.schema import ColumnSpec, Schema
from mlcycle.schema.rows import RowRules
from tests.conftest import TINY_SIGNATURE as SIGNATURE
from tests.conftest import synthetic_records

METADATA = {"name": "tiny", "decision": 0.4, "params": {"max_depth": 3}}
ALL_FILES = (MODEL_FILE, SIGNATURE_FILE, METADATA_FILE, CHECKSUM_FILE)


@pytest.fixture(scope="module")
def trained() -> tuple[xgb.Booster, bytes]:
    train = synthetic_records(400, seed=1)
    X = to_model_frame(train, SIGNATURE)
    y = encode_target(train["label"], SIGNATURE)
    params = {
        "objective": "binary:logistic",
        "max_depth": 3,
        "eta": 0.3,
        "seed": 0,
        "nthread": 1,
        "tree_method": "hist",
    }
    booster = xgb.train(params, dmatrix(X, y, nthread=1), num_boost_round=15)
    return booster, bytes(booster.save_raw(raw_format="ubj"))


@pytest.fixture
def bundle_dir(trained: tuple[xgb.Booster, bytes], tmp_path: Path) -> Path:
    return write_bundle(tmp_path / "out" / "bundle", trained[1], SIGNATURE, METADATA)


def flip_byte(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x01
    path.write_bytes(bytes(data))


def test_round_trip_loads_and_predicts_the_same(
    trained: tuple[xgb.Booster, bytes], bundle_dir: Path
) -> None:
    booster, model_bytes = trained
    assert sorted(p.name for p in bundle_dir.iterdir()) == sorted(ALL_FILES)
    assert (bundle_dir / MODEL_FILE).read_bytes() == model_bytes

    bundle = load_bundle(bundle_dir)
    assert bundle.kind == "xgboost"
    assert bundle.booster is bundle.model.estimator
    assert bundle.signature == SIGNATURE
    assert bundle.decision == 0.4
    assert bundle.metadata["name"] == "tiny"
    assert bundle.metadata["params"] == {"max_depth": 3}
    assert bundle.metadata["model_sha256"] == sha256_bytes(model_bytes)
    assert bundle.model_id == sha256_bytes(model_bytes)[:12]

    new = synthetic_records(200, seed=2)
    X = to_model_frame(new, SIGNATURE)
    expected = XGBoostModel(booster, "binary_classification", 2).predict_proba(X)
    got = bundle.model.predict_proba(to_model_frame(new, bundle.signature))
    assert np.array_equal(got, expected)
    assert len(np.unique(got)) > 10  # the model really discriminates; not a constant


def test_checksum_file_lists_every_other_file(bundle_dir: Path) -> None:
    lines = (bundle_dir / CHECKSUM_FILE).read_text().splitlines()
    listed = {line.split("  ")[1]: line.split("  ")[0] for line in lines}
    assert set(listed) == {MODEL_FILE, SIGNATURE_FILE, METADATA_FILE}
    for name, digest in listed.items():
        assert digest == sha256_bytes((bundle_dir / name).read_bytes())


@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("name", [MODEL_FILE, SIGNATURE_FILE, METADATA_FILE])
def test_one_edited_byte_of_a_content_file_is_refused_naming_it(
    bundle_dir: Path, name: str, where: str
) -> None:
    path = bundle_dir / name
    size = path.stat().st_size
    flip_byte(path, {"first": 0, "middle": size // 2, "last": size - 1}[where])
    with pytest.raises(BundleError, match=rf"{name} does not match its checksum"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize("where", ["first", "middle"])
def test_one_edited_byte_of_the_checksum_file_is_refused(bundle_dir: Path, where: str) -> None:
    path = bundle_dir / CHECKSUM_FILE
    flip_byte(path, {"first": 0, "middle": path.stat().st_size // 2}[where])
    with pytest.raises(BundleError, match=r"malformed|does not match|does not cover"):
        load_bundle(bundle_dir)


def test_every_single_byte_edit_of_the_checksum_file_is_refused(bundle_dir: Path) -> None:
    """Exhaustive: no one-byte change to SHA256SUMS loads. Flipping a newline (0x0A) to a
    vertical tab (0x0B) must be refused too, although str.splitlines() treats both as breaks."""
    path = bundle_dir / CHECKSUM_FILE
    original = path.read_bytes()
    accepted = []
    for i in range(len(original)):
        data = bytearray(original)
        data[i] ^= 0x01
        path.write_bytes(bytes(data))
        try:
            load_bundle(bundle_dir)
        except BundleError:
            continue
        accepted.append((i, bytes(data[i : i + 1])))
    path.write_bytes(original)
    load_bundle(bundle_dir)  # the restored bundle loads again
    assert accepted == [], f"altered {CHECKSUM_FILE} accepted at (offset, new byte): {accepted}"


@pytest.mark.parametrize("name", ["notes.txt", ".hidden", "model.ubj.bak"])
def test_an_extra_file_is_refused_naming_it(bundle_dir: Path, name: str) -> None:
    (bundle_dir / name).write_text("not part of the bundle")
    with pytest.raises(BundleError, match=rf"unexpected file.*{name}"):
        load_bundle(bundle_dir)


def test_an_extra_directory_is_refused(bundle_dir: Path) -> None:
    (bundle_dir / "sub").mkdir()
    with pytest.raises(BundleError, match="unexpected file.*sub"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize("name", ALL_FILES)
def test_a_missing_file_is_refused_naming_it(bundle_dir: Path, name: str) -> None:
    (bundle_dir / name).unlink()
    with pytest.raises(BundleError, match=rf"{name} is missing"):
        load_bundle(bundle_dir)


def test_a_missing_bundle_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")


def test_checksums_rewritten_for_a_different_model_are_refused(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """Swapping model.ubj and regenerating SHA256SUMS is still caught: metadata.json records
    the digest of the model it describes."""
    other = write_bundle(tmp_path / "other", b"another model", SIGNATURE, METADATA)
    shutil.copy2(other / MODEL_FILE, bundle_dir / MODEL_FILE)
    files = (MODEL_FILE, SIGNATURE_FILE, METADATA_FILE)
    sums = "".join(f"{sha256_bytes((bundle_dir / n).read_bytes())}  {n}\n" for n in sorted(files))
    (bundle_dir / CHECKSUM_FILE).write_text(sums)
    with pytest.raises(BundleError, match="metadata.json names a different model"):
        load_bundle(bundle_dir)


def signed(bundle_dir: Path, *keys: signing.Ed25519PrivateKey) -> Path:
    """``bundle_dir`` with SHA256SUMS.sig holding its SHA256SUMS's signature by each key."""
    sums = (bundle_dir / CHECKSUM_FILE).read_bytes()
    lines = "".join(signing.sign(sums, key) + "\n" for key in keys)
    (bundle_dir / signing.SIGNATURES_FILE).write_text(lines)
    return bundle_dir


def trusting(*keys: signing.Ed25519PrivateKey) -> signing.TrustedKeys:
    text = "".join(
        signing.public_line(k.public_key(), f"key{i}") + "\n" for i, k in enumerate(keys)
    )
    return signing.parse_public_keys(text, "trusted.pub")


def rewrite_checksums(bundle_dir: Path) -> None:
    """SHA256SUMS made again for the files as they are: what an attacker who can write the
    bundle does after editing it."""
    names = sorted(p.name for p in bundle_dir.iterdir() if p.name.endswith((".json", ".ubj")))
    sums = "".join(f"{sha256_bytes((bundle_dir / n).read_bytes())}  {n}\n" for n in names)
    (bundle_dir / CHECKSUM_FILE).write_text(sums)


def test_an_edit_with_rewritten_checksums_is_refused_only_with_trusted_keys(
    bundle_dir: Path,
) -> None:
    """The decision threshold edited and SHA256SUMS rewritten: SHA256SUMS alone cannot tell
    (the bundle loads with the forged threshold); a trusted key's signature can."""
    key = signing.generate_key()
    signed(bundle_dir, key)
    assert load_bundle(bundle_dir, trusting(key)).decision == 0.4
    meta = json.loads((bundle_dir / METADATA_FILE).read_text())
    (bundle_dir / METADATA_FILE).write_text(json.dumps({**meta, "decision": 0.01}))
    rewrite_checksums(bundle_dir)
    assert load_bundle(bundle_dir).decision == 0.01  # no keys: corruption checks only
    with pytest.raises(BundleError) as refused:
        load_bundle(bundle_dir, trusting(key))
    assert str(bundle_dir) in str(refused.value)
    assert "changed after it was signed" in str(refused.value)


def test_an_unsigned_bundle_is_refused_with_trusted_keys(bundle_dir: Path) -> None:
    with pytest.raises(BundleError, match=r"bundle.*not signed \(no SHA256SUMS.sig\)"):
        load_bundle(bundle_dir, trusting(signing.generate_key()))


def test_a_bundle_signed_by_an_untrusted_key_is_refused_naming_the_key(bundle_dir: Path) -> None:
    stranger, ours = signing.generate_key(), signing.generate_key()
    signed(bundle_dir, stranger)
    with pytest.raises(BundleError) as refused:
        load_bundle(bundle_dir, trusting(ours))
    message = str(refused.value)
    assert signing.key_id(stranger.public_key()) in message and "none of them trusted" in message


def test_a_forged_signature_is_refused(bundle_dir: Path) -> None:
    """The record names the right SHA256SUMS digest but its signature is another's."""
    key = signing.generate_key()
    signed(bundle_dir, key)
    record = json.loads((bundle_dir / signing.SIGNATURES_FILE).read_text())
    forged = signing.sign(b"something else", key)
    record["signature"] = json.loads(forged)["signature"]
    (bundle_dir / signing.SIGNATURES_FILE).write_text(json.dumps(record) + "\n")
    with pytest.raises(BundleError, match="does not verify"):
        load_bundle(bundle_dir, trusting(key))


def test_any_trusted_signature_admits_a_bundle_signed_by_several_keys(bundle_dir: Path) -> None:
    """After a rotation a version may carry the old key's signature and the new one's: a
    service trusting either loads it; the signatures file is no extra file without keys."""
    old, new = signing.generate_key(), signing.generate_key()
    signed(bundle_dir, old, new)
    for trusted in (trusting(old), trusting(new), None):
        assert load_bundle(bundle_dir, trusted).decision == 0.4


def test_consistent_bundle_with_an_invalid_model_is_refused_naming_it(tmp_path: Path) -> None:
    path = write_bundle(tmp_path / "bundle", b"this is not a booster", SIGNATURE, METADATA)
    with pytest.raises(BundleError, match=f"{MODEL_FILE} is not a valid model"):
        load_bundle(path)


def test_write_bundle_replaces_the_target_wholly(
    trained: tuple[xgb.Booster, bytes], tmp_path: Path
) -> None:
    target = tmp_path / "models" / "bundle"
    target.mkdir(parents=True)
    (target / "stale.txt").write_text("left over from an older bundle")
    (target / MODEL_FILE).write_bytes(b"old model")

    write_bundle(target, trained[1], SIGNATURE, {**METADATA, "name": "first"})
    assert sorted(p.name for p in target.iterdir()) == sorted(ALL_FILES)
    assert load_bundle(target).metadata["name"] == "first"

    write_bundle(target, trained[1], SIGNATURE, {**METADATA, "name": "second"})
    assert sorted(p.name for p in target.iterdir()) == sorted(ALL_FILES)
    assert load_bundle(target).metadata["name"] == "second"
    # Nothing is left beside the target: no temporary build directories.
    assert [p.name for p in target.parent.iterdir()] == ["bundle"]


def test_failed_write_leaves_the_previous_bundle_intact(
    trained: tuple[xgb.Booster, bytes], tmp_path: Path
) -> None:
    target = write_bundle(tmp_path / "bundle", trained[1], SIGNATURE, METADATA)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    with pytest.raises(ValueError):
        write_bundle(target, trained[1], SIGNATURE, {**METADATA, "bad": float("nan")})
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
    load_bundle(target)


def test_bundle_json_files_are_plain_json(bundle_dir: Path) -> None:
    assert json.loads((bundle_dir / SIGNATURE_FILE).read_text()) == SIGNATURE.to_dict()
    meta = json.loads((bundle_dir / METADATA_FILE).read_text())
    assert meta == {
        **METADATA,
        "model_kind": "xgboost",
        "model_sha256": sha256_bytes((bundle_dir / MODEL_FILE).read_bytes()),
    }


def test_the_schemas_row_rules_travel_in_the_bundle(
    trained: tuple[xgb.Booster, bytes], tmp_path: Path
) -> None:
    """row_rules.json (written by package) is checksummed like every file and read into
    ``Bundle.rules``; a bundle without it (packaged before) has none; a malformed one is
    refused by name."""
    schema = Schema(
        target="label",
        columns=(
            ColumnSpec("x", "float", nullable=False, min=-10.0, max=10.0),
            ColumnSpec("colour", "category", categories=("blue", "green", "red")),
            ColumnSpec("y", "float"),
            ColumnSpec("label", "category", nullable=False, values=("no", "yes")),
        ),
    )
    rules = RowRules.of(schema, {"out_of_range": "warning"})
    extra = {RULES_FILE: json.dumps(rules.to_dict()).encode()}
    ruled = write_bundle(tmp_path / "ruled", trained[1], SIGNATURE, METADATA, extra_files=extra)
    assert RULES_FILE in (ruled / CHECKSUM_FILE).read_text()
    loaded = load_bundle(ruled)
    assert loaded.rules == rules and loaded.rules.levels["out_of_range"] == "warning"
    assert (
        load_bundle(write_bundle(tmp_path / "plain", trained[1], SIGNATURE, METADATA)).rules is None
    )
    flip_byte(ruled / RULES_FILE, 5)
    with pytest.raises(BundleError, match=RULES_FILE):
        load_bundle(ruled)
    broken = {RULES_FILE: b'{"schema": {"target": "label"}, "severity": {}}'}
    bad = write_bundle(tmp_path / "bad", trained[1], SIGNATURE, METADATA, extra_files=broken)
    with pytest.raises(BundleError, match=f"{RULES_FILE}.*'columns'"):
        load_bundle(bad)
