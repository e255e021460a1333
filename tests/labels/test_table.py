"""The one label table, as built by the interpret and evaluate stages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medsae.evaluate.concepts import labels_from_tasks
from medsae.evaluate.tasks import derive_tasks
from medsae.labels.table import LabelTable, build_label_table


def _table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "subject_key": ["a", "a", "b", "c"],
            "modality": ["CT", "CT", "MR", None],
            "plane": ["axial", "coronal", "axial", "axial"],
            "sex": ["F", "F", "M", "M"],
        }
    )


def test_kinds_follow_the_names_and_masks_keep_their_order() -> None:
    labels = build_label_table(_table(), None, geometry=False)
    assert labels.names[:2] == ["modality=CT", "modality=MR"]
    assert labels.kinds[:3] == ["modality", "modality", "plane"]
    ct = labels.index("modality=CT")
    assert labels.values[:, ct].tolist() == [True, True, False, False]
    assert labels.defined[:, ct].tolist() == [True, True, True, False]
    sub = labels.rows([0, 2]).columns([ct])
    assert sub.names == ["modality=CT"] and sub.values.ravel().tolist() == [True, False]
    with pytest.raises(ValueError, match="no label 'modality=PET'"):
        labels.index("modality=PET")


def test_the_former_constructor_builds_the_same_table() -> None:
    pos = np.array([[True, False], [False, True]])
    table = LabelTable.from_masks(pos, np.ones_like(pos), ["a=x", "b=y"], ["k1", "k2"])
    assert isinstance(table, LabelTable) and table.kinds == ["k1", "k2"]
    assert LabelTable(["a=x"], pos[:, :1], pos[:, :1]).kinds == ["a"]
    with pytest.raises(ValueError, match="must both be"):
        LabelTable(["a=x", "b=y"], pos, pos[:, :1])


def test_tasks_give_label_names_of_the_same_vocabulary() -> None:
    table = _table()
    presence = np.zeros((4, 0), dtype=np.int8)
    tasks, _ = derive_tasks(table.assign(age=[30, 50, 70, 90]), presence, [], True, True)
    from_tasks = labels_from_tasks(tasks)
    from_table = build_label_table(table, None, geometry=False)
    shared = set(from_tasks.names) & set(from_table.names)
    assert {"modality=CT", "plane=axial", "sex=F"} <= shared
    for name in shared:
        a, b = from_tasks.index(name), from_table.index(name)
        both = from_tasks.defined[:, a] & from_table.defined[:, b]
        assert (from_tasks.values[both, a] == from_table.values[both, b]).all()
