"""Composition: slices on which every concept of a query holds, through the features each
concept is associated with (``AskConfig.mode = "concepts"``).

A query is read into concepts (:mod:`medsae.retrieval.understand`); each asks for any of
its labels. From the described features' concept profiles
(:mod:`medsae.interpret.profiles`, training split):

1. **Features of a concept.** Within the query's stratum (its modality and plane where it
   names one of each, other than the concept's own kind; the profiles of that stratum of
   the training slices, else of a broader one), for each of its labels ``L``, the features with
   ``auroc >= concept_min_auroc``, ``lift > 1`` and precision at least
   ``concept_min_precision``, ranked by ``F1 = 2 p r / (p + r)`` with
   precision ``p = P(L | active)`` (``p_active``) and recall ``r = |A ∩ L| / |L|``; the
   ``concept_features`` best over the concept's labels are kept (a feature listed for two
   labels keeps its better precision; a concept with none takes those of the looser
   ``concept_fallback_auroc`` floor). A feature whose description reads the label as absent
   (:func:`medsae.labels.words.split_absent`) is never one of its features.
   Of these, those with an F1 below ``concept_relative_f1`` times the best are left out.
2. **Evidence of a concept on a slice.** With ``g_j(r) = min(1, a_{r,j} / scale_j)``,
   ``scale_j`` the 99th percentile of feature ``j``'s active values:
   ``concept_evidence="max"``: ``s_c(r) = max_j p_j g_j(r)``, the precision of the strongest
   evidence, damped where the feature fires weakly; ``"mean"``: ``s_c(r) = Σ_j p_j g_j(r) /
   Σ_j p_j``, the share of the concept's features that agree.
3. **Every aspect must hold.** ``score(r) = Π_c (eps + s_c(r)) · Π_n (1 - s_n(r))`` over
   the positive concepts ``c`` and the negated concepts ``n`` (``eps = 0.05``; ``s_n`` always
   the ``"max"`` evidence: any strong evidence excludes): a slice that
   lacks one concept scores at most ``eps`` times the rest. Slices on which no feature of a
   positive concept fires are not returned. One slice per subject, best first.

Metadata is read only when the user asks for it (``AskConfig.metadata_filter``): then the
query's modality and plane concepts also restrict the results by the slices' own metadata.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from medsae.interpret.probes import Probe
from medsae.labels.words import aliases, split_absent
from medsae.retrieval.fingerprint import FingerprintIndex, Hits, top_subjects
from medsae.retrieval.understand import Concept, Reading

PRODUCT_EPS = 0.05
EVIDENCE_CACHE_BYTES = 256 * 2**20
"""Bytes of concept evidence kept per ranker (5 bytes a slice: about 50 concepts at 1M
slices)."""


@dataclass(frozen=True)
class ConceptFeature:
    """A feature chosen for a concept: latent, precision weight, label and its AUROC."""

    latent: int
    weight: float
    label: str
    auroc: float
    llr: float = 0.0  # log likelihood ratio of its firing for the label (``bayes``)
    prior: float = 0.0  # the label's log odds in the stratum (``bayes``)
    against: str = ""  # a competing label of an exclusive kind it is evidence for
    probe: str = ""  # the probe (kind) whose probability is the concept's evidence


Row = tuple[int, float, float, float, float, float]
"""A profile row as read by the ranker: ``(latent, precision, auroc, f1, llr, prior)``."""

EXCLUSIVE_KINDS = ("modality", "plane", "sex", "age_group")
"""Label kinds of which a slice has exactly one value: their evidence competes (``bayes``)."""


def _grouped(
    profiles: pd.DataFrame, min_auroc: float, min_precision: float
) -> dict[tuple[str, str], list[Row]]:
    """Per (stratum, label): the profile rows that may stand for it, best F1 first, as plain
    :data:`Row` tuples (read once here, not per query).

    ``llr`` is the log likelihood ratio of the feature being active,
    ``log P(active | label) - log P(active | not label)`` with half-counts added, and
    ``prior`` the label's log odds in the stratum, both from the profile's counts
    (``n_active = n_active_with_label / p_active``, stratum size ``n_label / p_base``).
    """
    p = profiles[
        (profiles["lift"] > 1)
        & (profiles["auroc"] >= min_auroc)
        & (profiles["p_active"] >= min_precision)
    ].copy()
    n_al = p["n_active_with_label"].to_numpy(np.float64)
    n_l = p["n_label"].to_numpy(np.float64)
    prec = p["p_active"].to_numpy(np.float64)
    n_a = np.where(prec > 0, n_al / np.maximum(prec, 1e-12), 0.0)
    n = n_l / np.maximum(p["p_base"].to_numpy(np.float64), 1e-12)
    p["llr"] = np.log((n_al + 0.5) / (n_l + 1.0)) - np.log(
        (np.maximum(n_a - n_al, 0.0) + 0.5) / (np.maximum(n - n_l, 0.0) + 1.0)
    )
    p["prior"] = np.log((n_l + 0.5) / (np.maximum(n - n_l, 0.0) + 0.5))
    recall = n_al / np.maximum(n_l, 1)
    p["f1"] = np.where(prec + recall > 0, 2 * prec * recall / np.maximum(prec + recall, 1e-12), 0)
    p = p.sort_values(["f1", "latent"], ascending=[False, True], kind="stable")
    stratum = p["stratum"] if "stratum" in p else pd.Series("", index=p.index)
    cols = ["latent", "p_active", "auroc", "f1", "llr", "prior"]
    return {
        (str(st), str(lab)): [
            (int(j), float(pa), float(au), float(f), float(lr), float(pr))
            for j, pa, au, f, lr, pr in zip(*(g[c].to_numpy() for c in cols), strict=True)
        ]
        for (st, lab), g in p.groupby([stratum, "label"], sort=False)
    }


class ConceptFeatures:
    """Per label, the described features associated with it (from the profiles)."""

    def __init__(
        self,
        profiles: pd.DataFrame,
        descriptions: pd.DataFrame | None = None,
        min_auroc: float = 0.6,
        per_concept: int = 8,
        relative_f1: float = 0.0,
        min_precision: float = 0.0,
        fallback_auroc: float | None = None,
    ) -> None:
        self.per_concept = per_concept
        self.relative_f1 = relative_f1
        self.labels = frozenset(profiles["label"].astype(str))
        self._by_label = _grouped(profiles, min_auroc, min_precision)
        self._fallback = (
            {} if fallback_auroc is None else _grouped(profiles, fallback_auroc, min_precision)
        )
        self._absent: dict[int, str] = {}
        if descriptions is not None and "description" in descriptions:
            for j, d in zip(descriptions["latent"], descriptions["description"], strict=True):
                absent = split_absent(str(d))[1].lower() if isinstance(d, str) else ""
                if absent:
                    self._absent[int(j)] = absent

    def available(self, concept: Concept) -> tuple[str, ...]:
        """The concept's labels this run has profiles for."""
        return tuple(x for x in concept.labels if x in self.labels)

    def of(self, concept: Concept, context: Sequence[str] = ()) -> list[ConceptFeature]:
        """The features of a concept (see :meth:`_of`); where it has none, those of the looser
        ``fallback_auroc`` floor."""
        found = self._of(concept, context, self._by_label)
        return found or self._of(concept, context, self._fallback)

    def with_competitors(
        self, concept: Concept, context: Sequence[str] = ()
    ) -> list[ConceptFeature]:
        """:meth:`of`, and for a concept of an exclusive kind (:data:`EXCLUSIVE_KINDS`:
        modality, plane, sex, age) the features of each other value of that kind in the same
        way, marked ``against`` that value: the evidence that the slice is something else."""
        own = self.of(concept, context)
        kind = concept.kind
        if not own or concept.negated or kind not in EXCLUSIVE_KINDS:
            return own
        others = sorted(
            x for x in self.labels if x.split("=", 1)[0] == kind and x not in concept.labels
        )
        out = list(own)
        for other in others:
            alt = dataclasses.replace(concept, labels=(other,))
            out += [dataclasses.replace(f, against=other) for f in self.of(alt, context)]
        return out

    def _of(
        self,
        concept: Concept,
        context: Sequence[str],
        by_label: dict[tuple[str, str], list[Row]],
    ) -> list[ConceptFeature]:
        """The features of a concept (see the module docstring), best first, from the profiles
        of the query's stratum: ``context`` the modality and plane labels the query asks for
        (the broadest stratum with profiles for the label is used when the narrowest has
        none)."""
        best: dict[int, ConceptFeature] = {}
        rank: dict[int, float] = {}
        for label in concept.labels:
            group = None
            for stratum in _strata(context):
                group = by_label.get((stratum, label))
                if group is not None:
                    break
            if group is None:
                continue
            words = aliases(label)
            for j, p_active, auroc, f1, llr, prior in group[: self.per_concept * 2]:
                absent = self._absent.get(j, "")
                if absent and any(w in absent for w in words):
                    continue  # the description says the label is not in view
                if j not in best or p_active > best[j].weight:
                    best[j] = ConceptFeature(j, p_active, label, auroc, llr, prior)
                rank[j] = max(rank.get(j, -1.0), f1)
        order = sorted(best, key=lambda j: (-rank[j], j))[: self.per_concept]
        if order:
            floor = self.relative_f1 * rank[order[0]]
            order = [j for j in order if rank[j] >= floor]
        return [best[j] for j in order]


class ConceptRanker:
    """Scores slices by concept evidence on one index (activation scales cached per latent)."""

    def __init__(
        self,
        index: FingerprintIndex,
        combine: str = "mean",
        llr_scale: float = 0.5,
        probes: Mapping[str, Probe] | None = None,
    ) -> None:
        self.index = index
        self.combine = combine
        self.llr_scale = llr_scale
        self.probes = dict(probes or {})
        self._probe_p: dict[str, np.ndarray] = {}
        self._scale: dict[int, float] = {}
        self._normalised: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        # a concept's evidence depends only on the index and its features: the modality and
        # plane concepts of one query recur in the next (bounded by bytes, shared by threads)
        self._evidence: OrderedDict[tuple[object, ...], tuple[np.ndarray, np.ndarray]] = (
            OrderedDict()
        )
        self._evidence_lock = threading.Lock()

    def clear(self) -> None:
        """Forget the cached concept evidence (the per-latent scales stay)."""
        with self._evidence_lock:
            self._evidence.clear()

    def scale(self, latent: int) -> float:
        """The 99th percentile of a latent's active values (1 when it never fires)."""
        s = self._scale.get(latent)
        if s is None:
            a, b = self.index.indptr[latent], self.index.indptr[latent + 1]
            vals = self.index.values[a:b]
            s = float(np.percentile(vals, 99)) if len(vals) else 1.0
            s = s if s > 0 else 1.0
            self._scale[latent] = s
        return s

    def evidence(
        self, features: Sequence[ConceptFeature], combine: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows where a feature fires, ``s_c`` on every row) of one concept (read-only
        arrays, cached: :data:`EVIDENCE_CACHE_BYTES`)."""
        combine = combine or self.combine
        key = (
            combine,
            *((f.latent, f.weight, f.llr, f.prior, f.against, f.probe) for f in features),
        )
        with self._evidence_lock:
            found = self._evidence.get(key)
            if found is not None:
                self._evidence.move_to_end(key)
                return found
        touched, score = self._evidence_of(features, combine)
        touched.flags.writeable = False
        score.flags.writeable = False
        with self._evidence_lock:
            self._evidence[key] = (touched, score)
            keep = max(2, EVIDENCE_CACHE_BYTES // max(1, touched.nbytes + score.nbytes))
            while len(self._evidence) > keep:
                self._evidence.popitem(last=False)
        return touched, score

    def _evidence_of(
        self, features: Sequence[ConceptFeature], combine: str
    ) -> tuple[np.ndarray, np.ndarray]:
        idx = self.index
        if combine == "bayes":
            return self._posterior(features)
        score = np.zeros(idx.n_rows, dtype=np.float32)
        touched = np.zeros(idx.n_rows, dtype=bool)
        for f in features:
            rows, g = self.normalised(f.latent)
            act = g * np.float32(f.weight)
            if combine == "max":
                score[rows] = np.maximum(score[rows], act)
            else:
                score[rows] += act
            touched[rows] = True
        if combine != "max" and features:
            score /= sum(f.weight for f in features)
        return touched, score

    def normalised(self, latent: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, ``g_j = min(1, a / scale_j)``) of one latent, cached."""
        found = self._normalised.get(latent)
        if found is None:
            idx = self.index
            a, b = idx.indptr[latent], idx.indptr[latent + 1]
            g = np.minimum(1.0, idx.values[a:b] / self.scale(latent)).astype(np.float32)
            found = self._normalised[latent] = (idx.rows[a:b], g)
        return found

    def probabilities(self, kind: str) -> np.ndarray:
        """``(n_rows, n_labels)`` probabilities of the probe of ``kind`` on every indexed
        slice (computed once per ranker)."""
        with self._evidence_lock:
            found = self._probe_p.get(kind)
        if found is None:
            idx = self.index
            codes = sp.csc_matrix(
                (idx.values, idx.rows, idx.indptr), shape=(idx.n_rows, idx.n_latents)
            )
            found = self.probes[kind].probabilities(codes)
            found.flags.writeable = False
            with self._evidence_lock:
                self._probe_p[kind] = found
        return found

    def _logit(
        self, features: Sequence[ConceptFeature], with_touched: bool = True
    ) -> tuple[np.ndarray | None, np.ndarray]:
        """(rows touched, ``prior + llr_scale * sum_j g_j(r) llr_j``) of one label's features:
        one ``bincount`` over the features' entries (no per-feature pass over every row)."""
        n = self.index.n_rows
        parts = [self.normalised(f.latent) for f in features]
        rows = np.concatenate([r for r, _ in parts])
        weights = np.concatenate(
            [
                g * np.float32(self.llr_scale * f.llr)
                for (_, g), f in zip(parts, features, strict=True)
            ]
        )
        logit: np.ndarray = np.bincount(rows, weights=weights, minlength=n).astype(
            np.float64, copy=False
        )
        logit += max(f.prior for f in features)
        if not with_touched:
            return None, logit
        touched = np.zeros(n, dtype=bool)
        touched[rows] = True
        return touched, logit

    def _posterior(self, features: Sequence[ConceptFeature]) -> tuple[np.ndarray, np.ndarray]:
        """``bayes``: the concept's probability on every row, from the log odds of its
        features (a tempered naive Bayes over the features that fire); with competitors
        (features marked ``against`` another value of an exclusive kind), the softmax of the
        concept's log odds against each competitor's."""
        own = [f for f in features if not f.against]
        if not own:
            return np.zeros(self.index.n_rows, bool), np.zeros(self.index.n_rows, np.float32)
        probe = own[0].probe
        if probe and probe in self.probes:
            labels = self.probes[probe].labels
            p = self.probabilities(probe)
            cols = sorted({labels.index(f.label) for f in own if f.label in labels})
            return np.ones(self.index.n_rows, bool), p[:, cols].sum(1).astype(np.float32)
        touched, logit = self._logit(own)
        assert touched is not None
        others: dict[str, list[ConceptFeature]] = {}
        for f in features:
            if f.against:
                others.setdefault(f.against, []).append(f)
        if not others:
            return touched, (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
        # softmax of the concept against its competitors: 1 / (1 + sum_k exp(l_k - l_own))
        rest = np.zeros_like(logit)
        for g in others.values():
            rest += np.exp(np.minimum(self._logit(g, with_touched=False)[1] - logit, 80.0))
        return touched, (1.0 / (1.0 + rest)).astype(np.float32)

    def rank(
        self,
        positive: Sequence[Sequence[ConceptFeature]],
        negative: Sequence[Sequence[ConceptFeature]],
        n: int,
        mask: np.ndarray | None = None,
    ) -> Hits:
        """One slice per subject by ``Π (eps + s_c) · Π (1 - s_n)`` (module docstring)."""
        idx = self.index
        log_score = np.zeros(idx.n_rows, dtype=np.float32)
        candidates = np.zeros(idx.n_rows, dtype=bool)
        for feats in positive:
            touched, s = self.evidence(feats)
            log_score += np.log(np.float32(PRODUCT_EPS) + s)
            candidates |= touched
        for feats in negative:  # any strong evidence excludes
            _, s = self.evidence(feats, "max")
            log_score += np.log(np.maximum(np.float32(1.0) - s, np.float32(1e-6)))
        if mask is not None:
            candidates &= mask
        cand = np.flatnonzero(candidates)
        return top_subjects(cand, np.exp(log_score[cand]), idx.subject_ids[cand], n)


def _strata(context: Sequence[str]) -> list[str]:
    """Strata to try for a context, narrowest first: ``modality=CT&plane=axial``, then each
    part, then all slices (``""``)."""
    parts = sorted(context)  # "modality=..." before "plane=..."
    out = ["&".join(parts)] if len(parts) > 1 else []
    return [*out, *parts, ""]


def context_of(reading: Reading, concept: Concept) -> tuple[str, ...]:
    """The modality and plane labels of a query that condition a concept's features: those
    the query asks for with one value, other than the concept's own kind."""
    out = []
    for c in reading.concepts:
        if c is concept or c.negated or len(c.labels) != 1 or c.kind == concept.kind:
            continue
        if c.kind in ("modality", "plane"):
            out.append(c.labels[0])
    return tuple(out)


def metadata_mask(index: FingerprintIndex, reading: Reading) -> np.ndarray | None:
    """The slices whose own modality and plane are those the query asks for (the
    ``metadata_filter`` the user may ask for); None when the query names neither."""
    filters: dict[str, list[str]] = {}
    for c in reading.concepts:
        if c.negated or c.kind not in ("modality", "plane"):
            continue
        if index.table is None or c.kind not in index.table.columns:
            continue
        filters[c.kind] = [x.split("=", 1)[1] for x in c.labels]
    return index.filter_mask(filters) if filters else None
