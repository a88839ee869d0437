"""The package's shape: no import cycles, small public signatures, small modules, core stays pure."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "requant_plugin"
MAX_PARAMS = 8
MAX_LINES = {"requant_plugin": 400, "benchmarks": 300}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports anywhere (module level or lazily in a function)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m.split(".")[0] == "requant_plugin"}


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in files and m != name} for name, path in files.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles() -> None:
    """Module A importing B (at any depth of a function) while B imports A is a cycle; a package's
    ``__init__`` re-exporting its children is not (children never import their ``__init__``)."""
    graph = {n: {m for m in deps if not n.startswith(m + ".")} for n, deps in _graph().items()}
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"


def test_cycle_check_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_core_imports_no_framework() -> None:
    """``core/`` is NumPy math: no torch, no host framework, nothing from the rest of the package."""
    allowed = {"numpy", "__future__", "dataclasses", "typing", "collections", "math", "enum", "functools",
               "itertools", "requant_plugin"}
    for path in (PACKAGE / "core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                tops = {(node.module or "").split(".")[0]}
            else:
                continue
            assert tops <= allowed, f"{path.relative_to(ROOT)} imports {tops - allowed}"
        for m in _imports(path):
            assert m.startswith(("requant_plugin.core", "requant_plugin.options")), (
                f"{path.relative_to(ROOT)} imports {m}: core may use only core and options"
            )


@pytest.mark.parametrize("top", sorted(MAX_LINES))
def test_modules_are_small(top: str) -> None:
    limit = MAX_LINES[top]
    big = {str(p.relative_to(ROOT)): n for p in (ROOT / top).rglob("*.py")
           if (n := len(p.read_text().splitlines())) > limit}
    assert not big, f"modules over {limit} lines: {big}"


def _public_functions() -> list[tuple[str, object]]:
    import importlib
    import pkgutil

    import requant_plugin

    out = []
    for info in pkgutil.walk_packages(requant_plugin.__path__, "requant_plugin."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an optional extra not installed
            continue
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name, None)
            if inspect.isfunction(obj):
                out.append((f"{info.name}.{name}", obj))
            elif inspect.isclass(obj) and "__init__" in vars(obj) and not hasattr(obj, "__dataclass_fields__"):
                out.append((f"{info.name}.{name}.__init__", vars(obj)["__init__"]))
    return out


def test_public_signatures_are_small() -> None:
    """No public function takes more than 8 parameters: options travel in a frozen config."""
    wide = {}
    for name, fn in _public_functions():
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.name not in ("self", "cls") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if len(params) > MAX_PARAMS:
            wide[name] = len(params)
    assert not wide, f"public callables with more than {MAX_PARAMS} parameters: {wide}"
