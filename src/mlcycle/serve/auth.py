"""Who may call what: the service's named, scoped credentials (a pure library: parse, look up,
check; the routes use it through :func:`mlcycle.serve.http.authorized`).

A credential is a **name** (what the audit of label changes and the logs record, so one can be
revoked by deleting its line), **scopes** among :data:`SCOPES` and a **token** (a bearer
secret of at least :data:`MIN_TOKEN_CHARS` characters). They come from the environment, never
from the command line:

- :data:`TOKENS_FILE_ENV` (``MLCYCLE_TOKENS_FILE``): a file of one credential per line,
  ``name scope[,scope...] token``; blank lines and ``#`` comments are skipped;
- :data:`TOKENS_ENV` (``MLCYCLE_TOKENS``): the same lines, inline (for containers);
- :data:`~mlcycle.constants.ADMIN_TOKEN_ENV` (``MLCYCLE_ADMIN_TOKEN``): one token, the
  credential ``admin`` with scope ``admin``.

A token is looked up by its SHA-256 against every credential, each compared with
:func:`hmac.compare_digest` and none skipped, so how long a refusal takes says nothing of
which token, name or how much of one was right. Only the digests are kept.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mlcycle.constants import ADMIN_TOKEN_ENV

TOKENS_ENV = "MLCYCLE_TOKENS"
TOKENS_FILE_ENV = "MLCYCLE_TOKENS_FILE"
#: What a credential may do: score (``/predict``, ``/v2/.../infer``), write labels
#: (``/feedback``), reload the model (``/admin/reload``).
SCOPES = ("predict", "feedback", "admin")
MIN_TOKEN_CHARS = 16
#: Who wrote a label when no credential is configured (the service on loopback only).
ANONYMOUS = "anonymous"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII without spaces: it travels in a header


class CredentialsError(ValueError):
    """The configured credentials cannot be used; the message names the source and line."""


class Refused(Exception):
    """A request without the credential its route needs: ``status`` 401 (no valid token) or
    403 (a valid token without the scope), ``detail`` saying which."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail

    @property
    def headers(self) -> dict[str, str]:
        """RFC 6750: a 401 names the scheme the client should use."""
        return {"WWW-Authenticate": "Bearer"} if self.status == 401 else {}


@dataclass(frozen=True)
class Credential:
    """One named credential: its scopes and its token's SHA-256 (never the token itself)."""

    name: str
    scopes: frozenset[str]
    digest: bytes = field(repr=False)

    @classmethod
    def of(cls, name: str, scopes: Iterable[str], token: str) -> Credential:
        return cls(name, frozenset(scopes), _digest(token))


def _digest(token: str | bytes) -> bytes:
    raw = token if isinstance(token, bytes) else token.encode("utf-8", "surrogateescape")
    return hashlib.sha256(raw).digest()


def parse_line(line: str, where: str) -> Credential | None:
    """The credential of one line ``name scope[,scope...] token`` (None for a blank line or a
    ``#`` comment); a malformed line is a :class:`CredentialsError` naming ``where`` (the
    source and line number) and what is wrong, never quoting the token."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    parts = text.split()
    if len(parts) != 3:
        raise CredentialsError(
            f"{where}: expected 'name scope[,scope...] token' (3 fields separated by spaces), "
            f"found {len(parts)} field(s)"
        )
    name, scopes_text, token = parts
    if not NAME.fullmatch(name) or name == ANONYMOUS:
        raise CredentialsError(
            f"{where}: the name {name[:64]!r} must be 1 to 64 letters, digits, '_', '.' or "
            f"'-', starting with a letter or digit, and not {ANONYMOUS!r}"
        )
    scopes = scopes_text.split(",")
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise CredentialsError(
            f"{where}: credential {name!r}: unknown scope(s) {[s[:20] for s in unknown]}; "
            f"the scopes are {', '.join(SCOPES)}"
        )
    _check_token(token, f"{where}: credential {name!r}")
    return Credential.of(name, scopes, token)


def _check_token(token: str, what: str) -> None:
    if not TOKEN.fullmatch(token):
        raise CredentialsError(f"{what}: the token must be printable ASCII without spaces")
    if len(token) < MIN_TOKEN_CHARS:
        raise CredentialsError(
            f"{what}: the token has {len(token)} characters, fewer than {MIN_TOKEN_CHARS}; "
            "make one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )


def parse(text: str, source: str) -> list[Credential]:
    """The credentials of ``text`` (lines, see :func:`parse_line`); ``source`` names where
    the text came from in errors."""
    found = [parse_line(line, f"{source}, line {i}") for i, line in enumerate(text.splitlines(), 1)]
    return [c for c in found if c is not None]


class Credentials:
    """The service's credentials, and what each scope requires.

    A scope is *required* (a request without a valid token holding it is refused) when:
    ``predict``, if some credential holds ``predict`` (else scoring stays open);
    ``feedback`` and ``admin``, if any credential is configured. Without an ``admin``
    credential the reload route does not exist at all (:attr:`has_admin`)."""

    def __init__(
        self, credentials: Iterable[Credential] = (), warnings: Iterable[str] = ()
    ) -> None:
        self.all = tuple(credentials)
        #: Notes for the operator (a tokens file others can read), said once at start.
        self.warnings = list(warnings)
        names = [c.name for c in self.all]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise CredentialsError(f"credential name(s) given more than once: {twice}")
        digests = [c.digest for c in self.all]
        if len(set(digests)) != len(digests):
            raise CredentialsError(
                "one token is given to two credentials: each needs its own, so a label's author "
                "is known and one can be revoked alone"
            )

    def __bool__(self) -> bool:
        return bool(self.all)

    def summary(self) -> str:
        """``labeller (feedback), ops (admin,feedback)``, or ``none``: for the start-up line."""
        return ", ".join(f"{c.name} ({','.join(sorted(c.scopes))})" for c in self.all) or "none"

    def names(self, scope: str) -> list[str]:
        """The names of the credentials holding ``scope``."""
        return [c.name for c in self.all if scope in c.scopes]

    @property
    def has_admin(self) -> bool:
        return any("admin" in c.scopes for c in self.all)

    def required(self, scope: str) -> bool:
        """Whether a request needs a credential holding ``scope`` (see the class)."""
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}; the scopes are {', '.join(SCOPES)}")
        if scope == "predict":
            return any("predict" in c.scopes for c in self.all)
        return bool(self.all)

    def identify(self, authorization: str | bytes | None) -> Credential | None:
        """The credential whose token an ``Authorization: Bearer <token>`` header carries, or
        None. Every credential is compared, in constant time each, whichever matched."""
        token = _bearer(authorization)
        if token is None:
            return None
        given = _digest(token)
        found = None
        for credential in self.all:  # no early exit: the time does not depend on which matched
            if hmac.compare_digest(given, credential.digest):
                found = credential
        return found

    def credential_name(self, authorization: str | bytes | None) -> str | None:
        """The name of the credential an ``Authorization`` header carries (None: none valid),
        e.g. to count requests per client."""
        credential = self.identify(authorization)
        return credential.name if credential else None

    def check(self, authorization: str | bytes | None, scope: str) -> str:
        """Who makes a request that needs ``scope``: the name of its credential, or
        :data:`ANONYMOUS` when the scope requires none; :class:`Refused` (401 without a valid
        token, 403 with one lacking the scope) otherwise."""
        if not self.required(scope):
            return self.credential_name(authorization) or ANONYMOUS
        credential = self.identify(authorization)
        if credential is None:
            raise Refused(
                401,
                f"this route needs a credential with scope {scope!r}: "
                "'Authorization: Bearer <token>' with a valid token",
            )
        if scope not in credential.scopes:
            raise Refused(
                403,
                f"credential {credential.name!r} lacks the scope {scope!r} this route needs "
                f"(it has {', '.join(sorted(credential.scopes))})",
            )
        return credential.name


def _bearer(authorization: str | bytes | None) -> bytes | None:
    """The token of ``Bearer <token>`` (the scheme in any case, RFC 7235), or None."""
    if not authorization:
        return None
    raw = (
        authorization
        if isinstance(authorization, bytes)
        else authorization.encode("latin-1", "replace")
    )
    scheme, _, token = raw.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return None
    return token.strip()


def from_environment(environ: Mapping[str, str] | None = None) -> Credentials:
    """The credentials of :data:`TOKENS_FILE_ENV`, :data:`TOKENS_ENV` and
    :data:`~mlcycle.constants.ADMIN_TOKEN_ENV` together (none set: no credentials). A
    malformed line, a token too short, a name or a token given twice is a
    :class:`CredentialsError` naming the variable or file and the line; a tokens file that
    other users may read is noted in :attr:`Credentials.warnings`."""
    env = os.environ if environ is None else environ
    found: list[Credential] = []
    warnings = []
    path = env.get(TOKENS_FILE_ENV, "").strip()
    if path:
        file = Path(path).expanduser()
        try:
            text = file.read_text(encoding="utf-8")
            mode = file.stat().st_mode
        except (OSError, UnicodeDecodeError) as exc:
            raise CredentialsError(
                f"{TOKENS_FILE_ENV}={path}: cannot read the tokens file: {exc}"
            ) from None
        found += parse(text, str(file))
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            warnings.append(
                f"the tokens file {file} can be read by other users (mode "
                f"{stat.S_IMODE(mode):o}); `chmod 600 {file}`"
            )
    found += parse(env.get(TOKENS_ENV, ""), TOKENS_ENV)
    admin = env.get(ADMIN_TOKEN_ENV, "").strip()
    if admin:
        _check_token(admin, ADMIN_TOKEN_ENV)
        found.append(Credential.of("admin", ["admin"], admin))
    return Credentials(found, warnings)


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` reaches this machine only: ``localhost``, 127.0.0.0/8,
    ``::1``. Any other name may resolve beyond it."""
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def exposure_problem(host: str, credentials: Credentials, *, logging: bool) -> str | None:
    """Why the service must not start on ``host`` with ``credentials``, or None: beyond
    loopback with the prediction log on, labels are writes that can steer the next model, so
    a credential with the ``feedback`` scope is required."""
    if is_loopback(host) or not logging or credentials.names("feedback"):
        return None
    return (
        f"--host {host} listens beyond loopback, and the prediction log is on: POST /feedback "
        "would let whoever reaches the port write training labels. Give a credential with the "
        f"'feedback' scope (a line 'name feedback <token>' in the file {TOKENS_FILE_ENV} names, "
        f"or in {TOKENS_ENV}), or serve with --no-log, or on 127.0.0.1 behind a proxy"
    )
