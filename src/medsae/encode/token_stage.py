"""The token part of the ``encode`` stage: ``WS/embeddings/<name>-tokens/`` (see
:mod:`medsae.encode.tokens`), built shard by shard through :func:`medsae.workspace.run_stage`
so an interrupted build keeps its finished shards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medsae.data.io import SLICES_FILE
from medsae.encode.config import EncodeConfig
from medsae.encode.runner import RateProgress, plan_shards, torch_threads
from medsae.encode.tokens import (
    TOKENS_DIR,
    finish_token_store,
    kept_positions,
    require_token_encoder,
    shard_dim,
    shard_done,
    token_grid,
    token_store_name,
    write_token_shard,
)
from medsae.errors import InputError
from medsae.progress import console
from medsae.workspace import StageOutcome, StageResult, Workspace, artifact_key, run_stage


def token_content(config: EncodeConfig, name: str) -> dict[str, Any]:
    """What decides the stored tokens (hashed into the token store's key)."""
    return {
        **config.content(name),
        "token_grid": config.token_grid,
        "token_parts": config.token_parts,
        "token_cap": config.token_cap,
        "token_seed": config.token_seed,
        "token_dtype": config.token_dtype,
    }


def encode_tokens(
    ws: Workspace, config: EncodeConfig, enc: Any, force: bool = False
) -> StageOutcome:
    """Write the token store of ``config``'s slice store with encoder ``enc``."""
    import pandas as pd

    from medsae.data.table import open_images

    registry = str(enc.metadata().get("registry_name") or enc.name)
    require_token_encoder(enc, registry)
    name = config.name or enc.name
    table = pd.read_parquet(ws.slices / SLICES_FILE, columns=["slice_id"])
    images = open_images(ws.slices)
    if len(images) != len(table):
        raise InputError(
            ws.slices / SLICES_FILE,
            f"images.npy has {len(images)} rows but the slice table has {len(table)}",
        )
    grid, cap, seed = config.token_grid, config.token_cap, config.token_seed
    plan = plan_shards(len(table), config.shard_rows)
    keep = [kept_positions(r, grid, cap, seed) for r in range(len(table))]
    content = token_content(config, name)
    inputs = {
        "slices": artifact_key(ws.slices),
        "weights": str(enc.metadata().get("weights_fingerprint")),
    }
    out_dir = ws.embeddings(token_store_name(name))
    batch = config.batch_size or 32

    def build(tmp: Path) -> StageResult:
        (tmp / TOKENS_DIR).mkdir(parents=True, exist_ok=True)
        dim = 0
        with RateProgress(len(table), f"encode tokens {name}", 0) as bar:
            for shard in plan:
                n_tok = sum(len(keep[r]) for r in range(shard.start, shard.stop))
                kept = shard_dim(tmp, shard)
                if kept and shard_done(tmp, shard, n_tok, kept):  # from an interrupted run
                    dim = kept
                    bar.advance(shard.stop - shard.start)
                    continue
                parts = []
                for lo in range(shard.start, shard.stop, batch):
                    hi = min(lo + batch, shard.stop)
                    feats = enc.spatial_features(np.asarray(images[lo:hi]))
                    parts.append(token_grid(feats, grid, config.token_parts))
                    bar.advance(hi - lo)
                tokens = np.concatenate(parts)
                dim = int(tokens.shape[2])
                write_token_shard(
                    tmp, shard, tokens, keep[shard.start : shard.stop], config.token_dtype
                )
        positions = np.concatenate(
            [
                np.stack([np.full(len(k), r), k // grid, k % grid], axis=1)
                for r, k in enumerate(keep)
            ]
        )
        info = {
            "grid": grid,
            "cap": cap,
            "seed": seed,
            "parts": config.token_parts,
            "source_store": name,
            "registry_name": registry,
            "input_size": int(getattr(enc, "input_size", 0) or 0),
            "sampling": "all grid positions"
            if cap is None or cap >= grid * grid
            else f"{cap} of {grid * grid} positions per slice, uniform without replacement, "
            f"seeded by [{seed}, slice row]",
        }
        counts = [np.asarray([len(k) for k in keep[s.start : s.stop]]) for s in plan]
        store = finish_token_store(
            tmp, token_store_name(name), plan, counts, positions, dim, config.token_dtype, info
        )
        mb = store.mb_per_1000_slices()
        console.print(
            f"encode: {store.n_tokens:,} tokens of {dim} dimensions on a {grid} x {grid} grid "
            f"({mb} MB per 1,000 slices)",
            markup=False,
        )
        return StageResult(
            counts={"slices": store.n_slices, "tokens": store.n_tokens, "dim": dim},
            extra={"mb_per_1000_slices": mb, "grid": grid},
        )

    with torch_threads(config.threads):
        return run_stage(out_dir, "encode-tokens", content, inputs, build, force=force)
