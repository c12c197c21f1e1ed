"""The service's credentials as a library (no server): parsing the tokens file and variables,
looking a bearer token up, what each scope requires, and `mlcycle serve` refusing to listen
beyond loopback without a credential for labels (before it loads anything)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlcycle import cli
from mlcycle.serve import auth
from mlcycle.serve.auth import Credentials, CredentialsError, Refused

LABELLER = "labeller-token-0123456789"
OPS = "ops-token-abcdefghijklmn"
SCORER = "scorer-token-ABCDEFGHIJ"


def test_the_tokens_file_the_variable_and_the_admin_token_together(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(
        f"# name scopes token\n\nlabeller feedback {LABELLER}\n  ops admin,feedback {OPS}  \n"
    )
    tokens.chmod(0o600)
    creds = auth.from_environment(
        {
            auth.TOKENS_FILE_ENV: str(tokens),
            auth.TOKENS_ENV: f"scorer predict {SCORER}",
            "MLCYCLE_ADMIN_TOKEN": "the-old-admin-token",
        }
    )
    assert [c.name for c in creds.all] == ["labeller", "ops", "scorer", "admin"]
    assert creds.names("feedback") == ["labeller", "ops"] and creds.has_admin
    assert not creds.warnings
    assert (
        creds.summary()
        == "labeller (feedback), ops (admin,feedback), scorer (predict), admin (admin)"
    )
    assert all(LABELLER not in repr(c) for c in creds.all)  # only a digest is kept
    assert creds.credential_name(f"Bearer {OPS}") == "ops"
    assert creds.credential_name(f"bearer {LABELLER}".encode()) == "labeller"  # any case
    assert creds.credential_name("Bearer the-old-admin-token") == "admin"
    for wrong in (None, "", LABELLER, f"Basic {LABELLER}", f"Bearer {LABELLER}x", "Bearer "):
        assert creds.credential_name(wrong) is None, wrong
    # none set: no credentials, every write open (on loopback)
    assert not auth.from_environment({})
    tokens.chmod(0o644)
    loose = auth.from_environment({auth.TOKENS_FILE_ENV: str(tokens)})
    assert "can be read by other users" in loose.warnings[0] and "chmod 600" in loose.warnings[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"labeller {LABELLER}", "line 2: expected 'name scope[,scope...] token'"),
        (f"labeller feedback {LABELLER} extra", "line 2: expected"),
        (f"labeller write {LABELLER}", "unknown scope(s) ['write']; the scopes are predict"),
        (f"label:ler feedback {LABELLER}", "line 2: the name 'label:ler' must be"),
        (f"anonymous feedback {LABELLER}", "and not 'anonymous'"),
        ("labeller feedback s3cret", "line 2: credential 'labeller': the token has 6 char"),
        (f"labeller feedback {LABELLER}\nlabeller admin {OPS}", "given more than once"),
        (f"labeller feedback {LABELLER}\nops admin {LABELLER}", "one token is given to two"),
    ],
)
def test_a_bad_line_is_an_error_naming_where(tmp_path: Path, text: str, message: str) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# ours\n{text}\n")
    with pytest.raises(CredentialsError) as exc:
        auth.from_environment({auth.TOKENS_FILE_ENV: str(tokens)})
    assert message in str(exc.value)
    assert LABELLER not in str(exc.value) and OPS not in str(exc.value)  # never the token
    if "line 2" in message:
        assert str(exc.value).startswith(f"{tokens}, line 2: ")


def test_unreadable_sources_and_short_admin_tokens_are_named() -> None:
    with pytest.raises(CredentialsError, match="MLCYCLE_TOKENS_FILE=/no/such: cannot read"):
        auth.from_environment({auth.TOKENS_FILE_ENV: "/no/such"})
    with pytest.raises(CredentialsError, match="MLCYCLE_TOKENS, line 1: expected"):
        auth.from_environment({auth.TOKENS_ENV: "just-a-token-of-some-length"})
    with pytest.raises(CredentialsError, match="MLCYCLE_ADMIN_TOKEN: the token has 6 char"):
        auth.from_environment({"MLCYCLE_ADMIN_TOKEN": "s3cret"})


def test_what_each_scope_requires_and_who_is_answered() -> None:
    open_ = Credentials()
    for scope in auth.SCOPES:  # nothing configured: loopback's open service
        assert not open_.required(scope)
    assert open_.check(None, "feedback") == auth.ANONYMOUS
    writers = Credentials(
        [
            auth.Credential.of("labeller", ["feedback"], LABELLER),
            auth.Credential.of("ops", ["admin"], OPS),
        ]
    )
    # scoring stays open without a predict credential; writes need theirs
    assert not writers.required("predict") and writers.required("feedback")
    assert writers.check(None, "predict") == auth.ANONYMOUS
    assert writers.check(f"Bearer {LABELLER}", "predict") == "labeller"  # known, if sent
    assert writers.check(f"Bearer {LABELLER}", "feedback") == "labeller"
    with pytest.raises(Refused) as no_token:
        writers.check(None, "feedback")
    assert no_token.value.status == 401 and no_token.value.headers == {"WWW-Authenticate": "Bearer"}
    with pytest.raises(Refused) as wrong:
        writers.check("Bearer not-a-token-we-know", "feedback")
    assert wrong.value.status == 401
    with pytest.raises(Refused) as scope:
        writers.check(f"Bearer {OPS}", "feedback")
    assert scope.value.status == 403 and not scope.value.headers
    assert "'ops' lacks the scope 'feedback'" in scope.value.detail
    scorers = Credentials([auth.Credential.of("scorer", ["predict"], SCORER)])
    assert scorers.required("predict") and not scorers.has_admin
    with pytest.raises(Refused, match="scope 'predict'"):
        scorers.check(None, "predict")
    with pytest.raises(ValueError, match="unknown scope 'write'"):
        scorers.required("write")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.0.0.5", False),
        ("myhost.example", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert auth.is_loopback(host) is loopback


def test_serve_beyond_loopback_needs_a_feedback_credential_before_loading_anything(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Refused at once (the bundle named does not even exist: nothing was loaded), saying
    what to set; --no-log (no labels) or a feedback credential lets it past the check."""
    for name in (auth.TOKENS_ENV, auth.TOKENS_FILE_ENV, "MLCYCLE_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    missing = str(tmp_path / "no-bundle")
    assert cli.main(["serve", "--host", "0.0.0.0", "--bundle", missing]) == 1
    err = capsys.readouterr().err
    assert "--host 0.0.0.0 listens beyond loopback" in err and "'feedback' scope" in err
    assert auth.TOKENS_FILE_ENV in err and "--no-log" in err
    monkeypatch.setenv(auth.TOKENS_ENV, f"ops admin {OPS}")  # admin alone does not do
    assert cli.main(["serve", "--host", "0.0.0.0", "--bundle", missing]) == 1
    assert "listens beyond loopback" in capsys.readouterr().err
    monkeypatch.setenv(auth.TOKENS_ENV, "ops admin short")
    assert cli.main(["serve", "--bundle", missing]) == 1
    assert "MLCYCLE_TOKENS, line 1: credential 'ops'" in capsys.readouterr().err
    # past the check, serving fails on the missing bundle instead
    monkeypatch.setenv(auth.TOKENS_ENV, f"labeller feedback {LABELLER}")
    assert cli.main(["serve", "--host", "0.0.0.0", "--bundle", missing]) == 1
    assert "listens beyond loopback" not in capsys.readouterr().err
    monkeypatch.delenv(auth.TOKENS_ENV)
    assert cli.main(["serve", "--host", "0.0.0.0", "--no-log", "--bundle", missing]) == 1
    assert "listens beyond loopback" not in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
