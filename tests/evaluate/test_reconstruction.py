from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from medsae.encode.store import write_store
from medsae.evaluate.reconstruction import reconstruction_report, sparsity_from_codes


class PrefixSAE:
    """Codes = the input itself; level L keeps the first L dimensions."""

    def __init__(self, d: int, levels: list[int]) -> None:
        self.cfg = SimpleNamespace(levels=levels, n_latents=d, d_in=d, encoder="fake")

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)

    def decode(self, codes: torch.Tensor, level: int | None = None) -> torch.Tensor:
        out = codes.clone()
        if level is not None:
            out[:, level:] = 0
        return out


class MeanSAE(PrefixSAE):
    """Reconstructs every slice as the per-dimension mean (R² = 0, grand-mean R² high)."""

    def __init__(self, mean: np.ndarray) -> None:
        super().__init__(len(mean), [len(mean)])
        self.mean = torch.from_numpy(mean.astype(np.float32))

    def decode(self, codes: torch.Tensor, level: int | None = None) -> torch.Tensor:
        return self.mean.expand(codes.shape[0], -1).clone()


def test_prefix_levels_streaming(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(50, 4))).astype(np.float32)
    x[:, 3] = 0
    store = write_store(
        tmp_path / "emb", "fake", [("shard-00000.npy", x[:20]), ("shard-00001.npy", x[20:])]
    )
    split = np.array(["train"] * 30 + ["test"] * 20)
    rep = reconstruction_report(PrefixSAE(4, [2, 4]), store, split, batch_size=7)
    assert rep["test"]["4"]["r2"] == pytest.approx(1.0)
    t = x[30:].astype(np.float64)
    sse = (t[:, 2:] ** 2).sum()
    ss = ((t - t.mean(0)) ** 2).sum()
    assert rep["test"]["2"]["r2"] == pytest.approx(1 - sse / ss, rel=1e-6)
    assert rep["test"]["2"]["l0"] == pytest.approx(2.0)
    assert rep["test"]["4"]["l0"] == pytest.approx(3.0)
    assert rep["all"]["4"]["dead_fraction"] == pytest.approx(0.25)  # dimension 3 never fires
    assert rep["all"]["4"]["n"] == 50


def test_per_dimension_vs_grand_mean_r2(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(200, 3)) + np.array([0.0, 10.0, -10.0])).astype(np.float32)
    store = write_store(tmp_path / "emb", "fake", [("shard-00000.npy", x)])
    rep = reconstruction_report(MeanSAE(x.mean(0)), store, np.array(["test"] * 200))
    res = rep["test"]["3"]
    assert res["r2"] == pytest.approx(0.0, abs=1e-5)
    assert res["r2_grand_mean"] > 0.9  # the paper's form rewards knowing the means
    assert res["fvu"] == pytest.approx(1.0, abs=1e-5)


def test_sparsity_from_codes() -> None:
    codes = sp.csr_matrix(
        np.array([[1, 0, 2, 0], [0, 0, 3, 0], [1, 0, 0, 0], [1, 0, 1, 0]], np.float32)
    )
    rep = sparsity_from_codes(codes, np.array(["train", "train", "test", "test"]), [2, 4])
    assert rep["train"]["4"]["l0"] == pytest.approx(1.5)
    assert rep["train"]["2"]["l0"] == pytest.approx(0.5)
    assert rep["test"]["4"]["dead_fraction"] == pytest.approx(0.5)
    assert rep["all"]["2"]["alive_fraction"] == pytest.approx(0.5)
    assert rep["all"]["4"]["dense_fraction"] == pytest.approx(0.5)
