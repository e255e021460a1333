"""Atomic writes clean up after themselves: a failed write leaves no temporary file, a full
disk is said in the project's words (the file and the space it needs), temporaries of dead
processes go at the next write, none reach a finished artifact; a damaged training
checkpoint is reported by name."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from medsae.atomic import DiskFull, atomic_path
from medsae.sae.trainer import GridTrainer as Trainer
from medsae.workspace import StageResult, run_stage, write_json_atomic


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp-*"))


def _no_room(monkeypatch: pytest.MonkeyPatch, free: int = 10_000) -> None:
    usage = shutil.disk_usage("/")
    monkeypatch.setattr("medsae.atomic.shutil.disk_usage", lambda p: usage._replace(free=free))


def test_a_full_disk_during_a_checkpoint_is_named_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.save on a full disk raises a RuntimeError without an errno ("unexpected pos"):
    it is recognised by the free space left, the temporary file is removed each time."""
    state_path = tmp_path / "saes" / ".enc.partial" / "train_state.pt"
    state = {"w": torch.zeros(1000, 100)}
    trainer = SimpleNamespace(state_path=state_path, state_dict=lambda: state)
    Trainer.save_checkpoint(trainer)  # type: ignore[arg-type]
    before = state_path.read_bytes()

    def full_disk_save(obj, f, *a, **k):
        Path(f).write_bytes(b"x" * 1000)
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64")

    monkeypatch.setattr(torch, "save", full_disk_save)
    _no_room(monkeypatch)
    for _ in range(3):  # retries never pile up temporaries
        with pytest.raises(DiskFull) as err:
            Trainer.save_checkpoint(trainer)  # type: ignore[arg-type]
        message = str(err.value)
        assert str(state_path) in message and "no space left" in message
        assert "MB" in message and "unexpected pos" not in message
    assert _temporaries(tmp_path) == []
    assert state_path.read_bytes() == before  # the previous checkpoint is kept


def test_an_enospc_write_is_named_with_the_space_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(text: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", lambda self, text: fail(text))
    with pytest.raises(DiskFull, match=r"x\.json: no space left to write it \(needs about"):
        write_json_atomic(tmp_path / "x.json", {"a": "b" * 5000})
    assert _temporaries(tmp_path) == []


def test_a_failed_write_removes_its_temporary(tmp_path: Path) -> None:
    with pytest.raises(ValueError), atomic_path(tmp_path / "a.bin") as tmp:
        tmp.write_bytes(b"half")
        raise ValueError("the writer failed")
    assert _temporaries(tmp_path) == [] and not (tmp_path / "a.bin").exists()


def test_stale_temporaries_of_dead_processes_go_at_the_next_write(tmp_path: Path) -> None:
    dead = tmp_path / f".state.pt.tmp-{_dead_pid()}"
    live = tmp_path / f".other.json.tmp-{os.getppid()}"
    dead.write_bytes(b"x" * 100)
    live.write_bytes(b"y")
    write_json_atomic(tmp_path / "m.json", {"k": 1})
    assert not dead.exists() and live.exists()


def test_no_temporary_reaches_a_finished_artifact(tmp_path: Path) -> None:
    out = tmp_path / "ws" / "saes" / "enc"

    def build(partial: Path) -> StageResult:
        (partial / f".train_state.pt.tmp-{_dead_pid()}").write_bytes(b"left by a kill")
        (partial / f".train_state.pt.tmp-{os.getpid()}").write_bytes(b"left by a failure")
        (partial / "run").mkdir()
        (partial / "run" / f".weights.tmp-{os.getpid()}").write_bytes(b"x")
        (partial / "run" / "cfg.json").write_text("{}")
        return StageResult()

    run_stage(out, "train", {}, {}, build, quiet=True)
    assert _temporaries(out) == []
    assert (out / "run" / "cfg.json").is_file()


def test_a_damaged_training_checkpoint_is_reported(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medsae.progress import console

    monkeypatch.setattr(console, "_width", 10_000)  # the long temporary path on one line
    path = tmp_path / "train_state.pt"
    path.write_bytes(b"PK\x03\x04 not a checkpoint")
    trainer = SimpleNamespace(state_path=path, device="cpu")
    Trainer._maybe_resume(trainer)  # type: ignore[arg-type]
    said = " ".join(capsys.readouterr().err.split())
    assert str(path) in said and "damaged training checkpoint" in said
    assert "starts over" in said and not path.exists()


def test_saving_an_sae_and_a_shard_on_a_full_disk_names_the_file_and_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    from medsae.encode.store import save_shard
    from medsae.sae.checkpoint import save_sae
    from medsae.sae.registry import build_sae, sae_config

    sae = build_sae(sae_config(arch="topk", d_in=8, n_latents=16, k=2))
    save_sae(tmp_path / "run", sae)
    weights = (tmp_path / "run" / "sae.safetensors").read_bytes()
    save_shard(tmp_path, "emb_000.npy", np.zeros((4, 8), np.float32))
    shard = (tmp_path / "emb_000.npy").read_bytes()

    def no_room(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("medsae.sae.checkpoint.save_file", no_room)
    monkeypatch.setattr("medsae.encode.store.save_npy", no_room)
    for _ in range(2):
        with pytest.raises(DiskFull, match=r"sae\.safetensors"):
            save_sae(tmp_path / "run", sae)
        with pytest.raises(DiskFull, match=r"emb_000\.npy"):
            save_shard(tmp_path, "emb_000.npy", np.ones((4, 8), np.float32))
    assert (tmp_path / "run" / "sae.safetensors").read_bytes() == weights
    assert (tmp_path / "emb_000.npy").read_bytes() == shard
    assert _temporaries(tmp_path) == []
