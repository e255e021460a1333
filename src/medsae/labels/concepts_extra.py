"""Slice-geometry concepts: where a slice lies along its axis and how much of it is body.

Two facets of labels, with fixed, documented bins (never fitted to any data):

``position`` (from the slice table's ``rel_position``, 0..1 along the slice's axis)
    * ``position=edge``: the outer :data:`EDGE_FRACTION` (15%) at either end of the axis
      (``rel_position < 0.15`` or ``> 0.85``): the first and last slices of the scanned
      volume, e.g. through the body surface (coronal, sagittal) or the ends of the field of
      view (axial);
    * ``position=central``: the rest.

``coverage`` (from the stored slice image)
    The foreground fraction ``c = |{pixels > FOREGROUND_LEVEL}| / |pixels|`` of the uint8
    slice image (:data:`FOREGROUND_LEVEL` = 13, 5% of the display range: above air, the CT
    padding and MRI background noise), binned at :data:`COVERAGE_EDGES` (15%, 30%):

    * ``coverage=sliver``: ``c < 0.15`` (a sliver through the body's edge);
    * ``coverage=partial``: ``0.15 <= c < 0.30``;
    * ``coverage=full``: ``c >= 0.30`` (a full cross-section).

The words of these labels are in :mod:`medsae.labels.words`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from medsae.errors import ArtifactError

EDGE_FRACTION = 0.15
FOREGROUND_LEVEL = 13
COVERAGE_EDGES = (0.15, 0.30)
COVERAGE_VALUES = ("sliver", "partial", "full")
POSITION_VALUES = ("edge", "central")
EXTRA_FACETS = ("position", "coverage")


def is_edge(rel: Any) -> Any:
    """Whether a relative position (a float or an array of them) lies in the outer
    :data:`EDGE_FRACTION` at either end of the slice axis."""
    return (rel < EDGE_FRACTION) | (rel > 1.0 - EDGE_FRACTION)


def foreground_fraction(images: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Share of pixels above :data:`FOREGROUND_LEVEL` per slice (float64 ``(N,)``).

    ``images``: uint8 ``(N, S, S)`` or ``(N, S, S, 3)`` (colour images use the channel mean);
    read in chunks of ``chunk`` slices so memory-mapped arrays stay on disk.
    """
    arr = images
    if arr.ndim not in (3, 4):
        raise ArtifactError(
            f"slice images have shape {arr.shape}; expected (N, S, S) or (N, S, S, 3)"
        )
    out = np.empty(arr.shape[0], dtype=np.float64)
    for start in range(0, arr.shape[0], chunk):
        part = np.asarray(arr[start : start + chunk], dtype=np.float32)
        if part.ndim == 4:
            part = part.mean(axis=-1)
        out[start : start + chunk] = (part > FOREGROUND_LEVEL).mean(axis=(1, 2))
    return out


def extra_labels(
    table: pd.DataFrame, images: np.ndarray | None
) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Names, values and defined masks (bool ``(N,)`` each) of the position and coverage labels.

    Position labels need the ``rel_position`` column (undefined where it is null); coverage
    labels need ``images`` with one image per table row. A facet without its input is left out.
    """
    names: list[str] = []
    values: list[np.ndarray] = []
    defined: list[np.ndarray] = []
    if "rel_position" in table.columns:
        rel = pd.to_numeric(table["rel_position"], errors="coerce").to_numpy(dtype=np.float64)
        known = np.isfinite(rel)
        edge = known & is_edge(rel)
        for value, mask in zip(POSITION_VALUES, (edge, known & ~edge), strict=True):
            names.append(f"position={value}")
            values.append(mask)
            defined.append(known)
    if images is not None:
        if len(images) != len(table):
            raise ArtifactError(
                f"slice images have {len(images)} rows but the slice table has {len(table)}"
            )
        which = np.digitize(foreground_fraction(images), COVERAGE_EDGES)
        known = np.ones(len(table), dtype=bool)
        for k, value in enumerate(COVERAGE_VALUES):
            names.append(f"coverage={value}")
            values.append(which == k)
            defined.append(known)
    return names, values, defined
