"""The encoder protocol, preprocessing written in torch, and the base of in-process encoders.

An encoder turns slice images, uint8 ``(B, S, S)`` (grayscale) or ``(B, S, S, 3)`` (multi-
window) exactly as stored in ``WS/slices/images.npy``, into float32 embeddings ``(B, dim)``.

In-process (torch) encoders split the work in two so that the runner can overlap them:
:meth:`TorchImageEncoder.preprocess` (uint8 -> normalised float tensor, run on a loader
thread) and :meth:`TorchImageEncoder.forward` (the model, run on the main thread).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from medsae.device import configure_cuda, resolve_device
from medsae.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@runtime_checkable
class Encoder(Protocol):
    """What every encoder offers (built-in, entry point or external adapter)."""

    name: str  # name of the embeddings it produces (the store folder by default)
    dim: int  # output dimension
    input_size: int  # side of the square model input, in pixels

    def encode(self, images_uint8: np.ndarray) -> np.ndarray:
        """Embeddings ``(B, dim)`` float32 of uint8 images ``(B, S, S)`` or ``(B, S, S, 3)``."""
        ...

    def metadata(self) -> dict[str, Any]:
        """What the store records: ``registry_name``, ``options``, ``weights_fingerprint``,
        ``preprocessing``."""
        ...


def check_images(images_uint8: np.ndarray, what: str = "images") -> None:
    """Raise :class:`InputError` unless ``images_uint8`` is uint8 ``(B, S, S)`` or ``(B, S, S, 3)``."""
    arr = np.asarray(images_uint8)
    if arr.dtype != np.uint8:
        raise InputError(what, f"expected uint8 images, got dtype {arr.dtype}")
    if not (arr.ndim == 3 or (arr.ndim == 4 and arr.shape[-1] == 3)):
        raise InputError(what, f"expected shape (B, S, S) or (B, S, S, 3), got {arr.shape}")


def uint8_to_tensor(images_uint8: np.ndarray) -> torch.Tensor:
    """uint8 images ``(B, S, S)`` / ``(B, S, S, 3)`` -> uint8 tensor ``(B, C, S, S)`` (C = 1 or 3)."""
    check_images(images_uint8)
    arr = np.ascontiguousarray(images_uint8)
    if not arr.flags.writeable:  # e.g. a view of the memory-mapped images.npy
        arr = arr.copy()
    x = torch.from_numpy(arr)
    return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)


def normalize_tensor(
    x_u8_bchw: torch.Tensor,
    size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Normalised float32 ``(B, 3, size, size)`` from a uint8 ``(B, C, S, S)`` tensor, on its device.

    ``x = (resize(u / 255) - mean_c) / std_c``: pixel values are scaled to [0, 1], resized
    with bilinear interpolation (antialiased when shrinking, as Hugging Face image processors
    do), grayscale is replicated to three channels (after resizing, which is cheaper), and
    each channel is standardised with ``mean``/``std`` given on the [0, 1] scale.
    """
    x_bchw = x_u8_bchw.to(torch.float32).div_(255.0)
    if tuple(x_bchw.shape[-2:]) != (size, size):
        shrink = x_bchw.shape[-1] > size or x_bchw.shape[-2] > size
        x_bchw = F.interpolate(
            x_bchw, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink
        )
    if x_bchw.shape[1] == 1:
        x_bchw = x_bchw.expand(-1, 3, -1, -1)
    mean_c = torch.tensor(mean, dtype=torch.float32, device=x_bchw.device).view(1, 3, 1, 1)
    std_c = torch.tensor(std, dtype=torch.float32, device=x_bchw.device).view(1, 3, 1, 1)
    return ((x_bchw - mean_c) / std_c).contiguous()


def to_model_input(
    images_uint8: np.ndarray,
    size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Normalised float32 CPU tensor ``(B, 3, size, size)`` from uint8 images (see :func:`normalize_tensor`)."""
    return normalize_tensor(uint8_to_tensor(images_uint8), size, mean, std)


class TorchImageEncoder:
    """Base of in-process encoders: a torch module, its preprocessing and its pooling.

    Subclasses set ``name``, ``registry_name``, ``dim``, ``input_size``, ``model``,
    ``options`` (what rebuilds the encoder), ``weights_fingerprint`` and implement
    :meth:`_features` (preprocessed ``(B, 3, S, S)`` tensor -> pooled ``(B, dim)``).
    """

    name: str
    registry_name: str
    dim: int
    input_size: int
    model: torch.nn.Module
    options: dict[str, Any]
    weights_fingerprint: str | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    pooling: str = "mean"
    channels_last: bool = False
    bf16_on_gpu: bool = True

    def __init__(self, device: str = "auto") -> None:
        self.device = resolve_device(device)
        configure_cuda(self.device)  # cudnn.benchmark: fixed input shapes

    def _finish_model(self) -> None:
        """Put the model in eval mode on the device (channels-last when asked)."""
        self.model.eval()
        self.model.requires_grad_(False)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model.to(self.device)

    def preprocess(self, images_uint8: np.ndarray) -> torch.Tensor:
        """uint8 images -> model input, on the loader thread.

        On the CPU: the normalised float tensor ``(B, 3, input_size, input_size)``. On a GPU:
        the uint8 tensor ``(B, C, S, S)`` in pinned memory (4x less to copy); resizing and
        normalisation then run on the GPU in :meth:`forward`.
        """
        if self.device.type == "cuda":
            return uint8_to_tensor(images_uint8).pin_memory()
        x = to_model_input(images_uint8, self.input_size, self.mean, self.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    @contextlib.contextmanager
    def _precision(self) -> Iterator[None]:
        if self.device.type == "cuda" and self.bf16_on_gpu:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                yield
        else:
            yield

    def _features(self, x_bchw: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _on_device(self, x_bchw: torch.Tensor) -> torch.Tensor:
        """Output of :meth:`preprocess` -> the normalised model input on the device."""
        x_bchw = x_bchw.to(self.device, non_blocking=True)
        if x_bchw.dtype == torch.uint8:
            x_bchw = normalize_tensor(x_bchw, self.input_size, self.mean, self.std)
            if self.channels_last:
                x_bchw = x_bchw.contiguous(memory_format=torch.channels_last)
        return x_bchw

    def forward(self, x_bchw: torch.Tensor) -> np.ndarray:
        """Output of :meth:`preprocess` -> float32 embeddings ``(B, dim)`` as a NumPy array."""
        with torch.inference_mode():
            x_bchw = self._on_device(x_bchw)
            with self._precision():
                feats_bd = self._features(x_bchw)
        return feats_bd.float().cpu().numpy()

    def _spatial_input(self, images_uint8: np.ndarray) -> torch.Tensor:
        """uint8 images -> the model input on the device (for ``spatial_features``)."""
        return self._on_device(self.preprocess(images_uint8))

    def encode(self, images_uint8: np.ndarray) -> np.ndarray:
        """Embeddings ``(B, dim)`` float32 of uint8 images ``(B, S, S)`` or ``(B, S, S, 3)``."""
        if len(images_uint8) == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            x = self.preprocess(images_uint8)
        return self.forward(x)

    def metadata(self) -> dict[str, Any]:
        return {
            "registry_name": self.registry_name,
            "options": dict(self.options),
            "weights_fingerprint": self.weights_fingerprint,
            "input_size": self.input_size,
            "preprocessing": {
                "scale": "uint8 / 255",
                "resize": f"bilinear to {self.input_size}x{self.input_size} (antialiased when shrinking)",
                "grayscale": "replicated to 3 channels",
                "mean": list(self.mean),
                "std": list(self.std),
                "pooling": self.pooling,
            },
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, input_size={self.input_size})"
