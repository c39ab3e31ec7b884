"""The import rules of ARCHITECTURE.md, checked on the import graph of the package: every import statement
counts, at the top of a module, inside a function (lazy) or under ``TYPE_CHECKING``."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tracebridge"
GENERATED = {"tracebridge.sinks.perfetto.tracebridge_perfetto_pb2"}

#: Layers, lowest first: a module may import its own layer and the layers below, never one above.
LAYERS: list[tuple[str, list[str]]] = [
    (
        "model",
        [
            "tracebridge._model",
            "tracebridge._safety",
            "tracebridge._units",
            "tracebridge._codec",
            "tracebridge._sanitize",
            "tracebridge._globs",
            "tracebridge._hooks",
            "tracebridge._accel",
            "tracebridge._speedups",
        ],
    ),
    ("pipeline", ["tracebridge.sampling"]),
    ("sinks", ["tracebridge.sinks"]),
    (
        "recorder",
        [
            "tracebridge._config",
            "tracebridge._environment",
            "tracebridge._recorder.runtime",
            "tracebridge._recorder",
        ],
    ),
    (
        "sources",
        [
            "tracebridge._intake",
            "tracebridge._backtrace",
            "tracebridge.spans",
            "tracebridge.events",
            "tracebridge.logging",
            "tracebridge.structlog",
            "tracebridge.otel",
            "tracebridge.instrument",
            "tracebridge.pools",
        ],
    ),
    (
        "tools",
        [
            "tracebridge.reading",
            "tracebridge.analysis",
            "tracebridge.testing",
            "tracebridge.pytest_plugin",
            "tracebridge._run",
            "tracebridge._demo",
            "tracebridge.cli",
            "tracebridge.__main__",
            "tracebridge",
        ],
    ),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: path for name, path in found.items() if name not in GENERATED}


def layer_of(module: str) -> int:
    best, found = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), i
    assert found >= 0, f"{module} is in no layer of ARCHITECTURE.md"
    return found


def resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if path.name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def type_only_lines(tree: ast.Module) -> set[int]:
    """The lines of imports under ``if TYPE_CHECKING:`` (they name types; they never run)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                for sub in ast.walk(inner):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        lines.add(sub.lineno)
    return lines


def imports(module: str, path: Path, *, executed_only: bool = False) -> Iterator[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import of ``module``, wherever it is:
    at the top, inside functions (lazy), and, unless ``executed_only``, under ``TYPE_CHECKING``."""
    tree = ast.parse(path.read_text())
    skip = type_only_lines(tree) if executed_only else set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = resolve(module, path, node)
            for alias in node.names:
                yield target, alias.name, node.lineno


def ours(target: str, known: dict[str, Path]) -> str | None:
    """The module of the package ``target`` names (itself, or the package it is in), if any."""
    while target:
        if target in known:
            return target
        target = target.rpartition(".")[0]
    return None


def test_every_module_is_in_a_layer() -> None:
    for module in modules():
        layer_of(module)


def test_no_module_imports_a_layer_above_its_own() -> None:
    known = modules()
    wrong = []
    for module, path in known.items():
        for target, name, line in imports(module, path):
            full = f"{target}.{name}" if name and f"{target}.{name}" in known else target
            dep = ours(full, known)
            if dep is None or dep in GENERATED:
                continue
            if layer_of(dep) > layer_of(module):
                above = LAYERS[layer_of(dep)][0]
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} imports {dep} ({above})")
    assert wrong == []


def test_sinks_import_only_the_model() -> None:
    known = modules()
    sinks_layer = layer_of("tracebridge.sinks")
    for module, path in known.items():
        if layer_of(module) != sinks_layer:
            continue
        for target, name, line in imports(module, path):
            dep = ours(f"{target}.{name}" if name else target, known) or ours(target, known)
            if dep is not None and dep not in GENERATED:
                assert layer_of(dep) in (0, sinks_layer), f"{module}:{line} imports {dep}"


def test_no_module_imports_another_modules_private_name() -> None:
    known = modules()
    wrong = []
    for module, path in known.items():
        for target, name, line in imports(module, path):
            if (
                name is None
                or not name.startswith("_")
                or name.startswith("__")
                or ours(target, known) is None
            ):
                continue
            if f"{target}.{name}" in known:
                continue  # a private module, imported as a module
            wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: from {target} import {name}")
    assert wrong == []


def test_no_module_reads_another_modules_private_name() -> None:
    """``module._name`` where ``module`` is one of ours, imported as a module."""
    known = modules()
    wrong = []
    for module, path in known.items():
        tree = ast.parse(path.read_text())
        aliases: dict[str, str] = {}  # a name in this module -> the module of ours it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = resolve(module, path, node)
                for alias in node.names:
                    if f"{target}.{alias.name}" in known:
                        aliases[alias.asname or alias.name] = f"{target}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in known and alias.asname:
                        aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and f"{aliases[node.value.id]}.{node.attr}" not in known
            ):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value.id}.{node.attr}")
    assert wrong == []


def test_no_import_cycles() -> None:
    """Between modules, counting every import that runs (at the top of a module or inside a function);
    an import under ``TYPE_CHECKING`` only names a type and never runs."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        for target, name, _ in imports(module, path, executed_only=True):
            dep = ours(f"{target}.{name}" if name else target, known) or ours(target, known)
            own_package = module == "tracebridge" or module.startswith(f"{dep}.")  # (its own parts)
            if dep is not None and dep not in GENERATED and dep != module and not own_package:
                graph.setdefault(module, set()).add(dep)

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    return path
                if nxt not in path:
                    stack.append((nxt, [*path, nxt]))
        return None

    cycles = {tuple(sorted(c)) for m in graph if (c := cycle_from(m))}
    assert cycles == set()
