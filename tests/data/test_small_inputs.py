"""Small input cases: a subject id ``nan`` is kept, a NIfTI folder laid out like
TotalSegmentator gets the hint to pass ``--source-kind nifti``, two demos on one fresh
workspace never race in the phantom step, the demo checkpoints its training often."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsae.data.config import PrepareConfig
from tests.data.conftest import save_nifti


def _folder(root: Path, subjects: list[str], layout: str) -> Path:
    data = np.zeros((8, 8, 6), np.float32)
    data[2:6, 2:6, 1:5] = 100.0
    images = []
    for s in subjects:
        rel = f"{s}/ct.nii.gz" if layout == "per-subject" else f"img/{s}.nii.gz"
        save_nifti(root / rel, data)
        images.append(rel)
    pd.DataFrame({"subject": subjects, "image": images, "modality": "CT"}).to_csv(
        root / "metadata.csv", index=False
    )
    return root


def test_subject_id_nan_is_kept(tmp_path: Path) -> None:
    from medsae.data.nifti_folder import nifti_folder_cases

    src = _folder(tmp_path / "nif", ["a1", "nan", "NA", "b2"], "flat")
    cases, _ = nifti_folder_cases(src, PrepareConfig(source=str(src)))
    assert [c.subject for c in cases] == ["a1", "nan", "NA", "b2"]


def test_nifti_folder_in_subject_folders_gets_the_source_kind_hint(tmp_path: Path) -> None:
    from medsae.data.sources import discover

    src = _folder(tmp_path / "nif", ["p1", "p2"], "per-subject")
    cases, _ = discover(src, PrepareConfig(source=str(src)))
    problems = [p for c in cases for p in c.problems]
    assert problems and all("--source-kind nifti" in p for p in problems), problems
    cases, _ = discover(src, PrepareConfig(source=str(src), source_kind="nifti"))
    assert [c.problems for c in cases] == [[], []]


def test_two_demos_on_a_fresh_workspace_do_not_race_in_the_phantom_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second demo is refused by name while the first writes the phantom (before: a
    FileNotFoundError traceback as one removed the other's subject folders)."""
    from medsae.errors import ArtifactError
    from medsae.pipeline import make_demo_data
    from medsae.workspace import Workspace

    writing, finish = threading.Event(), threading.Event()

    def slow_phantom(out: Path, cfg: object) -> Path:
        (Path(out) / "ct").mkdir(parents=True, exist_ok=True)
        writing.set()
        finish.wait(30)
        return Path(out)

    monkeypatch.setattr("medsae.data.make_phantom", slow_phantom)
    ws = Workspace(tmp_path / "ws").ensure()
    phantom = {"ct_subjects": 1, "mri_subjects": 1, "size_xy": 16, "n_slices": 8}
    first = threading.Thread(target=make_demo_data, args=(ws, phantom))
    first.start()
    assert writing.wait(30)
    try:
        with pytest.raises(ArtifactError, match=r"phantom-data: the phantom stage is already"):
            make_demo_data(ws, phantom)
    finally:
        finish.set()
        first.join()
    assert make_demo_data(ws, phantom) == ws.root / "phantom-data"  # then: up to date


def test_demo_training_checkpoints_at_least_every_minute(tmp_path: Path) -> None:
    from medsae.pipeline import demo_config
    from medsae.sae.config import TrainConfig

    config, _ = demo_config(tmp_path / "ws")
    section = dict(config.train)
    tokens = section.pop("tokens", {})  # the pipeline's settings for token stores
    assert TrainConfig.model_validate(section).checkpoint_every_seconds <= 60
    assert TrainConfig.model_validate({**section, **tokens}).checkpoint_every_seconds <= 60
