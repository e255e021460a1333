"""Training behaviour: every architecture learns, threshold export, AuxK, resume, one-pass grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medsae.sae.config import TrainConfig
from medsae.sae.data import TrainStream
from medsae.sae.grid import expand_grid
from medsae.sae.registry import build_sae, sae_config
from medsae.sae.trainer import GridTrainer, TrainingInterrupted

from .conftest import RESUME_CFG, make_store, planted

D_IN, N_FEAT = 16, 32


def _trainer(tmp: Path, tcfg: TrainConfig, x: np.ndarray, state: bool = False) -> GridTrainer:
    store = make_store(tmp / "store", x)
    runs, _ = expand_grid(tcfg, D_IN, encoder="toy")
    stream = TrainStream(store, np.arange(len(x)), tcfg.batch_size, tcfg.seed, tcfg.chunk_rows)
    return GridTrainer(
        runs,
        tcfg,
        stream,
        torch.from_numpy(x[:256]),
        torch.device("cpu"),
        tmp / "state" if state else None,
    )


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return planted(1024, D_IN, N_FEAT, 3, seed=1)


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "matryoshka", "matryoshka-perlevel", "relu"])
def test_every_architecture_reduces_loss(tmp_path: Path, data: np.ndarray, arch: str) -> None:
    tcfg = TrainConfig(
        arch=[arch],
        levels=[[16, 64]],
        k=[[2, 4]],
        epochs=8,
        batch_size=64,
        lr=3e-3,
        log_every_steps=1,
    )
    tr = _trainer(tmp_path, tcfg, data)
    tr.fit()
    hist = next(iter(tr.runs.values())).history
    assert hist[-1]["fvu"] < 0.5 * hist[0]["fvu"], (arch, hist[0]["fvu"], hist[-1]["fvu"])


def test_grid_reads_each_batch_once(tmp_path: Path, data: np.ndarray) -> None:
    one = TrainConfig(
        arch=["topk"], levels=[[64]], k=[[4]], epochs=2, batch_size=64, chunk_rows=256
    )
    grid = one.model_copy(
        update={"arch": ["topk", "batchtopk", "matryoshka"], "levels": [[16, 64], [64]]}
    )
    t1 = _trainer(tmp_path / "a", one, data)
    t1.fit()
    t3 = _trainer(tmp_path / "b", grid, data)
    assert len(t3.runs) == 4  # topk/batchtopk on D64 once each, matryoshka on both ladders
    t3.fit()
    assert t3.stream.reads == t1.stream.reads == 2 * (1024 // 256)


def test_grid_skips_and_lists_invalid_combinations() -> None:
    tcfg = TrainConfig(
        arch=["matryoshka-perlevel", "topk"], levels=[[8, 32]], k=[[2, 4], [10, 20], [1, 2, 3]]
    )
    runs, skipped = expand_grid(tcfg, 8)
    names = {r.run for r in runs}
    assert "matryoshka-perlevel_D8-32_K2-4" in names and "topk_D32_K20" in names
    reasons = " | ".join(s["reason"] for s in skipped)
    assert "k=10 > level 8" in reasons and "3 k values for 2 levels" in reasons


def test_batchtopk_threshold_export_matches_training_behaviour(tmp_path: Path) -> None:
    x = planted(4096, D_IN, N_FEAT, 3, seed=2)
    held = planted(5120, D_IN, N_FEAT, 3, seed=2)[4096:]  # same features, new samples
    k = 3
    tcfg = TrainConfig(
        arch=["batchtopk"],
        levels=[[64]],
        k=[[k]],
        epochs=6,
        batch_size=128,
        lr=3e-3,
        input_transform="none",
    )
    tr = _trainer(tmp_path, tcfg, x)
    sae = next(iter(tr.fit().values())).eval()
    xh = torch.from_numpy(held)
    codes = sae.encode(xh)
    l0 = float((codes > 0).sum(1).float().mean())
    assert abs(l0 - k) <= 0.1 * k, l0
    # reconstruction under the threshold vs under BatchTopK on the same held-out batch
    from medsae.sae.kernels import batch_topk_select

    with torch.no_grad():
        pre = sae.pre_activation(sae.preprocess(xh))
        rows, cols = batch_topk_select(pre, k)
        z = torch.zeros_like(pre)
        z[rows, cols] = pre[rows, cols].clamp_min(0)
        mse_jump = float((sae.decode(codes) - xh).pow(2).mean())
        mse_btk = float((sae.decode(z) - xh).pow(2).mean())
    var = float((xh - xh.mean(0)).pow(2).mean())
    assert abs(mse_jump - mse_btk) / var <= 0.01, (mse_jump, mse_btk, var)


def test_auxk_revives_dead_latents(tmp_path: Path, data: np.ndarray) -> None:
    def dead_after(aux: float) -> int:
        tcfg = TrainConfig(
            arch=["topk"],
            levels=[[64]],
            k=[[3]],
            epochs=12,
            batch_size=64,
            lr=3e-3,
            aux_coefficient=aux,
            dead_after_samples=256,
            input_transform="none",
        )
        tr = _trainer(tmp_path / f"aux{aux}", tcfg, data)
        sae = next(iter(tr.runs.values())).sae
        with torch.no_grad():  # half the dictionary starts too weak to ever win the top-k
            sae.W_enc[32:] *= 0.02
        tr.fit()
        return int(sae.dead_mask.sum())

    without, with_aux = dead_after(0.0), dead_after(1 / 32)
    assert without >= 24
    assert with_aux <= 0.75 * without, (with_aux, without)  # at least a quarter revived


def test_resume_is_bit_identical(tmp_path: Path, data: np.ndarray) -> None:
    tcfg = RESUME_CFG
    full = _trainer(tmp_path / "full", tcfg, data)
    full.fit()
    part = _trainer(tmp_path / "part", tcfg, data, state=True)
    part.stop_after_steps = 23  # the last checkpoint is at step 20: steps 21-23 are lost and redone
    with pytest.raises(TrainingInterrupted):
        part.fit()
    resumed = _trainer(tmp_path / "part", tcfg, data, state=True)
    assert resumed.step == 20
    resumed.fit()
    assert resumed.step == full.step == 32
    for name, r in full.runs.items():
        a, b = r.sae.state_dict(), resumed.runs[name].sae.state_dict()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
        sa, sb = r.opt.state_dict()["state"], resumed.runs[name].opt.state_dict()["state"]
        for p in sa:
            assert torch.equal(sa[p]["exp_avg_sq"], sb[p]["exp_avg_sq"])
        assert r.history == resumed.runs[name].history


def test_decoder_rows_unit_norm_after_steps(tmp_path: Path, data: np.ndarray) -> None:
    tcfg = TrainConfig(arch=["batchtopk"], levels=[[64]], k=[[4]], epochs=1, batch_size=64, lr=1e-2)
    tr = _trainer(tmp_path, tcfg, data)
    sae = next(iter(tr.fit().values()))
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(64))


def test_scale_transform_folds_into_weights() -> None:
    cfg = sae_config(
        arch="batchtopk", d_in=6, n_latents=12, k=2, input_transform="scale", input_scale=0.37
    )
    sae = build_sae(cfg, seed=3)
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
        sae.threshold.fill_(0.05)
    x = 5 * torch.randn(20, 6)
    codes = sae.encode(x)
    recon_raw = (
        sae.decode(codes) / 0.37
    )  # the trained SAE's reconstruction, mapped back to raw units
    sae.fold_input_scale()
    assert sae.cfg.scale_folded
    torch.testing.assert_close(sae.preprocess(x), x)
    torch.testing.assert_close(sae.encode(x), codes, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae.decode(sae.encode(x)), recon_raw, rtol=1e-5, atol=1e-5)


def test_matryoshka_prefix_decoding() -> None:
    cfg = sae_config(arch="matryoshka", d_in=5, n_latents=16, levels=[4, 8, 16], k=3)
    sae = build_sae(cfg, seed=0)
    codes = torch.rand(7, 16)
    for m in (4, 8, 16):
        truncated = codes.clone()
        truncated[:, m:] = 0
        torch.testing.assert_close(sae.decode(codes, level=m), sae.decode(truncated))


def test_perlevel_firings_of_every_level_reset_the_dead_counter() -> None:
    cfg = sae_config(
        arch="matryoshka-perlevel", d_in=6, n_latents=8, levels=[2, 8], k=2, k_levels=[1, 2]
    )
    sae = build_sae(cfg, seed=0)
    x = torch.randn(4, 6)
    with torch.no_grad():
        out = sae.train_loss(sae.preprocess(x))
        enc, _ = sae._encode_train(sae.preprocess(x))
    small = {int(c) for v, _, c in zip(*enc[0], strict=True) if v > 0}
    full = {int(c) for v, _, c in zip(*enc[1], strict=True) if v > 0}
    assert set(out.fired_cols.nonzero().flatten().tolist()) == small | full
    sae.samples_since_fire.fill_(100)
    sae.after_step(out, 4)
    assert all(int(sae.samples_since_fire[j]) == 0 for j in small | full)


def test_perlevel_metrics_record_nominal_k_beside_l0() -> None:
    from medsae.sae.evaluation import nominal_k

    per = sae_config(
        arch="matryoshka-perlevel", d_in=6, n_latents=8, levels=[2, 8], k=2, k_levels=[1, 2]
    )
    assert nominal_k(per) == {2: 1, 8: 2}
    flat = sae_config(arch="matryoshka", d_in=6, n_latents=8, levels=[2, 8], k=3)
    assert nominal_k(flat) == {2: None, 8: 3}
