"""The paper's probe targets, under this package's task and class names.

The paper (github pwesp/sail, ``src/config_downstream.py``) probes 40 one-vs-rest targets in
12 groups: each class of a multi-class group against the other classes of that group (slices
outside the group's classes are unlabelled), and each label of a multi-label group against
every other slice. :data:`PAPER_TARGETS` maps every one of them to a task of
:mod:`medsae.evaluate.tasks` and one of its classes; figures named ``*_paper_tasks`` average
over exactly these targets (those the data holds, see :func:`paper_target_status`).

A binary task here has one classifier (it scores its second class); its first class as a
target is scored by the negated score, which gives the same ROC-AUC. The paper counts both
classes of a two-class group, so they weigh twice in its means, as here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from medsae.evaluate.tasks import KVP_PAPER_TASK, Task

PRESENT = "present"


@dataclass(frozen=True)
class PaperTarget:
    """One of the paper's targets: its group and name there, the task and class here."""

    group: str
    target: str
    task: str
    cls: str


def _targets() -> tuple[PaperTarget, ...]:
    out: list[PaperTarget] = []

    def add(group: str, task: str, pairs: Iterable[tuple[str, str]]) -> None:
        out.extend(PaperTarget(group, t, task, c) for t, c in pairs)

    add("modality", "modality", [("mri", "MR"), ("ct", "CT")])
    add("sex", "sex", [("f", "F"), ("m", "M")])
    add("slice_orientation", "plane", [("x", "sagittal"), ("y", "coronal"), ("z", "axial")])
    add("age_group", "age_group_extremes", [("<40", "<40"), (">=80", ">=80")])
    add("kvp", KVP_PAPER_TASK, [("80.0", "80"), ("120.0", "120")])
    add("institute", "institute", [(c, c) for c in "ABCDEFGHIJ"])
    add("manufacturer", "manufacturer", [(c, c) for c in ("ge", "philips", "siemens")])
    add("scanner_model", "scanner_model", [(c, c) for c in ("Achieva", "Avanto_fit", "Skyra")])
    organs = {
        "organs_abdominal": ("gallbladder", "kidney_left", "liver", "spleen", "prostate"),
        "organs_head_and_neck": ("brain",),
        "organs_thoracic": ("heart", "sternum", "clavicula_left", "clavicula_right"),
    }
    for group, names in organs.items():
        for name in names:
            add(group, f"structure:{name}", [(name, PRESENT)])
    add("pathology", "pathology", [(c, c) for c in ("inflammation", "tumor", "trauma")])
    return tuple(out)


PAPER_TARGETS: tuple[PaperTarget, ...] = _targets()
"""The paper's 40 targets (12 groups), in the paper's order."""
PAPER_TASKS: tuple[str, ...] = tuple(dict.fromkeys(t.task for t in PAPER_TARGETS))
"""The tasks that hold the paper's targets."""


def _norm(value: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(value)).strip().lower()


def class_index(task: Task, cls: str) -> int | None:
    """Index of class ``cls`` in ``task`` (case, spaces, ``_`` and ``-`` ignored), or None."""
    wanted = _norm(cls)
    for k, c in enumerate(task.classes):
        if _norm(c) == wanted:
            return k
    return None


def paper_target_keys(tasks: Sequence[Task]) -> set[tuple[str, str]]:
    """``(task, class)`` of every paper target that the given (kept) tasks hold."""
    by_name = {t.name: t for t in tasks}
    out: set[tuple[str, str]] = set()
    for pt in PAPER_TARGETS:
        task = by_name.get(pt.task)
        k = None if task is None else class_index(task, pt.cls)
        if task is not None and k is not None:
            out.add((pt.task, task.classes[k]))
    return out


def paper_target_status(
    formed: Sequence[Task], kept: Sequence[Task], dropped: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every paper target with ``kept`` and, when not kept, the ``reason``.

    ``formed``: the tasks the data supports (before filtering); ``kept``: after filtering;
    ``dropped``: the records of :func:`medsae.evaluate.tasks.filter_tasks` and of tasks
    that could not be formed.
    """
    formed_by = {t.name: t for t in formed}
    kept_by = {t.name: t for t in kept}
    out: list[dict[str, Any]] = []
    for pt in PAPER_TARGETS:
        row: dict[str, Any] = {
            "group": pt.group,
            "target": pt.target,
            "task": pt.task,
            "class": pt.cls,
            "kept": False,
        }
        task = kept_by.get(pt.task)
        if task is not None and class_index(task, pt.cls) is not None:
            row["class"] = task.classes[class_index(task, pt.cls) or 0]
            row["kept"] = True
        elif pt.task not in formed_by or class_index(formed_by[pt.task], pt.cls) is None:
            found = [d for d in dropped if d.get("task") == pt.task and "class" not in d]
            row["reason"] = found[0]["reason"] if found else f"class '{pt.cls}' not in the data"
        else:
            cls = formed_by[pt.task].classes[class_index(formed_by[pt.task], pt.cls) or 0]
            row["class"] = cls
            found = [
                d for d in dropped if d.get("task") == pt.task and d.get("class") in (None, cls)
            ]
            row["reason"] = found[0]["reason"] if found else "dropped"
        out.append(row)
    return out
