"""Sparse linear probes for the slice attributes of which every slice has exactly one value
(modality and plane): which of the SAE's features say "sagittal", learned on the training
slices, read on any slice.

Text search (:mod:`medsae.retrieval.compose`) asks of every result that each aspect of the
query hold. The features a concept profile associates with "sagittal" are those that fire
on typical sagittal slices (the body); on an atypical one (a sagittal slice of the head)
none of them fires, and the plane evidence is no better than a guess. A multinomial
logistic regression over all the SAE's features, L1-penalised so that it keeps a few
dozen of them, reads the plane of every kind of slice. It is fitted on the training
slices only (at most :data:`MAX_TRAIN_ROWS`, a seeded sample) with the labels of
:mod:`medsae.labels.table`; the gallery's own metadata is never read.

Artifact: ``probes.npz`` beside ``features.parquet`` (:data:`medsae.interpret.io.PROBES`),
per kind ``<kind>.labels`` (label names), ``<kind>.coef`` ``(labels, n_latents)`` and
``<kind>.intercept``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from medsae.errors import ArtifactError
from medsae.interpret.io import PROBES
from medsae.labels.table import LabelTable

PROBE_KINDS = ("modality", "plane")
"""Label kinds with a probe: one value per slice, read from the whole image."""
MAX_TRAIN_ROWS = 20_000
PROBE_C = 1.0
"""Inverse L1 strength: on the demo about 16 features for modality and 18 for plane."""


@dataclass(frozen=True)
class Probe:
    """A multinomial probe of one kind: ``softmax(codes @ coef.T + intercept)`` over ``labels``."""

    kind: str
    labels: list[str]
    coef: np.ndarray  # (n_labels, n_latents) float32
    intercept: np.ndarray  # (n_labels,) float64

    def logits(self, codes: sp.spmatrix) -> np.ndarray:
        """``(n_rows, n_labels)`` log odds of the rows of a codes matrix (read over the few
        latents the L1 penalty kept: a column slice, not a pass over every code)."""
        kept = np.flatnonzero(np.abs(self.coef).sum(0) > 0)
        X = sp.csc_matrix(codes, dtype=np.float32)[:, kept]
        return np.asarray(X @ self.coef[:, kept].T, dtype=np.float64) + self.intercept

    def probabilities(self, codes: sp.spmatrix) -> np.ndarray:
        """``(n_rows, n_labels)`` softmax of :meth:`logits` (float32)."""
        logits = self.logits(codes)
        logits -= logits.max(1, keepdims=True)
        e = np.exp(logits)
        return (e / e.sum(1, keepdims=True)).astype(np.float32)

    def features(self, label: str, n: int = 8) -> list[tuple[int, float]]:
        """The latents that speak most for ``label``: by its coefficient less the mean over
        the kind's values (what moves the softmax), largest first; where none speaks for it
        (the value the probe reads as the absence of the others' features), those that speak
        most against it, with their negative contrast."""
        if label not in self.labels:
            return []
        w = self.coef[self.labels.index(label)] - self.coef.mean(0)
        order = [int(j) for j in np.argsort(-w, kind="stable") if w[j] > 0]
        if not order:
            order = [int(j) for j in np.argsort(w, kind="stable") if w[j] < 0]
        return [(j, float(w[j])) for j in order[:n]]


def fit_probes(
    codes: sp.spmatrix,
    labels: LabelTable,
    train_rows: np.ndarray,
    kinds: Sequence[str] = PROBE_KINDS,
    seed: int = 0,
) -> dict[str, Probe]:
    """One probe per kind that has at least two values among the training rows."""
    from sklearn.linear_model import LogisticRegression

    rows = np.asarray(train_rows, dtype=np.int64)
    if len(rows) > MAX_TRAIN_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, MAX_TRAIN_ROWS, replace=False))
    X = sp.csr_matrix(codes, dtype=np.float32)[rows]
    out: dict[str, Probe] = {}
    for kind in kinds:
        cols = [i for i, k in enumerate(labels.kinds) if k == kind]
        if len(cols) < 2:
            continue
        pos = labels.values[rows][:, cols] & labels.defined[rows][:, cols]
        one = pos.sum(1) == 1  # rows with exactly one value of the kind
        y = pos[one].argmax(1)
        present = np.unique(y)
        if len(present) < 2:
            continue
        clf = LogisticRegression(
            solver="saga", C=PROBE_C, max_iter=5000, random_state=seed, **_l1()
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*max_iter was reached.*")
            clf.fit(X[np.flatnonzero(one)], y)
        names = [labels.names[cols[int(c)]] for c in clf.classes_]
        coef = np.asarray(clf.coef_, dtype=np.float64)
        intercept = np.asarray(clf.intercept_, dtype=np.float64)
        if not np.any(coef):  # too few training slices for the penalty: no probe
            continue
        if len(names) == 2:  # binary: sklearn keeps one row; softmax over +-half of it
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        out[kind] = Probe(kind, names, coef.astype(np.float32), intercept)
    return out


def _l1() -> dict[str, Any]:
    """The L1 penalty as this scikit-learn spells it (``l1_ratio=1`` from 1.8, where
    ``penalty`` is deprecated; ``penalty="l1"`` before, where ``l1_ratio`` alone is ignored)."""
    import sklearn

    major, minor = (int(x) for x in sklearn.__version__.split(".")[:2])
    return {"l1_ratio": 1.0} if (major, minor) >= (1, 8) else {"penalty": "l1"}


def write_probes(out: Path, probes: dict[str, Probe]) -> None:
    """Write :data:`PROBES` into the folder ``out``."""
    arrays: dict[str, np.ndarray] = {}
    for kind, p in probes.items():
        arrays[f"{kind}.labels"] = np.asarray(p.labels, dtype=str)
        arrays[f"{kind}.coef"] = p.coef
        arrays[f"{kind}.intercept"] = p.intercept
    with open(Path(out) / PROBES, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]


def read_probes(folder: Path) -> dict[str, Probe] | None:
    """:data:`PROBES` of a features folder; None when it has none (interpreted before probes
    existed); ArtifactError naming the file when it is unreadable."""
    path = Path(folder) / PROBES
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            kinds = sorted({k.rsplit(".", 1)[0] for k in z.files})
            probes = {
                k: Probe(
                    k,
                    [str(x) for x in z[f"{k}.labels"]],
                    np.asarray(z[f"{k}.coef"], dtype=np.float32),
                    np.asarray(z[f"{k}.intercept"], dtype=np.float64),
                )
                for k in kinds
            }
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise ArtifactError(
            f"{path}: unreadable ({e}); rebuild it with `medsae interpret --force`"
        ) from e
    for p in probes.values():
        if (
            p.coef.ndim != 2
            or p.coef.shape[0] != len(p.labels)
            or len(p.intercept) != len(p.labels)
        ):
            raise ArtifactError(
                f"{path}: probe {p.kind!r} has inconsistent shapes; rebuild it with "
                "`medsae interpret --force`"
            )
    return probes
