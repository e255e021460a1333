"""Shared fixtures: a tiny phantom dataset and helpers that write small NIfTI folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medsae.data import PhantomConfig, make_phantom

TINY = PhantomConfig(ct_subjects=3, mri_subjects=2, size_xy=24, n_slices=32, seed=3)


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSAE_PROGRESS", "0")


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny phantom dataset (read-only: copy it before editing)."""
    return make_phantom(tmp_path_factory.mktemp("phantom"), TINY)


@pytest.fixture
def phantom_copy(phantom_root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(phantom_root, dst)
    return dst


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path
