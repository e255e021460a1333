"""Shared fixtures: a synthetic workspace completed with fixture eval/ranking/features/index
artifacts; the device every test runs on.

Tests compare against figures computed on the CPU (bit-identical resume, codes equal to the
CPU's), so ``auto`` means the CPU here, also on a machine with a GPU (``$MEDSAE_DEVICE``,
inherited by the commands the tests start). Tests that need CUDA say ``device="cuda"`` and
carry the ``cuda`` marker: they are skipped where no CUDA device is present.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from medsae.device import DEVICE_ENV

os.environ[DEVICE_ENV] = "cpu"

from medsae.workspace import Workspace
from tests.support.fixtures import write_fixture_artifacts
from tests.support.synthetic import SyntheticTruth, make_synthetic_workspace


@pytest.fixture(scope="session")
def full_workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, SyntheticTruth]:
    root = Path(tmp_path_factory.mktemp("report-ws"))
    ws, truth = make_synthetic_workspace(root, n_subjects=12, slices_per_plane=8)
    write_fixture_artifacts(ws, truth)
    return ws, truth


@pytest.fixture()
def bare_workspace(tmp_path: Path) -> tuple[Workspace, SyntheticTruth]:
    """Slices, split, embeddings and codes only: no eval, ranking, features or index."""
    return make_synthetic_workspace(tmp_path / "bare", n_subjects=6, slices_per_plane=4)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_run_models() -> Iterator[None]:
    """Each test loads (or fakes) the run models it uses: none is left in the process cache."""
    from medsae.sae.run_models import clear_run_models

    clear_run_models()
    yield
    clear_run_models()
