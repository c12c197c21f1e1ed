"""The model bundle: a directory a service can load safely and trace back to its origin.

Layout::

    model.ubj        an XGBoost booster, in XGBoost's own UBJSON format, or
    model.skops      a scikit-learn Pipeline, in skops' format (never a pickle)
    signature.json   input columns, types and categories; target classes
    metadata.json    model kind, params, metrics, data hashes, git commit, library versions,
                     the decision (binary: the threshold; multiclass: weights per class)
    reference_profile.json  the training data's per-input profile, the predictions' on the
                     test split and the target's (monitoring compares batches with it)
    row_rules.json   schema.yaml's columns and the severities of the rules one record can
                     break (mlcycle.schema.rows): what the service and the batch scorer refuse
    model_card.md/.json  the model card
    SHA256SUMS       the digest of every other file; loading verifies it first
    SHA256SUMS.sig   (a version fetched from the registry) signatures of SHA256SUMS, the one
                     file it does not cover (:mod:`mlcycle.signing`)

A bundle holds exactly one model file, the one ``metadata.json``'s ``model_kind`` calls for.
Loading refuses a bundle with a missing, extra or altered file, naming the file, before any of
its content is parsed; given trusted keys, it refuses one whose SHA256SUMS no trusted key
signed; a skops model is then refused if it holds a type outside
:data:`mlcycle.adapters.sklearn_models.TRUSTED_TYPES`, before any of it is built.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING

from mlcycle import tasks
from mlcycle.features import Signature
from mlcycle.io import atomic_folder, dumps_json, sha256_bytes
from mlcycle.models import Model, ModelError, UntrustedTypesError, load_model, model_files
from mlcycle.schema.rows import RowRules
from mlcycle.signing import SIGNATURES_FILE, SigningError, TrustedKeys
from mlcycle.tasks import Decision, as_decision

if TYPE_CHECKING:  # XGBoost is imported with the adapter of a bundle that holds one
    import xgboost as xgb

MODEL_FILES = model_files()  # model kind -> its file name (model.ubj, model.skops)
XGB_FILE = MODEL_FILES["xgboost"]
MODEL_FILE = XGB_FILE  # an XGBoost bundle's model file; see MODEL_FILES for the others
SIGNATURE_FILE = "signature.json"
METADATA_FILE = "metadata.json"
CHECKSUM_FILE = "SHA256SUMS"
PROFILE_FILE = "reference_profile.json"  # the training data's profile, for monitoring
RULES_FILE = "row_rules.json"  # the schema's per-row rules, for the service and batch scoring
REQUIRED = (SIGNATURE_FILE, METADATA_FILE)  # plus exactly one of MODEL_FILES' values
LIBRARIES = (
    "mlcycle", "xgboost", "scikit-learn", "skops", "pandas", "numpy", "pyarrow", "dvc",
)  # fmt: skip


class BundleError(ValueError):
    """The bundle is incomplete, altered or unreadable; the message names the file."""


@dataclass(frozen=True)
class Bundle:
    """A verified, loaded model bundle."""

    path: Path
    model: Model
    signature: Signature
    metadata: dict
    profile: dict | None = None  # reference_profile.json; bundles packaged before it: None
    rules: RowRules | None = None  # row_rules.json; bundles packaged before it: None

    @property
    def kind(self) -> str:
        """The model's kind: xgboost, logistic_regression or random_forest."""
        return self.model.kind

    @property
    def booster(self) -> xgb.Booster:
        """The XGBoost booster of an xgboost bundle (other kinds have none)."""
        try:
            return self.model.booster
        except ModelError:
            raise BundleError(
                f"model bundle {self.path} holds a {self.model.kind}, not XGBoost"
            ) from None

    @property
    def task(self) -> str:
        """What the model predicts: binary_classification, multiclass_classification or
        regression (from the signature)."""
        return self.signature.task

    @property
    def decision(self) -> Decision:
        """What the model's labels are decided by (:data:`mlcycle.tasks.Decision`): a binary
        model's threshold, a multiclass model's weights per class, None for the task's default
        rule. Bundles packaged before multiclass decisions hold a binary ``threshold``."""
        return as_decision(self.metadata.get("decision", self.metadata.get("threshold")))

    @property
    def model_id(self) -> str:
        """Content address of the model: the first 12 hex digits of its SHA-256."""
        return self.metadata["model_sha256"][:12]


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape the model's behaviour."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_state(root: str | Path = ".") -> dict:
    """The commit the project is at and whether the work tree has uncommitted changes."""

    def run(*args: str) -> str | None:
        try:
            res = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return res.stdout.strip()

    commit = run("rev-parse", "HEAD")
    status = run("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def write_bundle(
    target: str | Path,
    model_bytes: bytes,
    signature: Signature,
    metadata: dict,
    kind: str = "xgboost",
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write a complete bundle to ``target`` atomically (built beside it, then renamed).

    ``model_bytes`` is the content of a model file of ``kind`` (see
    :meth:`mlcycle.models.Model.to_bytes`), copied byte for byte; metadata.json records the
    kind and the model's SHA-256.
    """
    if kind not in MODEL_FILES:
        raise BundleError(f"unknown model kind {kind!r}; known: {list(MODEL_FILES)}")
    target = Path(target)
    meta = {**metadata, "model_kind": kind, "model_sha256": sha256_bytes(model_bytes)}
    files = {
        MODEL_FILES[kind]: model_bytes,
        SIGNATURE_FILE: dumps_json(signature.to_dict()).encode(),
        METADATA_FILE: dumps_json(meta).encode(),
        **(extra_files or {}),
    }
    sums = "".join(f"{sha256_bytes(data)}  {name}\n" for name, data in sorted(files.items()))
    files[CHECKSUM_FILE] = sums.encode()
    with atomic_folder(target) as tmp:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
    return target


def verify(path: str | Path, trusted: TrustedKeys | None = None) -> dict[str, bytes]:
    """Check every file of the bundle against SHA256SUMS and return their bytes; with
    ``trusted`` keys, first that a trusted key signed SHA256SUMS (SHA256SUMS.sig)."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"model bundle {path} does not exist or is not a directory")
    sums_file = path / CHECKSUM_FILE
    if not sums_file.is_file():
        raise BundleError(f"model bundle {path}: {CHECKSUM_FILE} is missing; refusing to load")
    sums = sums_file.read_bytes()  # read once: what is checked is what is used
    if trusted is not None:
        sigs = path / SIGNATURES_FILE
        try:
            trusted.check(sums, sigs.read_bytes() if sigs.is_file() else None)
        except SigningError as exc:
            raise BundleError(f"model bundle {path}: {exc}; refusing to load") from exc
    expected: dict[str, str] = {}
    for n, line in enumerate(sums.decode("utf-8", errors="replace").splitlines()):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name or "/" in name or name in expected:
            raise BundleError(f"model bundle {path}: {CHECKSUM_FILE} line {n + 1} is malformed")
        expected[name] = digest
    canonical = "".join(f"{digest}  {name}\n" for name, digest in expected.items())
    if sums != canonical.encode("utf-8"):
        raise BundleError(
            f"model bundle {path}: {CHECKSUM_FILE} is malformed (not one "
            "'<sha256>  <name>' line per file, each ending in a newline)"
        )
    missing = [name for name in REQUIRED if name not in expected]
    if missing:
        raise BundleError(f"model bundle {path}: {CHECKSUM_FILE} does not cover {missing}")
    known = sorted(set(MODEL_FILES.values()))
    models = [name for name in known if name in expected]
    if len(models) != 1:
        raise BundleError(
            f"model bundle {path}: {CHECKSUM_FILE} should cover exactly one model file "
            f"(one of {known}), found {models}"
        )
    present = {p.name for p in path.iterdir()} - {CHECKSUM_FILE, SIGNATURES_FILE}
    extra = sorted(present - set(expected))
    if extra:
        raise BundleError(f"model bundle {path}: unexpected file(s) {extra} not in {CHECKSUM_FILE}")
    contents = {}
    for name, digest in sorted(expected.items()):
        file = path / name
        if not file.is_file():
            raise BundleError(f"model bundle {path}: {name} is missing")
        data = file.read_bytes()
        if sha256_bytes(data) != digest:
            raise BundleError(
                f"model bundle {path}: {name} does not match its checksum; the file was altered "
                "or corrupted, refusing to load"
            )
        contents[name] = data
    return contents


def load_bundle(path: str | Path, trusted: TrustedKeys | None = None) -> Bundle:
    """Verify (with ``trusted`` keys: its signature too, :func:`verify`) and load a bundle;
    any mismatch raises :class:`BundleError` naming the bundle and the file."""
    path = Path(path)
    contents = verify(path, trusted)
    try:
        signature = Signature.from_dict(json.loads(contents[SIGNATURE_FILE]))
        meta = json.loads(contents[METADATA_FILE])
        profile = json.loads(contents[PROFILE_FILE]) if PROFILE_FILE in contents else None
        rules = (
            RowRules.from_dict(json.loads(contents[RULES_FILE]), RULES_FILE)
            if RULES_FILE in contents
            else None
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"model bundle {path}: cannot read its JSON files: {exc}") from exc
    if (meta_task := meta.get("task")) and meta_task != signature.task:
        raise BundleError(
            f"model bundle {path}: metadata.json says task {meta_task!r} but "
            f"signature.json says {signature.task!r}"
        )
    try:
        decision = as_decision(meta.get("decision", meta.get("threshold")))
        problem = tasks.get(signature.task).decision_problem(decision, len(signature.classes))
    except (TypeError, ValueError) as exc:
        problem = str(exc)
    if problem:
        raise BundleError(f"model bundle {path}: metadata.json's decision {problem}")
    kind = meta.get("model_kind", "xgboost")  # bundles from before skops models: XGBoost
    model_file = MODEL_FILES.get(kind)
    if model_file is None or model_file not in contents:
        raise BundleError(
            f"model bundle {path}: metadata.json says model_kind {kind!r}, which needs "
            f"{model_file or 'a known kind'}, but the bundle holds "
            f"{[n for n in contents if n in MODEL_FILES.values()]}"
        )
    if meta.get("model_sha256") != sha256_bytes(contents[model_file]):
        raise BundleError(f"model bundle {path}: metadata.json names a different model")
    try:
        model = load_model(kind, contents[model_file], signature.task)
    except UntrustedTypesError as exc:
        raise BundleError(f"model bundle {path}: {model_file} refused: {exc}") from exc
    except ModelError as exc:
        raise BundleError(f"model bundle {path}: {model_file} is not a valid model: {exc}") from exc
    return Bundle(
        path=path, model=model, signature=signature, metadata=meta, profile=profile, rules=rules
    )
