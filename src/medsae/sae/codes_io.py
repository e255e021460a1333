"""Reading and writing sparse codes: never dense.

``WS/codes/<encoder>/<run>/``
    ``codes.npz``   a SciPy CSR matrix ``(n_slices, n_latents)`` float32 (``scipy.sparse.save_npz``),
                    row ``i`` = slice ``i`` of the slice table, every split included
    ``codes.json``  ``{"encoder", "run", "n_rows", "n_latents", "levels", "mode"}``
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from medsae.errors import ArtifactError
from medsae.sae.io import CODES, CODES_META

CODES_FILE = CODES


def save_codes(folder: Path, codes: sp.csr_matrix, meta: dict[str, Any]) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csr = sp.csr_matrix(codes, dtype=np.float32)
    csr.sort_indices()
    sp.save_npz(folder / CODES_FILE, csr, compressed=False)
    full = {"n_rows": int(csr.shape[0]), "n_latents": int(csr.shape[1]), **meta}
    (folder / CODES_META).write_text(json.dumps(full, indent=2, sort_keys=True, default=str))


def load_codes(folder: Path) -> sp.csr_matrix:
    """The codes of a run as float32 CSR; a missing, truncated or corrupt file is an
    :class:`ArtifactError` naming it (and saying how to rewrite it)."""
    p = Path(folder) / CODES_FILE
    if not p.is_file():
        raise ArtifactError(f"{p}: sparse codes not found; run `medsae codes` first")
    try:
        codes = sp.load_npz(p)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise ArtifactError(
            f"{p}: unreadable sparse codes (truncated or corrupt: {type(e).__name__}: {e}); "
            "rerun `medsae codes --force`"
        ) from e
    return sp.csr_matrix(codes, dtype=np.float32)


def load_codes_meta(folder: Path) -> dict[str, Any]:
    p = Path(folder) / CODES_META
    if not p.is_file():
        raise ArtifactError(f"{p}: codes metadata not found; run `medsae codes` first")
    data: dict[str, Any] = json.loads(p.read_text())
    return data
