"""DINOv3 vision transformers through Hugging Face transformers (``DINOv3ViTModel``).

Weights come from a local folder (``save_pretrained`` layout: ``config.json`` +
``model.safetensors``), from the local Hugging Face cache, or from the hub only when the user
allows network access. Nothing is ever downloaded silently.

Pooling
    ``cls``: the CLS token after the final layer norm (``pooler_output``; the paper's choice).
    ``mean``: the mean of the patch tokens after the final norm, ``z = 1/P sum_p h_p``; the
    CLS and register tokens are excluded.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsae.encode.base import TorchImageEncoder
from medsae.encode.spatial import SpatialFeatures
from medsae.errors import InputError

DEFAULT_MODEL = "facebook/dinov3-vitl16-pretrain-lvd1689m"
POOLINGS = ("cls", "mean")

# Shapes of the released DINOv3 ViT backbones (for random baselines built in code).
NAMED_CONFIGS: dict[str, dict[str, Any]] = {
    "vits16": {
        "hidden_size": 384,
        "num_hidden_layers": 12,
        "num_attention_heads": 6,
        "intermediate_size": 1536,
    },
    "vitb16": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
    "vitl16": {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
    },
    "vith16plus": {
        "hidden_size": 1280,
        "num_hidden_layers": 32,
        "num_attention_heads": 20,
        "intermediate_size": 5120,
        "use_gated_mlp": True,
    },
}
_COMMON: dict[str, Any] = {
    "patch_size": 16,
    "num_register_tokens": 4,
    "layerscale_value": 1e-5,
    "key_bias": False,
}

GET_WEIGHTS_HELP = (
    "download the model once on a machine with access (accept its licence on huggingface.co, "
    "then `huggingface-cli download {model} --local-dir DIR`), copy DIR here and pass "
    "`--option model=DIR`; or allow the download with `--option allow_network=true` "
    "(and HF_HUB_OFFLINE unset)"
)


def availability() -> tuple[bool, str]:
    """Whether transformers with DINOv3 is importable (weights are checked when loading)."""
    try:
        from transformers import DINOv3ViTModel  # noqa: F401
    except ImportError:
        return False, "pip install 'medsae[dinov3]' (transformers>=4.56)"
    return True, "needs weights: --option model=DIR (local folder) or a cached hub id"


def named_config(arch: str) -> Any:
    """A ``DINOv3ViTConfig`` for ``vits16``/``vitb16``/``vitl16``/``vith16plus`` (``dinov3-`` prefix optional)."""
    from transformers import DINOv3ViTConfig

    key = arch.removeprefix("dinov3-").removeprefix("dinov3_")
    if key not in NAMED_CONFIGS:
        known = ", ".join(f"dinov3-{k}" for k in NAMED_CONFIGS)
        raise InputError("arch", f"unknown DINOv3 architecture {arch!r}; known: {known}")
    return DINOv3ViTConfig(**_COMMON, **NAMED_CONFIGS[key])


def folder_fingerprint(folder: Path, edge_bytes: int = 1 << 20) -> str:
    """Content fingerprint of a model folder that is stable across copies and cheap for big files.

    SHA-256 over, for every file: its relative name, its size, and its first and last
    ``edge_bytes`` bytes (whole content for small files). Modification times are ignored, so
    the same weights copied to several machines give the same fingerprint.
    """
    h = hashlib.sha256()
    for path in sorted(
        p for p in Path(folder).rglob("*") if p.is_file() and ".cache" not in p.parts
    ):
        size = path.stat().st_size
        h.update(f"{path.relative_to(folder)}\0{size}\n".encode())
        with open(path, "rb") as f:
            h.update(f.read(edge_bytes))
            if size > 2 * edge_bytes:
                f.seek(size - edge_bytes)
                h.update(f.read(edge_bytes))
    return "sha256-edges:" + h.hexdigest()


def load_dinov3(model: str, allow_network: bool = False) -> tuple[torch.nn.Module, str]:
    """Load ``DINOv3ViTModel`` from a local folder or a hub id; returns (model, weights fingerprint)."""
    try:
        from transformers import DINOv3ViTModel
    except ImportError as e:
        raise InputError(
            "dinov3", "transformers with DINOv3 is not installed; pip install 'medsae[dinov3]'"
        ) from e
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise InputError(
                path,
                "not a DINOv3 model folder (config.json missing); "
                + GET_WEIGHTS_HELP.format(model=DEFAULT_MODEL),
            )
        try:
            net = DINOv3ViTModel.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as e:
            raise InputError(path, f"cannot load DINOv3 weights: {e}") from e
        return net, folder_fingerprint(path)
    looks_like_hub_id = model.count("/") == 1 and not model.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise InputError(
            model, "DINOv3 model folder not found; " + GET_WEIGHTS_HELP.format(model=DEFAULT_MODEL)
        )
    hub_offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
    try:  # the local Hugging Face cache never touches the network
        net = DINOv3ViTModel.from_pretrained(model, local_files_only=True)
        return net, f"hub:{model}@{getattr(net.config, '_commit_hash', None) or 'cached'}"
    except OSError:
        pass
    if not allow_network or hub_offline:
        why = "HF_HUB_OFFLINE is set" if hub_offline else "network access is not allowed"
        raise InputError(
            model,
            f"DINOv3 weights are not in the local Hugging Face cache and {why}; "
            + GET_WEIGHTS_HELP.format(model=model),
        )
    try:
        net = DINOv3ViTModel.from_pretrained(model, token=os.environ.get("HF_TOKEN"))
    except OSError as e:
        raise InputError(
            model,
            f"cannot download DINOv3 weights ({e}); the model is gated: accept its licence and set HF_TOKEN",
        ) from e
    return net, f"hub:{model}@{getattr(net.config, '_commit_hash', None) or 'unknown'}"


def random_dinov3(config: Any, seed: int) -> torch.nn.Module:
    """A ``DINOv3ViTModel`` with random weights drawn from ``seed`` (reproducible on any machine)."""
    from transformers import DINOv3ViTModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DINOv3ViTModel(config)


class DINOv3Encoder(TorchImageEncoder):
    """DINOv3 ViT embeddings: CLS after the final norm, or the mean of patch tokens.

    Parameters
    ----------
    model:
        A local folder (``config.json`` + weights) or a hub id such as
        ``facebook/dinov3-vitl16-pretrain-lvd1689m`` (taken from the local cache; downloaded
        only with ``allow_network=True``).
    pooling:
        ``cls`` (``pooler_output``, the paper's choice) or ``mean`` (patch tokens only).
    input_size:
        Side of the square input, a multiple of the patch size (224 default; the paper used 1024).
    allow_network:
        Allow a download from the hub when the weights are not cached (never when
        HF_HUB_OFFLINE is set).
    device:
        ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``; bf16 autocast on GPU.
    """

    registry_name = "dinov3"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        pooling: str = "cls",
        input_size: int = 224,
        allow_network: bool = False,
        device: str = "auto",
        _net: torch.nn.Module | None = None,
        _fingerprint: str | None = None,
    ) -> None:
        super().__init__(device)
        if pooling not in POOLINGS:
            raise InputError(
                "pooling", f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}"
            )
        if _net is None:
            _net, _fingerprint = load_dinov3(str(model), allow_network=allow_network)
        self.model = _net
        cfg: Any = self.model.config
        patch = int(cfg.patch_size)
        if input_size % patch:
            raise InputError(
                "input_size", f"{input_size} is not a multiple of the patch size {patch}"
            )
        self.name = "dinov3"
        self.pooling = pooling
        self.input_size = int(input_size)
        self.dim = int(cfg.hidden_size)
        self.n_prefix = 1 + int(getattr(cfg, "num_register_tokens", 0))
        self.weights_fingerprint = _fingerprint
        model_ref = (
            str(Path(model).expanduser().resolve())
            if Path(model).expanduser().exists()
            else str(model)
        )
        self.options: dict[str, Any] = {
            "model": model_ref,
            "pooling": pooling,
            "input_size": self.input_size,
        }
        self._finish_model()

    def _features(self, x_bchw: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x_bchw)
        if self.pooling == "cls":
            return out.pooler_output
        return out.last_hidden_state[:, self.n_prefix :, :].mean(dim=1)

    def spatial_features(self, images_uint8: np.ndarray) -> SpatialFeatures:
        """The patch tokens after the final norm as a ``(dim, S/16, S/16)`` map (row-major grid).

        ``mean`` pooling: ``z = mean_p h_p`` exactly. ``cls`` pooling: the embedding is the CLS
        token, not an average of the patches; maps made from the patch tokens are approximate.
        """
        cfg: Any = self.model.config
        patch = int(cfg.patch_size)
        side = self.input_size // patch
        with torch.inference_mode():
            x_bchw = self._spatial_input(images_uint8)
            with self._precision():
                out = self.model(pixel_values=x_bchw)
            tokens = out.last_hidden_state[:, self.n_prefix :, :].float()
            emb = out.pooler_output.float() if self.pooling == "cls" else tokens.mean(dim=1)
            fmap = tokens.transpose(1, 2).reshape(tokens.shape[0], self.dim, side, side)
        exact = self.pooling == "mean"
        return SpatialFeatures(
            parts=[np.ascontiguousarray(fmap.cpu().numpy())],
            channels=[(0, self.dim)],
            scales=np.ones((fmap.shape[0], 1), dtype=np.float64),
            embedding=emb.cpu().numpy(),
            exact=exact,
            pooling=self.pooling,
            method=(
                "patch tokens, mean pooling (exact)"
                if exact
                else "patch tokens projected; the embedding is the CLS token (approximate)"
            ),
        )
