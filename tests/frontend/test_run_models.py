"""One cache of a run's models: the encoder and the SAE load once per process, shared by the
library's search_similar, the search service and the feature maps, and load again when the
run changes on disk."""

from __future__ import annotations

import os

import numpy as np
import pytest

from medsae.frontend import WorkspaceSearch, WorkspaceView
from medsae.maps.service import MapMaker
from medsae.retrieval.index import search_similar
from medsae.sae import run_models as rm
from medsae.sae.io import CFG
from tests.serve.test_hostile_uploads import ProjectionSAE
from tests.support.synthetic import make_synthetic_workspace


class FirstPixels:
    """An encoder whose embedding is the first ``dim`` pixels of the image."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def encode(self, images: np.ndarray) -> np.ndarray:
        flat = np.asarray(images, dtype=np.float32).reshape(len(images), -1)
        return flat[:, : self.dim] / 255.0


@pytest.fixture()
def counted(tmp_path, monkeypatch: pytest.MonkeyPatch):
    ws, truth = make_synthetic_workspace(tmp_path / "ws", n_subjects=6, slices_per_plane=4)
    loads = {"encoder": 0, "sae": 0}

    def encoder(*_args):
        loads["encoder"] += 1
        return FirstPixels(truth.dim)

    def sae(*_args):
        loads["sae"] += 1
        return ProjectionSAE(truth.dim, truth.n_latents)

    monkeypatch.setattr(rm, "load_run_encoder", encoder)
    monkeypatch.setattr(rm, "load_run_sae", sae)
    return ws, truth, loads


def test_search_similar_loads_the_models_once(counted) -> None:
    ws, truth, loads = counted
    image = np.full((32, 32), 90, dtype=np.uint8)
    first = search_similar(ws, truth.encoder, truth.run, image=image, k=5, n=4)
    for _ in range(3):
        again = search_similar(ws, truth.encoder, truth.run, image=image, k=5, n=4)
        assert again["slice_id"].tolist() == first["slice_id"].tolist()
    search_similar(ws, truth.encoder, truth.run, embedding=np.ones(truth.dim), k=5, n=4)
    assert loads == {"encoder": 1, "sae": 1}


def test_search_service_and_maps_share_the_loaded_models(counted) -> None:
    ws, truth, loads = counted
    search = WorkspaceSearch(WorkspaceView(ws.root), use_interpret=False)
    hits = search.image(np.full((32, 32), 90, dtype=np.uint8), k=3)
    assert hits.rows
    maker = MapMaker(ws, truth.encoder, truth.run)
    assert maker.sae is search._image_models().sae
    assert maker.models.encoder is rm.run_models(ws, truth.encoder, truth.run).encoder
    search_similar(ws, truth.encoder, truth.run, embedding=np.ones(truth.dim), k=5, n=4)
    assert loads == {"encoder": 1, "sae": 1}


def test_a_changed_run_is_loaded_again(counted) -> None:
    ws, truth, loads = counted
    folder = ws.sae(truth.encoder, truth.run)
    folder.mkdir(parents=True)
    (folder / CFG).write_text("{}")
    first = rm.run_models(ws, truth.encoder, truth.run)
    assert rm.run_models(ws, truth.encoder, truth.run) is first
    (folder / CFG).write_text('{"retrained": true}')
    stat = (folder / CFG).stat()
    os.utime(folder / CFG, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = rm.run_models(ws, truth.encoder, truth.run)
    assert second is not first
    _ = second.sae, first.sae
    assert loads["sae"] == 2
