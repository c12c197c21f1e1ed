"""bandit over ``src/``: no finding, and every finding kept on one line says why.

The checks skipped everywhere are listed, with their reason, in ``pyproject.toml``
(``[tool.bandit]``); a single finding kept is marked ``# nosec BXXX`` on its line, with a
``bandit BXXX`` comment just above it saying why the code is safe.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOSEC = re.compile(r"#\s*nosec\b(.*)$")
TEST_ID = re.compile(r"\bB\d{3}\b")


def test_bandit_finds_nothing_in_src() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bandit", "-c", "pyproject.toml", "-r", "src", "-q", "-f", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    report = json.loads(proc.stdout)
    found = [
        f"{r['filename']}:{r['line_number']} {r['test_id']} {r['issue_text']}"
        for r in report["results"]
    ]
    assert not found, "bandit findings:\n" + "\n".join(found)
    assert not report["errors"], report["errors"]
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_every_nosec_names_its_check_and_says_why() -> None:
    unexplained = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines):
            match = NOSEC.search(line)
            if not match:
                continue
            ids = TEST_ID.findall(match.group(1))
            above = " ".join(lines[max(0, n - 3) : n])
            if not ids or any(f"bandit {i}" not in above for i in ids):
                unexplained.append(f"{path.relative_to(ROOT)}:{n + 1}: {line.strip()}")
    assert not unexplained, (
        "a `# nosec` must name its check (B123) and have a `bandit B123` comment above it "
        "saying why the code is safe:\n" + "\n".join(unexplained)
    )
