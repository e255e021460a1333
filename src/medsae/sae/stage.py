"""The ``train`` and ``codes`` stages (through :func:`medsae.workspace.run_stage`).

``train``: ``WS/saes/<encoder>/`` is one artifact holding a folder per run of the grid
(``cfg.json``, ``sae.safetensors``, ``metrics.json``, ``history.csv``) plus ``grid.json``
(runs and skipped combinations). Inputs: the embeddings and split artifacts. Training
checkpoints live in the partial folder, so an interrupted build resumes where it stopped.

``codes``: ``WS/codes/<encoder>/<run>/`` holds the CSR codes of every slice (all splits).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from medsae.data.table import SLICES_FILE, slices_with_split
from medsae.device import describe_device, resolve_device
from medsae.encode.store import STORE_FILE, EmbeddingStore
from medsae.errors import ArtifactError, InputError
from medsae.precision import forward_precision
from medsae.progress import console, make_progress
from medsae.sae.base import SparseAutoencoder
from medsae.sae.checkpoint import load_sae
from medsae.sae.codes_io import save_codes
from medsae.sae.config import CodesConfig, TrainConfig
from medsae.sae.data import check_finite, scan_rows, split_rows
from medsae.sae.evaluation import evaluate_splits
from medsae.sae.fitting import Rows, fit, grid_runs
from medsae.sae.io import METRICS, trained_runs
from medsae.sae.token_data import EVAL_TOKENS, open_tokens, save_token_codes, split_tokens
from medsae.workspace import (
    StageOutcome,
    StageResult,
    Workspace,
    artifact_key,
    require_artifact,
    run_stage,
)

SPLITS = ("train", "val", "test")


def _open(
    workspace: str | Path | Workspace, encoder: str
) -> tuple[Workspace, EmbeddingStore, pd.DataFrame]:
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    emb = require_artifact(
        ws.embeddings(encoder), f"embeddings of encoder {encoder!r}", "run `medsae encode` first"
    )
    require_artifact(ws.slices, "slice table", "run `medsae prepare` first")
    require_artifact(ws.split, "split", "run `medsae split` first")
    store = EmbeddingStore(emb)
    table = slices_with_split(ws.slices, ws.split)
    if len(table) != store.n_rows:
        raise ArtifactError(
            f"{emb / STORE_FILE} holds {store.n_rows} embedding rows but "
            f"{ws.slices / SLICES_FILE} has {len(table)} slices: the embeddings are not of this "
            "slice table; rerun `medsae encode` (with --force if it reports up to date)"
        )
    return ws, store, table


def train(
    workspace: str | Path | Workspace,
    encoder: str,
    config: TrainConfig | None = None,
    force: bool = False,
    *,
    stop_after_steps: int | None = None,
) -> StageOutcome:
    """Train the grid of ``config`` on the train split of ``encoder``'s embeddings.

    ``stop_after_steps`` simulates an interruption (tests): training raises
    :class:`~medsae.sae.trainer.TrainingInterrupted` after that step, leaving the partial
    folder and its last checkpoint for a resumed call.
    """
    cfg = config or TrainConfig()
    device = resolve_device(cfg.device, "train.device")
    ws, store, table = _open(workspace, encoder)
    grid_runs(cfg, store.dim, encoder, quiet=True)  # an invalid grid fails before any work
    rows = {s: split_rows(table, s) for s in SPLITS}
    tokens = open_tokens(ws.embeddings(encoder), table, ws.slices / SLICES_FILE)
    source, named = store, table
    if tokens is not None:  # an SAE on tokens: the rows are the split's tokens
        source, named = tokens.tokens, None
        rows = {
            s: split_tokens(tokens, table, s, None if s == "train" else EVAL_TOKENS) for s in SPLITS
        }
    if len(rows["train"]) == 0:
        raise InputError(str(ws.split), "the train split is empty: nothing to train on")
    if cfg.batch_size > len(rows["train"]):
        console.print(
            f"train: batch_size {cfg.batch_size:,} is larger than the train split "
            f"({len(rows['train']):,} rows); training with batches of {len(rows['train']):,} "
            "(set --batch-size to choose)",
            style="yellow",
            markup=False,
        )
        cfg = cfg.model_copy(update={"batch_size": len(rows["train"])})
    inputs = {"embeddings": artifact_key(ws.embeddings(encoder)), "split": artifact_key(ws.split)}

    def build(tmp: Path) -> StageResult:
        scan_rows(source, rows["test"], named, cfg.chunk_rows)  # fit checks train and val
        grid = fit(
            Rows(source, rows["train"], named),
            cfg,
            val=Rows(source, rows["val"], named),
            encoder=encoder,
            state_dir=tmp,
            stop_after_steps=stop_after_steps,
        )
        grid.save(tmp)
        for name, sae in grid.saes.items():
            metrics = evaluate_splits(sae, source, rows)
            metrics["training"] = {"steps": grid.steps, "samples": grid.samples}
            if tokens is not None:
                metrics["training"]["rows"] = "tokens"
            (tmp / name / METRICS).write_text(json.dumps(metrics, indent=2, sort_keys=True))
        if grid.trainer is not None:
            grid.trainer.remove_checkpoint()
        return StageResult(
            counts={
                "runs": len(grid.saes),
                "skipped": len(grid.skipped),
                "steps": grid.steps,
                "train_rows": len(rows["train"]),
            },
            extra=grid.grid,
        )

    outcome = run_stage(
        ws.saes(encoder), "train", cfg, inputs, build, force=force, runtime=describe_device(device)
    )
    from medsae.sae.runs import remove_gone

    remove_gone(ws, encoder)
    return outcome


def encode_to_csr(
    sae: SparseAutoencoder,
    store: EmbeddingStore,
    batch_size: int,
    table: pd.DataFrame | None = None,
    progress: bool = True,
) -> sp.csr_matrix:
    """Sparse codes of every row of ``store``, built batch by batch (never dense in full)."""
    n, D = store.n_rows, sae.cfg.n_latents
    indptr = [np.zeros(1, dtype=np.int64)]
    indices: list[np.ndarray] = []
    data: list[np.ndarray] = []
    offset = 0
    with make_progress() as bar:
        task = bar.add_task("encode codes", total=n, visible=progress)
        for start, x in store.iter_chunks(batch_size):
            rows = np.arange(start, start + len(x))
            check_finite(x, rows, table, str(store.folder))
            codes = sae.encode(x)
            r, c = codes.nonzero(as_tuple=True)
            indices.append(c.cpu().numpy().astype(np.int32))
            data.append(codes[r, c].float().cpu().numpy())
            counts = np.bincount(r.cpu().numpy(), minlength=len(x))
            indptr.append(offset + np.cumsum(counts))
            offset += int(counts.sum())
            bar.update(task, advance=len(x))
    return sp.csr_matrix(
        (
            np.concatenate(data) if data else np.zeros(0, np.float32),
            np.concatenate(indices) if indices else np.zeros(0, np.int32),
            np.concatenate(indptr),
        ),
        shape=(n, D),
    )


def write_codes(
    workspace: str | Path | Workspace,
    encoder: str,
    run: str | None = None,
    config: CodesConfig | None = None,
    force: bool = False,
) -> list[StageOutcome]:
    """Write ``WS/codes/<encoder>/<run>/`` for one run, or for every run when ``run`` is None."""
    cfg = config or CodesConfig()
    device = resolve_device(cfg.device, "codes.device")
    ws, store, table = _open(workspace, encoder)
    saes_dir = require_artifact(
        ws.saes(encoder), f"SAEs of encoder {encoder!r}", "run `medsae train` first"
    )
    available = trained_runs(ws, encoder)
    names = available if run is None else [run]
    for name in names:
        if name not in available:
            raise InputError(f"--run {name}", f"no such run in {saes_dir}; available: {available}")
    inputs = {"saes": artifact_key(saes_dir), "embeddings": artifact_key(ws.embeddings(encoder))}
    outcomes = []
    for name in names:

        def build(tmp: Path, name: str = name) -> StageResult:
            sae = load_sae(ws.sae(encoder, name), device=device)
            if sae.cfg.d_in != store.dim:
                raise ArtifactError(
                    f"{ws.sae(encoder, name)}: SAE expects d_in={sae.cfg.d_in}, embeddings have dim {store.dim}"
                )
            meta = {
                "encoder": encoder,
                "run": name,
                "levels": list(sae.cfg.levels),
                "mode": sae.inference,
            }
            tokens = open_tokens(ws.embeddings(encoder), table, ws.slices / SLICES_FILE)
            with forward_precision(device, cfg.precision):
                if tokens is not None:  # max-pooled slice codes, mean-pooled, held-out tokens
                    csr = save_token_codes(tmp, sae, tokens, table, meta)
                else:
                    csr = encode_to_csr(sae, store, cfg.batch_size, table)
                    save_codes(tmp, csr, meta)
            return StageResult(counts={"rows": int(csr.shape[0]), "nnz": int(csr.nnz)})

        outcomes.append(
            run_stage(
                ws.codes(encoder, name),
                "codes",
                {**cfg.key_config(), "run": name},
                inputs,
                build,
                force=force,
                runtime={**cfg.runtime_values(), **describe_device(device)},
            )
        )
    return outcomes
