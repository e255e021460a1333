"""Where the phantom's organs are: one function that paints a subject's anatomy.

Names are TotalSegmentator structure names. CT gets individual vertebrae and lung lobes;
MRI gets ``vertebrae`` and ``lung_left`` / ``lung_right`` (the MRI label set). Male subjects
have a prostate. A liver lesion (``pathology``) is painted inside the liver mask.
"""

from __future__ import annotations

from medsae.data.phantom_body import Painter

# (name, top z, bottom z, y of the body centre, radius) of the vertebral column, top to bottom.
_CERVICAL = [f"vertebrae_C{i}" for i in range(1, 8)]
_THORACIC = [f"vertebrae_T{i}" for i in range(1, 13)]
_LUMBAR = [f"vertebrae_L{i}" for i in range(1, 6)]


def _spine() -> list[tuple[str, float, float, float, float]]:
    out = []
    z = 800.0
    for names, height, y, r in (
        (_CERVICAL, 10.0, -22.0, 11.0),
        (_THORACIC, 22.0, -72.0, 16.0),
        (_LUMBAR, 26.0, -68.0, 20.0),
        (["vertebrae_S1"], 24.0, -72.0, 20.0),
    ):
        for name in names:
            out.append((name, z, z - height, y, r))
            z -= height + 2.0
    return out


SPINE = _spine()


def paint_anatomy(p: Painter) -> None:
    """Paint every modelled structure of ``p.subject`` (order matters: later wins)."""
    s = p.subject
    ct = s.modality == "CT"
    k = s.scale
    dx, dy, dz = s.shift_mm

    def c(x: float, y: float, z: float) -> tuple[float, float, float]:
        return (x * k + dx, y * k + dy, z + dz)

    def e(
        name: str | None,
        tissue: str,
        center: tuple[float, float, float],
        semi: tuple[float, float, float],
        where=None,
    ) -> None:  # type: ignore[no-untyped-def]
        p.ellipsoid(name, tissue, c(*center), (semi[0] * k, semi[1] * k, semi[2]), where)

    def cyl(
        name: str | None, tissue: str, xy: tuple[float, float], r: float, z0: float, z1: float
    ) -> None:
        p.cylinder(
            name, tissue, (xy[0] * k + dx, xy[1] * k + dy), (r * k, r * k), (z0 + dz, z1 + dz)
        )

    if ct:
        p.table()
    p.body()
    # Head: the face (soft tissue, nose, eyes, maxillary sinuses, mandible) before the
    # cranium, so that axial, coronal and sagittal sections of the head differ as they do
    # in patients; all unlabelled. Then skull, brain and its ventricles (inside the mask).
    e(None, "soft", (0, 48, 812), (62, 62, 56))
    e(None, "soft", (0, 104, 828), (9, 14, 20))
    for sx in (-1, 1):
        e(None, "vitreous", (sx * 32, 78, 842), (12, 11, 11))
        e(None, "air", (sx * 26, 58, 808), (13, 15, 16))
    jaw_c, jaw_s = (0.0, 40.0, 772.0), (50.0, 52.0, 13.0)

    def jaw_rim(x, y, z):  # type: ignore[no-untyped-def]
        """The mandible's horseshoe: the outer rim of an ellipse, front part only."""
        u = (x - dx) / (jaw_s[0] * k)
        v = (y - dy - jaw_c[1] * k) / (jaw_s[1] * k)
        return (u**2 + v**2 > 0.6) & (y > dy + 10 * k)

    e(None, "bone", jaw_c, jaw_s, jaw_rim)
    e("skull", "bone", (0, -4, 884), (74, 88, 78))
    e("brain", "brain", (0, -4, 887), (64, 78, 66))
    for sx in (-1, 1):
        e("brain", "csf", (sx * 10, 0, 900), (7, 28, 13))
    # Back muscles and glutes
    for side, sx in (("left", -1), ("right", 1)):
        cyl(f"autochthon_{side}", "muscle", (sx * 38, -108), 18, 300, 720)
        e(f"gluteus_maximus_{side}", "muscle", (sx * 78, -80, 140), (58, 34, 75))
        e(f"iliopsoas_{side}", "muscle", (sx * 45, -40, 240), (18, 18, 90))
    # Airway, oesophagus, great vessels
    cyl("trachea" if ct else None, "airway", (0, 5), 9, 640, 770)
    cyl("esophagus", "soft", (-6, -32), 7, 430, 740)
    # Lungs (CT by lobe; MRI whole lungs)
    for side, sx in (("left", -1), ("right", 1)):
        center, semi = (sx * 80, -5, 590), (56, 76, 118)
        if not ct:
            e(f"lung_{side}", "lung", center, semi)
            continue
        oblique = (
            (lambda x, y, z: z > 600 + dz - 0.45 * (y - dy))
            if side == "left"
            else (lambda x, y, z: z > 625 + dz - 0.35 * (y - dy))
        )
        e(f"lung_lower_lobe_{side}", "lung", center, semi)
        e(f"lung_upper_lobe_{side}", "lung", center, semi, oblique)
        if side == "right":
            e(
                "lung_middle_lobe_right",
                "lung",
                center,
                semi,
                lambda x, y, z: (z <= 625 + dz - 0.35 * (y - dy)) & (y > 15 + dy) & (z > 530 + dz),
            )
    e("heart", "heart", (-20, 30, 560), (55, 48, 58))
    cyl("aorta", "blood", (-22, -48), 11, 330, 600)
    cyl("aorta", "blood", (-4, 22), 13, 585, 640)
    cyl("inferior_vena_cava", "blood", (22, -40), 10, 330, 520)
    # Upper abdomen
    e("liver", "liver", (65, 10, 455), (95, 80, 70))
    if s.lesion is not None:
        lx, ly, lz, lr = s.lesion
        p.ellipsoid("liver", "lesion", (lx + dx, ly + dy, lz + dz), (lr, lr, lr), within="liver")
    e("gallbladder", "gallbladder", (52, 55, 412), (15, 15, 24))
    e("spleen", "spleen", (-92, -40, 455), (30, 45, 55))
    e("stomach", "stomach", (-50, 35, 452), (45, 35, 48))
    e("pancreas", "pancreas", (-10, -8, 400), (60, 14, 12))
    for side, sx, zc in (("left", -1, 388.0), ("right", 1, 372.0)):
        e(f"kidney_{side}", "kidney", (sx * 66, -50, zc), (25, 30, 55))
        e(f"adrenal_gland_{side}", "adrenal", (sx * 55, -45, zc + 68), (10, 8, 12))
    # Bowel
    e("small_bowel", "bowel", (0, 40, 305), (70, 40, 50))
    cyl("colon", "colon", (96, 20), 22, 250, 385)
    cyl("colon", "colon", (-96, 10), 20, 250, 385)
    e("colon", "colon", (0, 62, 372), (95, 20, 18))
    # Pelvis
    e("urinary_bladder", "bladder", (0, 50, 150), (45 if s.sex == "F" else 40, 36, 34))
    if s.sex == "M":
        e("prostate", "prostate", (0, 30, 96), (18, 15, 16))
    e("sacrum", "bone", (0, -82, 238), (40, 18, 34))
    for side, sx in (("left", -1), ("right", 1)):
        hip_x = 98 if s.sex == "F" else 92
        e(f"hip_{side}", "bone", (sx * hip_x, -12, 195), (26, 55, 68))
        e(f"femur_{side}", "bone", (sx * 86, 5, 115), (24, 24, 24))
        cyl(f"femur_{side}", "bone", (sx * 100, 5), 18, -260, 110)
        cyl(f"iliac_artery_{side}", "blood", (sx * 40, 10), 7, 250, 330)
    # Shoulder girdle, sternum
    for side, sx in (("left", -1), ("right", 1)):
        e(f"clavicula_{side}", "bone", (sx * 70, 40, 726), (60, 8, 8))
        e(f"scapula_{side}", "bone", (sx * 110, -95, 660), (45, 10, 60))
    e("sternum", "bone", (0, 100, 600), (15, 8, 80))
    # Spine and cord (MRI labels every vertebra 'vertebrae')
    for name, top, bottom, y, r in SPINE:
        cyl(name if ct else "vertebrae", "bone", (0, y), r, bottom, top)
        cyl("spinal_cord", "cord", (0, y - r - 8), 5, bottom - 2.0, top)
