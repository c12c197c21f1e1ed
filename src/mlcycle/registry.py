"""The model registry: versions and the production stage as git tags, in GTO's convention.

``name@vX.Y.Z`` registers a version at a commit; ``name#prod#N`` assigns it to production. The
bundle itself lives in DVC's cache (it is the `models/bundle` output in that commit's dvc.lock)
and is retrieved with ``dvc artifacts get``. Nothing here needs a server: tags travel with
``git push --tags``, bundles with ``dvc push``.

Besides production, one version at a time can be a *challenger*: in the ``shadow`` stage (the
service scores every request with it too, production answers) or the ``canary`` stage (it
answers a share of requests, recorded in its assignment tag's message as ``canary-share:``).
Promotion and rollback are GTO assignments and unassignments too, so :func:`history` tells who
served when (:mod:`mlcycle.serve` follows them at a reload, :mod:`mlcycle.compare` decides them).

A signed version has a signature tag beside it (:func:`signature_tag`, one per key: a version
can be signed again after a key rotation), an annotated tag whose message is the signature
record of the bundle's SHA256SUMS (:mod:`mlcycle.signing`). The signature lives in git, not in
the bundle, so signing changes no DVC output; a fetched copy carries it as SHA256SUMS.sig.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mlcycle import signing
from mlcycle.config import load_yaml
from mlcycle.pipeline import DVC_LOCK, data_hashes, dvc_command, parse_lock

PROD = "prod"
SHADOW, CANARY = "shadow", "canary"
CHALLENGER_STAGES = (SHADOW, CANARY)
SHARE_FIELD = "canary-share:"  # the line of a canary assignment's message giving its share
CACHE_DIR = Path("models/registry")
SIGNATURE_TAGS = "mlcycle-sig"  # signature tags: mlcycle-sig/<name>@<version>/<key id>


class RegistryError(ValueError):
    """A registry operation cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class Version:
    """A registered model version and the commit it points at."""

    name: str
    version: str
    commit: str


@dataclass(frozen=True)
class Challenger:
    """The version released beside production: ``stage`` shadow (scores every request, never
    answers) or canary (answers ``share``, 0 to 1, of requests)."""

    version: Version
    stage: str
    share: float = 0.0


def _git(repo: Path, *args: str) -> str:
    res = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if res.returncode != 0:
        raise RegistryError(f"git {' '.join(args)} failed: {res.stderr.strip()}")
    return res.stdout


def _gto():
    import gto.api  # imported lazily: gto pulls in a lot and most commands never need it

    return gto.api


def in_stage(repo: str | Path, name: str, stage: str) -> Version | None:
    """The version assigned to ``stage`` (the latest assignment not undone), or None."""
    from gto.exceptions import ArtifactNotFound

    try:
        found = _gto().find_versions_in_stage(str(repo), name, stage)
    except ArtifactNotFound:
        return None
    if not found:
        return None
    vs = found[0] if isinstance(found, list) else found
    return Version(name, vs.version, vs.commit_hexsha)


def production(repo: str | Path, name: str) -> Version | None:
    """The version in the production stage, or None if nothing was ever promoted."""
    return in_stage(repo, name, PROD)


def challenger(repo: str | Path, name: str) -> Challenger | None:
    """The version in the shadow or canary stage (the latest assigned, if both: releasing a
    challenger ends the one before), or None. A challenger that is production's version too
    (promoted, its stage not yet ended) is not one."""
    prod = production(repo, name)
    found = []
    for stage in CHALLENGER_STAGES:
        v = in_stage(repo, name, stage)
        tag = _stage_tag(Path(repo), name, stage)
        if v is not None and v != prod and tag is not None:
            found.append((tag[0], Challenger(v, stage, tag[1] if stage == CANARY else 0.0)))
    return max(found, key=lambda pair: pair[0])[1] if found else None


def _stage_tag(repo: Path, name: str, stage: str) -> tuple[int, float] | None:
    """The newest ``name#stage#N`` tag's number and the share its message records (0 if
    none), or None when there is no such tag."""
    prefix = f"{name}#{stage}#"
    numbered = sorted(
        (int(tag[len(prefix) :]), tag)
        for tag in _git(repo, "tag", "--list", f"{prefix}*").split()
        if tag[len(prefix) :].isdigit()
    )
    if not numbered:
        return None
    number, tag = numbered[-1]
    message = _git(repo, "for-each-ref", f"refs/tags/{tag}", "--format=%(contents)")
    share = 0.0
    for line in message.splitlines():
        if line.strip().startswith(SHARE_FIELD):
            share = float(line.strip()[len(SHARE_FIELD) :])
    return number, share


def check_share(share: float) -> float:
    """A canary's share of requests as a fraction: given in percent (``--canary 10``), above 0
    and below 100."""
    if not 0 < share < 100:
        raise RegistryError(
            f"--canary {share}: the share of requests the canary answers is a percentage "
            "above 0 and below 100"
        )
    return share / 100


def find_version(repo: str | Path, name: str, version: str) -> Version:
    """A registered version by its number (``v1.2.3``), or an error listing the known ones."""
    tag = f"{name}@{version}"
    try:
        commit = _git(Path(repo), "rev-list", "-n", "1", tag).strip()
    except RegistryError:
        known = sorted(_git(Path(repo), "tag", "--list", f"{name}@v*").split())
        raise RegistryError(f"no model version {tag}; registered: {known or 'none'}") from None
    return Version(name, version, commit)


def resolve(repo: str | Path, name: str, version: str | None = None) -> Version:
    """A named version, or the production one when ``version`` is None."""
    if version:
        return find_version(repo, name, version)
    prod = production(repo, name)
    if prod is None:
        raise RegistryError(
            f"no production version of {name!r} yet: run `dvc repro`, commit, then "
            "`mlcycle release`; or pass --bundle models/bundle to use the workspace model"
        )
    return prod


def fetch_bundle(repo: str | Path, v: Version, dest_root: str | Path | None = None) -> Path:
    """Retrieve the version's bundle into ``models/registry/<name>/<version>`` (once), with
    its signatures (its signature tags) as SHA256SUMS.sig, brought up to date at every call.

    Fetches of one model's versions take turns (a lock on its folder): DVC shares one data
    index per repository between processes, and two `dvc artifacts get` at the same time
    (a service starting while `mlcycle predict` runs) can list each other's entries. The
    bundle is written into a folder of this call's own, checked against its SHA256SUMS, then
    renamed into place, so no partial or foreign folder is ever at the destination."""
    repo = Path(repo)
    dest = Path(dest_root or repo / CACHE_DIR) / v.name / v.version
    if dest.is_dir():
        _sync_signatures(repo, v, dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest.parent):
        if dest.is_dir():  # another command fetched it while this one waited
            _sync_signatures(repo, v, dest)
            return dest
        work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            got = _retrieve(repo, v, work / "bundle")
            _sync_signatures(repo, v, got)
            got.rename(dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return dest


def _retrieve(repo: Path, v: Version, got: Path) -> Path:
    """`dvc artifacts get` the bundle of ``v`` into ``got``, checked against its SHA256SUMS."""
    from mlcycle.bundle import BundleError, verify  # xgboost: only when a bundle is fetched

    res = subprocess.run(
        [*dvc_command(), "artifacts", "get", str(repo.resolve()), v.name]
        + ["--rev", v.version, "-o", str(got), "-f"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        raise RegistryError(
            f"cannot retrieve {v.name}@{v.version} (commit {v.commit[:12]}): "
            f"{res.stderr.strip() or res.stdout.strip()}. If the bundle is in a DVC "
            f"remote, run `dvc fetch --rev {v.name}@{v.version}` first"
        )
    try:
        verify(got)
    except BundleError as exc:
        raise RegistryError(
            f"{v.name}@{v.version} was retrieved but is not the bundle that was released: {exc}"
        ) from exc
    return got


def signature_tag(v: Version, key_id: str) -> str:
    """The tag holding ``v``'s signature by key ``key_id`` (outside GTO's tag names, which
    GTO skips)."""
    return f"{SIGNATURE_TAGS}/{v.name}@{v.version}/{key_id}"


def signatures(repo: str | Path, v: Version) -> bytes:
    """The signature records of ``v`` (its signature tags' messages), one per line; empty
    when it was never signed."""
    out = _git(
        Path(repo),
        "for-each-ref",
        "--format=%(contents)",
        f"refs/tags/{SIGNATURE_TAGS}/{v.name}@{v.version}/",
    )
    return "".join(f"{line}\n" for line in out.splitlines() if line.strip()).encode()


def _sync_signatures(repo: Path, v: Version, folder: Path) -> None:
    """Make ``folder``'s SHA256SUMS.sig hold ``v``'s signature records (no file when none),
    replaced as one file: the tags are the record, the file a copy a loader checks."""
    records = signatures(repo, v)
    file = folder / signing.SIGNATURES_FILE
    if records == (file.read_bytes() if file.is_file() else b""):
        return
    if not records:
        file.unlink(missing_ok=True)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{v.version}.sig.", dir=folder.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(records)
        os.chmod(tmp, 0o644)
        os.replace(tmp, file)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def sign_version(repo: str | Path, v: Version, key: Ed25519PrivateKey) -> str:
    """Sign ``v``'s bundle, as retrieved from DVC's cache (what a fetch of the version gets)
    and checked against its SHA256SUMS, with ``key``: its signature tag, made or replaced;
    returns the tag's name."""
    from mlcycle.bundle import CHECKSUM_FILE

    repo = Path(repo)
    with tempfile.TemporaryDirectory(prefix=".mlcycle-sign.") as work:
        got = _retrieve(repo, v, Path(work) / "bundle")
        record = signing.sign((got / CHECKSUM_FILE).read_bytes(), key)
    return _tag_signature(repo, v, record)


def _tag_signature(repo: Path, v: Version, record: str) -> str:
    tag = signature_tag(v, json.loads(record)["key_id"])
    _git(repo, "tag", "-f", "-a", tag, v.commit, "-m", record)
    return tag


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (flock on the folder itself: no lock file)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def next_version(repo: str | Path, name: str, bump: str) -> str:
    """The version after the latest registered one (``v0.1.0`` for the first)."""
    tags = _git(Path(repo), "tag", "--list", f"{name}@v*").split()
    nums = []
    for tag in tags:
        try:
            nums.append(tuple(int(x) for x in tag.split("@v", 1)[1].split(".")))
        except ValueError:
            continue
    if not nums:
        return "v0.1.0"
    major, minor, patch = max(nums)
    if bump == "major":
        return f"v{major + 1}.0.0"
    if bump == "minor":
        return f"v{major}.{minor + 1}.0"
    return f"v{major}.{minor}.{patch + 1}"


def read_at(repo: str | Path, commit: str, path: str) -> str | None:
    """A file's text at ``commit``, or None if it did not exist there."""
    res = subprocess.run(
        ["git", "show", f"{commit}:{path}"], cwd=repo, capture_output=True, text=True
    )
    return res.stdout if res.returncode == 0 else None


# The bundle at a commit was packaged from exactly these results when dvc.lock's package stage
# records their current hashes; a failed gate leaves them newer than the bundle.
PACKAGED_FROM = ("metrics/evaluate.json", "metrics/gate.json")


def _check_packaged(repo: Path, commit: str) -> None:
    """Refuse a commit whose bundle was not packaged from its own evaluation and gate decision
    (the gate failed or the pipeline stopped after evaluation: the committed bundle is an older
    model than the metrics describe)."""
    package = parse_lock(read_at(repo, commit, DVC_LOCK)).get("package")
    deps = package.deps if package is not None else {}
    for path in PACKAGED_FROM:
        text = read_at(repo, commit, path)
        # DVC's content hash, compared with what dvc.lock recorded: not a security check
        md5 = None if text is None else hashlib.md5(text.encode(), usedforsecurity=False)
        if md5 is None or deps.get(path) != md5.hexdigest():
            raise RegistryError(
                f"the bundle at HEAD was not packaged from its {path} (dvc.lock's package stage "
                "records another version: the gate failed or the pipeline stopped before "
                "`package`); run `dvc repro` until it completes, commit, then release"
            )


FORCE_HINT = (
    "if the production model is the one at fault (it learned from a leak, say), `mlcycle "
    "release --force --reason TEXT` releases this one past the comparison (docs/registry.md)"
)


def _gate_allows(gate: dict, force: bool) -> str | None:
    """None when the committed gate decision passed; with ``force``, the failed comparison
    with production it overrules when that is all that failed (the decision's
    ``champion_only``); else the error, naming ``--force`` when it would help.

    Forcing is the way to retire a production model that is itself wrong (it learned from a
    leak, say), which no honest model can beat. The objectives' bounds and the other checks
    still hold: they are the user's bar for any model, not a comparison with a model that may
    be at fault."""
    if gate.get("passed"):
        return None
    champion_only = bool(gate.get("champion_only"))
    rejected = "the gate rejected the model at HEAD: " + "; ".join(gate.get("reasons", []))
    if force and champion_only:
        return "; ".join(r.removeprefix("FAIL ") for r in gate["reasons"] if r.startswith("FAIL"))
    if force:
        raise RegistryError(
            f"{rejected}. --force overrules the comparison with production only, never the "
            "objectives or the other checks; nothing was released"
        )
    raise RegistryError(rejected + (f"; {FORCE_HINT}" if champion_only else ""))


def release(
    repo: str | Path,
    name: str,
    bump: str = "patch",
    message: str | None = None,
    say: Callable[[str], None] = lambda _: None,
    stage: str = PROD,
    share: float = 0.0,
    reason: str | None = None,
    force: bool = False,
) -> str:
    """Register HEAD as a new version and assign it to ``stage`` (production, or as the
    challenger: shadow, or canary answering ``share`` of requests, 0 to 1, which ends any
    challenger before it), if its gate passed; sign it with the key
    :data:`mlcycle.signing.SIGNING_KEY_ENV` names, if set (``say`` tells which, or that it is
    not signed). ``reason`` goes into the tags' messages (:func:`history` shows it); ``force``
    (with a ``reason``) releases past a rejection by the champion comparison alone
    (:func:`_gate_allows`).

    Refuses when the committed gate decision at HEAD is missing or a rejection, or when
    dvc.lock, params.yaml or metrics/ have uncommitted changes (the tag would not describe the
    model in the workspace), or when the signing key is unusable; the bundle is signed (as
    retrieved from DVC's cache) once registered and before production names it; when signing
    fails, the registration is undone (its tag deleted: made here, never pushed).
    """
    repo = Path(repo)
    if force and not reason:
        raise RegistryError("--force needs --reason: say why production is retired")
    try:
        key = signing.configured_signing_key(repo)
    except signing.SigningError as exc:
        raise RegistryError(f"{exc}; nothing was released") from None
    dirty = _git(repo, "status", "--porcelain", "--", DVC_LOCK, "params.yaml", "metrics")
    if dirty.strip():
        raise RegistryError(
            "commit the pipeline's results first (uncommitted: "
            + ", ".join(line[3:] for line in dirty.splitlines())
            + ")"
        )
    commit = _git(repo, "rev-parse", "HEAD").strip()
    gate_text = read_at(repo, commit, "metrics/gate.json")
    if gate_text is None:
        raise RegistryError("HEAD has no metrics/gate.json: run `dvc repro` and commit first")
    overruled = _gate_allows(json.loads(gate_text), force)
    _check_packaged(repo, commit)
    v = Version(name, next_version(repo, name, bump), commit)
    if reason:  # why, in the registration's and the assignment's tag messages
        past = f" past the gate's comparison with production ({overruled})" if overruled else ""
        message = f"{message or f'release {name} {v.version}'}{past}: {reason}"
    api = _gto()
    api.register(
        str(repo), name, ref=commit, version=v.version, message=message or f"{name} {v.version}"
    )
    if key is None:
        say(
            f"{name}@{v.version} is not signed ({signing.SIGNING_KEY_ENV} is not set): a "
            "service or `mlcycle predict` with trusted keys refuses it"
        )
    else:  # signed before production names it: a reload never finds it unsigned
        try:
            tag = sign_version(repo, v, key)
        except RegistryError:
            _git(repo, "tag", "-d", f"{name}@{v.version}")  # made here, never pushed
            raise
        say(f"{name}@{v.version} signed (tag {tag})")
    if stage == PROD:
        api.assign(str(repo), name, PROD, version=v.version,
                   message=message or f"promote {name} {v.version} to {PROD}")  # fmt: skip
        return v.version
    before = challenger(repo, name)
    if before is not None:
        _end(repo, before, f"{name} {v.version} released as {stage}")
        say(f"{name}@{before.version.version} is no longer {before.stage}")
    text = message or f"release {name} {v.version} as {stage}"
    if stage == CANARY:
        text += f"\n\n{SHARE_FIELD} {share:g}"
    api.assign(str(repo), name, stage, version=v.version, message=text)
    return v.version


def _end(repo: Path, c: Challenger, message: str) -> None:
    _gto().unassign(str(repo), c.version.name, version=c.version.version, stage=c.stage,
                    message=message)  # fmt: skip


def promote(repo: str | Path, name: str, reason: str) -> Version:
    """Put the challenger in production and end its shadow or canary stage (two tags, the
    reason in their messages); the error when there is no challenger."""
    c = challenger(repo, name)
    if c is None:
        raise RegistryError(f"{name} has no shadow or canary version to promote")
    text = f"promote {name} {c.version.version} from {c.stage}: {reason}"
    _gto().assign(str(repo), name, PROD, version=c.version.version, message=text)
    _end(Path(repo), c, f"promoted to {PROD}: {reason}")
    return c.version


def rollback(repo: str | Path, name: str, reason: str) -> Challenger:
    """End the challenger's stage (production alone serves again), the reason in the tag's
    message; returns the challenger ended, or the error when there is none."""
    c = challenger(repo, name)
    if c is None:
        raise RegistryError(
            f"{name} has no shadow or canary version to roll back; production's own version "
            f"is taken out with `mlcycle rollback --production`"
        )
    _end(Path(repo), c, f"rolled back: {reason}")
    return c


def withdraw(repo: str | Path, name: str, version: str, message: str) -> Version | None:
    """Take ``version`` out of production (GTO's unassignment, a ``name#prod!#N`` tag, so the
    move is recorded as every other): the version production had before it is production
    again. Returns the production version now (None when there was none before)."""
    _gto().unassign(str(repo), name, version=version, stage=PROD, message=message)
    return production(repo, name)


def production_tag(repo: str | Path, name: str) -> str | None:
    """The newest ``name#prod#N`` tag (the one that put the current production version there)."""
    prefix = f"{name}#{PROD}#"
    numbered = [
        (int(tag[len(prefix) :]), tag)
        for tag in _git(Path(repo), "tag", "--list", f"{prefix}*").split()
        if tag[len(prefix) :].isdigit()
    ]
    return max(numbered)[1] if numbered else None


def history(repo: str | Path, name: str) -> list[dict[str, str]]:
    """Every registration and stage move of ``name``, oldest first: the tag, what it did
    (``registered``, ``assigned``, ``unassigned``), the version, the stage, who made it, when,
    and its message (the reason, for a promotion or rollback)."""
    fmt = "%00".join(("%(refname:short)", "%(taggername) %(taggeremail)",
                      "%(taggerdate:iso-strict)", "%(contents)%01"))  # fmt: skip
    out = _git(Path(repo), "for-each-ref", f"--format={fmt}",
               f"refs/tags/{name}@*", f"refs/tags/{name}#*")  # fmt: skip
    events = []
    for entry in out.split("\x01"):
        parts = entry.strip("\n").split("\x00")
        if len(parts) != 4:
            continue
        tag, who, when, message = parts
        if "@" in tag[len(name) :]:
            action, stage, version = "registered", "", tag.split("@", 1)[1]
        else:
            _, stage, _ = tag.split("#")
            action = "unassigned" if stage.endswith("!") else "assigned"
            stage, version = stage.rstrip("!"), _version_of(repo, tag)
        events.append({"tag": tag, "action": action, "version": version, "stage": stage,
                       "by": who, "time": when, "message": message.strip()})  # fmt: skip
    # In time order; within a second, registrations first, then GTO's tag numbers' order.
    return sorted(events, key=lambda e: (e["time"], int(e["tag"].rsplit("#", 1)[-1] or 0)
                                         if "#" in e["tag"] else 0))  # fmt: skip


def _version_of(repo: str | Path, tag: str) -> str:
    """The version registered at a stage tag's commit (GTO's stage tags name no version),
    the newest if several."""
    name = tag.split("#", 1)[0]
    found = _git(Path(repo), "tag", "--points-at", f"{tag}^{{}}", "--list", f"{name}@v*")
    versions = [t.split("@", 1)[1] for t in found.split()]
    return max(versions, key=_version_key, default="")


def _version_key(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in version.lstrip("v").split("."))
    except ValueError:
        return ()


def lineage(repo: str | Path, v: Version) -> dict:
    """Where a version came from (commit, data hashes from dvc.lock, params, metrics, gate)
    and when it served (its stage moves, :func:`history`)."""
    repo = Path(repo)
    lock_text = read_at(repo, v.commit, DVC_LOCK)
    if lock_text is None:
        raise RegistryError(f"commit {v.commit[:12]} has no dvc.lock")

    def load(path: str, parse=json.loads):
        text = read_at(repo, v.commit, path)
        return parse(text) if text is not None else None

    return {
        "model": f"{v.name}@{v.version}",
        "commit": v.commit,
        "commit_time": _git(repo, "show", "-s", "--format=%cI", v.commit).strip(),
        "data": data_hashes(parse_lock(lock_text)),
        "params": load("params.yaml", load_yaml),
        "metrics": load("metrics/evaluate.json"),
        "gate": load("metrics/gate.json"),
        "stages": [e for e in history(repo, v.name) if e["version"] == v.version and e["stage"]],
    }
