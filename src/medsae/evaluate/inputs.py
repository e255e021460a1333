"""Loading and cross-checking the artifacts one evaluation reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from medsae.data.table import (
    PRESENCE_FILE,
    SLICES_FILE,
    read_anatomy,
    read_label_columns,
    slices_with_split,
)
from medsae.encode.store import STORE_FILE, EmbeddingStore
from medsae.errors import ArtifactError
from medsae.sae.codes_io import CODES_FILE, CODES_META, load_codes, load_codes_meta
from medsae.sae.io import CFG
from medsae.workspace import Workspace, artifact_key, read_manifest, require_artifact


@dataclass
class EvalInputs:
    """Everything an evaluation reads, rows aligned with the slice table."""

    ws: Workspace
    encoder: str
    run: str
    table: pd.DataFrame  # with a "split" column
    presence: np.ndarray  # int8 (N, S)
    structures: list[str]
    store: EmbeddingStore
    codes: sp.csr_matrix
    codes_meta: dict[str, Any]
    levels: list[int]
    sae_folder: Path | None  # None when the run has no checkpoint
    label_columns: list[str] = field(default_factory=list)  # imported slices' user labels

    def rows_of(self, *splits: str) -> np.ndarray:
        """Table rows of the given splits (sorted)."""
        return np.flatnonzero(self.table["split"].isin(list(splits)).to_numpy())


def sae_checkpoint(ws: Workspace, encoder: str, run: str) -> Path | None:
    """The run's checkpoint folder when the ``saes`` artifact holds it, else None."""
    folder = ws.sae(encoder, run)
    if read_manifest(ws.saes(encoder)) is None or not (folder / CFG).is_file():
        return None
    return folder


def input_keys(ws: Workspace, encoder: str, run: str) -> dict[str, str]:
    """Keys of the upstream artifacts (``saes`` only when the run has a checkpoint)."""
    require_artifact(ws.slices, "slice table", "run `medsae prepare`")
    require_artifact(ws.split, "split", "run `medsae split`")
    require_artifact(
        ws.embeddings(encoder), f"embeddings of encoder '{encoder}'", "run `medsae encode`"
    )
    require_artifact(
        ws.codes(encoder, run), f"codes of run '{run}' ({encoder})", "run `medsae codes`"
    )
    keys = {
        "slices": artifact_key(ws.slices),
        "split": artifact_key(ws.split),
        "embeddings": artifact_key(ws.embeddings(encoder)),
        "codes": artifact_key(ws.codes(encoder, run)),
    }
    if sae_checkpoint(ws, encoder, run) is not None:
        keys["saes"] = artifact_key(ws.saes(encoder))
    return keys


def check_alignment(
    n_slices: int, slices_file: Path, codes: sp.spmatrix, codes_file: Path, store: EmbeddingStore
) -> None:
    """Codes, embeddings and the slice table must have one row per slice, in the same order."""
    if codes.shape[0] != n_slices:
        raise ArtifactError(
            f"{codes_file} has {codes.shape[0]} rows but {slices_file} has {n_slices} slices; "
            "the codes are stale: rerun `medsae codes`"
        )
    if store.n_rows != n_slices:
        raise ArtifactError(
            f"{store.folder / STORE_FILE} holds {store.n_rows} embedding rows but {slices_file} has "
            f"{n_slices} slices: the embeddings are not of this slice table; rerun `medsae encode` "
            "(with --force if it reports up to date)"
        )


def check_encoder(store: EmbeddingStore, what: str, encoder: Any) -> None:
    """An SAE or its codes must come from the embeddings of this store's encoder."""
    if encoder is not None and str(encoder) != store.encoder:
        raise ArtifactError(
            f"{what} was made from encoder '{encoder}' but {store.folder} holds embeddings of "
            f"'{store.encoder}'; evaluate it against its own encoder's embeddings"
        )


def load_inputs(ws: Workspace, encoder: str, run: str) -> EvalInputs:
    """Read and cross-check the slice table, split, anatomy, embeddings, codes (and SAE config)."""
    table = slices_with_split(ws.slices, ws.split).reset_index(drop=True)
    anatomy = read_anatomy(ws.slices, mmap=False)
    if anatomy.presence.shape[0] != len(table):
        raise ArtifactError(
            f"{ws.slices / PRESENCE_FILE} has {anatomy.presence.shape[0]} rows but "
            f"{ws.slices / SLICES_FILE} has {len(table)} slices; rerun `medsae prepare`"
        )
    store = EmbeddingStore(ws.embeddings(encoder))
    codes_dir = ws.codes(encoder, run)
    codes = load_codes(codes_dir)
    meta = load_codes_meta(codes_dir)
    check_alignment(len(table), ws.slices / SLICES_FILE, codes, codes_dir / CODES_FILE, store)
    check_encoder(store, f"codes {codes_dir / CODES_META}", meta.get("encoder"))
    levels = sorted(int(v) for v in (meta.get("levels") or [codes.shape[1]]))
    sae_folder = sae_checkpoint(ws, encoder, run)
    if sae_folder is not None:
        import json

        cfg = json.loads((sae_folder / CFG).read_text())
        check_encoder(store, f"SAE {sae_folder}", cfg.get("encoder"))
        if int(cfg.get("n_latents", codes.shape[1])) != codes.shape[1]:
            raise ArtifactError(
                f"SAE {sae_folder} has {cfg.get('n_latents')} latents but {codes_dir / CODES_FILE} has "
                f"{codes.shape[1]}; rerun `medsae codes`"
            )
        if int(cfg.get("d_in", store.dim)) != store.dim:
            raise ArtifactError(
                f"SAE {sae_folder} expects {cfg.get('d_in')}-d inputs but {store.folder} holds "
                f"{store.dim}-d embeddings"
            )
    return EvalInputs(
        ws=ws,
        encoder=encoder,
        run=run,
        table=table,
        presence=np.asarray(anatomy.presence),
        structures=list(anatomy.structures),
        store=store,
        codes=codes,
        codes_meta=meta,
        levels=levels,
        sae_folder=sae_folder,
        label_columns=read_label_columns(ws.slices),
    )


def sample_rows(rows: np.ndarray, n_max: int | None, seed: int) -> np.ndarray:
    """A seeded random subset of at most ``n_max`` rows, sorted (all rows when ``n_max`` is None)."""
    rows = np.asarray(rows, dtype=np.int64)
    if n_max is None or len(rows) <= n_max:
        return rows
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(rows, size=n_max, replace=False))


def evaluated_runs(ws: Workspace) -> list[tuple[str, str]]:
    """Every (encoder, run) with finished codes whose run still exists
    (:func:`medsae.sae.runs.runs_with_codes`)."""
    from medsae.sae.runs import runs_with_codes

    return runs_with_codes(ws)
