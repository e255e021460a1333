"""The TotalSegmentator v2 structure lists and their anatomical groups: the one place for them.

* CT: the 117 classes of TotalSegmentator CT v2 (``total`` task).
* MRI: the 50 classes of TotalSegmentator MRI v2.0.0 (``total_mr`` task).
* ``ALL_STRUCTURES``: their union (121 names), CT order first, then the 4 MRI-only names.

A structure that is not annotated for a modality (for example ``lung_left`` in CT, whose
lungs are annotated by lobe) is *missing* for that modality's slices, not absent.
"""

from __future__ import annotations

from types import MappingProxyType

_VERTEBRAE_CT: tuple[str, ...] = (
    "vertebrae_S1",
    *(f"vertebrae_L{i}" for i in range(5, 0, -1)),
    *(f"vertebrae_T{i}" for i in range(12, 0, -1)),
    *(f"vertebrae_C{i}" for i in range(7, 0, -1)),
)

CT_STRUCTURES: tuple[str, ...] = (
    "spleen",
    "kidney_right",
    "kidney_left",
    "gallbladder",
    "liver",
    "stomach",
    "pancreas",
    "adrenal_gland_right",
    "adrenal_gland_left",
    "lung_upper_lobe_left",
    "lung_lower_lobe_left",
    "lung_upper_lobe_right",
    "lung_middle_lobe_right",
    "lung_lower_lobe_right",
    "esophagus",
    "trachea",
    "thyroid_gland",
    "small_bowel",
    "duodenum",
    "colon",
    "urinary_bladder",
    "prostate",
    "kidney_cyst_left",
    "kidney_cyst_right",
    "sacrum",
    *_VERTEBRAE_CT,
    "heart",
    "aorta",
    "pulmonary_vein",
    "brachiocephalic_trunk",
    "subclavian_artery_right",
    "subclavian_artery_left",
    "common_carotid_artery_right",
    "common_carotid_artery_left",
    "brachiocephalic_vein_left",
    "brachiocephalic_vein_right",
    "atrial_appendage_left",
    "superior_vena_cava",
    "inferior_vena_cava",
    "portal_vein_and_splenic_vein",
    "iliac_artery_left",
    "iliac_artery_right",
    "iliac_vena_left",
    "iliac_vena_right",
    "humerus_left",
    "humerus_right",
    "scapula_left",
    "scapula_right",
    "clavicula_left",
    "clavicula_right",
    "femur_left",
    "femur_right",
    "hip_left",
    "hip_right",
    "spinal_cord",
    "gluteus_maximus_left",
    "gluteus_maximus_right",
    "gluteus_medius_left",
    "gluteus_medius_right",
    "gluteus_minimus_left",
    "gluteus_minimus_right",
    "autochthon_left",
    "autochthon_right",
    "iliopsoas_left",
    "iliopsoas_right",
    "brain",
    "skull",
    *(f"rib_left_{i}" for i in range(1, 13)),
    *(f"rib_right_{i}" for i in range(1, 13)),
    "sternum",
    "costal_cartilages",
)

MRI_STRUCTURES: tuple[str, ...] = (
    "spleen",
    "kidney_right",
    "kidney_left",
    "gallbladder",
    "liver",
    "stomach",
    "pancreas",
    "adrenal_gland_right",
    "adrenal_gland_left",
    "lung_left",
    "lung_right",
    "esophagus",
    "small_bowel",
    "duodenum",
    "colon",
    "urinary_bladder",
    "prostate",
    "sacrum",
    "vertebrae",
    "intervertebral_discs",
    "spinal_cord",
    "heart",
    "aorta",
    "inferior_vena_cava",
    "portal_vein_and_splenic_vein",
    "iliac_artery_left",
    "iliac_artery_right",
    "iliac_vena_left",
    "iliac_vena_right",
    "humerus_left",
    "humerus_right",
    "scapula_left",
    "scapula_right",
    "clavicula_left",
    "clavicula_right",
    "femur_left",
    "femur_right",
    "hip_left",
    "hip_right",
    "gluteus_maximus_left",
    "gluteus_maximus_right",
    "gluteus_medius_left",
    "gluteus_medius_right",
    "gluteus_minimus_left",
    "gluteus_minimus_right",
    "autochthon_left",
    "autochthon_right",
    "iliopsoas_left",
    "iliopsoas_right",
    "brain",
)

ALL_STRUCTURES: tuple[str, ...] = CT_STRUCTURES + tuple(
    s for s in MRI_STRUCTURES if s not in set(CT_STRUCTURES)
)

STRUCTURES_BY_MODALITY: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {"CT": CT_STRUCTURES, "MR": MRI_STRUCTURES}
)


def _names(prefixes: tuple[str, ...], exact: tuple[str, ...] = ()) -> tuple[str, ...]:
    return tuple(s for s in ALL_STRUCTURES if s in exact or any(s.startswith(p) for p in prefixes))


# Anatomical groups (used for group-presence probes, descriptions and queries). A structure
# may belong to more than one group.
GROUPS: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {
        "head": _names((), ("brain", "skull")),
        "neck": _names(("vertebrae_C", "common_carotid"), ("thyroid_gland", "trachea")),
        "lungs": _names(("lung_",)),
        "heart_and_great_vessels": _names(
            ("subclavian", "brachiocephalic", "common_carotid"),
            (
                "heart",
                "aorta",
                "pulmonary_vein",
                "atrial_appendage_left",
                "superior_vena_cava",
                "inferior_vena_cava",
            ),
        ),
        "thorax": _names(
            ("lung_", "rib_", "vertebrae_T"),
            ("heart", "esophagus", "trachea", "sternum", "costal_cartilages", "pulmonary_vein"),
        ),
        "abdomen": _names(
            ("kidney", "adrenal"),
            (
                "spleen",
                "gallbladder",
                "liver",
                "stomach",
                "pancreas",
                "small_bowel",
                "duodenum",
                "colon",
                "portal_vein_and_splenic_vein",
            ),
        ),
        "pelvis": _names(
            ("hip_", "iliac_", "gluteus_"),
            ("urinary_bladder", "prostate", "sacrum", "vertebrae_S1"),
        ),
        "spine": _names(
            ("vertebrae",),
            (
                "sacrum",
                "spinal_cord",
                "intervertebral_discs",
                "autochthon_left",
                "autochthon_right",
            ),
        ),
        "ribs": _names(("rib_",), ("sternum", "costal_cartilages")),
        "upper_limb_girdle": _names(("humerus", "scapula", "clavicula")),
        "lower_limb": _names(("femur", "hip_", "gluteus", "iliopsoas")),
        "vessels": _names(
            ("iliac_", "subclavian", "common_carotid", "brachiocephalic"),
            (
                "aorta",
                "inferior_vena_cava",
                "superior_vena_cava",
                "portal_vein_and_splenic_vein",
                "pulmonary_vein",
            ),
        ),
        "bones": _names(
            ("vertebrae", "rib_", "humerus", "scapula", "clavicula", "femur", "hip_"),
            ("sacrum", "skull", "sternum"),
        ),
        "muscles": _names(("gluteus", "autochthon", "iliopsoas")),
        "digestive": _names(
            (),
            (
                "esophagus",
                "stomach",
                "duodenum",
                "small_bowel",
                "colon",
                "liver",
                "gallbladder",
                "pancreas",
            ),
        ),
        "urogenital": _names(("kidney",), ("urinary_bladder", "prostate")),
    }
)


def groups_of(structure: str) -> tuple[str, ...]:
    """The groups a structure belongs to."""
    return tuple(g for g, members in GROUPS.items() if structure in members)


def structure_index(name: str) -> int:
    """Column of a structure in ``ALL_STRUCTURES`` (the column order of the anatomy arrays)."""
    try:
        return ALL_STRUCTURES.index(name)
    except ValueError:
        raise KeyError(
            f"unknown structure {name!r}; see medsae.data.structures.ALL_STRUCTURES"
        ) from None


def pretty(name: str) -> str:
    """A readable form of a structure name: ``kidney_left`` -> ``left kidney``."""
    parts = name.split("_")
    side = ""
    if parts[-1] in {"left", "right"}:
        side = parts.pop()
    elif len(parts) >= 2 and parts[-2] in {"left", "right"} and parts[-1].isdigit():
        side = parts.pop(-2)
    text = " ".join(parts)
    text = text.replace("vertebrae ", "vertebra ").replace("clavicula", "clavicle")
    return f"{side} {text}".strip()
