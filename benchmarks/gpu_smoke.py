"""GPU smoke benchmark: does medsae run right, and how fast, on one CUDA GPU (< 10 min on an H100).

    python benchmarks/gpu_smoke.py                       # writes benchmarks/results/gpu_smoke.json
    python benchmarks/gpu_smoke.py --dry-run-cpu --out X # tiny sizes on the CPU, same keys

Without a CUDA device (and without ``--dry-run-cpu``) it says so on stderr and exits with
status 2, measuring and writing nothing. ``--dry-run-cpu`` runs every code path at tiny
sizes on the CPU to check the script (the test suite does); its figures are not GPU figures,
it never writes the results file unless ``--out`` names one, and its JSON says
``"mode": "dry-run-cpu"``. Exit status 1 when a section failed (its error is in ``errors``).

Sections (``sections.<name>``):

* ``kernels``: fast vs reference kernels in fp32 (TF32 off) for every architecture, forward
  loss and gradients (largest relative difference, target 1e-4), and the bf16 loss against
  fp32 (target within 2%);
* ``training``: a grid trained, interrupted and resumed on the device (must not crash), the
  largest weight difference from an uninterrupted run, between two identical runs, and
  between two ``deterministic`` runs; what ``torch.use_deterministic_algorithms`` refuses
  of the fast kernels;
* ``throughput``: samples/s and peak memory of one Matryoshka SAE step at d = 1,024, D = 16k
  and 64k, batch 2,048 and 8,192, in bf16, fp32 and TF32;
* ``grid``: a 4-SAE grid for about 30 s from a store on disk: samples/s, the time split
  between waiting for data and the rest, and the host synchronisations per step counted with
  ``torch.cuda.set_sync_debug_mode``;
* ``encoders``: slices/s of EfficientNet-Lite0 and random DINOv3 ViT-S and ViT-L at 224 px
  with batch 32/128/512, and the GPU-vs-CPU embedding cosine (target > 0.999);
* ``codes``: codes of a trained SAE on the device vs the CPU;
* ``latency``: one query image's embedding and one slice's spatial features.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from medsae.encode.store import EmbeddingStore, shard_name, write_store
from medsae.precision import autocast, deterministic_algorithms, matmul_precision
from medsae.sae.config import SAEConfig, TrainConfig
from medsae.sae.data import TrainStream
from medsae.sae.grid import expand_grid
from medsae.sae.registry import build_sae, sae_config
from medsae.sae.trainer import GridTrainer, RunState, TrainingInterrupted

RESULT = Path(__file__).parent / "results" / "gpu_smoke.json"
REAL = SimpleNamespace(
    d=1024, latents=[16_384, 65_536], batches=[2048, 8192], k=40, steps=10,
    kern_d=64, kern_D=512, kern_k=8, train_rows=8192, train_d=256, train_epochs=4, train_batch=256, min_steps=10,
    grid_rows=65_536, grid_D=16_384, grid_seconds=30.0, enc_size=224,
    enc_batches=[32, 128, 512], cosine_slices=64, vitl_cosine_slices=16, latency_reps=20,
)  # fmt: skip
DRY = SimpleNamespace(
    d=16, latents=[32], batches=[16], k=4, steps=1,
    kern_d=8, kern_D=32, kern_k=3, train_rows=512, train_d=8, train_epochs=2, train_batch=64, min_steps=3,
    grid_rows=512, grid_D=32, grid_seconds=0.2, enc_size=32,
    enc_batches=[2], cosine_slices=2, vitl_cosine_slices=2, latency_reps=1,
)  # fmt: skip


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


ARCHES = ("topk", "batchtopk", "matryoshka", "matryoshka-perlevel", "relu")


def sae_cfg(arch: str, d: int, D: int, k: int) -> SAEConfig:
    levels = [D // 16, D // 4, D] if arch.startswith("matryoshka") else [D]
    fields: dict[str, Any] = {"arch": arch, "d_in": d, "n_latents": D, "levels": levels}
    if arch != "relu":
        fields["k"] = k
    if arch == "matryoshka-perlevel":
        fields["k_levels"] = [max(1, k // 4), max(1, k // 2), k]
    return sae_config(**fields)


def kernels(dev: torch.device, s: SimpleNamespace, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for arch in ARCHES:
        cfg = sae_cfg(arch, s.kern_d, s.kern_D, s.kern_k)
        x = torch.randn(256, s.kern_d, generator=torch.Generator().manual_seed(1)).to(dev)
        losses, grads = [], []
        with matmul_precision(dev, "fp32"):
            for fast in (True, False):
                sae = build_sae(cfg, fast=fast, seed=0).to(dev)
                sae.samples_since_fire[: s.kern_D // 2] = 10**9  # AuxK engaged
                loss = sae.train_loss(sae.preprocess(x)).loss
                loss.backward()
                losses.append(loss.detach())
                grads.append({n: p.grad for n, p in sae.named_parameters()})
            with autocast(dev, "bf16"):
                bf16 = sae.train_loss(sae.preprocess(x)).loss.detach().float()
        out[arch] = {
            "loss_rel_diff": rel_diff(losses[0], losses[1]),
            "grad_rel_diff": max(rel_diff(grads[0][n], grads[1][n]) for n in grads[1]),
            "bf16_loss_rel_diff": rel_diff(bf16, losses[1]),
        }
    out["fp32_within_1e-4"] = all(
        v["loss_rel_diff"] <= 1e-4 and v["grad_rel_diff"] <= 1e-4
        for k, v in out.items()
        if isinstance(v, dict)
    )
    out["bf16_within_2pct"] = all(
        v["bf16_loss_rel_diff"] <= 0.02 for v in out.values() if isinstance(v, dict)
    )
    return out


def planted_store(folder: Path, rows: int, d: int, seed: int = 0) -> EmbeddingStore:
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((4 * d, d)).astype(np.float32)
    idx = rng.integers(0, len(feats), size=(rows, 4))
    x = feats[idx].sum(1) + 0.01 * rng.standard_normal((rows, d)).astype(np.float32)
    half = rows // 2
    return write_store(folder, "smoke", [(shard_name(0), x[:half]), (shard_name(1), x[half:])])


def trainer(
    store: EmbeddingStore, tcfg: TrainConfig, dev: torch.device, state: Path | None
) -> GridTrainer:
    runs, _ = expand_grid(tcfg, store.dim, encoder="smoke")
    rows = np.arange(store.n_rows)
    stream = TrainStream(store, rows, tcfg.batch_size, tcfg.seed, tcfg.chunk_rows)
    sample = torch.from_numpy(store.read(rows[:512]))
    return GridTrainer(runs, tcfg, stream, sample, dev, state)


def max_weight_diff(a: GridTrainer, b: GridTrainer) -> float:
    return max(
        float((t - b.runs[n].sae.state_dict()[k]).abs().max())
        for n, r in a.runs.items()
        for k, t in r.sae.state_dict().items()
        if t.is_floating_point()
    )


def training(dev: torch.device, s: SimpleNamespace, tmp: Path) -> dict[str, Any]:
    store = planted_store(tmp / "train-store", s.train_rows, s.train_d)
    tcfg = TrainConfig(
        arch=["topk", "batchtopk", "matryoshka"], levels=[[s.train_d // 4, s.train_d * 2]],
        k=[[4, 16]], epochs=s.train_epochs, batch_size=s.train_batch,
        chunk_rows=4 * s.train_batch, checkpoint_every_steps=5,
        dead_after_samples=2048, log_every_steps=10, device=str(dev),
    )  # fmt: skip
    full = trainer(store, tcfg, dev, None)
    full.fit()
    part = trainer(store, tcfg, dev, tmp / "state")
    part.stop_after_steps = full.total_steps // 2 + 2
    with contextlib.suppress(TrainingInterrupted):
        part.fit()
    resumed = trainer(store, tcfg, dev, tmp / "state")
    resumed_from = resumed.step
    resumed.fit()
    again = trainer(store, tcfg, dev, None)
    again.fit()
    det = tcfg.model_copy(update={"deterministic": True})
    d1, d2 = trainer(store, det, dev, None), trainer(store, det, dev, None)
    refused: dict[str, str] = {}
    for t in (d1, d2):
        try:
            t.fit()
        except RuntimeError as e:
            refused["deterministic_run"] = str(e).splitlines()[0]
    fast = build_sae(sae_cfg("matryoshka", s.kern_d, s.kern_D, s.kern_k), fast=True).to(dev)
    fast.samples_since_fire[: s.kern_D // 2] = 10**9
    x = torch.randn(64, s.kern_d, device=dev)
    try:
        with deterministic_algorithms(True):
            fast.train_loss(fast.preprocess(x)).loss.backward()
    except RuntimeError as e:
        refused["fast_kernels"] = str(e).splitlines()[0]
    return {
        "steps": full.total_steps,
        "resumed_from_step": resumed_from,
        "resume_ok": resumed.step == full.total_steps,
        "resume_max_abs_weight_diff": max_weight_diff(full, resumed),
        "repeat_max_abs_weight_diff": max_weight_diff(full, again),
        "deterministic_max_abs_weight_diff": (
            None if "deterministic_run" in refused else max_weight_diff(d1, d2)
        ),
        "deterministic_refuses": refused,
        "_sae": full.runs[next(iter(full.runs))].sae,
        "_store": store,
    }


def step_rate(
    dev: torch.device, cfg: SAEConfig, B: int, precision: str, steps: int
) -> dict[str, Any]:
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    sae = build_sae(cfg, seed=0).to(dev)
    run = RunState(sae, TrainConfig(lr=1e-4), 10_000)
    x = torch.nn.functional.normalize(torch.randn(B, cfg.d_in, device=dev), dim=1)
    try:
        with matmul_precision(dev, precision):
            for _ in range(3):
                run.step(x, autocast(dev, precision))
            sync(dev)
            t0 = time.perf_counter()
            for _ in range(steps):
                run.step(x, autocast(dev, precision))
            sync(dev)
            seconds = time.perf_counter() - t0
    except torch.cuda.OutOfMemoryError:
        return {"error": "out of memory"}
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
    return {"samples_per_second": steps * B / seconds, "peak_memory_gib": peak}


def throughput(dev: torch.device, s: SimpleNamespace, tmp: Path) -> dict[str, Any]:
    out = {}
    for D in s.latents:
        cfg = sae_cfg("matryoshka", s.d, D, s.k)
        for B in s.batches:
            for precision in ("bf16", "fp32", "tf32"):
                out[f"matryoshka_D{D}_B{B}_{precision}"] = step_rate(
                    dev, cfg, B, precision, s.steps
                )
    return out


def grid(dev: torch.device, s: SimpleNamespace, tmp: Path) -> dict[str, Any]:
    store = planted_store(tmp / "grid-store", s.grid_rows, s.d, seed=1)
    tcfg = TrainConfig(
        arch=["topk", "batchtopk", "matryoshka", "matryoshka-perlevel"],
        levels=[[s.grid_D // 16, s.grid_D // 4, s.grid_D]], k=[[s.k // 4, s.k // 2, s.k]],
        epochs=1000, batch_size=min(2048, s.grid_rows // 4), chunk_rows=s.grid_rows // 4,
        log_every_steps=50, device=str(dev),
    )  # fmt: skip
    warm = trainer(store, tcfg, dev, None)
    warm.stop_after_steps = s.min_steps
    t0 = time.perf_counter()
    with contextlib.suppress(TrainingInterrupted):
        warm.fit()
    per_step = (time.perf_counter() - t0) / s.min_steps
    steps = max(s.min_steps, int(s.grid_seconds / per_step))
    t = trainer(store, tcfg, dev, None)
    t.stop_after_steps = steps
    syncs: int | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if dev.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            t.fit()
        except TrainingInterrupted:
            pass
        finally:
            if dev.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
                syncs = sum("synchroniz" in str(w.message) for w in caught)
    sync(dev)
    seconds = t.timings["seconds"]
    logs = steps // tcfg.log_every_steps
    return {
        "saes": list(t.runs),
        "steps": t.timings["steps"],
        "seconds": seconds,
        "samples_per_second": t.timings["steps"] * tcfg.batch_size / seconds,
        "data_wait_fraction": t.timings["data_wait_s"] / seconds,
        "step_fraction": 1 - t.timings["data_wait_s"] / seconds,
        "log_rows": logs,
        "syncs": syncs,
        "syncs_per_step": None if syncs is None else syncs / max(1, t.timings["steps"]),
        "peak_memory_gib": (
            torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
        ),
    }


def _encoders(s: SimpleNamespace, tmp: Path) -> dict[str, Callable[[str], Any]]:
    from medsae.encode.random_init import random_encoder
    from medsae.encode.registry import get_encoder

    vits, vitl = "dinov3-vits16", "dinov3-vitl16"
    if s is DRY:  # a tiny ViT stands in for both
        from transformers import DINOv3ViTConfig

        tiny = tmp / "tiny-vit"
        DINOv3ViTConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            patch_size=8, num_register_tokens=2, image_size=s.enc_size,
        ).save_pretrained(tiny)  # fmt: skip
        vits = vitl = str(tiny)
    return {
        "efficientnet-lite0": lambda dev: get_encoder(
            "efficientnet-lite0", device=dev, input_size=s.enc_size
        ),
        "random-dinov3-vits16": lambda dev: random_encoder(vits, input_size=s.enc_size, device=dev),
        "random-dinov3-vitl16": lambda dev: random_encoder(vitl, input_size=s.enc_size, device=dev),
    }


def encoders(dev: torch.device, s: SimpleNamespace, tmp: Path) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    side = 256 if s is REAL else s.enc_size
    images = rng.integers(0, 256, size=(max(s.enc_batches), side, side), dtype=np.uint8)
    out: dict[str, Any] = {}
    for name, make in _encoders(s, tmp).items():
        enc = make(str(dev))
        rates = {}
        for B in s.enc_batches:
            enc.encode(images[:B])
            sync(dev)
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                enc.encode(images[:B])
                sync(dev)
                times.append(time.perf_counter() - t0)
            rates[str(B)] = B / statistics.median(times)
        n = s.vitl_cosine_slices if "vitl" in name else s.cosine_slices
        a = torch.from_numpy(enc.encode(images[:n]))
        b = torch.from_numpy(make("cpu").encode(images[:n]))
        cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
        out[name] = {"slices_per_second": rates, "cosine_vs_cpu_min": float(cos.min()), "n": n}
    out["cosine_above_0.999"] = all(
        v["cosine_vs_cpu_min"] > 0.999 for v in out.values() if isinstance(v, dict)
    )
    return out


def codes(dev: torch.device, sae: Any, store: EmbeddingStore) -> dict[str, Any]:
    from medsae.sae.stage import encode_to_csr

    sae = sae.eval()
    with matmul_precision(dev, "fp32"):
        on_dev = encode_to_csr(sae.to(dev), store, 4096, progress=False)
    on_cpu = encode_to_csr(sae.to("cpu"), store, 4096, progress=False)
    diff = (on_dev - on_cpu).tocsr()
    same_support = (on_dev != 0).astype(np.int8) - (on_cpu != 0).astype(np.int8)
    return {
        "nnz_device": int(on_dev.nnz),
        "nnz_cpu": int(on_cpu.nnz),
        "support_differences": int(abs(same_support).sum()),
        "max_abs_diff": float(abs(diff).max()) if diff.nnz else 0.0,
    }


def latency(dev: torch.device, s: SimpleNamespace, tmp: Path) -> dict[str, Any]:
    enc = _encoders(s, tmp)["efficientnet-lite0"](str(dev))
    image = np.random.default_rng(1).integers(0, 256, size=(1, 256, 256), dtype=np.uint8)
    out = {}
    for what, fn in (("query_encode", enc.encode), ("spatial_features", enc.spatial_features)):
        fn(image)
        times = []
        for _ in range(s.latency_reps):
            t0 = time.perf_counter()
            fn(image)
            sync(dev)
            times.append(time.perf_counter() - t0)
        out[f"{what}_ms"] = 1000 * statistics.median(times)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dry-run-cpu", action="store_true", help="tiny sizes on the CPU (checks)")
    ap.add_argument("--device", default="cuda", help="CUDA device (default cuda)")
    ap.add_argument("--out", type=Path, default=None, help=f"result file (default {RESULT})")
    args = ap.parse_args()
    if args.dry_run_cpu:
        dev, s, out_path = torch.device("cpu"), DRY, args.out
    else:
        if not torch.cuda.is_available():
            print(
                "gpu_smoke: no CUDA device here (torch.cuda.is_available() is False, torch "
                f"{torch.__version__}, CUDA build {torch.version.cuda}); nothing measured, "
                "nothing written. Run it on a GPU machine, or --dry-run-cpu to check the script.",
                file=sys.stderr,
            )
            return 2
        dev, s, out_path = torch.device(args.device), REAL, args.out or RESULT
    t_all = time.perf_counter()
    result: dict[str, Any] = {
        "mode": "dry-run-cpu" if args.dry_run_cpu else "cuda",
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "command": "python benchmarks/gpu_smoke.py " + " ".join(sys.argv[1:]),
        "sections": {},
        "section_seconds": {},
        "errors": {},
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        trained: dict[str, Any] = {}
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("kernels", lambda: kernels(dev, s, tmp)),
            ("training", lambda: trained.update(training(dev, s, tmp)) or trained),
            ("throughput", lambda: throughput(dev, s, tmp)),
            ("grid", lambda: grid(dev, s, tmp)),
            ("encoders", lambda: encoders(dev, s, tmp)),
            ("codes", lambda: codes(dev, trained["_sae"], trained["_store"])),
            ("latency", lambda: latency(dev, s, tmp)),
        ]
        for name, fn in steps:
            print(f"[gpu_smoke] {name}", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            try:
                value = fn()
                result["sections"][name] = {
                    k: v for k, v in value.items() if not str(k).startswith("_")
                }
            except Exception as e:  # one failed section must not lose the others
                result["errors"][name] = f"{type(e).__name__}: {e}"
                traceback.print_exc()
            result["section_seconds"][name] = round(time.perf_counter() - t0, 2)
    result["seconds"] = round(time.perf_counter() - t_all, 1)
    text = json.dumps(result, indent=2, sort_keys=True, default=str)
    print(text)
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(text)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
