"""Bring your own embeddings: reading and checking the files of ``medsae import-embeddings``.

Reads an ``(N, d)`` float array (``.npy``, memory-mapped) or a Parquet table with an id
column and the vectors (one list column, or one numeric column per dimension), plus an
optional metadata table (Parquet or CSV, one row per id: labels, ``split``, ``subject``) and
optional slice images (uint8 ``.npy``, ``(N, S, S)`` or ``(N, S, S, 3)``, in the rows' order).
:mod:`medsae.encode.import_stage` writes what they become.

Bad input is a named error: :class:`DuplicateIdsError`, :class:`IdRowMismatchError`,
:class:`NonFiniteRowsError`, :class:`DimensionMismatchError` (all :class:`InputError`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from medsae.config import StageConfig
from medsae.data.table import SLICE_COLUMNS, SPLITS, age_group
from medsae.errors import InputError
from medsae.progress import console


class DuplicateIdsError(InputError):
    """The same id names more than one row."""


class IdRowMismatchError(InputError):
    """The ids (or images, or metadata rows) do not match the embedding rows one to one."""


class NonFiniteRowsError(InputError):
    """Embedding rows hold NaN or Inf."""


class DimensionMismatchError(InputError):
    """The embeddings' dimension differs from the store already in the workspace."""


class ImportConfig(StageConfig):
    """``medsae import-embeddings``: how a file of embeddings and its metadata become a
    workspace's slices, split and embedding store."""

    encoder: str = Field(
        default="imported", description="Store name under WS/embeddings/ (the 'encoder')."
    )
    id_column: str = Field(
        default="id", description="Column of ids in the Parquet embeddings and the metadata."
    )
    vector_column: str | None = Field(
        default=None,
        description="Parquet embeddings: the column of vectors (default: the one list column, "
        "else every numeric column but the id).",
    )
    subject_column: str = Field(
        default="subject",
        description="Metadata column grouping rows (a split keeps a subject's rows together); "
        "absent: every row is its own subject.",
    )
    split_column: str = Field(
        default="split", description="Metadata column of train / val / test (absent: drawn)."
    )
    label_columns: list[str] | None = Field(
        default=None,
        description="Metadata columns that are labels (probe tasks, feature descriptions); "
        "default: every other metadata column with at most max_label_classes values.",
    )
    max_label_classes: int = Field(
        default=20, gt=1, description="Default label columns have at most this many values."
    )
    val_fraction: float = Field(
        default=0.15, ge=0, lt=1, description="Drawn split: share of subjects in val."
    )
    test_fraction: float = Field(
        default=0.15, ge=0, lt=1, description="Drawn split: share of subjects in test."
    )
    seed: int = Field(default=0, description="Seed of the drawn split.")
    shard_rows: int = Field(default=65536, gt=0, description="Rows per embedding shard.")


# ---------------------------------------------------------------------------- reading
def read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(path, "file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in (".csv", ".tsv"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    except (OSError, ValueError) as e:
        raise InputError(path, f"unreadable table ({e})") from e
    raise InputError(path, "unknown table format; use .parquet or .csv")


def read_vectors(path: Path, cfg: ImportConfig) -> tuple[np.ndarray | None, np.ndarray]:
    """``(ids or None, (N, d) array)`` of an embeddings file (a ``.npy`` stays memory-mapped)."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        if not path.is_file():
            raise InputError(path, "file not found")
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise InputError(path, f"unreadable .npy ({e})") from e
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number) or arr.shape[1] == 0:
            raise InputError(path, f"expected an (N, d) numeric array, got {arr.shape} {arr.dtype}")
        return None, arr
    table = read_table(path)
    if cfg.id_column not in table.columns:
        raise InputError(
            path, f"no id column {cfg.id_column!r}; columns: {list(table.columns)[:12]}"
        )
    ids = table[cfg.id_column].to_numpy()
    rest = table.drop(columns=[cfg.id_column])
    column = cfg.vector_column
    if column is None:
        lists = [c for c in rest.columns if rest[c].dtype == object]
        column = lists[0] if len(lists) == 1 else None
    if column is not None:
        if column not in rest.columns:
            raise InputError(path, f"no vector column {column!r}")
        try:
            arr = np.stack([np.asarray(v, dtype=np.float32) for v in rest[column]])
        except ValueError as e:
            raise InputError(path, f"column {column!r}: vectors of different lengths ({e})") from e
    else:
        numeric = rest.select_dtypes("number")
        if numeric.shape[1] == 0 or numeric.shape[1] != rest.shape[1]:
            raise InputError(
                path,
                "expected one list column of vectors or only numeric columns besides "
                f"{cfg.id_column!r}; set vector_column",
            )
        arr = numeric.to_numpy(dtype=np.float32)
    if arr.ndim != 2:
        raise InputError(path, f"expected (N, d) vectors, got shape {arr.shape}")
    return ids, arr


def check_ids(ids: np.ndarray, where: str | Path) -> list[str]:
    """Ids as strings; :class:`DuplicateIdsError` naming repeated ones, InputError for nulls."""
    series = pd.Series(ids)
    if series.isna().any():
        raise InputError(where, f"{int(series.isna().sum())} missing (null) id(s)")
    text = series.astype(str)
    dup = text[text.duplicated()].unique()
    if len(dup):
        raise DuplicateIdsError(
            where,
            f"{len(dup)} id(s) occur more than once, e.g. {list(dup[:5])}; ids must be unique",
        )
    return text.tolist()


def check_finite_rows(arr: np.ndarray, ids: list[str], where: str | Path, chunk: int) -> None:
    """:class:`NonFiniteRowsError` naming the ids of rows holding NaN or Inf (read in chunks)."""
    bad: list[int] = []
    for lo in range(0, len(arr), chunk):
        block = np.asarray(arr[lo : lo + chunk])
        bad += (lo + np.flatnonzero(~np.isfinite(block).all(axis=1))).tolist()
    if bad:
        raise NonFiniteRowsError(
            where,
            f"{len(bad)} row(s) contain NaN or Inf, e.g. ids {[ids[i] for i in bad[:5]]}; "
            "drop or fix them before importing",
        )


# --------------------------------------------------------------------------- metadata
def align_metadata(
    meta: pd.DataFrame | None, ids: list[str], cfg: ImportConfig, where: str | Path
) -> pd.DataFrame:
    """One metadata row per id, in the ids' order (rows without metadata are null)."""
    if meta is None:
        return pd.DataFrame(index=range(len(ids)))
    meta = meta.copy()
    if cfg.id_column in meta.columns:
        keys = check_ids(meta[cfg.id_column].to_numpy(), where)
        meta.index = pd.Index(keys)
        unknown = sorted(set(keys) - set(ids))
        if unknown:
            raise IdRowMismatchError(
                where,
                f"{len(unknown)} metadata id(s) are not among the embeddings, e.g. {unknown[:5]}",
            )
        return meta.drop(columns=[cfg.id_column]).reindex(ids).reset_index(drop=True)
    if len(meta) != len(ids):
        raise IdRowMismatchError(
            where,
            f"{len(meta)} metadata rows for {len(ids)} embedding rows and no "
            f"{cfg.id_column!r} column to match them by",
        )
    return meta.reset_index(drop=True)


def label_columns(meta: pd.DataFrame, cfg: ImportConfig, where: str | Path) -> list[str]:
    """The metadata columns that are labels (beyond the slice table's own metadata columns)."""
    reserved = {cfg.split_column, cfg.subject_column, *SLICE_COLUMNS}
    if cfg.label_columns is not None:
        missing = [c for c in cfg.label_columns if c not in meta.columns]
        if missing:
            raise InputError(where, f"label column(s) {missing} not in the metadata")
        return [c for c in cfg.label_columns if c not in reserved]
    out = []
    for c in meta.columns:
        if c in reserved:
            continue
        n_values = meta[c].dropna().nunique()
        if 2 <= n_values <= cfg.max_label_classes:
            out.append(str(c))
        else:
            console.print(
                f"import: column {c!r} has {n_values} values; kept in the slice table "
                "but not used as a label (name it in label_columns to use it)",
                style="yellow",
            )
    return out


def slice_table(meta: pd.DataFrame, ids: list[str], cfg: ImportConfig) -> pd.DataFrame:
    """The slice table of imported rows: ids, subjects, documented columns (null when absent)."""
    table = pd.DataFrame({"slice_id": ids})
    subject = (
        meta[cfg.subject_column].astype(str).where(meta[cfg.subject_column].notna())
        if cfg.subject_column in meta.columns
        else pd.Series([None] * len(ids))
    )
    table["subject"] = subject.fillna(pd.Series(ids)).to_numpy()
    table["subject_key"] = table["subject"]
    table["dataset"] = "imported"
    table["source_kind"] = "imported"
    for column in SLICE_COLUMNS:
        if column in table.columns:
            continue
        table[column] = meta[column].to_numpy() if column in meta.columns else None
    if "age" in meta.columns and "age_group" not in meta.columns:
        table["age_group"] = [age_group(a) for a in pd.to_numeric(meta["age"], errors="coerce")]
    for column in meta.columns:
        if column not in table.columns and column != cfg.split_column:
            table[column] = meta[column].to_numpy()
    return table


def subject_split(
    table: pd.DataFrame, meta: pd.DataFrame, cfg: ImportConfig, where: str | Path
) -> pd.DataFrame:
    """``subject_key -> split`` from the metadata's split column, or drawn by subject."""
    subjects = table["subject_key"].to_numpy()
    if cfg.split_column in meta.columns:
        split = meta[cfg.split_column]
        if split.isna().any():
            raise InputError(
                where, f"{int(split.isna().sum())} row(s) have no {cfg.split_column!r}"
            )
        split = split.astype(str)
        bad = sorted(set(split) - set(SPLITS))
        if bad:
            raise InputError(where, f"split values {bad[:5]} are not train / val / test")
        pairs = pd.DataFrame({"subject_key": subjects, "split": split.to_numpy()})
        per = pairs.drop_duplicates()
        mixed = per["subject_key"][per["subject_key"].duplicated()].unique()
        if len(mixed):
            raise InputError(
                where, f"subject(s) {list(mixed[:5])} have rows in more than one split"
            )
        return per.reset_index(drop=True)
    unique = pd.unique(subjects)
    order = np.random.default_rng(cfg.seed).permutation(len(unique))
    n_val, n_test = round(cfg.val_fraction * len(unique)), round(cfg.test_fraction * len(unique))
    split = np.full(len(unique), "train", dtype=object)
    split[order[:n_val]] = "val"
    split[order[n_val : n_val + n_test]] = "test"
    return pd.DataFrame({"subject_key": unique, "split": split})


def read_images(path: Path, n: int) -> np.ndarray:
    if not path.is_file():
        raise InputError(path, "file not found")
    images = np.load(path, mmap_mode="r")
    ok_shape = images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)
    if images.dtype != np.uint8 or not ok_shape:
        raise InputError(
            path,
            f"expected uint8 (N, S, S) or (N, S, S, 3) images, got {images.shape} {images.dtype}",
        )
    if len(images) != n:
        raise IdRowMismatchError(path, f"{len(images)} images for {n} embedding rows")
    return images
