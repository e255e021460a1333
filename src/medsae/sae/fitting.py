"""Training a grid of SAEs on any data: :func:`fit`, the path the ``train`` stage runs.

``fit(data, config)`` takes a NumPy array (memory-mapped is fine), a torch tensor, rows of an
embedding store (:class:`Rows`, what the stage passes) or an iterable of batches, and applies
everything the stage applies, because the stage calls it:

1. the grid of ``config`` (:func:`~medsae.sae.config.expand_grid`) on the data's dimension;
2. torch's CPU threads (``threads``, default all cores) on the chosen device;
3. one pass over the training rows: NaN/Inf rows are an error naming them, and the mean
   squared norm gives the ``scale`` transform's factor ``1 / sqrt(mean ||x||^2)``;
4. ``b_dec`` of every SAE at the geometric median of ``median_sample`` training rows (seeded);
5. :class:`~medsae.sae.trainer.GridTrainer`: one pass per batch for the whole grid, AuxK,
   the JumpReLU threshold and its restart at ``threshold_start_fraction``, checkpoints when
   ``state_dir`` is given (resumable), validation figures when ``val`` is given;
6. the ``scale`` factor folded into the weights (the SAEs take raw inputs) and eval mode.

Arrays and store rows stream in shuffled chunks exactly as the stage reads its store (every
epoch a fresh permutation seeded by ``(seed, epoch)``), so the stage and ``fit`` on the same
rows give identical weights. An iterable of batches is read once, in its order, re-cut into
``batch_size`` rows; it needs ``max_samples``, and its first ``median_sample`` rows give the
statistics of steps 3 and 4 (they are trained on as well).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medsae.device import resolve_device
from medsae.errors import InputError
from medsae.progress import console
from medsae.sae.base import SparseAutoencoder
from medsae.sae.checkpoint import save_sae
from medsae.sae.config import SAEConfig, TrainConfig
from medsae.sae.data import TrainStream, check_finite, scan_rows
from medsae.sae.evaluation import val_summary
from medsae.sae.grid import expand_grid
from medsae.sae.io import GRID, HISTORY
from medsae.sae.trainer import GridTrainer, auxk_idle


class ArrayRows:
    """An ``(N, d)`` array (NumPy, memory-mapped or torch) read like an embedding store."""

    def __init__(self, x: Any, name: str = "array") -> None:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        if not hasattr(x, "shape") or len(x.shape) != 2 or x.shape[1] == 0:
            raise InputError(
                name, f"expected an (N, d) array of rows, got {getattr(x, 'shape', x)!r}"
            )
        self.x = x
        self.n_rows, self.dim = int(x.shape[0]), int(x.shape[1])
        self.folder = name

    def read(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.x[np.asarray(rows, dtype=np.int64)], dtype=np.float32)


@dataclass
class Rows:
    """Some rows of a source with ``read(rows)``, ``dim`` and ``folder`` (an
    :class:`~medsae.encode.store.EmbeddingStore`, an :class:`ArrayRows`); ``table`` names the
    rows' slice ids in errors."""

    source: Any
    rows: np.ndarray
    table: pd.DataFrame | None = None

    @classmethod
    def of(cls, data: Any, name: str) -> Rows:
        if isinstance(data, Rows):
            return data
        source = ArrayRows(data, name)
        return cls(source, np.arange(source.n_rows, dtype=np.int64))


class BatchStream:
    """An iterable of batches re-cut into ``batch_size`` rows: one pass of ``total_steps``
    batches (the interface of :class:`~medsae.sae.data.TrainStream`)."""

    def __init__(self, head: list[np.ndarray], rest: Iterator[Any], batch_size: int, steps: int):
        self.head, self.rest = head, rest
        self.batch_size = batch_size
        self.batches_per_epoch = steps

    def _rows(self) -> Iterator[np.ndarray]:
        yield from self.head
        for b in self.rest:
            yield _as_batch(b)

    def epoch_batches(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        buffer = np.zeros((0, 0), np.float32)
        index = 0
        for block in self._rows():
            buffer = block if buffer.size == 0 else np.concatenate([buffer, block])
            while len(buffer) >= self.batch_size:
                batch, buffer = buffer[: self.batch_size], buffer[self.batch_size :]
                if index >= start_batch:
                    yield index, batch
                index += 1
                if index >= self.batches_per_epoch:
                    return
        raise InputError(
            "data",
            f"the batches ended after {index * self.batch_size + len(buffer):,} rows, before "
            f"max_samples ({self.batches_per_epoch * self.batch_size:,}); lower max_samples",
        )


def _as_batch(b: Any) -> np.ndarray:
    if isinstance(b, torch.Tensor):
        b = b.detach().cpu().numpy()
    arr = np.asarray(b, dtype=np.float32)
    if arr.ndim != 2:
        raise InputError("data", f"every batch must be (B, d), got shape {arr.shape}")
    return arr


@dataclass
class TrainedGrid:
    """What :func:`fit` returns: the trained SAEs by run name (eval mode, taking raw inputs),
    their training histories, the skipped grid combinations and the runs whose AuxK never
    engaged. :meth:`save` writes them as the ``train`` stage does."""

    saes: dict[str, SparseAutoencoder]
    history: dict[str, list[dict[str, Any]]]
    steps: int
    samples: int
    skipped: list[dict[str, str]] = field(default_factory=list)
    auxk_idle: list[str] = field(default_factory=list)
    trainer: GridTrainer | None = field(default=None, repr=False)

    def __getitem__(self, run: str) -> SparseAutoencoder:
        return self.saes[run]

    @property
    def grid(self) -> dict[str, Any]:
        """The content of ``grid.json``."""
        return {"runs": sorted(self.saes), "skipped": self.skipped, "auxk_idle": self.auxk_idle}

    def save(self, folder: str | Path) -> Path:
        """``folder/<run>/`` (``cfg.json``, ``sae.safetensors``, ``history.csv``) for every run,
        and ``folder/grid.json``; every run folder loads with :func:`medsae.sae.load_sae`."""
        folder = Path(folder)
        for name, sae in self.saes.items():
            save_sae(folder / name, sae)
            pd.DataFrame(self.history[name]).to_csv(folder / name / HISTORY, index=False)
        (folder / GRID).write_text(json.dumps(self.grid, indent=2, sort_keys=True))
        return folder


def fit(
    data: Any,
    config: TrainConfig | None = None,
    *,
    val: Any = None,
    encoder: str = "",
    state_dir: str | Path | None = None,
    save_to: str | Path | None = None,
    stop_after_steps: int | None = None,
) -> TrainedGrid:
    """Train the grid of ``config`` on ``data`` (see the module docstring for every step).

    ``data``: an ``(N, d)`` array or tensor, :class:`Rows`, or an iterable of ``(B, d)``
    batches (then ``config.max_samples`` is required); ``val``: validation rows (an array,
    tensor or :class:`Rows`) scored into the history at epoch ends; ``encoder``: recorded in
    every SAE's config; ``state_dir``: where resumable checkpoints go (a rerun with the same
    arguments resumes); ``save_to``: also write the grid there (:meth:`TrainedGrid.save`);
    ``stop_after_steps`` simulates an interruption (tests).
    """
    cfg = config or TrainConfig()
    device = resolve_device(cfg.device, "train.device")
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads or max(1, os.cpu_count() or 1))
    val_rows = Rows.of(val, "val") if val is not None else None
    if isinstance(data, Rows) or hasattr(data, "shape"):
        train = Rows.of(data, "data")
        dim = int(train.source.dim)
        if len(train.rows) == 0:
            raise InputError(str(train.source.folder), "no training rows")
        stats = scan_rows(train.source, train.rows, train.table, cfg.chunk_rows)
        stream: Any = TrainStream(
            train.source, train.rows, cfg.batch_size, cfg.seed, cfg.chunk_rows
        )
        rng = np.random.default_rng([cfg.seed, 7])
        n_sample = min(cfg.median_sample, len(train.rows))
        sample_idx = np.sort(rng.choice(train.rows, size=n_sample, replace=False))
        sample = train.source.read(sample_idx)
        mean_sq, n_train = stats.mean_sq_norm, f"{len(train.rows):,} training rows"
    else:
        stream, sample = _batch_stream(data, cfg)
        dim = sample.shape[1]
        check_finite(sample, np.arange(len(sample)), None, "data")
        mean_sq = float(np.einsum("ij,ij->", sample, sample, dtype=np.float64)) / len(sample)
        n_train = "the data"
    if val_rows is not None:
        scan_rows(val_rows.source, val_rows.rows, val_rows.table, cfg.chunk_rows)
    runs, skipped = grid_runs(cfg, dim, encoder)
    scale = 1.0 / float(np.sqrt(max(mean_sq, 1e-24)))
    for r in runs:
        r.input_scale = scale if cfg.input_transform == "scale" else 1.0
    val_fn = None
    if val_rows is not None:
        v = val_rows

        def val_fn(sae: SparseAutoencoder) -> dict[str, float]:
            return val_summary(sae, v.source, v.rows)

    trainer = GridTrainer(
        runs,
        cfg,
        stream,
        torch.from_numpy(sample).to(device),
        device,
        state_dir=Path(state_dir) if state_dir is not None else None,
        val_fn=val_fn,
    )
    trainer.stop_after_steps = stop_after_steps
    budget = trainer.total_steps * cfg.batch_size
    idle = auxk_idle(runs, budget)
    if idle:
        console.print(
            f"train: AuxK never engages for {len(idle)} of {len(runs)} runs: "
            f"dead_after_samples ({cfg.dead_after_samples:,}) is not below the training "
            f"budget ({budget:,} samples); set --dead-after-samples (train.dead_after_samples) to a few epochs "
            f"of {n_train} to revive dead latents",
            style="yellow",
        )
    saes = trainer.fit()
    trainer.save_checkpoint()  # before folding: a resumed run reloads the unfolded weights
    for name, sae in list(saes.items()):
        if sae.skip_reason is not None:  # a fitted baseline that cannot take this data
            console.print(f"train: skipped {name}: {sae.skip_reason}", style="yellow")
            skipped = [*skipped, {"combo": name, "reason": sae.skip_reason}]
            del saes[name]
    for sae in saes.values():
        sae.eval()
        sae.fold_input_scale()
    grid = TrainedGrid(
        saes=saes,
        history={name: r.history for name, r in trainer.runs.items() if name in saes},
        steps=trainer.step,
        samples=trainer.step * cfg.batch_size,
        skipped=skipped,
        auxk_idle=sorted(idle),
        trainer=trainer,
    )
    if save_to is not None:
        grid.save(save_to)
    return grid


def grid_runs(
    cfg: TrainConfig, dim: int, encoder: str = "", quiet: bool = False
) -> tuple[list[SAEConfig], list[dict[str, str]]]:
    """The SAEs of the grid on ``dim``-d inputs and the skipped combinations (printed unless
    ``quiet``); an :class:`InputError` when none is valid."""
    runs, skipped = expand_grid(cfg, dim, encoder=encoder)
    for s in skipped if not quiet else []:
        console.print(f"train: skipped {s['combo']}: {s['reason']}", style="yellow")
    if not runs:
        raise InputError("train config", f"no valid SAE in the grid; skipped: {skipped}")
    return runs, skipped


def _batch_stream(data: Iterable[Any], cfg: TrainConfig) -> tuple[BatchStream, np.ndarray]:
    """The stream of an iterable of batches and its first ``median_sample`` rows."""
    if not isinstance(data, Iterable):
        raise InputError(
            "data",
            f"expected an (N, d) array, a tensor or an iterable of batches, got {type(data)}",
        )
    if cfg.max_samples is None:
        raise InputError(
            "train.max_samples", "training on an iterable of batches needs a sample budget"
        )
    it = iter(data)
    head: list[np.ndarray] = []
    n = 0
    while n < cfg.median_sample:
        b = next(it, None)
        if b is None:
            break
        head.append(_as_batch(b))
        n += len(head[-1])
    if not head:
        raise InputError("data", "the iterable holds no batches")
    sample = np.concatenate(head)[: cfg.median_sample]
    steps = max(1, cfg.max_samples // cfg.batch_size)
    return BatchStream(head, it, cfg.batch_size, steps), sample
