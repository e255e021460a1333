"""The workspace contract: skip when unchanged, rebuild when stale, resume, never lose data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medsae.workspace import (
    StageResult,
    Workspace,
    artifact_key,
    fingerprint_tree,
    read_manifest,
    run_stage,
    safe_name,
    stage_status,
)


def _writer(content: str, calls: list[str]):
    def build(tmp: Path) -> StageResult:
        calls.append(content)
        (tmp / "out.txt").write_text(content)
        return StageResult(counts={"n": 1})

    return build


def test_build_skip_and_stale(tmp_path: Path) -> None:
    out = tmp_path / "art"
    calls: list[str] = []
    o1 = run_stage(out, "s", {"a": 1}, {"in": "x"}, _writer("one", calls))
    assert o1.status == "built"
    assert (out / "out.txt").read_text() == "one"
    m = read_manifest(out)
    assert m is not None and m["config"] == {"a": 1} and m["counts"] == {"n": 1}
    o2 = run_stage(out, "s", {"a": 1}, {"in": "x"}, _writer("two", calls))
    assert o2.skipped and calls == ["one"]
    assert stage_status(out, "s", {"a": 2}, {"in": "x"})[0] == "stale"
    o3 = run_stage(out, "s", {"a": 2}, {"in": "x"}, _writer("three", calls))
    assert o3.status == "rebuilt" and "config changed (a)" in o3.reason
    assert (out / "out.txt").read_text() == "three"
    o4 = run_stage(out, "s", {"a": 2}, {"in": "y"}, _writer("four", calls))
    assert "input 'in' changed" in o4.reason
    o5 = run_stage(out, "s", {"a": 2}, {"in": "y"}, _writer("five", calls), force=True)
    assert o5.status == "rebuilt" and (out / "out.txt").read_text() == "five"


def test_interrupted_build_keeps_old_artifact_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "art"
    run_stage(out, "s", {"a": 1}, {}, _writer("old", []))

    def failing(tmp: Path) -> StageResult:
        (tmp / "piece-1").write_text("done")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_stage(out, "s", {"a": 2}, {}, failing)
    # the old artifact is whole and still says what it is
    assert (out / "out.txt").read_text() == "old"
    assert read_manifest(out)["config"] == {"a": 1}

    seen: list[bool] = []

    def resuming(tmp: Path) -> StageResult:
        seen.append((tmp / "piece-1").exists())
        (tmp / "out.txt").write_text("new")
        return StageResult()

    run_stage(out, "s", {"a": 2}, {}, resuming)
    assert seen == [True]
    assert (out / "out.txt").read_text() == "new"
    assert not (tmp_path / ".art.partial").exists()


def test_partial_with_other_key_is_discarded(tmp_path: Path) -> None:
    out = tmp_path / "art"

    def failing(tmp: Path) -> StageResult:
        (tmp / "stale-piece").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run_stage(out, "s", {"a": 1}, {}, failing)
    seen: list[bool] = []

    def build(tmp: Path) -> StageResult:
        seen.append((tmp / "stale-piece").exists())
        return StageResult()

    run_stage(out, "s", {"a": 99}, {}, build)
    assert seen == [False]


def test_fingerprint_tree_changes_with_content(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("1")
    f1 = fingerprint_tree(tmp_path)
    (tmp_path / "b.txt").write_text("2")
    f2 = fingerprint_tree(tmp_path)
    assert f1 != f2


def test_artifact_key_requires_finished_artifact(tmp_path: Path) -> None:
    from medsae.errors import ArtifactError

    with pytest.raises(ArtifactError, match="no finished artifact"):
        artifact_key(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError):
        artifact_key(tmp_path / "bad")


def test_workspace_paths_are_safe(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    assert ws.sae("dinov3", "../../etc").parent == ws.saes("dinov3")
    assert safe_name("a/b") == "a_b"
    with pytest.raises(ValueError):
        safe_name("...")


def test_synthetic_workspace_roundtrip(tmp_path: Path) -> None:
    from medsae.data.table import read_anatomy, slices_with_split
    from medsae.encode.store import EmbeddingStore
    from medsae.sae.codes_io import load_codes
    from tests.support.synthetic import make_synthetic_workspace

    ws, truth = make_synthetic_workspace(tmp_path / "ws", n_subjects=6, slices_per_plane=4)
    table = slices_with_split(ws.slices, ws.split)
    assert set(table["split"]) <= {"train", "val", "test"}
    store = EmbeddingStore(ws.embeddings(truth.encoder))
    assert store.read().shape == (len(table), truth.dim)
    rows = [5, 0, len(table) - 1]
    assert store.read(rows).shape == (3, truth.dim)
    import numpy as np

    np.testing.assert_allclose(store.read(rows)[1], store.read()[0])
    l2 = store.read(normalize="l2")
    np.testing.assert_allclose(np.linalg.norm(l2, axis=1), 1.0, rtol=1e-5)
    codes = load_codes(ws.codes(truth.encoder, truth.run))
    assert codes.shape == (len(table), truth.n_latents)
    anat = read_anatomy(ws.slices)
    assert anat.presence.shape[0] == len(table)
    assert json.loads((ws.slices / "structures.json").read_text())[0] == "spleen"


def test_a_second_build_of_the_same_artifact_is_refused_while_one_runs(tmp_path: Path) -> None:
    import subprocess
    import sys

    from medsae.errors import ArtifactError

    out = tmp_path / "art"
    lock = tmp_path / ".art.lock"
    holder = subprocess.Popen(  # another process building the same artifact
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            f"f = open({str(lock)!r}, 'a+')\n"
            "fcntl.flock(f.fileno(), fcntl.LOCK_EX)\n"
            "f.write('pid 4242'); f.flush()\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        calls: list[str] = []
        with pytest.raises(ArtifactError, match=r"already building this artifact \(pid 4242\)"):
            run_stage(out, "demo", {"a": 1}, {}, _writer("x", calls))
        assert calls == [] and not out.exists()
        assert not (tmp_path / ".art.partial").exists()  # the other build's files are untouched
    finally:
        holder.kill()
        holder.wait()
    # the lock dies with its process: the next build runs (nothing to clean up by hand)
    outcome = run_stage(out, "demo", {"a": 1}, {}, _writer("x", calls))
    assert outcome.status == "built" and calls == ["x"]
    assert run_stage(out, "demo", {"a": 1}, {}, _writer("x", calls)).status == "skipped"
