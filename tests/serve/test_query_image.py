"""One query-image preprocessing: the same DICOM gives the same image and the same results
through `medsae search --image` and the browser's upload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from medsae.data.query_image import (
    QueryFormat,
    QueryImageError,
    QueryIntensity,
    prepare_query_image,
)


class PixelEncoder:
    """Stand-in encoder: the embedding is the image itself (every encoded image is kept)."""

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def encode(self, images: np.ndarray) -> np.ndarray:
        self.seen.append(np.array(images[0]))
        return images.reshape(len(images), -1).astype(np.float32) / 255.0


class ProjectionSAE:
    """Stand-in SAE: ReLU of a fixed random projection onto the workspace's latents."""

    def __init__(self, dim: int, n_latents: int) -> None:
        rng = np.random.default_rng(0)
        self.w = torch.as_tensor(rng.normal(size=(dim, n_latents)).astype(np.float32))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.w - 0.5)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory):
    from tests.support.synthetic import make_synthetic_workspace

    return make_synthetic_workspace(
        tmp_path_factory.mktemp("ws"), n_subjects=12, slices_per_plane=4
    )


@pytest.fixture()
def models(workspace, monkeypatch: pytest.MonkeyPatch) -> PixelEncoder:
    _ws, truth = workspace
    encoder = PixelEncoder()
    sae = ProjectionSAE(32 * 32, truth.n_latents)
    monkeypatch.setattr("medsae.sae.run_models.load_run_encoder", lambda *a: encoder)
    monkeypatch.setattr("medsae.sae.run_models.load_run_sae", lambda *a: sae)
    return encoder


def _dicom(name: str) -> Path:
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file(name))


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_cli_and_browser_give_the_same_image_and_results(
    workspace, models: PixelEncoder, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    from medsae.cli import app
    from medsae.frontend.view import WorkspaceView
    from medsae.serve import create_app

    ws, _truth = workspace
    path = _dicom(name)
    printed: list[pd.DataFrame] = []
    monkeypatch.setattr("medsae.retrieval.cli._print_results", lambda df, title: printed.append(df))
    res = CliRunner().invoke(app, ["search", "-w", str(ws.root), "--image", str(path), "--n", "6"])
    assert res.exit_code == 0, res.output
    cli_image = models.seen[-1]

    client = TestClient(create_app(WorkspaceView(ws.root), load_text_model=False))
    r = client.post("/api/search/image", params={"k": 6}, files={"file": (name, path.read_bytes())})
    assert r.status_code == 200, r.text
    browser_image = models.seen[-1]

    assert len(models.seen) == 2 and cli_image.shape == (32, 32) and cli_image.std() > 5
    np.testing.assert_array_equal(cli_image, browser_image)
    (cli,) = printed
    answer = r.json()
    assert answer["upload_kind"] == "dicom" and len(answer["items"]) == len(cli) > 0
    assert [i["slice_id"] for i in answer["items"]] == cli["slice_id"].tolist()
    np.testing.assert_allclose([i["score"] for i in answer["items"]], cli["score"], rtol=1e-6)


def test_ct_dicom_is_windowed_as_prepare_windows_the_workspace() -> None:
    """The study description's window, else the default; the three windows when stored."""
    import pydicom

    from medsae.data.intensity import MULTI_WINDOWS, ct_window, to_uint8, window_bounds

    path = _dicom("CT_small.dcm")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    fmt = QueryFormat(hu.shape[0], 1, QueryIntensity(default_window=(50.0, 350.0)))
    (c, w), _known = ct_window(getattr(ds, "StudyDescription", None), (50.0, 350.0))
    expected = to_uint8(hu, *window_bounds(c, w))
    np.testing.assert_array_equal(fmt.prepare(path).image, expected)
    three = QueryFormat(hu.shape[0], 3, QueryIntensity(multi_window=True)).prepare(path).image
    assert three.shape == (*hu.shape, 3)
    np.testing.assert_array_equal(three[..., 2], to_uint8(hu, *window_bounds(*MULTI_WINDOWS[2][1])))


def test_query_format_follows_the_slices_manifest(workspace) -> None:
    ws, _truth = workspace
    fmt = QueryFormat.of_slices(ws.slices)
    assert (fmt.size, fmt.channels) == (32, 1)


@pytest.mark.parametrize(
    ("data", "reason", "message"),
    [
        (b"", "unreadable", "empty"),
        (b"plain text", "unsupported", "unsupported file type"),
        (b"\x89PNG\r\n\x1a\n" + b"0" * 40, "unreadable", "cannot read the image"),
    ],
)
def test_errors_name_the_file_and_say_why(data: bytes, reason: str, message: str) -> None:
    with pytest.raises(QueryImageError, match=message) as info:
        prepare_query_image(data, 32, name="scan.bin")
    assert info.value.reason == reason and str(info.value).startswith("scan.bin: ")


def test_volume_slice_defaults_to_the_middle(tmp_path: Path) -> None:
    import nibabel as nib

    vol = np.zeros((8, 10, 12), dtype=np.float32)
    vol[:, :, 6] = np.arange(8)[:, None] * 10.0 + 5.0
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), path)
    middle: Any = prepare_query_image(path, 16, plane="axial").image
    sixth = prepare_query_image(path, 16, plane="axial", index=6).image
    np.testing.assert_array_equal(middle, sixth)
    assert middle.max() > 0
    with pytest.raises(QueryImageError, match="plane"):
        prepare_query_image(path, 16)
