"""The interpret stage's inputs: slices, split, labels and codes of one SAE run, loaded once.

Reads ``WS/slices``, ``WS/split``, ``WS/codes/<encoder>/<run>`` and, when present, the
evaluate stage's concept map ``WS/eval/<encoder>/<run>/concepts.parquet``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from medsae.data.table import (
    IMAGES_FILE,
    open_images,
    read_anatomy,
    read_label_columns,
    slices_with_split,
)
from medsae.errors import ArtifactError
from medsae.evaluate.io import CONCEPTS
from medsae.interpret.config import InterpretConfig
from medsae.interpret.features import FeatureStats
from medsae.interpret.scoring import CodeSpace, capped_rows, detection_draw
from medsae.labels.table import LabelTable, build_label_table
from medsae.metrics.classification import roc_auc
from medsae.sae.codes_io import load_codes, load_codes_meta
from medsae.workspace import Workspace


@dataclass
class InterpretInputs:
    """One run's slice table, labels and codes, with the row sets of the splits.

    ``train``: rows of the training split (statistics, descriptions, thresholds);
    ``heldout``: rows of ``config.score_splits`` (scores); ``images``: the slice images when
    the geometry labels needed them (else None); ``draw``: :func:`detection_draw`;
    ``train_background`` / ``heldout_background``: the rows detection samples draw their
    negatives from (:func:`capped_rows` of ``train`` / ``heldout`` at ``config.fit_slices``).
    """

    table: pd.DataFrame
    labels: LabelTable
    codes: sp.csr_matrix
    levels: list[int] | None
    train: np.ndarray
    heldout: np.ndarray
    subjects: np.ndarray
    images: np.ndarray | None
    space: CodeSpace
    draw: dict[str, Any]
    train_background: np.ndarray
    heldout_background: np.ndarray

    def rows_of(self, split: str) -> np.ndarray:
        """Rows of one split."""
        return np.flatnonzero(self.table["split"].to_numpy() == split)


def load_inputs(ws: Workspace, encoder: str, run: str, config: InterpretConfig) -> InterpretInputs:
    """Load the inputs of one run (ArtifactError naming the codes folder when the code rows do
    not match the slice table)."""
    table = slices_with_split(ws.slices, ws.split)
    codes_dir = ws.codes(encoder, run)
    codes = load_codes(codes_dir)
    if codes.shape[0] != len(table):
        raise ArtifactError(
            f"{codes_dir}: {codes.shape[0]} code rows but {len(table)} slices; rerun `medsae codes`"
        )
    images = None
    if config.geometry_concepts and (ws.slices / IMAGES_FILE).is_file():
        images = open_images(ws.slices)
    labels = build_label_table(
        table,
        read_anatomy(ws.slices),
        images,
        geometry=config.geometry_concepts,
        label_columns=read_label_columns(ws.slices),
    )
    split = table["split"].to_numpy()
    train = np.flatnonzero(split == "train")
    heldout = np.flatnonzero(np.isin(split, config.score_splits))
    return InterpretInputs(
        table=table,
        labels=labels,
        codes=codes,
        levels=load_codes_meta(codes_dir).get("levels"),
        train=train,
        heldout=heldout,
        subjects=pd.factorize(table["subject_key"])[0],
        images=images,
        space=CodeSpace(codes),
        draw=detection_draw(config, table),
        train_background=capped_rows(train, config.fit_slices, config.seed),
        heldout_background=capped_rows(heldout, config.fit_slices, config.seed + 1),
    )


def read_concept_map(path: Path) -> pd.DataFrame | None:
    """The evaluate stage's concept map indexed by latent (None when absent; ArtifactError
    naming the file when columns are missing)."""
    if not path.is_file():
        return None
    frame = pd.read_parquet(path)
    missing = {"latent", "concept", "auroc"} - set(frame.columns)
    if missing:
        raise ArtifactError(f"{path}: missing column(s) {sorted(missing)}")
    return frame.drop_duplicates("latent").set_index("latent")


def reported_concepts(
    ws: Workspace, encoder: str, run: str, inp: InterpretInputs, stats: list[FeatureStats]
) -> tuple[dict[int, str | None], dict[int, float]]:
    """Per feature the concept reported beside its description and that concept's AUROC.

    From the evaluate stage's concept map when it lists the feature; else the feature's
    training concept (best training F1) and the AUROC of its activation for that label on the
    held-out rows. Reported only: never used to choose features (see
    :mod:`medsae.interpret.selection`).
    """
    concepts = read_concept_map(ws.eval(encoder, run) / CONCEPTS)
    csc = inp.space.csc
    concept_of: dict[int, str | None] = {}
    concept_auroc: dict[int, float] = {}
    for s in stats:
        if concepts is not None and s.latent in concepts.index:
            concept_of[s.latent] = str(concepts.at[s.latent, "concept"])
            concept_auroc[s.latent] = float(concepts.at[s.latent, "auroc"])
            continue
        concept_of[s.latent] = s.concept
        concept_auroc[s.latent] = float("nan")
        if s.concept:
            li = inp.labels.index(s.concept)
            rows = inp.heldout[inp.labels.defined[inp.heldout, li]]
            col = csc[:, s.latent].toarray().ravel()
            concept_auroc[s.latent] = roc_auc(inp.labels.values[rows, li], col[rows])
    return concept_of, concept_auroc
