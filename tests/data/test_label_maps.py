"""Pixel label maps written by ``prepare --label-maps``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsae.data import PrepareConfig, prepare
from medsae.data.io import (
    LABEL_MAPS_FILE,
    has_label_maps,
    label_id,
    label_ids,
    open_label_maps,
)
from medsae.data.structures import ALL_STRUCTURES, GROUPS
from medsae.data.table import open_images, read_anatomy, read_slices
from medsae.errors import ArtifactError
from medsae.workspace import Workspace


def test_label_ids_cover_structures_and_groups() -> None:
    assert label_id(ALL_STRUCTURES[0]) == 1
    assert label_id(ALL_STRUCTURES[-1]) == len(ALL_STRUCTURES)
    lungs = label_ids(["lungs"])
    assert sorted(lungs.tolist()) == sorted(label_id(s) for s in GROUPS["lungs"])
    assert label_ids(["liver", "not-a-structure"]).tolist() == [label_id("liver")]
    with pytest.raises(KeyError, match="unknown structure"):
        label_id("spleen_left")


def test_prepare_without_label_maps_says_which_flag(phantom_root: Path, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    prepare(ws, PrepareConfig(source=str(phantom_root), size=32, step=4))
    assert not has_label_maps(ws.slices)
    with pytest.raises(ArtifactError, match="--label-maps"):
        open_label_maps(ws.slices)


def test_label_maps_are_row_aligned_with_images_and_presence(
    phantom_root: Path, tmp_path: Path
) -> None:
    ws = Workspace(tmp_path / "ws")
    prepare(ws, PrepareConfig(source=str(phantom_root), size=32, step=3, label_maps=True))
    maps = open_label_maps(ws.slices)
    images = open_images(ws.slices)
    table = read_slices(ws.slices)
    anatomy = read_anatomy(ws.slices)
    assert isinstance(maps, np.memmap)
    assert maps.dtype == np.uint8 and maps.shape == images.shape[:3] == (len(table), 32, 32)
    assert (ws.slices / LABEL_MAPS_FILE).is_file()
    # Every structure drawn in a slice's map is present (or at least annotated) in that slice;
    # big present structures are drawn.
    drawn_any = 0
    for r in range(len(table)):
        values = set(np.unique(maps[r]).tolist()) - {0}
        for v in values:
            assert anatomy.presence[r, v - 1] == 1, (table.slice_id[r], ALL_STRUCTURES[v - 1])
        big = np.flatnonzero(np.nan_to_num(anatomy.area[r]) > 0.05)
        for col in big:
            assert col + 1 in values, (table.slice_id[r], ALL_STRUCTURES[col])
            drawn_any += 1
        # labels lie on the body: background pixels of the image are label 0
        empty = images[r] == 0
        if empty.any():
            assert (maps[r][empty] > 0).mean() <= 0.2
    assert drawn_any > 10


def test_label_maps_match_areas_and_lie_on_the_image(phantom_root: Path, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    prepare(
        ws,
        PrepareConfig(source=str(phantom_root), size=24, step=2, label_maps=True, planes=["axial"]),
    )
    maps = np.asarray(open_label_maps(ws.slices))
    images = open_images(ws.slices)
    table = read_slices(ws.slices)
    anatomy = read_anatomy(ws.slices)
    col = ALL_STRUCTURES.index("liver")
    area = np.nan_to_num(anatomy.area[:, col])
    drawn = (maps == label_id("liver")).mean(axis=(1, 2))
    rows = area > 0.02
    assert rows.sum() >= 3
    # the phantom's 24 x 24 axial grid is stored at 24 px: pixel shares equal voxel shares
    np.testing.assert_allclose(drawn[rows], area[rows], atol=1e-6)
    # spatially aligned with the image: CT lungs are dark, CT vertebrae bright
    ct = (table["modality"] == "CT").to_numpy()
    lungs = np.isin(maps[ct], label_ids(["lungs"]))
    bone = np.isin(maps[ct], label_ids(["spine"]))
    assert lungs.sum() > 20 and bone.sum() > 20
    ct_images = np.asarray(images[ct], dtype=np.float64)
    assert ct_images[lungs].mean() + 60 < ct_images[bone].mean()
