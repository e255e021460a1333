"""Bad inputs fail with messages naming the subject and file; the others finish."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medsae.data import PrepareConfig, prepare
from medsae.data.meta import read_meta_csv
from medsae.data.table import read_slices
from medsae.errors import InputError, StageFailures
from medsae.workspace import Workspace

from .conftest import save_nifti


def _break(ct: Path) -> dict[str, str]:
    """Break CT subjects in different ways; returns subject key -> expected words."""
    img = ct / "s0001" / "ct.nii.gz"
    img.write_bytes(img.read_bytes()[:300])  # truncated gzip
    (ct / "s0002" / "ct.nii.gz").unlink()  # missing image
    shutil.rmtree(ct / "s0003" / "segmentations")  # missing segmentation folder
    return {
        "CT:s0001": "s0001/ct.nii.gz",
        "CT:s0002": "missing image file",
        "CT:s0003": "missing segmentation folder",
    }


def test_failures_are_reported_and_previous_artifact_kept(
    phantom_copy: Path, tmp_path: Path
) -> None:
    ws = Workspace(tmp_path / "ws")
    cfg = PrepareConfig(source=str(phantom_copy), size=16, step=4)
    prepare(ws, cfg)
    before = read_slices(ws.slices)
    expected = _break(phantom_copy / "ct")
    with pytest.raises(StageFailures) as err:
        prepare(ws, cfg)
    assert sorted(err.value.failed) == sorted(expected)
    report = json.loads(err.value.report.read_text())
    for f in report["failures"]:
        assert expected[f["subject_key"]] in f["error"]
    assert read_slices(ws.slices).equals(before)  # the previous artifact stays
    out = prepare(ws, cfg, allow_failures=True)
    table = read_slices(ws.slices)
    assert set(table["modality"]) == {"MR"} and out.manifest["counts"]["failed"] == 3
    assert len(json.loads((ws.slices / "failures.json").read_text())["failures"]) == 3


@pytest.mark.parametrize(
    "kind", ["empty_seg", "mask_shape", "mask_affine", "four_d", "nan", "empty_volume"]
)
def test_bad_volumes(kind: str, phantom_copy: Path, tmp_path: Path) -> None:
    subj = phantom_copy / "mri" / "s0001"
    img = nib.load(subj / "mri.nii.gz")
    data, affine = np.asarray(img.dataobj), img.affine
    liver = subj / "segmentations" / "liver.nii.gz"
    words = {
        "empty_seg": "holds no mask files",
        "mask_shape": "differs from image shape",
        "mask_affine": "affine differs",
        "four_d": "expected a 3D volume",
        "nan": "NaN",
        "empty_volume": "empty volume",
    }[kind]
    if kind == "empty_seg":
        for p in (subj / "segmentations").iterdir():
            p.unlink()
    elif kind == "mask_shape":
        save_nifti(liver, np.zeros((5, 5, 5), np.uint8), affine)
    elif kind == "mask_affine":
        save_nifti(liver, np.zeros(data.shape, np.uint8), affine * np.array([[2], [1], [1], [1]]))
    elif kind == "four_d":
        save_nifti(subj / "mri.nii.gz", np.stack([data, data], axis=-1), affine)
    elif kind == "nan":
        bad = data.astype(np.float32)
        bad[1, 1, 1] = np.nan
        save_nifti(subj / "mri.nii.gz", bad, affine)
    elif kind == "empty_volume":
        save_nifti(subj / "mri.nii.gz", np.zeros((0, 4, 4), np.int16), affine)
    with pytest.raises(StageFailures) as err:
        prepare(
            Workspace(tmp_path / "ws"),
            PrepareConfig(source=str(phantom_copy / "mri"), size=16, step=4),
        )
    assert err.value.failed == ["MR:s0001"]
    error = json.loads(err.value.report.read_text())["failures"][0]["error"]
    assert words in error and "MR:s0001" in error


def test_meta_csv_variants(tmp_path: Path) -> None:
    p = tmp_path / "meta.csv"
    p.write_bytes("\ufeffimage_id;age;gender\ns0001;45;f\n".encode())
    df, warnings = read_meta_csv(p, "CT")
    assert list(df.columns)[:3] == ["image_id", "age", "gender"] and df["age"][0] == "45"
    assert any("missing column" in w for w in warnings)  # institute, kvp, ... read as unknown
    p.write_text("image_id,age,gender\ns0001,45,f\n")
    df, warnings = read_meta_csv(p, "CT")
    assert df["gender"][0] == "f" and any("comma-separated" in w for w in warnings)
    p.write_text("age;gender\n45;f\n")
    with pytest.raises(InputError, match="image_id"):
        read_meta_csv(p, "CT")


def test_non_numeric_age_fails_that_subject(phantom_copy: Path, tmp_path: Path) -> None:
    meta = phantom_copy / "mri" / "meta.csv"
    lines = meta.read_text().splitlines()
    parts = lines[1].split(";")
    parts[1] = "forty"
    lines[1] = ";".join(parts)
    meta.write_text("\n".join(lines) + "\n")
    with pytest.raises(StageFailures) as err:
        prepare(
            Workspace(tmp_path / "ws"),
            PrepareConfig(source=str(phantom_copy / "mri"), size=16, step=4),
        )
    assert err.value.failed == ["MR:s0001"]
    error = json.loads(err.value.report.read_text())["failures"][0]["error"]
    assert "'forty'" in error and "meta.csv" in error
