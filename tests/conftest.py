"""Shared fixtures: a synthetic workspace completed with fixture eval/ranking/features/index artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest

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
