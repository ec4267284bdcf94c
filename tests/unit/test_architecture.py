"""The shape the code keeps: HTTP stays at the edge, no import cycle, short functions, each module's SQL its own."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "chalicelib"
EDGE = {"chalicelib.http", "chalicelib.pagination", "chalicelib.auth", "chalicelib.idempotency"}
MAX_FUNCTION_LINES = 50


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """Every chalicelib module ``name`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("chalicelib"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("chalicelib")}
    return found - {name}


def test_billing_never_sees_http_pagination_or_another_modules_private_names():
    modules = _modules()
    for name, tree in modules.items():
        if not name.startswith("chalicelib.billing"):
            continue
        assert not _imports(name, tree, set(modules)) & EDGE, f"{name} imports the HTTP edge"
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                private = node.attr.startswith("_") and not node.attr.startswith("__")
                assert not (private and node.value.id not in ("self", "cls")), (
                    f"{name} uses {node.value.id}.{node.attr}"
                )


def test_no_module_reads_another_modules_named_queries():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"\b\w+\.Q\[", text), f"{path} reads another module's queries"
        for loaded in re.findall(r'load\("(\w+)"\)', text):
            assert loaded == path.stem, f"{path.name} loads {loaded}.sql, another module's queries"


def test_the_import_graph_has_no_cycle():
    modules = _modules()
    graph = {name: _imports(name, tree, set(modules)) & set(modules) for name, tree in modules.items()}
    done, path = set(), []

    def visit(name):
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(name) :] + [name]))
        if name in done:
            return
        path.append(name)
        for dependency in sorted(graph[name]):
            visit(dependency)
        path.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def test_no_function_is_longer_than_fifty_lines():
    long = [
        f"{name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for name, tree in _modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []


def test_the_gateway_key_is_built_in_one_place():
    writers = [p for p in PACKAGE.rglob("*.sql") if "'pay:'" in p.read_text()]
    builders = [p for p in PACKAGE.rglob("*.py") if 'f"pay:' in p.read_text()]
    assert writers == [] and [p.name for p in builders] == ["periods.py"]
