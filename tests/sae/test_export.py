"""``medsae export``: folders sparsify and SAELens load with their own loaders.

The format tests read the exported files with safetensors and plain torch (no library
needed) and check encode and decode equal medsae's to 1e-5; the library tests load the same
folders with ``SparseCoder.load_from_disk`` and ``SAE.load_from_disk`` when the library is
installed (``pip install eai-sparsify sae-lens``; benchmarks/interop.py records the same
round trip at full size).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medsae.errors import InputError
from medsae.sae.base import SparseAutoencoder
from medsae.sae.checkpoint import save_sae
from medsae.sae.export import export_run, export_sae, plain_codes
from medsae.sae.registry import build_sae, sae_config

D_IN, D = 12, 48
CASES = {
    "topk": {"arch": "topk", "k": 5},
    "batchtopk": {"arch": "batchtopk", "k": 5},
    "matryoshka": {"arch": "matryoshka", "k": 5, "levels": [12, 48]},
    "matryoshka-perlevel": {"arch": "matryoshka-perlevel", "k": 5, "levels": [12, 48],
                            "k_levels": [3, 5]},
    "relu": {"arch": "relu"},
}  # fmt: skip
SAELENS_FORM = {"topk": "topk", "relu": "standard"}


def trained_like(arch: str, transform: str = "l2") -> SparseAutoencoder:
    """An SAE with non-trivial biases and threshold (what training leaves)."""
    cfg = sae_config(d_in=D_IN, n_latents=D, run=f"{arch}_run", encoder="toy",
                     input_transform=transform, input_scale=0.3, **CASES[arch])  # fmt: skip
    sae = build_sae(cfg, seed=4)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        sae.W_enc.add_(0.3 * torch.randn(D, D_IN, generator=gen))
        sae.b_enc.copy_(0.05 * torch.randn(D, generator=gen))
        sae.b_dec.copy_(0.1 * torch.randn(D_IN, generator=gen))
        sae.threshold.fill_(0.08 if sae.uses_threshold else 0.0)
    return sae.eval()


def inputs(sae: SparseAutoencoder) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw inputs and what the exported SAE takes (medsae's preprocessing)."""
    x = 3 * torch.randn(64, D_IN, generator=torch.Generator().manual_seed(2))
    return x, (sae.preprocess(x) if sae.cfg.input_transform == "l2" else x)


@pytest.mark.parametrize("arch", list(CASES))
@pytest.mark.parametrize("transform", ["l2", "scale"])
def test_saelens_files_encode_and_decode_like_medsae(
    tmp_path: Path, arch: str, transform: str
) -> None:
    sae = trained_like(arch, transform)
    x, x_in = inputs(sae)
    codes = sae.encode(x)
    out = export_sae(sae, tmp_path / "out", "saelens")
    cfg = json.loads((out / "cfg.json").read_text())
    t = load_file(str(out / "sae_weights.safetensors"))
    assert cfg["architecture"] == SAELENS_FORM.get(arch, "jumprelu")
    assert (cfg["d_in"], cfg["d_sae"], cfg["metadata"]["medsae_levels"]) == (
        D_IN, D, list(sae.cfg.levels),
    )  # fmt: skip
    assert t["W_enc"].shape == (D_IN, D) and t["W_dec"].shape == (D, D_IN)
    assert ("threshold" in t) == (cfg["architecture"] == "jumprelu")
    # SAELens's forms: pre = (x - b_dec) W_enc + b_enc, then topk / relu * [pre > thr] / relu
    medsae_layout = {**t, "W_enc": t["W_enc"].t()}
    if "threshold" not in t:
        medsae_layout["threshold"] = torch.zeros(D)
    theirs = plain_codes(sae.inference, x_in, medsae_layout, cfg.get("k"))
    torch.testing.assert_close(theirs, codes, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        theirs @ t["W_dec"] + t["b_dec"], sae.decode(codes), rtol=1e-5, atol=1e-5
    )
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: saelens") and "SAE.load_from_disk" in card


def test_sparsify_files_encode_and_decode_like_medsae(tmp_path: Path) -> None:
    sae = trained_like("topk")
    x, x_in = inputs(sae)
    codes = sae.encode(x)
    out = export_sae(sae, tmp_path / "out", "sparsify")
    cfg = json.loads((out / "cfg.json").read_text())
    t = load_file(str(out / "sae.safetensors"))
    assert set(t) == {"encoder.weight", "encoder.bias", "W_dec", "b_dec"}
    assert (cfg["d_in"], cfg["num_latents"], cfg["k"], cfg["activation"]) == (D_IN, D, 5, "topk")
    # sparsify: top-k of relu(encoder(x - b_dec)); decode sum_j acts_j W_dec[j] + b_dec
    pre = torch.relu((x_in - t["b_dec"]) @ t["encoder.weight"].t() + t["encoder.bias"])
    acts, idx = pre.topk(cfg["k"], dim=1)
    dense = torch.zeros_like(pre).scatter_(1, idx, acts)
    torch.testing.assert_close(dense, codes, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dense @ t["W_dec"] + t["b_dec"], sae.decode(codes), rtol=1e-5, atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("arch", ["topk", "matryoshka", "relu"])
def test_saelens_loads_the_export(tmp_path: Path, arch: str) -> None:
    sae_lens = pytest.importorskip("sae_lens")
    sae = trained_like(arch)
    x, x_in = inputs(sae)
    codes = sae.encode(x)
    loaded = sae_lens.SAE.load_from_disk(str(export_sae(sae, tmp_path / "o", "saelens")))
    with torch.no_grad():
        theirs = loaded.encode(x_in)
        torch.testing.assert_close(theirs, codes, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(loaded.decode(theirs), sae.decode(codes), rtol=1e-5, atol=1e-5)


def test_sparsify_loads_the_export(tmp_path: Path) -> None:
    sparsify = pytest.importorskip("sparsify")
    sae = trained_like("topk")
    x, x_in = inputs(sae)
    codes = sae.encode(x)
    loaded = sparsify.SparseCoder.load_from_disk(export_sae(sae, tmp_path / "o", "sparsify"))
    with torch.no_grad():
        enc = loaded.encode(x_in)
        dense = torch.zeros(len(x), D).scatter_(1, enc.top_indices, enc.top_acts)
        torch.testing.assert_close(dense, codes, rtol=1e-5, atol=1e-5)
        x_hat = loaded.decode(enc.top_acts, enc.top_indices)
        torch.testing.assert_close(x_hat, sae.decode(codes), rtol=1e-5, atol=1e-5)


def test_refusals_are_clear_and_leave_nothing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"TopK form only.*--to saelens"):
        export_sae(trained_like("matryoshka"), tmp_path / "m", "sparsify")
    assert not (tmp_path / "m").exists()
    with pytest.raises(InputError, match="unknown target"):
        export_sae(trained_like("topk"), tmp_path / "t", "onnx")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        export_sae(trained_like("topk"), tmp_path / "full", "saelens")
    assert (tmp_path / "full" / "keep.txt").read_text() == "x"
    odd = trained_like("topk")
    odd.infer = lambda pre: 2 * torch.relu(pre)  # type: ignore[method-assign]
    with pytest.raises(InputError, match="does not compute the plain 'topk'"):
        export_sae(odd, tmp_path / "odd", "saelens")


def test_cli_export_writes_the_card_with_the_run_figures(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medsae.cli import app

    run = tmp_path / "ws" / "saes" / "toy" / "topk_run"
    save_sae(run, trained_like("topk"))
    metrics = {"splits": {"test": {"48": {"r2": 0.8123, "l0": 5.0, "k_nominal": 5}}}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    res = CliRunner().invoke(app, ["export", str(run), str(tmp_path / "out"), "--to", "sparsify"])
    assert res.exit_code == 0, res.output
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| 48 | 0.8123 | 5 | 5 |" in card and "SparseCoder.load_from_disk" in card
    assert "divided by its L2 norm" in card
    again = export_run(run, tmp_path / "out", "saelens", force=True)
    assert (again / "sae_weights.safetensors").is_file() and not (
        again / "sae.safetensors"
    ).exists()
    np.testing.assert_array_equal(
        load_file(str(again / "sae_weights.safetensors"))["b_dec"].numpy(),
        trained_like("topk").b_dec.detach().numpy(),
    )
