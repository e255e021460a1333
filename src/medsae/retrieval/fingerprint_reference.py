"""Reference answers for the fingerprint index: a brute-force scan and an exactness check.

Used by the tests and ``benchmarks/search.py`` to show that
:meth:`medsae.retrieval.fingerprint.FingerprintIndex.search_fingerprint` is exact.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from medsae.retrieval.fingerprint import Hits, best_per_subject, closeness


def brute_force_search(
    codes: sp.spmatrix,
    subjects: np.ndarray,
    latents: np.ndarray,
    weights: np.ndarray,
    n: int,
    mask: np.ndarray | None = None,
    exclude_subject: int | None = None,
    squared: sp.spmatrix | None = None,
) -> Hits:
    """Reference implementation: a full scan of the CSR codes with the same similarity.

    ``dot = C q_F`` and ``sq = (C ∘ C) 1_F`` over all rows (sparse matrix-vector products),
    cosine on rows with ``sq > 0`` (``1 / (1 + |q_j - c_j|)`` for a one-latent fingerprint),
    then a full sort for the per-subject best. ``squared``
    may hold ``C ∘ C`` precomputed (float64) when many queries are checked.
    """
    n_latents = codes.shape[1]
    q = np.zeros(n_latents, dtype=np.float64)
    q[np.asarray(latents, dtype=np.int64)] = weights
    ind = (q != 0).astype(np.float64)
    csr = sp.csr_matrix(codes)
    dot = csr @ q
    if squared is None:
        c64 = sp.csr_matrix(codes, dtype=np.float64)
        squared = c64.multiply(c64)
    sq = squared @ ind
    q_norm = float(np.linalg.norm(q))
    ok = sq > 0
    if mask is not None:
        ok &= mask
    if exclude_subject is not None:
        ok &= subjects != exclude_subject
    cand = np.flatnonzero(ok)
    if q_norm == 0:
        cand = cand[:0]
    if len(np.atleast_1d(latents)) == 1:
        j = int(np.atleast_1d(latents)[0])
        col = np.asarray(csr[:, j].toarray(), dtype=np.float64).ravel()
        score = closeness(float(q[j]), col[cand])
    else:
        score = dot[cand] / (q_norm * np.sqrt(sq[cand]))
    return best_per_subject(cand, score, subjects[cand], n)


def check_exact(fast: Hits, reference: Hits, n: int, tol: float = 1e-9) -> bool:
    """Whether a top-``n`` answer equals the reference up to floating-point ties.

    ``reference`` should hold ``n + 1`` results (when that many exist) so that a tie at the
    cut-off can be recognised. The ranked scores must match within ``tol``; rows and
    subjects must match wherever a score is not tied (within ``tol``) with a neighbour.
    """
    expected = min(n, len(reference))
    if len(fast) != expected:
        return False
    if expected == 0:
        return True
    s = reference.scores
    if not np.allclose(fast.scores, s[:expected], rtol=0, atol=tol):
        return False
    for i in range(expected):
        tied = (i > 0 and abs(s[i] - s[i - 1]) <= tol) or (
            i + 1 < len(s) and abs(s[i] - s[i + 1]) <= tol
        )
        if not tied and (
            fast.rows[i] != reference.rows[i] or fast.subjects[i] != reference.subjects[i]
        ):
            return False
    return True
