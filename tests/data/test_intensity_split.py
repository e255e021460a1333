"""CT windows by study type, unknown fallback, multi-window RGB, MRI scaling; splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsae.data import PrepareConfig, SplitConfig, prepare
from medsae.data.intensity import CT_WINDOWS, ct_window, mri_bounds, to_uint8
from medsae.data.split_stage import assign_splits
from medsae.data.table import open_images, read_slices
from medsae.workspace import Workspace

from .test_orientation_and_sources import _nifti_folder


def test_window_preset_by_study_type() -> None:
    assert ct_window("ct thorax-abdomen-pelvis", (0, 1)) == ((-100.0, 1400.0), True)
    assert ct_window("  CT   Head ", (0, 1)) == (CT_WINDOWS["head"], True)
    assert ct_window("ct banana", (40, 400)) == ((40.0, 400.0), False)
    assert ct_window(None, (40, 400)) == ((40.0, 400.0), False)


def test_to_uint8_maps_the_window_linearly() -> None:
    v = np.array([[[-2000.0, -750.0, -50.0, 650.0, 3000.0]]], np.float32)
    out = to_uint8(v, -750.0, 650.0)
    assert out.ravel().tolist() == [0, 0, 128, 255, 255]


def test_mri_percentiles_of_foreground() -> None:
    v = np.zeros((10, 10, 10), np.float32)
    v[:5] = np.arange(1, 501, dtype=np.float32).reshape(5, 10, 10)
    lo, hi = mri_bounds(v, (1.0, 99.0))
    assert lo == pytest.approx(np.percentile(np.arange(1, 501), 1))
    assert hi == pytest.approx(np.percentile(np.arange(1, 501), 99))


def test_unknown_study_type_is_counted_not_fatal(tmp_path: Path) -> None:
    src = _nifti_folder(tmp_path / "nif", study_type="ct banana")
    ws = Workspace(tmp_path / "ws")
    out = prepare(
        ws,
        PrepareConfig(
            source=str(src), size=16, column_map={"subject": "PatientID", "image": "path"}
        ),
    )
    assert out.manifest["counts"]["unknown_study_type_volumes"] == 1
    table = read_slices(ws.slices)
    assert (table["window_center"] == 40).all() and (table["window_width"] == 400).all()


def test_multi_window_rgb(tmp_path: Path) -> None:
    src = _nifti_folder(tmp_path / "nif")
    ws = Workspace(tmp_path / "ws")
    prepare(
        ws,
        PrepareConfig(
            source=str(src),
            size=16,
            multi_window=True,
            column_map={"subject": "PatientID", "image": "path"},
        ),
    )
    images = open_images(ws.slices)
    assert images.ndim == 4 and images.shape[-1] == 3
    body = images[images[..., 1] > 0]
    assert not np.array_equal(body[:, 0], body[:, 2])  # lung and bone channels differ


def _subjects(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "subject_key": [f"{'CT' if i % 3 else 'MR'}:s{i:04d}" for i in range(n)],
            "modality": ["CT" if i % 3 else "MR" for i in range(n)],
            "sex": rng.choice(["M", "F"], n),
            "age_group": rng.choice(["<40", "40-60", "60-80", ">=80"], n),
            "institute": rng.choice([*list("ABCDEFGH"), None], n),
        }
    )


def test_split_held_out_institutes_and_missing_institute() -> None:
    subj = _subjects()
    out = assign_splits(subj, SplitConfig())
    held = subj["institute"].isin(["A", "D", "E"]).to_numpy()
    assert (out["split"].to_numpy()[held] == "test").all()
    assert (out["split"].to_numpy()[~held] != "test").all()  # includes missing institutes
    custom = assign_splits(subj, SplitConfig(test_institutes=["B"]))
    assert set(subj.loc[custom["split"] == "test", "institute"]) == {"B"}


def test_split_is_stratified_and_seeded() -> None:
    subj = _subjects()
    out = assign_splits(subj, SplitConfig(val_fraction=0.25, seed=1))
    rest = subj.assign(split=out["split"])[out["split"] != "test"]
    for _, g in rest.groupby(["modality", "sex", "age_group"]):
        assert (g["split"] == "val").sum() == round(0.25 * len(g))
    again = assign_splits(subj, SplitConfig(val_fraction=0.25, seed=1))
    assert out.equals(again)
    other = assign_splits(subj, SplitConfig(val_fraction=0.25, seed=2))
    assert not out.equals(other)
    assert out["subject_key"].is_unique  # one split per subject
