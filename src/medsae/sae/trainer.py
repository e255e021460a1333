"""Training a grid of SAEs in one pass over the data, with exact resume.

Every batch is read once and every SAE of the grid takes one optimiser step on it. Each SAE
has its own Adam optimiser (learning rate scaled with its dictionary size unless set), a
linear warm-up then cosine decay, and the decoder constraint (gradient parallel to the rows
projected out before the step, rows renormalised after it).

Checkpoints (``train_state.pt``, written through a temporary file and a rename) hold every
SAE's weights and buffers, optimiser and scheduler states, the step counter (which fixes the
data position, see :mod:`medsae.sae.data`), the torch RNG state and the history so far. A run
resumed from any checkpoint ends bit-identical on CPU to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsae.errors import ArtifactError
from medsae.precision import autocast as precision_autocast
from medsae.precision import deterministic_algorithms, matmul_precision
from medsae.progress import console, make_progress, plain_column
from medsae.sae.base import SparseAutoencoder
from medsae.sae.config import SAEConfig, TrainConfig
from medsae.sae.data import TrainStream
from medsae.sae.feed import ChunkFeed
from medsae.sae.io import TRAIN_STATE
from medsae.sae.registry import build_sae, get, sae_config

STATE_FILE = TRAIN_STATE


def rng_state(device: torch.device) -> dict[str, Any]:
    """The random-number states a checkpoint saves: torch's CPU generator and, when training
    on CUDA, every CUDA generator (as CPU ByteTensors)."""
    out: dict[str, Any] = {"torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda_rng"] = [t.cpu() for t in torch.cuda.get_rng_state_all()]
    return out


def rng_tensors(state: dict[str, Any]) -> dict[str, Any]:
    """The RNG states of a loaded checkpoint as the generators take them (CPU ByteTensors),
    whatever device or type they were loaded as."""

    def as_bytes(t: Any) -> torch.Tensor:
        return torch.as_tensor(t).detach().to(device="cpu", dtype=torch.uint8).contiguous()

    out: dict[str, Any] = {"torch_rng": as_bytes(state["torch_rng"])}
    if state.get("cuda_rng"):
        out["cuda_rng"] = [as_bytes(t) for t in state["cuda_rng"]]
    return out


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    """Restore :func:`rng_state` output (see :func:`rng_tensors`); the CUDA generators only
    when training on CUDA."""
    rng = rng_tensors(state)
    torch.set_rng_state(rng["torch_rng"])
    if rng.get("cuda_rng") and device.type == "cuda":
        torch.cuda.set_rng_state_all(rng["cuda_rng"])


class TrainingInterrupted(RuntimeError):
    """Raised by ``stop_after_steps`` to simulate a kill (the last checkpoint stays)."""


def run_seed(seed: int, run: str) -> int:
    """Initialisation seed of one run: the grid seed mixed with a hash of the run name."""
    return (seed * 1_000_003 + zlib.crc32(run.encode())) % (2**31)


def auxk_idle(cfgs: list[SAEConfig], total_samples: int) -> list[str]:
    """Runs whose AuxK loss can never engage: a latent is only dead after
    ``dead_after_samples`` samples without firing, and the whole training sees fewer.

    The default (1,000,000 samples) suits large slice sets; on a small one (e.g. the demo's 990
    training slices: 60 epochs of 3 batches of 256 = 46,080 samples) dead latents are never
    pushed back.
    """
    return [
        str(c.run)
        for c in cfgs
        if get(c.arch).uses_auxk
        and getattr(c, "aux_coefficient", 0) > 0
        and c.dead_after_samples >= total_samples
    ]


def lr_lambda(
    total_steps: int,
    warmup_fraction: float,
    min_ratio: float,
    schedule: str = "cosine",
    decay_fraction: float = 0.2,
) -> Callable[[int], float]:
    """Multiplier of the base lr: linear warm-up, then the schedule down to ``min_ratio``.

    * ``cosine``: cosine decay over all steps after the warm-up;
    * ``wsd`` (warm-up, stable, decay): constant, then a linear decay over the last
      ``decay_fraction`` of the steps;
    * ``constant``: constant after the warm-up.
    """
    warmup = round(warmup_fraction * total_steps)
    decay_start = total_steps - round(decay_fraction * total_steps)

    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        if schedule == "wsd":
            if step < decay_start:
                return 1.0
            progress = (step - decay_start) / max(1, total_steps - decay_start)
            return 1.0 - (1.0 - min_ratio) * min(progress, 1.0)
        progress = (step - warmup) / max(1, total_steps - warmup)
        progress = min(max(progress, 0.0), 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


class RunState:
    """One SAE of the grid with its optimiser, scheduler and history.

    An architecture trained by ``fit`` (its ``trained_by`` trait) has no optimiser: each batch
    goes to its :meth:`~medsae.sae.base.SparseAutoencoder.fit_step`.
    """

    def __init__(self, sae: SparseAutoencoder, tcfg: TrainConfig, total_steps: int) -> None:
        self.sae = sae
        self.lr = tcfg.lr_for(sae.cfg.n_latents)
        self.opt: torch.optim.Adam | None = None
        self.sched: torch.optim.lr_scheduler.LambdaLR | None = None
        if sae.trained_by == "sgd":
            kwargs: dict[str, Any] = {"lr": self.lr, "betas": tuple(tcfg.adam_betas)}
            if sae.W_dec.device.type in ("cpu", "cuda"):
                # one fused kernel per parameter: ~9x faster than the foreach path on CPU
                kwargs["fused"] = True
            self.opt = torch.optim.Adam(sae.parameters(), **kwargs)
            self.sched = torch.optim.lr_scheduler.LambdaLR(
                self.opt,
                lr_lambda(
                    total_steps,
                    tcfg.warmup_fraction,
                    tcfg.lr_min_ratio,
                    tcfg.lr_schedule,
                    tcfg.decay_fraction,
                ),
            )
        self.history: list[dict[str, Any]] = []
        self.last: dict[str, float] = {}
        self._stats: torch.Tensor | None = None
        self._lr = 0.0

    def step(
        self, x_raw_bd: torch.Tensor, autocast: contextlib.AbstractContextManager[Any]
    ) -> None:
        """One step; no host sync (the statistics stay on the device until
        :meth:`read_stats`)."""
        sae = self.sae
        x_bd = sae.preprocess(x_raw_bd)
        if self.opt is None or self.sched is None:
            with torch.no_grad():
                out = sae.fit_step(x_bd)
            lr = 0.0
        else:
            self.opt.zero_grad(set_to_none=True)
            with autocast:
                out = sae.train_loss(x_bd)
            out.loss.backward()
            sae.project_decoder_grad()
            self.opt.step()
            self.sched.step()
            sae.normalize_decoder()
            lr = self.opt.param_groups[0]["lr"]
        sae.after_step(out, x_bd.shape[0])
        self._lr = lr
        with torch.no_grad():
            dev = sae.W_dec.device
            self._stats = torch.stack(
                [
                    torch.as_tensor(v, device=dev).detach().float().reshape(())
                    for v in (out.loss, out.fvu, out.l0, out.aux_loss)
                ]
                + [sae.dead_mask.float().mean()]
            )

    def read_stats(self) -> dict[str, float]:
        """The last step's statistics on the host (one sync): ``last``."""
        if self._stats is not None:
            loss, fvu, l0, aux, dead = self._stats.tolist()
            self.last = {
                "loss": loss,
                "fvu": fvu,
                "l0": l0,
                "aux_loss": aux,
                "dead_fraction": dead,
                "lr": self._lr,
            }
        return self.last

    def state_dict(self) -> dict[str, Any]:
        """Weights and buffers, optimiser and scheduler states, history."""
        return {
            "model": self.sae.state_dict(),
            "opt": self.opt.state_dict() if self.opt is not None else None,
            "sched": self.sched.state_dict() if self.sched is not None else None,
            "history": self.history,
        }

    def load_state_dict(self, s: dict[str, Any]) -> None:
        """Load :meth:`state_dict` output (from any device) onto this run's device."""
        self.sae.load_state_dict(s["model"])
        if self.opt is not None and self.sched is not None:
            self.opt.load_state_dict(s["opt"])
            self.sched.load_state_dict(s["sched"])
        self.history = list(s["history"])


class GridTrainer:
    """Train the SAEs of ``cfgs`` together on ``stream`` (see module docstring)."""

    def __init__(
        self,
        cfgs: list[SAEConfig],
        tcfg: TrainConfig,
        stream: TrainStream,
        init_sample_bd: torch.Tensor,
        device: torch.device,
        state_dir: Path | None = None,
        val_fn: Callable[[SparseAutoencoder], dict[str, float]] | None = None,
    ) -> None:
        self.tcfg = tcfg
        self.stream = stream
        self.device = device
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.val_fn = val_fn
        bpe = stream.batches_per_epoch
        total = tcfg.epochs * bpe
        if tcfg.max_samples is not None:
            total = min(total, max(1, tcfg.max_samples // tcfg.batch_size))
        self.total_steps = total
        self.threshold_start = int(tcfg.threshold_start_fraction * total)
        self.step = 0
        self.stop_after_steps: int | None = None
        self.runs: dict[str, RunState] = {}
        # deterministic on CUDA: the dense reference kernels (the fast ones scatter with atomics)
        fast = tcfg.fast and not (tcfg.deterministic and device.type == "cuda")
        self.timings = {"seconds": 0.0, "data_wait_s": 0.0, "steps": 0}
        for cfg in cfgs:
            sae = build_sae(cfg, fast=fast, seed=run_seed(tcfg.seed, cfg.run)).to(device)
            sae.init_b_dec(sae.preprocess(init_sample_bd))
            self.runs[cfg.run] = RunState(sae, tcfg, total)
        self._maybe_resume()

    # ------------------------------------------------------------ checkpoint
    @property
    def state_path(self) -> Path | None:
        return self.state_dir / STATE_FILE if self.state_dir is not None else None

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "total_steps": self.total_steps,
            **rng_state(self.device),
            "runs": {
                name: {"cfg": r.sae.cfg.model_dump(mode="json"), **r.state_dict()}
                for name, r in self.runs.items()
            },
        }

    def save_checkpoint(self) -> None:
        """Write the resumable state atomically (temporary file + rename)."""
        if self.state_path is None:
            return
        from medsae.atomic import atomic_path

        state = self.state_dict()
        with atomic_path(self.state_path, needed=_state_bytes(state)) as tmp:
            torch.save(state, tmp)

    def _maybe_resume(self) -> None:
        path = self.state_path
        if path is None or not path.is_file():
            return
        try:
            # onto the CPU first: the RNG states must stay CPU tensors; weights and optimiser
            # states are copied onto the training device by load_state_dict
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # a damaged checkpoint: said by name, then training starts over
            from medsae.artifacts import describe

            console.print(
                f"{path}: damaged training checkpoint ({describe(e)}); it is removed and "
                "training starts over",
                style="yellow",
                markup=False,
            )
            path.unlink(missing_ok=True)
            return
        if state.get("total_steps") != self.total_steps or set(state["runs"]) != set(self.runs):
            return
        try:
            rng = rng_tensors(state)
        except Exception as e:  # nothing loaded yet: start over rather than fail every rerun
            console.print(
                f"{path}: unusable random-number state in the checkpoint ({e}); training "
                "starts over",
                style="yellow",
                markup=False,
            )
            return
        try:
            for name, r in self.runs.items():
                s = state["runs"][name]
                r.sae.cfg = sae_config(s["cfg"])
                r.load_state_dict(s)
        except Exception as e:
            raise ArtifactError(
                f"{path}: cannot resume from this checkpoint ({type(e).__name__}: {e}); "
                "delete it, or run again with --force to start over"
            ) from e
        restore_rng(rng, self.device)
        self.step = int(state["step"])

    def remove_checkpoint(self) -> None:
        if self.state_path is not None:
            self.state_path.unlink(missing_ok=True)

    # --------------------------------------------------------------- training
    def fit(self) -> dict[str, SparseAutoencoder]:
        """Train until ``total_steps``; returns the SAEs by run name.

        Chunks are read ahead on a background thread (:class:`~medsae.sae.feed.ChunkFeed`);
        the steps never wait for the device except when a history row is logged (every
        ``log_every_steps``, at epoch ends) and when a checkpoint is written. ``timings``
        holds the wall time, the time spent waiting for data and the steps done.
        """
        tcfg = self.tcfg
        last_ckpt = time.monotonic()
        t0 = time.perf_counter()
        done0 = self.step
        feed = ChunkFeed(self.stream, self.device, self.step, self.total_steps)
        autocast = precision_autocast(self.device, tcfg.precision)
        with (
            matmul_precision(self.device, tcfg.precision),
            deterministic_algorithms(tcfg.deterministic),
            make_progress(plain_column("{task.fields[stats]}")) as progress,
        ):
            task = progress.add_task(
                "train SAEs", total=self.total_steps, completed=self.step, stats=""
            )
            try:
                for epoch, _, x_bd in feed:
                    self._train_step(x_bd, autocast)
                    if self._log_due():
                        self._log_row(epoch, self.step % self.stream.batches_per_epoch == 0)
                        rate = (self.step - done0) * tcfg.batch_size / (time.perf_counter() - t0)
                        progress.update(task, stats=self._stats_text(rate))
                    progress.update(task, completed=self.step)
                    due = (
                        tcfg.checkpoint_every_steps is not None
                        and self.step % tcfg.checkpoint_every_steps == 0
                    )
                    if due or time.monotonic() - last_ckpt > tcfg.checkpoint_every_seconds:
                        self.save_checkpoint()
                        last_ckpt = time.monotonic()
                    if self.stop_after_steps is not None and self.step >= self.stop_after_steps:
                        raise TrainingInterrupted(f"stopped after step {self.step}")
            finally:
                feed.close()
                self.timings["seconds"] += time.perf_counter() - t0
                self.timings["data_wait_s"] += feed.wait_s
                self.timings["steps"] += self.step - done0
        for r in self.runs.values():
            r.sae.end_training()
        return {name: r.sae for name, r in self.runs.items()}

    def _train_step(
        self, x_bd: torch.Tensor, autocast: contextlib.AbstractContextManager[Any]
    ) -> None:
        if self.step == self.threshold_start:
            for r in self.runs.values():
                r.sae.threshold_updates.zero_()
        for r in self.runs.values():
            r.step(x_bd, autocast)
        self.step += 1

    def _log_due(self) -> bool:
        return (
            self.step % self.tcfg.log_every_steps == 0
            or self.step % self.stream.batches_per_epoch == 0
            or self.step == self.total_steps
        )

    def _log_row(self, epoch: int, end_of_epoch: bool) -> None:
        validate = (
            self.val_fn is not None
            and end_of_epoch
            and ((epoch + 1) % self.tcfg.val_every_epochs == 0 or self.step == self.total_steps)
        )
        for r in self.runs.values():
            row: dict[str, Any] = {
                "step": self.step,
                "epoch": epoch,
                "samples": self.step * self.tcfg.batch_size,
            }
            row.update(r.read_stats())
            if validate and self.val_fn is not None:
                r.sae.eval()
                row.update({f"val_{k}": v for k, v in self.val_fn(r.sae).items()})
                r.sae.train()
            r.history.append(row)

    def _stats_text(self, rate: float) -> str:
        lasts = [r.last for r in self.runs.values() if r.last]
        if not lasts:
            return ""

        def mean(key: str) -> float:
            return float(np.mean([s[key] for s in lasts]))

        return (
            f"{rate:,.0f} samples/s  loss {mean('loss'):.4f}  FVU {mean('fvu'):.4f}  "
            f"L0 {mean('l0'):.1f}  dead {100 * mean('dead_fraction'):.1f}%"
        )


def _state_bytes(state: Any) -> int:
    """Bytes of the tensors in a (nested) state: the size of its checkpoint file, roughly."""
    if isinstance(state, torch.Tensor):
        return int(state.numel() * state.element_size())
    if isinstance(state, dict):
        return sum(_state_bytes(v) for v in state.values())
    if isinstance(state, list | tuple):
        return sum(_state_bytes(v) for v in state)
    return 0
