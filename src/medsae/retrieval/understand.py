"""Query understanding: a text query read as concepts of the one label vocabulary.

:func:`read_query` turns ``"coronal MRI of both kidneys without the liver"`` into concepts
(``plane=coronal``; ``modality=MR``; ``structure=kidney_left`` or ``kidney_right``; not
``structure=liver``), each with its aspect and how it was recognised, and the words it
did not understand. In order:

1. ages in numbers (``over 70``, ``under 40``, ``aged 45``, ``45 years old``, ``60-80``)
   become age groups (:func:`medsae.labels.vocabulary.age_groups_of_number`);
2. the longest phrases of the table (:func:`medsae.labels.vocabulary.vocabulary`, up to
   five words) are matched left to right (``how = "table"``);
3. a word left over that is spelt like one word of the table (``difflib`` ratio at least
   ``spelling_cutoff``, words of four letters or more) takes its meaning (``"spelling"``);
4. a run of words still left over is compared with every phrase of the table by sentence
   embedding; the nearest one is taken when its cosine is at least ``similarity_floor``
   (``"similar words"``), else the words are reported as *not understood* and take no
   part in the search.

Filler words (``a``, ``showing``, ``scan``, ``patient``...) and single letters are skipped. ``no``,
``without``, ``not``, ``excluding``, ``except`` negate the concepts that follow up to the next
``,``, ``;``, ``.``, ``with``, ``but`` or ``showing``; a negated concept excludes. Concepts
of one kind of which a slice has a single value (modality, plane, sex, age group) are
merged into one that either value satisfies (``"CT or MRI"``); anatomy joined by ``or``
likewise (``"liver or spleen"``); otherwise every concept must hold.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medsae.labels.vocabulary import (
    EXCLUSIVE_ASPECT_KINDS,
    Term,
    age_groups_of_number,
    vocabulary,
)
from medsae.labels.words import label_phrase
from medsae.llm.embed import TextEmbedder

NEGATIONS = frozenset({"no", "without", "not", "excluding", "except", "exclude", "minus", "w/o"})
SCOPE_ENDS = frozenset({"with", "but", "showing", "show", "shows", "including", "plus"})
FILLER = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "with",
        "showing",
        "show",
        "shows",
        "me",
        "find",
        "look",
        "looking",
        "for",
        "image",
        "images",
        "slice",
        "slices",
        "scan",
        "scans",
        "scanned",
        "view",
        "views",
        "study",
        "studies",
        "picture",
        "pictures",
        "photo",
        "patient",
        "patients",
        "person",
        "people",
        "subject",
        "subjects",
        "in",
        "on",
        "at",
        "from",
        "through",
        "level",
        "levels",
        "region",
        "regions",
        "area",
        "areas",
        "part",
        "parts",
        "and",
        "or",
        "please",
        "some",
        "any",
        "that",
        "which",
        "where",
        "is",
        "are",
        "was",
        "were",
        "has",
        "have",
        "having",
        "visible",
        "seen",
        "see",
        "seeing",
        "containing",
        "contain",
        "contains",
        "including",
        "include",
        "includes",
        "plus",
        "only",
        "just",
        "also",
        "both",
        "years",
        "year",
        "yr",
        "yrs",
        "y",
        "o",
        "adult",
        "adults",
        "body",
        "whole",
        "organ",
        "organs",
        "structure",
        "structures",
        "image",
        "imaging",
        "acquired",
        "taken",
        "cut",
        "cuts",
        "plane",
        "planes",
        "section",
        "sections",
        "sectional",
        "orientation",
        "reconstruction",
        "reformat",
        "reformatted",
        "showing",
        "depicting",
        "depicts",
        "demonstrating",
        "all",
        "entire",
        "full",
        "its",
        "their",
        "his",
        "her",
        "this",
        "these",
        "those",
        "into",
        "to",
        "by",
        "as",
        "it",
        "can",
        "you",
        "i",
        "want",
        "need",
    ]
)
_MAX_WORDS = 5
_AGE = re.compile(
    r"(?P<rel>over|above|older than|at least|>=|>|under|below|younger than|<=|<|aged|age)\s*"
    r"(?P<n>\d{1,3})\b|(?P<lo>\d{1,3})\s*(?:-|to)\s*(?P<hi>\d{1,3})\s*(?:years?|y)?\b"
    r"|(?P<n2>\d{1,3})\s*(?:\+|plus)|(?P<n3>\d{1,3})[\s-]*(?:years?|yrs?|y)[\s-]*old\b"
)


@dataclass(frozen=True)
class Concept:
    """One concept of a query: the words, the aspect, the labels any of which it asks for
    (or, negated, excludes), how it was recognised and, for ``"similar words"``, the cosine."""

    text: str
    aspect: str
    labels: tuple[str, ...]
    negated: bool = False
    how: str = "table"
    similarity: float | None = None

    @property
    def kind(self) -> str:
        """The label kind of the concept (``structure``, ``group``, ``modality``...)."""
        kinds = {x.split("=", 1)[0] for x in self.labels}
        return kinds.pop() if len(kinds) == 1 else "anatomy"

    def words(self) -> str:
        """The concept in words: ``not left kidney or right kidney``."""
        names = [label_phrase(x) for x in self.labels]
        shown = " or ".join(names[:4]) + (f" or {len(names) - 4} more" if len(names) > 4 else "")
        return ("not " if self.negated else "") + shown

    def as_dict(self) -> dict[str, Any]:
        """JSON form (the browser's and the evaluation's)."""
        return {
            "text": self.text,
            "aspect": self.aspect,
            "labels": list(self.labels),
            "negated": self.negated,
            "how": self.how,
            "similarity": None if self.similarity is None else round(self.similarity, 4),
            "words": self.words(),
        }


@dataclass(frozen=True)
class Reading:
    """How a query was read: its concepts and the words not understood."""

    query: str
    concepts: tuple[Concept, ...]
    not_understood: tuple[str, ...] = ()
    unavailable: tuple[str, ...] = field(default=())

    def summary(self) -> str:
        """One line: ``plane: axial AND modality: CT AND anatomy: liver; not understood: ...``."""
        parts = [f"{c.aspect}: {c.words()}" for c in self.concepts]
        line = " AND ".join(parts) if parts else "no concept"
        if self.not_understood:
            line += "; not understood: " + ", ".join(repr(w) for w in self.not_understood)
        if self.unavailable:
            line += "; no feature of this run for: " + ", ".join(self.unavailable)
        return line

    def as_dict(self) -> dict[str, Any]:
        """JSON form (the browser's and the evaluation's)."""
        return {
            "query": self.query,
            "concepts": [c.as_dict() for c in self.concepts],
            "not_understood": list(self.not_understood),
            "unavailable": list(self.unavailable),
            "summary": self.summary(),
        }


class QueryReader:
    """Reads queries (see the module docstring); phrase embeddings are made once, on the
    first query that needs them."""

    def __init__(
        self,
        embedder: TextEmbedder | None = None,
        similarity_floor: float = 0.6,
        spelling_cutoff: float = 0.8,
    ) -> None:
        self.table = vocabulary()
        self.embedder = embedder
        self.similarity_floor = similarity_floor
        self.spelling_cutoff = spelling_cutoff
        self._phrases = sorted(self.table)
        self._words = {w for p in self._phrases for w in p.split()}
        self._spellable = sorted(w for w in self._words if len(w) >= 4)
        self._phrase_emb: np.ndarray | None = None

    def read(self, query: str) -> Reading:
        """The concepts of ``query`` and the words not understood."""
        text = query.lower().replace("’", "'")
        found: list[tuple[int, Concept]] = []  # (token position, concept)
        ages: dict[str, tuple[str, ...]] = {}

        def age(match: re.Match[str]) -> str:
            g = match.groupdict()
            if g["rel"]:
                rel = {"older than": "over", "at least": "over", ">=": "over", ">": "over"}.get(
                    g["rel"], g["rel"]
                )
                rel = {"above": "over", "below": "under", "younger than": "under"}.get(rel, rel)
                rel = {"<=": "under", "<": "under", "age": "aged"}.get(rel, rel)
                groups = age_groups_of_number(rel, float(g["n"]))
            elif g["lo"]:
                lo, hi = float(g["lo"]), float(g["hi"])
                groups = tuple(
                    x
                    for x in age_groups_of_number("over", lo)
                    if x in age_groups_of_number("under", hi)
                )
            elif g["n2"]:
                groups = age_groups_of_number("over", float(g["n2"]))
            else:
                groups = age_groups_of_number("aged", float(g["n3"]))
            key = f"agephrase{len(ages)}"
            ages[key] = groups
            return f" {key}:{match.group(0).strip().replace(' ', '_')} "

        text = _AGE.sub(age, text)
        tokens = re.findall(r"agephrase\d+:\S+|[a-z0-9]+(?:/[a-z]+)?|[,;.]", text)
        original = list(tokens)
        corrected = self._spell(tokens)
        negated = False
        leftover: list[list[tuple[int, str]]] = [[]]
        after_or = False
        i = 0
        while i < len(tokens):
            tok = tokens[i]
            if tok in ",;." or tok in SCOPE_ENDS:
                negated = False
                leftover.append([])
                i += 1
                continue
            if tok in NEGATIONS:
                negated = True
                leftover.append([])
                i += 1
                continue
            if tok.startswith("agephrase"):
                key, _, words = tok.partition(":")
                if ages[key]:
                    found.append(
                        (i, Concept(words.replace("_", " "), "demographics", ages[key], negated))
                    )
                i += 1
                continue
            matched = self._longest(tokens, i)
            if matched is not None:
                n, _phrase, term = matched
                how = "spelling" if corrected & set(range(i, i + n)) else "table"
                concept = Concept(
                    " ".join(original[i : i + n]), term.aspect, term.labels, negated, how
                )
                if after_or and found and _joinable(found[-1][1], concept):
                    prev = found[-1][1]
                    found[-1] = (found[-1][0], _merge(prev, concept))
                else:
                    found.append((i, concept))
                after_or = False
                leftover.append([])
                i += n
                continue
            after_or = tok == "or"
            if tok in FILLER or tok.isdigit() or len(tok) == 1:
                leftover.append([])
            else:
                leftover[-1].append((i, tok))
            i += 1
        not_understood: list[str] = []
        for run in (r for r in leftover if r):
            for pos, meant in self._fallback(run, tokens):
                if meant is None:
                    not_understood.append(pos)
                else:
                    found.append((int(pos), meant))
        found.sort(key=lambda pc: pc[0])
        return Reading(query, _combine([c for _, c in found]), tuple(not_understood))

    def _longest(self, tokens: list[str], i: int) -> tuple[int, str, Term] | None:
        for n in range(min(_MAX_WORDS, len(tokens) - i), 0, -1):
            words = tokens[i : i + n]
            if any(w in ",;." for w in words):
                continue
            phrase = " ".join(words)
            if phrase in self.table:
                return n, phrase, self.table[phrase]
        return None

    def _spell(self, tokens: list[str]) -> set[int]:
        """Replace, in place, words the table does not know that are spelt like one of its
        words (four letters or more); the positions replaced."""
        fixed = set()
        for i, tok in enumerate(tokens):
            if len(tok) < 4 or tok in self._words or tok in FILLER or tok in NEGATIONS:
                continue
            if tok in SCOPE_ENDS or tok.startswith("agephrase") or not tok.isalpha():
                continue
            close = difflib.get_close_matches(
                tok, self._spellable, n=1, cutoff=self.spelling_cutoff
            )
            if close:
                tokens[i] = close[0]
                fixed.add(i)
        return fixed

    def _fallback(
        self, run: list[tuple[int, str]], tokens: list[str]
    ) -> list[tuple[Any, Concept | None]]:
        """The nearest phrase of the table to words it does not hold, by sentence embedding."""
        out: list[tuple[Any, Concept | None]] = []
        rest = run
        if not rest:
            return out
        phrase = " ".join(t for _, t in rest)
        best, sim = self._nearest(phrase)
        if best is not None and sim >= self.similarity_floor:
            term = self.table[best]
            pos = rest[0][0]
            out.append(
                (
                    pos,
                    Concept(
                        phrase,
                        term.aspect,
                        term.labels,
                        _negated(tokens, pos),
                        "similar words",
                        sim,
                    ),
                )
            )
        else:
            out.append((phrase, None))
        return out

    def _nearest(self, text: str) -> tuple[str | None, float]:
        if self.embedder is None:
            return None, 0.0
        if self._phrase_emb is None:
            self._phrase_emb = self.embedder.embed(self._phrases)
        sims = self._phrase_emb @ self.embedder.embed([text])[0]
        k = int(np.argmax(sims))
        return self._phrases[k], float(sims[k])


def _negated(tokens: list[str], pos: int) -> bool:
    """Whether the token at ``pos`` lies in the scope of a negation word."""
    for tok in reversed(tokens[:pos]):
        if tok in ",;." or tok in SCOPE_ENDS:
            return False
        if tok in NEGATIONS:
            return True
    return False


def _joinable(a: Concept, b: Concept) -> bool:
    return a.aspect == b.aspect == "anatomy" and a.negated == b.negated


def _merge(a: Concept, b: Concept) -> Concept:
    labels = tuple(dict.fromkeys(a.labels + b.labels))
    how = a.how if a.how == b.how else "table"
    return Concept(f"{a.text} or {b.text}", a.aspect, labels, a.negated, how, a.similarity)


def _combine(concepts: list[Concept]) -> tuple[Concept, ...]:
    """Merge concepts of one single-valued kind (either value holds); drop repeats."""
    out: list[Concept] = []
    for c in concepts:
        same = next(
            (
                i
                for i, o in enumerate(out)
                if o.negated == c.negated
                and (
                    o.labels == c.labels or (o.kind == c.kind and c.kind in EXCLUSIVE_ASPECT_KINDS)
                )
            ),
            None,
        )
        if same is None:
            out.append(c)
        elif out[same].labels != c.labels:
            out[same] = _merge(out[same], c)
    return tuple(out)
