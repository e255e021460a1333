"""``medsae import-embeddings FILE --workspace WS``: write the artifacts of imported embeddings.

What is read and checked, and the named errors: :mod:`medsae.encode.imported`. Written:

* ``WS/slices/``: the slice table (``slice_id`` = the id, ``subject_key`` = the subject, or
  the id when there is none; the documented metadata columns the table provides, the others
  null), empty anatomy arrays (no structures), ``labels.json`` naming the label columns, and
  ``images.npy`` when images are given;
* ``WS/split/``: the metadata's ``split`` column, or a seeded split by subject;
* ``WS/embeddings/<encoder>/``: the embedding store, in shards.

Every manifest names the stage ``import``. When ``WS/slices`` already holds slices made by
``medsae prepare``, only the embedding store is written, its rows put in the slice table's
order (every slice id must be present once).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsae.data.io import IMAGES_FILE, LABELS_FILE, SLICES_FILE, SPLIT_FILE
from medsae.data.table import write_anatomy
from medsae.encode.imported import (
    DimensionMismatchError,
    IdRowMismatchError,
    ImportConfig,
    align_metadata,
    check_finite_rows,
    check_ids,
    label_columns,
    read_images,
    read_table,
    read_vectors,
    slice_table,
    subject_split,
)
from medsae.encode.io import IMPORT_STAGE, STORE_FILE
from medsae.encode.store import Shard, save_shard, shard_name, write_store_meta
from medsae.errors import InputError
from medsae.progress import console
from medsae.workspace import (
    StageOutcome,
    StageResult,
    Workspace,
    artifact_key,
    fingerprint_files,
    read_manifest,
    run_stage,
)


def _ids_key(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def _existing_dim(folder: Path) -> int | None:
    try:
        return int(json.loads((folder / STORE_FILE).read_text())["dim"])
    except (OSError, ValueError, KeyError):
        return None


def write_embedding_store(
    ws: Workspace,
    arr: np.ndarray,
    order: np.ndarray | None,
    cfg: ImportConfig,
    source: Path,
    force: bool,
) -> StageOutcome:
    """The embedding store of ``arr`` (rows taken in ``order`` when given), in shards."""
    folder = ws.embeddings(cfg.encoder)
    old = _existing_dim(folder)
    if old is not None and old != arr.shape[1] and not force:
        raise DimensionMismatchError(
            source,
            f"{arr.shape[1]}-d embeddings, but {folder} already holds {old}-d embeddings; import "
            "under another --encoder name, or pass --force to replace them",
        )
    inputs = {"file": fingerprint_files([source]), "slices": artifact_key(ws.slices)}

    def build(tmp: Path) -> StageResult:
        shards = []
        n = len(arr)
        for number, lo in enumerate(range(0, n, cfg.shard_rows)):
            hi = min(lo + cfg.shard_rows, n)
            rows = np.arange(lo, hi) if order is None else order[lo:hi]
            block = np.asarray(arr[rows] if order is not None else arr[lo:hi], dtype=np.float32)
            name = shard_name(number)
            save_shard(tmp, name, block)
            shards.append(Shard(name, lo, hi))
        write_store_meta(tmp, cfg.encoder, shards, arr.shape[1], "float32", {"source": str(source)})
        return StageResult(counts={"rows": n, "dim": int(arr.shape[1])})

    store_cfg = {"encoder": cfg.encoder, "shard_rows": cfg.shard_rows}
    return run_stage(folder, IMPORT_STAGE, store_cfg, inputs, build, force=force)


def import_embeddings(
    workspace: str | Path | Workspace,
    file: str | Path,
    metadata: str | Path | None = None,
    images: str | Path | None = None,
    config: ImportConfig | None = None,
    force: bool = False,
) -> list[StageOutcome]:
    """Write the slices, split and embedding store of ``file`` (see the module docstring)."""
    cfg = config or ImportConfig()
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    file = Path(file)
    file_ids, arr = read_vectors(file, cfg)
    meta_path = Path(metadata) if metadata is not None else None
    meta = read_table(meta_path) if meta_path is not None else None
    if file_ids is None and meta is not None and cfg.id_column in meta.columns:
        file_ids = meta[cfg.id_column].to_numpy()
        where: str | Path = f"{meta_path} (ids of the rows of {file})"
    else:
        where = file
    if file_ids is None:
        file_ids = np.arange(len(arr)).astype(str)
    if len(file_ids) != len(arr):
        raise IdRowMismatchError(where, f"{len(file_ids)} ids for {len(arr)} embedding rows")
    ids = check_ids(file_ids, where)
    check_finite_rows(arr, ids, file, cfg.shard_rows)
    prepared = read_manifest(ws.slices)
    if prepared is not None and prepared.get("stage") != IMPORT_STAGE:
        return [_into_prepared(ws, arr, ids, cfg, file, meta_path, images, force)]
    meta_rows = align_metadata(meta, ids, cfg, meta_path or file)
    table = slice_table(meta_rows, ids, cfg)
    labels = label_columns(meta_rows, cfg, meta_path or file)
    split_df = subject_split(table, meta_rows, cfg, meta_path or file)
    image_arr = read_images(Path(images), len(ids)) if images is not None else None
    sources = [p for p in (meta_path, Path(images) if images else None) if p is not None]
    slice_inputs = {"ids": _ids_key(ids), "files": fingerprint_files(sources)}
    slice_cfg = cfg.model_dump(mode="json", exclude={"encoder", "shard_rows"})

    def build_slices(tmp: Path) -> StageResult:
        table.to_parquet(tmp / SLICES_FILE, index=False)
        write_anatomy(tmp, np.zeros((len(ids), 0)), np.zeros((len(ids), 0)), [])
        (tmp / LABELS_FILE).write_text(json.dumps(labels))
        if image_arr is not None:
            np.save(tmp / IMAGES_FILE, image_arr)
        return StageResult(counts={"slices": len(ids), "labels": len(labels)})

    outcomes = [
        run_stage(ws.slices, IMPORT_STAGE, slice_cfg, slice_inputs, build_slices, force=force)
    ]

    def build_split(tmp: Path) -> StageResult:
        split_df.to_parquet(tmp / SPLIT_FILE, index=False)
        return StageResult(counts=split_df["split"].value_counts().to_dict())

    outcomes.append(
        run_stage(
            ws.split,
            IMPORT_STAGE,
            slice_cfg,
            {"slices": artifact_key(ws.slices)},
            build_split,
            force=force,
        )
    )
    if not (split_df["split"] == "train").any():
        console.print("import: no subject is in the train split; train needs one", style="yellow")
    outcomes.append(write_embedding_store(ws, arr, None, cfg, file, force))
    return outcomes


def _into_prepared(
    ws: Workspace,
    arr: np.ndarray,
    ids: list[str],
    cfg: ImportConfig,
    file: Path,
    meta_path: Path | None,
    images: Any,
    force: bool,
) -> StageOutcome:
    """Embeddings of the slices ``medsae prepare`` wrote: rows put in the slice table's order."""
    if meta_path is not None or images is not None:
        raise InputError(
            ws.slices,
            "this workspace's slices come from `medsae prepare`: their metadata and images "
            "stay; import the embeddings without --metadata and --images",
        )
    table_ids = pd.read_parquet(ws.slices / SLICES_FILE, columns=["slice_id"])["slice_id"]
    position = pd.Series(np.arange(len(ids)), index=pd.Index(ids))
    missing = table_ids[~table_ids.isin(position.index)]
    if len(missing) or len(ids) != len(table_ids):
        raise IdRowMismatchError(
            file,
            f"{len(ids)} ids for the {len(table_ids)} slices of {ws.slices / SLICES_FILE}"
            + (f"; missing e.g. {missing.head(5).tolist()}" if len(missing) else ""),
        )
    order = position.loc[table_ids.to_numpy()].to_numpy()
    return write_embedding_store(ws, arr, order, cfg, file, force)
