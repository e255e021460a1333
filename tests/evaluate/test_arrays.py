"""Evaluation from arrays: reconstruction and probes without a workspace, on the same code
path as the evaluate stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from medsae.encode.store import write_store
from medsae.errors import InputError
from medsae.evaluate import linear_probes, reconstruction_report
from medsae.evaluate.inputs import load_inputs
from medsae.evaluate.stage import _Run
from tests.evaluate.conftest import small_config
from tests.evaluate.test_reconstruction import PrefixSAE


def flat(report: dict) -> dict[str, float]:
    return {
        f"{s}/{lv}/{k}": v for s, by in report.items() for lv, m in by.items() for k, v in m.items()
    }


def test_reconstruction_of_an_array_equals_that_of_the_store(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(50, 4))).astype(np.float32)
    store = write_store(tmp_path / "e", "fake", [("a.npy", x[:20]), ("b.npy", x[20:])])
    split = np.array(["train"] * 30 + ["test"] * 20)
    sae = PrefixSAE(4, [2, 4])
    from_store = flat(reconstruction_report(sae, store, split, batch_size=7))
    assert flat(reconstruction_report(sae, x, split, batch_size=7)) == pytest.approx(from_store)
    tensor = reconstruction_report(sae, torch.from_numpy(x), split, batch_size=7)
    assert flat(tensor) == pytest.approx(from_store)
    np.save(tmp_path / "x.npy", x)
    pooled = reconstruction_report(sae, np.load(tmp_path / "x.npy", mmap_mode="r"))
    assert set(pooled) == {"all"}
    assert flat(pooled) == pytest.approx({k: v for k, v in from_store.items() if k[:4] == "all/"})
    with pytest.raises(InputError, match="3 split names for 50 rows"):
        reconstruction_report(sae, x, split[:3])


def test_linear_probes_on_arrays_match_the_evaluate_stage(evaluated) -> None:
    ws, truth, out = evaluated
    cfg = small_config()
    run = _Run(load_inputs(ws, truth.encoder, truth.run), cfg)
    data = run._prepare_probes()
    rows, tasks = data["rows"], data["tasks"]

    def labels(split: str) -> dict[str, np.ndarray]:
        return {
            t.name: np.array([t.classes[v] if v >= 0 else None for v in t.labels[rows[split]]])
            for t in tasks
        }

    dense = {s: run.inp.store.read(r, normalize=cfg.dense_normalize) for s, r in rows.items()}
    codes = {s: run.inp.codes[r] for s, r in rows.items()}
    by_split = {s: labels(s) for s in rows}
    stage = pd.read_parquet(out / "probes.parquet")
    columns = ["task", "split", "roc_auc", "balanced_accuracy", "f1", "n_eval", "l2"]
    for kind, feats in (("dense", dense), ("sparse", codes)):
        mine = linear_probes(
            feats, by_split, l2_grid=cfg.l2_grid, max_iter=cfg.max_iter, min_examples=1
        )
        theirs = stage[stage["features"] == kind]
        pd.testing.assert_frame_equal(
            mine[columns].reset_index(drop=True), theirs[columns].reset_index(drop=True)
        )
        assert set(mine["features"]) == {kind}


def test_linear_probes_take_one_label_array_and_check_lengths() -> None:
    rng = np.random.default_rng(0)
    y = {s: rng.integers(0, 2, n) for s, n in (("train", 200), ("val", 80), ("test", 80))}
    direction = rng.normal(size=8)
    x = {s: rng.normal(size=(len(v), 8)) + 2.0 * v[:, None] * direction for s, v in y.items()}
    frame = linear_probes(x, y)
    assert frame["task"].unique().tolist() == ["label"]
    assert frame.loc[frame["split"] == "test", "roc_auc"].item() > 0.95
    codes = {s: sp.csr_matrix(np.maximum(v, 0)) for s, v in x.items()}
    assert linear_probes(codes, y)["features"].unique().tolist() == ["sparse"]
    with pytest.raises(InputError, match="79 labels for 80 feature rows"):
        linear_probes(x, {**y, "test": y["test"][:-1]})
    with pytest.raises(InputError, match="'val' split"):
        linear_probes({"train": x["train"]}, {"train": y["train"]})
