import numpy as np
import pandas as pd

from medsae.evaluate.tasks import derive_tasks, filter_tasks, group_presence


def _table() -> pd.DataFrame:
    n = 12
    return pd.DataFrame(
        {
            "modality": ["CT"] * 8 + ["MR"] * 4,
            "plane": ["axial", "coronal", "sagittal"] * 4,
            "sex": ["M", "F", None, "F"] * 3,
            "age_group": ["<40", ">=80", "40-60", "60-80"] * 3,
            "kvp": [120.0] * 8 + [np.nan] * 4,
            "institute": ["A"] * 6 + ["B"] * 6,
            "manufacturer": ["GE"] * n,
        }
    )


def test_missing_labels_are_excluded_not_negative() -> None:
    table = _table()
    presence = np.array([[1, -1], [0, -1], [1, 0], [-1, -1]] * 3, dtype=np.int8)
    tasks, unformed = derive_tasks(table, presence, ["liver", "brain"], group_tasks=False)
    by_name = {t.name: t for t in tasks}
    sex = by_name["sex"]
    assert sex.classes == ("F", "M")
    assert (sex.labels[table["sex"].isna().to_numpy()] == -1).all()
    kvp = by_name["kvp"]
    assert kvp.classes == ("120",) and (kvp.labels[8:] == -1).all()
    liver = by_name["structure:liver"]
    np.testing.assert_array_equal(liver.labels[:4], [1, 0, 1, -1])
    ext = by_name["age_group_extremes"]
    assert ext.classes == ("<40", ">=80") and (ext.labels[2:4] == -1).all()
    assert {u["task"] for u in unformed} >= {"field_strength", "scanner_model"}


def test_group_presence_rule() -> None:
    presence = np.array([[1, -1], [0, -1], [0, 0], [-1, -1], [-1, 1]], dtype=np.int8)
    np.testing.assert_array_equal(
        group_presence(presence, ["a", "b"], ["a", "b"]), [1, 0, 0, -1, 1]
    )
    np.testing.assert_array_equal(group_presence(presence, ["a", "b"], ["zzz"]), [-1] * 5)


def test_filter_records_reasons() -> None:
    table = _table()
    presence = np.zeros((12, 1), dtype=np.int8)
    tasks, _ = derive_tasks(table, presence, ["liver"], group_tasks=False)
    rows = {"train": np.arange(0, 6), "val": np.arange(6, 9), "test": np.arange(6, 12)}
    kept, skipped = filter_tasks(tasks, rows, min_examples=1)
    reasons = {s["task"]: s["reason"] for s in skipped}
    assert "one class" in reasons["manufacturer"]
    assert "one class" in reasons["structure:liver"]
    # institute B never appears in the training rows (the paper's failing probe)
    assert "train" in reasons["institute"] and "'B' has 0" in reasons["institute"]
    assert "plane" in {t.name for t in kept}
    assert all(s["reason"] for s in skipped)
    _kept_strict, skipped_strict = filter_tasks(tasks, rows, min_examples=2)
    assert "plane" in {s["task"] for s in skipped_strict}


def test_a_short_class_is_dropped_not_its_task() -> None:
    from medsae.evaluate.tasks import categorical_task

    values = pd.Series(["a"] * 6 + ["b"] * 6 + ["c"] * 6)
    task = categorical_task("t", values)
    # 'c' is short in val only; test rows never decide
    rows = {"train": np.r_[0:3, 6:9, 12:15], "val": np.r_[3:6, 9:12, 15:16]}
    kept, skipped = filter_tasks([task], rows, min_examples=2)
    assert len(kept) == 1 and kept[0].classes == ("a", "b")
    assert (kept[0].labels[12:] == -1).all() and kept[0].labels[0] == 0
    assert skipped[0]["class"] == "c" and "1 in val" in skipped[0]["reason"]
    # with two classes short only one remains: the task goes
    kept2, skipped2 = filter_tasks([task], rows, min_examples=4)
    assert not kept2 and "fewer than two classes" in skipped2[0]["reason"]


def test_the_paper_kvp_task_and_target_list() -> None:
    from medsae.evaluate.paper import PAPER_TARGETS, paper_target_keys, paper_target_status

    table = _table().assign(kvp=[80.0, 120.0, 100.0, np.nan] * 3)
    tasks, unformed = derive_tasks(table, np.zeros((12, 0), np.int8), [], group_tasks=False)
    by_name = {t.name: t for t in tasks}
    kvp = by_name["kvp_80_vs_120"]
    assert set(kvp.classes) == {"80", "120"} and (kvp.labels[2::4] == -1).all()
    assert set(by_name["kvp"].classes) == {"80", "100", "120"}
    assert len(PAPER_TARGETS) == 40 and len({t.group for t in PAPER_TARGETS}) == 12
    keys = paper_target_keys(tasks)
    assert ("kvp_80_vs_120", "80") in keys and ("manufacturer", "GE") in keys  # case ignored
    assert ("kvp", "100") not in keys
    kept, skipped = filter_tasks(tasks, {"train": np.arange(12)}, min_examples=1)
    status = {
        (s["group"], s["target"]): s for s in paper_target_status(tasks, kept, unformed + skipped)
    }
    assert status[("modality", "ct")]["kept"]
    assert "one class" in status[("manufacturer", "ge")]["reason"]
    assert "not in the data" in status[("institute", "J")]["reason"]
    assert "column" in status[("scanner_model", "Skyra")]["reason"]
