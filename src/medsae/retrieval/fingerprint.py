"""Sparse fingerprints and an exact inverted index over them.

Definitions
-----------
A slice's **fingerprint** is the set ``F`` of its ``K`` largest active SAE latents (fewer when
fewer than ``K`` are active; ties broken by the lower latent id), leaving out the latents that
fire on (nearly) every indexed slice: active on at least ``ALWAYS_ACTIVE_FRACTION`` (99%) of
the rows (the paper leaves out latents active on every slice; such a latent says nothing
about which slices are alike). For a query ``q`` with fingerprint ``F`` and a candidate slice
``c`` (its codes row), the **fingerprint similarity** is the cosine restricted to the query's
``K`` dimensions::

    sim(q, c) = sum_{j in F} q_j c_j / ( sqrt(sum_{j in F} q_j^2) * sqrt(sum_{j in F} c_j^2) )

(the paper's "cosine over those K dims"). With one latent (``|F| = 1``) that cosine is 1 for
every candidate, so the paper's closeness of activation is used instead::

    sim(q, c) = 1 / (1 + |q_j - c_j|)

Candidates with no activity on ``F`` have
similarity 0 and are never returned. Results are one per subject (the subject's best slice;
ties go to the lower row), the query's own subject excluded, ordered by decreasing
similarity (ties: lower row first).

Index layout
------------
The codes are stored column-major (CSC): for each latent ``j`` a posting list of the rows
where it is active, ``rows[indptr[j]:indptr[j+1]]`` (int32), with their activations
``values[...]`` (float32). A query gathers the ``K`` posting lists, accumulates the dot
product and the candidates' squared norm on ``F`` with two ``np.bincount`` calls, and keeps
the best slice of each subject among the top candidates (see :meth:`FingerprintIndex.search`).
The answer equals :func:`medsae.retrieval.fingerprint_reference.brute_force_search` (a
full scan of the CSR matrix) up to floating-point ties; ``check_exact`` there tests that.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from medsae.errors import ArtifactError, InputError
from medsae.retrieval.io import FINGERPRINT_INDEX, FINGERPRINT_INDEX_INFO, FINGERPRINT_ROWS

ALWAYS_ACTIVE_FRACTION = 0.99
"""Latents active on at least this fraction of the indexed rows are left out of fingerprints."""

# Metadata columns of the slice table kept in the index for filters and display.
FILTER_COLUMNS = (
    "slice_id",
    "subject_key",
    "modality",
    "plane",
    "sex",
    "age_group",
    "split",
    "institute",
    "manufacturer",
    "study_type",
    "dataset",
    "index",
)

FilterValue = str | int | float | Sequence[str | int | float]


@dataclass(frozen=True)
class Hits:
    """Ranked search results: parallel arrays, best first."""

    rows: np.ndarray  # int64 (n,) row of the slice table
    scores: np.ndarray  # float64 (n,) similarity
    subjects: np.ndarray  # int64 (n,) subject code (index into FingerprintIndex.subject_keys)

    def __len__(self) -> int:
        return len(self.rows)


def fingerprint_of(
    values_n: np.ndarray, k: int, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The query's fingerprint: its ``k`` largest active latents and their values.

    ``values_n`` is one dense codes row ``(n_latents,)``. Only positive (active) entries
    count, latents in ``exclude`` (e.g. :attr:`FingerprintIndex.excluded`) never; ties are
    broken by the lower latent id. Returns ``(latents, values)`` ordered by decreasing value.
    """
    if k < 1:
        raise InputError("k", f"fingerprint size must be >= 1, got {k}")
    v = np.asarray(values_n, dtype=np.float64).ravel()
    active = np.flatnonzero(v > 0)
    if exclude is not None and len(exclude):
        active = active[~np.isin(active, exclude)]
    if active.size == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    order = np.lexsort((active, -v[active]))[:k]
    latents = active[order].astype(np.int64)
    return latents, v[latents]


def always_active_latents(
    indptr: np.ndarray, n_rows: int, fraction: float = ALWAYS_ACTIVE_FRACTION
) -> np.ndarray:
    """Latents whose posting list covers at least ``fraction`` of ``n_rows`` rows (sorted ids)."""
    if not 0 < fraction <= 1:
        raise InputError("fraction", f"must be in (0, 1], got {fraction}")
    counts = np.diff(np.asarray(indptr, dtype=np.float64))
    if n_rows == 0:
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(counts >= fraction * n_rows).astype(np.int64)


def closeness(q: float, c: np.ndarray) -> np.ndarray:
    """The one-latent similarity ``1 / (1 + |q - c|)`` (the paper's rule at K = 1)."""
    return np.asarray(1.0 / (1.0 + np.abs(np.asarray(c, dtype=np.float64) - q)), dtype=np.float64)


def _as_dense_row(query: np.ndarray | sp.spmatrix, n_latents: int) -> np.ndarray:
    if sp.issparse(query):
        row = np.asarray(query.toarray(), dtype=np.float64).ravel()  # type: ignore[union-attr]
    else:
        row = np.asarray(query, dtype=np.float64).ravel()
    if row.shape != (n_latents,):
        raise InputError(
            "query", f"expected a codes row of {n_latents} latents, got shape {row.shape}"
        )
    return row


def best_per_subject(rows: np.ndarray, scores: np.ndarray, subjects: np.ndarray, n: int) -> Hits:
    """The ``n`` best subjects with their best row, from candidate rows and scores.

    Order: decreasing score, then increasing row (deterministic tie-break).
    """
    order = np.lexsort((rows, -scores))
    subj_sorted = subjects[order]
    _, first = np.unique(subj_sorted, return_index=True)
    first.sort()  # first occurrences in rank order = each subject's best row
    keep = order[first[:n]]
    return Hits(
        rows[keep].astype(np.int64),
        scores[keep].astype(np.float64),
        subjects[keep].astype(np.int64),
    )


class FingerprintIndex:
    """An exact inverted index over sparse codes (see the module docstring).

    Build it with :meth:`build` from a CSR codes matrix and the slice table (row-aligned),
    query it with :meth:`search`, persist it with :meth:`save` / :meth:`load`.
    """

    def __init__(
        self,
        indptr: np.ndarray,
        rows: np.ndarray,
        values: np.ndarray,
        subject_ids: np.ndarray,
        subject_keys: Sequence[str],
        table: pd.DataFrame | None = None,
        always_active_fraction: float = ALWAYS_ACTIVE_FRACTION,
    ) -> None:
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.rows = np.asarray(rows, dtype=np.int32)
        self.values = np.asarray(values, dtype=np.float32)
        self.subject_ids = np.asarray(subject_ids, dtype=np.int64)
        self.subject_keys = list(subject_keys)
        self.n_rows = len(self.subject_ids)
        self.n_latents = len(self.indptr) - 1
        self.table = table.reset_index(drop=True) if table is not None else None
        if self.table is not None and len(self.table) != self.n_rows:
            raise ArtifactError(f"index table has {len(self.table)} rows, codes have {self.n_rows}")
        self._mask_cache: dict[str, np.ndarray] = {}
        self.excluded = always_active_latents(self.indptr, self.n_rows, always_active_fraction)
        """Latents left out of every fingerprint (active on nearly every row)."""

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        codes: sp.spmatrix,
        table: pd.DataFrame | None = None,
        subjects: Sequence[Any] | np.ndarray | None = None,
        always_active_fraction: float = ALWAYS_ACTIVE_FRACTION,
    ) -> FingerprintIndex:
        """Index a codes matrix ``(n_rows, n_latents)``.

        Subjects come from ``subjects`` or from the table's ``subject_key`` column (rows
        without a subject are each their own subject). Latents active on at least
        ``always_active_fraction`` of the rows are left out of fingerprints (``excluded``).
        """
        n_rows = codes.shape[0]
        if subjects is None and table is not None and "subject_key" in table.columns:
            subjects = table["subject_key"].to_numpy()
        if table is not None and len(table) != n_rows:
            raise InputError("table", f"{len(table)} rows but the codes have {n_rows} rows")
        if subjects is None:
            subject_ids = np.arange(n_rows, dtype=np.int64)
            keys: list[str] = [str(i) for i in range(n_rows)]
        else:
            codes_arr, uniques = pd.factorize(
                pd.Series(np.asarray(subjects, dtype=object)), sort=True
            )
            if len(codes_arr) != n_rows:
                raise InputError(
                    "subjects", f"{len(codes_arr)} entries but the codes have {n_rows} rows"
                )
            subject_ids = codes_arr.astype(np.int64)
            keys = [str(u) for u in uniques]
            missing = subject_ids < 0
            if missing.any():
                subject_ids[missing] = len(keys) + np.arange(int(missing.sum()))
                keys += [f"row:{r}" for r in np.flatnonzero(missing)]
        csc = sp.csc_matrix(codes, dtype=np.float32)
        csc.eliminate_zeros()
        csc.sort_indices()
        if csc.nnz and float(csc.data.min()) < 0:
            raise InputError("codes", "sparse codes must be non-negative (SAE activations)")
        kept = None
        if table is not None:
            kept = table[[c for c in FILTER_COLUMNS if c in table.columns]].copy()
        return cls(
            csc.indptr, csc.indices, csc.data, subject_ids, keys, kept, always_active_fraction
        )

    def save(self, folder: Path) -> None:
        """Write ``fingerprint_index.npz`` (postings), ``fingerprint_rows.parquet`` and JSON meta."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(
            folder / FINGERPRINT_INDEX,
            indptr=self.indptr,
            rows=self.rows,
            values=self.values,
            subject_ids=self.subject_ids,
        )
        table = self.table if self.table is not None else pd.DataFrame(index=range(self.n_rows))
        table = table.assign(subject_key=[self.subject_keys[i] for i in self.subject_ids])
        table.to_parquet(folder / FINGERPRINT_ROWS, index=False)
        meta = {
            "n_rows": self.n_rows,
            "n_latents": self.n_latents,
            "nnz": len(self.rows),
            "n_subjects": len(self.subject_keys),
            "memory_mb": round(self.memory_bytes() / 2**20, 3),
            "excluded_latents": self.excluded.tolist(),
            "always_active_fraction": ALWAYS_ACTIVE_FRACTION,
            "layout": "CSC posting lists: indptr int64 (n_latents+1), rows int32, values float32",
        }
        (folder / FINGERPRINT_INDEX_INFO).write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, folder: Path) -> FingerprintIndex:
        """Read an index written by :meth:`save`."""
        folder = Path(folder)
        from medsae.artifacts import read_artifact

        def arrays(p: Path) -> tuple[np.ndarray, ...]:
            with np.load(p) as z:
                return tuple(np.asarray(z[k]) for k in ("indptr", "rows", "values", "subject_ids"))

        p = folder / FINGERPRINT_INDEX
        indptr, rows, values, subject_ids = read_artifact(
            p, arrays, "fingerprint index not found", "index"
        )
        table = read_artifact(folder / FINGERPRINT_ROWS, pd.read_parquet, stage="index")
        keys_by_id = dict(zip(subject_ids.tolist(), table["subject_key"].astype(str), strict=True))
        keys = [keys_by_id.get(i, f"row:{i}") for i in range(int(subject_ids.max(initial=-1)) + 1)]
        return cls(indptr, rows, values, subject_ids, keys, table)

    def memory_bytes(self) -> int:
        """Bytes held by the posting arrays and subject ids."""
        return int(
            self.indptr.nbytes + self.rows.nbytes + self.values.nbytes + self.subject_ids.nbytes
        )

    # ------------------------------------------------------------------ queries
    def row_of(self, slice_id: str) -> int:
        """Row of a slice id (needs the table)."""
        if self.table is None or "slice_id" not in self.table.columns:
            raise ArtifactError("this index was built without a slice table; query by row instead")
        if not hasattr(self, "_row_by_id"):
            self._row_by_id = {s: i for i, s in enumerate(self.table["slice_id"].astype(str))}
        try:
            return self._row_by_id[str(slice_id)]
        except KeyError:
            from medsae.sae.runs import slice_not_found

            raise InputError(
                f"slice id {slice_id!r}",
                slice_not_found(slice_id, list(self._row_by_id), "WS"),
            ) from None

    def codes_row(self, row: int) -> np.ndarray:
        """The dense codes row of an indexed slice (gathered from the postings)."""
        if not 0 <= row < self.n_rows:
            raise InputError(f"row {row}", f"out of range for {self.n_rows} indexed slices")
        if not hasattr(self, "_csr"):
            self._csr = sp.csc_matrix(
                (self.values, self.rows, self.indptr), shape=(self.n_rows, self.n_latents)
            ).tocsr()
        return np.asarray(self._csr[row].toarray(), dtype=np.float64).ravel()

    def filter_mask(self, filters: Mapping[str, FilterValue] | None) -> np.ndarray | None:
        """Boolean row mask for metadata filters (``{column: value or list of values}``)."""
        if not filters:
            return None
        if self.table is None:
            raise InputError("filters", "this index has no slice table to filter on")
        mask = np.ones(self.n_rows, dtype=bool)
        for column, wanted in filters.items():
            if column not in self.table.columns:
                raise InputError(
                    f"filter {column!r}",
                    f"unknown column; available: {', '.join(self.table.columns)}",
                )
            values = [wanted] if isinstance(wanted, str | int | float) else list(wanted)
            key = json.dumps([column, sorted(map(str, values))])
            if key not in self._mask_cache:
                col = self.table[column].astype(str).to_numpy()
                self._mask_cache[key] = np.isin(col, [str(v) for v in values])
            mask &= self._mask_cache[key]
        return mask

    def scores(self, latents: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(candidate rows, similarity) for fingerprint ``latents`` with query values ``weights``.

        Candidates are the rows active on at least one fingerprint latent. The similarity is
        the restricted cosine, or ``1 / (1 + |q_j - c_j|)`` for a one-latent fingerprint.
        """
        latents = np.asarray(latents, dtype=np.int64)
        weights = np.asarray(weights, dtype=np.float64)
        q_norm = float(np.sqrt(np.sum(weights**2)))
        if latents.size == 0 or q_norm == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        starts, stops = self.indptr[latents], self.indptr[latents + 1]
        if latents.size == 1:
            a, b = int(starts[0]), int(stops[0])
            rows1 = self.rows[a:b].astype(np.int64)
            keep = self.values[a:b] > 0
            return rows1[keep], closeness(float(weights[0]), self.values[a:b][keep])
        rows = np.concatenate([self.rows[a:b] for a, b in zip(starts, stops, strict=True)])
        vals = np.concatenate(
            [self.values[a:b] for a, b in zip(starts, stops, strict=True)]
        ).astype(np.float64)
        qv = np.repeat(weights, stops - starts)
        dot = np.bincount(rows, weights=qv * vals, minlength=self.n_rows)
        sq = np.bincount(rows, weights=vals * vals, minlength=self.n_rows)
        cand = np.flatnonzero(sq > 0)
        score = dot[cand] / (q_norm * np.sqrt(sq[cand]))
        return cand, score

    def search_fingerprint(
        self,
        latents: np.ndarray,
        weights: np.ndarray,
        n: int = 10,
        mask: np.ndarray | None = None,
        exclude_subject: int | None = None,
    ) -> Hits:
        """Top ``n`` subjects for a fingerprint (see module docstring for the similarity)."""
        if n < 1:
            raise InputError("n", f"number of results must be >= 1, got {n}")
        cand, score = self.scores(latents, weights)
        keep = np.ones(len(cand), dtype=bool)
        if mask is not None:
            keep &= mask[cand]
        if exclude_subject is not None:
            keep &= self.subject_ids[cand] != exclude_subject
        cand, score = cand[keep], score[keep]
        return top_subjects(cand, score, self.subject_ids[cand], n)

    def search(
        self,
        query: int | str | np.ndarray | sp.spmatrix,
        k: int = 5,
        n: int = 10,
        filters: Mapping[str, FilterValue] | None = None,
        exclude_own_subject: bool = True,
    ) -> pd.DataFrame:
        """Slices most similar to ``query``: one per subject, best first.

        ``query`` is a row number, a slice id, or a codes row (dense or sparse, for a new
        image). For indexed slices the query's own subject is excluded. Returns a table with
        ``rank``, ``row``, ``score``, ``subject_key`` and the indexed metadata columns.
        """
        exclude = None
        if isinstance(query, str):
            query = self.row_of(query)
        if isinstance(query, int | np.integer):
            row = int(query)
            vec = self.codes_row(row)
            if exclude_own_subject:
                exclude = int(self.subject_ids[row])
        else:
            vec = _as_dense_row(query, self.n_latents)
        latents, weights = fingerprint_of(vec, k, self.excluded)
        hits = self.search_fingerprint(latents, weights, n, self.filter_mask(filters), exclude)
        return self.describe_hits(hits)

    def describe_hits(self, hits: Hits) -> pd.DataFrame:
        """A results table for hits: rank, row, score, subject_key and metadata."""
        out = pd.DataFrame(
            {
                "rank": np.arange(1, len(hits) + 1),
                "row": hits.rows,
                "score": hits.scores,
                "subject_key": [self.subject_keys[i] for i in hits.subjects],
            }
        )
        if self.table is not None:
            extra = self.table.iloc[hits.rows].reset_index(drop=True)
            extra = extra.drop(columns=[c for c in extra.columns if c in out.columns])
            out = pd.concat([out, extra], axis=1)
        return out


def top_subjects(rows: np.ndarray, scores: np.ndarray, subjects: np.ndarray, n: int) -> Hits:
    """The ``n`` best subjects (best row each) among scored candidate rows.

    Only the candidates at or above a score threshold are sorted: the threshold is the
    ``m``-th best score, ``m`` growing until the kept candidates hold ``n`` subjects (or all
    candidates are kept). A subject outside the kept set scores at most the threshold, so the
    answer equals a full sort (ties at the threshold are all kept).
    """
    total = len(rows)
    m = max(64, 32 * n)
    while m < total:
        thresh = np.partition(scores, total - m)[total - m]
        sel = np.flatnonzero(scores >= thresh)
        if len(np.unique(subjects[sel])) >= n:
            return best_per_subject(rows[sel], scores[sel], subjects[sel], n)
        m *= 8
    return best_per_subject(rows, scores, subjects, n)
