"""The words of every label: in descriptions, in the embedding scorer, in the label scorer's
phrase matching, in slice metadata lines and in prompts.

Label names are ``<kind>=<value>`` (:mod:`medsae.labels.table`). For a label ``name``:

* :func:`label_phrase`: its words in a description (``structure=kidney_left`` -> ``left
  kidney``, ``sex=F`` -> ``female``, ``age_group=>=80`` -> ``over 80``, ``kvp=80`` -> ``80 kVp``);
* :func:`embedding_phrase`: the text the embedding scorer embeds (``modality=CT`` -> ``CT
  scan``, ``plane=axial`` -> ``axial slice``);
* :func:`aliases`: the phrases the label scorer (and the embedding scorer's phrase matching)
  recognise in a description, lower case;
* :func:`slice_text`: one line of words for a slice's metadata and structures.

A description names the anatomy a feature needs absent in a closing clause led by
:data:`ABSENT_LEAD` (``"...; not in view: lungs, heart"``); :func:`split_absent` separates it.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from medsae.data.structures import pretty
from medsae.labels.concepts_extra import is_edge
from medsae.labels.concepts_study import SOURCE_COLUMNS, STUDY_FACETS, study_value

GROUP_WORDS = {
    "heart_and_great_vessels": "heart and great vessels",
    "upper_limb_girdle": "shoulder girdle",
    "lower_limb": "hips and thighs",
    "digestive": "digestive tract",
    "urogenital": "urinary tract",
}
"""Words of anatomical groups whose name reads badly with underscores replaced."""
SEX_WORDS = {"F": "female", "M": "male"}
AGE_WORDS = {
    "<40": ("young", "under 40"),
    "40-60": ("middle-aged", "40-60"),
    "60-80": ("older", "60-80"),
    ">=80": ("elderly", "over 80"),
}
"""Per age group: (adjective, range words)."""
MODALITY_WORDS = {"CT": "CT", "MR": "MRI"}

GEOMETRY_PHRASES = {
    "position=edge": "outermost slice at the boundary of the scan",
    "position=central": "slice deep inside the volume",
    "coverage=sliver": "thin sliver of tissue in a mostly empty image",
    "coverage=partial": "medium-sized body cross-section",
    "coverage=full": "large body cross-section filling the frame",
}
"""Words of each slice-position and body-coverage label in descriptions and for the embedding
scorer (:mod:`medsae.labels.concepts_extra`)."""

_EMBEDDING_PHRASES = {
    "modality=CT": "CT scan",
    "modality=MR": "MRI scan",
    "sex=F": "female patient",
    "sex=M": "male patient",
    "age_group=<40": "young patient under 40",
    "age_group=40-60": "middle-aged patient 40 to 60",
    "age_group=60-80": "older patient 60 to 80",
    "age_group=>=80": "elderly patient over 80",
    **GEOMETRY_PHRASES,
}
_ALIASES = {
    "modality=CT": ("ct", "computed tomography"),
    "modality=MR": ("mri", "mr", "magnetic resonance"),
    "sex=F": ("female", "females", "women", "woman"),
    "sex=M": ("male", "males", "men", "man"),
    "age_group=<40": ("under 40", "<40", "younger than 40", "below 40", "young"),
    "age_group=40-60": ("40-60", "40 to 60", "middle-aged"),
    "age_group=60-80": ("60-80", "60 to 80"),
    "age_group=>=80": ("over 80", ">=80", "80+", "80 or older", "older than 80", "elderly"),
    "position=edge": ("outermost slice", "boundary of the scan", "edge slice"),
    "position=central": ("deep inside the volume", "central slice"),
    "coverage=sliver": ("thin sliver of tissue", "sliver"),
    "coverage=partial": ("medium-sized body cross-section",),
    "coverage=full": ("large body cross-section",),
}

_STUDY_WORDS: dict[str, tuple[str, str, tuple[str, ...], str | None]] = {
    # facet -> (description, embedding phrase, label-scorer aliases, slice text), "{v}" the value
    "study": ("{v} studies", "{v} study", ("{v} studies", "{v} study"), "{v} study"),
    "kvp": ("{v} kVp", "CT at {v} kVp tube voltage", ("{v} kvp",), "{v} kVp"),
    "field_strength": ("{v} T scanners", "{v} tesla MRI scanner", ("{v} t", "{v} tesla"), "{v} T"),
    "pathology": ("patients with {v}", "patient with {v}", ("with {v}", "{v}"), "finding: {v}"),
}
_NO_FINDING_WORDS = (
    "patients without pathology",
    "patient without pathology",
    ("without pathology", "no pathology"),
    None,  # the slice text leaves out "no finding"
)

ABSENT_LEAD = "not in view:"
"""Lead of the clause naming what the slices do not show ("...; not in view: lungs, heart")."""


def _study_words(facet: str, value: str) -> tuple[str, str, tuple[str, ...], str | None]:
    if facet not in _STUDY_WORDS:
        raise KeyError(f"no study or acquisition facet {facet!r}; known: {list(_STUDY_WORDS)}")
    words = _NO_FINDING_WORDS if facet == "pathology" and value == "none" else _STUDY_WORDS[facet]
    describe, embed, alias, text = words
    return (
        describe.format(v=value),
        embed.format(v=value),
        tuple(a.format(v=value) for a in alias),
        None if text is None else text.format(v=value),
    )


def study_phrase(name: str) -> str:
    """Words of a study or acquisition label in descriptions: ``study=abdomen`` -> ``abdomen
    studies``, ``kvp=80`` -> ``80 kVp``, ``field_strength=3`` -> ``3 T scanners``,
    ``pathology=liver lesion`` -> ``patients with liver lesion``."""
    return _study_words(*name.split("=", 1))[0]


def label_phrase(name: str) -> str:
    """Words for a label name: ``structure=kidney_left`` -> ``left kidney``, ``sex=F`` -> ``female``,
    ``age_group=>=80`` -> ``over 80``."""
    kind, _, value = name.partition("=")
    if kind == "structure":
        return pretty(value)
    if kind == "group":
        return GROUP_WORDS.get(value, value.replace("_", " "))
    if kind == "sex":
        return SEX_WORDS.get(value, value)
    if kind == "age_group":
        return AGE_WORDS[value][1] if value in AGE_WORDS else value
    if kind == "modality":
        return MODALITY_WORDS.get(value, value)
    if kind == "manufacturer":
        return f"{value} scanner"
    if kind in STUDY_FACETS:
        return study_phrase(name)
    if name in GEOMETRY_PHRASES:
        return GEOMETRY_PHRASES[name]
    if kind in BUILT_IN_KINDS:
        return value
    return user_label_phrase(kind, value)


BUILT_IN_KINDS = frozenset(
    {"modality", "plane", "sex", "age_group", "manufacturer", "structure", "group"}
    | set(STUDY_FACETS)
    | {"position", "coverage"}
)
"""Label kinds medsae derives itself; any other kind is a user label column of imported
embeddings (:mod:`medsae.encode.imported`)."""


def user_label_phrase(kind: str, value: str) -> str:
    """Words of a user label: ``diagnosis=pneumonia`` -> ``diagnosis pneumonia``."""
    return f"{kind.replace('_', ' ')} {value}"


def prompt_label(name: str) -> str:
    """A label's words in a prompt line (an age group reads ``age over 80``)."""
    phrase = label_phrase(name)
    return f"age {phrase}" if name.startswith("age_group=") else phrase


def embedding_phrase(name: str) -> str:
    """The text embedded for a label by the embedding scorer."""
    if name in _EMBEDDING_PHRASES:
        return _EMBEDDING_PHRASES[name]
    if name.startswith("plane="):
        return f"{name.split('=', 1)[1]} slice"
    if name.split("=", 1)[0] in STUDY_FACETS:
        return _study_words(*name.split("=", 1))[1]
    return label_phrase(name)


def aliases(name: str) -> tuple[str, ...]:
    """Phrases the label scorer recognises for a label, lower case (none for unknown kinds)."""
    kind, _, value = name.partition("=")
    words: tuple[str, ...] = _ALIASES.get(name, ())
    if kind in ("plane", "manufacturer"):
        words = (value,)
    elif kind == "structure":
        words = (pretty(value), value.replace("_", " "))
    elif kind == "group":
        words = (label_phrase(name), value.replace("_", " "))
    elif kind in STUDY_FACETS:
        words = _study_words(kind, value)[2]
    elif kind not in BUILT_IN_KINDS:
        words = (user_label_phrase(kind, value),)
    return tuple(w.lower() for w in words)


def slice_words(row: pd.Series | Any) -> list[str]:
    """Words for a slice's study and acquisition in a one-line slice text (may be empty)."""
    words = []
    for facet in STUDY_FACETS:
        value = study_value(facet, getattr(row, SOURCE_COLUMNS[facet], None))
        text = None if value is None else _study_words(facet, value)[3]
        if text is not None:
            words.append(text)
    return words


def slice_text(row: pd.Series | Any, structures: list[str], max_structures: int = 12) -> str:
    """One line of metadata for a slice: plane, modality, sex, age group, scanner, study and
    acquisition, position, structures."""

    def get(name: str) -> Any:
        value = getattr(row, name, None)
        return None if value is None or (isinstance(value, float) and np.isnan(value)) else value

    modality = MODALITY_WORDS.get(get("modality"), get("modality") or "")
    parts = [f"{get('plane') or 'unknown plane'} {modality}".strip()]
    if get("sex") is not None:
        parts.append(SEX_WORDS.get(get("sex"), str(get("sex"))))
    if get("age_group") is not None:
        parts.append(f"age {get('age_group')}")
    if get("manufacturer") is not None:
        parts.append(f"{get('manufacturer')} scanner")
    parts += slice_words(row)
    rel = get("rel_position")
    if rel is not None:
        parts.append("edge slice" if is_edge(rel) else "central slice")
    named = [pretty(s) for s in structures[:max_structures]]
    more = len(structures) - len(named)
    anatomy = (
        ", ".join(named) + (f" and {more} more" if more > 0 else "")
        if named
        else "no labelled structure"
    )
    return ", ".join(parts) + f"; structures: {anatomy}"


def absent_words(names: list[str]) -> list[str]:
    """Words for labels a description says are not in view (groups first, then structures)."""
    return [label_phrase(n) for n in sorted(names, key=lambda n: not n.startswith("group="))]


_ABSENT_BEFORE = re.compile(
    r"\b(?:without|no|not showing|not including|absence of|lacking|excluding|except|sparing)\b"
)
_ABSENT_AFTER = re.compile(
    r"\b(?:absent|not visible|not seen|not shown|not in view|not included|missing|not present|"
    r"excluded)\b"
)
_SCOPE_END = re.compile(r",|\bbut\b|\bwith\b|\bshowing\b|\bwhile\b")


def _clause_polarity(clause: str) -> tuple[str, str]:
    """(shown, absent) words of one clause of a description."""
    low = clause.lower()
    if low.startswith(ABSENT_LEAD):
        return "", clause[len(ABSENT_LEAD) :].strip()
    after = _ABSENT_AFTER.search(low)
    if after is not None:  # "..., kidneys absent": back to the previous comma
        start = low.rfind(",", 0, after.start()) + 1
        shown = (clause[:start].rstrip(" ,") + " " + clause[after.end() :].lstrip(" ,.")).strip()
        absent = clause[start : after.start()].strip(" ,:")
        more_shown, more_absent = _clause_polarity(shown) if shown != clause else (shown, "")
        return more_shown, ", ".join(a for a in (absent, more_absent) if a)
    before = _ABSENT_BEFORE.search(low)
    if before is None:
        return clause.strip(), ""
    end = _SCOPE_END.search(low, before.end())
    stop = end.start() if end is not None else len(clause)
    absent = clause[before.end() : stop].strip(" ,:")
    rest = clause[stop:].lstrip(", ")
    rest_shown, rest_absent = _clause_polarity(rest) if rest else ("", "")
    shown = " ".join(x for x in (clause[: before.start()].strip(" ,"), rest_shown) if x)
    return shown, ", ".join(a for a in (absent, rest_absent) if a)


def split_absent(description: str) -> tuple[str, str]:
    """``(what the description says is shown, what it says is absent)``: a description read
    with polarity, so that anatomy named as absent never counts as shown.

    Absent are: a clause led by :data:`ABSENT_LEAD`; the words after ``without``, ``no``,
    ``absence of``, ``excluding`` (and the like) up to the next comma, ``but``, ``with`` or
    ``showing``; the words before ``absent``, ``not visible``, ``not seen``, ``missing`` (and
    the like) back to the previous comma.

    ``"axial CT through the abdomen: liver; not in view: lungs, heart"`` ->
    ``("axial CT through the abdomen: liver", "lungs, heart")``; ``"coronal MRI without
    kidneys, liver visible"`` -> ``("coronal MRI liver visible", "kidneys")``.
    """
    shown, absent = [], []
    for clause in re.split(r";|\.(?:\s|$)", description):
        s, a = _clause_polarity(clause.strip())
        if s:
            shown.append(s)
        if a:
            absent.append(a)
    return "; ".join(shown), ", ".join(absent)
