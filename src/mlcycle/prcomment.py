"""Post the model report on a pull request as one comment, updated on every push.

``mlcycle pr-comment REPORT`` finds the comment this command posted before (it carries an
invisible marker) and edits it, or creates it on the first run, through GitHub's REST API. So
a pull request holds one report, the latest, whatever the number of pushes. Everything it needs
comes from the environment GitHub Actions sets (``GITHUB_API_URL``, ``GITHUB_REPOSITORY``,
``GITHUB_EVENT_PATH``, ``GITHUB_TOKEN``), or from options on any other CI.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import requests

MARKER = "<!-- mlcycle-report -->"
# GitHub refuses comment bodies over 65,536 characters.
MAX_BODY = 65_000
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")


class CommentError(RuntimeError):
    """The comment could not be posted; the message says why and what to check."""


@dataclass(frozen=True)
class Target:
    """Where the comment goes."""

    api_url: str
    repository: str
    number: int
    token: str


def body(report: str, run_url: str | None = None) -> str:
    """The comment's text: the marker, then the report with its images turned into links.

    The report's PNG files sit next to it on the CI machine, where a comment cannot show them;
    they are uploaded with the run, so each image becomes a link to the run.
    """

    def link(match: re.Match[str]) -> str:
        alt, path = match.group(1), match.group(2)
        if run_url:
            return f"[plot: {alt}]({run_url}#artifacts) (`{path}` in the run's artifacts)"
        return f"plot: {alt} (`{path}` in the report folder)"

    # One plot per list item: consecutive link lines would run into one paragraph.
    text = re.sub(r"(?m)^!\[", "- ![", report)
    text = _IMAGE.sub(link, text).rstrip()
    source = f" from [this run]({run_url})" if run_url else ""
    footer = f"\n\n<sub>Posted by `mlcycle pr-comment`{source}; updated on every push.</sub>"
    room = MAX_BODY - len(MARKER) - len(footer) - 200
    if len(text) > room:
        cut = text[:room].rsplit("\n", 1)[0]
        more = f"[the run]({run_url})" if run_url else "the report file"
        text = f"{cut}\n\n… (the report is {len(text):,} characters; the rest is in {more})"
    return f"{MARKER}\n{text}{footer}\n"


def _session(target: Target) -> requests.Session:
    s = requests.Session()
    s.headers.update(
        {
            "Authorization": f"Bearer {target.token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "mlcycle-pr-comment",
        }
    )
    return s


def _check(response: requests.Response, doing: str) -> None:
    if response.ok:
        return
    try:
        message = response.json().get("message", "")
    except ValueError:
        message = response.text[:200]
    hint = ""
    if response.status_code in (401, 403, 404):
        hint = (
            " (check that the token may write pull-request comments: the workflow needs"
            " `permissions: pull-requests: write`, and a pull request from a fork gets a"
            " read-only token)"
        )
    raise CommentError(f"{doing}: HTTP {response.status_code} {message}".rstrip() + hint)


def find(session: requests.Session, target: Target, timeout: float = 30) -> dict | None:
    """The comment posted earlier on this pull request (the last one with the marker)."""
    url: str | None = (
        f"{target.api_url}/repos/{target.repository}/issues/{target.number}/comments?per_page=100"
    )
    found = None
    while url:
        r = session.get(url, timeout=timeout)
        _check(r, f"listing the comments of #{target.number} in {target.repository}")
        for comment in r.json():
            if MARKER in (comment.get("body") or ""):
                found = comment
        url = r.links.get("next", {}).get("url")
    return found


def post(report: str, target: Target, run_url: str | None = None, timeout: float = 30) -> dict:
    """Create or update the report comment; returns ``{"action", "id", "url"}``."""
    text = body(report, run_url)
    with _session(target) as session:
        old = find(session, target, timeout)
        base = f"{target.api_url}/repos/{target.repository}/issues"
        if old is None:
            r = session.post(
                f"{base}/{target.number}/comments", json={"body": text}, timeout=timeout
            )
            _check(r, f"creating the report comment on #{target.number}")
            action = "created"
        else:
            r = session.patch(f"{base}/comments/{old['id']}", json={"body": text}, timeout=timeout)
            _check(r, f"updating the report comment {old['id']} on #{target.number}")
            action = "updated"
    doc = r.json()
    return {"action": action, "id": doc.get("id"), "url": doc.get("html_url")}


def target_from_env(
    repository: str | None = None,
    number: int | None = None,
    api_url: str | None = None,
    env: dict[str, str] | None = None,
) -> Target:
    """The pull request from the options, else from GitHub Actions' environment."""
    env = dict(os.environ if env is None else env)
    token = env.get("GITHUB_TOKEN") or env.get("GH_TOKEN")
    if not token:
        raise CommentError("no token: set GITHUB_TOKEN (in a workflow: ${{ github.token }})")
    repository = repository or env.get("GITHUB_REPOSITORY")
    if not repository or not re.fullmatch(r"[\w.-]+/[\w.-]+", repository):
        raise CommentError(
            f"the repository must be OWNER/NAME (--repo or GITHUB_REPOSITORY), not {repository!r}"
        )
    if number is None and env.get("GITHUB_EVENT_PATH"):
        try:
            event = json.loads(Path(env["GITHUB_EVENT_PATH"]).read_text())
        except (OSError, ValueError) as exc:
            raise CommentError(f"cannot read GITHUB_EVENT_PATH: {exc}") from None
        number = (event.get("pull_request") or {}).get("number") or event.get("number")
    if not isinstance(number, int) or number < 1:
        raise CommentError(
            "no pull request number: pass --pr N, or run on a pull_request event"
            " (GITHUB_EVENT_PATH)"
        )
    api_url = (api_url or env.get("GITHUB_API_URL") or "https://api.github.com").rstrip("/")
    if not api_url.startswith(("https://", "http://")):
        raise CommentError(f"the API URL must be http(s), not {api_url!r}")
    return Target(api_url, repository, number, token)


def run_url_from_env(env: dict[str, str] | None = None) -> str | None:
    """The link to this CI run, when GitHub Actions says where it is."""
    env = dict(os.environ if env is None else env)
    server, repo, run = (
        env.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    )
    return f"{server.rstrip('/')}/{repo}/actions/runs/{run}" if server and repo and run else None
