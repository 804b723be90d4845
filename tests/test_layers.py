"""The package's shape: each subsystem imports only the layers below it.

Data flows one way (CLI -> config -> session -> engine -> agents -> LLM
client), with audit, checkpoints and observers listening to engine events.
This test pins that order for every import in ``pliny/``, including imports
inside function bodies and under ``TYPE_CHECKING``: an arrow pointing up, or
a circle between modules, fails it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pliny"

# Lowest first. A unit is a subpackage or a top-level module of pliny/.
LAYERS: list[set[str]] = [
    {"redact"},  # the one secret scrubber: every sink (errors, logs, state, audit) uses it
    {"errors", "atomicfile"},
    {"ids"},
    {"logs"},
    {"events"},
    {"usage"},
    {"config"},
    {"framework"},
    {"audit"},
    {"checkpoints"},
    {"llm"},
    {"engine"},
    {"observe"},
    {"distributed"},
    {"lifecycle"},
    {"doctor"},
    {"api"},
    {"web"},
    {"cli"},
    {"__main__"},
]
RANK = {unit: rank for rank, layer in enumerate(LAYERS) for unit in layer}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(rel.parts).removesuffix(".__init__")


def arrows() -> list[tuple[str, str, int]]:
    """(importer, imported module, line) for every pliny import."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = module_name(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "pliny":
                    targets = [f"pliny.{a.name}" for a in node.names]
                elif node.module.startswith("pliny."):
                    targets = [node.module]
                else:
                    continue
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("pliny.")]
            else:
                continue
            found += [(me, t, node.lineno) for t in targets]
    return found


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "pliny"


def test_every_unit_has_a_layer() -> None:
    units = {unit(module_name(p)) for p in PACKAGE.rglob("*.py")} - {"pliny"}
    assert units <= set(RANK), f"place these in LAYERS: {sorted(units - set(RANK))}"


def test_imports_only_point_down() -> None:
    up = []
    for me, target, line in arrows():
        src, dst = unit(me), unit(target)
        if target == "pliny.__version__":
            continue  # the version string: the package root imports nothing eagerly
        if src == "pliny":
            continue  # the public front (pliny/__init__.py) re-exports lazily, from the top
        if src != dst and RANK[dst] > RANK[src]:
            up.append(f"{me}:{line} imports {target} ({src} is below {dst})")
    assert not up, "imports that point up:\n" + "\n".join(up)


def test_no_import_circles_between_modules() -> None:
    graph: dict[str, set[str]] = {}
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    for me, target, _ in arrows():
        if target in modules and target != me:
            graph.setdefault(me, set()).add(target)
    seen: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> None:
        seen[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if seen.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if nxt not in seen:
                visit(nxt)
        stack.pop()
        seen[node] = 2

    for module in sorted(graph):
        if module not in seen:
            visit(module)


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    # Guards the guard: the parser must find function-body imports too.
    code = "def f():\n    from pliny.lifecycle.runner import execute\n"
    tree = ast.parse(code)
    inner = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert [n.module for n in inner] == ["pliny.lifecycle.runner"]
    assert RANK[unit("pliny.lifecycle.runner")] > RANK[unit("pliny.engine.graph")]
