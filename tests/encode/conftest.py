"""Fixtures of the encode tests: a tiny workspace, a tiny DINOv3 folder, a plugin encoder."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path
from typing import Any

import pytest

from medsae.workspace import Workspace
from tests.support.synthetic import make_synthetic_workspace

FAKE_ADAPTER = Path(__file__).with_name("fake_adapter.py")


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSAE_PROGRESS", "0")


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    """18 slices of 32x32 grayscale images (2 subjects x 3 planes x 3 slices)."""
    workspace, _ = make_synthetic_workspace(
        tmp_path / "ws", n_subjects=2, slices_per_plane=3, dim=8, n_latents=32
    )
    return workspace


def tiny_dinov3_net() -> Any:
    """A DINOv3 network of a tiny config (hidden size 32, patch 8) with seeded random weights."""
    import torch
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    config = DINOv3ViTConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        patch_size=8,
        num_register_tokens=2,
        image_size=32,
    )
    torch.manual_seed(0)
    return DINOv3ViTModel(config)


@pytest.fixture(scope="session")
def tiny_dinov3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DINOv3 model folder (save_pretrained layout) with random weights of a tiny config."""
    folder = tmp_path_factory.mktemp("dinov3-tiny")
    tiny_dinov3_net().save_pretrained(folder)
    return folder


@pytest.fixture
def fake_adapter_command() -> str:
    return f"{sys.executable} {FAKE_ADAPTER}"


@pytest.fixture
def plugin_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register tests.encode.plugin_encoder:PixelStatsEncoder as entry point 'pixelstats'."""
    original = importlib.metadata.entry_points
    ep = importlib.metadata.EntryPoint(
        name="pixelstats",
        value="tests.encode.plugin_encoder:PixelStatsEncoder",
        group="medsae.encoders",
    )

    def entry_points(**kwargs: object) -> object:
        if kwargs.get("group") == "medsae.encoders":
            return [ep]
        return original(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
