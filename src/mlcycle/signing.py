"""Ed25519 signatures of released bundles: who released a bundle, not only whether it is intact.

``SHA256SUMS`` catches corruption, but whoever can write a bundle can rewrite it too. A release
signs the bundle's ``SHA256SUMS`` bytes with a private key kept outside the repository
(:data:`SIGNING_KEY_ENV`); the signature travels as a git tag beside the version's
(:func:`mlcycle.registry.signature_tag`), and a version fetched from the registry carries it as
:data:`SIGNATURES_FILE`. A loader given trusted public keys (:data:`TRUSTED_KEYS_ENV`, or
``--trusted-keys``) refuses a bundle that is unsigned, signed by no trusted key, or whose
``SHA256SUMS`` is not the one signed (:meth:`TrustedKeys.check`).

Formats:

- private key: PKCS#8 PEM, unencrypted, mode 0600 (``mlcycle keys generate`` writes it);
- public key: one line, ``ed25519 <base64 of the 32 raw bytes> [name]``; a trusted keys file
  holds one per line (several while a rotation overlaps), with ``#`` comments and blank lines;
- key id: the first 16 hex digits of the SHA-256 of the raw public key;
- signature: one JSON object per line (of :data:`SIGNATURES_FILE`, and a signature tag's
  message): ``{"key_id": ..., "sha256sums": <hex SHA-256 of SHA256SUMS>, "signature": <base64
  Ed25519 signature of SHA256SUMS>}``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURES_FILE = "SHA256SUMS.sig"  # beside SHA256SUMS in a fetched version's bundle
SIGNING_KEY_ENV = "MLCYCLE_SIGNING_KEY"  # path of the private key a release signs with
TRUSTED_KEYS_ENV = "MLCYCLE_TRUSTED_KEYS"  # path of the public keys a loader accepts
DEFAULT_KEY = "~/.config/mlcycle/signing-key.pem"  # where `mlcycle keys generate` writes
KEY_TYPE = "ed25519"


class SigningError(ValueError):
    """A key or a signature is missing, malformed, untrusted or wrong; the message says which."""


def key_id(public: Ed25519PublicKey) -> str:
    """The key's id: the first 16 hex digits of the SHA-256 of its 32 raw bytes."""
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


def public_line(public: Ed25519PublicKey, name: str) -> str:
    """The key as a line of a trusted keys file: ``ed25519 <base64> <name>``."""
    return f"{KEY_TYPE} {base64.b64encode(_raw(public)).decode()} {name}".rstrip()


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class TrustedKey:
    """A public key a loader accepts signatures of, with its id and the name given to it."""

    key_id: str
    name: str
    public: Ed25519PublicKey

    @property
    def label(self) -> str:
        return f"{self.name} ({self.key_id})" if self.name else self.key_id


@dataclass(frozen=True)
class TrustedKeys:
    """The public keys a service or ``mlcycle predict`` trusts, and the file they came from."""

    source: str
    keys: dict[str, TrustedKey]  # by key id

    def check(self, sums: bytes, signatures: bytes | None) -> TrustedKey:
        """The trusted key whose signature of ``sums`` (a bundle's SHA256SUMS bytes) is among
        ``signatures`` (the bytes of its SHA256SUMS.sig, None when it has none); a
        :class:`SigningError` saying what is wrong when there is none."""
        if signatures is None:
            raise SigningError(
                f"it is not signed (no {SIGNATURES_FILE}) and the trusted keys in {self.source} "
                f"admit signed bundles only; release it with {SIGNING_KEY_ENV} set, or sign the "
                "released version: mlcycle keys sign VERSION"
            )
        digest = hashlib.sha256(sums).hexdigest()
        untrusted: list[str] = []
        failures: list[str] = []
        for record in parse_signatures(signatures):
            key = self.keys.get(record["key_id"])
            if key is None:
                untrusted.append(record["key_id"])
            elif record["sha256sums"] != digest:
                failures.append(
                    f"SHA256SUMS is not the one key {key.label} signed (SHA-256 {digest[:16]}..., "
                    f"signed {record['sha256sums'][:16]}...): the bundle was changed after it "
                    "was signed"
                )
            else:
                try:
                    key.public.verify(record["signature"], sums)
                except InvalidSignature:
                    failures.append(
                        f"the signature by key {key.label} does not verify: SHA256SUMS or its "
                        "signature was altered"
                    )
                else:
                    return key
        if failures:
            raise SigningError("; ".join(failures))
        trusted = ", ".join(k.label for k in self.keys.values())
        raise SigningError(
            f"it is signed by key(s) {untrusted}, none of them trusted in {self.source} "
            f"(trusted: {trusted}); add the signer's public key there, or sign the version "
            "with a trusted key (mlcycle keys sign VERSION)"
        )


def parse_public_keys(text: str, source: str) -> TrustedKeys:
    """Trusted keys from the text of a trusted keys file (``source`` names it in errors)."""
    keys: dict[str, TrustedKey] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        kind, _, rest = line.partition(" ")
        encoded, _, name = rest.strip().partition(" ")
        try:
            if kind != KEY_TYPE:
                raise ValueError(f"the key type is {kind!r}, not {KEY_TYPE!r}")
            public = Ed25519PublicKey.from_public_bytes(base64.b64decode(encoded, validate=True))
        except (ValueError, binascii.Error) as exc:
            raise SigningError(
                f"{source} line {n}: not '{KEY_TYPE} <base64 of a 32-byte public key> [name]' "
                f"({exc})"
            ) from None
        keys[key_id(public)] = TrustedKey(key_id(public), name.strip(), public)
    if not keys:
        raise SigningError(f"{source} holds no public key ('{KEY_TYPE} <base64> [name]' lines)")
    return TrustedKeys(source, keys)


def trusted_keys_file(option: str | None) -> str | None:
    """The trusted keys file configured: ``option`` (``--trusted-keys``), else
    :data:`TRUSTED_KEYS_ENV`, as an absolute path; None when neither is set."""
    path = option or os.environ.get(TRUSTED_KEYS_ENV)
    return str(Path(path).expanduser().resolve()) if path else None


def trusted_keys(path: str | Path | None) -> TrustedKeys | None:
    """The keys of the trusted keys file at ``path``; None for no file (no origin check)."""
    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SigningError(f"cannot read the trusted keys file {path}: {exc.strerror}") from None
    return parse_public_keys(text, str(path))


def parse_signatures(data: bytes) -> list[dict]:
    """The signature records of a SHA256SUMS.sig (one JSON object per line), their signatures
    decoded; a malformed one is a :class:`SigningError`."""
    records = []
    for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            records.append(
                {
                    "key_id": str(record["key_id"]),
                    "sha256sums": str(record["sha256sums"]),
                    "signature": base64.b64decode(record["signature"], validate=True),
                }
            )
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise SigningError(
                f"{SIGNATURES_FILE} line {n} is not a signature record "
                '({"key_id", "sha256sums", "signature"})'
            ) from None
    if not records:
        raise SigningError(f"{SIGNATURES_FILE} holds no signature")
    return records


def sign(sums: bytes, key: Ed25519PrivateKey) -> str:
    """The signature record of ``sums`` (a bundle's SHA256SUMS bytes) by ``key``: one JSON
    line, as a signature tag's message and a line of SHA256SUMS.sig hold it."""
    record = {
        "key_id": key_id(key.public_key()),
        "sha256sums": hashlib.sha256(sums).hexdigest(),
        "signature": base64.b64encode(key.sign(sums)).decode(),
    }
    return json.dumps(record, sort_keys=True)


# -- private keys ------------------------------------------------------------------------------


def work_tree(folder: str | Path = ".") -> Path | None:
    """The git work tree ``folder`` lies in (the nearest folder holding ``.git``, a folder or
    a worktree's file), or None outside one."""
    folder = Path(folder).resolve()
    return next((d for d in (folder, *folder.parents) if (d / ".git").exists()), None)


def _refuse_inside(path: Path, project: str | Path) -> None:
    """A private key inside the project's git work tree is one `git add -A` from being
    published: refused."""
    root = work_tree(project)
    if root is not None and path.resolve().is_relative_to(root):
        raise SigningError(
            f"the signing key {path} lies inside the project's git work tree ({root}); keep it "
            f"outside (default {DEFAULT_KEY})"
        )


def signing_key_path(option: str | None = None) -> Path:
    """The private key's path: ``option``, else :data:`SIGNING_KEY_ENV`, else
    :data:`DEFAULT_KEY`."""
    return Path(option or os.environ.get(SIGNING_KEY_ENV) or DEFAULT_KEY).expanduser()


def load_signing_key(path: str | Path, project: str | Path = ".") -> Ed25519PrivateKey:
    """The private key at ``path``, refused when it lies inside ``project``'s git work tree,
    when group or others may read it, or when it is no unencrypted Ed25519 PEM key."""
    path = Path(path).expanduser()
    _refuse_inside(path, project)
    try:
        mode = path.stat().st_mode & 0o777
        data = path.read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read the signing key {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise SigningError(
            f"the signing key {path} may be read by group or others (mode {mode:04o}); "
            f"run `chmod 600 {path}`"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(
            f"the signing key {path} is not an unencrypted PEM private key ({exc})"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"the signing key {path} is not an Ed25519 key")
    return key


def configured_signing_key(project: str | Path = ".") -> Ed25519PrivateKey | None:
    """The key a release signs with: the one :data:`SIGNING_KEY_ENV` names, or None when it
    is not set (the release is not signed)."""
    path = os.environ.get(SIGNING_KEY_ENV)
    return load_signing_key(path, project) if path else None


def write_signing_key(
    key: Ed25519PrivateKey, path: str | Path, project: str | Path = ".", replace: bool = False
) -> Path:
    """Write ``key`` to ``path`` as PKCS#8 PEM, mode 0600 from its creation (its folder made
    0700 if new), atomically; refuses a path inside ``project``'s git work tree, and an
    existing file unless ``replace``."""
    path = Path(path).expanduser()
    _refuse_inside(path, project)
    if path.exists() and not replace:
        raise SigningError(f"{path} exists; refusing to overwrite a key (`mlcycle keys rotate`)")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def generate_key() -> Ed25519PrivateKey:
    """A new Ed25519 private key."""
    return Ed25519PrivateKey.generate()
