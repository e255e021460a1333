"""A read-only view of a finished workspace, shared by the HTML report and the browser.

:class:`WorkspaceView` opens what exists (slice table, images, anatomy, split, sparse codes,
feature table, evaluation summaries, ranking, index evaluations) and answers the questions
both front ends ask: a feature's statistics, its top-activating slices, its activation
histogram and quantile slices, label enrichment, a slice's fingerprint
(:class:`medsae.frontend.features.FeatureQueries`). Every part that is missing is ``None``
(or empty) rather than an error, so that a page can say "not computed".
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from medsae.artifacts import MissingArtifact, check_rows
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
from medsae.evaluate.io import ORGAN_LATENTS, SUMMARY, read_ranking, resolve_run
from medsae.frontend.features import FeatureQueries
from medsae.frontend.parts import image_to_png, once, parquet_footer, read_json, read_parquet
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
from medsae.sae.runs import run_exists, runs_with_codes
from medsae.workspace import Workspace, read_manifest

COUNTED = ("modality", "plane", "split")
"""The columns whose value counts the browser's first page shows (:meth:`WorkspaceView.counts`)."""


class WorkspaceView(FeatureQueries):
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
        self._slices_footer = parquet_footer(self.ws.slices / SLICES_FILE)
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
        available = runs_with_codes(self.ws, encoder)
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
    def organ_latents(self) -> pd.DataFrame | None:
        """A token SAE's organ rediscovery per latent (best structure, AP, pointing), or None."""
        if self.encoder is None or self.run is None:
            return None
        return read_parquet(self.ws.eval(self.encoder, self.run) / ORGAN_LATENTS)

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
        """(encoder, run) pairs with a finished evaluation, of runs that still exist."""
        base = self.ws.root / "eval"
        if not base.is_dir():
            return []
        return [
            (e.name, r.name)
            for e in sorted(base.iterdir())
            if e.is_dir() and not e.name.startswith(".")
            for r in sorted(e.iterdir())
            if r.is_dir()
            and not r.name.startswith(".")
            and read_manifest(r) is not None
            and run_exists(self.ws, e.name, r.name)
        ]

    def eval_summary(self, encoder: str, run: str) -> dict[str, Any] | None:
        data = read_json(self.ws.eval(encoder, run) / SUMMARY)
        return data if isinstance(data, dict) else None

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
