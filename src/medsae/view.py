"""A read-only view of a finished workspace, shared by the HTML report and the browser.

:class:`WorkspaceView` opens what exists (slice table, images, anatomy, split, sparse codes,
feature table, evaluation summaries, ranking, index evaluations) and answers the questions
both front ends ask: a feature's statistics, its top-activating slices, its activation
histogram and quantile slices, label enrichment, a slice's fingerprint. Every part that is
missing is ``None`` (or empty) rather than an error, so that a page can say "not computed".
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

import numpy as np
import pandas as pd
import scipy.sparse as sp

from medsae.artifacts import MissingArtifact, check_rows, load_json, read_artifact, read_optional
from medsae.data.query_image import QueryFormat, QueryIntensity
from medsae.data.table import (
    IMAGES_FILE,
    SLICES_FILE,
    SPLIT_FILE,
    open_images,
    read_anatomy,
    read_slices,
    read_split,
)
from medsae.encode.io import IMPORT_STAGE
from medsae.errors import ArtifactError
from medsae.evaluate.io import SUMMARY, read_ranking, resolve_run
from medsae.interpret.io import FEATURES, SCORES
from medsae.jsonsafe import json_safe
from medsae.retrieval.io import FINGERPRINT_EVAL, TEXT_RETRIEVAL
from medsae.sae.codes_io import (
    check_codes,
    latent_stats,
    load_codes,
    load_codes_meta,
    load_latent_stats,
)
from medsae.workspace import Workspace, read_manifest

METADATA_LABELS = (
    "modality",
    "plane",
    "sex",
    "age_group",
    "institute",
    "manufacturer",
    "study_type",
    "pathology",
)
COUNTED = ("modality", "plane", "split")
"""The columns whose value counts the browser's first page shows (:meth:`WorkspaceView.counts`)."""

T = TypeVar("T")
_LOCKS_GUARD = threading.Lock()


class once(Generic[T]):  # lower case: a decorator, like functools.cached_property
    """A property computed once per instance, under a per-instance, per-property lock.

    Like :func:`functools.cached_property`, but two threads asking at once (the browser's
    background warm-up and a request) compute it once on every Python version (the
    standard one locks only up to 3.11).
    """

    def __init__(self, func: Callable[[Any], T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> once[T]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> T | once[T]:
        if obj is None:
            return self
        cache = obj.__dict__
        if self.name in cache:
            return cache[self.name]  # type: ignore[no-any-return]
        with _LOCKS_GUARD:
            lock = cache.setdefault("_once_locks", {}).setdefault(self.name, threading.RLock())
        with lock:
            if self.name not in cache:
                cache[self.name] = self.func(obj)
            return cache[self.name]  # type: ignore[no-any-return]


def read_json(path: Path) -> Any:
    """A JSON file's content, None when it is missing (not computed); a damaged file raises
    :class:`medsae.artifacts.DamagedArtifact` naming it."""
    return read_optional(path, load_json)


def read_parquet(path: Path) -> pd.DataFrame | None:
    """A Parquet table, None when it is missing; a damaged file raises (as :func:`read_json`)."""
    return read_optional(path, pd.read_parquet)


def image_to_png(img: np.ndarray, size: int | None = None) -> bytes:
    """PNG bytes of a uint8 image ``(S, S)`` or ``(S, S, 3)``, optionally resized to ``size``."""
    from PIL import Image

    arr = np.ascontiguousarray(img, dtype=np.uint8)
    pil = Image.fromarray(arr, mode="RGB" if arr.ndim == 3 else "L")
    if size is not None and size != pil.width:
        pil = pil.resize((size, size), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=False, compress_level=3)
    return buf.getvalue()


class WorkspaceView:
    """Lazy, read-only access to a workspace for one (encoder, SAE run).

    Parameters
    ----------
    root:
        The workspace folder.
    encoder, run:
        The SAE to show; by default :func:`medsae.evaluate.io.resolve_run` (the
        ranking's best run, else the only run with codes). A workspace without codes opens
        with ``encoder`` and ``run`` None.
    """

    def __init__(
        self,
        root: str | Path,
        encoder: str | None = None,
        run: str | None = None,
        device: str = "auto",
    ) -> None:
        self.ws = Workspace(root)
        self.device = device  # of the encoders it rebuilds (query images, maps)
        if not self.ws.root.is_dir():
            raise ArtifactError(f"{self.ws.root}: workspace folder not found")
        self._slices_footer = _parquet_footer(self.ws.slices / SLICES_FILE)
        self.encoder, self.run = self._choose_run(encoder, run)
        if self.encoder is not None and self.run is not None:
            check_codes(self.ws.codes(self.encoder, self.run))  # damaged: said now, by name

    # ------------------------------------------------------------------ slice table
    # The slice table and the id lookup open on first use (the browser listens first and
    # opens them in the background); what its first page shows reads a few columns only.
    @once
    def table(self) -> pd.DataFrame:
        """The slice table, with each slice's ``split`` from the split artifact."""
        table = read_slices(self.ws.slices).reset_index(drop=True)
        mapping = self._split_of_subject
        if mapping is not None:
            table["split"] = table["subject_key"].map(mapping)
        return table

    @once
    def row_of(self) -> dict[str, int]:
        """Slice id -> row of the slice table."""
        ids = self.table["slice_id"].astype(str).tolist()
        return dict(zip(ids, range(len(ids)), strict=True))

    @once
    def _split_of_subject(self) -> dict[str, str] | None:
        if not (self.ws.split / SPLIT_FILE).is_file():
            return None
        split = read_split(self.ws.split)
        return dict(zip(split["subject_key"], split["split"], strict=False))

    @property
    def n_slices(self) -> int:
        """Rows of the slice table (from the Parquet footer while the table is not open)."""
        if "table" in self.__dict__:
            return len(self.table)
        return int(self._slices_footer.num_rows)

    @once
    def counts(self) -> dict[str, dict[str, int]]:
        """Slices per value of ``modality``, ``plane`` and ``split`` (nulls not counted);
        read from those columns alone while the table is not open."""
        if "table" in self.__dict__:
            cols = self.table
        else:
            names = set(self._slices_footer.schema.to_arrow_schema().names)
            wanted = [c for c in ("modality", "plane", "subject_key", "split") if c in names]
            cols = pd.read_parquet(self.ws.slices / SLICES_FILE, columns=wanted)
            mapping = self._split_of_subject
            if mapping is not None and "subject_key" in cols.columns:
                cols["split"] = cols["subject_key"].map(mapping)
        return {
            col: {str(k): int(v) for k, v in cols[col].value_counts().items()}
            for col in COUNTED
            if col in cols.columns
        }

    # ------------------------------------------------------------------ selection
    @once
    def ranking(self) -> dict[str, Any] | None:
        return read_ranking(self.ws.ranking) or None

    def _choose_run(self, encoder: str | None, run: str | None) -> tuple[str | None, str | None]:
        available = self.ws.runs_with_codes(encoder)
        if encoder and run and (encoder, run) not in available:
            raise ArtifactError(
                f"{self.ws.codes(encoder, run)}: no codes for encoder {encoder!r}, run {run!r}"
            )
        if not available:
            return None, None
        chosen = resolve_run(self.ws, encoder, run)
        if chosen not in available:
            raise ArtifactError(
                f"{self.ws.codes(*chosen)}: the ranking's best run has no codes; "
                "run `medsae codes` or pass --encoder and --run"
            )
        return chosen

    # ------------------------------------------------------------------ artifacts
    @once
    def images(self) -> np.ndarray | None:
        """The slice images (memory-mapped), None when not computed; damaged (unreadable,
        truncated, another row count than the slice table) raises naming the file."""
        try:
            images = open_images(self.ws.slices)
        except MissingArtifact:
            return None
        check_rows(self.ws.slices / IMAGES_FILE, len(images), self.n_slices, "the slice table")
        return images

    @once
    def imported(self) -> bool:
        """Whether the run's embeddings were imported (``medsae import-embeddings``): no image
        encoder exists to embed a query image."""
        if self.encoder is None:
            return False
        manifest = read_manifest(self.ws.embeddings(self.encoder)) or {}
        return manifest.get("stage") == IMPORT_STAGE

    @once
    def query_format(self) -> QueryFormat:
        """How a query image is prepared to look like this workspace's slices."""
        if self.images is not None:
            return QueryFormat.of_slices(self.ws.slices, self.images)
        manifest = read_manifest(self.ws.slices) or {}
        return QueryFormat(224, 1, QueryIntensity.from_prepare_config(manifest.get("config")))

    @once
    def anatomy(self) -> Any:
        try:
            return read_anatomy(self.ws.slices)
        except ArtifactError:
            return None

    @once
    def codes(self) -> sp.csr_matrix | None:
        if self.encoder is None or self.run is None:
            return None
        return load_codes(self.ws.codes(self.encoder, self.run))

    @once
    def codes_csc(self) -> sp.csc_matrix | None:
        return None if self.codes is None else self.codes.tocsc()

    @once
    def codes_meta(self) -> dict[str, Any]:
        if self.encoder is None or self.run is None:
            return {}
        return load_codes_meta(self.ws.codes(self.encoder, self.run))

    @once
    def levels(self) -> list[int]:
        levels = self.codes_meta.get("levels") or []
        n = self.n_latents
        return sorted(int(v) for v in levels) or ([n] if n else [])

    @once
    def n_latents(self) -> int:
        """Latents of the run (from ``codes.json``, else from the codes)."""
        if self.encoder is None or self.run is None:
            return 0
        n = self.codes_meta.get("n_latents")
        if isinstance(n, int):
            return n
        return 0 if self.codes is None else int(self.codes.shape[1])

    @once
    def latent_stats(self) -> dict[str, np.ndarray] | None:
        """Per-latent ``nnz``, ``sum``, ``max`` over every slice: stored beside the codes,
        else computed from them (:func:`medsae.sae.codes_io.latent_stats`)."""
        if self.encoder is None or self.run is None:
            return None
        stats = load_latent_stats(self.ws.codes(self.encoder, self.run), self.n_latents)
        if stats is None and self.codes is not None:
            stats = latent_stats(self.codes)
        return stats

    @once
    def features_file(self) -> pd.DataFrame | None:
        if self.encoder is None or self.run is None:
            return None
        return read_parquet(self.ws.features(self.encoder, self.run) / FEATURES)

    @once
    def scores(self) -> dict[str, Any] | None:
        if self.encoder is None or self.run is None:
            return None
        return read_json(self.ws.features(self.encoder, self.run) / SCORES)

    @once
    def fingerprint_eval(self) -> dict[str, Any] | None:
        if self.encoder is None or self.run is None:
            return None
        return read_json(self.ws.index(self.encoder, self.run) / FINGERPRINT_EVAL)

    @once
    def text_retrieval(self) -> dict[str, Any] | None:
        if self.encoder is None or self.run is None:
            return None
        return read_json(self.ws.index(self.encoder, self.run) / TEXT_RETRIEVAL)

    def eval_runs(self) -> list[tuple[str, str]]:
        """(encoder, run) pairs with a finished evaluation."""
        base = self.ws.root / "eval"
        if not base.is_dir():
            return []
        return [
            (e.name, r.name)
            for e in sorted(base.iterdir())
            if e.is_dir() and not e.name.startswith(".")
            for r in sorted(e.iterdir())
            if r.is_dir() and not r.name.startswith(".") and read_manifest(r) is not None
        ]

    def eval_summary(self, encoder: str, run: str) -> dict[str, Any] | None:
        data = read_json(self.ws.eval(encoder, run) / SUMMARY)
        return data if isinstance(data, dict) else None

    # ------------------------------------------------------------------ features
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
        if "concept" in df.columns:  # a missing concept is null (some writers store "nan")
            concept = df["concept"].astype(object)
            df["concept"] = concept.where(
                ~concept.isin(["nan", "None", ""]) & concept.notna(), None
            )
        return df

    def feature_row(self, latent: int) -> dict[str, Any]:
        """One latent's row, column by column (a row-wise view would upcast mixed types)."""
        table = self.feature_table
        i = int(latent)
        return json_safe({col: table[col].iloc[i] for col in table.columns})

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

        For a label L, ``rate_active = P(L | active)``, ``rate_all = P(L)`` over slices where
        L is defined (anatomy ``-1`` and null metadata excluded), and ``lift = rate_active /
        rate_all``. Returned sorted by lift; labels carried by fewer than ``min_count`` active
        slices, or by less than ``min_support`` of them, are left out.
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
        for col, (codes, uniques) in self._label_codes.items():
            c = codes[rows_a]
            c = c[c >= 0]
            act_counts = np.bincount(c, minlength=len(uniques))
            n_all, n_def = self._label_totals[col]
            for u in np.flatnonzero(act_counts >= min_count):
                out.append(_lift(f"{col}={uniques[u]}", act_counts[u], len(c), n_all[u], n_def))
        anatomy = self.anatomy
        if anatomy is not None:
            presence = np.asarray(anatomy.presence[rows_a])
            act_has = (presence == 1).sum(axis=0)
            act_def = (presence != -1).sum(axis=0)
            has_all, def_all = self._label_totals["structure"]
            for j in np.flatnonzero(act_has >= min_count):
                out.append(
                    _lift(
                        f"structure={anatomy.structures[j]}",
                        act_has[j],
                        act_def[j],
                        has_all[j],
                        def_all[j],
                    )
                )
        out.sort(key=lambda d: (-d["lift"], -d["count_active"]))
        return out[:top]

    @once
    def _subjects(self) -> np.ndarray:
        return self.table["subject_key"].to_numpy()

    @once
    def _label_codes(self) -> dict[str, tuple[np.ndarray, list[str]]]:
        """Metadata columns factorised once: (codes with -1 for null, unique values)."""
        out = {}
        for col in METADATA_LABELS:
            if col in self.table.columns:
                codes, uniques = pd.factorize(self.table[col], use_na_sentinel=True)
                out[col] = (np.asarray(codes), [str(u) for u in uniques])
        return out

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

    # ------------------------------------------------------------------ slices
    def slice_meta(self, row: int) -> dict[str, Any]:
        return json_safe(self.table.iloc[int(row)].to_dict())

    def slice_png(self, row: int, size: int | None = None) -> bytes:
        return _png_cached(self, int(row), size)


@lru_cache(maxsize=4096)
def _png_cached(view: WorkspaceView, row: int, size: int | None) -> bytes:
    if view.images is None:
        raise ArtifactError(f"{view.ws.slices / IMAGES_FILE}: not found")
    return image_to_png(np.asarray(view.images[row]), size)


def _parquet_footer(path: Path) -> Any:
    """The footer of a Parquet file (rows, schema; milliseconds at any size), or an
    :class:`ArtifactError` naming a missing or damaged file."""
    import pyarrow.parquet as pq

    return read_artifact(path, lambda p: pq.ParquetFile(p).metadata, "slice table not found")


def _lift(label: str, c_act: Any, n_act: Any, c_all: Any, n_all: Any) -> dict[str, Any]:
    """Lift of a label carried by ``c_act`` of the ``n_act`` active slices where it is
    defined and by ``c_all`` of the ``n_all`` slices where it is defined."""
    rate_active = int(c_act) / max(int(n_act), 1)
    rate_all = int(c_all) / max(int(n_all), 1)
    return {
        "label": label,
        "count_active": int(c_act),
        "rate_active": rate_active,
        "rate_all": rate_all,
        "lift": rate_active / rate_all if rate_all > 0 else 0.0,
    }
