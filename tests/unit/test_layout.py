"""The package layout's rules (docs/architecture.md, "Where things live"), checked on the source.

- Every ``microclaw`` module imports without importing the app layer (``workers``, ``tasks``).
- No import cycles inside ``microclaw/``, counting every import statement (also those inside
  functions and ``TYPE_CHECKING`` blocks), so a cycle cannot hide behind a late import.
- ``microclaw.runtime`` (processes and their wiring) is imported only by entry points: the CLI,
  ``workers/``, ``tasks/``, benchmarks and tests; never by the library.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import microclaw

ROOT = Path(microclaw.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The ``microclaw`` modules that ``name`` imports by any import statement."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports the submodule when there is one.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def test_every_module_imports_without_the_app_layer() -> None:
    names = sorted(_modules())
    script = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "    bad = sorted(m for m in sys.modules if m.split('.')[0] in ('workers', 'tasks'))\n"
        "    if bad:\n"
        "        sys.exit(f'{name} imported {bad}')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_no_import_cycles_inside_microclaw() -> None:
    modules = _modules()
    known = set(modules)
    graph = {name: _imports(name, path, known) for name, path in modules.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)


def test_runtime_is_imported_only_by_entry_points() -> None:
    modules = _modules()
    known = set(modules)
    offenders = {
        name: sorted(t for t in _imports(name, path, known) if t.startswith("microclaw.runtime"))
        for name, path in modules.items()
        if not name.startswith(("microclaw.runtime", "microclaw.cli"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}
