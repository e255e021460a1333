"""A tiny SAE trained with the real trainer on the synthetic workspace, then evaluated."""

import json
from pathlib import Path

import numpy as np
import pytest

from medsae.encode.store import EmbeddingStore
from medsae.errors import ArtifactError
from medsae.evaluate import evaluate, rank
from medsae.metrics.reconstruction import reconstruction_metrics
from medsae.sae import TrainConfig, load_sae, train, write_codes
from medsae.sae.io import trained_runs
from tests.support.synthetic import make_synthetic_workspace

from .conftest import small_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    ws, truth = make_synthetic_workspace(
        Path(tmp_path_factory.mktemp("trained")), n_subjects=16, slices_per_plane=6
    )
    cfg = TrainConfig(
        arch=["matryoshka"],
        levels=[[16, 64]],
        k=[[2, 6]],
        epochs=3,
        batch_size=64,
        device="cpu",
        seed=0,
    )
    train(ws, truth.encoder, cfg)
    run = trained_runs(ws, truth.encoder)[0]
    write_codes(ws, truth.encoder, run=run)
    return ws, truth, run


def test_reconstruction_of_a_trained_sae(trained) -> None:  # type: ignore[no-untyped-def]
    ws, truth, run = trained
    out = evaluate(
        ws, truth.encoder, run, small_config(parts=["reconstruction", "monosemanticity"])
    ).path
    recon = json.loads((out / "reconstruction.json").read_text())
    assert recon["source"] == "sae" and recon["levels"] == [16, 64]
    summary = json.loads((out / "summary.json").read_text())
    # independent check of the streamed figures on the test split, full level
    sae = load_sae(ws.sae(truth.encoder, run))
    import pandas as pd
    import torch

    from medsae.data.table import slices_with_split

    table = slices_with_split(ws.slices, ws.split)
    rows = np.flatnonzero(table["split"].to_numpy() == "test")
    x = torch.from_numpy(EmbeddingStore(ws.embeddings(truth.encoder)).read(rows))
    with torch.no_grad():
        codes = sae.encode(x)
        ref = reconstruction_metrics(sae.preprocess(x).numpy(), sae.decode(codes, level=64).numpy())
    assert summary["r2"] == pytest.approx(ref["r2"], abs=1e-4)
    assert recon["splits"]["test"]["64"]["r2_grand_mean"] == pytest.approx(
        ref["r2_grand_mean"], abs=1e-4
    )
    assert summary["l0"] == pytest.approx(float((codes != 0).sum(1).float().mean()), rel=1e-5)
    assert recon["splits"]["test"]["16"]["l0"] <= recon["splits"]["test"]["64"]["l0"]
    assert pd.isna(summary.get("recovery_at_10"))
    rank(ws)
    assert (ws.ranking / "figures" / "r2_vs_l0.png").is_file()


def test_sae_of_another_encoder_is_refused(trained) -> None:  # type: ignore[no-untyped-def]
    ws, truth, run = trained
    cfg_path = ws.sae(truth.encoder, run) / "cfg.json"
    original = cfg_path.read_text()
    try:
        cfg_path.write_text(json.dumps({**json.loads(original), "encoder": "another-encoder"}))
        with pytest.raises(ArtifactError, match="another-encoder"):
            evaluate(ws, truth.encoder, run, small_config(parts=["reconstruction"]), force=True)
    finally:
        cfg_path.write_text(original)
