"""The one label table: binary ``<kind>=<value>`` labels of slices, each with the rows where it
is *defined*.

Label kinds (the part before ``=``):

* ``modality=CT``, ``plane=axial``, ``sex=F``, ``age_group=>=80`` and the acquisition
  ``manufacturer=Siemens``: from the slice table (undefined where the metadata is null);
* ``<column>=<value>``: the user label columns of imported embeddings, the same way;
* ``structure=<name>``: anatomy presence (undefined where the structure is not annotated
  for the slice's modality);
* ``group=<name>``: any structure of ``medsae.data.structures.GROUPS[name]`` present;
* ``position=edge|central`` and, when the slice images are given,
  ``coverage=sliver|partial|full``: fixed bins, see :mod:`medsae.labels.concepts_extra`;
* ``study=...``, ``kvp=...``, ``field_strength=...``, ``pathology=...``: the study's body
  coverage, the acquisition setting and the patient's recorded finding, see
  :mod:`medsae.labels.concepts_study`.

The interpret stage builds the table from the slice table (:func:`build_label_table`); the
evaluate stage's concept map builds it from its tasks
(:func:`medsae.evaluate.concepts.labels_from_tasks`). Their words are in
:mod:`medsae.labels.words`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from medsae.data.structures import GROUPS
from medsae.data.table import Anatomy
from medsae.errors import ArtifactError
from medsae.labels.concepts_extra import extra_labels
from medsae.labels.concepts_study import study_codes


def label_kind(name: str) -> str:
    """The kind of a label name: ``structure=liver`` -> ``structure``."""
    return name.split("=", 1)[0]


@dataclass(frozen=True)
class LabelTable:
    """Binary labels of slices: ``values`` and ``defined`` are bool ``(N, L)``; ``names`` the
    ``L`` label names and ``kinds`` their kinds (by default the part of a name before ``=``).

    A label's positives are ``values & defined``; rows where it is not ``defined`` count as
    neither positive nor negative.
    """

    names: list[str]
    values: np.ndarray
    defined: np.ndarray
    kinds: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.names)
        if self.values.shape != self.defined.shape or self.values.shape[-1:] != (n,):
            raise ValueError(
                f"label table: values {self.values.shape} and defined {self.defined.shape} "
                f"must both be (rows, {n}) for {n} label names"
            )
        if not self.kinds:
            object.__setattr__(self, "kinds", [label_kind(x) for x in self.names])
        elif len(self.kinds) != n:
            raise ValueError(f"label table: {len(self.kinds)} kinds for {n} label names")

    @classmethod
    def from_masks(
        cls,
        positive: np.ndarray,
        valid: np.ndarray,
        names: Sequence[str],
        kinds: Sequence[str] | None = None,
    ) -> LabelTable:
        """A table from positive and validity masks ``(N, L)``, label names and kinds."""
        return cls(
            list(names),
            np.asarray(positive, dtype=bool),
            np.asarray(valid, dtype=bool),
            list(kinds) if kinds is not None else [],
        )

    @property
    def n_rows(self) -> int:
        """Number of slices (rows)."""
        return int(self.values.shape[0])

    def index(self, name: str) -> int:
        """The column of a label name (ValueError naming it when absent)."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(f"no label {name!r} in the label table") from None

    def present(self, row: int) -> list[str]:
        """Names of the labels slice ``row`` carries."""
        return [self.names[i] for i in np.flatnonzero(self.values[row])]

    def columns(self, cols: Sequence[int] | np.ndarray) -> LabelTable:
        """The table restricted to the label columns ``cols``."""
        idx = np.asarray(cols, dtype=np.int64)
        return LabelTable(
            [self.names[c] for c in idx],
            self.values[:, idx],
            self.defined[:, idx],
            [self.kinds[c] for c in idx],
        )

    def rows(self, rows: Sequence[int] | np.ndarray) -> LabelTable:
        """The table restricted to the slices ``rows``."""
        idx = np.asarray(rows, dtype=np.int64)
        return LabelTable(list(self.names), self.values[idx], self.defined[idx], list(self.kinds))


META_LABELS = ("modality", "plane", "sex", "age_group", "manufacturer")
"""Slice table columns whose values are labels (``modality=CT``, ...)."""

LabelCodes = dict[str, tuple[np.ndarray, list[str]]]
"""Per label kind: the code of every row (``-1`` where the label is not defined) and the
kind's values (label ``kind=values[code]``)."""


def factorise(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Codes ``(N,)`` (int64, ``-1`` where null) of a column's values read as text, and its
    sorted values."""
    known = values.notna().to_numpy()
    text = values[known].astype(str).to_numpy()
    uniques, inverse = np.unique(text, return_inverse=True)
    codes = np.full(len(values), -1, dtype=np.int64)
    codes[known] = inverse
    return codes, [str(u) for u in uniques]


def metadata_codes(table: pd.DataFrame, label_columns: Sequence[str] = ()) -> LabelCodes:
    """The :data:`META_LABELS` columns of the slice table, and the further categorical
    ``label_columns`` (the user labels of imported embeddings), as label codes."""
    columns = (*META_LABELS, *label_columns)
    return {c: factorise(table[c]) for c in columns if c in table.columns}


def label_codes(table: pd.DataFrame, label_columns: Sequence[str] = ()) -> LabelCodes:
    """Every label kind that is a value per slice: the metadata columns
    (:func:`metadata_codes`) and the study and acquisition facets
    (:func:`medsae.labels.concepts_study.study_codes`). The label table's labels of these
    kinds are exactly these codes' values."""
    return {**metadata_codes(table, label_columns), **study_codes(table)}


def _add_codes(
    codes: LabelCodes, names: list[str], values: list[np.ndarray], defined: list[np.ndarray]
) -> None:
    for kind, (code, uniques) in codes.items():
        known = code >= 0
        for i, value in enumerate(uniques):
            names.append(f"{kind}={value}")
            values.append(code == i)
            defined.append(known)


def build_label_table(
    table: pd.DataFrame,
    anatomy: Anatomy | None,
    images: np.ndarray | None = None,
    geometry: bool = True,
    label_columns: Sequence[str] = (),
) -> LabelTable:
    """Metadata, structure, group, position, coverage, study and acquisition labels (see the
    module docstring).

    Structures never present in any slice are left out; coverage labels need ``images`` (one
    uint8 image per row, e.g. memory-mapped ``WS/slices/images.npy``); ``geometry=False``
    leaves out the position and coverage labels; ``label_columns`` are further categorical
    columns of ``table`` (the user labels of imported embeddings), ``<column>=<value>`` each.
    """
    n = len(table)
    names: list[str] = []
    values: list[np.ndarray] = []
    defined: list[np.ndarray] = []
    _add_codes(metadata_codes(table, label_columns), names, values, defined)
    if anatomy is not None:
        presence = np.asarray(anatomy.presence)
        if presence.shape[0] != n:
            raise ArtifactError(
                f"anatomy labels have {presence.shape[0]} rows but the slice table has {n}"
            )
        column_of = {s: i for i, s in enumerate(anatomy.structures)}
        for i, s in enumerate(anatomy.structures):
            present: np.ndarray = np.asarray(presence[:, i] == 1)
            if present.any():
                names.append(f"structure={s}")
                values.append(present)
                defined.append(presence[:, i] >= 0)
        for group, members in GROUPS.items():
            cols = [column_of[s] for s in members if s in column_of]
            if not cols:
                continue
            sub = presence[:, cols]
            present = np.asarray((sub == 1).any(axis=1), dtype=bool)
            if present.any():
                names.append(f"group={group}")
                values.append(present)
                defined.append(np.asarray((sub >= 0).any(axis=1), dtype=bool))
    if geometry:
        extra_names, extra_values, extra_defined = extra_labels(table, images)
        names += extra_names
        values += extra_values
        defined += extra_defined
    _add_codes(study_codes(table), names, values, defined)
    if not names:
        return LabelTable([], np.zeros((n, 0), bool), np.zeros((n, 0), bool))
    return LabelTable(names, np.stack(values, axis=1), np.stack(defined, axis=1))
