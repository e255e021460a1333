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


def test_paper_r2_on_a_hand_made_batch() -> None:
    from medsae.metrics.reconstruction import BatchedGrandMeanR2, grand_mean_r2, paper_r2

    x = np.array([[1.0, 3.0], [3.0, 5.0], [0.0, 2.0]])
    x_hat = np.array([[1.0, 4.0], [2.0, 5.0], [0.0, 0.0]])
    # batch 1 (rows 0-1): mean 3, SS_tot = 4 + 0 + 0 + 4 = 8, SSE = 1 + 1 = 2 -> 0.75
    # batch 2 (row 2): mean 1, SS_tot = 1 + 1 = 2, SSE = 4 -> -1; weighted (2, 1) -> 1/6
    assert grand_mean_r2(x[:2], x_hat[:2]) == pytest.approx(0.75)
    assert grand_mean_r2(x[2:], x_hat[2:]) == pytest.approx(-1.0)
    assert paper_r2(x, x_hat, batch_size=2) == pytest.approx((2 * 0.75 + 1 * -1.0) / 3)
    # one batch of all rows is the plain grand-mean form; streaming in any chunks agrees
    assert paper_r2(x, x_hat, batch_size=2048) == pytest.approx(grand_mean_r2(x, x_hat))
    acc = BatchedGrandMeanR2(batch_size=2)
    for i in range(3):
        acc.update(x[i : i + 1], x_hat[i : i + 1])
    assert acc.result() == pytest.approx(1 / 6)


def test_reconstruction_report_gives_the_paper_r2_on_validation(tmp_path: Path) -> None:
    from medsae.metrics.reconstruction import paper_r2

    rng = np.random.default_rng(2)
    x = (rng.normal(size=(3000, 3)) + np.array([0.0, 4.0, -4.0])).astype(np.float32)
    store = write_store(tmp_path / "emb", "fake", [("shard-00000.npy", x)])
    split = np.where(np.arange(3000) % 3 == 0, "train", "val")
    sae = MeanSAE(x.mean(0))
    rep = reconstruction_report(sae, store, split, batch_size=512)
    val = x[split == "val"].astype(np.float64)  # 2,000 rows: one batch of 2,048 would hold all
    expected = paper_r2(val, np.broadcast_to(x.mean(0), val.shape))
    assert rep["val"]["3"]["r2_grand_mean_batched"] == pytest.approx(expected, rel=1e-6)
    assert "r2_grand_mean_batched" not in rep["train"]["3"]
