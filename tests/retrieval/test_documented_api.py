"""Every ``from medsae... import ...`` in the documentation works, and ``ask`` is the function."""

from __future__ import annotations

import importlib
import importlib.util
import re
import types
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_IMPORT = re.compile(r"from (medsae(?:\.\w+)*) import ")


def documented_imports(text: str) -> list[tuple[str, str]]:
    """(module, name) of every ``from medsae... import a, b`` in a text.

    The names run on after a comma or inside parentheses across line breaks (and the
    backticks of inline code end them), as Python reads them.
    """
    found: list[tuple[str, str]] = []
    for m in _IMPORT.finditer(text):
        rest = text[m.end() :]
        paren = rest.startswith("(")
        rest = rest[1:] if paren else rest
        names: list[str] = []
        pos = 0
        while True:
            word = re.match(r"[ \t]*(?:\n[ \t>]*)?(\w+)(?: as \w+)?[ \t]*", rest[pos:])
            if word is None:
                break
            names.append(word.group(1))
            pos += word.end()
            sep = re.match(r",[ \t]*(?:#[^\n]*)?", rest[pos:])
            if sep is None:
                break
            pos += sep.end()
        found += [(m.group(1), n) for n in names]
    return found


def all_documented() -> list[tuple[str, str, str]]:
    return [(p.name, mod, name) for p in DOCS for mod, name in documented_imports(p.read_text())]


def test_the_parser_reads_single_and_multi_line_imports() -> None:
    text = (
        "```python\nfrom medsae.retrieval import ask, build_index\n\nbuild_index('WS')\n```\n"
        "Library: `from medsae.data import prepare, split,\nPhantomConfig` and more.\n"
        "from medsae.sae import (\n    load_sae,\n    train,\n)\n"
    )
    assert documented_imports(text) == [
        ("medsae.retrieval", "ask"),
        ("medsae.retrieval", "build_index"),
        ("medsae.data", "prepare"),
        ("medsae.data", "split"),
        ("medsae.data", "PhantomConfig"),
        ("medsae.sae", "load_sae"),
        ("medsae.sae", "train"),
    ]


def test_docs_list_the_retrieval_api() -> None:
    names = {name for _doc, mod, name in all_documented() if mod == "medsae.retrieval"}
    assert {"ask", "search_similar", "build_index", "FingerprintIndex"} <= names


@pytest.mark.parametrize(("doc", "module", "name"), all_documented())
def test_every_documented_name_imports(doc: str, module: str, name: str) -> None:
    package = importlib.import_module(module)
    value = getattr(package, name, None)
    assert value is not None, f"{doc}: `from {module} import {name}` fails"
    is_package = hasattr(package, "__path__")
    if not (
        is_package and importlib.util.find_spec(f"{module}.{name}") is not None
    ):  # a documented function or class, never a module shadowing it
        assert not isinstance(value, types.ModuleType), f"{doc}: {module}.{name} is a module"


def test_every_exported_retrieval_name_imports() -> None:
    import medsae.retrieval as retrieval

    for name in retrieval.__all__:
        assert not isinstance(getattr(retrieval, name), types.ModuleType), name


def test_documented_ask_answers_on_a_small_workspace(tmp_path: Path) -> None:
    from medsae.retrieval import AskResult, ask
    from tests.retrieval.test_ask import bag_of_words, write_features
    from tests.support.synthetic import make_synthetic_workspace

    ws, truth = make_synthetic_workspace(tmp_path, n_subjects=9, slices_per_plane=4)
    write_features(ws, truth)
    result = ask(ws, query="sagittal slice", n=3, embedder=bag_of_words())
    assert isinstance(result, AskResult)
    assert result.features[0].latent == truth.concepts.index("plane=sagittal")
    assert 0 < len(result.results) <= 3
    assert set(result.results["plane"]) == {"sagittal"}
    assert np.all(np.diff(result.results["score"].to_numpy()) <= 0)
