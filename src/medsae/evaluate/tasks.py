"""Probe tasks derived from the slice table and the anatomy labels.

A task is a labelling of slices into classes; label ``-1`` means *missing* (unknown metadata,
or a structure not annotated for the slice's modality) and excludes the slice from that task,
never counting it as a negative. Tasks:

* metadata: modality, plane, sex, age group (all four bins), age group extremes (``<40`` vs
  ``>=80``, the paper's task), kVp, field strength, institute, manufacturer, scanner model,
  study type, pathology;
* ``label``: each user label column of imported embeddings (``WS/slices/labels.json``);
* ``structure:<name>``: presence of each structure (1 present, 0 absent, -1 missing);
* ``group:<name>``: presence of each anatomical group of ``medsae.data.structures.GROUPS``:
  present if any member is present, absent if no member is present and at least one member
  is annotated, missing if no member is annotated.

* ``kvp_80_vs_120``: kVp 80 against 120 (the paper's kVp targets; other voltages missing).

:func:`filter_tasks` decides which tasks and classes exist from the splits it is given (the
stage gives the training sample and the validation split, never the test split): a class
with fewer than ``min_examples`` slices in one of them is dropped from its task (its slices
become missing for that task), and a task left with fewer than two classes is dropped. Every
drop is returned with the reason. The paper's target list (:data:`PAPER_TARGETS`) maps each
of the paper's one-vs-rest targets to a task and class here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from medsae.data.structures import GROUPS

TASK_FILTER_SPLITS = ("train", "val")
"""The splits that decide which tasks and classes exist (never the test split)."""
KVP_PAPER_TASK = "kvp_80_vs_120"
"""kVp 80 against kVp 120, the paper's kVp targets (other voltages are missing)."""
METADATA_COLUMNS: tuple[str, ...] = (
    "modality",
    "plane",
    "sex",
    "age_group",
    "kvp",
    "field_strength",
    "institute",
    "manufacturer",
    "scanner_model",
    "study_type",
    "pathology",
)


@dataclass(frozen=True)
class Task:
    """One probe task: ``labels[i]`` in ``0..len(classes)-1``, or -1 where missing."""

    name: str
    kind: str  # "metadata" | "structure" | "group"
    classes: tuple[str, ...]
    labels: np.ndarray = field(repr=False)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_heads(self) -> int:
        """One-vs-rest classifiers: one for a binary task (it scores class 1), else one per class."""
        return 1 if self.n_classes == 2 else self.n_classes

    def targets(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(labels, y_nh, valid_n)`` of the given rows: integer labels, 0/1 head targets, mask."""
        lab = self.labels[rows]
        valid = lab >= 0
        if self.n_heads == 1:
            y = (lab == 1)[:, None]
        else:
            y = lab[:, None] == np.arange(self.n_classes)[None, :]
        return lab, y.astype(np.float32), valid


def _format_value(v: Any) -> str:
    if isinstance(v, float | np.floating) and float(v).is_integer():
        return str(int(v))
    return str(v)


def categorical_task(name: str, values: pd.Series, kind: str = "metadata") -> Task:
    """A task from a column of categories (nulls are missing)."""
    notnull = values.notna().to_numpy()
    text = np.array(
        [_format_value(v) if ok else "" for v, ok in zip(values.tolist(), notnull, strict=True)]
    )
    classes = tuple(sorted(set(text[notnull].tolist())))
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array(
        [index[t] if ok else -1 for t, ok in zip(text, notnull, strict=True)], dtype=np.int64
    )
    return Task(name, kind, classes, labels)


def presence_task(name: str, kind: str, presence: np.ndarray) -> Task:
    """A binary task from presence flags (1 present, 0 absent, -1 missing)."""
    labels = np.where(presence < 0, -1, (presence > 0).astype(np.int64)).astype(np.int64)
    return Task(name, kind, ("absent", "present"), labels)


def group_presence(
    presence: np.ndarray, structures: Sequence[str], members: Sequence[str]
) -> np.ndarray:
    """Group presence per slice: 1 if any member present, 0 if none present but some annotated, else -1."""
    cols = [structures.index(m) for m in members if m in structures]
    if not cols:
        return np.full(presence.shape[0], -1, dtype=np.int8)
    block = np.asarray(presence[:, cols])
    any_present = (block == 1).any(1)
    any_annotated = (block >= 0).any(1)
    return np.where(any_present, 1, np.where(any_annotated, 0, -1)).astype(np.int8)


def derive_tasks(
    table: pd.DataFrame,
    presence: np.ndarray,
    structures: Sequence[str],
    structure_tasks: bool = True,
    group_tasks: bool = True,
    label_columns: Sequence[str] = (),
) -> tuple[list[Task], list[dict[str, Any]]]:
    """Every task the data supports, and the ones that cannot even be formed (with the reason).

    ``label_columns``: further columns of ``table`` that are categorical labels (the user
    labels of imported embeddings), one task of kind ``label`` each.
    """
    tasks: list[Task] = []
    skipped: list[dict[str, Any]] = []
    for col in label_columns:
        if col not in table.columns:
            raise ValueError(f"label column {col!r} is not in the slice table")
        tasks.append(categorical_task(col, table[col], kind="label"))
    for col in METADATA_COLUMNS:
        if col not in table.columns:
            skipped.append(
                {
                    "task": col,
                    "kind": "metadata",
                    "reason": f"column '{col}' not in the slice table",
                }
            )
            continue
        tasks.append(categorical_task(col, table[col]))
        if col == "age_group":
            ext = table[col].where(table[col].isin(["<40", ">=80"]))
            tasks.append(categorical_task("age_group_extremes", ext))
        if col == "kvp":
            kvp = pd.to_numeric(table[col], errors="coerce")
            tasks.append(categorical_task(KVP_PAPER_TASK, kvp.where(kvp.isin([80.0, 120.0]))))
    if structure_tasks and len(structures):
        for j, name in enumerate(structures):
            tasks.append(
                presence_task(f"structure:{name}", "structure", np.asarray(presence[:, j]))
            )
    if group_tasks and len(structures):
        for group, members in GROUPS.items():
            tasks.append(
                presence_task(
                    f"group:{group}", "group", group_presence(presence, list(structures), members)
                )
            )
    return tasks, skipped


def drop_classes(task: Task, drop: Sequence[int]) -> Task:
    """``task`` without the classes ``drop`` (their slices become missing); labels renumbered."""
    keep = [k for k in range(task.n_classes) if k not in set(drop)]
    remap = np.full(task.n_classes + 1, -1, dtype=np.int64)
    remap[np.array(keep, dtype=np.int64)] = np.arange(len(keep))
    labels = remap[np.where(task.labels >= 0, task.labels, task.n_classes)]
    return Task(task.name, task.kind, tuple(task.classes[k] for k in keep), labels)


def filter_tasks(
    tasks: Sequence[Task], split_rows: Mapping[str, np.ndarray], min_examples: int
) -> tuple[list[Task], list[dict[str, Any]]]:
    """Keep the classes with ``min_examples`` rows in every split of ``split_rows``.

    ``split_rows`` maps the splits that decide (the stage: the training sample and the
    validation split, never the test split) to their row indices. A class short in one of
    them is dropped from its task; a task left with fewer than two classes is dropped.
    Returns the kept tasks (short classes removed) and one record per drop: ``task``,
    ``kind``, ``reason``, ``counts`` and, for a dropped class of a kept task, ``class``.
    """
    kept: list[Task] = []
    skipped: list[dict[str, Any]] = []
    for task in tasks:
        counts = {
            split: np.bincount(
                task.labels[rows][task.labels[rows] >= 0], minlength=task.n_classes
            ).tolist()
            for split, rows in split_rows.items()
        }
        by_class = {split: dict(zip(task.classes, c, strict=True)) for split, c in counts.items()}
        total = np.sum(list(counts.values()), axis=0) if counts else np.zeros(task.n_classes)
        observed = [task.classes[k] for k in range(task.n_classes) if total[k] > 0]
        short: dict[int, str] = {}
        for split, c in counts.items():
            for k, n in enumerate(c):
                if n < min_examples and k not in short:
                    short[k] = f"{n} in {split} (< {min_examples})"
        remaining = task.n_classes - len(short)
        record = {"task": task.name, "kind": task.kind, "counts": by_class}
        if not observed:
            skipped.append({**record, "reason": "no labelled slices"})
        elif len(observed) == 1:
            skipped.append(
                {**record, "reason": f"one class only ('{observed[0]}' in every labelled slice)"}
            )
        elif remaining < 2:
            detail = ", ".join(
                f"'{task.classes[k]}' has {why}" for k, why in list(short.items())[:4]
            )
            skipped.append(
                {**record, "reason": f"fewer than two classes with enough examples: {detail}"}
            )
        else:
            for k, why in short.items():
                skipped.append(
                    {
                        **record,
                        "class": task.classes[k],
                        "reason": f"class '{task.classes[k]}' dropped: {why}",
                    }
                )
            kept.append(drop_classes(task, list(short)) if short else task)
    return kept, skipped
