"""The phantom's CT and MRI look like their modalities: couch and reconstruction circle on CT,
bias field and no couch on MRI; exact masks; balanced study types."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medsae.data import PhantomConfig
from medsae.data.phantom import (
    CT_PADDING,
    STUDY_TYPES,
    _draw,
    bias_field,
    render,
    stratified_point,
)
from medsae.data.phantom_body import BACK_MM, TABLE_GAP_MM, TISSUES

from .conftest import TINY

CFG = PhantomConfig(size_xy=48, n_slices=24, noise=0.0)


def _subject(modality: str, study: str = "abdomen"):  # type: ignore[no-untyped-def]
    for i in range(200):
        subject, meta = _draw(modality, i, 0)
        if meta["study_type"].endswith(" " + study):
            return subject, str(meta["manufacturer"])
    raise AssertionError(f"no {modality} {study} subject")


def _render(modality: str, study: str = "abdomen"):  # type: ignore[no-untyped-def]
    subject, manufacturer = _subject(modality, study)
    return render(subject, study, CFG, np.random.default_rng(0), manufacturer)


@pytest.mark.parametrize("study", ["abdomen", "head"])
def test_ct_has_a_couch_under_the_patient_and_a_circular_field_of_view(study: str) -> None:
    image, painter, _ = _render("CT", study)
    k = image.shape[2] // 2
    body = painter.labels[:, :, k] > 0
    ys = painter.ys
    lowest_body_y = ys[np.flatnonzero(body.any(axis=0))].min()
    couch = (image[:, :, k] > TISSUES["table_shell"][0] - 100) & (painter.labels[:, :, k] == 0)
    couch &= ys[None, :] < lowest_body_y
    assert couch.sum() >= 5  # a dense shell below the back, unlabelled
    # outside the inscribed circle: the padding value exactly; the corner is outside
    assert image[0, 0, k] == CT_PADDING and image[-1, -1, k] == CT_PADDING
    centre = image.shape[0] // 2
    assert image[centre, centre, k] != CT_PADDING


def test_mri_has_no_couch_and_dark_bone_bright_fat() -> None:
    image, painter, _ = _render("MR")
    subject = painter.subject
    below_back = painter.ys < -BACK_MM * subject.scale - TABLE_GAP_MM - 10.0
    assert below_back.any()
    assert (image[:, below_back, :] == 0).all()  # noise off: nothing under the patient
    ct_image, ct_painter, _ = _render("CT")
    ct_below = ct_painter.ys < -BACK_MM * ct_painter.subject.scale - TABLE_GAP_MM
    assert (ct_image[:, ct_below, :] > 0).any()  # while CT shows the couch there
    assert TISSUES["fat"][1] > 2 * TISSUES["muscle"][1]  # T1-weighted: fat bright
    assert painter.cortical < TISSUES["muscle"][1]  # cortical bone darker than muscle


def test_bias_field_is_smooth_positive_and_grows_with_field_strength() -> None:
    xs = np.linspace(-200, 200, 64)
    zs = np.linspace(0, 400, 40)
    spans = {}
    for field in (1.5, 3.0):
        fx, fy, fz = bias_field(xs, xs, zs, field, np.random.default_rng(5))
        b = fx[:, None, None] * fy[None, :, None] * fz[None, None, :]
        assert (b > 0).all()
        assert np.abs(np.diff(np.log(fx))).max() < 0.05  # smooth: small relative steps
        spans[field] = float(np.log(b.max() / b.min()))
    assert spans[3.0] == pytest.approx(2 * spans[1.5])


def test_masks_stay_exact_with_the_couch(phantom_root: Path) -> None:
    ct = phantom_root / "ct" / "s0001"
    image = nib.load(ct / "ct.nii.gz").get_fdata()
    union = np.zeros(image.shape, dtype=bool)
    total = 0
    for p in (ct / "segmentations").iterdir():
        m = np.asarray(nib.load(p).dataobj) > 0
        total += int(m.sum())
        union |= m
    assert total == int(union.sum())  # masks are mutually exclusive
    dense_unlabelled = (image > TISSUES["table_shell"][0] - 100) & ~union
    assert dense_unlabelled.any()  # the couch is tissue only, never in a mask


def test_stratified_assignment_is_deterministic_and_balanced() -> None:
    assert stratified_point(0, "CT", 3) == stratified_point(0, "CT", 3)
    assert stratified_point(0, "CT", 3) != stratified_point(1, "CT", 3)
    points = np.array([stratified_point(0, "MR", i) for i in range(64)])
    assert ((points >= 0) & (points < 1)).all()
    # every quarter of each coordinate holds close to a quarter of the points
    for axis in range(2):
        counts = np.histogram(points[:, axis], bins=4, range=(0, 1))[0]
        assert counts.min() >= 14 and counts.max() <= 18
    studies = Counter(_draw("CT", i, TINY.seed)[1]["study_type"] for i in range(32))
    assert set(studies) == {f"ct {s}" for s in STUDY_TYPES}  # every CT study type appears


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_head_has_a_face_so_that_its_planes_differ(modality: str) -> None:
    """Eyes, sinuses and the face lie in front of the cranium, unlabelled; the ventricles
    are inside the brain mask; a sagittal section is not symmetric front to back."""
    cfg = PhantomConfig(size_xy=64, n_slices=48, noise=0.0)
    subject, _ = _subject(modality, "head")
    from medsae.data.phantom import STRUCTURES_BY_MODALITY, _grid
    from medsae.data.phantom_anatomy import paint_anatomy
    from medsae.data.phantom_body import Painter

    painter = Painter(*_grid("head", cfg), subject, STRUCTURES_BY_MODALITY[modality])
    paint_anatomy(painter)  # the anatomy alone: no scanner offsets, bias field or noise
    image, labels = painter.image, painter.labels
    brain = painter.index["brain"]
    vitreous, csf = (TISSUES[t][0 if modality == "CT" else 1] for t in ("vitreous", "csf"))
    eyes = np.isclose(image, vitreous)
    assert eyes.sum() > 20 and (labels[eyes] == 0).all()  # tissue only, never in a mask
    assert (painter.ys[np.nonzero(eyes)[1]] > 40).all()  # in front
    ventricles = np.isclose(image, csf)
    assert ventricles.sum() > 20 and (labels[ventricles] == brain).all()
    body = image > (-500 if modality == "CT" else 150)
    if modality == "CT":
        body &= labels != 0  # the head rest is not body
        body |= np.isclose(image, TISSUES["soft"][0])
    mid = body[body.shape[0] // 2]  # sagittal section: (y, z)
    low = mid[:, painter.zs < 830].any(axis=1)  # below the eyes: face and neck
    ys = painter.ys[low]
    assert ys.max() > 1.15 * -ys.min()  # the face reaches further forward than the back
