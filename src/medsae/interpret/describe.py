"""Feature descriptions: an offline describer (no model) and an LLM/VLM describer.

Both read a feature's training-split statistics (:class:`~medsae.interpret.features.FeatureStats`)
and write one short clinical phrase, e.g. "axial CT through the abdomen: liver and spleen;
mostly patients over 80".

Offline describer (deterministic)
    1. A rule: greedy conjunction of labels that best predicts the feature's activation on the
       training split. Starting from "every slice", add the label ``L`` maximising the
       balanced accuracy ``BA(active, rule ∧ L) = (TPR + TNR) / 2`` (or ``F1 = 2 TP / (2 TP +
       FP + FN)`` with ``criterion="f1"``) while it improves by at least ``min_gain`` (at most
       ``max_terms`` labels, one value per metadata facet). With ``contrast`` (a function
       giving, per feature, training rows of activating slices and of *near misses*: the most
       similar non-activating slices of other stacks, plus random ones), labels are chosen
       by the mean of that balanced accuracy and the one on the near-miss rows, so that the
       phrase also says what sets the feature's slices apart from look-alikes it ignores.
       Structures that tie exactly with a chosen structure (same slices on this data) are
       named with it; a rule whose balanced accuracy on all training slices is below
       ``min_score`` (0.6), or whose precision could be chance (one-sided hypergeometric
       test of its true positives, p > ``alpha`` = 1e-4), is dropped ("no clear pattern").
    2. The phrase names the rule's labels plus those that dominate the active slices
       (``P(L | active) >= dominant`` for modality, plane, sex and scanner manufacturer;
       ``>= 0.75`` for age groups; structures with ``P >= 0.9`` and lift ``>= 2``), and the
       body region of the named structures (from ``GROUPS``). Study and acquisition labels
       (:mod:`medsae.interpret.concepts_study`) are named only when the rule chose them.

LLM describer
    Sends :data:`DESCRIBE_SYSTEM` and :data:`DESCRIBE_USER` (filled in) with the feature's
    most diverse top slices as PNG images (unless text only) and asks for
    :class:`DescriptionAnswer` by JSON schema. Failures are recorded, never raised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, Field
from scipy.stats import hypergeom

from medsae.data.structures import GROUPS, pretty
from medsae.interpret.concepts_extra import EXTRA_FACETS, PHRASES, is_edge
from medsae.interpret.concepts_study import STUDY_FACETS, slice_words, study_phrase
from medsae.interpret.features import FeatureStats, LabelTable
from medsae.interpret.llm import LLMClient, LLMError

REGIONS = (
    "head",
    "neck",
    "thorax",
    "abdomen",
    "pelvis",
    "lower_limb",
    "upper_limb_girdle",
    "spine",
)
_GROUP_WORDS = {
    "heart_and_great_vessels": "heart and great vessels",
    "upper_limb_girdle": "shoulder girdle",
    "lower_limb": "hips and thighs",
    "digestive": "digestive tract",
    "urogenital": "urinary tract",
}
_SEX_WORDS = {"F": "female", "M": "male"}
_AGE_WORDS = {
    "<40": ("young", "under 40"),
    "40-60": ("middle-aged", "40-60"),
    "60-80": ("older", "60-80"),
    ">=80": ("elderly", "over 80"),
}
_MODALITY_WORDS = {"CT": "CT", "MR": "MRI"}

DESCRIBE_SYSTEM = (
    "You are a radiologist naming what one feature of an image model responds to. You are shown "
    "the medical image slices on which the feature is most active, with their metadata and the "
    "labels that are over-represented among all slices where it is active. Answer with one short "
    "clinical phrase (at most 20 words) naming what these slices have in common: modality, "
    "plane, anatomical structures or body region, and demographics only when clearly shared. "
    "Do not mention the feature number. Answer in JSON following the given schema."
)

DESCRIBE_USER = (
    "Feature {latent}: active on {frequency_pct} of {n_train} training slices.\n"
    "Its top-activating slices (one per patient, most diverse first):\n"
    "{slice_lines}\n"
    "Labels over-represented where it is active (share among active slices vs all slices):\n"
    "{enrichment_lines}\n"
    "What do these slices have in common?"
)


class DescriptionAnswer(BaseModel):
    """The JSON answer the LLM describer asks for."""

    description: str = Field(min_length=1, max_length=300, description="One short clinical phrase.")


@dataclass
class Description:
    """A feature's description (``text`` None when describing failed; ``error`` says why)."""

    latent: int
    text: str | None
    describer: str
    error: str | None = None
    rule: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def label_phrase(name: str) -> str:
    """Words for a label name: ``structure=kidney_left`` -> ``left kidney``, ``sex=F`` -> ``female``,
    ``age_group=>=80`` -> ``over 80``."""
    kind, _, value = name.partition("=")
    if kind == "structure":
        return pretty(value)
    if kind == "group":
        return _GROUP_WORDS.get(value, value.replace("_", " "))
    if kind == "sex":
        return _SEX_WORDS.get(value, value)
    if kind == "age_group":
        return _AGE_WORDS[value][1] if value in _AGE_WORDS else value
    if kind == "modality":
        return _MODALITY_WORDS.get(value, value)
    if kind == "manufacturer":
        return f"{value} scanner"
    if kind in STUDY_FACETS:
        return study_phrase(name)
    if name in PHRASES:
        return PHRASES[name]
    return value


def _prompt_label(name: str) -> str:
    phrase = label_phrase(name)
    return f"age {phrase}" if name.startswith("age_group=") else phrase


def slice_text(row: pd.Series | Any, structures: list[str], max_structures: int = 12) -> str:
    """One line of metadata for a slice: plane, modality, sex, age group, scanner, study and
    acquisition, position, structures."""

    def get(name: str) -> Any:
        value = getattr(row, name, None)
        return None if value is None or (isinstance(value, float) and np.isnan(value)) else value

    parts = [
        f"{get('plane') or 'unknown plane'} {_MODALITY_WORDS.get(get('modality'), get('modality') or '')}".strip()
    ]
    if get("sex") is not None:
        parts.append(_SEX_WORDS.get(get("sex"), str(get("sex"))))
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


def present_structures(labels: LabelTable, row: int) -> list[str]:
    """Structures present in a slice (label table order)."""
    return [n.split("=", 1)[1] for n in labels.present(row) if n.startswith("structure=")]


class OfflineDescriber:
    """Deterministic descriptions from label statistics (see the module docstring)."""

    name = "offline"

    def __init__(
        self,
        labels: LabelTable,
        codes: sp.csr_matrix,
        train_rows: np.ndarray,
        *,
        max_terms: int = 4,
        min_gain: float = 0.02,
        dominant: float = 0.9,
        min_score: float = 0.6,
        max_tied: int = 2,
        criterion: str = "balanced_accuracy",
        alpha: float = 1e-4,
        contrast: Callable[[int], tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        self.contrast = contrast
        self.labels = labels
        self.train_rows = np.asarray(train_rows, dtype=np.int64)
        self._codes = sp.csc_matrix(codes[self.train_rows])
        self._values = labels.values[self.train_rows]
        self._values_f = self._values.astype(np.float32)
        self.max_terms = max_terms
        self.min_gain = min_gain
        self.dominant = dominant
        self.min_score = min_score
        self.max_tied = max_tied
        self.criterion = criterion
        self.alpha = alpha

    def rule(self, latent: int) -> list[str]:
        """Greedy conjunction of labels best predicting the feature's training activation."""
        start, stop = self._codes.indptr[latent], self._codes.indptr[latent + 1]
        active = np.zeros(len(self.train_rows), dtype=np.float32)
        active[self._codes.indices[start:stop]] = 1.0
        n_active = active.sum()
        if n_active == 0:
            return []
        mask = np.ones(len(self.train_rows), dtype=bool)
        n_total = len(self.train_rows)
        best = self._criterion(np.array([n_active]), np.array([n_total]), n_active, n_total)[0]
        near: tuple[np.ndarray, np.ndarray] | None = None
        if self.contrast is not None:  # label rows of near-miss contrast samples
            pos_rows, neg_rows = self.contrast(latent)
            if len(pos_rows) and len(neg_rows):
                near = (self.labels.values[pos_rows], self.labels.values[neg_rows])
                near_masks = [np.ones(len(pos_rows), bool), np.ones(len(neg_rows), bool)]
        fit = best
        chosen: list[int] = []
        tied: list[int] = []
        kinds: set[str] = set()
        for _ in range(self.max_terms):
            sub = self._values_f[mask]
            tp = active[mask] @ sub
            predicted = sub.sum(axis=0)
            f1 = self._criterion(tp, predicted, n_active, n_total)
            score = f1
            if near is not None:  # mean with the balanced accuracy on the near-miss samples
                p_vals = near[0][near_masks[0]].astype(np.float32)
                n_vals = near[1][near_masks[1]].astype(np.float32)
                tpr = p_vals.sum(axis=0) / len(near[0])
                tnr = 1 - n_vals.sum(axis=0) / len(near[1])
                score = (f1 + (tpr + tnr) / 2) / 2
            f1 = np.array(f1, copy=True)
            score = np.array(score, copy=True)
            for i in chosen:
                f1[i] = -1
                score[i] = -1
            for i, name in enumerate(self.labels.names):  # one value per metadata facet
                kind = name.split("=", 1)[0]
                if kind in kinds and kind not in ("structure", "group"):
                    f1[i] = -1
                    score[i] = -1
            i = int(np.argmax(score))
            if score[i] < fit + self.min_gain:
                break
            chosen.append(i)
            kinds.add(self.labels.names[i].split("=", 1)[0])
            mask &= self._values[:, i]
            if near is not None:
                near_masks[0] &= near[0][:, i]
                near_masks[1] &= near[1][:, i]
            best = float(f1[i])
            fit = float(score[i])
            if self.labels.names[i].startswith("structure="):
                # structures indistinguishable on this data (same F1) are named together
                ties = [
                    t
                    for t in np.flatnonzero(np.abs(score - score[i]) < 1e-9)
                    if t != i and self.labels.names[t].startswith("structure=")
                ]
                tied.extend(int(t) for t in ties[: self.max_tied])
        if best < self.min_score or not chosen:
            return []
        rule_tp = float(active[mask].sum())
        p_value = hypergeom.sf(rule_tp - 1, n_total, n_active, int(mask.sum()))
        if p_value > self.alpha:  # the rule could be chance (small features overfit easily)
            return []
        return [
            self.labels.names[i] for i in sorted(chosen + tied, key=lambda k: (k not in chosen, k))
        ]

    def _criterion(
        self, tp: np.ndarray, predicted: np.ndarray, n_active: float, n_total: int
    ) -> np.ndarray:
        """F1 or balanced accuracy of "rule predicts active" from counts."""
        if self.criterion == "f1":
            return np.asarray(2 * tp / np.maximum(predicted + n_active, 1e-12))
        fp = predicted - tp
        tpr = tp / max(n_active, 1e-12)
        tnr = 1 - fp / max(n_total - n_active, 1e-12)
        return np.asarray((tpr + tnr) / 2)

    def describe(self, stats: FeatureStats) -> Description:
        """The feature's phrase; ``rule`` lists the labels the rule is made of."""
        rule = self.rule(stats.latent)
        p_active = stats.label_p_active
        lift = stats.label_lift
        named = list(rule)

        def dominant_value(kind: str, threshold: float) -> None:
            if any(n.startswith(kind + "=") for n in named) or p_active is None:
                return
            for i, name in enumerate(self.labels.names):
                if name.startswith(kind + "=") and p_active[i] >= threshold:
                    named.append(name)
                    return

        dominant_value("modality", self.dominant)
        dominant_value("plane", self.dominant)
        dominant_value("sex", self.dominant)
        dominant_value("age_group", 0.75)
        dominant_value("manufacturer", self.dominant)
        if p_active is not None and lift is not None:
            n_struct = sum(n.startswith("structure=") for n in named)
            extra = [
                i
                for i, n in enumerate(self.labels.names)
                if n.startswith("structure=")
                and n not in named
                and p_active[i] >= 0.9
                and lift[i] >= 2.0
            ]
            extra.sort(key=lambda i: (-p_active[i], self.labels.names[i]))
            named += [self.labels.names[i] for i in extra[: max(0, 3 - n_struct)]]
        return Description(stats.latent, compose_phrase(named), self.name, rule=rule)


def compose_phrase(named: list[str]) -> str:
    """The phrase for a set of label names.

    Order: plane, modality, region, structures; slice position and body coverage; people.
    """
    by_kind: dict[str, list[str]] = {}
    for name in named:
        kind, _, value = name.partition("=")
        by_kind.setdefault(kind, []).append(value)
    plane = " ".join(by_kind.get("plane", []))
    modality = " ".join(_MODALITY_WORDS.get(m, m) for m in by_kind.get("modality", []))
    head = " ".join(x for x in (plane, modality) if x) or "slices"
    if head in ("axial", "coronal", "sagittal"):
        head += " slices"
    structures = by_kind.get("structure", [])
    groups = by_kind.get("group", [])
    region = ""
    if groups:
        region = ", ".join(label_phrase(f"group={g}") for g in groups)
    elif structures:
        for g in REGIONS:
            if any(s in GROUPS[g] for s in structures):
                region = label_phrase(f"group={g}")
                break
    if head in _MODALITY_WORDS.values() and not region and not structures:
        head += " slices"
    text = head + (f" through the {region}" if region else "")
    if structures:
        words = [pretty(s) for s in structures]
        text += ": " + (", ".join(words[:-1]) + " and " + words[-1] if len(words) > 1 else words[0])
    geometry = [PHRASES.get(f"{k}={v}", v) for k in EXTRA_FACETS for v in by_kind.get(k, [])]
    if geometry:
        text = ", ".join(geometry) if text == "slices" else f"{text}; {', '.join(geometry)}"
    words = []
    if "age_group" in by_kind:
        words.append(_AGE_WORDS.get(by_kind["age_group"][0], (by_kind["age_group"][0], ""))[0])
    if "sex" in by_kind:
        words.append(_SEX_WORDS.get(by_kind["sex"][0], by_kind["sex"][0]))
    scanners = by_kind.get("manufacturer", [])
    if scanners:
        clause = f"{' and '.join(scanners)} scanners"
        text = f"slices from {clause}" if text == "slices" else f"{text}; {clause}"
    for facet in STUDY_FACETS:
        for value in by_kind.get(facet, []):
            clause = study_phrase(f"{facet}={value}")
            lead = "slices of" if facet == "pathology" else "slices from"
            text = f"{lead} {clause}" if text == "slices" else f"{text}; {clause}"
    if words:
        people = " ".join(words) + " patients"
        if "age_group" in by_kind:
            people += (
                f" ({_AGE_WORDS.get(by_kind['age_group'][0], ('', by_kind['age_group'][0]))[1]})"
            )
        text = f"slices of mostly {people}" if text == "slices" else f"{text}; mostly {people}"
    if not named:
        text = "no clear pattern"
    return text


class LLMDescriber:
    """Descriptions by an OpenAI-compatible LLM/VLM (see the module docstring)."""

    def __init__(
        self,
        client: LLMClient,
        table: pd.DataFrame,
        labels: LabelTable,
        images: np.ndarray | None = None,
        *,
        n_train: int | None = None,
        send_images: bool = True,
        image_size: int | None = 256,
    ) -> None:
        self.client = client
        self.table = table
        self.labels = labels
        self.images = images
        self.n_train = n_train if n_train is not None else len(table)
        self.send_images = send_images and images is not None
        self.image_size = image_size
        self.name = f"llm:{client.model}"

    def prompt(self, stats: FeatureStats) -> list[dict[str, Any]]:
        """The chat messages for one feature (text part; images are attached separately)."""
        lines = []
        for k, row in enumerate(stats.display_rows, 1):
            r = self.table.iloc[row]
            lines.append(f"Slice {k}: {slice_text(r, present_structures(self.labels, row))}")
        enrich = [
            f"- {_prompt_label(e['label'])}: {e['p_active']:.0%} vs {e['p_base']:.0%} "
            f"(n={e['n_active_with_label']})"
            for e in stats.enrichment
        ] or ["- none"]
        user = DESCRIBE_USER.format(
            latent=stats.latent,
            frequency_pct=f"{stats.frequency:.1%}",
            n_train=self.n_train,
            slice_lines="\n".join(lines),
            enrichment_lines="\n".join(enrich),
        )
        return [{"role": "system", "content": DESCRIBE_SYSTEM}, {"role": "user", "content": user}]

    def describe(self, stats: FeatureStats) -> Description:
        """Describe one feature; an endpoint failure gives a Description with ``error`` set."""
        images = (
            [np.asarray(self.images[r]) for r in stats.display_rows]
            if self.send_images and self.images is not None
            else None
        )
        try:
            answer = self.client.chat_json(
                self.prompt(stats),
                DescriptionAnswer,
                images=images,
                schema_name="feature_description",
                image_size=self.image_size,
            )
        except LLMError as e:
            return Description(stats.latent, None, self.name, error=str(e))
        return Description(stats.latent, " ".join(answer["description"].split()), self.name)

    def describe_many(self, stats: list[FeatureStats]) -> list[Description]:
        """Describe features concurrently (the client's concurrency limit applies)."""
        return self.client.map(self.describe, stats)
