"""An encoder registered through the ``medsae.encoders`` entry-point group in tests."""

from __future__ import annotations

from typing import Any

import numpy as np


class PixelStatsEncoder:
    """Pixel statistics (mean, std, min, max); NaN for images whose mean equals ``nan_mean``."""

    summary = "pixel statistics (test plugin)"
    dim = 4

    def __init__(self, nan_mean: float | None = None, scale: float = 1.0) -> None:
        self.name = "pixelstats"
        self.input_size = 0
        self.nan_mean = nan_mean
        self.scale = scale

    @staticmethod
    def availability() -> tuple[bool, str]:
        return True, "no weights"

    def encode(self, images_uint8: np.ndarray) -> np.ndarray:
        x = images_uint8.reshape(len(images_uint8), -1).astype(np.float32)
        out = np.stack([x.mean(1), x.std(1), x.min(1), x.max(1)], axis=1) * self.scale
        if self.nan_mean is not None:
            out[np.isclose(x.mean(1), self.nan_mean)] = np.nan
        return out

    def metadata(self) -> dict[str, Any]:
        return {
            "registry_name": "pixelstats",
            "options": {"nan_mean": self.nan_mean, "scale": self.scale},
            "weights_fingerprint": None,
            "input_size": 0,
            "preprocessing": {},
        }
