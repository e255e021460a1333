"""``medsae.sae.fit``: the train stage's own path, on arrays, tensors and iterables of
batches; each trap of driving the internals directly has a test here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import medsae.sae.stage as stage_module
from medsae.encode.import_stage import import_embeddings
from medsae.errors import InputError
from medsae.sae import TrainConfig, fit, load_sae, train
from medsae.sae.io import trained_runs
from medsae.workspace import Workspace
from tests.sae.conftest import planted

SMALL = {
    "arch": ["matryoshka", "topk"],
    "levels": [[16, 48]],
    "k": [[4, 8]],
    "epochs": 3,
    "batch_size": 64,
    "chunk_rows": 256,
    "median_sample": 200,
    "threshold_start_fraction": 0.5,
    "dead_after_samples": 300,
}


def imported_workspace(tmp_path: Path, x: np.ndarray) -> Workspace:
    ids = [f"r{i}" for i in range(len(x))]
    split = np.array(["train", "train", "val", "test"])[np.arange(len(x)) % 4]
    np.save(tmp_path / "x.npy", x)
    pd.DataFrame({"id": ids, "split": split}).to_parquet(tmp_path / "meta.parquet")
    ws = Workspace(tmp_path / "ws")
    import_embeddings(ws, tmp_path / "x.npy", tmp_path / "meta.parquet")
    return ws


@pytest.mark.parametrize("transform", ["scale", "l2"])
def test_the_stage_and_fit_give_identical_weights(tmp_path: Path, transform: str) -> None:
    x = 3.0 * planted(800, 12, 40, 3, seed=1)
    ws = imported_workspace(tmp_path, x)
    cfg = TrainConfig(**SMALL, input_transform=transform)
    train(ws, "imported", cfg)
    rows = np.arange(len(x))
    grid = fit(x[rows % 4 < 2], cfg, val=x[rows % 4 == 2], encoder="imported")
    assert sorted(grid.saes) == trained_runs(ws, "imported")
    for name, sae in grid.saes.items():
        staged = load_sae(ws.sae("imported", name))
        assert staged.cfg == sae.cfg
        for tensor in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
            assert torch.equal(getattr(staged, tensor), getattr(sae, tensor)), (name, tensor)
        history = pd.read_csv(ws.sae("imported", name) / "history.csv")
        assert history["val_r2"].dropna().tolist() == pytest.approx(
            pd.DataFrame(grid.history[name])["val_r2"].dropna().tolist()
        )


def test_the_stage_trains_through_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return fit(*args, **kwargs)

    monkeypatch.setattr(stage_module, "fit", spy)
    ws = imported_workspace(tmp_path, planted(400, 8, 20, 2))
    train(ws, "imported", TrainConfig(**{**SMALL, "epochs": 1}))
    assert len(calls) == 1 and calls[0]["state_dir"] is not None


def test_scale_factor_is_computed_from_the_data() -> None:
    x = 25.0 * planted(400, 8, 20, 2)
    grid = fit(x, TrainConfig(**{**SMALL, "epochs": 1}, input_transform="scale"))
    expected = 1.0 / np.sqrt(np.mean(np.sum(x.astype(np.float64) ** 2, axis=1)))
    for sae in grid.saes.values():
        assert sae.cfg.input_scale == pytest.approx(expected, rel=1e-6)
        assert sae.cfg.scale_folded  # the SAE takes raw inputs


def test_threads_are_applied() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        fit(planted(200, 8, 20, 2), TrainConfig(**{**SMALL, "epochs": 1}, threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_tensors_and_iterables_of_batches(tmp_path: Path) -> None:
    x = planted(512, 8, 20, 2)
    cfg = TrainConfig(**SMALL)
    from_array = fit(x, cfg)
    from_tensor = fit(torch.from_numpy(x), cfg)
    for name, sae in from_array.saes.items():
        assert torch.equal(sae.W_dec, from_tensor[name].W_dec)
    batches = (torch.from_numpy(x[i : i + 100]) for i in range(0, 512, 100))
    grid = fit(batches, TrainConfig(**{**SMALL, "max_samples": 448}), save_to=tmp_path / "g")
    assert grid.steps == 7 and grid.samples == 448
    for name, sae in grid.saes.items():
        loaded = load_sae(tmp_path / "g" / name)
        assert torch.equal(loaded.W_enc, sae.W_enc)
        assert (tmp_path / "g" / name / "history.csv").is_file()
    assert (tmp_path / "g" / "grid.json").is_file()
    with pytest.raises(InputError, match="max_samples"):
        fit(iter([x]), TrainConfig(**SMALL))
    with pytest.raises(InputError, match="ended after 512 rows"):
        fit(iter([x]), TrainConfig(**{**SMALL, "max_samples": 10_000}))
    bad = x.copy()
    bad[7, 1] = np.nan
    with pytest.raises(InputError, match=r"rows \[7\]"):
        fit(bad, cfg)


def test_the_benchmark_trains_through_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    path = Path(__file__).parents[2] / "benchmarks" / "sae_train.py"
    spec = importlib.util.spec_from_file_location("sae_train_bench", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["sae_train_bench"] = bench
    spec.loader.exec_module(bench)
    calls = []

    def spy(*args, **kwargs):
        calls.append(args[1])
        return fit(*args, **kwargs)

    monkeypatch.setattr(bench, "fit", spy, raising=False)
    out = bench.quality(
        d=8, n_true=16, active=2, D=32, k=4, samples=2048, B=128, device=torch.device("cpu")
    )
    assert len(calls) == 1 and calls[0].threshold_start_fraction > 0
    assert 0 <= out["recovered_fraction"] <= 1 and out["samples"] == 2048
