"""The test support package (``tests/support``) for benchmarks run as scripts.

A benchmark runs as ``python benchmarks/NAME.py``, with ``benchmarks/`` first on the module
path: this puts the repository root there too, so that ``tests.support`` imports.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.fixtures import write_fixture_artifacts  # noqa: E402
from tests.support.synthetic import SyntheticTruth, make_synthetic_workspace  # noqa: E402

__all__ = ["SyntheticTruth", "make_synthetic_workspace", "write_fixture_artifacts"]
