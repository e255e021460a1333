"""Every shell example and Python snippet in README.md and docs/ runs as written.

The code blocks are found and run by Sybil: ``bash`` blocks in a shell, ``python`` blocks in
one namespace per document, in the order of the document, each document in a sandbox
folder where ``ws``, ``WS`` and ``demo-workspace`` name a fresh copy of a finished demo
workspace (built once per session on a tiny phantom, with the demo's grid so that its run
names exist). A block that needs what CI does not have (model weights, a dataset, a
cluster, an LLM endpoint, the internet, a server that runs until stopped) is marked just
before it with ``<!-- skip: next "the reason" -->``; blocks in other languages (toml, text,
diagrams) are not run. A new document or block is picked up without any change here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import SkipTest

import pytest
from sybil import Sybil
from sybil.evaluators.skip import Skipper
from sybil.example import Example
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
SHELLS = ("bash", "sh", "shell", "console")
SKIP = re.compile(r"<!--\s*skip:\s*(\w+)(.*?)-->")
BLOCK_SECONDS = 1200


def _env() -> dict[str, str]:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)  # the `medsae` command of this environment
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env.update(COLUMNS="200", NO_COLOR="1", MEDSAE_DOCS_TEST="1")
    return env


def run_shell(example: Example) -> str | None:
    """Run a shell block in the document's sandbox; its output is the failure message."""
    script = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n"
    script += str(example.parsed)
    proc = subprocess.run(
        ["bash", "-c", script],
        cwd=example.namespace["sandbox"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=BLOCK_SECONDS,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        return (
            f"exit status {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return None


SYBIL = Sybil(
    parsers=[
        SkipParser(),
        PythonCodeBlockParser(),
        *(CodeBlockParser(language, evaluator=run_shell) for language in SHELLS),
    ],
    path=str(ROOT),
)


def _sandbox(tmp: Path, workspace: Path) -> Path:
    sandbox = tmp / "sandbox"
    sandbox.mkdir()
    shutil.copytree(workspace, sandbox / "ws", symlinks=True)
    for alias in ("WS", "demo-workspace"):
        (sandbox / alias).symlink_to("ws")
    shutil.copytree(ROOT / "examples", sandbox / "examples")  # its paths: ../demo-workspace
    return sandbox


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("document", DOCUMENTS, ids=[str(d.relative_to(ROOT)) for d in DOCUMENTS])
def test_documented_examples_run(
    document: Path, docs_workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = _sandbox(tmp_path, docs_workspace)
    monkeypatch.chdir(sandbox)
    monkeypatch.setenv("COLUMNS", "200")
    parsed = SYBIL.parse(document)
    parsed.namespace["sandbox"] = sandbox
    ran, skipped = [], []
    for example in parsed.examples():
        where = f"{document.relative_to(ROOT)}:{example.line}"
        try:
            example.evaluate()
        except SkipTest as e:
            skipped.append(f"{where}: {e}")
            continue
        if not isinstance(example.region.evaluator, Skipper):
            ran.append(where)
    print(f"ran {len(ran)}: {ran}\nskipped {len(skipped)}: {skipped}")
    if not ran and skipped:
        pytest.skip("; ".join(skipped))


def test_every_skip_names_its_reason() -> None:
    """A skipped example says why (``<!-- skip: next "reason" -->``)."""
    problems = []
    for document in DOCUMENTS:
        for match in SKIP.finditer(document.read_text()):
            action, reason = match.group(1), match.group(2).strip()
            if action in ("next", "start") and not re.fullmatch(r'"[^"]{8,}"', reason):
                problems.append(f"{document.name}: skip: {action} {reason!r}")
    assert not problems, problems


def test_every_runnable_block_is_seen() -> None:
    """Sybil finds every fenced bash and python block of the docs (nothing silently ignored)."""
    for document in DOCUMENTS:
        text = document.read_text()
        fenced = len(re.findall(r"^```(?:bash|sh|shell|console|python)\s*$", text, re.M))
        found = sum(
            1 for e in SYBIL.parse(document).examples() if "skip" not in repr(e.region.evaluator)
        )
        assert found == fenced, document.name
