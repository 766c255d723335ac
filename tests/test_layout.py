"""The package layout holds: each package imports only what its rule allows, no import
cycles between modules, no import hidden in a function to dodge one, and no module over
400 lines without a reason at its top (docs/ARCHITECTURE.md, "Packages and rules")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("crawler", "index", "dht", "federation", "api")
# What each package may import of ours: the data flow, never back up.
ALLOWED = {
    "crawler": set(),
    "index": set(),
    "dht": set(),
    "federation": {"crawler", "index", "dht"},
    "api": {"crawler", "index", "dht", "federation"},
}
MAX_LINES = 400
LONG_REASON = "Longer than 400 lines because"


def _modules() -> dict[str, Path]:
    found = {}
    for package in OURS:
        for path in sorted((ROOT / package).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
    return found


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = module.split(".")[0] if not module.count(".") else module.rsplit(".", 1)[0]
    base = package.split(".")[: max(1, package.count(".") + 2 - node.level)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(module: str, path: Path) -> list[tuple[str, int, bool, bool]]:
    """(imported module, line, at module level, only for type checking)."""
    tree = ast.parse(path.read_text(), str(path))
    out: list[tuple[str, int, bool, bool]] = []

    def visit(node: ast.AST, top: bool, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                visit(child, top, True)
                continue
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, top, typing_only) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                target = _absolute(module, child)
                if child.module is not None:  # ``from . import a``: only the modules a
                    out.append((target, child.lineno, top, typing_only))
                # ``from . import a, b`` imports modules a and b.
                out.extend(
                    (f"{target}.{a.name}", child.lineno, top, typing_only)
                    for a in child.names
                    if f"{target}.{a.name}" in MODULES
                )
            inner = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            visit(child, top and not inner, typing_only)

    visit(tree, True, False)
    # Installed, the folders are rhizome.<folder> (pyproject's package-dir mapping).
    named = [(t.removeprefix("rhizome."), *rest) for t, *rest in out]
    return [i for i in named if i[0].split(".")[0] in OURS]


MODULES = _modules()
IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_packages_import_only_what_their_rule_allows(module: str) -> None:
    package = module.split(".")[0]
    bad = [
        f"line {line}: {target}"
        for target, line, _top, _typing in IMPORTS[module]
        if target.split(".")[0] not in ALLOWED[package] | {package}
    ]
    assert not bad, f"{module} imports against the rules: {bad}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_is_hidden_in_a_function(module: str) -> None:
    hidden = [f"line {line}: {t}" for t, line, top, typing in IMPORTS[module] if not top]
    assert not hidden, f"{module} imports inside functions (a cycle dodged?): {hidden}"


def test_no_import_cycles_between_modules() -> None:
    graph = {
        m: {t for t, _line, _top, typing in IMPORTS[m] if not typing and t in MODULES}
        for m in MODULES
    }
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def walk(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append([*stack[stack.index(n) :], n])
            elif n not in state:
                walk(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            walk(m)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_long_modules_say_why_at_their_top(module: str) -> None:
    text = MODULES[module].read_text()
    lines = text.count("\n")
    docstring = ast.get_docstring(ast.parse(text)) or ""
    assert lines <= MAX_LINES or LONG_REASON in docstring, f"{module}: {lines} lines, no reason"


def test_a_parse_worker_imports_the_crawler_alone() -> None:
    """A parser process runs ``import rhizome.crawler.workers``; through the top package
    it once imported the whole node (tantivy, numpy, the DHT): ~23 MB and 0.3 s a worker."""
    probe = (
        "import sys, rhizome.crawler.workers; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'tantivy', 'numpy', 'kademlia',"
        " 'nacl', 'wordllama'}), sorted({m.split('.')[1] for m in sys.modules"
        " if m.startswith('rhizome.') and m.count('.') >= 1}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd="/"
    ).stdout
    assert out.strip() == "[] ['crawler']"
