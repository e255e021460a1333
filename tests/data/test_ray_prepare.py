"""``prepare`` with the Ray backend (a local Ray instance of 2 CPUs): the local backend's bytes,
its failure records, and a resume after the driver was killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from medsae.data import PrepareConfig, prepare
from medsae.data.ray_backend import BYTES_PER_VOXEL, FALLBACK_MEMORY, task_memory, voxel_count
from medsae.data.sources import discover
from medsae.errors import StageFailures
from medsae.workspace import MANIFEST, Workspace

from .conftest import save_nifti

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[str]:
    """A local Ray instance; yields its address (for a second driver to join)."""
    ctx = ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False
    )
    yield str(ctx.address_info["address"])
    ray.shutdown()


def _files(folder: Path) -> dict[str, bytes]:
    """Every file of an artifact but its manifest (which holds timings), by relative name."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def test_ray_writes_the_local_bytes_and_failures(
    phantom_copy: Path, tmp_path: Path, local_ray: str
) -> None:
    img = phantom_copy / "ct" / "s0001" / "ct.nii.gz"
    img.write_bytes(img.read_bytes()[:300])  # a truncated gzip: that subject fails
    cfg = PrepareConfig(source=str(phantom_copy), size=16, step=4, label_maps=True)
    local, remote = Workspace(tmp_path / "local"), Workspace(tmp_path / "ray")
    ray_cfg = cfg.model_copy(update={"backend": "ray"})
    with pytest.raises(StageFailures) as err:
        prepare(remote, ray_cfg)
    assert err.value.failed == ["CT:s0001"] and not remote.slices.exists()
    a = prepare(local, cfg, allow_failures=True)
    b = prepare(remote, ray_cfg, allow_failures=True)
    assert a.manifest["key"] == b.manifest["key"]  # the backend is not part of the result
    assert a.manifest["counts"] == b.manifest["counts"]
    files = _files(local.slices)
    assert {"images.npy", "label_maps.npy", "slices.parquet", "failures.json"} <= set(files)
    assert files == _files(remote.slices)
    failure = json.loads(files["failures.json"])["failures"]
    assert [f["subject_key"] for f in failure] == ["CT:s0001"]
    assert "s0001/ct.nii.gz" in failure[0]["error"]


def test_task_memory_follows_the_volume(phantom_root: Path, tmp_path: Path) -> None:
    cases, _ = discover(phantom_root, PrepareConfig(source=str(phantom_root)))
    case = cases[0]
    assert voxel_count(case) == 24 * 24 * 32
    cfg = PrepareConfig(size=8)
    assert task_memory(case, cfg.model_copy(update={"label_maps": True})) > task_memory(case, cfg)
    big = replace(case, image=str(save_nifti(tmp_path / "big.nii.gz", np.zeros((64, 64, 64)))))
    grown = task_memory(big, cfg) - task_memory(case, cfg)
    assert grown >= (64**3 - 24 * 24 * 32) * BYTES_PER_VOXEL
    broken = replace(case, image=str(tmp_path / "missing.nii.gz"))
    assert voxel_count(broken) is None and task_memory(broken, cfg) == FALLBACK_MEMORY


KILLED_DRIVER = textwrap.dedent(
    """
    import json, os, signal, sys, time
    import medsae.data.ray_backend as rb
    from medsae.data import PrepareConfig, prepare

    def slow_after_two(case, config, piece):
        from medsae.data.prepare_stage import _run_one
        if not piece.endswith(("00000", "00001")):
            time.sleep(20)  # still running when the driver is killed
        return _run_one(case, config, piece)

    real = rb.prepare_with_ray

    def killed_after_two(todo, config, pieces, run_one, record):
        seen = []
        def rec(result):
            record(result)
            seen.append(result)
            if len(seen) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        real(todo, config, pieces, slow_after_two, rec)

    rb.prepare_with_ray = killed_after_two
    prepare(sys.argv[1], PrepareConfig(**json.loads(sys.argv[2])))
    """
)


def test_a_killed_driver_resumes(
    phantom_root: Path, tmp_path: Path, local_ray: str, capfd: pytest.CaptureFixture[str]
) -> None:
    cfg = PrepareConfig(source=str(phantom_root), size=16, step=4, label_maps=True)
    ws = Workspace(tmp_path / "ws")
    ray_cfg = cfg.model_copy(update={"backend": "ray", "ray_address": local_ray})
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_DRIVER, str(ws.root), ray_cfg.model_dump_json()],
        env={**os.environ, "MEDSAE_PROGRESS": "0"},
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    pieces = ws.root / ".slices.partial" / "pieces"
    done = sorted(p.name for p in pieces.iterdir() if (p / "summary.json").is_file())
    assert 2 <= len(done) < 5 and not ws.slices.exists()
    capfd.readouterr()
    resumed = prepare(ws, ray_cfg)
    assert f"resuming, {len(done)} of 5 volume(s) already done" in capfd.readouterr().err
    assert resumed.manifest["counts"]["volumes"] == 5
    reference = Workspace(tmp_path / "reference")
    prepare(reference, cfg)
    assert _files(ws.slices) == _files(reference.slices)
