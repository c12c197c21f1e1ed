"""The CI workflows and the pull-request report: the workflow files pass two linters (GitHub's
published workflow schema and zizmor's static analysis), run the scripts any CI can run, and
`mlcycle pr-comment` keeps one report comment per pull request, checked against a local HTTP
server that speaks the part of GitHub's REST API it uses."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from tests.conftest import BIN, ROOT, cli, copy_project, git_commit, project_env, run, set_params

WORKFLOWS = ROOT / ".github" / "workflows"


def lint(folder: Path) -> list[subprocess.CompletedProcess]:
    files = sorted(str(p) for p in folder.glob("*.yml"))
    schema = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *files],
        capture_output=True,
        text=True,
    )
    zizmor = subprocess.run(
        [str(BIN / "zizmor"), "--offline", "--persona", "pedantic", "--no-progress", *files],
        capture_output=True,
        text=True,
    )
    return [schema, zizmor]


def test_workflows_pass_both_linters() -> None:
    assert sorted(p.name for p in WORKFLOWS.glob("*.yml")) == ["pull-request.yml", "tests.yml"]
    for proc in lint(WORKFLOWS):
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_linters_catch_broken_workflows(tmp_path: Path) -> None:
    """A schema error and a template injection are both refused, naming what is wrong."""
    schema_bad, injection = tmp_path / "schema", tmp_path / "injection"
    for folder in (schema_bad, injection):
        shutil.copytree(WORKFLOWS, folder)
    text = (WORKFLOWS / "tests.yml").read_text()
    (schema_bad / "tests.yml").write_text(text.replace("runs-on: ubuntu-latest", "runs_on: x", 1))
    pr = (WORKFLOWS / "pull-request.yml").read_text()
    (injection / "pull-request.yml").write_text(
        pr.replace(
            'run: .ci/pr-report "origin/${BASE_REF}"',
            'run: .ci/pr-report "${{ github.event.pull_request.title }}"',
        )
    )
    schema, _ = lint(schema_bad)
    assert schema.returncode != 0 and "runs_on" in schema.stdout + schema.stderr
    _, zizmor = lint(injection)
    assert zizmor.returncode != 0 and "template-injection" in zizmor.stdout


def test_workflows_run_the_portable_scripts() -> None:
    """Each workflow is a thin shell around scripts any CI can run; actions are pinned."""
    tests = yaml.safe_load((WORKFLOWS / "tests.yml").read_text())
    pr = yaml.safe_load((WORKFLOWS / "pull-request.yml").read_text())
    # PyYAML reads the key `on` as True.
    assert "push" in tests[True] and "pull_request" in pr[True]
    steps = {
        name: [s.get("run", "") for s in job["steps"]]
        for wf in (tests, pr)
        for name, job in wf["jobs"].items()
    }
    assert any(r.startswith(".ci/run") for r in steps["test"])
    assert any(r.startswith("make docs") for r in steps["docs"])
    assert any(r.startswith(".ci/pr-report") for r in steps["report"])
    assert any("mlcycle pr-comment" in r for r in steps["report"])
    for script in (".ci/run", ".ci/pr-report"):
        path = ROOT / script
        assert path.is_file() and path.stat().st_mode & 0o111, f"{script} is not executable"
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    assert (ROOT / "Makefile").read_text().count("\ndocs:") == 1
    for wf in (tests, pr):
        assert wf["permissions"] == {"contents": "read"}
        for job in wf["jobs"].values():
            for step in job["steps"]:
                if "uses" in step:
                    assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step
    assert pr["jobs"]["report"]["permissions"]["pull-requests"] == "write"


# --- mlcycle pr-comment against a local stand-in for GitHub's API ----------------------------


class FakeGitHub(ThreadingHTTPServer):
    """Issue comments of one repository, served the way GitHub's REST API serves them."""

    def __init__(self, token: str, per_page_max: int = 100) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.token, self.per_page_max = token, per_page_max
        self.comments: dict[int, list[dict]] = {}
        self.next_id = 1000
        self.forbid_writes = False
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def add(self, number: int, body: str) -> dict:
        with self.lock:
            self.next_id += 1
            c = {"id": self.next_id, "body": body, "html_url": f"https://x/c/{self.next_id}"}
            self.comments.setdefault(number, []).append(c)
            return c


class _Handler(BaseHTTPRequestHandler):
    server: FakeGitHub

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, doc: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str) -> None:
        gh = self.server
        gh.requests.append((method, self.path))
        if self.headers.get("Authorization") != f"Bearer {gh.token}":
            return self._send(401, {"message": "Bad credentials"})
        if self.headers.get("Accept") != "application/vnd.github+json":
            return self._send(415, {"message": "Unsupported media type"})
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        body = None
        if method in ("POST", "PATCH"):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if gh.forbid_writes:
                return self._send(403, {"message": "Resource not accessible by integration"})
        if m := re.fullmatch(r"/repos/own/repo/issues/(\d+)/comments", url.path):
            number = int(m.group(1))
            if method == "GET":
                per_page = min(int(query.get("per_page", ["30"])[0]), gh.per_page_max)
                page = int(query.get("page", ["1"])[0])
                items = gh.comments.get(number, [])
                chunk = items[(page - 1) * per_page : page * per_page]
                headers = {}
                if page * per_page < len(items):
                    nxt = f"{gh.url}{url.path}?per_page={per_page}&page={page + 1}"
                    headers["Link"] = f'<{nxt}>; rel="next"'
                return self._send(200, chunk, headers)
            if method == "POST":
                return self._send(201, gh.add(number, body["body"]))
        if (m := re.fullmatch(r"/repos/own/repo/issues/comments/(\d+)", url.path)) and method == (
            "PATCH"
        ):
            for items in gh.comments.values():
                for c in items:
                    if c["id"] == int(m.group(1)):
                        c["body"] = body["body"]
                        return self._send(200, c)
        return self._send(404, {"message": "Not Found"})

    def do_GET(self) -> None:  # noqa: N802
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def do_PATCH(self) -> None:  # noqa: N802
        self._route("PATCH")


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    server = FakeGitHub(token="tok-123", per_page_max=50)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def comment(
    github: FakeGitHub, cwd: Path, report: Path, process: bool = False, **env: str
) -> subprocess.CompletedProcess:
    """`mlcycle pr-comment` as the CI job runs it, against the fake GitHub (``process``: the
    console script)."""
    event = cwd / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 7}}))
    full = {
        "GITHUB_TOKEN": "tok-123",
        "GITHUB_API_URL": github.url,
        "GITHUB_REPOSITORY": "own/repo",
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_SERVER_URL": "https://github.example",
        "GITHUB_RUN_ID": "42",
        **env,
    }
    return cli(cwd, "pr-comment", str(report), env=full, check=False, process=process)


def test_pr_comment_is_created_once_then_updated(github: FakeGitHub, tmp_path: Path) -> None:
    # 120 earlier comments by people: the report's comment is found on a later page.
    for i in range(120):
        github.add(7, f"review comment {i}")
    github.add(8, "another pull request")
    report = tmp_path / "report.md"
    report.write_text("# Model report\n\n**Gate: passed**\n\n![ROC](roc.png)\n")
    first = comment(github, tmp_path, report, process=True)  # end to end
    assert first.returncode == 0, first.stderr
    assert "comment created" in first.stdout
    mine = [c for c in github.comments[7] if "<!-- mlcycle-report -->" in c["body"]]
    assert len(mine) == 1 and "**Gate: passed**" in mine[0]["body"]
    # The image cannot show in a comment: it links to the run that holds it.
    assert "![ROC]" not in mine[0]["body"]
    assert (
        "[plot: ROC](https://github.example/own/repo/actions/runs/42#artifacts)"
        in (mine[0]["body"])
    )
    for i in range(30):
        github.add(7, f"later comment {i}")
    report.write_text("# Model report\n\n**Gate: REJECTED**\n")
    second = comment(github, tmp_path, report)
    assert second.returncode == 0, second.stderr
    assert "comment updated" in second.stdout
    mine = [c for c in github.comments[7] if "<!-- mlcycle-report -->" in c["body"]]
    assert len(mine) == 1 and "**Gate: REJECTED**" in mine[0]["body"]
    assert (
        len(github.comments[7]) == 151 and github.comments[8][0]["body"] == "another pull request"
    )
    assert ("POST", "/repos/own/repo/issues/7/comments") in github.requests
    assert any(m == "PATCH" for m, _ in github.requests)


def test_pr_comment_errors_say_what_to_fix(github: FakeGitHub, tmp_path: Path) -> None:
    report = tmp_path / "report.md"
    report.write_text("x" * 200_000)  # over GitHub's limit: cut, saying where the rest is
    github.forbid_writes = True
    forbidden = comment(github, tmp_path, report)
    assert forbidden.returncode == 8
    assert "HTTP 403" in forbidden.stderr and "pull-requests: write" in forbidden.stderr
    assert "fork" in forbidden.stderr
    github.forbid_writes = False
    ok = comment(github, tmp_path, report)
    assert ok.returncode == 0, ok.stderr
    body = github.comments[7][0]["body"]
    assert len(body) <= 65_536 and "the rest is in [the run]" in body
    bad_token = comment(github, tmp_path, report, GITHUB_TOKEN="wrong")
    assert bad_token.returncode == 8 and "HTTP 401 Bad credentials" in bad_token.stderr
    no_token = comment(github, tmp_path, report, GITHUB_TOKEN="")
    assert no_token.returncode == 8 and "GITHUB_TOKEN" in no_token.stderr
    no_pr = comment(github, tmp_path, report, GITHUB_EVENT_PATH="")
    assert no_pr.returncode == 8 and "--pr N" in no_pr.stderr
    missing = comment(github, tmp_path, tmp_path / "nope.md")
    assert missing.returncode == 1 and "mlcycle report --base" in missing.stderr
    port = github.server_address[1]
    github.shutdown()
    github.server_close()
    down = comment(github, tmp_path, report, GITHUB_API_URL=f"http://127.0.0.1:{port}")
    assert down.returncode == 8 and "cannot reach" in down.stderr
    assert len(github.comments[7]) == 1  # nothing duplicated by the failed attempts


# --- .ci/pr-report: the pull-request job, with a DVC remote ---------------------------------


def test_pr_report_pulls_reproduces_and_reports_a_rejection(
    small_project: Path, tmp_path: Path
) -> None:
    """Main is built (the session's small project) and pushed to a DVC remote (a local folder).
    A pull request that raises the bar: `.ci/pr-report` in a fresh clone pulls what main built
    (unchanged stages are not re-run), runs `dvc repro`, which the gate stops, and still writes
    the report, which shows the rejection. The script exits non-zero, failing the check."""
    main = copy_project(small_project, tmp_path / "main")
    run(["dvc", "remote", "add", "-d", "store", str(tmp_path / "remote")], main)
    git_commit(main, "repro, remote")
    run(["dvc", "push"], main)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(main), str(clone)], tmp_path)
    (clone / ".ci").mkdir()
    shutil.copy2(ROOT / ".ci/pr-report", clone / ".ci/pr-report")
    run(["git", "checkout", "-q", "-b", "raise-the-bar"], clone)
    set_params(clone, {"objectives": {"minimums": {"accuracy": 0.99}}})
    git_commit(clone, "accuracy must reach 0.99")
    env = {**project_env(clone), "MLCYCLE_NO_SETUP": "1"}
    proc = subprocess.run(
        [".ci/pr-report", "origin/main"], cwd=clone, env=env, capture_output=True, text=True
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log
    assert "dvc pull from store" in log
    for stage in ("gather", "prepare", "train"):
        assert f"Running stage '{stage}'" not in log, f"{stage} re-ran: the pull did not help"
    text = (clone / "reports/pr/report.md").read_text()
    assert "**Gate: REJECTED**" in text
    assert "- FAIL accuracy" in text and "0.99" in text
    assert "| `objectives.minimums.accuracy` |" in text
    assert list((clone / "reports/pr").glob("*.png"))
    # The failed gate left metrics/gate.json as main had it: the report did not take it.
    assert json.loads((clone / "metrics/gate.json").read_text())["passed"] is True
