"""Randomly initialised encoders: the paper's "random model" baseline, seeded and reproducible.

A random network shows how much of an SAE's apparent structure comes from the architecture
and the images alone. ``arch`` names the architecture: ``dinov3-vits16``, ``dinov3-vitb16``,
``dinov3-vitl16``, ``dinov3-vith16plus`` (configs built in code), a folder or JSON file
holding a ``DINOv3ViTConfig`` (``config.json``), or ``efficientnet-lite0``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medsae.encode.base import TorchImageEncoder
from medsae.errors import InputError

DEFAULT_ARCH = "dinov3-vits16"


def _dinov3_config(arch: str) -> Any:
    from transformers import DINOv3ViTConfig

    from medsae.encode.dinov3 import named_config

    path = Path(arch).expanduser()
    if path.exists():
        try:
            return DINOv3ViTConfig.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise InputError(path, f"cannot read a DINOv3ViTConfig: {e}") from e
    return named_config(arch)


def random_encoder(
    arch: str = DEFAULT_ARCH,
    seed: int = 0,
    input_size: int = 224,
    pooling: str = "cls",
    device: str = "auto",
) -> TorchImageEncoder:
    """A randomly initialised encoder of architecture ``arch``, weights drawn from ``seed``.

    Parameters
    ----------
    arch:
        ``dinov3-vits16`` | ``dinov3-vitb16`` | ``dinov3-vitl16`` | ``dinov3-vith16plus`` |
        a DINOv3 config folder or file | ``efficientnet-lite0``.
    seed:
        Seed of the initialisation; the same seed gives the same weights and embeddings.
    input_size:
        Side of the square input in pixels.
    pooling:
        ``cls`` or ``mean`` (DINOv3 architectures only; EfficientNet always averages).
    device:
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """
    enc: TorchImageEncoder
    if arch == "efficientnet-lite0":
        from medsae.encode.efficientnet import EfficientNetLite0Encoder

        enc = EfficientNetLite0Encoder(
            input_size=input_size, device=device, pretrained=False, seed=seed
        )
        options: dict[str, Any] = {"arch": arch, "seed": seed, "input_size": input_size}
        label = arch
    else:
        from medsae.encode.dinov3 import DINOv3Encoder, random_dinov3

        config = _dinov3_config(arch)
        net = random_dinov3(config, seed)
        path = Path(arch).expanduser()
        arch_ref = str(path.resolve()) if path.exists() else arch
        label = (
            "dinov3-custom"
            if path.exists()
            else arch
            if arch.startswith("dinov3")
            else f"dinov3-{arch}"
        )
        enc = DINOv3Encoder(
            model=arch_ref,
            pooling=pooling,
            input_size=input_size,
            device=device,
            _net=net,
            _fingerprint=f"random-init:{label}:seed={seed}",
        )
        options = {"arch": arch_ref, "seed": seed, "input_size": input_size, "pooling": pooling}
    enc.name = f"random-{label}"
    enc.registry_name = "random"
    enc.options = options
    enc.weights_fingerprint = f"random-init:{label}:seed={seed}"
    return enc
