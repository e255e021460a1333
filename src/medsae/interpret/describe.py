"""Feature descriptions: an offline describer (no model) and an LLM/VLM describer.

Both read a feature's training-split statistics (:class:`~medsae.interpret.features.FeatureStats`)
and write one short clinical phrase, e.g. "axial CT through the abdomen: liver and spleen;
mostly patients over 80".

Offline describer (deterministic)
    1. A count rule, "at least ``m`` of these literals", grown greedily. A literal is a label
       (the slice shows it) or, with ``negate``, the absence of a structure or group
       (``"not group=lungs"``). Starting from no literal, add the literal and threshold ``m``
       that maximise the balanced accuracy ``BA = (TPR + TNR) / 2`` of "the slice holds at
       least ``m`` of the rule's literals" for "the feature is active", while it improves by
       at least ``min_gain`` (at most ``max_terms`` literals, one value per metadata facet).
       ``m`` is all of them by default (a conjunction); ``slack = 1`` also tries all but one
       (never fewer than 2 of two literals or more).
       With ``contrast`` (a function giving, per feature, training rows of activating slices
       and of *near misses*: the most similar non-activating slices of other stacks, plus
       random ones), the objective is the mean of that balanced accuracy on all training
       slices and on the near-miss rows, so that the phrase also says what sets the
       feature's slices apart from look-alikes it ignores. A rule whose balanced accuracy on
       all training slices is below ``min_score`` (0.6), or whose precision could be chance
       (one-sided hypergeometric test of its true positives, p > ``alpha`` = 1e-4), is
       dropped ("no clear pattern"). With ``fit_slices``, the rule is fitted on every
       activating training slice and a seeded sample of at most ``fit_slices`` non-activating
       ones (:meth:`OfflineDescriber.count_rule` says why the estimate stays unbiased).
    2. The phrase names the rule's shown labels plus those that dominate the active slices
       (``P(L | active) >= dominant`` for modality, plane, sex and scanner manufacturer;
       ``>= 0.75`` for age groups; structures with ``P >= 0.9`` and lift ``>= 2``), and the
       body region of the named structures (from ``GROUPS``). Study and acquisition labels
       (:mod:`medsae.labels.concepts_study`) are named only when the rule chose them. The
       anatomy the rule needs absent closes the phrase: ``"...; not in view: lungs, heart"``
       (:data:`medsae.labels.words.ABSENT_LEAD`; :func:`medsae.labels.words.split_absent`
       separates it again). Every label's words come from :mod:`medsae.labels.words`.

LLM describer
    Sends :data:`DESCRIBE_SYSTEM` and :data:`DESCRIBE_USER` (filled in) with the feature's
    most diverse top slices as PNG images (unless text only) and asks for
    :class:`DescriptionAnswer` by JSON schema. Failures are recorded, never raised.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, Field
from scipy.stats import hypergeom

from medsae.data.structures import GROUPS, pretty
from medsae.interpret.features import FeatureStats
from medsae.interpret.scoring import capped_rows
from medsae.labels.concepts_extra import EXTRA_FACETS
from medsae.labels.concepts_study import STUDY_FACETS
from medsae.labels.table import LabelTable
from medsae.labels.words import (
    ABSENT_LEAD,
    AGE_WORDS,
    BUILT_IN_KINDS,
    GEOMETRY_PHRASES,
    MODALITY_WORDS,
    SEX_WORDS,
    absent_words,
    label_phrase,
    prompt_label,
    slice_text,
    study_phrase,
    user_label_phrase,
)
from medsae.llm.client import LLMClient, LLMError
from medsae.progress import track

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
NOT = "not "
"""Prefix of a negated literal in a rule (``"not group=lungs"``: the slice shows no lungs)."""
NEGATABLE = ("structure", "group")
"""Label kinds a rule may require to be absent."""

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
    rule_min: int = 0  # the rule holds on a slice showing at least this many of its literals
    meta: dict[str, Any] = field(default_factory=dict)


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
        max_terms: int = 6,
        min_gain: float = 0.01,
        dominant: float = 0.9,
        min_score: float = 0.6,
        alpha: float = 1e-4,
        negate: bool = True,
        slack: int = 0,
        contrast: Callable[[int], tuple[np.ndarray, np.ndarray]] | None = None,
        fit_slices: int | None = None,
        seed: int = 0,
    ) -> None:
        self.contrast = contrast
        self.fit_slices = fit_slices
        self.seed = seed
        self.labels = labels
        self.train_rows = np.asarray(train_rows, dtype=np.int64)
        self._codes = sp.csc_matrix(codes[self.train_rows])
        self.max_terms = max_terms
        self.min_gain = min_gain
        self.dominant = dominant
        self.min_score = min_score
        self.alpha = alpha
        self.slack = slack
        names = list(labels.names)
        kinds = [n.split("=", 1)[0] for n in names]
        self._negatable = np.array([negate and kind in NEGATABLE for kind in kinds], dtype=bool)
        neg = np.flatnonzero(self._negatable)
        self._literal_names = names + [NOT + names[i] for i in neg]
        # literals that cannot join a rule holding literal j: j itself, its label's other
        # literal, and other values of the same metadata facet
        label_of = np.concatenate([np.arange(len(names)), neg])
        kind_of = np.asarray(kinds, dtype=object)[label_of]
        single = ~np.isin(kind_of, NEGATABLE)
        self._excludes = (label_of[:, None] == label_of[None, :]) | (
            single[:, None] & (kind_of[:, None] == kind_of[None, :])
        )
        # positions (in train_rows) of the background the rules are fitted on: every training
        # slice, or a seeded sample of fit_slices of them (the rows capped_rows gives the
        # detection samples of the same split)
        n_train = len(self.train_rows)
        everything = np.arange(n_train)
        self._background = capped_rows(everything, fit_slices, seed) if fit_slices else everything
        # float32 (background rows, literals)
        self._literals = self._literal_rows(self.train_rows[self._background])
        self._marks = np.zeros(n_train, dtype=bool)  # scratch: the feature's active positions

    def rule(self, latent: int) -> list[str]:
        """Literals of the feature's count rule (:meth:`count_rule`)."""
        return self.count_rule(latent)[0]

    def count_rule(self, latent: int) -> tuple[list[str], int]:
        """``(literals, m)``: the rule "at least ``m`` of these literals" best predicting the
        feature's training activation (module docstring). Literals are label names and, with
        ``negate``, absent anatomy (``"not group=lungs"``); ``([], 0)`` when no rule holds.

        With ``fit_slices``, the rule is fitted on a stratified sample of the training split:
        every activating slice (a seeded sample of ``fit_slices`` of them only when the feature
        fires on more) and the non-activating slices of a seeded uniform sample of at most
        ``fit_slices`` training slices (drawn once, shared by all features). Within each stratum
        the sample is uniform, so the rule's TPR (on activating slices) and TNR (on
        non-activating ones) are unbiased estimates of their values on the whole split, and
        so is the balanced accuracy ``(TPR + TNR) / 2``: it weighs the two classes equally
        whatever their sampled sizes, which is why the activating slices may be kept whole
        while the background is sampled (accuracy or precision on the pooled sample would be
        biased towards the activating class). The chance test uses the sample's true and
        false positives scaled back to the split's class sizes. A split of at most
        ``fit_slices`` slices is used whole (the same rule as without the cap). The cost per
        feature is then at most the feature's activations plus ``fit_slices`` rows, whatever
        the size of the split."""
        start, stop = self._codes.indptr[latent], self._codes.indptr[latent + 1]
        act = np.unique(self._codes.indices[start:stop])  # positions of the active slices
        n_active = len(act)
        n_total = len(self.train_rows)
        if n_active == 0 or n_active == n_total:
            return [], 0
        self._marks[act] = True
        background = ~self._marks[self._background]  # the background's inactive slices
        self._marks[act] = False
        if self.fit_slices is not None and n_active > self.fit_slices:
            rng = np.random.default_rng([self.seed, latent])
            act = np.sort(rng.choice(act, size=self.fit_slices, replace=False))
        fit_pos, fit_neg = self._literal_rows(self.train_rows[act]), self._literals[background]
        if len(fit_neg) == 0:
            return [], 0
        sets = [(fit_pos, fit_neg)]
        if self.contrast is not None:  # label rows of near-miss contrast samples
            pos_rows, neg_rows = self.contrast(latent)
            if len(pos_rows) and len(neg_rows):
                sets.append((self._literal_rows(pos_rows), self._literal_rows(neg_rows)))
        counts = [(np.zeros(len(p)), np.zeros(len(n))) for p, n in sets]
        blocked = np.zeros(len(self._literal_names), dtype=bool)
        chosen: list[int] = []
        fit, m_best = -1.0, 1
        for _ in range(self.max_terms):
            k = len(chosen) + 1
            best_j, best_v, best_m = -1, fit + self.min_gain, 0
            for m in range(max(min(k, 2), k - self.slack), k + 1):
                value = np.zeros(len(self._literal_names))
                for (p, n), (cp, cn) in zip(sets, counts, strict=True):
                    tpr = ((cp >= m).sum() + (cp == m - 1) @ p) / len(p)
                    fpr = ((cn >= m).sum() + (cn == m - 1) @ n) / len(n)
                    value += (tpr + 1 - fpr) / 2
                value /= len(sets)
                value[blocked] = -np.inf
                j = int(np.argmax(value))
                if value[j] >= best_v:
                    best_j, best_v, best_m = j, float(value[j]), m
            if best_j < 0:
                break
            chosen.append(best_j)
            fit, m_best = best_v, best_m
            blocked |= self._excludes[best_j]
            counts = [
                (cp + p[:, best_j], cn + n[:, best_j])
                for (p, n), (cp, cn) in zip(sets, counts, strict=True)
            ]
        if not chosen:
            return [], 0
        tp = int((fit_pos[:, chosen].sum(axis=1) >= m_best).sum())
        fp = int((fit_neg[:, chosen].sum(axis=1) >= m_best).sum())
        tpr = tp / len(fit_pos)
        tnr = (len(fit_neg) - fp) / len(fit_neg)
        if (tpr + tnr) / 2 < self.min_score:
            return [], 0
        if len(fit_pos) < n_active:  # sampled: back to the split's class sizes
            tp = round(tp * n_active / len(fit_pos))
        if len(fit_neg) < n_total - n_active:
            fp = round(fp * (n_total - n_active) / len(fit_neg))
        p_value = hypergeom.sf(float(tp) - 1, n_total, n_active, tp + fp)
        if p_value > self.alpha:  # the rule could be chance (small features overfit easily)
            return [], 0
        return [self._literal_names[i] for i in sorted(chosen)], m_best

    def _literal_rows(self, rows: np.ndarray) -> np.ndarray:
        values = self.labels.values[np.asarray(rows, dtype=np.int64)]
        return np.concatenate([values, ~values[:, self._negatable]], axis=1).astype(np.float32)

    def describe(self, stats: FeatureStats) -> Description:
        """The feature's phrase; ``rule`` lists the labels the rule is made of."""
        rule, rule_min = self.count_rule(stats.latent)
        p_active = stats.label_p_active
        lift = stats.label_lift
        named = [n for n in rule if not n.startswith(NOT)]
        absent = [n[len(NOT) :] for n in rule if n.startswith(NOT)]

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
                and n not in absent
                and p_active[i] >= 0.9
                and lift[i] >= 2.0
            ]
            extra.sort(key=lambda i: (-p_active[i], self.labels.names[i]))
            named += [self.labels.names[i] for i in extra[: max(0, 3 - n_struct)]]
        text = compose_phrase(named) if named or not absent else "slices"
        if absent:
            text += f"; {ABSENT_LEAD} " + ", ".join(absent_words(absent))
        return Description(stats.latent, text, self.name, rule=rule, rule_min=rule_min)

    def describe_many(self, stats: Sequence[FeatureStats]) -> list[Description]:
        """Describe features one after the other, with progress."""
        return [self.describe(s) for s in track(list(stats), "describing features")]


def compose_phrase(named: list[str]) -> str:
    """The phrase for a set of label names.

    Order: plane, modality, region, structures; slice position and body coverage; people.
    """
    by_kind: dict[str, list[str]] = {}
    for name in named:
        kind, _, value = name.partition("=")
        by_kind.setdefault(kind, []).append(value)
    plane = " ".join(by_kind.get("plane", []))
    modality = " ".join(MODALITY_WORDS.get(m, m) for m in by_kind.get("modality", []))
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
    if head in MODALITY_WORDS.values() and not region and not structures:
        head += " slices"
    text = head + (f" through the {region}" if region else "")
    if structures:
        words = [pretty(s) for s in structures]
        text += ": " + (", ".join(words[:-1]) + " and " + words[-1] if len(words) > 1 else words[0])
    geometry = [
        GEOMETRY_PHRASES.get(f"{k}={v}", v) for k in EXTRA_FACETS for v in by_kind.get(k, [])
    ]
    if geometry:
        text = ", ".join(geometry) if text == "slices" else f"{text}; {', '.join(geometry)}"
    words = []
    if "age_group" in by_kind:
        words.append(AGE_WORDS.get(by_kind["age_group"][0], (by_kind["age_group"][0], ""))[0])
    if "sex" in by_kind:
        words.append(SEX_WORDS.get(by_kind["sex"][0], by_kind["sex"][0]))
    scanners = by_kind.get("manufacturer", [])
    if scanners:
        clause = f"{' and '.join(scanners)} scanners"
        text = f"slices from {clause}" if text == "slices" else f"{text}; {clause}"
    for facet in STUDY_FACETS:
        for value in by_kind.get(facet, []):
            clause = study_phrase(f"{facet}={value}")
            lead = "slices of" if facet == "pathology" else "slices from"
            text = f"{lead} {clause}" if text == "slices" else f"{text}; {clause}"
    user = [
        user_label_phrase(kind, value)
        for kind, values in by_kind.items()
        if kind not in BUILT_IN_KINDS
        for value in values
    ]
    if user:
        clause = ", ".join(user)
        text = f"slices with {clause}" if text == "slices" else f"{text}; {clause}"
    if words:
        people = " ".join(words) + " patients"
        if "age_group" in by_kind:
            people += (
                f" ({AGE_WORDS.get(by_kind['age_group'][0], ('', by_kind['age_group'][0]))[1]})"
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
            f"- {prompt_label(e['label'])}: {e['p_active']:.0%} vs {e['p_base']:.0%} "
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

    def describe_many(self, stats: Sequence[FeatureStats]) -> list[Description]:
        """Describe features concurrently (the client's concurrency limit applies)."""
        return self.client.map(self.describe, list(stats))
