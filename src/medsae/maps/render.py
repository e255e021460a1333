"""Rendering feature maps: a diverging colour map, transparent overlays and composites as PNG.

Colours: a signed map ``m`` is divided by ``v = max |m|`` (or a given ``vmax``); ``t = m / v``
in ``[-1, 1]`` is coloured by linear interpolation between the stops of :data:`COLOUR_STOPS`
(blue for negative contributions, transparent-white at 0, red to yellow for positive ones).
The transparent overlay has alpha ``255 |t|^0.75``, so positions that contribute nothing
leave the slice visible; the composite blends it over the grey image with ``opacity``.
"""

from __future__ import annotations

import io

import numpy as np

# (t, (r, g, b)) stops of the diverging colour map, t in [-1, 1].
COLOUR_STOPS: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (-1.0, (49, 54, 149)),
    (-0.5, (116, 173, 209)),
    (0.0, (255, 255, 255)),
    (0.35, (244, 109, 67)),
    (0.7, (215, 48, 39)),
    (1.0, (255, 230, 60)),
)


def colour_bar_css() -> str:
    """A CSS ``linear-gradient`` of :data:`COLOUR_STOPS` (for a colour bar beside an overlay)."""
    stops = ", ".join(f"rgb({r},{g},{b}) {100 * (t + 1) / 2:.0f}%" for t, (r, g, b) in COLOUR_STOPS)
    return f"linear-gradient(to right, {stops})"


def scale_of(values: np.ndarray, vmax: float | None = None) -> float:
    """The value mapped to the ends of the colour map: ``vmax`` or ``max |values|`` (> 0)."""
    v = float(vmax) if vmax is not None else float(np.max(np.abs(values))) if values.size else 0.0
    return v if v > 0 and np.isfinite(v) else 1.0


def colourise(values: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """RGBA uint8 ``(H, W, 4)`` of a signed map (module docstring)."""
    t = np.clip(np.asarray(values, dtype=np.float64) / scale_of(values, vmax), -1.0, 1.0)
    xs = np.array([s for s, _ in COLOUR_STOPS])
    rgb = np.stack(
        [np.interp(t, xs, np.array([c[i] for _, c in COLOUR_STOPS], float)) for i in range(3)],
        axis=-1,
    )
    alpha = 255.0 * np.abs(t) ** 0.75
    return np.concatenate([rgb, alpha[..., None]], axis=-1).round().astype(np.uint8)


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def overlay_png(values: np.ndarray, vmax: float | None = None) -> bytes:
    """PNG bytes of the transparent RGBA overlay of a signed pixel map."""
    return _png(colourise(values, vmax))


def composite(image_u8: np.ndarray, values: np.ndarray, opacity: float = 0.7) -> np.ndarray:
    """RGB uint8 ``(S, S, 3)``: the overlay of ``values`` blended over the slice image.

    ``out = (1 - opacity * alpha) image + opacity * alpha colour`` per pixel, with ``alpha``
    in [0, 1] from :func:`colourise`. Raises ValueError when the shapes differ.
    """
    img = np.asarray(image_u8)
    grey = img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=-1)
    if grey.shape[:2] != values.shape:
        raise ValueError(f"image {img.shape} and map {values.shape} differ in size")
    rgba = colourise(values).astype(np.float64)
    a = np.clip(opacity, 0.0, 1.0) * rgba[..., 3:4] / 255.0
    out = (1 - a) * grey.astype(np.float64) + a * rgba[..., :3]
    return np.asarray(out.round().clip(0, 255).astype(np.uint8))


def composite_png(image_u8: np.ndarray, values: np.ndarray, opacity: float = 0.7) -> bytes:
    """PNG bytes of :func:`composite`."""
    return _png(composite(image_u8, values, opacity))
