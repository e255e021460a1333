"""Display convention on an asymmetric volume; NIfTI folders with a table and label map; DICOM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsae.data import PrepareConfig, prepare
from medsae.data import geometry as geo
from medsae.data.table import open_images, read_anatomy, read_slices
from medsae.workspace import Workspace

from .conftest import save_nifti

# Stored in LPS voxel order: index i grows towards the patient's left, j towards posterior.
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _marked_volume() -> np.ndarray:
    """10 x 12 x 14 LPS volume: value 100 in the right-anterior-superior corner, 50 at left."""
    v = np.zeros((10, 12, 14), np.float32)
    v[:3, :3, -3:] = 100.0  # LPS: small i = right, small j = anterior, large k = superior
    v[-2:, 5:7, 5:7] = 50.0  # patient's left
    return v


def test_display_convention_on_asymmetric_volume() -> None:
    data = _marked_volume()
    ornt = geo.canonical_transform(LPS)
    ras = geo.reorient(data, ornt)
    assert ras[-1, -1, -1] == 100.0  # canonical: right, anterior, superior = high indices
    axial = geo.display_slice(ras, "axial", ras.shape[2] - 1)
    assert axial.shape == (12, 10)
    assert axial[0, 0] == 100.0 and axial[-1, -1] == 0.0  # right on image left, anterior up
    coronal = geo.display_slice(ras, "coronal", ras.shape[1] - 1)
    assert coronal.shape == (14, 10)
    assert coronal[0, 0] == 100.0  # patient right on image left, superior up
    sagittal = geo.display_slice(ras, "sagittal", ras.shape[0] - 1)
    assert sagittal.shape == (14, 12)
    assert sagittal[0, 0] == 100.0  # anterior on image left, superior up
    left = geo.display_slice(ras, "axial", 6)
    assert np.argwhere(left == 50.0)[:, 1].min() >= 8  # patient's left lands on image right


def test_anisotropic_spacing_is_resampled_not_dropped() -> None:
    layout = geo.slice_layout(rows=10, cols=20, row_mm=4.0, col_mm=1.0, size=40)
    assert (layout.scaled_rows, layout.scaled_cols) == (40, 20)  # 40 mm x 20 mm
    img = np.full((10, 20), 200, np.uint8)
    out = geo.fit_square(img, layout)
    assert out.shape == (40, 40)
    assert (out[:, :10] == 0).all() and (out[:, 10:30] == 200).all()  # padded left/right
    crop = geo.slice_layout(rows=10, cols=20, row_mm=4.0, col_mm=1.0, size=40, square="crop")
    assert crop.pixel_mm == pytest.approx(0.5)
    assert geo.fit_square(img, crop).min() == 200


def _nifti_folder(root: Path, study_type: str = "ct abdomen") -> Path:
    data = np.full((10, 12, 14), -1000.0, np.float32)
    data[2:8, 2:10, 2:12] = 40.0
    data[:3, :3, -3:] = 300.0  # bright marker in the right-anterior-superior corner
    save_nifti(root / "img" / "p1.nii.gz", data, LPS)
    labels = np.zeros((10, 12, 14), np.int16)
    labels[:3, :3, -3:] = (
        1  # "liver" in the right-anterior-superior corner: 9 voxels per axial slice
    )
    save_nifti(root / "lab" / "p1.nii.gz", labels, LPS)
    (root / "labels.json").write_text(json.dumps({"1": "liver", "2": "spleen"}))
    pd.DataFrame(
        {
            "PatientID": ["p1"],
            "path": ["img/p1.nii.gz"],
            "labels": ["lab/p1.nii.gz"],
            "age": ["61"],
            "sex": ["female"],
            "study_type": [study_type],
        }
    ).to_csv(root / "metadata.csv", index=False)
    return root


def test_nifti_folder_with_table_and_label_map(tmp_path: Path) -> None:
    src = _nifti_folder(tmp_path / "nif")
    ws = Workspace(tmp_path / "ws")
    cfg = PrepareConfig(
        source=str(src),
        size=24,
        restrict_to_labelled=False,
        column_map={"subject": "PatientID", "image": "path"},
    )
    prepare(ws, cfg)
    table, anat = read_slices(ws.slices), read_anatomy(ws.slices)
    assert set(table["source_kind"]) == {"nifti"} and set(table["subject_key"]) == {"CT:p1"}
    assert table["sex"].iloc[0] == "F" and table["age_group"].iloc[0] == "60-80"
    axial = table.index[table["plane"] == "axial"].to_numpy()
    liver = anat.column("liver")[axial]
    assert liver.tolist() == [0] * 11 + [1] * 3  # present only in the 3 top slices
    area = anat.area[axial, anat.structures.index("liver")]
    assert area[-1] == pytest.approx(9 / (10 * 12))
    assert (anat.column("spleen") == 0).all()  # named in the label map: absent, not missing
    assert (anat.column("kidney_left") == -1).all()  # not annotated: missing
    top = open_images(ws.slices)[axial[-1]]
    assert top[: top.shape[0] // 3, : top.shape[1] // 3].mean() > top.mean()  # marker is top-left


def test_dicom_test_files(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    src = tmp_path / "dcm"
    for name in ("CT_small.dcm", "MR_small.dcm"):
        (src / name[:2]).mkdir(parents=True)
        (src / name[:2] / name).write_bytes(Path(get_testdata_file(name)).read_bytes())
    ws = Workspace(tmp_path / "ws")
    prepare(ws, PrepareConfig(source=str(src), size=32))
    table = read_slices(ws.slices)
    assert set(table["source_kind"]) == {"dicom"}
    assert set(table["modality"]) == {"CT", "MR"}
    assert set(table["plane"]) == {"axial"}  # single-slice series: the other planes are skipped
    ct = table[table.modality == "CT"].iloc[0]
    assert ct["kvp"] == 120 and ct["manufacturer"] == "GE MEDICAL SYSTEMS"


def _write_series(folder: Path, n: int = 6) -> None:
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    series = generate_uid()
    order = [3, 0, 5, 1, 4, 2]  # files written out of order
    for f, k in enumerate(order[:n]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"im{f}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.Modality, ds.PatientID, ds.PatientSex, ds.PatientAge = "CT", "d1", "M", "070Y"
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, meta.MediaStorageSOPInstanceUID
        ds.StudyDescription = "CT thorax"
        ds.Rows, ds.Columns = 8, 10
        ds.PixelSpacing = [1.0, 1.0]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, 2.5 * k]
        ds.SliceThickness = 2.5
        ds.RescaleSlope, ds.RescaleIntercept = 2, -1000
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        stored = np.full((8, 10), (1000 + 100 * k) // 2, np.int16)  # HU = 100 k after rescale
        ds.PixelData = stored.tobytes()
        ds.save_as(folder / f"im{f}.dcm", enforce_file_format=True)


def test_synthetic_dicom_series_order_and_rescale(tmp_path: Path) -> None:
    from medsae.data.dicom import dicom_cases, load_series

    _write_series(tmp_path / "series")
    cases, _ = dicom_cases(tmp_path / "series")
    assert (
        len(cases) == 1
        and cases[0].meta["age"] == 70
        and cases[0].meta["study_type"] == "CT thorax"
    )
    vol, affine, _ = load_series(cases[0].dicom_files, "d1")
    assert vol.shape == (10, 8, 6)
    np.testing.assert_allclose(
        vol[0, 0, :], [100.0 * k for k in range(6)]
    )  # sorted by position, HU
    assert affine[2, 2] == pytest.approx(2.5)
    ws = Workspace(tmp_path / "ws")
    prepare(ws, PrepareConfig(source=str(tmp_path / "series"), size=16, planes=["axial"]))
    table = read_slices(ws.slices)
    assert table["window_width"].iloc[0] == 1400 and table["position_mm"].is_monotonic_increasing
