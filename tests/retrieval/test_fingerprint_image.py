"""Query images: PNG, DICOM and NIfTI loading, sizing, and the search_similar image path."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from medsae.data.query_image import fit_to_size, read_query_image
from medsae.errors import InputError
from medsae.retrieval.index import search_similar
from medsae.sae import run_models
from medsae.sae.codes_io import load_codes
from medsae.workspace import Workspace
from tests.support.synthetic import make_synthetic_workspace


def load(
    image: Path | np.ndarray, plane: str | None = None, index: int | None = None
) -> np.ndarray:
    """The query's uint8 image at its own size."""
    return read_query_image(image, plane=plane, index=index).image


def test_png_and_array_inputs(tmp_path: Path) -> None:
    img = (np.arange(20 * 30) % 256).astype(np.uint8).reshape(20, 30)
    Image.fromarray(img).save(tmp_path / "q.png")
    np.testing.assert_array_equal(load(tmp_path / "q.png"), img)
    np.testing.assert_array_equal(load(img), img)
    floats = load(np.linspace(-1000, 1000, 100).reshape(10, 10))
    assert floats.dtype == np.uint8 and floats.min() == 0 and floats.max() == 255
    with pytest.raises(InputError, match="not found"):
        load(tmp_path / "missing.png")


def test_dicom_input_is_rescaled_and_windowed() -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    img = load(path)
    assert img.dtype == np.uint8 and img.ndim == 2
    assert img.std() > 5  # real anatomy, not a constant image


def test_nifti_volume_needs_plane_and_index(tmp_path: Path) -> None:
    vol = np.zeros((8, 10, 12), dtype=np.float32)
    vol[:, :, 5] = np.arange(8)[:, None] * 10.0  # axial slice 5 varies along R-L
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), path)
    axial = load(path, "axial", 5)
    assert axial.shape == (10, 8)  # rows: A->P (j), cols: R->L (i)
    assert axial[0, 0] > axial[0, -1]  # patient right (high i) on image left
    with pytest.raises(InputError, match="plane"):
        load(path)
    with pytest.raises(InputError, match="out of range"):
        load(path, "axial", 99)


def test_fit_to_workspace_pads_resizes_and_adds_channels() -> None:
    img = np.full((10, 20), 200, dtype=np.uint8)
    out = fit_to_size(img, 32)
    assert out.shape == (32, 32)
    assert out[0, 16] == 0 and out[16, 16] == 200  # padded above and below, content centred
    assert fit_to_size(img, 16, channels=3).shape == (16, 16, 3)


def test_search_by_image_runs_encoder_and_sae(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, truth = make_synthetic_workspace(tmp_path, n_subjects=9, slices_per_plane=4)
    codes = load_codes(ws.codes(truth.encoder, truth.run))
    row = 5
    seen: dict[str, object] = {}

    class FakeEncoder:
        def encode(self, images: np.ndarray) -> np.ndarray:
            seen["shape"] = images.shape[1:]
            return np.ones((len(images), truth.dim), dtype=np.float32)

    class FakeSAE:
        def encode(self, x: torch.Tensor) -> torch.Tensor:
            return torch.as_tensor(codes[row].toarray()).float().expand(len(x), -1)

    def fake_encoder(ws_: Workspace, encoder: str, device: str) -> FakeEncoder:
        seen["folder"] = ws_.embeddings(encoder)
        return FakeEncoder()

    def fake_sae(ws_: Workspace, encoder: str, run: str) -> FakeSAE:
        seen["sae"] = ws_.sae(encoder, run)
        return FakeSAE()

    monkeypatch.setattr(run_models, "load_run_encoder", fake_encoder)
    monkeypatch.setattr(run_models, "load_run_sae", fake_sae)
    img = np.random.default_rng(0).integers(0, 255, size=(50, 40)).astype(np.uint8)
    res = search_similar(ws, image=img, k=5, n=3)
    assert seen["shape"] == (32, 32)  # the workspace's image size
    assert seen["folder"] == ws.embeddings(truth.encoder)
    assert seen["sae"] == ws.sae(truth.encoder, truth.run)
    # a new image excludes nobody: the slice whose codes it has is the best match
    assert res["row"].iloc[0] == row and res["score"].iloc[0] == pytest.approx(1.0)
