"""Stability across seeds: a permuted, sign-flipped copy of a dictionary is found again
exactly (MCC 1.0, every feature at cosine 1 with its permuted partner); an unrelated random
dictionary is not; dead latents are left out of the matching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medsae.interpret.stability import seed_siblings, seed_stability
from medsae.sae.checkpoint import save_sae
from medsae.sae.io import CODES_STATS
from medsae.sae.registry import build_sae, sae_config
from medsae.workspace import Workspace

D, DIM = 24, 16


def _save(ws: Workspace, run: str, w_dec: np.ndarray, nnz: np.ndarray | None = None) -> None:
    sae = build_sae(sae_config(arch="topk", d_in=DIM, n_latents=D, k=3, run=run))
    with torch.no_grad():
        sae.W_dec.copy_(torch.as_tensor(w_dec, dtype=torch.float32))
    save_sae(ws.sae("e", run), sae)
    if nnz is not None:
        ws.codes("e", run).mkdir(parents=True)
        zeros = np.zeros(D)
        np.savez(ws.codes("e", run) / CODES_STATS, nnz=nnz, sum=zeros, max=zeros)


def test_a_permuted_sign_flipped_copy_is_found_again_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ws = Workspace(tmp_path / "ws").ensure()
    w = rng.normal(size=(D, DIM))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    perm = rng.permutation(D)
    signs = np.where(rng.random(D) < 0.5, -1.0, 1.0)[:, None]
    _save(ws, "topk_D24_K3", w)
    _save(ws, "topk_D24_K3_s1", (w * signs)[perm])  # latent i of s1 is latent perm[i]
    far = rng.normal(size=(D, DIM))
    far /= np.linalg.norm(far, axis=1, keepdims=True)
    _save(ws, "topk_D24_K3_s2", far)
    _save(ws, "relu_D24", w)  # another configuration: not a seed
    assert seed_siblings(ws, "e", "topk_D24_K3") == ["topk_D24_K3_s1", "topk_D24_K3_s2"]

    latents = np.arange(D)
    cols, summary = seed_stability(ws, "e", "topk_D24_K3", latents)
    assert summary is not None
    exact, random = summary["pairs"]
    assert exact["mcc"] == pytest.approx(1.0)
    assert exact["frac_match_0_9"] == 1.0 and exact["frac_match_0_7"] == 1.0
    assert random["mcc"] < 0.8 and random["frac_match_0_9"] == 0.0
    assert summary["mcc"] == pytest.approx((1.0 + random["mcc"]) / 2)
    inverse = np.argsort(perm)  # where each of the run's latents went in s1
    assert [m[0] for m in cols["seed_matches"]] == inverse.tolist()
    assert (cols["seed_others"] == 2).all()
    best_far = np.abs(w @ far.T).max(1)
    assert (cols["seed_found"] == 1 + (best_far >= 0.7)).all()
    assert np.allclose(cols["seed_cosine"], (1.0 + best_far) / 2, atol=1e-5)


def test_dead_latents_are_left_out_and_no_sibling_means_no_columns(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ws = Workspace(tmp_path / "ws").ensure()
    w = rng.normal(size=(D, DIM))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    alive = np.ones(D)
    alive[:12] = 0  # half the run's latents never fire
    _save(ws, "m_D24_K3", w, nnz=alive)
    _save(ws, "m_D24_K3_s3", w, nnz=np.ones(D))
    _, summary = seed_stability(ws, "e", "m_D24_K3", np.arange(D))
    assert summary is not None
    (pair,) = summary["pairs"]
    assert pair["alive"] == 12 and pair["alive_other"] == 24 and pair["mcc"] == pytest.approx(1.0)
    assert seed_stability(ws, "e", "m_D24_K3_s3", np.arange(D))[1] is not None
    _save(ws, "solo_D24_K3", w)
    assert seed_stability(ws, "e", "solo_D24_K3", np.arange(D)) == ({}, None)


def test_activations_of_a_permuted_rescaled_copy_match_exactly_and_missing_codes_give_none(
    tmp_path: Path,
) -> None:
    import scipy.sparse as sp

    from medsae.sae.codes_io import save_codes

    rng = np.random.default_rng(2)
    ws = Workspace(tmp_path / "ws").ensure()
    w = rng.normal(size=(D, DIM))
    for run in ("a_D24_K3", "a_D24_K3_s1", "a_D24_K3_s2", "a_D24_K3_s3"):
        _save(ws, run, w)
    z = rng.random((200, D)) * (rng.random((200, D)) < 0.2)  # sparse non-negative codes
    perm = rng.permutation(D)
    other = rng.random((200, D)) * (rng.random((200, D)) < 0.2)
    for run, codes in (("a_D24_K3", z), ("a_D24_K3_s1", 3.0 * z[:, perm]), ("a_D24_K3_s2", other)):
        save_codes(ws.codes("e", run), sp.csr_matrix(codes), {})
    _, summary = seed_stability(ws, "e", "a_D24_K3", np.arange(D))
    assert summary is not None
    same, unrelated, no_codes = summary["pairs"]
    assert same["act_mcc"] == pytest.approx(1.0) and same["act_frac_0_9"] == 1.0
    assert unrelated["act_mcc"] < 0.5 and unrelated["act_frac_0_7"] == 0.0
    assert no_codes["act_mcc"] is None and no_codes["act_frac_0_9"] is None
    assert summary["act_mcc"] == pytest.approx((1.0 + unrelated["act_mcc"]) / 2)
