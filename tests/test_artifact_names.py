"""Every artifact file name is defined once, in the ``io`` module of the stage that owns it.

Other modules import the constant (``from medsae.evaluate.io import RANKING``), so that a
renamed file cannot leave a reader behind. The check reads the source: every string literal
of src/medsae that is a bare file name with an artifact's extension must stand exactly once,
in an ``io.py`` (or in workspace.py, which owns the manifest).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import medsae

SRC = Path(medsae.__file__).parent
FILE_NAME = re.compile(r"^[\w.+-]+\.(json|jsonl|parquet|npy|npz|csv|png|html|md|safetensors)$")
OWNERS = {"io.py", "workspace.py"}
# names of inputs that are not medsae's artifacts: formats read from other tools and files a
# test server writes for its caller
NOT_ARTIFACTS = {
    "meta.csv",  # TotalSegmentator's metadata table (an input)
    "metadata.csv",  # a NIfTI folder's metadata table and label file (inputs)
    "metadata.parquet",
    "labels.json",
    "config.json",  # a local DINOv3 model folder (an input)
    "request.json",  # the fake LLM server's record of a request
    "response.json",
}


def _literals() -> dict[str, list[str]]:
    where: dict[str, list[str]] = defaultdict(list)
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and FILE_NAME.match(node.value)
                and node.value not in NOT_ARTIFACTS
            ):
                where[node.value].append(f"{path.relative_to(SRC)}:{node.lineno}")
    return where


def test_every_artifact_name_is_defined_once_in_an_io_module() -> None:
    where = _literals()
    assert where, "the scan found no artifact names at all"
    problems = {
        name: places
        for name, places in where.items()
        if len(places) != 1 or Path(places[0].split(":")[0]).name not in OWNERS
    }
    assert not problems, "\n".join(f"{n}: {', '.join(p)}" for n, p in sorted(problems.items()))
