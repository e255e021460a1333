from __future__ import annotations

import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from medsae.frontend.search import SearchHits, WorkspaceSearch
from medsae.frontend.view import WorkspaceView
from medsae.serve import create_app


class FakeImageSearch(WorkspaceSearch):
    """The workspace search with a stand-in image encoder: codes = those of a fixed slice."""

    def encode_image(self, image: np.ndarray) -> np.ndarray:
        self.seen = image
        return np.asarray(self.view.codes[0].toarray()).ravel()


@pytest.fixture(scope="module")
def client(full_workspace) -> TestClient:
    ws, _ = full_workspace
    view = WorkspaceView(ws.root)
    backend = FakeImageSearch(view, use_interpret=False)
    c = TestClient(create_app(view, backend=backend, upload_limit=1_000_000))
    c.backend = backend  # type: ignore[attr-defined]
    return c


def _png(shape=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)).save(
        buf, "PNG"
    )
    return buf.getvalue()


def test_info_and_openapi(client):
    info = client.get("/api/info").json()
    assert info["n_slices"] == 12 * 3 * 8 and info["n_latents"] == 128
    assert info["counts"]["modality"] == {"CT": 192, "MR": 96}
    schema = client.get("/openapi.json").json()
    for path in (
        "/api/features",
        "/api/features/{latent}",
        "/api/slices/{slice_id}",
        "/api/search",
        "/api/search/image",
    ):
        assert path in schema["paths"]
    assert "FeatureDetailOut" in schema["components"]["schemas"]


def test_features_sort_filter_page(client, full_workspace):
    _, truth = full_workspace
    r = client.get(
        "/api/features", params={"sort": "frequency", "order": "desc", "limit": 5}
    ).json()
    freqs = [f["frequency"] for f in r["items"]]
    assert freqs == sorted(freqs, reverse=True) and len(freqs) == 5
    r = client.get("/api/features", params={"concept": "plane=axial"}).json()
    assert [f["latent"] for f in r["items"]] == [truth.concepts.index("plane=axial")]
    r = client.get("/api/features", params={"q": "liver"}).json()
    assert r["total"] == 1 and "liver" in r["items"][0]["description"]
    r = client.get("/api/features", params={"min_score": 0.9}).json()
    assert r["total"] == len(truth.concepts)
    r2 = client.get(
        "/api/features", params={"offset": 5, "limit": 5, "sort": "latent", "order": "asc"}
    ).json()
    assert [f["latent"] for f in r2["items"]] == [5, 6, 7, 8, 9]
    assert client.get("/api/features", params={"sort": "nope"}).status_code == 422


def test_feature_detail(client, full_workspace):
    _, truth = full_workspace
    latent = truth.concepts.index("modality=MR")
    d = client.get(f"/api/features/{latent}").json()
    assert d["feature"]["concept"] == "modality=MR"
    assert d["top"] and all(s["modality"] == "MR" for s in d["top"])
    assert sum(d["histogram"]["counts"]) + d["histogram"]["zeros"] == 288
    assert "modality=MR" in [e["label"] for e in d["enrichment"]]
    assert len(d["quantiles"]) == 5
    img = client.get(d["top"][0]["image_url"])
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(img.content)).size == (32, 32)


def test_slice_similar_and_search(client):
    sid = "CT:s0001:axial:0003"
    d = client.get(f"/api/slices/{sid}").json()
    assert d["metadata"]["slice_id"] == sid and d["fingerprint"]
    acts = [f["activation"] for f in d["fingerprint"]]
    assert acts == sorted(acts, reverse=True)
    sim = client.get(f"/api/slices/{sid}/similar", params={"k": 5}).json()
    assert 0 < len(sim["items"]) <= 5
    assert all(s["subject_key"] != "CT:s0001" for s in sim["items"])  # own subject excluded
    res = client.get("/api/search", params={"q": "sagittal plane", "k": 6}).json()
    assert res["items"] and all(s["plane"] == "sagittal" for s in res["items"])
    assert client.get(res["items"][0]["image_url"]).status_code == 200
    assert (
        client.get("/api/slices/CT:s0001:axial:0003/image.png", params={"size": 64}).headers[
            "content-type"
        ]
        == "image/png"
    )


@pytest.mark.parametrize(
    "path",
    [
        "/api/features/99999",
        "/api/features/-3",
        "/api/features/abc",
        "/api/slices/nope",
        "/api/slices/nope/image.png",
        "/api/slices/nope/similar",
        "/api/slices/..%2F..%2F..%2Fetc%2Fpasswd/image.png",
        "/api/slices/%2e%2e%2fslices.parquet/image.png",
        "/api/slices/..%252F..%252Fetc%252Fpasswd",
        "/static/..%2F..%2Fapp.py",
        "/static/%2e%2e/app.py",
        "/static/../serve/app.py",
        "/static/app.py",
    ],
)
def test_not_found_and_traversal(client, path):
    r = client.get(path)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/json")
    assert "detail" in r.json()
    assert b"import" not in r.content and b"root:" not in r.content


def test_upload_png_dicom_nifti(client):
    r = client.post(
        "/api/search/image", files={"file": ("a.png", _png(), "image/png")}, params={"k": 4}
    )
    assert r.status_code == 200, r.text
    assert r.json()["upload_kind"] == "png" and r.json()["items"]
    assert client.backend.seen.shape == (32, 32)  # decoded to the workspace's image size

    from pydicom.data import get_testdata_file

    dcm = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    r = client.post("/api/search/image", files={"file": ("ct.dcm", dcm, "application/dicom")})
    assert r.status_code == 200, r.text
    assert r.json()["upload_kind"] == "dicom"

    vol = np.random.default_rng(1).normal(100, 20, (20, 24, 6)).astype(np.float32)
    raw = nib.Nifti1Image(vol, np.eye(4)).to_bytes()
    for payload in (raw, gzip.compress(raw)):
        r = client.post(
            "/api/search/image", files={"file": ("v.nii.gz", payload, "application/octet-stream")}
        )
        assert r.status_code == 200, r.text
        assert r.json()["upload_kind"] == "nifti"
        assert client.backend.seen.dtype == np.uint8 and client.backend.seen.max() > 0


def test_upload_errors(client):
    r = client.post("/api/search/image", files={"file": ("a.txt", b"just text", "text/plain")})
    assert r.status_code == 415 and "unsupported file type" in r.json()["detail"]
    r = client.post(
        "/api/search/image",
        files={"file": ("a.png", b"\x89PNG\r\n\x1a\n" + b"0" * 50, "image/png")},
    )
    assert r.status_code == 400 and "a.png" in r.json()["detail"]
    r = client.post("/api/search/image", files={"file": ("a.png", b"", "image/png")})
    assert r.status_code == 400
    r = client.post(
        "/api/search/image", files={"file": ("big.png", b"\x89PNG" + b"0" * 1_200_000, "image/png")}
    )
    assert r.status_code == 413 and r.headers["content-type"].startswith("application/json")
    r = client.post(
        "/api/search/image",
        files={"file": ("x.gz", gzip.compress(b"not nifti" * 100), "application/gzip")},
    )
    assert r.status_code == 415


def test_streamed_oversize_body_is_refused(client):
    def chunks():
        for _ in range(40):
            yield b"0" * 50_000

    r = client.post(
        "/api/search/image",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert r.status_code == 413


def test_image_search_unavailable_is_503(full_workspace):
    ws, _ = full_workspace
    view = WorkspaceView(ws.root)
    c = TestClient(create_app(view, backend=WorkspaceSearch(view, use_interpret=False)))
    r = c.post("/api/search/image", files={"file": ("a.png", _png(), "image/png")})
    assert r.status_code == 503 and "synthetic" in r.json()["detail"]


def test_static_page_has_no_external_resources(client):
    html = client.get("/").text
    js = client.get("/static/app.js").text
    css = client.get("/static/style.css").text
    for text in (html, js, css):
        assert "http://" not in text and "https://" not in text
    assert client.get("/docs").status_code == 404  # the interactive docs page would load a CDN


def test_keyword_fallback_reports_method(full_workspace):
    ws, _ = full_workspace
    view = WorkspaceView(ws.root)
    hits: SearchHits = WorkspaceSearch(view, use_interpret=False).text("liver", 5)
    assert hits.method == "keyword" and hits.rows
    assert all(view.anatomy.column("liver")[r] == 1 for r in hits.rows)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"sort": "frequency", "order": "asc", "limit": 7, "offset": 3},
        {"sort": "max_activation", "order": "desc", "alive_only": False, "limit": 200},
        {"q": "axial", "sort": "latent", "order": "desc"},
        {"min_score": 0.5, "min_frequency": 0.01, "sort": "detection_balanced_accuracy"},
        {"level": 32, "sort": "mean_activation"},
        {"concept": "plane=axial"},
    ],
)
def test_feature_list_equals_the_whole_table_reading(client, params):
    """The list route filters and sorts positions; the answer is the one the plain pandas
    reading of the feature table gives (filter the frame, stable sort, page)."""
    df = client.backend.view.feature_table
    p = {"sort": "frequency", "order": "desc", "alive_only": True, "offset": 0, "limit": 100}
    p.update(params)
    if p["alive_only"]:
        df = df[df["frequency"] > 0]
    if "q" in p:
        text = " " + df["description"].fillna("").astype(str) + " " + df["concept"].fillna("")
        df = df[text.str.contains(p["q"], case=False, regex=False)]
    if "concept" in p:
        df = df[df["concept"] == p["concept"]]
    if "level" in p:
        df = df[df["level"] == p["level"]]
    if "min_score" in p:
        df = df[df["detection_balanced_accuracy"] >= p["min_score"]]
    if "min_frequency" in p:
        df = df[df["frequency"] >= p["min_frequency"]]
    df = df.sort_values(p["sort"], ascending=p["order"] == "asc", kind="stable")
    want = [int(j) for j in df["latent"].iloc[p["offset"] : p["offset"] + p["limit"]]]
    got = client.get("/api/features", params=p).json()
    assert got["total"] == len(df)
    assert [f["latent"] for f in got["items"]] == want


def test_feature_rows_equal_the_tables_cells(client):
    view = client.backend.view
    df = view.feature_table
    for latent in (0, 5, len(df) - 1):
        row = view.feature_row(latent)
        assert list(row) == [str(c) for c in df.columns]
        for col in df.columns:
            cell = df[col].iloc[latent]
            if isinstance(cell, float) and np.isnan(cell):
                assert row[col] is None
            elif np.ndim(cell) == 0 and not isinstance(cell, (list, dict)):
                assert row[col] == (cell.item() if hasattr(cell, "item") else cell)
