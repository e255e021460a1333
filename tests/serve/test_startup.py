"""The browser answers its first page before the slice table and the codes are open, and
what it answers from the cheap reads equals what the full tables give."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

import medsae.frontend.search as service
import medsae.frontend.view as view_module
import medsae.llm.embed as embed
from medsae.errors import ArtifactError
from medsae.frontend.parts import once
from medsae.frontend.search import WorkspaceSearch
from medsae.frontend.view import WorkspaceView
from medsae.labels.table import build_label_table
from medsae.llm.embed import TextEmbedder
from medsae.sae.codes_io import latent_stats, load_codes, load_latent_stats
from medsae.sae.io import CODES_STATS
from medsae.serve import create_app


def test_first_page_answers_before_the_slice_table_is_read(full_workspace, monkeypatch):
    ws, truth = full_workspace
    release = threading.Event()
    original = view_module.read_slices

    def slow_read_slices(folder: Path) -> pd.DataFrame:
        release.wait(timeout=20)  # the table of a million slices, still being read
        return original(folder)

    monkeypatch.setattr(view_module, "read_slices", slow_read_slices)
    try:
        view = WorkspaceView(ws.root)
        app = create_app(view, backend=WorkspaceSearch(view, use_interpret=False))
        with TestClient(app) as client:
            t0 = time.perf_counter()
            assert client.get("/").status_code == 200
            info = client.get("/api/info").json()
            page = client.get("/api/features", params={"limit": 50}).json()
            assert time.perf_counter() - t0 < 10
            assert "table" not in view.__dict__  # answered without the slice table
            assert "codes" not in view.__dict__  # ... and without the codes
            release.set()
            sid = view.table["slice_id"].iloc[5]
            assert client.get(f"/api/slices/{sid}").status_code == 200
    finally:
        release.set()
    # the same answers as a view whose table and codes are open
    full = WorkspaceView(ws.root)
    _ = (full.table, full.codes)
    expected = {
        col: {str(k): int(v) for k, v in full.table[col].value_counts().items()}
        for col in ("modality", "plane", "split")
    }
    assert info["counts"] == expected
    assert info["n_slices"] == len(full.table) and info["n_latents"] == truth.n_latents
    ft = full.feature_table
    freq = dict(zip(ft["latent"], ft["frequency"], strict=True))
    assert page["total"] == int((ft["frequency"] > 0).sum())
    assert all(item["frequency"] == pytest.approx(freq[item["latent"]]) for item in page["items"])


def test_counts_from_columns_equal_counts_from_the_table(full_workspace):
    ws, _ = full_workspace
    light = WorkspaceView(ws.root)
    counts, n = light.counts, light.n_slices
    assert "table" not in light.__dict__
    full = WorkspaceView(ws.root)
    _ = full.table
    assert counts == full.counts and n == full.n_slices == len(full.table)
    assert sum(counts["split"].values()) == n  # every slice's subject has a split


def test_stored_latent_stats_equal_the_codes_and_the_fallback(full_workspace, tmp_path):
    ws, _ = full_workspace
    view = WorkspaceView(ws.root)
    folder = ws.codes(view.encoder, view.run)
    codes = load_codes(folder)
    stored = load_latent_stats(folder, codes.shape[1])
    assert stored is not None
    csc = codes.tocsc()
    np.testing.assert_array_equal(stored["nnz"], np.diff(csc.indptr))
    np.testing.assert_allclose(
        stored["sum"], np.asarray(csc.sum(axis=0), np.float64).ravel(), rtol=1e-5
    )
    np.testing.assert_array_equal(stored["max"], csc.max(axis=0).toarray().ravel())
    for key, value in latent_stats(codes).items():
        np.testing.assert_array_equal(value, stored[key])
    assert load_latent_stats(folder, codes.shape[1] + 1) is None  # another run's shape

    # codes written before the statistics file existed: computed from the codes
    copy = tmp_path / "ws"
    shutil.copytree(ws.root, copy)
    (copy / folder.relative_to(ws.root) / CODES_STATS).unlink()
    old = WorkspaceView(copy)
    pd.testing.assert_frame_equal(old.feature_table, view.feature_table)


def _enrichment_brute_force(view: WorkspaceView, latent: int, top=10, min_count=3, min_support=0.1):
    """Every label's lift over the label table's dense masks of every slice (the definition,
    slowly): its value labels (metadata, study and acquisition) and its structures."""
    rows, _ = view.activations(latent)
    active = np.zeros(len(view.table), dtype=bool)
    active[rows] = True
    min_count = max(min_count, int(np.ceil(min_support * len(rows))))
    table = build_label_table(view.table, None, geometry=False)
    labels = [(n, table.values[:, i], table.defined[:, i]) for i, n in enumerate(table.names)]
    presence = np.asarray(view.anatomy.presence)
    for j, name in enumerate(view.anatomy.structures):
        labels.append((f"structure={name}", presence[:, j] == 1, presence[:, j] != -1))
    out = []
    for label, has, defined in labels:
        c_act = int((has & active).sum())
        if c_act < min_count:
            continue
        rate_active = c_act / max(int((active & defined).sum()), 1)
        rate_all = int(has.sum()) / max(int(defined.sum()), 1)
        lift = rate_active / rate_all if rate_all > 0 else 0.0
        out.append(
            {
                "label": label,
                "count_active": c_act,
                "rate_active": rate_active,
                "rate_all": rate_all,
                "lift": lift,
            }
        )
    out.sort(key=lambda d: (-d["lift"], -d["count_active"], d["label"]))
    return out[:top]


def test_enrichment_reads_only_active_rows_and_equals_the_definition(full_workspace):
    ws, _ = full_workspace
    view = WorkspaceView(ws.root)
    alive = np.flatnonzero(np.diff(view.codes_csc.indptr) > 0)
    assert len(alive) > 5
    for latent in alive[:: max(len(alive) // 12, 1)]:
        got = view.enrichment(int(latent))
        want = _enrichment_brute_force(view, int(latent))
        assert [d["label"] for d in got] == [d["label"] for d in want]
        for g, w in zip(got, want, strict=True):
            assert g["count_active"] == w["count_active"]
            for key in ("rate_active", "rate_all", "lift"):
                assert g[key] == pytest.approx(w[key])


@pytest.mark.parametrize("described", [True, False])
def test_text_mode_is_known_before_the_retriever_is_built(
    full_workspace, tmp_path, monkeypatch, described
):
    ws, _ = full_workspace
    root = ws.root
    if not described:  # a features table without usable descriptions
        root = tmp_path / "ws"
        shutil.copytree(ws.root, root)
        view = WorkspaceView(root)
        path = view.ws.features(view.encoder, view.run) / "features.parquet"
        table = pd.read_parquet(path)
        table["description"] = ""
        table.to_parquet(path)
    view = WorkspaceView(root)
    search = WorkspaceSearch(view)
    predicted = search.text_mode()
    assert search._retriever is service._UNSET  # decided without building the retriever
    # build it with a stand-in embedder (no model weights): the prediction must hold
    rng = np.random.default_rng(0)
    monkeypatch.setattr(
        embed, "_shared", TextEmbedder(lambda texts: rng.normal(size=(len(texts), 8)), "random")
    )
    built = "interpret" if search.text_ready() else "keyword"
    assert predicted == built == ("interpret" if described else "keyword")
    assert search.text_mode() == built


def test_once_computes_once_under_concurrent_access():
    calls = []

    class Slow:
        @once
        def value(self) -> int:
            calls.append(1)
            time.sleep(0.05)
            return len(calls)

    obj = Slow()
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(obj.value)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [1] * 8 and len(calls) == 1
    assert Slow().value == 2 and len(calls) == 2  # per instance


def test_text_ready_loads_the_sentence_embedder(full_workspace, monkeypatch):
    """The browser's warm-up loads the model, so the first text search does not."""
    ws, _ = full_workspace
    warmed: list[str] = []

    class Recording(TextEmbedder):
        def warm(self) -> None:
            warmed.append(self.name)

    monkeypatch.setattr(
        embed, "_shared", Recording(lambda texts: np.ones((len(texts), 4)), "recording")
    )
    search = WorkspaceSearch(WorkspaceView(ws.root))
    assert search.text_ready() and warmed == ["recording"]


@pytest.mark.parametrize("damaged", ["slices", "codes"])
def test_a_damaged_slice_table_or_codes_file_is_named_at_start(full_workspace, tmp_path, damaged):
    """The browser opens its large parts after it listens; a damaged one is still refused at
    start, by name, from the file's footer or archive directory alone."""
    ws, _ = full_workspace
    root = tmp_path / "ws"
    shutil.copytree(ws.root, root)
    view = WorkspaceView(root)
    path = (
        view.ws.slices / "slices.parquet"
        if damaged == "slices"
        else view.ws.codes(view.encoder, view.run) / "codes.npz"
    )
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ArtifactError) as err:
        WorkspaceView(root)
    fix = "medsae prepare --force" if damaged == "slices" else "medsae codes --force"
    assert str(path) in str(err.value) and fix in str(err.value)
    path.write_bytes(good)  # nothing else was touched: the restored file opens again
    assert WorkspaceView(root).n_slices == len(view.table)


def test_a_part_damaged_after_start_answers_with_its_file_name(full_workspace, tmp_path):
    ws, _ = full_workspace
    root = tmp_path / "ws"
    shutil.copytree(ws.root, root)
    view = WorkspaceView(root)
    app = create_app(view, backend=WorkspaceSearch(view, use_interpret=False))
    with TestClient(app) as client:
        assert client.get("/api/info").status_code == 200
        for thread in threading.enumerate():  # the warm-up has opened what it opens
            if thread.name == "medsae-serve-warm-up":
                thread.join(timeout=60)
        view.__dict__.pop("codes_csc", None)
        view.__dict__.pop("codes", None)
        path = view.ws.codes(view.encoder, view.run) / "codes.npz"
        path.write_bytes(path.read_bytes()[:100])
        r = client.get("/api/features/3")
        assert r.status_code == 500 and str(path) in r.json()["detail"]
