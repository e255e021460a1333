"""The token store: an encoder's spatial feature vectors, one row per grid position.

``medsae encode --tokens`` writes, beside the slice store ``WS/embeddings/<name>/``, a second
store ``WS/embeddings/<name>-tokens/`` (its own artifact, resumable shard by shard):

``store.json``, ``shard-*.npy``
    A slice-level store like any other (rows aligned with the slice table): row ``i`` is the
    mean of slice ``i``'s stored tokens. Every slice-level stage reads it unchanged.
``tokens/store.json``, ``tokens/shard-*.npy``
    One row per stored token, the tokens of slice 0 first, then slice 1, ...; token shard
    ``k`` holds the tokens of the slices of slice shard ``k`` (memory-mapped like the slice
    store).
``tokens/positions.npy``
    int32 ``(n_tokens, 3)``: slice row, grid row, grid column of each token.
``tokens/slice_ptr.npy``
    int64 ``(n_slices + 1,)``: the tokens of slice ``i`` are rows ``ptr[i]:ptr[i + 1]``.

A token is built from the encoder's feature maps (:meth:`spatial_features`): each kept part
``f^s`` (``token_parts``, default all) is resampled to a ``G x G`` grid (``token_grid``) by
area averaging when its grid is finer, by nearest-neighbour repetition when it is coarser,
then multiplied by its part scale and the parts are concatenated. Grid cell ``(r, c)`` covers
pixels ``[r S / G, (r + 1) S / G)`` of an ``S``-pixel slice. For an exact encoder keeping all
parts, the mean of a slice's ``G^2`` tokens is its embedding.

**Sampling rule.** A slice keeps all ``G^2`` positions when ``token_cap`` is unset or at
least ``G^2``; otherwise ``token_cap`` positions drawn uniformly without replacement by
``numpy.random.default_rng([token_seed, slice_row])`` and kept in row-major order, so the
same slice always keeps the same positions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsae.encode.io import TOKEN_POSITIONS, TOKEN_SLICE_PTR
from medsae.encode.spatial import EXACT_POOLINGS, SpatialFeatures, supports_spatial
from medsae.encode.store import EmbeddingStore, Shard, save_shard, shard_header, write_store_meta
from medsae.errors import ArtifactError, InputError

TOKEN_SUFFIX = "-tokens"
TOKENS_DIR = "tokens"
POSITIONS_FILE = TOKEN_POSITIONS
SLICE_PTR_FILE = TOKEN_SLICE_PTR


def token_store_name(name: str) -> str:
    """The folder name of the token store of slice store ``name``."""
    return f"{name}{TOKEN_SUFFIX}"


def is_token_store(folder: Path) -> bool:
    """Whether ``folder`` (an embedding store folder) holds a token store."""
    return (Path(folder) / TOKENS_DIR / POSITIONS_FILE).is_file()


def require_token_encoder(encoder: Any, registry: str) -> None:
    """An :class:`InputError` naming the encoder and the poolings with spatial features."""
    if supports_spatial(encoder):
        return
    offers = "; ".join(f"{name} (pooling {' or '.join(p)})" for name, p in EXACT_POOLINGS.items())
    raise InputError(
        f"encoder {registry}",
        "--tokens needs an encoder with spatial feature maps and this one has none; "
        f"encoders that have them: {offers}, dinov3 also with pooling cls (its patch tokens), "
        "or an encoder with a spatial_features method (medsae.encode.spatial.SpatialEncoder)",
    )


def kept_positions(row: int, grid: int, cap: int | None, seed: int) -> np.ndarray:
    """Flat grid positions slice ``row`` keeps (the module's sampling rule), sorted."""
    n = grid * grid
    if cap is None or cap >= n:
        return np.arange(n, dtype=np.int64)
    chosen = np.random.default_rng([seed, row]).choice(n, size=cap, replace=False)
    return np.sort(chosen).astype(np.int64)


def resample_part(part: np.ndarray, grid: int) -> np.ndarray:
    """``(B, C, h, w)`` -> ``(B, C, grid, grid)``: area mean when finer, nearest when coarser."""
    t = torch.from_numpy(np.ascontiguousarray(part, dtype=np.float32))
    h, w = t.shape[2:]
    if h >= grid and w >= grid:
        t = torch.nn.functional.adaptive_avg_pool2d(t, (grid, grid))
    else:
        t = torch.nn.functional.interpolate(t, size=(grid, grid), mode="nearest")
    return np.asarray(t.numpy())


def token_grid(features: SpatialFeatures, grid: int, parts: list[int] | None) -> np.ndarray:
    """float32 ``(B, grid * grid, D)``: the tokens of a batch (module docstring)."""
    chosen = list(range(len(features.parts))) if parts is None else list(parts)
    bad = [p for p in chosen if p < 0 or p >= len(features.parts)]
    if bad:
        raise InputError(
            "token_parts",
            f"part {bad[0]} does not exist: the encoder gives {len(features.parts)} feature-map "
            f"parts (0..{len(features.parts) - 1})",
        )
    cols = []
    for s in chosen:
        m = resample_part(features.parts[s], grid) * features.scales[:, s, None, None, None]
        cols.append(m.reshape(m.shape[0], m.shape[1], grid * grid))
    out = np.concatenate(cols, axis=1).transpose(0, 2, 1)
    return np.ascontiguousarray(out, dtype=np.float32)


class TokenStore:
    """Read access to a token store (module docstring); ``pooled`` is its slice-level store."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        if not is_token_store(self.folder):
            raise ArtifactError(
                f"{self.folder}: not a token store (no {TOKENS_DIR}/{POSITIONS_FILE}); "
                "run `medsae encode --tokens`"
            )
        self.pooled = EmbeddingStore(self.folder)
        self.tokens = EmbeddingStore(self.folder / TOKENS_DIR)
        self.positions = np.load(self.folder / TOKENS_DIR / POSITIONS_FILE, mmap_mode="r")
        self.slice_ptr = np.load(self.folder / TOKENS_DIR / SLICE_PTR_FILE)
        info = dict(self.pooled.meta.get("tokens") or {})
        self.info = info
        self.grid = int(info.get("grid", 0))
        self.dim = self.tokens.dim
        self.n_tokens = self.tokens.n_rows
        self.n_slices = self.pooled.n_rows
        where = self.folder / TOKENS_DIR
        if len(self.slice_ptr) != self.n_slices + 1 or int(self.slice_ptr[-1]) != self.n_tokens:
            raise ArtifactError(
                f"{where}: {SLICE_PTR_FILE} covers {len(self.slice_ptr) - 1} slices and "
                f"{int(self.slice_ptr[-1])} tokens, the store has {self.n_slices} slices and "
                f"{self.n_tokens} tokens; rerun `medsae encode --tokens --force`"
            )
        if self.positions.shape != (self.n_tokens, 3):
            raise ArtifactError(f"{where / POSITIONS_FILE}: shape {self.positions.shape}")
        if self.n_tokens and (self.positions[:, 1:].max() >= self.grid or self.grid < 1):
            raise ArtifactError(
                f"{where / POSITIONS_FILE}: grid positions reach "
                f"{int(self.positions[:, 1:].max())}, outside the store's {self.grid} x "
                f"{self.grid} grid; rerun `medsae encode --tokens --force`"
            )

    def check_slices(self, n_slices: int, slices_file: Path | str) -> None:
        """A named :class:`ArtifactError` when the store is not of a table of ``n_slices``."""
        if n_slices != self.n_slices:
            raise ArtifactError(
                f"{self.folder}: the token store holds tokens of {self.n_slices} slices but "
                f"{slices_file} has {n_slices}; rerun `medsae encode --tokens --force`"
            )

    def check_grid(self, grid: int, what: str) -> None:
        """A named :class:`InputError` when ``what`` expects another token grid."""
        if grid != self.grid:
            raise InputError(
                what,
                f"expects a {grid} x {grid} token grid but {self.folder} holds a "
                f"{self.grid} x {self.grid} grid",
            )

    def token_rows(self, slice_rows: np.ndarray) -> np.ndarray:
        """Token row numbers of some slices (in the order of ``slice_rows``)."""
        rows = np.asarray(slice_rows, dtype=np.int64)
        if len(rows) == 0:
            return np.zeros(0, dtype=np.int64)
        lo, hi = self.slice_ptr[rows], self.slice_ptr[rows + 1]
        counts = hi - lo
        starts = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        return np.arange(int(counts.sum()), dtype=np.int64) + starts

    def read(self, token_rows: np.ndarray) -> np.ndarray:
        """Tokens as float32 ``(len(token_rows), dim)``."""
        return self.tokens.read(np.asarray(token_rows, dtype=np.int64))

    def mb_per_1000_slices(self) -> float:
        """Disk size of the token shards per 1,000 slices (MB)."""
        total = sum((self.tokens.folder / s.file).stat().st_size for s in self.tokens.shards)
        return round(total / 1e6 / max(self.n_slices, 1) * 1000, 2)


def shard_dim(folder: Path, shard: Shard) -> int:
    """The dimension of a finished pooled shard in ``folder`` (0 when there is none)."""
    header = shard_header(folder / shard.file)
    return int(header[0][1]) if header is not None and len(header[0]) == 2 else 0


def shard_done(folder: Path, shard: Shard, n_tokens: int, dim: int) -> bool:
    """Whether a token shard and its pooled shard are complete in ``folder``."""
    pooled = shard_header(folder / shard.file)
    tokens = shard_header(folder / TOKENS_DIR / shard.file)
    return (
        pooled is not None
        and tokens is not None
        and pooled[0] == (shard.stop - shard.start, dim)
        and tokens[0] == (n_tokens, dim)
    )


def write_token_shard(
    folder: Path, shard: Shard, tokens_bpd: np.ndarray, keep: list[np.ndarray], dtype: str
) -> None:
    """The kept tokens of one slice shard and their per-slice means, written atomically."""
    rows = [tokens_bpd[b, k] for b, k in enumerate(keep)]
    flat = np.concatenate(rows, axis=0) if rows else np.zeros((0, tokens_bpd.shape[2]))
    if not np.isfinite(flat).all():
        bad = [shard.start + b for b, r in enumerate(rows) if not np.isfinite(r).all()]
        raise ArtifactError(
            f"the encoder produced NaN/Inf tokens for slice rows {bad[:10]}; check these images"
        )
    pooled = np.stack([r.astype(np.float64).mean(axis=0) for r in rows]).astype(np.float32)
    save_shard(folder / TOKENS_DIR, shard.file, flat.astype(dtype))
    save_shard(folder, shard.file, pooled)


def finish_token_store(
    folder: Path,
    name: str,
    plan: list[Shard],
    counts: list[np.ndarray],
    positions: np.ndarray,
    dim: int,
    dtype: str,
    info: dict[str, Any],
) -> TokenStore:
    """Write the metadata of both stores, the positions and the slice pointers."""
    ptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))]).astype(np.int64)
    token_shards = [
        Shard(s.file, int(ptr[s.start]), int(ptr[s.stop])) for s in plan
    ]  # token shard k: the tokens of slice shard k
    np.save(folder / TOKENS_DIR / SLICE_PTR_FILE, ptr)
    save_shard(folder / TOKENS_DIR, POSITIONS_FILE, positions.astype(np.int32))
    write_store_meta(folder / TOKENS_DIR, name, token_shards, dim, dtype, {"tokens": info})
    write_store_meta(folder, name, plan, dim, "float32", {"tokens": info})
    return TokenStore(folder)
