"""SAE checkpoints: a folder with ``cfg.json`` and ``sae.safetensors``.

``sae.safetensors`` holds the module's ``state_dict`` (float32 parameters and buffers, under
their module names); for the built-in architectures::

    W_enc              (n_latents, d_in)   pre = (x' - b_dec) @ W_enc.T + b_enc
    b_enc              (n_latents,)
    W_dec              (n_latents, d_in)   x_hat = z @ W_dec + b_dec
    b_dec              (d_in,)
    threshold          (n_latents,)        JumpReLU threshold (zeros for TopK / ReLU)
    samples_since_fire (n_latents,) int64  training samples since each latent last fired
    threshold_updates  () int64            batches folded into the threshold

``cfg.json`` is the architecture's config (``arch``, sizes, levels, k, input transform,
encoder and run names) plus ``schema_version`` (:data:`SCHEMA_VERSION`). Older checkpoints
load through :data:`MIGRATIONS`: version 1 (no ``schema_version``) held one flat config with
every architecture's fields and five tensors with ``W_enc`` transposed, ``(d_in, n_latents)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from medsae.atomic import atomic_path
from medsae.errors import ArtifactError, InputError
from medsae.sae.base import SparseAutoencoder
from medsae.sae.io import CFG, WEIGHTS
from medsae.sae.registry import build_sae, get, sae_config

CFG_FILE = CFG
WEIGHTS_FILE = WEIGHTS
SCHEMA_VERSION = 2
"""Version of the checkpoint layout written by :func:`save_sae`."""

Tensors = dict[str, torch.Tensor]


def _v1_to_v2(cfg: dict[str, Any], tensors: Tensors) -> tuple[dict[str, Any], Tensors]:
    """One flat config with every architecture's fields -> the architecture's own fields;
    ``W_enc`` stored ``(d_in, n_latents)`` -> the module's ``(n_latents, d_in)``; the training
    counters (not saved then) start at zero."""
    fields = get(str(cfg.get("arch"))).config_class.model_fields
    cfg = {k: v for k, v in cfg.items() if k in fields}
    out = dict(tensors)
    if "W_enc" in out:
        out["W_enc"] = out["W_enc"].t().contiguous()
    n = int(cfg.get("n_latents", 0))
    out.setdefault("samples_since_fire", torch.zeros(n, dtype=torch.int64))
    out.setdefault("threshold_updates", torch.zeros((), dtype=torch.int64))
    return cfg, out


MIGRATIONS: dict[int, Callable[[dict[str, Any], Tensors], tuple[dict[str, Any], Tensors]]] = {
    1: _v1_to_v2,
}
"""``version -> step`` upgrading a checkpoint's config and tensors to ``version + 1``."""


def migrate(cfg: dict[str, Any], tensors: Tensors) -> tuple[dict[str, Any], Tensors]:
    """Bring a checkpoint of any known ``schema_version`` to :data:`SCHEMA_VERSION`."""
    cfg = dict(cfg)
    version = int(cfg.pop("schema_version", 1))
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"schema_version {version} is newer than this medsae reads ({SCHEMA_VERSION}); "
            "upgrade medsae"
        )
    while version < SCHEMA_VERSION:
        cfg, tensors = MIGRATIONS[version](cfg, tensors)
        version += 1
    return cfg, tensors


def save_sae(folder: Path, sae: SparseAutoencoder) -> None:
    """Write ``cfg.json`` and ``sae.safetensors``, each atomically (:func:`~medsae.atomic.atomic_path`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        name: t.detach().cpu().contiguous().float()
        if t.is_floating_point()
        else t.detach().cpu().contiguous()
        for name, t in sae.state_dict().items()
    }
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    with atomic_path(folder / WEIGHTS_FILE, needed=size) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    cfg = {"schema_version": SCHEMA_VERSION, **sae.cfg.model_dump(mode="json")}
    with atomic_path(folder / CFG_FILE) as tmp:
        tmp.write_text(json.dumps(cfg, indent=2, sort_keys=True))


def load_sae(folder: str | Path, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """Load a run folder into its module, in eval mode, on ``device`` (CPU by default).

    Checkpoints of an older ``schema_version`` are migrated in memory (the files are left as
    they are). Raises :class:`~medsae.errors.ArtifactError` naming the file when the folder is
    not a checkpoint, ``cfg.json`` is invalid or the weights are corrupt or of the wrong shape.
    """
    folder = Path(folder)
    cfg_path, w_path = folder / CFG_FILE, folder / WEIGHTS_FILE
    if not cfg_path.is_file() or not w_path.is_file():
        raise ArtifactError(
            f"{folder}: not an SAE checkpoint (needs {CFG_FILE} and {WEIGHTS_FILE}); run `medsae train`"
        )
    try:
        raw = json.loads(cfg_path.read_text())
        if not isinstance(raw, dict):
            raise ValueError("cfg.json must hold an object")
    except (json.JSONDecodeError, ValueError) as e:
        raise ArtifactError(f"{cfg_path}: invalid SAE config: {e}") from e
    try:
        tensors = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ArtifactError(
            f"{w_path}: corrupt or unreadable weights ({e}); retrain with `medsae train --force`"
        ) from e
    try:
        data, tensors = migrate(raw, tensors)
        cfg = sae_config(data)
    except (InputError, ValidationError, ValueError) as e:
        raise ArtifactError(f"{cfg_path}: invalid SAE config: {e}") from e
    sae = build_sae(cfg)
    expected = sae.state_dict()
    for name, ref in expected.items():
        if name not in tensors:
            raise ArtifactError(f"{w_path}: tensor {name!r} missing")
        if tuple(tensors[name].shape) != tuple(ref.shape):
            raise ArtifactError(
                f"{w_path}: tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                f"expected {tuple(ref.shape)} from {cfg_path}"
            )
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise ArtifactError(f"{w_path}: unexpected tensor(s) {extra} for arch {cfg.arch!r}")
    sae.load_state_dict({name: t.to(expected[name].dtype) for name, t in tensors.items()})
    for name, t in sae.state_dict().items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ArtifactError(f"{w_path}: tensor {name!r} holds NaN or Inf values")
    return sae.to(device).eval()
