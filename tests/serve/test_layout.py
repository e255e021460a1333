"""The front ends' layout: who imports the web server, and that report/ and serve/ stay apart."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "medsae"
COMMAND_LINE = {"cli.py", "pipeline_cli.py"}  # commands may start the server


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports (absolute names), at any depth of the file."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _package(path: Path) -> str:
    return path.relative_to(SRC).parts[0] if len(path.relative_to(SRC).parts) > 1 else ""


def _imports(modules: set[str], package: str) -> bool:
    return any(m == package or m.startswith(package + ".") for m in modules)


def test_only_the_server_and_commands_import_the_web_server() -> None:
    offenders = [
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if _package(p) != "serve"
        and p.name not in COMMAND_LINE
        and _imports(imported_modules(p), "medsae.serve")
    ]
    assert offenders == []


@pytest.mark.parametrize(("front", "other"), [("report", "serve"), ("serve", "report")])
def test_report_and_browser_do_not_import_each_other(front: str, other: str) -> None:
    offenders = [
        str(p.relative_to(SRC))
        for p in (SRC / front).rglob("*.py")
        if _imports(imported_modules(p), f"medsae.{other}")
    ]
    assert offenders == []
