"""Text-to-image retrieval through SAE features.

A query never touches slice metadata (unless the user asks for a metadata filter): it is
matched with what the features are known to show, and slices are ranked by the activations
of the chosen features. ``mode="concepts"`` (default) reads the query into concepts of the
label vocabulary (:mod:`medsae.retrieval.understand`) and composes them through the
features' concept profiles (:mod:`medsae.retrieval.compose`); a run without profiles (a
workspace interpreted before they existed) falls back to ``"coverage"``. The other modes
match the query with the *descriptions* of the features:

1. **Choose features.** ``mode="coverage"`` (default): a query is a conjunction of terms,
   and so is a description. A description *contradicts* the query when it names another
   value of one of the query's metadata aspects and not the queried one ("MRI ..." for a CT
   query). The candidates are the non-contradicting descriptions stating every metadata term
   of the query or, when none does, the most of them (a query term no description states,
   such as an age group, is then left to the anatomy words and the ranking); when no
   description states more than one term (one-concept descriptions), the query is composed
   as in ``"aspects"`` (below). With anatomy words left in the query
   ("liver" in "axial CT liver"), the ``m`` non-contradicting descriptions with the highest
   ``sim(anatomy words, d) + coverage_bonus * (terms stated / terms)`` are chosen (bonus
   0.4), plus, as a backfill of total weight ``backfill`` (0.5) times theirs, the ``m``
   candidates that are most similar to the whole query; without
   anatomy words, only the latter. ``mode="similarity"`` (the paper's protocol, with a
   sentence embedder instead of an LLM): the ``m`` descriptions most similar (cosine of
   text embeddings) to the whole query. ``mode="aspects"``: metadata terms found in the
   query (CT / MRI, axial / coronal / sagittal, male / female, elderly / young) each pick
   the feature whose description mentions the term and is most similar to a short phrase
   for it ("CT scan", "axial slice", ...; a term that no description mentions is dropped);
   the remaining words (the anatomy) pick ``max(1, m - terms)`` features by similarity. In
   every mode a feature less similar than ``relative_similarity`` (0.75) times the best
   match of the same text is left out, so that one clear match is not diluted by weak ones.
   A ``selector`` callable (e.g. :func:`llm_selector`) can replace all modes.
2. **Weights.** ``w_i = s_i / sum_j s_j`` with ``s_i`` the (non-negative) similarity of
   feature ``i``'s description to its query text (backfill weights scaled as above).
3. **Rank slices.** With ``a_i = min(1, a_{r,i} / scale_i)``, ``a_{r,i}`` the activation of
   feature ``i`` on slice ``r`` and ``scale_i`` its 99th percentile over active slices
   (``normalise="p99"``; or its maximum, or 1): ``combine="product"`` (default) scores
   ``prod_i (0.05 + a_i)^{w_i}``, a soft AND that favours slices on which every chosen
   feature fires; ``combine="sum"`` scores ``sum_i w_i a_i``. Slices with no chosen feature
   active are not returned. One slice per subject (its best), best first.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from medsae.errors import InputError
from medsae.interpret.io import FEATURES
from medsae.interpret.probes import Probe
from medsae.labels.words import embedding_phrase, split_absent
from medsae.llm.embed import TextEmbedder, shared_embedder
from medsae.retrieval.compose import ConceptFeatures, ConceptRanker, context_of, metadata_mask
from medsae.retrieval.config import AskConfig
from medsae.retrieval.fingerprint import FingerprintIndex, Hits, top_subjects
from medsae.retrieval.understand import Concept, QueryReader, Reading

# (aspect, phrase used for matching (a label's words where one label is meant), pattern in the
# query, pattern in descriptions)
_TERMS: tuple[tuple[str, str, str, str], ...] = (
    (
        "modality",
        embedding_phrase("modality=CT"),
        r"\bct\b|computed tomography",
        r"\bct\b|computed tomography",
    ),
    (
        "modality",
        embedding_phrase("modality=MR"),
        r"\bmri?\b|magnetic resonance",
        r"\bmri?\b|magnetic resonance",
    ),
    (
        "plane",
        embedding_phrase("plane=axial"),
        r"\baxial\b|\btransverse\b",
        r"\baxial\b|\btransverse\b",
    ),
    ("plane", embedding_phrase("plane=coronal"), r"\bcoronal\b", r"\bcoronal\b"),
    ("plane", embedding_phrase("plane=sagittal"), r"\bsagittal\b", r"\bsagittal\b"),
    ("sex", embedding_phrase("sex=F"), r"\bfemale\b|\bwom[ae]n\b", r"\bfemale\b|\bwom[ae]n\b"),
    ("sex", embedding_phrase("sex=M"), r"\bmale\b|\bm[ae]n\b", r"\bmale\b|\bm[ae]n\b"),
    (
        "age",
        "elderly patient",
        r"\belderly\b|\bold(er)?\b|\bover \d+\b|\baged\b",
        r"\belderly\b|\bold(er)?\b|\bover \d+\b|\b80\b",
    ),
    ("age", "young patient", r"\byoung\b|\bunder \d+\b", r"\byoung\b|\bunder \d+\b|\b<\s*40\b"),
)
_FILLER = re.compile(
    r"\b(a|an|the|of|with|and|showing|shows|patient|patients|scan|slice|slices|image|images|"
    r"view|years?|in|at|on|for|from|adult)\b|\d+|[,.;:/()]"
)

Selector = Callable[[str, pd.DataFrame], list["FeatureChoice"]]


@dataclass(frozen=True)
class FeatureChoice:
    """A feature chosen for a query: its latent, weight, similarity and why it was chosen."""

    latent: int
    weight: float
    similarity: float
    description: str
    matched: str  # the query text (or aspect phrase) it was matched with
    concept: str = ""  # the query concept it stands for ('concepts' mode)
    negated: bool = False  # the concept excludes
    llr: float = 0.0  # log likelihood ratio of its firing for the label ('bayes' evidence)
    prior: float = 0.0  # the label's log odds in the query's stratum ('bayes' evidence)
    against: str = ""  # evidence for this competing value of the concept's kind ('bayes')
    probe: str = ""  # chosen from the probe of this kind ('bayes' with concept_probes)


@dataclass(frozen=True)
class Answer:
    """A query's reading, its chosen features and the slices found."""

    reading: Reading
    features: list[FeatureChoice]
    hits: Hits


def load_descriptions(features: pd.DataFrame) -> pd.DataFrame:
    """Features with a usable description: columns ``latent``, ``description`` (and the rest)."""
    for col in ("latent", "description"):
        if col not in features.columns:
            raise InputError(FEATURES, f"missing column '{col}'")
    desc = features["description"]
    ok = desc.notna() & (desc.astype(str).str.strip() != "")
    out = features.loc[ok].reset_index(drop=True)
    if out.empty:
        raise InputError(FEATURES, "no feature has a description; run `medsae interpret` first")
    return out


def split_query(query: str) -> tuple[list[tuple[str, str, str]], str]:
    """Metadata terms found in a query and the remaining (anatomy) words.

    Returns ``([(aspect, phrase, description_pattern), ...], remainder)``.
    """
    text = query.lower()
    terms: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for aspect, phrase, q_pat, d_pat in _TERMS:
        if aspect in seen:
            continue
        if re.search(q_pat, text):
            terms.append((aspect, phrase, d_pat))
            seen.add(aspect)
            text = re.sub(q_pat, " ", text)
    remainder = " ".join(_FILLER.sub(" ", text).split())
    return terms, remainder


class TextRetriever:
    """Query -> features -> slices over one index and one features table (see module docstring)."""

    def __init__(
        self,
        index: FingerprintIndex,
        features: pd.DataFrame,
        embedder: TextEmbedder | None = None,
        config: AskConfig | None = None,
        description_embeddings: np.ndarray | None = None,
        selector: Selector | None = None,
        profiles: pd.DataFrame | None = None,
        probes: Mapping[str, Probe] | None = None,
    ) -> None:
        self.index = index
        self.features = load_descriptions(features)
        self.embedder = embedder or shared_embedder()
        self.config = config or AskConfig()
        self.selector = selector
        self.reader = QueryReader(self.embedder, self.config.similarity_floor)
        self.concepts: ConceptFeatures | None = None
        if profiles is not None and not profiles.empty:
            self.concepts = ConceptFeatures(
                profiles,
                self.features,
                self.config.concept_min_auroc,
                self.config.concept_features,
                self.config.concept_relative_f1,
                self.config.concept_min_precision,
                self.config.concept_fallback_auroc,
            )
        use_probes = self.config.concept_probes and self.config.concept_evidence == "bayes"
        self.probes = dict(probes or {}) if use_probes else {}
        self._ranker = ConceptRanker(
            index, self.config.concept_evidence, self.config.concept_llr_scale, self.probes
        )
        # what a description says is shown: "not in view: lungs" must not match a lung query
        texts = [split_absent(t)[0] for t in self.features["description"].astype(str)]
        if description_embeddings is None or len(description_embeddings) != len(texts):
            description_embeddings = self.embedder.embed(texts)
        self.desc_emb = np.asarray(description_embeddings, dtype=np.float32)
        self._desc_lower = [t.lower() for t in texts]
        self._latents = self.features["latent"].to_numpy(dtype=np.int64)
        self._query_cache: dict[str, np.ndarray] = {}
        self._allowed_cache: dict[str, np.ndarray] = {}
        bad = self.features["latent"].astype(int)
        if (bad < 0).any() or (bad >= index.n_latents).any():
            raise InputError(FEATURES, f"latent ids outside 0..{index.n_latents - 1}")

    # ------------------------------------------------------------------ feature choice
    def choose(
        self, query: str, m: int | None = None, mode: str | None = None
    ) -> list[FeatureChoice]:
        """The features a query is composed of, with their weights (summing to 1)."""
        if not query or not query.strip():
            raise InputError("query", "empty query; describe the images you are looking for")
        m = m or self.config.features
        mode = self.effective_mode(mode)
        if self.selector is not None:
            return _normalise(self.selector(query, self.features)[:m])
        if mode == "concepts":
            return self._concept_choices(self.read(query))
        if mode == "similarity":
            return _normalise(self._top(query, m, exclude=set()))
        if mode == "coverage":
            covering = self._covering(query, m)
            if covering is not None:
                return _normalise(covering)
        terms, remainder = split_query(query)
        picked: list[FeatureChoice] = []
        used: set[int] = set()
        for _aspect, phrase, d_pat in terms:
            allowed = self._descriptions_matching(d_pat)
            if not allowed.any():
                continue  # no description names this term: better no feature than a wrong one
            found = self._top(phrase, 1, exclude=used, allowed=allowed)
            picked += found
            used.update(c.latent for c in found)
        if remainder or not picked:
            picked += self._top(remainder or query, max(1, m - len(picked)), exclude=used)
        return _normalise(picked)

    def effective_mode(self, mode: str | None = None) -> str:
        """The mode a query is answered in: ``concepts`` needs profiles, else ``coverage``."""
        mode = mode or self.config.mode
        return "coverage" if mode == "concepts" and self.concepts is None else mode

    def prepare_probes(self) -> dict[str, float]:
        """Compute the probes' probabilities of every indexed slice now (else the first query
        of each kind does); the seconds each kind took (0 when already done)."""
        out = {}
        for kind in self.probes:
            t0 = time.perf_counter()
            self._ranker.probabilities(kind)
            out[kind] = time.perf_counter() - t0
        return out

    def clear_caches(self) -> None:
        """Forget the concept evidence cached by earlier queries (answers do not change)."""
        self._ranker.clear()

    def read(self, query: str) -> Reading:
        """How a query is read (its concepts, the words not understood and the concepts no
        feature of this run stands for)."""
        if not query or not query.strip():
            raise InputError("query", "empty query; describe the images you are looking for")
        reading = self.reader.read(query)
        if self.concepts is None:
            return reading
        missing = tuple(
            c.words() for c in reading.concepts if not self.concepts.of(c, context_of(reading, c))
        )
        return Reading(reading.query, reading.concepts, reading.not_understood, missing)

    def _concept_choices(self, reading: Reading) -> list[FeatureChoice]:
        assert self.concepts is not None
        desc = dict(
            zip(self._latents.tolist(), self.features["description"].astype(str), strict=True)
        )
        out = []
        concepts = self.concepts
        of = concepts.with_competitors if self.config.concept_evidence == "bayes" else concepts.of
        for c in reading.concepts:
            probe = self.probes.get(c.kind)
            if probe is not None and not c.negated and set(c.labels) & set(probe.labels):
                chosen = self._probe_choices(probe, c, desc)
                if chosen:  # a probe without a feature for the value: the profiles answer
                    out += chosen
                    continue
            for f in of(c, context_of(reading, c)):
                out.append(
                    FeatureChoice(
                        f.latent,
                        f.weight,
                        f.auroc,
                        desc.get(f.latent, ""),
                        f.label,
                        c.text,
                        c.negated,
                        f.llr,
                        f.prior,
                        f.against,
                    )
                )
        return out

    def _probe_choices(
        self, probe: Probe, concept: Concept, desc: dict[int, str]
    ) -> list[FeatureChoice]:
        """A concept read by its probe: shown as the probe's strongest features for each of its
        labels (weight: the coefficient); its evidence is the probe's probability."""
        out = []
        for label in concept.labels:
            for j, w in probe.features(label, self.config.concept_features):
                out.append(
                    FeatureChoice(j, w, 0.0, desc.get(j, ""), label, concept.text, probe=probe.kind)
                )
        return out

    def answer(self, query: str, n: int | None = None, mask: np.ndarray | None = None) -> Answer:
        """Read, choose and rank: the one path of the command line, library, report and
        browser (``metadata_filter`` adds the query's modality and plane as a filter)."""
        reading = self.read(query)
        choices = self.choose(query)
        if self.config.metadata_filter:
            meta = metadata_mask(self.index, reading)
            if meta is not None:
                mask = meta if mask is None else mask & meta
        return Answer(reading, choices, self.rank(choices, n or self.config.n, mask))

    def _covering(self, query: str, m: int) -> list[FeatureChoice] | None:
        """Features whose descriptions state the query's terms and contradict none of them.

        A description *contradicts* a query term when it names another value of the same
        aspect and not the queried one (query "CT", description "MRI ..."). Among the
        descriptions that contradict nothing, those naming every query term are the
        candidates; when none names them all, those naming the most of them (at least two;
        None when no description names more than one: the caller composes one feature per
        term instead). Without anatomy words, the ``m`` candidates closest to the whole query.
        With them, the ``m`` non-contradicting descriptions closest to the anatomy words,
        with ``coverage_bonus`` times the share of terms stated added to the similarity, and
        the ``m`` candidates closest to the whole query as a backfill of total weight
        ``backfill`` times that of the anatomy matches. Ties: latent id.
        """
        terms, remainder = split_query(query)
        ok = np.ones(len(self._latents), dtype=bool)
        covered = np.zeros(len(self._latents), dtype=np.int64)
        for aspect, _phrase, d_pat in terms:
            names = self._descriptions_matching(d_pat)
            others = np.zeros_like(ok)
            for a, _p, _q, d_other in _TERMS:
                if a == aspect and d_other != d_pat:
                    others |= self._descriptions_matching(d_other)
            ok &= names | ~others
            covered += names
        stated = int(covered[ok].max()) if ok.any() else 0
        if stated < len(terms) and stated < 2:
            return None  # one-term descriptions: compose one feature per term ('aspects')
        allowed = ok & (covered == stated)
        if not remainder:
            return self._top(query, m, exclude=set(), allowed=allowed)
        bonus = self.config.coverage_bonus
        if bonus > 0 and terms:  # anatomy first: partial coverage costs a little
            picked = self._top(
                remainder, m, exclude=set(), allowed=ok, bonus=bonus * covered / len(terms)
            )
        else:
            picked = self._top(remainder, m, exclude=set(), allowed=allowed)
        if self.config.backfill > 0:
            used = {c.latent for c in picked}
            total = sum(c.weight for c in picked)
            fill = self._top(query, m, exclude=used, allowed=allowed)
            fill_total = sum(c.weight for c in fill)
            if total > 0 and fill_total > 0:
                k = self.config.backfill * total / fill_total
                picked += [
                    FeatureChoice(c.latent, c.weight * k, c.similarity, c.description, c.matched)
                    for c in fill
                ]
        return picked

    def _descriptions_matching(self, pattern: str) -> np.ndarray:
        """Mask of the descriptions a term's pattern matches (cached per pattern)."""
        mask = self._allowed_cache.get(pattern)
        if mask is None:
            compiled = re.compile(pattern)
            mask = np.array([compiled.search(t) is not None for t in self._desc_lower], dtype=bool)
            self._allowed_cache[pattern] = mask
        return mask

    def prefetch(self, queries: Sequence[str]) -> None:
        """Embed every text the given queries will be matched with, in one batch."""
        texts = set()
        for q in queries:
            terms, remainder = split_query(q)
            texts.update([q, remainder, *(phrase for _a, phrase, _p in terms)])
        self._embed_texts(sorted(t for t in texts if t))

    def _embed_texts(self, texts: Sequence[str]) -> None:
        todo = [t for t in dict.fromkeys(texts) if t not in self._query_cache]
        if todo:
            self._query_cache.update(zip(todo, self.embedder.embed(todo), strict=True))

    def _top(
        self,
        text: str,
        count: int,
        exclude: set[int],
        allowed: np.ndarray | None = None,
        bonus: np.ndarray | None = None,
    ) -> list[FeatureChoice]:
        self._embed_texts([text])
        cosine = self.desc_emb @ self._query_cache[text]
        sims = cosine if bonus is None else cosine + bonus  # ranks and weighs; cosine reported
        latents = self._latents
        ok = ~np.isin(latents, list(exclude)) & (sims >= self.config.min_similarity)
        if allowed is not None:
            ok &= allowed
        ranked = np.lexsort((latents, -sims))
        order = [int(i) for i in ranked[ok[ranked]][:count]]
        if order and self.config.relative_similarity > 0:
            floor = self.config.relative_similarity * float(sims[order[0]])
            order = [order[0]] + [i for i in order[1:] if sims[i] >= floor]
        return [
            FeatureChoice(
                int(latents[i]),
                float(max(sims[i], 0.0)),
                float(cosine[i]),
                str(self.features["description"].iloc[i]),
                text,
            )
            for i in order
        ]

    # ------------------------------------------------------------------ ranking
    def rank(
        self, choices: Sequence[FeatureChoice], n: int, mask: np.ndarray | None = None
    ) -> Hits:
        """One slice per subject ranked by the weighted normalised activations of ``choices``
        (by concept evidence when they stand for concepts)."""
        idx = self.index
        if any(c.concept for c in choices):
            return self._rank_concepts(choices, n, mask)
        product = self.config.combine == "product"
        acc = np.zeros(idx.n_rows, dtype=np.float64)
        if product:  # log of prod_i (eps + a_i)^w_i, starting from a_i = 0 everywhere
            acc += sum(c.weight for c in choices) * np.log(_PRODUCT_EPS)
        touched = np.zeros(idx.n_rows, dtype=bool)
        for c in choices:
            a, b = idx.indptr[c.latent], idx.indptr[c.latent + 1]
            rows, vals = idx.rows[a:b], idx.values[a:b].astype(np.float64)
            if len(vals) == 0:
                continue
            scale = _scale(vals, self.config.normalise)
            act = np.minimum(1.0, vals / scale)
            if product:
                acc[rows] += c.weight * (np.log(_PRODUCT_EPS + act) - np.log(_PRODUCT_EPS))
            else:
                acc[rows] += c.weight * act
            touched[rows] = True
        if product:
            acc = np.exp(acc)
        if mask is not None:
            touched &= mask
        cand = np.flatnonzero(touched)
        return top_subjects(cand, acc[cand], idx.subject_ids[cand], n)

    def _rank_concepts(
        self, choices: Sequence[FeatureChoice], n: int, mask: np.ndarray | None
    ) -> Hits:
        from medsae.retrieval.compose import ConceptFeature

        groups: dict[tuple[str, bool], list[ConceptFeature]] = {}
        for c in choices:
            feature = ConceptFeature(
                c.latent, c.weight, c.matched, c.similarity, c.llr, c.prior, c.against, c.probe
            )
            groups.setdefault((c.concept, c.negated), []).append(feature)
        positive = [g for (_, neg), g in groups.items() if not neg]
        negative = [g for (_, neg), g in groups.items() if neg]
        return self._ranker.rank(positive, negative, n, mask)

    def search(
        self, query: str, n: int | None = None, mask: np.ndarray | None = None, m: int | None = None
    ) -> tuple[list[FeatureChoice], pd.DataFrame]:
        """Chosen features and the results table (rank, row, score, subject_key, metadata)."""
        if m is None:
            found = self.answer(query, n, mask)
            return found.features, self.index.describe_hits(found.hits)
        choices = self.choose(query, m)
        hits = self.rank(choices, n or self.config.n, mask)
        return choices, self.index.describe_hits(hits)


_PRODUCT_EPS = 0.05  # floor of a feature that does not fire, in the 'product' combination


def _scale(values: np.ndarray, how: str) -> float:
    if how == "max":
        s = float(values.max())
    elif how == "p99":
        s = float(np.percentile(values, 99))
    else:
        s = 1.0
    return s if s > 0 else 1.0


def _normalise(choices: Sequence[FeatureChoice]) -> list[FeatureChoice]:
    total = sum(max(c.weight, 0.0) for c in choices)
    if total <= 0:
        share = 1.0 / max(len(choices), 1)
        return [
            FeatureChoice(c.latent, share, c.similarity, c.description, c.matched) for c in choices
        ]
    return [
        FeatureChoice(c.latent, max(c.weight, 0.0) / total, c.similarity, c.description, c.matched)
        for c in choices
    ]


def llm_selector(
    client: Any, m: int = 3, shortlist: int = 60, embedder: TextEmbedder | None = None
) -> Selector:
    """A selector that lets an LLM pick features from their descriptions (structured output).

    ``client`` is a :class:`medsae.llm.client.LLMClient`. The model sees numbered
    candidate descriptions (the ``shortlist`` most similar to the query by text embedding,
    when there are more) and answers ``{"features": [candidate numbers, best first]}``;
    the first ``m`` valid numbers are used with equal weights.
    """
    schema = {
        "type": "object",
        "properties": {"features": {"type": "array", "items": {"type": "integer"}}},
        "required": ["features"],
        "additionalProperties": False,
    }

    def select(query: str, features: pd.DataFrame) -> list[FeatureChoice]:
        texts = features["description"].astype(str).tolist()
        cand = np.arange(len(texts))
        if len(texts) > shortlist:
            emb = embedder or shared_embedder()
            sims = emb.embed(texts) @ emb.embed([query])[0]
            cand = np.argsort(-sims, kind="stable")[:shortlist]
        lines = "\n".join(f"[{k}] {texts[i]}" for k, i in enumerate(cand))
        messages = [
            {
                "role": "system",
                "content": "You choose image features whose descriptions match a search query.",
            },
            {
                "role": "user",
                "content": f"Query: {query}\nDescription: {query}\nCandidates:\n{lines}\n"
                f"Answer with the numbers of the {m} best matching candidates, best first.",
            },
        ]
        answer = client.chat_json(messages, schema, schema_name="feature_choice")
        picked: list[FeatureChoice] = []
        for k in answer.get("features", []):
            if isinstance(k, int) and 0 <= k < len(cand) and len(picked) < m:
                i = int(cand[k])
                latent = int(features["latent"].iloc[i])
                if all(p.latent != latent for p in picked):
                    picked.append(FeatureChoice(latent, 1.0, float("nan"), texts[i], query))
        if not picked:
            raise InputError("query", f"the LLM chose no valid feature for {query!r}")
        return picked

    return select


def mask_for(index: FingerprintIndex, filters: Mapping[str, Any] | None) -> np.ndarray | None:
    """Row mask of metadata filters (results restriction chosen by the user, not the query)."""
    return index.filter_mask(filters)
