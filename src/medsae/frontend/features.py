"""The feature questions of the workspace view: statistics, top slices, histogram, quantile
slices, label enrichment and slice fingerprints, over the view's codes and tables.

:class:`FeatureQueries` is the part of :class:`medsae.frontend.view.WorkspaceView` that
analyses what the view opened (the view supplies the parts named under ``TYPE_CHECKING``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from medsae.frontend.parts import once
from medsae.interpret.features import label_enrichment
from medsae.jsonsafe import json_safe
from medsae.labels.table import LabelCodes, label_codes


class FeatureQueries:
    """Feature statistics and slice fingerprints over a view's parts (see the module docstring)."""

    if TYPE_CHECKING:
        table: pd.DataFrame
        row_of: dict[str, int]

        @property
        def n_slices(self) -> int: ...

        levels: list[int]
        codes: sp.csr_matrix | None
        codes_csc: sp.csc_matrix | None
        latent_stats: dict[str, np.ndarray] | None
        features_file: pd.DataFrame | None
        organ_latents: pd.DataFrame | None
        anatomy: Any

    @once
    def feature_table(self) -> pd.DataFrame:
        """One row per latent: statistics from the codes, joined with the features artifact."""
        stats = self.latent_stats
        if stats is None:
            return pd.DataFrame(
                columns=["latent", "level", "frequency", "mean_activation", "max_activation"]
            )
        n_rows = max(self.n_slices, 1)
        nnz, sums, maxes = stats["nnz"], stats["sum"], stats["max"]
        latents = np.arange(len(nnz))
        levels = np.asarray(self.levels or [len(nnz)])
        level_of = levels[
            np.minimum(np.searchsorted(levels, latents, side="right"), len(levels) - 1)
        ]
        df = pd.DataFrame(
            {
                "latent": latents,
                "level": level_of,
                "frequency": nnz / n_rows,
                "mean_activation": np.divide(sums, np.maximum(nnz, 1)),
                "max_activation": maxes,
            }
        )
        extra = self.features_file
        if extra is not None and "latent" in extra.columns:
            keep = [
                c
                for c in extra.columns
                if c not in {"frequency", "mean_activation", "max_activation", "level"}
            ]
            df = df.merge(extra[keep], on="latent", how="left")
            if "level" in extra.columns:
                df["level"] = (
                    extra.set_index("latent")["level"]
                    .reindex(df["latent"])
                    .fillna(df["level"])
                    .to_numpy()
                )
                df["level"] = df["level"].astype(np.int64)
        organs = self.organ_latents  # a token SAE: where each latent fires, scored
        if organs is not None and "latent" in organs.columns:
            cols = [c for c in ("organ_structure", "organ_ap", "organ_pointing") if c in organs]
            df = df.drop(columns=[c for c in cols if c in df.columns]).merge(
                organs[["latent", *cols]], on="latent", how="left"
            )
            if "organ_structure" in df.columns:
                df["organ_structure"] = df["organ_structure"].where(
                    df["organ_structure"].astype(str) != "", None
                )
        if "concept" in df.columns:  # a missing concept is null (some writers store "nan")
            concept = df["concept"].astype(object)
            df["concept"] = concept.where(
                ~concept.isin(["nan", "None", ""]) & concept.notna(), None
            )
        return df

    @once
    def _feature_columns(self) -> list[tuple[str, Any]]:
        """The feature table's columns as their own arrays (what ``Series.iloc`` reads): a
        row read from them costs microseconds, where 20 ``iloc`` lookups cost 2 ms."""
        table = self.feature_table
        return [
            (
                str(col),
                table[col].to_numpy()
                if isinstance(table[col].dtype, np.dtype)
                else table[col].array,
            )
            for col in table.columns
        ]

    def feature_row(self, latent: int) -> dict[str, Any]:
        """One latent's row, column by column (a row-wise view would upcast mixed types)."""
        i = int(latent)
        return json_safe({col: values[i] for col, values in self._feature_columns})

    def activations(self, latent: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, values) of the slices where ``latent`` is active."""
        assert self.codes_csc is not None
        csc = self.codes_csc
        lo, hi = csc.indptr[latent], csc.indptr[latent + 1]
        return csc.indices[lo:hi], csc.data[lo:hi]

    def top_rows(self, latent: int, n: int = 12, one_per_subject: bool = True) -> list[int]:
        """Rows of the top-activating slices (by default at most one per subject)."""
        stored = self.feature_row(latent).get("top_slice_ids")
        if stored is not None and len(stored) and one_per_subject:
            rows = [self.row_of[s] for s in list(stored) if s in self.row_of]
            if rows:
                return rows[:n]
        rows_a, vals = self.activations(latent)
        order = rows_a[np.argsort(-vals, kind="stable")]
        out: list[int] = []
        seen: set[str] = set()
        subjects = self._subjects
        for r in order:
            if one_per_subject:
                if subjects[r] in seen:
                    continue
                seen.add(subjects[r])
            out.append(int(r))
            if len(out) >= n:
                break
        return out

    def histogram(self, latent: int, bins: int = 20) -> dict[str, Any]:
        """Histogram of the non-zero activations: ``edges`` (bins + 1), ``counts``, ``zeros``."""
        _, vals = self.activations(latent)
        n_rows = len(self.table)
        if len(vals) == 0:
            return {"edges": [], "counts": [], "zeros": n_rows}
        counts, edges = np.histogram(vals, bins=bins)
        return {
            "edges": edges.tolist(),
            "counts": counts.tolist(),
            "zeros": int(n_rows - len(vals)),
        }

    def quantile_rows(
        self, latent: int, quantiles: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
    ) -> list[dict[str, Any]]:
        """One slice at each quantile of the non-zero activations."""
        rows_a, vals = self.activations(latent)
        if len(vals) == 0:
            return []
        order = np.argsort(vals, kind="stable")
        out = []
        for q in quantiles:
            i = order[min(int(q * len(vals)), len(vals) - 1)]
            out.append({"quantile": q, "row": int(rows_a[i]), "activation": float(vals[i])})
        return out

    def enrichment(
        self, latent: int, top: int = 10, min_count: int = 3, min_support: float = 0.1
    ) -> list[dict[str, Any]]:
        """Labels over-represented among the slices where the feature fires.

        The labels are the label table's (:mod:`medsae.labels.table`): the metadata and the
        study and acquisition facets (:func:`medsae.labels.table.label_codes`) and the
        structures present. For a label L, ``rate_active = P(L | active)``, ``rate_all =
        P(L)`` over every slice where L is defined, and ``lift = rate_active / rate_all``
        (:func:`medsae.interpret.features.label_enrichment`, the interpret stage's arithmetic
        over its own base set, the training split). Returned sorted by lift (then count and label); labels carried
        by fewer than ``min_count`` active slices, or by less than ``min_support`` of them,
        are left out.
        """
        rows_a, _ = self.activations(latent)
        if len(rows_a) == 0:
            return []
        rows_a = np.sort(rows_a)
        min_count = max(min_count, int(np.ceil(min_support * len(rows_a))))
        out: list[dict[str, Any]] = []
        # per label: (active slices carrying it, active slices where it is defined) against
        # the same counts over every slice, counted once per view (_label_totals); a
        # request reads only the active slices' rows
        for kind, (codes, values) in self._label_codes.items():
            c = codes[rows_a]
            c = c[c >= 0]
            act = np.bincount(c, minlength=len(values))
            n_all, n_def = self._label_totals[kind]
            names = [f"{kind}={v}" for v in values]
            out += _enriched(names, act, np.full(len(values), len(c)), n_all, n_def, min_count)
        anatomy = self.anatomy
        if anatomy is not None:
            presence = np.asarray(anatomy.presence[rows_a])
            act_has = (presence == 1).sum(axis=0)
            act_def = (presence != -1).sum(axis=0)
            has_all, def_all = self._label_totals["structure"]
            names = [f"structure={s}" for s in anatomy.structures]
            out += _enriched(names, act_has, act_def, has_all, def_all, min_count)
        out.sort(key=lambda d: (-d["lift"], -d["count_active"], d["label"]))
        return out[:top]

    @once
    def _subjects(self) -> np.ndarray:
        return self.table["subject_key"].to_numpy()

    @once
    def _label_codes(self) -> LabelCodes:
        """The label codes of the slice table, computed once per view."""
        return label_codes(self.table)

    @once
    def _label_totals(self) -> dict[str, tuple[np.ndarray, Any]]:
        """Over every slice: per metadata column (slices per value, slices with a value);
        ``structure``: (slices where each structure is present, where it is known)."""
        out: dict[str, tuple[np.ndarray, Any]] = {}
        for col, (codes, uniques) in self._label_codes.items():
            defined = codes[codes >= 0]
            out[col] = (np.bincount(defined, minlength=len(uniques)), len(defined))
        anatomy = self.anatomy
        if anatomy is not None:
            presence = anatomy.presence
            n_struct = presence.shape[1]
            has = np.zeros(n_struct, dtype=np.int64)
            known = np.zeros(n_struct, dtype=np.int64)
            for lo in range(0, presence.shape[0], 65536):  # memory-mapped: in chunks
                block = np.asarray(presence[lo : lo + 65536])
                has += (block == 1).sum(axis=0)
                known += (block != -1).sum(axis=0)
            out["structure"] = (has, known)
        return out

    def fingerprint(self, row: int, k: int = 10) -> list[dict[str, Any]]:
        """The slice's top-``k`` active features (its fingerprint), strongest first."""
        if self.codes is None:
            return []
        lo, hi = self.codes.indptr[row], self.codes.indptr[row + 1]
        idx, vals = self.codes.indices[lo:hi], self.codes.data[lo:hi]
        order = np.argsort(-vals, kind="stable")[:k]
        table = self.feature_table
        has_desc = "description" in table.columns
        return [
            {
                "latent": int(idx[i]),
                "activation": float(vals[i]),
                "description": json_safe(table.at[int(idx[i]), "description"])
                if has_desc
                else None,
            }
            for i in order
        ]


def _enriched(
    names: list[str],
    act: np.ndarray,
    act_defined: np.ndarray,
    count: np.ndarray,
    defined: Any,
    min_count: int,
) -> list[dict[str, Any]]:
    """The labels carried by at least ``min_count`` active slices, with their rates and lift."""
    keep = np.flatnonzero(act >= min_count)
    rate_active, rate_all, lift = label_enrichment(
        act[keep],
        np.asarray(act_defined)[keep],
        np.asarray(count)[keep],
        np.broadcast_to(defined, np.shape(count))[keep],
    )
    return [
        {
            "label": names[j],
            "count_active": int(act[j]),
            "rate_active": float(rate_active[i]),
            "rate_all": float(rate_all[i]),
            "lift": float(lift[i]),
        }
        for i, j in enumerate(keep)
    ]
