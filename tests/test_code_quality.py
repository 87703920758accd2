"""The codebase stays readable: ruff-clean, no module grows past ~500 lines, and no modules
import each other in a circle."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "fleet", "tests", "bench"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_module_is_too_long():
    long = [str(p.relative_to(ROOT)) for p in (ROOT / "fleet").rglob("*.py")
            if len(p.read_text().splitlines()) > 500]
    assert not long


def test_core_does_not_import_engines_at_start_up():
    code = ("import sys, fleet.cli.main, fleet.server, fleet.api.app, fleet.cluster.supervisor.actor, "
            "fleet.cluster.worker.actor; "
            "print(','.join(m for m in ('torch','transformers','sentence_transformers') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def _imports_of_each_module() -> dict[str, set[str]]:
    """Fleet's modules and the Fleet modules each names in an import: at the top, inside a
    function (a lazy import) or under TYPE_CHECKING alike, since each is an arrow a reader
    must follow."""
    paths = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (ROOT / "fleet").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        named: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                named |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Import):
                named |= {alias.name for alias in node.names}
        graph[module] = {name for name in named if name in paths and name != module}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that reach each other (strongly connected, more than one)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for name in graph[module]:
            if name not in order:
                visit(name)
                low[module] = min(low[module], low[name])
            elif name in stack:
                low[module] = min(low[module], order[name])
        if low[module] == order[module]:
            group = stack[stack.index(module):]
            del stack[stack.index(module):]
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in graph:
        if module not in order:
            visit(module)
    return found


def test_no_modules_import_each_other_in_a_circle():
    graph = _imports_of_each_module()
    assert len(graph) > 100 and sum(map(len, graph.values())) > 300  # the graph was read
    assert _circles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]  # and would be seen
    assert _circles(graph) == []


# `import ... from './x.js'`, `import './x.js'` and `import('./x.js')`: the web UI's modules.
_JS_IMPORT = re.compile(r"""(?:\bfrom\s*|\bimport\s*\(?\s*)['"](\.{1,2}/[^'"]+)['"]""")


def test_no_ui_modules_import_each_other_in_a_circle():
    """The pages import navigation only; the table that loads them is main.js's alone."""
    static = ROOT / "fleet" / "ui" / "static" / "js"
    graph = {}
    for path in static.rglob("*.js"):
        graph[str(path)] = {str((path.parent / target).resolve())
                            for target in _JS_IMPORT.findall(path.read_text())}
    graph = {module: {name for name in names if name in graph} for module, names in graph.items()}
    assert sum(map(len, graph.values())) > 40  # the imports were read, dynamic ones too
    assert str(static / "pages" / "cluster.js") in graph[str(static / "main.js")]
    assert _circles(graph) == []
