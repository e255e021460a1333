"""The phantom's body: analytic shapes placed in patient (RAS) millimetres, painted on a grid.

World coordinates: x grows towards the patient's right, y towards anterior, z towards the
head (z = 0 near the hip joints, 960 the top of the head). Every structure is an ellipsoid
or a z-aligned cylinder, painted in order (later shapes overwrite earlier ones), so the
label volume is exact and masks are mutually exclusive: they are ground truth.

Intensities come from a tissue table per modality (CT in HU, MRI in arbitrary units);
``tissue_value`` applies the subject's known effects (age lowers CT bone density and raises
vertebral marrow signal on MRI; lower kVp raises the HU of bone). The MRI column follows a
T1-weighted gradient echo: fat and marrow bright, fluid and muscle dark, cortical bone, air and
lung nearly black.

CT subjects lie on the scanner table (:meth:`Painter.table`): a curved carbon-fibre couch
(two dense shells around a foam core) below the patient's back, unlabelled like every
non-anatomical object. MRI has no table in the image (the coil and table give no signal).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Tissue -> (CT HU, MRI signal).
TISSUES: dict[str, tuple[float, float]] = {
    "air": (-1000.0, 0.0),
    "fat": (-100.0, 900.0),
    "soft": (45.0, 300.0),
    "muscle": (50.0, 280.0),
    "lung": (-850.0, 30.0),
    "airway": (-950.0, 10.0),
    "blood": (40.0, 120.0),
    "heart": (40.0, 250.0),
    "liver": (60.0, 450.0),
    "lesion": (10.0, 200.0),
    "spleen": (50.0, 350.0),
    "kidney": (35.0, 380.0),
    "adrenal": (30.0, 330.0),
    "gallbladder": (10.0, 150.0),
    "stomach": (25.0, 250.0),
    "pancreas": (40.0, 420.0),
    "bowel": (20.0, 280.0),
    "colon": (-200.0, 200.0),
    "bladder": (5.0, 120.0),
    "prostate": (40.0, 320.0),
    "brain": (35.0, 500.0),
    "csf": (8.0, 90.0),  # ventricles: water-like on CT, dark on T1
    "vitreous": (12.0, 75.0),  # the eyes' vitreous body
    "cord": (30.0, 400.0),
    "bone": (0.0, 0.0),  # computed: cortical rim + cancellous core, see tissue_value
    "table_shell": (350.0, 0.0),  # carbon-fibre couch skin (no MRI signal)
    "table_core": (-850.0, 0.0),  # foam core of the couch
}
# The CT couch: (radius of curvature, shell thickness, core thickness, half width) in mm;
# its top lies TABLE_GAP_MM below the lowest point of the body.
TABLE_SHAPE = (700.0, 9.0, 26.0, 230.0)
TABLE_GAP_MM = 3.0
BACK_MM = 126.0  # the most posterior point of a subject of scale 1 (the back muscles)
HEAD_BACK_MM = 98.0  # the back of the head (scale 1); the head rest lies below it
HEAD_REST_Z_MM = 790.0  # above this z the couch is the head rest


@dataclass(frozen=True)
class Subject:
    """Parameters of one phantom subject that shape its images."""

    modality: str  # "CT" | "MR"
    age: float
    sex: str  # "M" | "F"
    kvp: float | None
    field_strength: float | None
    scale: float  # body size factor
    shift_mm: tuple[float, float, float]  # position jitter of the organs
    lesion: tuple[float, float, float, float] | None  # liver lesion (x, y, z, radius)


def bone_values(subject: Subject) -> tuple[float, float]:
    """(cortical, cancellous) bone value for a subject.

    CT: cortical = 1000 - 7 (age - 20) HU (>= 500), cancellous = 260 - 2.5 (age - 20) HU
    (>= 80), both multiplied by sqrt(120 / kVp). MRI: cortical 60; marrow
    450 + 4 (age - 20) (fatty marrow with age).
    """
    years = max(0.0, subject.age - 20.0)
    if subject.modality == "CT":
        k = float(np.sqrt(120.0 / (subject.kvp or 120.0)))
        return max(500.0, 1000.0 - 7.0 * years) * k, max(80.0, 260.0 - 2.5 * years) * k
    return 60.0, 450.0 + 4.0 * years


def tissue_value(tissue: str, subject: Subject) -> float:
    ct, mr = TISSUES[tissue]
    return ct if subject.modality == "CT" else mr


Where = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class Painter:
    """Paints shapes into a label volume (structure index, 0 = none) and an intensity volume."""

    def __init__(
        self,
        xs: np.ndarray,
        ys: np.ndarray,
        zs: np.ndarray,
        subject: Subject,
        structures: tuple[str, ...],
    ) -> None:
        self.xs, self.ys, self.zs = xs, ys, zs
        self.subject = subject
        self.index = {s: i + 1 for i, s in enumerate(structures)}
        shape = (len(xs), len(ys), len(zs))
        self.labels = np.zeros(shape, dtype=np.int16)
        self.image = np.full(shape, tissue_value("air", subject), dtype=np.float32)
        self.cortical, self.cancellous = bone_values(subject)
        self.boxes: dict[int, tuple[slice, slice, slice]] = {}  # label -> union of painted boxes

    def _range(self, axis: np.ndarray, lo: float, hi: float) -> slice:
        """Indices of an ascending coordinate axis inside [lo, hi]."""
        return slice(
            int(np.searchsorted(axis, lo, side="left")),
            int(np.searchsorted(axis, hi, side="right")),
        )

    def _paint(
        self,
        box: tuple[slice, slice, slice],
        inside: np.ndarray,
        r2: np.ndarray,
        structure: str | None,
        tissue: str,
    ) -> None:
        if not inside.any():
            return
        if tissue == "bone":
            values = np.where(r2 > 0.55, self.cortical, self.cancellous).astype(np.float32)
            self.image[box][inside] = values[inside]
        else:
            self.image[box][inside] = tissue_value(tissue, self.subject)
        label = self.index.get(structure) if structure is not None else None
        if label is not None:  # structures outside the modality's label set are tissue only
            self.labels[box][inside] = label
            old = self.boxes.get(label)
            if old is not None:
                box = tuple(
                    slice(min(a.start, b.start), max(a.stop, b.stop))
                    for a, b in zip(old, box, strict=True)
                )  # type: ignore[assignment]
            self.boxes[label] = box

    def _grid(self, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            self.xs[box[0]][:, None, None],
            self.ys[box[1]][None, :, None],
            self.zs[box[2]][None, None, :],
        )

    def ellipsoid(
        self,
        structure: str | None,
        tissue: str,
        center: tuple[float, float, float],
        semi: tuple[float, float, float],
        where: Where | None = None,
        within: str | None = None,
    ) -> None:
        (cx, cy, cz), (a, b, c) = center, semi
        box = (
            self._range(self.xs, cx - a, cx + a),
            self._range(self.ys, cy - b, cy + b),
            self._range(self.zs, cz - c, cz + c),
        )
        if any(s.stop <= s.start for s in box):
            return
        x, y, z = self._grid(box)
        r2 = ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 + ((z - cz) / c) ** 2
        inside = r2 <= 1.0
        if where is not None:
            inside &= where(x, y, z)
        if within is not None:
            inside &= self.labels[box] == self.index[within]
        self._paint(box, inside, r2, structure, tissue)

    def cylinder(
        self,
        structure: str | None,
        tissue: str,
        center_xy: tuple[float, float],
        radii: tuple[float, float],
        z_range: tuple[float, float],
    ) -> None:
        (cx, cy), (rx, ry), (z0, z1) = center_xy, radii, z_range
        box = (
            self._range(self.xs, cx - rx, cx + rx),
            self._range(self.ys, cy - ry, cy + ry),
            self._range(self.zs, z0, z1),
        )
        if any(s.stop <= s.start for s in box):
            return
        x, y, z = self._grid(box)
        r2 = np.broadcast_to(
            ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2, (x.shape[0], y.shape[1], z.shape[2])
        )
        inside = r2 <= 1.0
        self._paint(box, inside, r2, structure, tissue)

    def body(self) -> None:
        """Skin outline with a subcutaneous fat layer: legs, pelvis and trunk, neck, head."""
        s = self.subject
        fat_mm = (24.0 if s.sex == "F" else 14.0) * s.scale
        hip_w = (182.0 if s.sex == "F" else 168.0) * s.scale
        # trunk profile: z -> (half width, half depth)
        zp = np.array([10.0, 250.0, 450.0, 650.0, 735.0])
        wp = np.array([hip_w, hip_w - 5, 158.0 * s.scale, 165.0 * s.scale, 150.0 * s.scale])
        dp = np.array([112.0, 108.0, 112.0, 108.0, 90.0]) * s.scale
        for k, z in enumerate(self.zs):
            if 10.0 <= z <= 735.0:
                a, b = float(np.interp(z, zp, wp)), float(np.interp(z, zp, dp))
                self._slab(k, [(0.0, 0.0, a, b)], fat_mm)
            elif z < 10.0:
                r = 78.0 * s.scale
                self._slab(
                    k, [(-90.0 * s.scale, 0.0, r, r), (90.0 * s.scale, 0.0, r, r)], fat_mm * 0.6
                )
            elif z <= 790.0:
                self._slab(k, [(0.0, -5.0, 58.0 * s.scale, 58.0 * s.scale)], 6.0)
        self.ellipsoid(None, "soft", (0.0, 0.0, 872.0), (80.0 * s.scale, 98.0 * s.scale, 90.0))

    def table(self) -> None:
        """The CT couch under the patient, over the whole z range (tissue only, no label).

        A shallow trough: its top surface is ``y(x) = y0 + x^2 / (2 R)`` with ``y0`` just
        below the patient's back (``BACK_MM``), or below the back of the head above the neck
        (the head rest, ``HEAD_BACK_MM``); below it a dense shell, a foam core and a second
        shell (:data:`TABLE_SHAPE`). Painted before the body, so it never overwrites anatomy.
        """
        s = self.subject
        under_back = self._couch_plane(-BACK_MM * s.scale - TABLE_GAP_MM)
        under_head = self._couch_plane(-HEAD_BACK_MM * s.scale - TABLE_GAP_MM)
        for k, z in enumerate(self.zs):
            plane = under_head if z > HEAD_REST_Z_MM else under_back
            for mask, tissue in zip(plane, ("table_core", "table_shell"), strict=True):
                self.image[:, :, k][mask] = tissue_value(tissue, s)

    def _couch_plane(self, y0: float) -> tuple[np.ndarray, np.ndarray]:
        """(foam core, shells) masks of one couch cross-section with its top at ``y0``."""
        radius, shell, core, half_width = TABLE_SHAPE
        x = self.xs[:, None]
        depth = (y0 + x * x / (2.0 * radius)) - self.ys[None, :]  # mm below the top surface
        wide = np.abs(x) <= half_width
        shells = wide & (
            ((depth >= 0) & (depth < shell))
            | ((depth >= shell + core) & (depth < 2 * shell + core))
        )
        foam = wide & (depth >= shell) & (depth < shell + core)
        return foam, shells

    def _slab(
        self, k: int, ellipses: list[tuple[float, float, float, float]], fat_mm: float
    ) -> None:
        x = self.xs[:, None]
        y = self.ys[None, :]
        img = self.image[:, :, k]
        for cx, cy, a, b in ellipses:
            outer = ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1.0
            inner = ((x - cx) / max(a - fat_mm, 1.0)) ** 2 + (
                (y - cy) / max(b - fat_mm, 1.0)
            ) ** 2 <= 1.0
            img[outer] = tissue_value("fat", self.subject)
            img[inner] = tissue_value("muscle", self.subject)
