"""Reading and writing sparse codes: never dense.

``WS/codes/<encoder>/<run>/``
    ``codes.npz``   a SciPy CSR matrix ``(n_slices, n_latents)`` float32 (``scipy.sparse.save_npz``),
                    row ``i`` = slice ``i`` of the slice table, every split included
    ``codes.json``  ``{"encoder", "run", "n_rows", "n_latents", "levels", "mode"}``
    ``latent_stats.npz``  per latent over every row: ``nnz`` (int64), ``sum`` (float64),
                    ``max`` (float32, 0 for a latent that never fires); what a feature list
                    shows, readable without loading the codes
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from medsae.artifacts import describe, load_json_object, read_artifact
from medsae.errors import ArtifactError
from medsae.sae.io import CODES, CODES_META, CODES_STATS

CODES_FILE = CODES


def save_codes(folder: Path, codes: sp.csr_matrix, meta: dict[str, Any]) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csr = sp.csr_matrix(codes, dtype=np.float32)
    csr.sort_indices()
    sp.save_npz(folder / CODES_FILE, csr, compressed=False)
    stats = latent_stats(csr)
    np.savez(folder / CODES_STATS, nnz=stats["nnz"], sum=stats["sum"], max=stats["max"])
    full = {"n_rows": int(csr.shape[0]), "n_latents": int(csr.shape[1]), **meta}
    (folder / CODES_META).write_text(json.dumps(full, indent=2, sort_keys=True, default=str))


def load_codes(folder: Path) -> sp.csr_matrix:
    """The codes of a run as float32 CSR; a missing, truncated or corrupt file is an
    :class:`ArtifactError` naming it (and saying how to rewrite it)."""
    p = _codes_path(folder)
    try:
        codes = sp.load_npz(p)
    except _UNREADABLE as e:
        raise _unreadable(p, e) from e
    return sp.csr_matrix(codes, dtype=np.float32)


def check_codes(folder: Path) -> None:
    """Raise the :func:`load_codes` error when a run's codes file is missing or its archive
    is damaged, reading only the archive's directory (milliseconds at any size: a truncated
    file has lost the directory at its end)."""
    p = _codes_path(folder)
    try:
        with np.load(p) as z:  # an NpzFile reads the archive's directory, not the arrays
            names = set(z.files)
    except _UNREADABLE as e:
        raise _unreadable(p, e) from e
    missing = sorted({"data", "indices", "indptr", "shape"} - names)
    if missing:
        raise _unreadable(p, KeyError(f"no {', '.join(missing)} in the archive"))


_UNREADABLE = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


def _codes_path(folder: Path) -> Path:
    p = Path(folder) / CODES_FILE
    if not p.is_file():
        raise ArtifactError(f"{p}: sparse codes not found; run `medsae codes` first")
    return p


def _unreadable(path: Path, e: BaseException) -> ArtifactError:
    from medsae.artifacts import DamagedArtifact

    problem = f"unreadable sparse codes, truncated or corrupt: {describe(e)}"
    return DamagedArtifact(path, problem, "codes")


def load_codes_meta(folder: Path) -> dict[str, Any]:
    return read_artifact(
        Path(folder) / CODES_META, load_json_object, "codes metadata not found", "codes"
    )


def latent_stats(codes: sp.csr_matrix) -> dict[str, np.ndarray]:
    """Per-latent ``nnz``, ``sum`` and ``max`` of CSR codes (one pass over the non-zeros)."""
    n = int(codes.shape[1])
    idx = np.asarray(codes.indices)
    data = np.asarray(codes.data, dtype=np.float32)
    mx = np.zeros(n, dtype=np.float32)
    if len(data):
        np.maximum.at(mx, idx, data)  # codes are non-negative: 0 stays for a silent latent
    return {
        "nnz": np.bincount(idx, minlength=n).astype(np.int64),
        "sum": np.bincount(idx, weights=data.astype(np.float64), minlength=n),
        "max": mx,
    }


def load_latent_stats(folder: Path, n_latents: int) -> dict[str, np.ndarray] | None:
    """The stored :func:`latent_stats` of a run's codes, or None when the file is missing,
    unreadable or not of ``n_latents`` latents (codes written before it existed)."""
    p = Path(folder) / CODES_STATS
    if not p.is_file():
        return None
    try:
        with np.load(p) as z:
            stats = {key: np.asarray(z[key]) for key in ("nnz", "sum", "max")}
    except _UNREADABLE:
        return None
    if any(v.shape != (n_latents,) for v in stats.values()):
        return None
    return stats
