"""The phantom dataset goes through prepare and split; reruns are skipped, edits make it stale."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medsae.data import PrepareConfig, SplitConfig, make_phantom, prepare, split
from medsae.data.structures import ALL_STRUCTURES, STRUCTURES_BY_MODALITY
from medsae.data.table import SLICE_COLUMNS, open_images, read_anatomy, read_slices, read_split
from medsae.workspace import Workspace

from .conftest import TINY


@pytest.fixture(scope="module")
def prepared(phantom_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("ws"))
    prepare(ws, PrepareConfig(source=str(phantom_root), size=32, step=2))
    split(ws, SplitConfig())
    return ws


def test_layout_matches_totalsegmentator(phantom_root: Path) -> None:
    assert (
        (phantom_root / "ct" / "meta.csv").read_text().startswith("image_id;age;gender;institute")
    )
    assert (
        "magnetic_field_strength" in (phantom_root / "mri" / "meta.csv").read_text().splitlines()[0]
    )
    seg = phantom_root / "ct" / "s0001" / "segmentations"
    assert {p.name[:-7] for p in seg.iterdir()} == set(STRUCTURES_BY_MODALITY["CT"])
    assert (phantom_root / "mri" / "s0001" / "mri.nii.gz").is_file()


def test_phantom_is_deterministic(tmp_path: Path) -> None:
    cfg = TINY.model_copy(update={"ct_subjects": 1, "mri_subjects": 1})
    a, b = make_phantom(tmp_path / "a", cfg), make_phantom(tmp_path / "b", cfg)
    for rel in (
        "ct/s0001/ct.nii.gz",
        "mri/s0001/mri.nii.gz",
        "ct/s0001/segmentations/liver.nii.gz",
    ):
        np.testing.assert_array_equal(nib.load(a / rel).get_fdata(), nib.load(b / rel).get_fdata())
    assert (a / "ct/meta.csv").read_text() == (b / "ct/meta.csv").read_text()
    c = make_phantom(tmp_path / "c", cfg.model_copy(update={"seed": cfg.seed + 1}))
    assert not np.array_equal(
        nib.load(a / "ct/s0001/ct.nii.gz").get_fdata(),
        nib.load(c / "ct/s0001/ct.nii.gz").get_fdata(),
    )


def test_slices_artifact(prepared: Workspace) -> None:
    table = read_slices(prepared.slices)
    assert list(table.columns) == list(SLICE_COLUMNS)
    images = open_images(prepared.slices)
    assert images.shape == (len(table), 32, 32) and images.dtype == np.uint8
    assert set(table["modality"]) == {"CT", "MR"}
    assert set(table["plane"]) == {"axial", "coronal", "sagittal"}
    # CT and MRI subject ids collide; the keys keep them apart
    assert {"CT:s0001", "MR:s0001"} <= set(table["subject_key"])
    assert table["slice_id"].is_unique
    assert set(table["sex"].dropna()) <= {"M", "F"}
    assert table.loc[table.modality == "CT", "window_width"].notna().all()
    assert table.loc[table.modality == "MR", "window_width"].isna().all()
    assert (table["intensity_high"] > table["intensity_low"]).all()


def test_anatomy_missing_vs_absent(prepared: Workspace) -> None:
    table = read_slices(prepared.slices)
    anat = read_anatomy(prepared.slices)
    assert anat.structures == list(ALL_STRUCTURES)
    ct = (table["modality"] == "CT").to_numpy()
    lung_left = anat.column("lung_left")
    lobe = anat.column("lung_upper_lobe_left")
    assert (lung_left[ct] == -1).all() and (lobe[~ct] == -1).all()
    assert (lung_left[~ct] >= 0).all() and (lobe[ct] >= 0).all()
    # present <=> positive area; missing <=> NaN area
    assert np.array_equal(anat.presence == 1, anat.area > 0)
    assert np.array_equal(anat.presence == -1, np.isnan(anat.area))
    # brain only above the neck: axial brain slices lie higher than axial bladder slices
    ax = (table["plane"] == "axial").to_numpy()
    brain = table.loc[ax & (anat.column("brain") == 1), "position_mm"]
    bladder = table.loc[ax & (anat.column("urinary_bladder") == 1), "position_mm"]
    if len(brain) and len(bladder):
        assert brain.min() > bladder.max()


def test_labelled_range_restriction(prepared: Workspace) -> None:
    table = read_slices(prepared.slices)
    anat = read_anatomy(prepared.slices)
    for _, g in table.groupby(["subject_key", "plane"]):
        rows = g.index.to_numpy()
        assert (anat.presence[rows] == 1).any(axis=1)[[0, -1]].all()


def test_split_is_subject_level_with_held_out_institutes(prepared: Workspace) -> None:
    table = read_slices(prepared.slices)
    sp = read_split(prepared.split)
    assert set(sp["subject_key"]) == set(table["subject_key"])
    inst = table.drop_duplicates("subject_key").set_index("subject_key")["institute"]
    for key, s in zip(sp["subject_key"], sp["split"], strict=True):
        assert (s == "test") == (inst[key] in {"A", "D", "E"})


def test_rerun_is_skipped_and_edit_makes_stale(phantom_copy: Path, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    cfg = PrepareConfig(source=str(phantom_copy / "mri"), size=16, step=4)
    first = prepare(ws, cfg)
    assert first.status == "built"
    assert prepare(ws, cfg).skipped
    meta = phantom_copy / "mri" / "meta.csv"
    meta.write_text(meta.read_text() + "\n")
    again = prepare(ws, cfg)
    assert again.status == "rebuilt" and "input 'source' changed" in again.reason


def test_resume_after_interruption(
    phantom_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import medsae.data.prepare_stage as stage

    ws = Workspace(tmp_path / "ws")
    cfg = PrepareConfig(source=str(phantom_copy / "ct"), size=16, step=4)
    calls: list[str] = []
    real = stage.process_case

    def interrupted(case, config, piece):  # type: ignore[no-untyped-def]
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(case.key)
        return real(case, config, piece)

    monkeypatch.setattr(stage, "process_case", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(ws, cfg)
    assert not ws.slices.exists()
    calls.clear()
    monkeypatch.setattr(
        stage, "process_case", lambda c, k, p: (calls.append(c.key), real(c, k, p))[1]
    )
    out = prepare(ws, cfg)
    assert calls == ["CT:s0003"]  # the two finished volumes were not redone
    assert out.manifest["counts"]["volumes"] == 3
    assert json.loads((ws.slices / "failures.json").read_text())["failures"] == []


def test_workers_give_the_same_result(phantom_root: Path, tmp_path: Path) -> None:
    cfg = PrepareConfig(source=str(phantom_root / "mri"), size=16, step=4)
    a, b = Workspace(tmp_path / "a"), Workspace(tmp_path / "b")
    prepare(a, cfg)
    prepare(b, cfg.model_copy(update={"workers": 2}))
    np.testing.assert_array_equal(open_images(a.slices), open_images(b.slices))
    assert read_slices(a.slices)["slice_id"].tolist() == read_slices(b.slices)["slice_id"].tolist()
