"""The words a text query may use for the labels of the one label vocabulary.

A *phrase* (lower case, words separated by single spaces) maps to a :class:`Term`: the
aspect it speaks of and the label names it means, any one of which makes a slice match
(``"kidneys"`` -> ``structure=kidney_left`` or ``structure=kidney_right``). The table
(:func:`vocabulary`) is built from

* every structure of :data:`medsae.data.structures.ALL_STRUCTURES`, in its readable form
  (``left kidney``) and its name's words (``kidney left``); without its side, a structure
  means both sides (``kidney``, ``kidneys``, ``hip``); plurals are formed by rule and by
  :data:`_PLURALS`;
* every group of :data:`medsae.data.structures.GROUPS` and the regions of :data:`REGIONS`
  (``upper abdomen``, ``lumbar spine``, ``hip joints``) as groups of structures;
* modality, plane, sex and age words (:data:`_WORDS`) and unambiguous lay words
  (``belly``, ``backbone``, ``collarbone``).

Ages in numbers (``over 80``, ``under 40``, ``aged 70``, ``60-80``) are read by
:func:`age_groups_of_number` (the parser finds them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType

from medsae.data.structures import ALL_STRUCTURES, GROUPS, pretty
from medsae.data.table import AGE_GROUPS

ASPECTS = ("modality", "plane", "anatomy", "demographics", "study")
"""Aspects of a query: every concept belongs to one, and every aspect of a query must hold."""

EXCLUSIVE_ASPECT_KINDS = ("modality", "plane", "sex", "age_group")
"""Label kinds of which a slice has one value: several of one kind in a query mean either."""


@dataclass(frozen=True)
class Term:
    """What a phrase means: its aspect and the labels any of which it asks for."""

    aspect: str
    labels: tuple[str, ...]


def aspect_of(label: str) -> str:
    """The aspect of a label name: ``structure=liver`` -> ``anatomy``, ``sex=F`` ->
    ``demographics``."""
    kind = label.split("=", 1)[0]
    if kind in ("structure", "group"):
        return "anatomy"
    if kind in ("sex", "age_group"):
        return "demographics"
    if kind in ("modality", "plane"):
        return kind
    return "study"


def _s(*names: str) -> tuple[str, ...]:
    return tuple(f"structure={n}" for n in names)


def _prefixed(*prefixes: str) -> tuple[str, ...]:
    return _s(*(n for n in ALL_STRUCTURES if any(n.startswith(p) for p in prefixes)))


def _g(*names: str) -> tuple[str, ...]:
    return tuple(f"group={n}" for n in names)


_OLD = ("age_group=60-80", "age_group=>=80")
_WORDS: dict[str, tuple[str, ...]] = {
    # modality
    "ct": ("modality=CT",),
    "cat": ("modality=CT",),
    "cat scan": ("modality=CT",),
    "ct scan": ("modality=CT",),
    "computed tomography": ("modality=CT",),
    "computerized tomography": ("modality=CT",),
    "computerised tomography": ("modality=CT",),
    "tomography": ("modality=CT",),
    "mri": ("modality=MR",),
    "mr": ("modality=MR",),
    "mris": ("modality=MR",),
    "magnetic resonance": ("modality=MR",),
    "magnetic resonance imaging": ("modality=MR",),
    "mr imaging": ("modality=MR",),
    # common abbreviations of radiology reports
    "ax": ("plane=axial",),
    "tra": ("plane=axial",),
    "cor": ("plane=coronal",),
    "sag": ("plane=sagittal",),
    "abd": _g("abdomen"),
    "l spine": _prefixed("vertebrae_L"),
    "t spine": _prefixed("vertebrae_T"),
    "c spine": _prefixed("vertebrae_C"),
    # plane
    "axial": ("plane=axial",),
    "transverse": ("plane=axial",),
    "transaxial": ("plane=axial",),
    "cross section": ("plane=axial",),
    "cross sectional": ("plane=axial",),
    "horizontal": ("plane=axial",),
    "coronal": ("plane=coronal",),
    "frontal": ("plane=coronal",),
    "front view": ("plane=coronal",),
    "sagittal": ("plane=sagittal",),
    "saggital": ("plane=sagittal",),
    "lateral": ("plane=sagittal",),
    "side view": ("plane=sagittal",),
    "midsagittal": ("plane=sagittal",),
    # sex
    "female": ("sex=F",),
    "females": ("sex=F",),
    "woman": ("sex=F",),
    "women": ("sex=F",),
    "lady": ("sex=F",),
    "girl": ("sex=F",),
    "male": ("sex=M",),
    "males": ("sex=M",),
    "man": ("sex=M",),
    "men": ("sex=M",),
    "gentleman": ("sex=M",),
    "boy": ("sex=M",),
    # age
    "young": ("age_group=<40",),
    "younger": ("age_group=<40",),
    "young adult": ("age_group=<40",),
    "middle aged": ("age_group=40-60",),
    "middle age": ("age_group=40-60",),
    "elderly": _OLD,
    "old": _OLD,
    "older": _OLD,
    "senior": _OLD,
    "aged": _OLD,
    "geriatric": _OLD,
    "very old": ("age_group=>=80",),
    "octogenarian": ("age_group=>=80",),
    "nonagenarian": ("age_group=>=80",),
    # regions as groups (lay words where unambiguous)
    "chest": _g("thorax"),
    "thorax": _g("thorax"),
    "thoracic": _g("thorax"),
    "rib cage": _g("ribs"),
    "ribcage": _g("ribs"),
    "belly": _g("abdomen"),
    "tummy": _g("abdomen"),
    "abdominal": _g("abdomen"),
    "abdomen": _g("abdomen"),
    "pelvis": _g("pelvis"),
    "pelvic": _g("pelvis"),
    "head": _g("head"),
    "cranium": _s("skull"),
    "cranial": _g("head"),
    "neck": _g("neck"),
    "cervical": _g("neck"),
    "spine": _g("spine"),
    "spinal": _g("spine"),
    "spinal column": _g("spine"),
    "vertebral column": _g("spine"),
    "backbone": _g("spine"),
    "back bone": _g("spine"),
    "vertebra": _prefixed("vertebrae"),
    "vertebrae": _prefixed("vertebrae"),
    "vertebral": _prefixed("vertebrae"),
    "vertebral bodies": _prefixed("vertebrae"),
    "lumbar spine": _prefixed("vertebrae_L"),
    "lumbar vertebrae": _prefixed("vertebrae_L"),
    "lumbar": _prefixed("vertebrae_L"),
    "lower back": _prefixed("vertebrae_L"),
    "thoracic spine": _prefixed("vertebrae_T"),
    "thoracic vertebrae": _prefixed("vertebrae_T"),
    "cervical spine": _prefixed("vertebrae_C"),
    "cervical vertebrae": _prefixed("vertebrae_C"),
    "great vessels": _g("heart_and_great_vessels"),
    "blood vessels": _g("vessels"),
    "vessels": _g("vessels"),
    "vascular": _g("vessels"),
    "bones": _g("bones"),
    "skeleton": _g("bones"),
    "muscles": _g("muscles"),
    "bowel": _s("small_bowel", "colon", "duodenum"),
    "bowels": _s("small_bowel", "colon", "duodenum"),
    "gut": _s("small_bowel", "colon", "duodenum"),
    "intestine": _s("small_bowel", "colon", "duodenum"),
    "intestines": _s("small_bowel", "colon", "duodenum"),
    "small intestine": _s("small_bowel"),
    "large intestine": _s("colon"),
    "large bowel": _s("colon"),
    "gi tract": _g("digestive"),
    "urinary tract": _g("urogenital"),
    "upper abdomen": _s(
        "liver", "spleen", "stomach", "pancreas", "gallbladder", "kidney_left", "kidney_right"
    )
    + _prefixed("adrenal"),
    "lower abdomen": _s("small_bowel", "colon", "urinary_bladder"),
    "hip joints": _s("hip_left", "hip_right", "femur_left", "femur_right"),
    "hip joint": _s("hip_left", "hip_right", "femur_left", "femur_right"),
    "hips": _s("hip_left", "hip_right"),
    "thighs": _s("femur_left", "femur_right"),
    "thigh": _s("femur_left", "femur_right"),
    "thigh bone": _s("femur_left", "femur_right"),
    "shoulder": _g("upper_limb_girdle"),
    "shoulders": _g("upper_limb_girdle"),
    "shoulder girdle": _g("upper_limb_girdle"),
    "shoulder blade": _prefixed("scapula"),
    "shoulder blades": _prefixed("scapula"),
    "collarbone": _prefixed("clavicula"),
    "collarbones": _prefixed("clavicula"),
    "collar bone": _prefixed("clavicula"),
    "upper arm": _prefixed("humerus"),
    "breastbone": _s("sternum"),
    "breast bone": _s("sternum"),
    "windpipe": _s("trachea"),
    "airway": _s("trachea"),
    "gullet": _s("esophagus"),
    "food pipe": _s("esophagus"),
    "oesophagus": _s("esophagus"),
    "bladder": _s("urinary_bladder"),
    "prostate gland": _s("prostate"),
    "thyroid": _s("thyroid_gland"),
    "gall bladder": _s("gallbladder"),
    "buttock": _prefixed("gluteus"),
    "buttocks": _prefixed("gluteus"),
    "glutes": _prefixed("gluteus"),
    "gluteal muscles": _prefixed("gluteus"),
    "back muscles": _prefixed("autochthon"),
    "psoas": _prefixed("iliopsoas"),
    "lung": _g("lungs"),
    "lungs": _g("lungs"),
    "pulmonary": _g("lungs"),
    "ribs": _prefixed("rib_"),
    "rib": _prefixed("rib_"),
    "cardiac": _s("heart"),
    "hepatic": _s("liver"),
    "renal": _s("kidney_left", "kidney_right"),
    "splenic": _s("spleen"),
    "gastric": _s("stomach"),
    "cerebral": _s("brain"),
    "intervertebral disc": _s("intervertebral_discs"),
    "discs": _s("intervertebral_discs"),
}
"""Modality, plane, sex, age, region and lay words (phrase -> labels, any of which)."""

REGIONS = MappingProxyType(
    {k: v for k, v in _WORDS.items() if k in ("upper abdomen", "lower abdomen", "hip joints")}
)
"""Regions defined here as groups of structures (beside :data:`GROUPS`)."""

_PLURALS = {
    "vertebra": "vertebrae",
    "femur": "femurs femora",
    "humerus": "humeri",
    "scapula": "scapulae scapulas",
    "clavicle": "clavicles",
    "kidney": "kidneys",
    "lobe": "lobes",
}


def _plurals(phrase: str) -> list[str]:
    head, _, last = phrase.rpartition(" ")
    forms = _PLURALS.get(last, "").split() or [last + ("es" if last.endswith("s") else "s")]
    return [f"{head} {f}".strip() for f in forms]


def _structure_words() -> dict[str, set[str]]:
    """Phrases of every structure: readable form, name words, and without the side."""
    out: dict[str, set[str]] = {}

    def add(phrase: str, label: str) -> None:
        out.setdefault(" ".join(phrase.lower().split()), set()).add(label)

    for s in ALL_STRUCTURES:
        label = f"structure={s}"
        nice = pretty(s)
        level = re.fullmatch(r"vertebrae_([A-Z]\d+)", s)
        if level:  # "L1", "L1 vertebra"
            add(level.group(1), label)
            add(f"{level.group(1)} vertebra", label)
        for phrase in (nice, s.replace("_", " ")):
            add(phrase, label)
        sideless = re.sub(r"\b(left|right)\b", " ", nice)
        sideless = " ".join(sideless.split())
        if sideless != nice:
            add(sideless, label)
            for p in _plurals(sideless):
                add(p, label)
                add(f"both {p}", label)
            for side in ("left", "right"):
                if side in nice.split():
                    for p in [sideless, *_plurals(sideless)]:
                        add(f"{side} {p}", label)
        else:
            for p in _plurals(nice):
                add(p, label)
    for group in GROUPS:
        words = group.replace("_", " ")
        out.setdefault(words, set()).add(f"group={group}")
    return out


@cache
def vocabulary() -> MappingProxyType[str, Term]:
    """The phrase table: every phrase a query may use, with what it means."""
    table: dict[str, set[str]] = {k: set(v) for k, v in _structure_words().items()}
    for phrase, words in _WORDS.items():  # the hand-written words win over the generated
        table[phrase] = set(words)
    out: dict[str, Term] = {}
    for phrase, names in table.items():
        aspects = {aspect_of(x) for x in names}
        if len(aspects) != 1:
            raise ValueError(f"vocabulary phrase {phrase!r} mixes aspects {sorted(aspects)}")
        out[phrase] = Term(aspects.pop(), tuple(sorted(names)))
    return MappingProxyType(out)


def age_groups_of_number(relation: str, years: float) -> tuple[str, ...]:
    """Age groups meant by ``over 70`` (``relation`` ``over``), ``under 40`` (``under``) or
    ``aged 70`` (``aged``): those whose range overlaps the stated ages."""
    bounds = {"<40": (0, 40), "40-60": (40, 60), "60-80": (60, 80), ">=80": (80, 200)}
    if relation == "over":
        lo, hi = years, 200.0
    elif relation == "under":
        lo, hi = 0.0, years
    else:
        lo, hi = years, years + 1e-6
    groups = [g for g in AGE_GROUPS if bounds[g][0] < hi and lo < bounds[g][1]]
    return tuple(f"age_group={g}" for g in groups)
