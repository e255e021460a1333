"""Shared fixtures: one synthetic workspace evaluated once per test module."""

from __future__ import annotations

from pathlib import Path

import pytest

from medsae.evaluate.config import EvaluateConfig
from medsae.workspace import Workspace
from tests.support.synthetic import SyntheticTruth, make_synthetic_workspace


def small_config(**overrides: object) -> EvaluateConfig:
    """A fast configuration for the ~860-slice synthetic workspace."""
    base: dict[str, object] = {
        "min_examples": 5,
        "l2_grid": [1e-3, 1e-1],
        "max_iter": 60,
        "recovery_ns": [1, 2, 5, 10],
        "l1_path_length": 10,
        "l1_iter": 15,
        "mono_splits": ["train", "val", "test"],
        "mono_baseline_draws": 50,
    }
    base.update(overrides)
    return EvaluateConfig.model_validate(base)


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, SyntheticTruth]:
    return make_synthetic_workspace(Path(tmp_path_factory.mktemp("ws")))


@pytest.fixture(scope="session")
def evaluated(
    synthetic: tuple[Workspace, SyntheticTruth],
) -> tuple[Workspace, SyntheticTruth, Path]:
    from medsae.evaluate import evaluate

    ws, truth = synthetic
    outcome = evaluate(ws, truth.encoder, truth.run, small_config())
    return ws, truth, outcome.path
