"""benchmarks/gpu_smoke.py: every code path at tiny sizes on the CPU; a clear refusal
without CUDA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_smoke.py"
SECTIONS = {"kernels", "training", "throughput", "grid", "encoders", "codes", "latency"}


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "MEDSAE_PROGRESS": "0", **(env or {})},
    )


def test_without_cuda_it_refuses_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "gpu_smoke.json"
    proc = _run("--out", str(out), env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2, proc.stderr
    assert "no CUDA device here" in proc.stderr and "nothing written" in proc.stderr
    assert not out.exists()


@pytest.mark.slow
def test_a_cpu_dry_run_covers_every_section(tmp_path: Path) -> None:
    out = tmp_path / "dry.json"
    proc = _run("--dry-run-cpu", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["mode"] == "dry-run-cpu" and result["errors"] == {}
    assert set(result["sections"]) == SECTIONS == set(result["section_seconds"])
    s = result["sections"]
    assert s["kernels"]["fp32_within_1e-4"] and s["kernels"]["bf16_within_2pct"]
    training = s["training"]
    assert training["resume_ok"] and training["resumed_from_step"] > 0
    # the CPU is deterministic: resumed, repeated and deterministic runs are identical
    assert training["resume_max_abs_weight_diff"] == 0.0
    assert training["repeat_max_abs_weight_diff"] == 0.0
    assert training["deterministic_max_abs_weight_diff"] == 0.0
    assert all("samples_per_second" in v for v in s["throughput"].values())
    assert {"samples_per_second", "data_wait_fraction", "syncs_per_step"} <= set(s["grid"])
    assert s["encoders"]["cosine_above_0.999"]
    assert s["codes"]["nnz_device"] == s["codes"]["nnz_cpu"]
    assert {"query_encode_ms", "spatial_features_ms"} == set(s["latency"])
