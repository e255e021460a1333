"""Pixel label maps of the ``slices`` artifact (written by ``medsae prepare --label-maps``).

``WS/slices/label_maps.npy``
    uint8 ``(N, S, S)``, row-aligned with ``slices.parquet`` and ``images.npy``: the value of
    a pixel is ``1 + i`` for structure ``ALL_STRUCTURES[i]`` (:func:`label_id`) and 0 for
    background or unannotated tissue. Where structures overlap, the later one in
    ``ALL_STRUCTURES`` order wins. Masks are resampled to the stored image grid with
    nearest-neighbour interpolation and the same square-pixel fit, padding and cropping as
    the image. Off by default (``label_maps = false``): it costs ``S^2`` bytes per slice.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from medsae.data.structures import ALL_STRUCTURES, GROUPS
from medsae.errors import ArtifactError

# -- WS/slices/ (prepare) ----------------------------------------------------------------------
SLICES_FILE = "slices.parquet"
"""The slice table: one row per slice, columns ``medsae.data.table.SLICE_COLUMNS``."""
IMAGES_FILE = "images.npy"
"""uint8 ``(N, S, S)`` or ``(N, S, S, 3)`` slice images, row-aligned with the table."""
PRESENCE_FILE = "anatomy_presence.npy"
"""int8 ``(N, n_structures)``: 1 present, 0 absent, -1 not annotated."""
AREA_FILE = "anatomy_area.npy"
"""float32 ``(N, n_structures)``: share of the slice's body pixels per structure."""
STRUCTURES_FILE = "structures.json"
"""The structure names of the anatomy columns."""
LABELS_FILE = "labels.json"
"""Imported slices only: the slice-table columns that are user labels (probe tasks, labels)."""
FAILURES_FILE = "failures.json"
"""Subjects that could not be prepared, with the reason, and warnings."""
LABEL_MAPS_FILE = "label_maps.npy"

# -- WS/slices/.slices.partial/pieces/<subject>/ (one volume, before concatenation) ----------
PIECE_ROWS = "rows.parquet"
"""The volume's rows of the slice table."""
PIECE_IMAGES = IMAGES_FILE
"""The volume's slice images."""
PIECE_PRESENCE = "presence.npy"
"""The volume's anatomy presence rows."""
PIECE_AREA = "area.npy"
"""The volume's anatomy area rows."""

# -- WS/split/ ----------------------------------------------------------------------------------
SPLIT_FILE = "split.parquet"
"""Subject -> train / val / test."""

# -- the demo's phantom dataset ---------------------------------------------------------------------
PHANTOM_MARKER = ".medsae-phantom.json"
"""The settings a phantom folder was written with (it is rewritten when they change)."""

LABEL_MAPS_FLAG = "medsae prepare --label-maps"

_ID = {s: i + 1 for i, s in enumerate(ALL_STRUCTURES)}
if len(_ID) > 255:  # pragma: no cover - the structure list is fixed
    raise RuntimeError("more than 255 structures do not fit uint8 label maps")


def label_id(structure: str) -> int:
    """The label-map value of a structure of ``ALL_STRUCTURES`` (1-based)."""
    try:
        return _ID[structure]
    except KeyError:
        raise KeyError(
            f"unknown structure {structure!r}; see medsae.data.structures.ALL_STRUCTURES"
        ) from None


def label_ids(names: Iterable[str]) -> np.ndarray:
    """uint8 label values of structures and groups (a group stands for all its members).

    Unknown names are ignored; the result is sorted and unique (possibly empty).
    """
    ids: set[int] = set()
    for name in names:
        if name in _ID:
            ids.add(_ID[name])
        elif name in GROUPS:
            ids.update(_ID[s] for s in GROUPS[name])
    return np.asarray(sorted(ids), dtype=np.uint8)


def has_label_maps(slices_dir: Path) -> bool:
    """Whether the ``slices`` artifact holds label maps."""
    return (Path(slices_dir) / LABEL_MAPS_FILE).is_file()


def open_label_maps(slices_dir: Path) -> np.ndarray:
    """The label maps, memory-mapped read-only (uint8 ``(N, S, S)``).

    Raises :class:`ArtifactError` naming the flag that writes them when they are missing.
    """
    p = Path(slices_dir) / LABEL_MAPS_FILE
    if not p.is_file():
        raise ArtifactError(
            f"{p}: no pixel label maps in this workspace; prepare it with `{LABEL_MAPS_FLAG}` "
            "(or `label_maps = true` in the [prepare] table)"
        )
    return np.load(p, mmap_mode="r")
