"""The small workspace every documented example runs against (built once per session)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.test_pipeline_demo import TINY

# The tiny sizes of the demo test, but the demo's own grid and encoder options (so that the
# run names and the stores in the docs exist), and few epochs.
DOCS_DEMO: dict[str, dict[str, object]] = {
    **TINY,
    "encode": {"batch_size": 64},  # the demo's options (128 px, multiscale)
    "train": {"epochs": 3, "batch_size": 64, "val_every_epochs": 1},
}


@pytest.fixture(scope="session")
def docs_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished demo workspace on a tiny phantom (every stage, the demo's run names).

    Built once for the whole session: parallel test workers share it through a lock in
    their common temporary folder (the first builds, the others wait and reuse it).
    """
    from filelock import FileLock

    from medsae.pipeline import run_demo

    base = tmp_path_factory.getbasetemp()
    # under xdist every worker's folder sits in the session's folder
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    root = shared / "docs-demo" / "demo"
    with FileLock(str(shared / "docs-demo.lock")):
        if not (root / "report" / "manifest.json").is_file():
            run_demo(root, **DOCS_DEMO)  # type: ignore[arg-type]
    return root
