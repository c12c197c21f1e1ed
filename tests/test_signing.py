"""Unit tests of the signing keys (src/mlcycle/signing.py) and `mlcycle keys`: key files, the
trusted keys file's lines, key ids. Signatures of bundles are tested in tests/test_bundle.py,
a signed release and a service refusing what no trusted key signed in tests/test_release.py."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from pathlib import Path

import pytest

from mlcycle import signing
from tests.conftest import cli


def test_a_key_id_is_the_start_of_the_raw_public_keys_sha256() -> None:
    public = signing.generate_key().public_key()
    line = signing.public_line(public, "release laptop")
    kind, encoded, name = line.split(" ", 2)
    raw = base64.b64decode(encoded)
    assert (kind, name, len(raw)) == ("ed25519", "release laptop", 32)
    assert signing.key_id(public) == hashlib.sha256(raw).hexdigest()[:16]


def test_a_trusted_keys_file_holds_named_keys_comments_and_blank_lines() -> None:
    a, b = (signing.generate_key().public_key() for _ in range(2))
    text = (
        "# the keys releases may be signed with\n\n"
        f"{signing.public_line(a, 'old key, until June')}\n"
        f"  {signing.public_line(b, '')}  \n"
    )
    keys = signing.parse_public_keys(text, "trusted.pub")
    assert list(keys.keys) == [signing.key_id(a), signing.key_id(b)]
    assert keys.keys[signing.key_id(a)].name == "old key, until June"
    assert keys.keys[signing.key_id(b)].label == signing.key_id(b)  # no name: the id


@pytest.mark.parametrize(
    "line",
    [
        "ssh-rsa AAAAB3NzaC1yc2E name",  # another kind of key
        "ed25519 not-base64!",
        "ed25519 " + base64.b64encode(b"short").decode(),  # not 32 bytes
    ],
)
def test_a_bad_trusted_key_line_is_refused_naming_the_file_and_line(line: str) -> None:
    good = signing.public_line(signing.generate_key().public_key(), "good")
    with pytest.raises(signing.SigningError, match=r"keys.pub line 2: not 'ed25519 <base64"):
        signing.parse_public_keys(f"{good}\n{line}\n", "keys.pub")


def test_a_trusted_keys_file_without_keys_or_missing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(signing.SigningError, match="holds no public key"):
        signing.parse_public_keys("# nothing yet\n", "empty.pub")
    with pytest.raises(signing.SigningError, match="cannot read the trusted keys file"):
        signing.trusted_keys(tmp_path / "absent.pub")
    assert signing.trusted_keys(None) is None  # none configured: no origin check


def test_a_signing_key_is_written_0600_and_read_back(tmp_path: Path) -> None:
    key = signing.generate_key()
    path = signing.write_signing_key(key, tmp_path / "keys" / "signing.pem", project=tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    loaded = signing.load_signing_key(path, project=tmp_path)
    assert signing.key_id(loaded.public_key()) == signing.key_id(key.public_key())
    with pytest.raises(signing.SigningError, match="exists; refusing to overwrite"):
        signing.write_signing_key(signing.generate_key(), path, project=tmp_path)


def test_a_signing_key_others_may_read_is_refused(tmp_path: Path) -> None:
    path = signing.write_signing_key(signing.generate_key(), tmp_path / "k.pem", project=tmp_path)
    path.chmod(0o640)
    with pytest.raises(signing.SigningError, match=r"group or others \(mode 0640\).*chmod 600"):
        signing.load_signing_key(path, project=tmp_path)


def test_a_signing_key_inside_the_projects_work_tree_is_refused(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "keys").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    inside = project / "keys" / "signing.pem"
    with pytest.raises(signing.SigningError, match="inside the project's git work tree"):
        signing.write_signing_key(signing.generate_key(), inside, project=project)
    outside = signing.write_signing_key(signing.generate_key(), tmp_path / "k.pem", project)
    outside.rename(inside)  # put there by hand: refused when read too
    with pytest.raises(signing.SigningError, match="inside the project's git work tree"):
        signing.load_signing_key(inside, project=project)


def test_a_file_that_is_no_ed25519_pem_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    path.write_text("-----BEGIN PRIVATE KEY-----\nnonsense\n-----END PRIVATE KEY-----\n")
    path.chmod(0o600)
    with pytest.raises(signing.SigningError, match="not an unencrypted PEM private key"):
        signing.load_signing_key(path, project=tmp_path)


def test_keys_generate_then_rotate_keep_the_old_public_key_trusted(tmp_path: Path) -> None:
    """`mlcycle keys generate` writes the key and prints the public line (appended to the
    trusted keys file); `rotate` puts a new key in its place and appends the new line, the old
    one staying until the operator removes it."""
    key, trusted = tmp_path / "home" / "signing.pem", tmp_path / "trusted.pub"
    made = cli(tmp_path, "keys", "generate", "--out", key, "--name", "first",
               "--trusted-keys", trusted)  # fmt: skip
    first = signing.key_id(signing.load_signing_key(key).public_key())
    assert made.stdout.startswith("ed25519 ") and made.stdout.strip().endswith(" first")
    assert (tmp_path / "home" / "signing.pem.pub").read_text() == made.stdout
    again = cli(tmp_path, "keys", "generate", "--out", key, check=False)
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr

    rotated = cli(tmp_path, "keys", "rotate", "--name", "second", "--trusted-keys", trusted,
                  env={signing.SIGNING_KEY_ENV: str(key)})  # fmt: skip
    second = signing.key_id(signing.load_signing_key(key).public_key())
    assert second != first and key.stat().st_mode & 0o777 == 0o600
    assert f"key {second} replaces key {first}" in rotated.stderr
    keys = signing.trusted_keys(trusted)
    assert keys is not None and list(keys.keys) == [first, second]
