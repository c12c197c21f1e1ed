"""The shape of ``src/mlcycle`` in figures, beside a baseline revision (issue: one shape).

Prints, for the working tree and for ``--base REV`` (checked out into a temporary folder):
lines of Python, task-name branches outside ``tasks.py``, model-kind checks outside
``adapters/``, import cycles between mlcycle modules, imports from ``engines`` into ``stages``,
functions over 80 lines and imports of mlcycle modules inside functions.

    python bench/code_shape.py --base 77f0264
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import grimp

# A branch on the task: comparing a task value with a task constant or name, or asking
# tasks.is_classification.
TASK_BRANCH = re.compile(
    r"task\w*\s*(==|!=|\bin\b|\bnot in\b)|"
    r"(==|!=|\bin\b)\s*(tasks\.)?(BINARY|MULTICLASS|REGRESSION|CLASSIFICATION)\b|"
    r"is_classification\(|['\"](binary|multiclass)_classification['\"]|['\"]regression['\"]\s*[:)=]"
)
MODEL_KINDS = r"(xgboost|logistic_regression|random_forest|ridge)"
KIND_CHECK = re.compile(
    rf"kind\w*\s*(==|!=)\s*[\"']{MODEL_KINDS}[\"']|"
    rf"[\"']{MODEL_KINDS}[\"']\s*(==|!=|\bin\b)\s*\w*kind"
)


def _python_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _cycles(src: Path) -> int:
    """Modules of mlcycle that lie on an import cycle (strongly connected, more than one)."""
    sys.path.insert(0, str(src))
    try:
        graph = grimp.build_graph("mlcycle", cache_dir=None)
    finally:
        sys.path.remove(str(src))
    nodes = sorted(graph.modules)
    edges = {m: graph.find_modules_directly_imported_by(m) for m in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    sccs: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            sccs.append(comp)

    sys.setrecursionlimit(10000)
    for v in nodes:
        if v not in index:
            visit(v)
    return [c for c in sccs if len(c) > 1]


def _imports_mlcycle(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").startswith("mlcycle")
    return isinstance(node, ast.Import) and any(a.name.startswith("mlcycle") for a in node.names)


def shape(src: Path) -> dict[str, object]:
    """The figures for the package under ``src/mlcycle``."""
    pkg = src / "mlcycle"
    files = _python_files(pkg)
    lines = task_branches = kind_checks = back_imports = long_functions = inner_imports = 0
    for path in files:
        text = path.read_text()
        rel = path.relative_to(pkg).as_posix()
        lines += text.count("\n")
        code = [ln.split("#")[0] for ln in text.splitlines()]
        if rel != "tasks.py":
            task_branches += sum(bool(TASK_BRANCH.search(ln)) for ln in code)
        if not rel.startswith("adapters/"):
            kind_checks += sum(bool(KIND_CHECK.search(ln)) for ln in code)
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.end_lineno - node.lineno + 1 > 80:
                    long_functions += 1
                inner_imports += sum(
                    _imports_mlcycle(inner) for inner in ast.walk(node) if inner is not node
                )
            if rel.startswith("engines/") and isinstance(node, ast.ImportFrom):
                back_imports += (node.module or "").startswith("mlcycle.stages")
    cycles = _cycles(src)
    return {
        "lines in src/mlcycle": lines,
        "task-name branches outside tasks.py": task_branches,
        "kind checks outside adapters/": kind_checks,
        "modules on import cycles": sum(len(c) for c in cycles),
        "import cycles (strongly connected groups)": len(cycles),
        "imports from engines/ into stages/": back_imports,
        "functions over 80 lines": long_functions,
        "mlcycle imports inside functions": inner_imports,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="a git revision to compare with")
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    now = shape(root / "src")
    before = None
    if args.base:
        with tempfile.TemporaryDirectory() as tmp:
            archive = subprocess.run(
                ["git", "archive", args.base, "src"], cwd=root, capture_output=True, check=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            before = shape(Path(tmp) / "src")
    width = max(map(len, now))
    head = f"{'':{width}}  {'base ' + args.base if before else '':>14}  {'now':>8}"
    print(head)
    for key, value in now.items():
        base = "" if before is None else str(before[key])
        print(f"{key:{width}}  {base:>14}  {value!s:>8}")


if __name__ == "__main__":
    main()
