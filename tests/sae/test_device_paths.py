"""The training paths a GPU takes, run on the CPU: resume from a state loaded off the CPU,
CUDA RNG states, the sync-free AuxK selection, no host sync in a step, the read-ahead feed,
precision and determinism options. Tests marked ``cuda`` run the same on a GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medsae.sae import trainer as trainer_mod
from medsae.sae.config import SAEConfig, TrainConfig
from medsae.sae.data import TrainStream
from medsae.sae.feed import ChunkFeed
from medsae.sae.grid import expand_grid
from medsae.sae.registry import build_sae, sae_config
from medsae.sae.trainer import GridTrainer, RunState, TrainingInterrupted

from .conftest import RESUME_CFG, make_store, planted

D_IN = 16
ARCHES = ("topk", "batchtopk", "matryoshka", "matryoshka-perlevel", "relu")


def _small_cfg(arch: str, k_aux: int) -> SAEConfig:
    fields: dict[str, Any] = {"arch": arch, "d_in": 8, "n_latents": 32, "levels": [32]}
    if arch.startswith("matryoshka"):
        fields["levels"] = [8, 32]
    if arch != "relu":
        fields.update(k=3, k_aux=k_aux)
    if arch == "matryoshka-perlevel":
        fields["k_levels"] = [2, 3]
    return sae_config(**fields)


TCFG = RESUME_CFG


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return planted(1024, D_IN, 32, 3, seed=1)


def _trainer(
    tmp: Path, x: np.ndarray, tcfg: TrainConfig = TCFG, device: str = "cpu", state: bool = True
) -> GridTrainer:
    store = make_store(tmp / "store", x) if not (tmp / "store").exists() else None
    from medsae.encode.store import EmbeddingStore

    store = store or EmbeddingStore(tmp / "store")
    runs, _ = expand_grid(tcfg, D_IN, encoder="toy")
    stream = TrainStream(store, np.arange(len(x)), tcfg.batch_size, tcfg.seed, tcfg.chunk_rows)
    dev = torch.device(device)
    return GridTrainer(
        runs, tcfg, stream, torch.from_numpy(x[:256]), dev, tmp / "state" if state else None
    )


def _same_weights(a: GridTrainer, b: GridTrainer) -> None:
    for name, r in a.runs.items():
        sa, sb = r.sae.state_dict(), b.runs[name].sae.state_dict()
        for key in sa:
            assert torch.equal(sa[key].cpu(), sb[key].cpu()), (name, key)


def test_resume_from_a_state_loaded_off_the_cpu(
    tmp_path: Path, data: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint read as it would be with map_location=cuda (RNG state no CPU
    ByteTensor: simulated here by a float copy, the same refusal) still resumes exactly; the
    load itself is onto the CPU."""
    full = _trainer(tmp_path / "full", data, state=False)
    full.fit()
    part = _trainer(tmp_path / "part", data)
    part.stop_after_steps = 23
    with pytest.raises(TrainingInterrupted):
        part.fit()
    real_load = torch.load
    seen: list[Any] = []

    def load_off_cpu(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("map_location"))
        state = real_load(*args, **kwargs)
        state["torch_rng"] = state["torch_rng"].float()  # what set_rng_state refuses
        return state

    monkeypatch.setattr(trainer_mod.torch, "load", load_off_cpu)
    resumed = _trainer(tmp_path / "part", data)
    assert seen == ["cpu"] and resumed.step == 20
    resumed.fit()
    _same_weights(full, resumed)


def test_cuda_rng_states_are_saved_and_restored_as_cpu_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    saved = [torch.arange(16, dtype=torch.uint8), torch.arange(16, 32, dtype=torch.uint8)]
    restored: list[list[torch.Tensor]] = []
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: saved)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.append(states))
    cuda = torch.device("cuda")
    state = trainer_mod.rng_state(cuda)
    assert [t.device.type for t in state["cuda_rng"]] == ["cpu", "cpu"]
    state["cuda_rng"] = [t.to(torch.int64) for t in state["cuda_rng"]]  # loaded another way
    cpu_before = torch.get_rng_state()
    trainer_mod.restore_rng(state, cuda)
    assert torch.equal(torch.get_rng_state(), cpu_before)
    assert len(restored) == 1
    for got, want in zip(restored[0], saved, strict=True):
        assert got.dtype == torch.uint8 and got.device.type == "cpu" and torch.equal(got, want)
    restored.clear()
    trainer_mod.restore_rng(state, torch.device("cpu"))  # a CPU run leaves CUDA alone
    assert not restored
    assert "cuda_rng" not in trainer_mod.rng_state(torch.device("cpu"))


def test_an_unusable_rng_state_starts_over(
    tmp_path: Path, data: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    part = _trainer(tmp_path, data)
    part.stop_after_steps = 6
    with pytest.raises(TrainingInterrupted):
        part.fit()
    real_load = torch.load

    def broken(*args: Any, **kwargs: Any) -> Any:
        state = real_load(*args, **kwargs)
        state["torch_rng"] = "not a state"
        return state

    monkeypatch.setattr(trainer_mod.torch, "load", broken)
    assert _trainer(tmp_path, data).step == 0


@pytest.mark.parametrize("arch", ARCHES)
def test_sync_free_auxk_matches_the_cpu_selection(arch: str) -> None:
    """The fixed-size AuxK selection a GPU uses gives the CPU's loss and gradients, with and
    without dead latents, on the fast and the reference kernels."""
    cfg = _small_cfg(arch, k_aux=6)
    x = torch.randn(10, 8, generator=torch.Generator().manual_seed(3))
    for dead in (0, 5, 20):
        grads = []
        for sync_free in (False, True):
            for fast in (True, False):
                sae = build_sae(cfg, fast=fast, seed=0)
                sae.sync_free = sync_free
                sae.samples_since_fire[:dead] = 10**7
                out = sae.train_loss(sae.preprocess(x))
                out.loss.backward()
                grads.append((out.loss.detach(), out.aux_loss, sae.W_enc.grad, sae.W_dec.grad))
        for loss, aux, g_enc, g_dec in grads[1:]:
            torch.testing.assert_close(loss, grads[0][0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(aux, grads[0][1], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(g_enc, grads[0][2], rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(g_dec, grads[0][3], rtol=1e-4, atol=1e-6)


class _HostReads:
    """Counts the Python-level tensor calls that wait for the device while active: item,
    tolist, nonzero, numpy, float/int/bool conversions and indexing by a bool mask (whose
    result size only the device knows)."""

    NAMES = ("item", "tolist", "nonzero", "numpy", "__float__", "__int__", "__bool__")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.on = False
        for name in self.NAMES:
            monkeypatch.setattr(torch.Tensor, name, self._wrap(getattr(torch.Tensor, name)))
        getitem = torch.Tensor.__getitem__

        def masked(t: torch.Tensor, index: Any) -> Any:
            parts = index if isinstance(index, tuple) else (index,)
            if self.on and any(
                isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts
            ):
                self.count += 1
            return getitem(t, index)

        monkeypatch.setattr(torch.Tensor, "__getitem__", masked)

    def _wrap(self, real: Any) -> Any:
        def counted(t: torch.Tensor, *a: Any, **kw: Any) -> Any:
            if self.on:
                self.count += 1
            return real(t, *a, **kw)

        return counted


@pytest.mark.parametrize("arch", ARCHES)
def test_a_training_step_reads_nothing_back_from_the_device(
    arch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the GPU path a step of TopK or ReLU reads nothing on the host (AuxK engaged);
    every BatchTopK selection that searches candidates reads one flag, the exactness check
    of that search."""
    cfg = _small_cfg(arch, k_aux=4)
    sae = build_sae(cfg, seed=0)
    sae.sync_free = True
    sae.samples_since_fire[:10] = 10**7  # AuxK engaged
    run = RunState(sae, TrainConfig(lr=1e-3), 100)
    x = torch.randn(12, 8, generator=torch.Generator().manual_seed(0))
    reads = _HostReads(monkeypatch)
    run.step(x, torch.autocast("cpu", enabled=False))  # warm: lazy optimiser state
    reads.on = True
    run.step(x, torch.autocast("cpu", enabled=False))
    reads.on = False
    # BatchTopK on CPU tensors takes the threshold search (3 reads: the candidates above the
    # threshold, their count, the winners); on a GPU the candidate search (1 read)
    if arch in ("topk", "relu"):
        assert reads.count == 0, (arch, reads.count)
    else:
        assert reads.count <= 3 * len(cfg.levels), (arch, reads.count)
    stats = run.read_stats()
    assert set(stats) == {"loss", "fvu", "l0", "aux_loss", "dead_fraction", "lr"}


def test_the_feed_gives_the_stream_from_any_step(tmp_path: Path, data: np.ndarray) -> None:
    store = make_store(tmp_path / "store", data)
    stream = TrainStream(store, np.arange(len(data)), 64, 3, 192)
    bpe = stream.batches_per_epoch
    expected = [(e, b, x) for e in range(3) for b, x in stream.epoch_batches(e) if e * bpe + b < 40]
    for start in (0, 7, 16, 39):
        got = list(ChunkFeed(stream, torch.device("cpu"), start, 40))
        assert len(got) == 40 - start
        for (e, b, x), (e2, b2, x2) in zip(got, expected[start:], strict=True):
            assert (e, b) == (e2, b2) and np.array_equal(x.numpy(), x2)


def test_the_feed_hands_over_read_errors_and_stops(tmp_path: Path, data: np.ndarray) -> None:
    store = make_store(tmp_path / "store", data)
    stream = TrainStream(store, np.arange(len(data)), 64, 3, 192)
    calls = {"n": 0}
    real = stream.store.read

    def failing(rows: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk gone")
        return real(rows)

    stream.store.read = failing  # type: ignore[method-assign]
    feed = ChunkFeed(stream, torch.device("cpu"), 0, 40)
    with pytest.raises(OSError, match="disk gone"):
        for _ in feed:
            pass
    assert feed._thread is None
    early = ChunkFeed(
        TrainStream(store, np.arange(len(data)), 64, 3, 192), torch.device("cpu"), 0, 40
    )
    for i, _ in enumerate(early):
        if i == 2:
            break
    early.close()
    assert early._thread is None


def test_bf16_keeps_the_threshold_statistic_in_fp32() -> None:
    cfg = sae_config(arch="batchtopk", d_in=8, n_latents=32, k=3)
    sae = build_sae(cfg, seed=0)
    x = sae.preprocess(torch.randn(16, 8, generator=torch.Generator().manual_seed(1)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sae.train_loss(x)
        enc, _ = sae._encode_train(x)
    assert out.min_kept.dtype == torch.float32
    vals, rows, cols = enc[0]
    assert vals.dtype == torch.bfloat16  # the selection ran in bf16
    exact = (x - sae.b_dec) @ sae.W_enc.t() + sae.b_enc
    j = torch.where(vals > 0, vals.float(), torch.inf).argmin()
    want = exact[rows[j], cols[j]].detach()
    torch.testing.assert_close(out.min_kept, want, rtol=1e-6, atol=1e-7)  # fp32, not bf16
    assert vals[j].float() != want


def test_precision_and_determinism_are_training_options(tmp_path: Path, data: np.ndarray) -> None:
    base = TCFG.model_copy(update={"epochs": 1, "checkpoint_every_steps": None})
    a = _trainer(tmp_path / "a", data, base.model_copy(update={"deterministic": True}), state=False)
    a.fit()
    assert not torch.are_deterministic_algorithms_enabled()  # restored after the run
    b = _trainer(tmp_path / "b", data, base, state=False)
    b.fit()
    _same_weights(a, b)  # the CPU is deterministic either way
    c = _trainer(tmp_path / "c", data, base.model_copy(update={"precision": "bf16"}), state=False)
    c.fit()
    hist = next(iter(c.runs.values())).history
    assert np.isfinite(hist[-1]["fvu"]) and hist[-1]["fvu"] < 1.5
    assert c.timings["steps"] == c.total_steps and c.timings["data_wait_s"] >= 0


def test_matryoshka_trains_under_deterministic_algorithms() -> None:
    cfg = sae_config(arch="matryoshka", d_in=8, n_latents=32, levels=[8, 16, 32], k=3)
    sae = build_sae(cfg, seed=0)
    x = sae.preprocess(torch.randn(16, 8, generator=torch.Generator().manual_seed(2)))
    torch.use_deterministic_algorithms(True)
    try:
        out = sae.train_loss(x)
        out.loss.backward()
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.isfinite(out.loss)


@pytest.mark.cuda
def test_resume_on_cuda_is_close_to_an_uninterrupted_run(tmp_path: Path, data: np.ndarray) -> None:
    """On CUDA the fast kernels add with atomics: a resumed run matches an uninterrupted one
    to rounding (1e-4 relative), not bit for bit."""
    full = _trainer(tmp_path / "full", data, device="cuda", state=False)
    full.fit()
    part = _trainer(tmp_path / "part", data, device="cuda")
    part.stop_after_steps = 23
    with pytest.raises(TrainingInterrupted):
        part.fit()
    resumed = _trainer(tmp_path / "part", data, device="cuda")
    assert resumed.step == 20
    resumed.fit()
    for name, r in full.runs.items():
        for key, t in r.sae.state_dict().items():
            other = resumed.runs[name].sae.state_dict()[key]
            torch.testing.assert_close(other, t, rtol=1e-4, atol=1e-5)
