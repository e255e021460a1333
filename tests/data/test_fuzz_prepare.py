"""Fuzz `prepare`: 208 seeded malformed NIfTI subjects (random bytes, truncated and
bit-flipped files, gzip damage, headers declaring huge volumes) in one NIfTI folder. Each
subject either prepares or fails with a per-subject error naming it; memory stays bounded."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from medsae.data import PrepareConfig, prepare
from medsae.workspace import Workspace
from tests.fuzz_inputs import malformed
from tests.rss import peak_rss_growth

N_SUBJECTS = 208
NIFTI_KINDS = {"random", "random-magic", "random-nifti-magic", "nifti-truncated", "nifti-flipped"}
GZIP_KINDS = {"gzip-truncated", "gzip-flipped", "nifti-gz-huge"}


def test_malformed_subjects_fail_by_name(tmp_path: Path) -> None:
    src = tmp_path / "nif"
    (src / "img").mkdir(parents=True)
    rows = []
    made = 0
    for kind, data in malformed(seed=7, n=N_SUBJECTS * 2):
        if kind not in NIFTI_KINDS | GZIP_KINDS | {"nifti-huge"}:
            continue
        subject = f"f{made:03d}"
        name = f"img/{subject}.nii" + (".gz" if kind in GZIP_KINDS else "")
        (src / name).write_bytes(data)
        rows.append({"subject": subject, "image": name, "modality": "CT"})
        made += 1
        if made == N_SUBJECTS:
            break
    assert made == N_SUBJECTS
    pd.DataFrame(rows).to_csv(src / "metadata.csv", index=False)
    ws = Workspace(tmp_path / "ws")
    cfg = PrepareConfig(source=str(src), source_kind="nifti", size=16, step=2)
    with peak_rss_growth() as growth:
        outcome = prepare(ws, cfg, allow_failures=True)
    report = json.loads((ws.slices / "failures.json").read_text())
    failures = report["failures"]
    assert outcome.manifest["counts"]["failed"] == len(failures) > N_SUBJECTS // 2
    for f in failures:
        subject = f["subject_key"].split(":")[-1]
        assert subject in f["error"] or f"{subject}.nii" in f["error"], f
        assert "Traceback" not in f["error"]
    assert growth.bytes < 300 * 1024 * 1024, f"resident memory grew {growth.bytes >> 20} MB"
