"""The README and the docs site: a short README with the two commands and the results markers,
relative links that point to files that exist, and `mkdocs build --strict` (what `make docs`
runs) passing on the real pages and failing, naming the target, on a broken link."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

DOCS = ROOT / "docs"
# [text](target) or ![alt](target), with an optional "title"; the target is group 1.
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
EXTERNAL = ("http://", "https://", "mailto:", "#")


def relative_links(md: Path) -> list[str]:
    """The relative link targets of a Markdown file, outside code blocks and code spans."""
    text = CODE_SPAN.sub("", FENCE.sub("", md.read_text(encoding="utf-8")))
    return [t for t in LINK.findall(text) if not t.startswith(EXTERNAL)]


def broken_links(md: Path) -> list[str]:
    """The relative links of ``md`` whose file (``#anchor`` stripped) does not exist."""
    name = md.relative_to(ROOT) if md.is_relative_to(ROOT) else md.name
    out = []
    for target in relative_links(md):
        path = target.split("#", 1)[0].split("?", 1)[0]
        if path and not (md.parent / path).exists():
            out.append(f"{name}: {target}")
    return out


def mkdocs_build(project: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_readme_is_short_with_the_two_commands_and_the_results_markers() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 150
    for command in ("make repro", "make test"):
        assert re.search(rf"^{command}\b", readme, re.M), command
    lines = readme.splitlines()
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    assert lines.count(begin) == 1 and lines.count(end) == 1
    assert lines.index(begin) < lines.index(end)


def test_relative_links_point_to_existing_files() -> None:
    pages = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    assert len(pages) > 10, "the docs pages are missing"
    assert relative_links(ROOT / "README.md"), "the README links to no docs page"
    broken = [link for page in pages for link in broken_links(page)]
    assert not broken, broken


def test_the_link_check_finds_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# there\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md#a) [web](https://example.org/x.md) [anchor](#here)\n"
        "`[code](ignored.md)`\n```\n[fenced](ignored.md)\n```\n[bad](gone.md#x)\n"
    )
    assert relative_links(page) == ["there.md#a", "gone.md#x"]
    assert [link.split(": ", 1)[1] for link in broken_links(page)] == ["gone.md#x"]


def test_docs_site_builds_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    had_site = (ROOT / "site").exists()
    proc = mkdocs_build(ROOT, site)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site / "index.html").is_file() and (site / "training" / "index.html").is_file()
    assert (ROOT / "site").exists() == had_site, "the build wrote into the repository"


def test_docs_build_fails_on_a_broken_link(tmp_path: Path) -> None:
    """The strict build is a real check: one link to a missing page fails it, by name."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "mkdocs.yml", project / "mkdocs.yml")
    shutil.copytree(DOCS, project / "docs")
    with (project / "docs" / "index.md").open("a", encoding="utf-8") as f:
        f.write("\n[x](missing.md)\n")
    proc = mkdocs_build(project, tmp_path / "site")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "missing.md" in output and "strict" in output, output
