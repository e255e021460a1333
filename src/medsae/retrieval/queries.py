"""The text-retrieval query suite (``queries.yaml``) and its ground-truth filters.

A ground-truth filter is a mapping whose keys must all hold for a slice to be relevant
(see the header of ``queries.yaml`` for the keys). :func:`truth_mask` evaluates one on a
slice table and its anatomy presence array.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from medsae.data.structures import ALL_STRUCTURES, GROUPS
from medsae.data.table import AGE_GROUPS
from medsae.errors import InputError

ASPECT_KEYS: dict[str, tuple[str, ...]] = {
    "modality": ("modality",),
    "plane": ("plane",),
    "anatomy": ("structures_any", "structures_all", "groups_any", "groups_all"),
    "demographics": ("sex", "age_group"),
}
_ALLOWED = {
    "modality": ("CT", "MR"),
    "plane": ("axial", "coronal", "sagittal"),
    "sex": ("M", "F"),
    "age_group": AGE_GROUPS,
}
TRUTH_KEYS = tuple(k for keys in ASPECT_KEYS.values() for k in keys)


@dataclass(frozen=True)
class Query:
    """One query of the suite: text, ground-truth filter and the aspects it checks."""

    id: str
    text: str
    truth: dict[str, Any]
    aspects: tuple[str, ...]
    source: str = "suite"
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def intent(self) -> str:
        """What the query asks for: queries worded differently for one intent share it (the
        query's own id when it has no ``intent``)."""
        return str(self.notes.get("intent", self.id))

    def aspect_truth(self, aspect: str) -> dict[str, Any]:
        """The part of the ground-truth filter that belongs to one aspect."""
        return {k: v for k, v in self.truth.items() if k in ASPECT_KEYS[aspect]}


def _as_list(value: Any) -> list[Any]:
    return [value] if isinstance(value, str | int | float) else list(value)


def validate_truth(truth: Mapping[str, Any], where: str = "truth") -> None:
    """Raise :class:`InputError` unless every key and value of a filter is known."""
    if not truth:
        raise InputError(where, "empty ground-truth filter")
    for key, value in truth.items():
        if key not in TRUTH_KEYS:
            raise InputError(
                f"{where}.{key}", f"unknown key; expected one of {', '.join(TRUTH_KEYS)}"
            )
        values = _as_list(value)
        if not values:
            raise InputError(f"{where}.{key}", "empty list")
        if key in _ALLOWED:
            bad = [v for v in values if v not in _ALLOWED[key]]
            if bad:
                raise InputError(
                    f"{where}.{key}", f"unknown value(s) {bad}; expected {list(_ALLOWED[key])}"
                )
        elif key.startswith("structures_"):
            bad = [v for v in values if v not in ALL_STRUCTURES]
            if bad:
                raise InputError(f"{where}.{key}", f"unknown structure(s) {bad}")
        else:
            bad = [v for v in values if v not in GROUPS]
            if bad:
                raise InputError(
                    f"{where}.{key}", f"unknown group(s) {bad}; expected {list(GROUPS)}"
                )


def _parse(entry: Mapping[str, Any], where: str) -> Query:
    for key in ("id", "text", "truth", "aspects"):
        if key not in entry:
            raise InputError(where, f"missing '{key}'")
    truth = dict(entry["truth"])
    validate_truth(truth, f"{where}.truth")
    aspects = tuple(entry["aspects"])
    unknown = [a for a in aspects if a not in ASPECT_KEYS]
    if unknown:
        raise InputError(
            f"{where}.aspects", f"unknown aspect(s) {unknown}; expected {list(ASPECT_KEYS)}"
        )
    implied = {a for a, keys in ASPECT_KEYS.items() if any(k in truth for k in keys)}
    if implied != set(aspects):
        raise InputError(
            f"{where}.aspects",
            f"lists {sorted(aspects)} but the truth filter checks {sorted(implied)}",
        )
    if not str(entry["text"]).strip():
        raise InputError(f"{where}.text", "empty query text")
    extra = {
        k: v for k, v in entry.items() if k not in {"id", "text", "truth", "aspects", "source"}
    }
    return Query(
        str(entry["id"]),
        str(entry["text"]),
        truth,
        aspects,
        str(entry.get("source", "suite")),
        extra,
    )


def load_queries(path: str | Path | None = None) -> list[Query]:
    """The query suite: the packaged ``queries.yaml`` or a file of the same format."""
    if path is None:
        text = resources.files("medsae.retrieval").joinpath("queries.yaml").read_text()
        where = "queries.yaml"
    else:
        p = Path(path)
        if not p.is_file():
            raise InputError(p, "query file not found")
        text, where = p.read_text(), str(p)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InputError(where, f"cannot parse YAML: {e}") from e
    entries = data.get("queries") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InputError(where, "expected a 'queries' list")
    queries = [_parse(e, f"{where}: query {i}") for i, e in enumerate(entries)]
    ids = [q.id for q in queries]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise InputError(where, f"duplicate query ids {dup}")
    return queries


SPLIT_SEED = 0
"""Seed of the split of the suite into a tune half and a report half (by intent)."""
HALVES = ("tune", "report")


def split_halves(queries: Sequence[Query], seed: int = SPLIT_SEED) -> dict[str, str]:
    """Query id -> ``"tune"`` or ``"report"``: the suite's intents (sorted) in a seeded random
    order, the first half (rounded up) tune, the rest report; every wording of one intent
    falls in one half. Settings are chosen on the tune half only; figures are reported on the
    report half."""
    intents = sorted({q.intent for q in queries})
    order = np.random.default_rng(seed).permutation(len(intents))
    tune = {intents[i] for i in order[: (len(intents) + 1) // 2]}
    return {q.id: ("tune" if q.intent in tune else "report") for q in queries}


def truth_mask(
    truth: Mapping[str, Any],
    table: pd.DataFrame,
    presence: np.ndarray,
    structures: Sequence[str],
) -> np.ndarray:
    """Boolean mask of the slices that satisfy every key of a ground-truth filter.

    ``presence`` is the anatomy presence array (1 = present) with columns ``structures``.
    Structures not in ``structures`` count as absent.
    """
    n = len(table)
    mask = np.ones(n, dtype=bool)
    present = np.asarray(presence) == 1
    col_of = {s: i for i, s in enumerate(structures)}

    def any_of(names: Sequence[str]) -> np.ndarray:
        cols = [col_of[s] for s in names if s in col_of]
        return present[:, cols].any(axis=1) if cols else np.zeros(n, dtype=bool)

    for key, value in truth.items():
        values = _as_list(value)
        if key in _ALLOWED:
            mask &= table[key].astype(str).isin([str(v) for v in values]).to_numpy()
        elif key == "structures_any":
            mask &= any_of(values)
        elif key == "structures_all":
            for s in values:
                mask &= any_of([s])
        elif key == "groups_any":
            mask &= any_of([s for g in values for s in GROUPS[g]])
        elif key == "groups_all":
            for g in values:
                mask &= any_of(GROUPS[g])
        else:
            raise InputError(
                f"truth.{key}", f"unknown key; expected one of {', '.join(TRUTH_KEYS)}"
            )
    return mask
