"""The house rules of the package, read from its source: layers, private names, no cycles.

* Every import of one part of ``eo_contrast`` by another (lazy imports inside functions
  included) points down the layers of ``docs/architecture.md``.
* No module imports another module's private (``_name``) names.
* The module-level imports between modules form no cycle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "eo_contrast"

#: The layers, lowest first: a part may import parts of lower layers only (and itself).
LAYERS: list[set[str]] = [
    {"models", "runtime", "_io", "cube", "units", "metrics", "readguard"},
    {"stac", "pairing", "store", "tiling", "datasets"},
    {"corpus"},
    {"inference", "training"},
    {"segmentation"},
    {"accessors", "pipelines"},
    {"eo_contrast"},  # the package's __init__: the public names
]
LAYER = {part: i for i, parts in enumerate(LAYERS) for part in parts}


def _module(path: Path) -> str:
    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _part(module: str) -> str:
    """The part of the package a module belongs to: its sub-package, or the module itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports(tree: ast.AST, *, top_level_only: bool = False) -> list[tuple[int, str, str]]:
    """``(line, module, name)`` of every ``eo_contrast`` import ("" for ``import x``)."""
    nodes = tree.body if top_level_only and isinstance(tree, ast.Module) else ast.walk(tree)
    found = []
    for node in nodes:
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("eo_contrast")
        ):
            for alias in node.names:
                target = node.module
                # `from eo_contrast import store`: a module, when there is one
                if target == "eo_contrast" and (
                    (PACKAGE / alias.name).is_dir() or (PACKAGE / f"{alias.name}.py").is_file()
                ):
                    target = f"eo_contrast.{alias.name}"
                found.append((node.lineno, target, alias.name))
        elif isinstance(node, ast.Import):
            found.extend(
                (node.lineno, a.name, "") for a in node.names if a.name.startswith("eo_contrast")
            )
    return found


SOURCES = {_module(p): ast.parse(p.read_text(encoding="utf-8")) for p in PACKAGE.rglob("*.py")}


def test_every_part_has_a_layer() -> None:
    parts = {_part(m) for m in SOURCES}
    assert parts <= set(LAYER), f"parts without a layer: {sorted(parts - set(LAYER))}"


def test_imports_point_down_the_layers() -> None:
    upward = []
    for module, tree in SOURCES.items():
        for line, target, _ in _imports(tree):
            src, dst = _part(module), _part(target)
            if src != dst and LAYER[dst] >= LAYER[src]:
                upward.append(f"{module}:{line} imports {target} ({src} -> {dst})")
    assert not upward, "\n".join(upward)


def test_no_private_name_crosses_modules() -> None:
    crossing = [
        f"{module}:{line} imports {name} from {target}"
        for module, tree in SOURCES.items()
        for line, target, name in _imports(tree)
        if name.startswith("_") and not name.startswith("__") and target != module
    ]
    assert not crossing, "\n".join(crossing)


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, tree in SOURCES.items():
        for _, target, _ in _imports(tree, top_level_only=True):
            if target in SOURCES and target != module:
                graph[module].add(target)
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(SOURCES):
        if module not in state:
            visit(module, [module])


def test_the_checks_see_a_violation(tmp_path: Path) -> None:
    """The scans find what they look for (a source with each kind of violation)."""
    tree = ast.parse(
        "from eo_contrast.store import _finish\n"
        "def f():\n"
        "    from eo_contrast.pipelines.cli import main\n"
    )
    found = _imports(tree)
    assert (1, "eo_contrast.store", "_finish") in found
    assert (3, "eo_contrast.pipelines.cli", "main") in found
    assert LAYER[_part("eo_contrast.pipelines.cli")] > LAYER[_part("eo_contrast.store")]
    assert _imports(tree, top_level_only=True) == [(1, "eo_contrast.store", "_finish")]
