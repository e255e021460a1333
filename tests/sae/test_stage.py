"""The train and codes stages on a synthetic workspace; checkpoints; bad inputs; CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medsae.encode.store import EmbeddingStore
from medsae.errors import ArtifactError, InputError
from medsae.sae import CodesConfig, TrainConfig, load_sae, train, write_codes
from medsae.sae.checkpoint import save_sae
from medsae.sae.codes_io import load_codes, load_codes_meta
from medsae.sae.io import trained_runs
from medsae.sae.registry import build_sae, sae_config
from medsae.sae.trainer import TrainingInterrupted, auxk_idle
from medsae.workspace import Workspace
from tests.support.synthetic import make_synthetic_workspace

SMALL = {
    "levels": [[16, 64]],
    "k": [[2, 4]],
    "epochs": 3,
    "batch_size": 64,
    "checkpoint_every_steps": 4,
    "device": "cpu",  # bit-identical resume and codes equal to CPU codes: CPU exactness
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, str, list[str]]:
    root = tmp_path_factory.mktemp("ws")
    ws, truth = make_synthetic_workspace(root, dim=32)
    cfg = TrainConfig(arch=["matryoshka", "topk"], **SMALL)
    out = train(ws, truth.encoder, cfg)
    write_codes(ws, truth.encoder, config=CodesConfig(device="cpu"))
    return ws, truth.encoder, out.manifest["extra"]["runs"]


def test_train_writes_runs_with_metrics_and_history(
    trained: tuple[Workspace, str, list[str]],
) -> None:
    ws, enc, runs = trained
    assert sorted(runs) == ["matryoshka_D16-64_K4", "topk_D64_K4"]
    assert trained_runs(ws, enc) == sorted(runs)
    m = json.loads((ws.sae(enc, runs[0]) / "metrics.json").read_text())
    assert set(m["splits"]) == {"train", "val", "test"}
    for split in m["splits"].values():
        assert set(split) == {"16", "64"}
        assert split["64"]["r2"] >= split["16"]["r2"] - 1e-9  # more latents reconstruct no worse
        for key in (
            "r2",
            "fvu",
            "r2_grand_mean",
            "l0",
            "dead_fraction",
            "dense_fraction",
            "alive_fraction",
        ):
            assert key in split["64"]
    hist = (ws.sae(enc, runs[0]) / "history.csv").read_text().splitlines()
    assert hist[0].startswith("step,") and "val_fvu" in hist[0] and len(hist) > 1
    assert not list(
        ws.saes(enc).rglob("train_state.pt")
    )  # the resumable state is removed at the end
    sae = load_sae(ws.sae(enc, runs[0]))
    assert (sae.cfg.d_in, sae.cfg.n_latents, sae.cfg.levels, sae.cfg.encoder) == (
        32,
        64,
        [16, 64],
        enc,
    )


def test_train_names_runs_whose_auxk_cannot_engage(
    trained: tuple[Workspace, str, list[str]],
) -> None:
    ws, enc, runs = trained  # a few hundred samples against the default 1,000,000
    grid = json.loads((ws.saes(enc) / "grid.json").read_text())
    assert grid["auxk_idle"] == sorted(runs)
    cfgs = [
        sae_config(arch="topk", d_in=8, n_latents=16, k=2, run="a", dead_after_samples=500),
        sae_config(arch="topk", d_in=8, n_latents=16, k=2, run="b", dead_after_samples=5000),
        sae_config(arch="relu", d_in=8, n_latents=16, run="c", dead_after_samples=5000),
        sae_config(
            arch="topk", d_in=8, n_latents=16, k=2, run="d", dead_after_samples=5000,
            aux_coefficient=0.0,
        ),
    ]  # fmt: skip
    assert auxk_idle(cfgs, 1000) == ["b"]


def test_train_skips_when_up_to_date(trained: tuple[Workspace, str, list[str]]) -> None:
    ws, enc, _ = trained
    assert train(ws, enc, TrainConfig(arch=["matryoshka", "topk"], **SMALL)).skipped


def test_codes_are_sparse_and_match_encode(trained: tuple[Workspace, str, list[str]]) -> None:
    ws, enc, runs = trained
    store = EmbeddingStore(ws.embeddings(enc))
    for run in runs:
        csr = load_codes(ws.codes(enc, run))
        meta = load_codes_meta(ws.codes(enc, run))
        sae = load_sae(ws.sae(enc, run))
        assert (
            csr.shape == (store.n_rows, 64)
            and meta["run"] == run
            and meta["levels"] == sae.cfg.levels
        )
        dense = sae.encode(store.read()).numpy()
        assert csr.nnz == int((dense != 0).sum())
        np.testing.assert_allclose(csr.toarray(), dense, rtol=1e-6, atol=1e-7)


def test_stage_resumes_after_interruption_bit_identically(
    tmp_path: Path, trained: tuple[Workspace, str, list[str]]
) -> None:
    ws_ref, enc, runs = trained
    ws, _ = make_synthetic_workspace(tmp_path / "ws", dim=32)
    cfg = TrainConfig(arch=["matryoshka", "topk"], **SMALL)
    with pytest.raises(TrainingInterrupted):
        train(ws, enc, cfg, stop_after_steps=10)
    assert (ws.saes(enc).parent / f".{enc}.partial" / "train_state.pt").is_file()
    assert train(ws, enc, cfg).status == "built"
    for run in runs:
        a, b = load_sae(ws_ref.sae(enc, run)), load_sae(ws.sae(enc, run))
        for key, t in a.state_dict().items():
            assert torch.equal(t, b.state_dict()[key]), (run, key)


def test_checkpoint_round_trip_and_corruption(tmp_path: Path) -> None:
    cfg = sae_config(
        arch="matryoshka", d_in=8, n_latents=32, levels=[8, 32], k=3, run="r", encoder="e"
    )
    sae = build_sae(cfg, seed=1)
    with torch.no_grad():
        sae.threshold.fill_(0.25)
        sae.b_enc.normal_()
    save_sae(tmp_path / "r", sae)
    back = load_sae(tmp_path / "r")
    assert back.cfg == sae.cfg
    for key, t in sae.state_dict().items():
        if key in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
            assert torch.equal(t, back.state_dict()[key])
    x = torch.randn(5, 8)
    torch.testing.assert_close(back.encode(x), sae.encode(x))
    (tmp_path / "r" / "sae.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ArtifactError, match=r"sae\.safetensors"):
        load_sae(tmp_path / "r")
    with pytest.raises(ArtifactError, match="not an SAE checkpoint"):
        load_sae(tmp_path / "missing")


def test_d_in_mismatch_is_a_clear_error() -> None:
    sae = build_sae(sae_config(arch="topk", d_in=8, n_latents=16, k=2, run="r1"))
    with pytest.raises(InputError, match="d_in=8"):
        sae.encode(np.zeros((3, 5), dtype=np.float32))


def test_k_larger_than_level_is_rejected() -> None:
    with pytest.raises(ValueError, match="k=40 is larger than the dictionary"):
        sae_config(arch="topk", d_in=8, n_latents=16, k=40)
    with pytest.raises(ValueError, match="k=20 is invalid for level 16"):
        sae_config(
            arch="matryoshka-perlevel",
            d_in=8,
            n_latents=64,
            levels=[16, 64],
            k=40,
            k_levels=[20, 40],
        )


def test_no_valid_run_in_grid_is_an_error(tmp_path: Path) -> None:
    ws, truth = make_synthetic_workspace(tmp_path, dim=16, n_subjects=6, slices_per_plane=4)
    with pytest.raises(InputError, match="no valid SAE"):
        train(ws, truth.encoder, TrainConfig(arch=["topk"], levels=[[8]], k=[[20]]))


def test_nan_rows_and_tiny_dataset_are_clear_errors(tmp_path: Path) -> None:
    ws, truth = make_synthetic_workspace(tmp_path, dim=16, n_subjects=6, slices_per_plane=4)
    # a batch larger than the train split trains on batches of the whole split, and says so
    other, _ = make_synthetic_workspace(tmp_path / "b", dim=16, n_subjects=6, slices_per_plane=4)
    out = train(
        other,
        truth.encoder,
        TrainConfig(arch=["topk"], levels=[[32]], k=[[2]], batch_size=4096, epochs=1),
    )
    assert out.manifest["config"]["batch_size"] == out.manifest["counts"]["train_rows"] < 4096
    shard = ws.embeddings(truth.encoder) / "shard-00001.npy"
    arr = np.load(shard)
    arr[3, 2] = np.nan
    np.save(shard, arr)
    with pytest.raises(InputError, match=r"NaN or Inf.*rows \[\d+\]"):
        train(
            ws,
            truth.encoder,
            TrainConfig(arch=["topk"], levels=[[32]], k=[[2]], batch_size=16, epochs=1),
        )
    assert not ws.saes(truth.encoder).exists()  # nothing half-written


def test_cli_train_and_codes(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medsae.cli import app

    ws, truth = make_synthetic_workspace(tmp_path, dim=16, n_subjects=6, slices_per_plane=6)
    runner = CliRunner()
    args = [
        "train",
        "-w",
        str(ws.root),
        "-e",
        truth.encoder,
        "--arch",
        "batchtopk",
        "--levels",
        "32",
        "--k",
        "2",
    ]
    res = runner.invoke(app, [*args, "--epochs", "2", "--batch-size", "16"])
    assert res.exit_code == 0, res.output
    assert trained_runs(ws, truth.encoder) == ["batchtopk_D32_K2"]
    res = runner.invoke(
        app, ["codes", "-w", str(ws.root), "-e", truth.encoder, "--run", "batchtopk_D32_K2"]
    )
    assert res.exit_code == 0, res.output
    assert load_codes(ws.codes(truth.encoder, "batchtopk_D32_K2")).shape[1] == 32
    with pytest.raises(InputError, match="no such run"):
        write_codes(ws, truth.encoder, run="nope", config=CodesConfig())
