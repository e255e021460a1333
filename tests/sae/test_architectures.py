"""Architectures from outside src: registered here, they train, resume, evaluate, load and
export.

``PenaltyTopK`` (per-sample TopK with an L2 penalty on the codes, its own option) and
``MeanOnly`` (fitted batch by batch without an optimiser: ``b_dec`` is the data mean) are
defined in this file only; nothing in src names them. Also: registry errors, entry points,
the discriminated union of configs and the migration of version-1 checkpoints.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from pydantic import Field
from safetensors.torch import load_file

from medsae.data.table import slices_with_split
from medsae.encode.store import EmbeddingStore
from medsae.errors import ArtifactError, InputError
from medsae.sae import registry
from medsae.sae.base import SparseAutoencoder, TrainOutput, batch_fvu
from medsae.sae.checkpoint import SCHEMA_VERSION, load_sae, save_sae
from medsae.sae.config import SAEConfig, TrainConfig
from medsae.sae.data import TrainStream, split_rows
from medsae.sae.export import export_run
from medsae.sae.kernels import Selection, topk_select
from medsae.sae.registry import build_sae, register, sae_config
from medsae.sae.stage import train, write_codes
from medsae.sae.trainer import TrainingInterrupted
from tests.support.synthetic import make_synthetic_workspace

V1 = Path(__file__).parent / "data" / "v1"


class PenaltyConfig(SAEConfig):
    arch: Literal["penalty-topk"] = "penalty-topk"
    k: int = Field(gt=0, description="Active latents per sample.")
    penalty: float = Field(default=0.1, ge=0, description="L2 penalty on the kept values.")


class PenaltyTopK(SparseAutoencoder):
    """Per-sample TopK whose loss adds ``penalty * mean_b sum_j z_bj^2`` (its own option)."""

    cfg: PenaltyConfig
    name = "penalty-topk"
    config_class = PenaltyConfig
    k_rule = "last"
    inference = "topk"

    def select_train(self, pre_bD: torch.Tensor) -> list[Selection]:
        return [topk_select(pre_bD, self.cfg.k)]

    def reconstructions(
        self, x_bd: torch.Tensor, main: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    ) -> list[torch.Tensor]:
        self._penalty = self.cfg.penalty * main[0][0].pow(2).sum() / x_bd.shape[0]
        return super().reconstructions(x_bd, main)

    def train_loss(self, x_bd: torch.Tensor) -> TrainOutput:
        out = super().train_loss(x_bd)
        out.loss = out.loss + self._penalty
        return out

    def infer(self, pre_bD: torch.Tensor) -> torch.Tensor:
        vals, idx = pre_bD.topk(self.cfg.k, dim=1, sorted=False)
        return torch.zeros_like(pre_bD).scatter_(1, idx, vals.clamp_min(0))

    @classmethod
    def name_part(cls, cfg: SAEConfig) -> str:
        assert isinstance(cfg, PenaltyConfig)
        return f"K{cfg.k}-P{cfg.penalty:g}"


class MeanOnlyConfig(SAEConfig):
    arch: Literal["mean-only"] = "mean-only"


class MeanOnly(SparseAutoencoder):
    """Fitted, not optimised: ``b_dec`` is the mean of every training batch seen."""

    name = "mean-only"
    config_class = MeanOnlyConfig
    trained_by = "fit"
    count: torch.Tensor
    total: torch.Tensor

    def __init__(self, cfg: SAEConfig, fast: bool = True, seed: int = 0) -> None:
        super().__init__(cfg, fast, seed)
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))
        self.register_buffer("total", torch.zeros(cfg.d_in, dtype=torch.float64))

    def fit_step(self, x_bd: torch.Tensor) -> TrainOutput:
        self.count += x_bd.shape[0]
        self.total += x_bd.double().sum(0)
        self.b_dec.copy_((self.total / self.count).float())
        total_var = (x_bd - x_bd.mean(0)).pow(2).sum()
        fvu = batch_fvu(x_bd, self.b_dec.expand_as(x_bd), total_var)
        empty = torch.zeros(0, dtype=torch.int64)
        return TrainOutput(fvu, float(fvu), 0.0, 0.0, empty, None)

    def infer(self, pre_bD: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(pre_bD)


@pytest.fixture
def toy_archs() -> Iterator[None]:
    register(PenaltyTopK)
    register(MeanOnly)
    yield
    registry.REGISTRY.pop("penalty-topk")
    registry.REGISTRY.pop("mean-only")


SMALL = {"levels": [[16, 64]], "k": [[2, 4]], "epochs": 3, "batch_size": 64}


def test_outside_architecture_trains_resumes_evaluates_and_loads(
    tmp_path: Path, toy_archs: None
) -> None:
    from medsae.evaluate import evaluate

    from ..evaluate.conftest import small_config

    cfg = TrainConfig(
        arch=["penalty-topk", "mean-only"],
        arch_options={"penalty-topk": {"penalty": 0.25}},
        checkpoint_every_steps=4,
        **SMALL,  # type: ignore[arg-type]
    )
    ws_full, truth = make_synthetic_workspace(tmp_path / "full", dim=32)
    grid = train(ws_full, truth.encoder, cfg).manifest["extra"]
    assert grid["runs"] == ["mean-only_D64", "penalty-topk_D64_K4-P0.25"]
    ws, _ = make_synthetic_workspace(tmp_path / "ws", dim=32)
    with pytest.raises(TrainingInterrupted):
        train(ws, truth.encoder, cfg, stop_after_steps=10)
    assert train(ws, truth.encoder, cfg).status == "built"  # resumed from step 8
    for run in grid["runs"]:
        a, b = load_sae(ws_full.sae(truth.encoder, run)), load_sae(ws.sae(truth.encoder, run))
        assert type(a) is type(b) and a.cfg == b.cfg
        for key, t in a.state_dict().items():
            assert torch.equal(t, b.state_dict()[key]), (run, key)

    toy = load_sae(ws.sae(truth.encoder, "penalty-topk_D64_K4-P0.25"))
    assert isinstance(toy, PenaltyTopK) and toy.cfg.penalty == 0.25
    metrics = json.loads((ws.sae(truth.encoder, toy.cfg.run) / "metrics.json").read_text())
    test = metrics["splits"]["test"]["64"]
    assert test["k_nominal"] == 4 and abs(test["l0"] - 4) < 1e-9 and test["r2"] > 0.2

    mean = load_sae(ws.sae(truth.encoder, "mean-only_D64"))
    store = EmbeddingStore(ws.embeddings(truth.encoder))
    stream = TrainStream(
        store, split_rows(slices_with_split(ws.slices, ws.split), "train"), 64, 0, 4096
    )
    seen = np.concatenate([x for e in range(3) for _, x in stream.epoch_batches(e)])
    expected = mean.preprocess(torch.from_numpy(seen)).double().mean(0).float()
    torch.testing.assert_close(mean.b_dec, expected, rtol=1e-5, atol=1e-6)

    exported = export_run(ws.sae(truth.encoder, toy.cfg.run), tmp_path / "export", "sparsify")
    t = load_file(str(exported / "sae.safetensors"))
    x = toy.preprocess(torch.randn(16, 32))
    pre = torch.relu((x - t["b_dec"]) @ t["encoder.weight"].t() + t["encoder.bias"])
    acts, idx = pre.topk(4, dim=1)
    torch.testing.assert_close(
        torch.zeros_like(pre).scatter_(1, idx, acts), toy.encode(x), rtol=1e-5, atol=1e-5
    )

    write_codes(ws, truth.encoder, run=toy.cfg.run)
    meta = json.loads((ws.codes(truth.encoder, toy.cfg.run) / "codes.json").read_text())
    assert meta["mode"] == "topk"
    out = evaluate(ws, truth.encoder, toy.cfg.run, small_config(parts=["reconstruction"]))
    assert out.status == "built"


def test_registry_refuses_unknown_duplicate_and_mismatched_architectures() -> None:
    with pytest.raises(InputError, match="unknown 'nope'"):
        sae_config(arch="nope", d_in=4, n_latents=8)
    with pytest.raises(ValueError, match="unknown SAE architecture"):
        TrainConfig(arch=["nope"])

    class Clash(PenaltyTopK):
        name = "topk"

    with pytest.raises(TypeError, match="Literal\\['topk'\\]"):
        register(Clash)

    class Other(SparseAutoencoder):
        name = "topk"
        config_class = registry.get("topk").config_class

    with pytest.raises(ValueError, match="already registered"):
        register(Other)


def test_configs_are_a_discriminated_union_on_arch() -> None:
    cfg = sae_config(arch="relu", d_in=4, n_latents=8, l1_coefficient=0.1)
    assert type(cfg).__name__ == "ReLUConfig" and not hasattr(cfg, "k")
    with pytest.raises(ValueError, match="l1_coefficient"):
        sae_config(arch="topk", d_in=4, n_latents=8, k=2, l1_coefficient=0.1)
    per = sae_config(arch="matryoshka-perlevel", d_in=4, n_latents=8, levels=[2, 8], k=2,
                     k_levels=[1, 2])  # fmt: skip
    assert sae_config(per.model_dump()) == per
    assert SAEConfig(**per.model_dump()) == per  # the base class builds the registered one
    # the union itself, as a field type or an adapter, dispatches on the tag
    adapter = registry.config_adapter()
    assert adapter.validate_python(per.model_dump()) == per
    assert type(adapter.validate_python(cfg.model_dump())) is type(cfg)
    with pytest.raises(ValueError, match="does not match any of the expected tags"):
        adapter.validate_python({"arch": "nope", "d_in": 4, "n_latents": 8})


def test_entry_point_registers_an_architecture(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = importlib.metadata.EntryPoint(
        "penalty-topk", f"{__name__}:PenaltyTopK", registry.ENTRY_POINT_GROUP
    )
    real = importlib.metadata.entry_points

    def fake(**kw: object) -> object:
        if kw.get("group") == registry.ENTRY_POINT_GROUP:
            return [ep]
        return real(**kw)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    monkeypatch.setattr(registry, "_loaded", False)
    try:
        assert "penalty-topk" in registry.names()
        assert registry.get("penalty-topk") is PenaltyTopK
    finally:
        registry.REGISTRY.pop("penalty-topk", None)


@pytest.mark.parametrize("arch", ["matryoshka", "matryoshka-perlevel", "topk", "relu"])
def test_version_1_checkpoints_load_through_the_migration(tmp_path: Path, arch: str) -> None:
    """Checkpoints written by the previous layout (fixtures saved by that code) load and
    encode and decode as they did; saving again writes the current version."""
    expected = np.load(V1 / "expected.npz")
    assert "schema_version" not in json.loads((V1 / arch / "cfg.json").read_text())
    sae = load_sae(V1 / arch)
    assert sae.cfg.arch == arch and sae.cfg.run == f"{arch}_v1"
    x = torch.from_numpy(expected["x"])
    codes = sae.encode(x)
    # same values; the fixtures were computed with another thread count (last-bit rounding)
    np.testing.assert_allclose(codes.numpy(), expected[f"{arch}_codes"], rtol=1e-6, atol=1e-7)
    assert np.array_equal(codes.numpy() != 0, expected[f"{arch}_codes"] != 0)
    level = 8 if arch.startswith("matryoshka") else None
    np.testing.assert_allclose(
        sae.decode(codes, level=level).detach().numpy(),
        expected[f"{arch}_recon"],
        rtol=1e-6,
        atol=1e-7,
    )
    save_sae(tmp_path / "v2", sae)
    assert (
        json.loads((tmp_path / "v2" / "cfg.json").read_text())["schema_version"] == SCHEMA_VERSION
    )
    again = load_sae(tmp_path / "v2")
    torch.testing.assert_close(again.encode(x), codes, rtol=0, atol=0)


def test_newer_or_mismatched_checkpoints_are_clear_errors(tmp_path: Path) -> None:
    shutil.copytree(V1 / "topk", tmp_path / "new")
    cfg_path = tmp_path / "new" / "cfg.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "schema_version": 99}))
    with pytest.raises(ArtifactError, match="schema_version 99 is newer"):
        load_sae(tmp_path / "new")
    sae = build_sae(sae_config(arch="relu", d_in=8, n_latents=32))
    save_sae(tmp_path / "relu", sae)
    cfg_path = tmp_path / "relu" / "cfg.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "n_latents": 16,
                                    "levels": [16]}))  # fmt: skip
    with pytest.raises(ArtifactError, match="tensor 'W_enc' has shape"):
        load_sae(tmp_path / "relu")
