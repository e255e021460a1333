"""The import graph of ``src/medsae``: lower stages never import higher ones, no package
cycle, and nothing imports the test support.

Every ``import`` in the package is read from the source (module level and inside functions
alike: a deferred import is still a dependency). A unit is a subpackage (``medsae.sae``) or a
top-level module (``medsae.workspace``); :data:`ALLOWED` lists, for each unit, the units it
may import. A new edge is a decision: it is added here, and only if it points down.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "medsae"

FOUNDATION = {
    *("medsae", "errors", "_lazy", "npy", "jsonsafe", "metrics", "progress", "config", "device"),
    *("artifacts", "atomic", "cli_config", "precision"),
}
"""Units every layer may use: the version, errors, lazy exports, numeric helpers, the JSON
cleaner, metric formulas, progress output, config files, the device setting, the artifact
reading rule, atomic writes and the numerical precision setting."""

LAYERS: list[set[str]] = [
    FOUNDATION,
    {"workspace"},
    {"data"},
    {"labels", "llm", "encode"},
    {"sae"},
    {"evaluate"},
    {"maps"},
    {"interpret"},
    {"retrieval"},
    {"frontend", "pipeline"},
    {"report", "serve", "runs_cli"},
    {"pipeline_cli"},
    {"cli"},
    {"__main__"},
]
"""The stages from bottom to top; an edge must point to a lower layer (or stay in the unit)."""

ALLOWED: dict[str, set[str]] = {
    "medsae": set(),
    "errors": set(),
    "_lazy": set(),
    "npy": set(),
    "jsonsafe": set(),
    "metrics": set(),
    "progress": set(),
    "config": {"errors"},
    "device": {"errors"},
    "precision": set(),
    "artifacts": {"errors"},
    "atomic": {"errors"},
    "cli_config": {"config", "errors"},
    "workspace": {"artifacts", "atomic", "medsae", "config", "errors", "progress"},
    "data": {
        *("artifacts", "atomic", "cli_config", "config", "errors", "npy", "progress"),
        "workspace",
    },
    "labels": {"data", "errors"},
    "llm": {"_lazy", "config", "data", "errors", "progress"},
    "encode": {
        *("artifacts", "cli_config", "config", "data", "device", "errors", "npy", "progress"),
        *("atomic", "workspace"),
    },
    "sae": {
        "artifacts",
        "cli_config",
        "atomic",
        *("_lazy", "config", "data", "device", "encode", "errors", "metrics", "progress"),
        *("precision", "workspace"),
    },
    "evaluate": {
        "artifacts",
        "cli_config",
        *("_lazy", "config", "data", "device", "encode", "errors", "jsonsafe", "labels"),
        *("metrics", "precision", "progress", "sae", "workspace"),
    },
    "maps": {"_lazy", "data", "encode", "errors", "evaluate", "metrics", "sae", "workspace"},
    "interpret": {
        "artifacts",
        "cli_config",
        *("_lazy", "config", "data", "device", "errors", "evaluate", "jsonsafe", "labels"),
        *("llm", "maps", "metrics", "progress", "sae", "workspace"),
    },
    "retrieval": {
        "artifacts",
        "cli_config",
        *("_lazy", "config", "data", "encode", "errors", "evaluate", "interpret", "labels"),
        *("llm", "progress", "sae", "workspace"),
    },
    "frontend": {
        "artifacts",
        *("_lazy", "data", "encode", "errors", "evaluate", "interpret", "jsonsafe", "labels"),
        *("llm", "retrieval", "sae", "workspace"),
    },
    "pipeline": {
        "artifacts",
        *("config", "data", "device", "encode", "errors", "evaluate", "interpret", "progress"),
        *("retrieval", "sae", "workspace"),
    },
    "report": {
        *("_lazy", "config", "data", "device", "encode", "errors", "evaluate", "frontend"),
        "interpret",
        *("maps", "progress", "workspace", "cli_config", "sae"),
    },
    "serve": {"interpret", "medsae", "data", "device", "errors", "frontend", "maps", "progress"},
    "runs_cli": {"data", "errors", "evaluate", "progress", "retrieval", "sae", "workspace"},
    "pipeline_cli": {"config", "pipeline", "progress", "report", "serve", "workspace"},
    "cli": {"cli_config", "medsae", "errors", "progress"},
    "__main__": {"cli"},
}
"""The allowed edges between units (each unit's imports of other units)."""

TEST_SUPPORT = ("tests", "benchmarks")
"""Top-level packages that hold test support: the library never imports them."""


def _unit(module: str) -> str | None:
    """The unit of a module name inside ``medsae`` (None outside)."""
    parts = module.split(".")
    if parts[0] != "medsae":
        return None
    return parts[1] if len(parts) > 1 else "medsae"


def _module_name(path: Path, root: Path = SRC) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, root: Path = SRC) -> Iterator[tuple[str, int]]:
    """(imported module, line) of every import statement of a file, at any depth."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the importing package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target, node.lineno
            for alias in node.names:  # `from medsae import frontend` names a unit too
                if _unit(target) == "medsae" and (root / alias.name).is_dir():
                    yield f"{target}.{alias.name}", node.lineno


def _edges(root: Path = SRC) -> dict[tuple[str, str], list[str]]:
    """(unit, imported unit) -> where, for every import between two units."""
    out: dict[tuple[str, str], list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        unit = _unit(_module_name(path, root))
        assert unit is not None
        for target, line in _imports(path, root):
            other = _unit(target)
            if other is not None and other != unit:
                out.setdefault((unit, other), []).append(f"{path.relative_to(root)}:{line}")
    return out


def _layer(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def test_every_unit_is_placed() -> None:
    units = {_unit(_module_name(p)) for p in SRC.rglob("*.py")}
    placed = set().union(*LAYERS)
    assert units == placed == set(ALLOWED), (units ^ placed) | (units ^ set(ALLOWED))


def test_allowed_edges_point_down() -> None:
    """The list itself has no back-edge: each edge goes to a lower layer (the foundation's
    few edges stay inside it and have no cycle, checked below)."""
    up = [
        (a, b)
        for a, targets in ALLOWED.items()
        for b in targets
        if not (_layer(b) < _layer(a) or _layer(a) == _layer(b) == 0)
    ]
    assert up == []
    _assert_acyclic({a: set(t) for a, t in ALLOWED.items()})


def test_imports_follow_the_allowed_edges() -> None:
    found = _edges()
    extra = {
        edge: where for edge, where in found.items() if edge[1] not in ALLOWED.get(edge[0], set())
    }
    assert extra == {}, "imports outside the allowed edges (a back-edge, or an edge to list)"


def _assert_acyclic(graph: dict[str, set[str]]) -> None:
    state: dict[str, int] = {}

    def visit(unit: str, path: list[str]) -> None:
        state[unit] = 1
        for nxt in sorted(graph.get(unit, ())):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path, unit, nxt]))
            if nxt not in state:
                visit(nxt, [*path, unit])
        state[unit] = 2

    for unit in sorted(graph):
        if unit not in state:
            visit(unit, [])


def test_no_cycle_between_units() -> None:
    graph: dict[str, set[str]] = {}
    for a, b in _edges():
        graph.setdefault(a, set()).add(b)
    _assert_acyclic(graph)


def test_nothing_imports_the_test_support() -> None:
    bad = [
        f"{path.relative_to(SRC)}:{line} imports {target}"
        for path in sorted(SRC.rglob("*.py"))
        for target, line in _imports(path)
        if target.split(".")[0] in TEST_SUPPORT
    ]
    assert bad == []
    assert not (SRC / "testing.py").exists() and not (SRC / "report" / "fixtures.py").exists()


def test_the_scan_sees_function_level_imports(tmp_path: Path) -> None:
    """A deferred import inside a function is an edge too: a back-edge written that way (as
    workspace.py once imported the evaluate stage) is found, and so is a cycle."""
    root = tmp_path / "medsae"
    (root / "evaluate").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "workspace.py").write_text(
        "def best():\n    from medsae.evaluate.io import read_ranking\n    return read_ranking\n"
    )
    (root / "evaluate" / "__init__.py").write_text("")
    (root / "evaluate" / "io.py").write_text("from medsae.workspace import best\n")
    edges = _edges(root)
    assert set(edges) == {("workspace", "evaluate"), ("evaluate", "workspace")}
    assert "evaluate" not in ALLOWED["workspace"]
    with pytest.raises(pytest.fail.Exception, match="import cycle"):
        _assert_acyclic({"workspace": {"evaluate"}, "evaluate": {"workspace"}})
