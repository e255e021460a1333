"""A workspace on a full disk: ``medsae prepare`` stops with one line naming the file and the
cause, and the previous ``slices`` artifact stays byte for byte; a rerun with room resumes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from medsae.data import PrepareConfig, prepare
from medsae.data.table import open_images
from medsae.workspace import Workspace

SMALL = ["--size", "16", "--step", "4"]
LARGE = ["--size", "64", "--step", "1", "--label-maps"]

LIMITED = textwrap.dedent(
    """
    import resource, signal, sys
    limit = int(sys.argv[1])
    if limit:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    from medsae.cli import main
    sys.argv = ["medsae", *sys.argv[2:]]
    main()
    """
)


def _medsae(args: list[str], limit: int = 0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LIMITED, str(limit), *args],
        env={**os.environ, "MEDSAE_PROGRESS": "0", "COLUMNS": "4000"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _check_refused(proc: subprocess.CompletedProcess[str], ws: Path, cause: str) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    line = next(x for x in proc.stderr.splitlines() if x.startswith("error:"))
    assert cause in line and str(ws / ".slices.partial") in line, line


def test_file_size_limit_stops_prepare_and_keeps_the_artifact(
    phantom_root: Path, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    assert _medsae(["prepare", str(phantom_root), "-w", str(ws), *SMALL]).returncode == 0
    before = _snapshot(ws / "slices")
    proc = _medsae(["prepare", str(phantom_root), "-w", str(ws), *LARGE], limit=64 << 10)
    _check_refused(proc, ws, "File too large")
    assert _snapshot(ws / "slices") == before
    # with room again, the same command finishes the build it left
    done = _medsae(["prepare", str(phantom_root), "-w", str(ws), *LARGE])
    assert done.returncode == 0, done.stderr[-3000:]
    assert open_images(Workspace(ws).slices).shape[1:] == (64, 64)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> object:
    """Mount a tmpfs of a given size (root only; skipped where mounting is not allowed)."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        where = tmp_path / "tmpfs"
        where.mkdir()
        pages = -(-size // 4096) * 4096
        res = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={pages}", "tmpfs", str(where)],
            capture_output=True,
        )
        if res.returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], check=False)


def test_full_tmpfs_stops_prepare_in_the_concatenation(
    phantom_root: Path, tmp_path: Path, small_tmpfs: object
) -> None:
    """Room for the pieces but not for their concatenation: a clean error, not a SIGBUS."""
    probe = Workspace(tmp_path / "probe")
    cfg = PrepareConfig(source=str(phantom_root), size=64, label_maps=True)
    prepare(probe, cfg)
    large = sum(p.stat().st_size for p in probe.slices.rglob("*") if p.is_file())
    prepare(
        Workspace(tmp_path / "probe-small"),
        PrepareConfig(source=str(phantom_root), size=16, step=4),
    )
    small = sum(p.stat().st_size for p in (tmp_path / "probe-small" / "slices").rglob("*"))
    mount = small_tmpfs  # type: ignore[assignment]
    ws = mount(small + int(large * 1.2) + (128 << 10)) / "ws"  # type: ignore[operator]
    assert _medsae(["prepare", str(phantom_root), "-w", str(ws), *SMALL]).returncode == 0
    before = _snapshot(ws / "slices")
    proc = _medsae(["prepare", str(phantom_root), "-w", str(ws), *LARGE])
    assert proc.returncode != -7, "killed by SIGBUS"
    _check_refused(proc, ws, "No space left on device")
    # a file of the concatenation itself (images.npy, label_maps.npy), not of a piece
    assert re.search(re.escape(str(ws / ".slices.partial")) + r"/\w+\.npy:", proc.stderr)
    assert _snapshot(ws / "slices") == before
