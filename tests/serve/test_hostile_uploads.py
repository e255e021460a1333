"""Uploads bounded by what they decode to, and safe from many threads at once.

Each bomb (a small file declaring a huge image) is refused with a JSON 413 naming the limit
and the value, while this process's resident memory grows by less than 200 MB; a large
valid upload within the limits still works; concurrent uploads through one encoder give
each request its own sequential answer.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from medsae.frontend.view import WorkspaceView
from medsae.serve import create_app
from tests.rss import peak_rss_growth
from tests.serve.test_api import FakeImageSearch

MB = 1024 * 1024


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_of_zeros(width: int, height: int) -> bytes:
    """A valid grayscale PNG of ``width x height`` black pixels, built without holding them."""
    z = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte and the row
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def gzip_of_zeros(total_mb: int) -> bytes:
    """``total_mb`` MiB of zeros as concatenated gzip members (one per MiB): about 1 kB each."""
    return gzip.compress(b"\x00" * MB, compresslevel=9) * total_mb


def nifti_header_only(shape: tuple[int, ...], pad: int = 255_000) -> bytes:
    """A NIfTI-1 header declaring ``shape`` float32 voxels, followed by ``pad`` zero bytes."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    return header.binaryblock + b"\x00" * (4 + pad)


def dicom_declaring(rows: int, cols: int) -> bytes:
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Rows, ds.Columns = rows, cols
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(full_workspace) -> TestClient:
    ws, _ = full_workspace
    view = WorkspaceView(ws.root)
    return TestClient(create_app(view, backend=FakeImageSearch(view, use_interpret=False)))


BOMBS = {
    "gzip of 600 MiB zeros": (lambda: gzip_of_zeros(600), None),
    "NIfTI header of 512x512x1000": (lambda: nifti_header_only((512, 512, 1000)), "max_voxels"),
    "gzip NIfTI header of 512x512x1000": (
        lambda: gzip.compress(nifti_header_only((512, 512, 1000))),
        "max_voxels",
    ),
    "PNG of 12000x12000": (lambda: png_of_zeros(12_000, 12_000), "max_pixels"),
    "PNG beyond Pillow's bomb limit": (lambda: png_of_zeros(20_000, 20_000), "max_pixels"),
    "DICOM declaring 60000x60000": (lambda: dicom_declaring(60_000, 60_000), "max_pixels"),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_each_bomb_is_refused_by_name_within_memory(client: TestClient, name: str) -> None:
    make, limit = BOMBS[name]
    payload = make()
    assert len(payload) < 20 * MB
    with peak_rss_growth() as growth:
        r = client.post("/api/search/image", files={"file": ("bomb.bin", payload)})
    assert r.headers["content-type"] == "application/json", r.text
    body = r.json()
    if limit is None:  # zeros are no NIfTI: refused after its first bytes, as unsupported
        assert r.status_code == 415 and "bomb.bin" in body["detail"], body
    else:
        assert r.status_code == 413, body
        assert body["limit"] == limit and body["value"] > body["allowed"], body
        assert limit in body["detail"] and "bomb.bin" in body["detail"]
    assert growth.bytes < 200 * MB, f"{name}: resident memory grew {growth.bytes / MB:.0f} MB"


def test_gzip_nifti_with_a_bomb_after_its_volume_stops_at_the_volume(client: TestClient) -> None:
    """A valid small volume followed by a gigabyte of compressed zeros: only the declared
    bytes are decompressed, the search answers."""
    vol = nib.Nifti1Image(np.random.default_rng(0).random((24, 24, 8), np.float32), np.eye(4))
    payload = gzip.compress(vol.to_bytes()) + gzip_of_zeros(1000)
    with peak_rss_growth() as growth:
        r = client.post("/api/search/image", files={"file": ("v.nii.gz", payload)})
    assert r.status_code == 200 and r.json()["upload_kind"] == "nifti", r.text
    assert growth.bytes < 200 * MB


def test_declared_limits_are_settings(full_workspace) -> None:
    from medsae.data.query_limits import QueryLimits

    ws, _ = full_workspace
    view = WorkspaceView(ws.root)
    small = TestClient(
        create_app(
            view,
            backend=FakeImageSearch(view, use_interpret=False),
            query_limits=QueryLimits(max_pixels=100),
        )
    )
    r = small.post("/api/search/image", files={"file": ("a.png", png_of_zeros(20, 20))})
    assert r.status_code == 413
    assert (r.json()["limit"], r.json()["value"], r.json()["allowed"]) == ("max_pixels", 400, 100)


def test_large_valid_uploads_within_the_limits_work(client: TestClient) -> None:
    big = io.BytesIO()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (3000, 2500), dtype=np.uint8)).save(big, "PNG")
    r = client.post("/api/search/image", files={"file": ("big.png", big.getvalue())})
    assert r.status_code == 200 and r.json()["upload_kind"] == "png", r.text
    vol = nib.Nifti1Image(rng.integers(-1000, 1000, (256, 256, 120), np.int16), np.eye(4))
    payload = gzip.compress(vol.to_bytes(), compresslevel=1)
    r = client.post("/api/search/image", files={"file": ("ct.nii.gz", payload)})
    assert r.status_code == 200 and r.json()["upload_kind"] == "nifti", r.text


def test_truncated_nifti_is_a_named_400(client: TestClient) -> None:
    vol = nib.Nifti1Image(np.zeros((32, 32, 16), np.float32), np.eye(4)).to_bytes()
    r = client.post("/api/search/image", files={"file": ("cut.nii", vol[: len(vol) // 2])})
    assert r.status_code == 400 and "cut.nii" in r.json()["detail"]
    assert "truncated" in r.json()["detail"]


class ProjectionSAE:
    """Stand-in SAE: ReLU of a fixed random projection of the embedding."""

    def __init__(self, dim: int, n_latents: int) -> None:
        rng = np.random.default_rng(0)
        self.w = torch.as_tensor(rng.normal(size=(dim, n_latents)).astype(np.float32))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.w)


def test_concurrent_uploads_through_one_encoder_get_their_own_answers(
    full_workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One real multi-scale EfficientNet shared by the route's threads: every answer equals
    the answer the same image gets alone."""
    from medsae.encode import get_encoder

    ws, truth = full_workspace
    encoder = get_encoder("efficientnet-lite0", device="cpu", input_size=64, pooling="multiscale")
    sae = ProjectionSAE(encoder.dim, truth.n_latents)
    monkeypatch.setattr("medsae.sae.run_models.load_run_encoder", lambda *a: encoder)
    monkeypatch.setattr("medsae.sae.run_models.load_run_sae", lambda *a: sae)
    client = TestClient(create_app(WorkspaceView(ws.root), load_text_model=False, heavy_workers=3))
    rng = np.random.default_rng(2)
    uploads = []
    for i in range(8):
        buf = io.BytesIO()
        yy, xx = np.mgrid[:48, :48]
        disk = (yy - 24) ** 2 + (xx - 10 - 3 * i) ** 2 < (6 + i) ** 2
        img = np.where(disk, 200 - 10 * i, rng.integers(0, 40, (48, 48))).astype(np.uint8)
        Image.fromarray(img).save(buf, "PNG")
        uploads.append(buf.getvalue())

    def ask(payload: bytes) -> tuple[int, Any]:
        r = client.post("/api/search/image", files={"file": ("q.png", payload)})
        return r.status_code, r.json()

    alone = [ask(p) for p in uploads]
    assert all(status == 200 for status, _ in alone), alone[:2]
    assert len({str(a["features"]) for _, a in alone}) > 1  # the images differ in their answers
    with ThreadPoolExecutor(12) as pool:
        together = list(pool.map(ask, uploads * 4))
    for i, answer in enumerate(together):
        assert answer == alone[i % len(uploads)], f"upload {i % len(uploads)} answered wrongly"


def test_busy_server_answers_503_with_retry_after(full_workspace) -> None:
    ws, _ = full_workspace
    view = WorkspaceView(ws.root)
    app = create_app(
        view, backend=FakeImageSearch(view, use_interpret=False), heavy_workers=1, heavy_wait_s=0.05
    )
    client = TestClient(app)
    with app.state.heavy:  # the only turn is taken
        r = client.post("/api/search/image", files={"file": ("a.png", png_of_zeros(20, 20))})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "busy" in r.json()["detail"]
    r = client.post("/api/search/image", files={"file": ("a.png", png_of_zeros(20, 20))})
    assert r.status_code == 200
