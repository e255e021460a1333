"""The small workspace every documented example runs against (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

# The demo's own grid and stage settings (so the run names in the docs exist), on a tiny
# phantom with few epochs and a light evaluation.
DOCS_DEMO: dict[str, dict[str, object]] = {
    "phantom": {"ct_subjects": 8, "mri_subjects": 4, "size_xy": 32, "n_slices": 24},
    "prepare": {"step": 4, "size": 64},
    "encode": {"batch_size": 64},  # the demo's options (128 px, multiscale)
    "train": {"epochs": 3, "batch_size": 64, "val_every_epochs": 1},
    "evaluate": {
        "l2_grid": [1e-2],
        "max_iter": 30,
        "recovery_ns": [1, 10],
        "recovery_methods": ["mean_diff"],
    },
    "index": {"search": {"eval_queries": 20, "sweep_k": [5]}},
    "report": {"n_features": 4, "top_slices": 3, "fingerprint_examples": 1},
}


@pytest.fixture(scope="session")
def docs_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished demo workspace on a tiny phantom (every stage, the demo's run names)."""
    from medsae.pipeline import run_demo

    root = Path(tmp_path_factory.mktemp("docs")) / "demo"
    run_demo(root, **DOCS_DEMO)  # type: ignore[arg-type]
    return root
