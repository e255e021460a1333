"""A synthetic demo dataset in the exact TotalSegmentator CT v2 and MRI v2 layouts.

``make_phantom(OUT, PhantomConfig(...))`` writes::

    OUT/ct/meta.csv                         semicolon separated, TotalSegmentator CT columns
    OUT/ct/s0001/ct.nii.gz                  int16 HU
    OUT/ct/s0001/segmentations/<structure>.nii.gz   uint8, one per CT structure
    OUT/mri/meta.csv                        TotalSegmentator MRI columns
    OUT/mri/s0001/mri.nii.gz                int16 signal
    OUT/mri/s0001/segmentations/<structure>.nii.gz

Bodies carry anatomically placed structures (``phantom_anatomy``); masks are exact (ground
truth). Fields of view follow the study type. Metadata change the images in known ways:

* age: CT bone density falls (cortical 1000 - 7 (age - 20) HU); MRI marrow signal rises;
* sex: prostate in male subjects; wider pelvis and thicker fat layer in female subjects;
* kVp: bone HU scale with sqrt(120 / kVp); noise grows with (120 / kVp)^1.5;
* manufacturer (tied to the institute): noise level and a HU offset; Philips images are
  slightly smoothed;
* MRI field strength: noise falls and the bias field grows at 3 T.

CT and MRI look as they do in real scans: CT images carry the scanner couch under the patient
(``Painter.table``) and a circular reconstruction field of view (outside it the stored value is
the padding ``CT_PADDING``), bright cortical bone and black lungs; MRI (T1-weighted gradient
echo) has a smooth multiplicative bias field (:func:`bias_field`), Rician magnitude noise in
the background, a bright subcutaneous fat ring, dark cortical bone and no table.

The same seed writes the same dataset (subject ``i`` uses the seed ``(seed, modality, i)``).
Study type and institute come from a quasi-random (Kronecker) sequence rather than independent
draws (:func:`stratified_point`), so that small datasets, like the demo's, hold every study
type in both the training and the held-out institutes.
Volumes are stored in LPS (CT) or LAS (MRI) voxel order so that readers must reorient.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from medsae.data.config import PhantomConfig
from medsae.data.phantom_anatomy import paint_anatomy
from medsae.data.phantom_body import Painter, Subject
from medsae.data.structures import STRUCTURES_BY_MODALITY

INSTITUTES = {  # institute -> (manufacturer, CT scanner, MRI scanner)
    "A": ("Siemens", "SOMATOM Definition AS", "MAGNETOM Aera"),
    "B": ("GE", "Revolution CT", "SIGNA Artist"),
    "C": ("Philips", "IQon Spectral CT", "Ingenia"),
    "D": ("Siemens", "SOMATOM Force", "MAGNETOM Skyra"),
    "E": ("Toshiba", "Aquilion ONE", "Vantage Titan"),
    "F": ("GE", "LightSpeed VCT", "Discovery MR750"),
    "G": ("Philips", "Brilliance 64", "Achieva"),
    "H": ("Siemens", "SOMATOM Edge", "MAGNETOM Prisma"),
}
MANUFACTURER_EFFECT = {  # manufacturer -> (noise factor, HU offset)
    "Siemens": (1.2, 0.0),
    "GE": (1.0, 5.0),
    "Philips": (0.8, 0.0),
    "Toshiba": (1.0, -5.0),
}
# study type -> (z range in body mm, head field of view?)
STUDY_TYPES = {
    "head": ((770.0, 965.0), True),
    "thorax": ((440.0, 745.0), False),
    "abdomen": ((290.0, 530.0), False),
    "abdomen-pelvis": ((40.0, 530.0), False),
    "pelvis": ((30.0, 300.0), False),
    "thorax-abdomen-pelvis": ((40.0, 745.0), False),
    "whole body": ((-150.0, 965.0), False),
}
_CT_STUDY_P = (0.12, 0.16, 0.14, 0.14, 0.1, 0.24, 0.1)
CT_PADDING = -1024.0  # value outside the reconstruction circle (stored int16)
_MR_STUDY_P = (0.15, 0.1, 0.3, 0.15, 0.2, 0.0, 0.1)
CT_HEADER = (
    "image_id;age;gender;institute;study_type;split;manufacturer;scanner_model;kvp;"
    "pathology;pathology_location"
)
MRI_HEADER = CT_HEADER + (
    ";magnetic_field_strength;echo_time;repetition_time;scanning_sequence;slice_thickness;source"
)


def _subject_rng(seed: int, modality: str, i: int) -> np.random.Generator:
    return np.random.default_rng([seed, 0 if modality == "CT" else 1, i])


# Steps of the quasi-random (Kronecker) sequence: golden ratio and sqrt(2) - 1.
_STEPS = np.array([(5.0**0.5 - 1.0) / 2.0, 2.0**0.5 - 1.0])


def stratified_point(seed: int, modality: str, i: int) -> tuple[float, float]:
    """Point ``i`` of a Kronecker quasi-random sequence in [0, 1)^2, shifted per (seed, modality).

    ``u_i = frac(s + (i + 1) a)`` with ``a = ((sqrt(5) - 1) / 2, sqrt(2) - 1)`` and a seeded
    shift ``s``: each coordinate is spread evenly (study-type counts stay within about 1.5 of
    their expectation on 32 subjects) and the pairs rarely leave a (study type, held-out
    institute) cell empty, while each subject still depends only on ``(seed, modality, i)``.
    """
    shift = np.random.default_rng([seed, 0 if modality == "CT" else 1, 2]).random(2)
    step = _STEPS
    u = (shift + (i + 1) * step) % 1.0
    return float(u[0]), float(u[1])


def _draw(modality: str, i: int, seed: int) -> tuple[Subject, dict[str, object]]:
    rng = _subject_rng(seed, modality, i)
    u_study, u_institute = stratified_point(seed, modality, i)
    institute = "ABCDEFGH"[min(int(u_institute * 8), 7)]
    manufacturer, ct_model, mr_model = INSTITUTES[institute]
    names = list(STUDY_TYPES)
    cdf = np.cumsum(_CT_STUDY_P if modality == "CT" else _MR_STUDY_P)
    study = names[min(int(np.searchsorted(cdf / cdf[-1], u_study, side="right")), len(names) - 1)]
    age = float(rng.integers(20, 91))
    sex = "M" if rng.random() < 0.5 else "F"
    kvp = (
        float(rng.choice([80, 100, 120, 140], p=[0.1, 0.3, 0.45, 0.15]))
        if modality == "CT"
        else None
    )
    field = float(rng.choice([1.5, 3.0])) if modality == "MR" else None
    has_lesion = rng.random() < 0.2 and study not in {"head", "pelvis"}
    lesion = None
    if has_lesion:
        lesion = (
            float(rng.uniform(40, 90)),
            float(rng.uniform(-20, 40)),
            float(rng.uniform(430, 480)),
            float(rng.uniform(12, 22)),
        )
    subject = Subject(
        modality=modality,
        age=age,
        sex=sex,
        kvp=kvp,
        field_strength=field,
        scale=float(rng.uniform(0.92, 1.08)),
        shift_mm=(float(rng.normal(0, 4)), float(rng.normal(0, 4)), float(rng.normal(0, 8))),
        lesion=lesion,
    )
    meta: dict[str, object] = {
        "image_id": f"s{i + 1:04d}",
        "age": int(age),
        "gender": sex.lower(),
        "institute": institute,
        "study_type": f"{'ct' if modality == 'CT' else 'mr'} {study}",
        "split": "train",
        "manufacturer": manufacturer,
        "scanner_model": ct_model if modality == "CT" else mr_model,
        "kvp": int(kvp) if kvp else "",
        "pathology": "liver lesion" if lesion else "no pathology",
        "pathology_location": "liver" if lesion else "",
    }
    if modality == "MR":
        meta.update(
            magnetic_field_strength=field,
            echo_time=2.5,
            repetition_time=5.0,
            scanning_sequence="GR",
            slice_thickness="",
            source="phantom",
        )
    return subject, meta


def _grid(study: str, config: PhantomConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    (z0, z1), head = STUDY_TYPES[study]
    field = config.field_mm * (0.6 if head else 1.0)
    n, nz = config.size_xy, config.n_slices
    sxy, sz = field / n, (z1 - z0) / nz
    xs = -field / 2 + (np.arange(n) + 0.5) * sxy
    ys = xs.copy()
    zs = z0 + (np.arange(nz) + 0.5) * sz
    return xs.astype(np.float64), ys.astype(np.float64), zs.astype(np.float64)


def render(
    subject: Subject, study: str, config: PhantomConfig, rng: np.random.Generator, manufacturer: str
) -> tuple[np.ndarray, Painter, np.ndarray]:
    """(image in RAS voxel order, painter with labels, RAS affine) of one subject."""
    xs, ys, zs = _grid(study, config)
    structures = STRUCTURES_BY_MODALITY[subject.modality]
    painter = Painter(xs, ys, zs, subject, structures)
    paint_anatomy(painter)
    image = painter.image
    noise_factor, offset = MANUFACTURER_EFFECT[manufacturer]
    if subject.modality == "CT":
        if manufacturer == "Philips":
            from scipy.ndimage import gaussian_filter

            gaussian_filter(image, sigma=0.6, output=image)
        sigma = 12.0 * noise_factor * (120.0 / (subject.kvp or 120.0)) ** 1.5 * config.noise
        image += np.float32(offset)
        _add_noise(image, rng, sigma)
        np.clip(image, -1024, 3071, out=image)
        radius = 0.5 * len(xs) * (xs[1] - xs[0])  # the in-plane field of view is a square
        outside = xs[:, None] ** 2 + ys[None, :] ** 2 > radius**2
        image[outside, :] = CT_PADDING  # outside the circular reconstruction field of view
    else:
        field = subject.field_strength or 1.5
        fx, fy, fz = bias_field(xs, ys, zs, field, rng)
        image *= fx[:, None, None]
        image *= fy[None, :, None]
        image *= fz[None, None, :]
        sigma = 15.0 * (1.5 / field) * noise_factor * config.noise
        if sigma > 0:
            re = image + rng.normal(0, sigma, image.shape).astype(np.float32)
            im = rng.normal(0, sigma, image.shape).astype(np.float32)
            image = np.sqrt(re * re + im * im)  # Rician magnitude noise
        np.clip(image, 0, 4095, out=image)
    affine = np.diag([xs[1] - xs[0], ys[1] - ys[0], zs[1] - zs[0], 1.0])
    affine[:3, 3] = [xs[0], ys[0], zs[0]]
    return image, painter, affine


def bias_field(
    xs: np.ndarray, ys: np.ndarray, zs: np.ndarray, field: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Separable smooth multiplicative MRI bias field ``B = f(x) g(y) h(z)`` (float32 factors).

    With ``u = x / 150``, ``v = y / 150`` (mm from the image centre) and ``w`` the z position
    scaled to [-1, 1] over the volume, ``log B = s (a u + b v + c w) + s (u^2 + v^2) / 2 -
    s w^2``: a random tilt (``a, b, c ~ U(-1, 1)``), brighter towards the body surface (receive
    coils lie on the skin) and a fall-off towards both ends of the coil along z. The strength
    ``s = 0.1 field / 1.5`` grows with the field strength (up to about +-15% at 1.5 T and
    +-30% at 3 T across a body field of view).
    """
    strength = 0.1 * field / 1.5
    a, b, c = rng.uniform(-1.0, 1.0, 3)
    u, v = xs / 150.0, ys / 150.0
    w = (zs - zs.mean()) / max(float(np.ptp(zs)) / 2.0, 1e-6)
    fx = np.exp(strength * (a * u + 0.5 * u * u))
    fy = np.exp(strength * (b * v + 0.5 * v * v))
    fz = np.exp(strength * (c * w - w * w))
    return fx.astype(np.float32), fy.astype(np.float32), fz.astype(np.float32)


def _add_noise(image: np.ndarray, rng: np.random.Generator, sigma: float) -> None:
    if sigma <= 0:
        return
    for k in range(image.shape[2]):  # slice by slice: bounded temporaries on large volumes
        image[:, :, k] += rng.normal(0, sigma, image.shape[:2]).astype(np.float32)


def _store(array: np.ndarray, modality: str) -> np.ndarray:
    """RAS voxel order -> stored order: LPS for CT (flip i, j), LAS for MRI (flip i)."""
    return array[::-1, ::-1] if modality == "CT" else array[::-1]


def _stored_affine(affine: np.ndarray, shape: tuple[int, ...], modality: str) -> np.ndarray:
    out = affine.copy()
    axes = (0, 1) if modality == "CT" else (0,)
    for ax in axes:
        out[:3, 3] = out[:3, 3] + out[:3, ax] * (shape[ax] - 1)
        out[:3, ax] = -out[:3, ax]
    return out


def write_subject(folder: Path, modality: str, i: int, config: PhantomConfig) -> dict[str, object]:
    """Render and write one subject folder; returns its meta.csv row."""
    subject, meta = _draw(modality, i, config.seed)
    study = str(meta["study_type"]).split(" ", 1)[1]
    rng = _subject_rng(config.seed + 7919, modality, i)
    image, painter, affine = render(subject, study, config, rng, str(meta["manufacturer"]))
    shape = image.shape
    stored_affine = _stored_affine(affine, shape, modality)
    d = folder / str(meta["image_id"])
    seg = d / "segmentations"
    seg.mkdir(parents=True, exist_ok=True)
    name = "ct.nii.gz" if modality == "CT" else "mri.nii.gz"
    data = np.rint(_store(image, modality)).astype(np.int16)
    _save(nib.Nifti1Image(data, stored_affine), d / name)
    del data
    structures = STRUCTURES_BY_MODALITY[modality]
    empty: Path | None = None
    for label, s in enumerate(structures, start=1):
        box = painter.boxes.get(label)
        if box is None:
            if not config.all_structure_files:
                continue
            if empty is None:
                empty = seg / f"{s}.nii.gz"
                _save(nib.Nifti1Image(np.zeros(shape, np.uint8), stored_affine), empty)
            else:
                shutil.copyfile(empty, seg / f"{s}.nii.gz")
            continue
        mask = np.zeros(shape, np.uint8)
        mask[box] = painter.labels[box] == label
        _save(nib.Nifti1Image(_store(mask, modality), stored_affine), seg / f"{s}.nii.gz")
    return meta


def _save(img: nib.Nifti1Image, path: Path) -> None:
    img.header.set_xyzt_units("mm")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    nib.save(img, path)


def make_phantom(out: str | Path, config: PhantomConfig | None = None) -> Path:
    """Write the phantom dataset under ``out`` (``out/ct``, ``out/mri``); returns ``out``.

    Existing subject folders are overwritten; the result depends only on the config.
    """
    from medsae.progress import track

    config = config or PhantomConfig()
    out = Path(out).expanduser().resolve()
    jobs = [("CT", "ct", i) for i in range(config.ct_subjects)] + [
        ("MR", "mri", i) for i in range(config.mri_subjects)
    ]
    rows: dict[str, list[dict[str, object]]] = {"ct": [], "mri": []}
    for modality, sub, i in track(jobs, "phantom: subjects"):
        folder = out / sub
        d = folder / f"s{i + 1:04d}"
        if d.exists():
            shutil.rmtree(d)
        rows[sub].append(write_subject(folder, modality, i, config))
    for sub, header in (("ct", CT_HEADER), ("mri", MRI_HEADER)):
        if not rows[sub]:
            continue
        cols = header.split(";")
        lines = [header] + [
            ";".join("" if r.get(c) is None else str(r.get(c, "")) for c in cols) for r in rows[sub]
        ]
        (out / sub / "meta.csv").write_text("\n".join(lines) + "\n")
    return out
