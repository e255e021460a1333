"""SAE checkpoints: a folder with ``cfg.json`` and ``sae.safetensors``.

``sae.safetensors`` holds float32 tensors::

    W_enc     (d_in, n_latents)   pre = (x' - b_dec) @ W_enc + b_enc
    b_enc     (n_latents,)
    W_dec     (n_latents, d_in)   x_hat = z @ W_dec + b_dec
    b_dec     (d_in,)
    threshold (n_latents,)        JumpReLU threshold (zeros for TopK / ReLU)

``cfg.json`` is the :class:`~medsae.sae.config.SAEConfig` (architecture, sizes, levels, k,
input transform, encoder and run names).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from medsae.errors import ArtifactError
from medsae.sae.base import SparseAutoencoder
from medsae.sae.config import SAEConfig
from medsae.sae.io import CFG, WEIGHTS
from medsae.sae.registry import build_sae

CFG_FILE = CFG
WEIGHTS_FILE = WEIGHTS


def save_sae(folder: Path, sae: SparseAutoencoder) -> None:
    """Write ``cfg.json`` and ``sae.safetensors`` (each through a temporary file and a rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        "W_enc": sae.W_enc.detach().t().contiguous().float().cpu(),
        "b_enc": sae.b_enc.detach().float().cpu().contiguous(),
        "W_dec": sae.W_dec.detach().float().cpu().contiguous(),
        "b_dec": sae.b_dec.detach().float().cpu().contiguous(),
        "threshold": sae.threshold.detach().float().cpu().contiguous(),
    }
    tmp = folder / f".{WEIGHTS_FILE}.tmp-{os.getpid()}"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, folder / WEIGHTS_FILE)
    tmp_cfg = folder / f".{CFG_FILE}.tmp-{os.getpid()}"
    tmp_cfg.write_text(json.dumps(sae.cfg.model_dump(mode="json"), indent=2, sort_keys=True))
    os.replace(tmp_cfg, folder / CFG_FILE)


def load_sae(folder: str | Path, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """Load a run folder into its module, in eval mode, on ``device`` (CPU by default).

    Raises :class:`~medsae.errors.ArtifactError` naming the file when the folder is not a
    checkpoint, ``cfg.json`` is invalid or the weights are corrupt or of the wrong shape.
    """
    folder = Path(folder)
    cfg_path, w_path = folder / CFG_FILE, folder / WEIGHTS_FILE
    if not cfg_path.is_file() or not w_path.is_file():
        raise ArtifactError(
            f"{folder}: not an SAE checkpoint (needs {CFG_FILE} and {WEIGHTS_FILE}); run `medsae train`"
        )
    try:
        cfg = SAEConfig.model_validate(json.loads(cfg_path.read_text()))
    except (json.JSONDecodeError, ValidationError) as e:
        raise ArtifactError(f"{cfg_path}: invalid SAE config: {e}") from e
    try:
        tensors = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ArtifactError(
            f"{w_path}: corrupt or unreadable weights ({e}); retrain with `medsae train --force`"
        ) from e
    D, d = cfg.n_latents, cfg.d_in
    expected = {"W_enc": (d, D), "b_enc": (D,), "W_dec": (D, d), "b_dec": (d,), "threshold": (D,)}
    for name, shape in expected.items():
        if name not in tensors:
            raise ArtifactError(f"{w_path}: tensor {name!r} missing")
        if tuple(tensors[name].shape) != shape:
            raise ArtifactError(
                f"{w_path}: tensor {name!r} has shape {tuple(tensors[name].shape)}, expected {shape} from {cfg_path}"
            )
    sae = build_sae(cfg)
    with torch.no_grad():
        sae.W_enc.copy_(tensors["W_enc"].t())
        sae.b_enc.copy_(tensors["b_enc"])
        sae.W_dec.copy_(tensors["W_dec"])
        sae.b_dec.copy_(tensors["b_dec"])
        sae.threshold.copy_(tensors["threshold"])
    for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
        if not torch.isfinite(getattr(sae, name)).all():
            raise ArtifactError(f"{w_path}: tensor {name!r} holds NaN or Inf values")
    return sae.to(device).eval()
