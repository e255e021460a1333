"""Token scores of the methods organ rediscovery compares (:mod:`medsae.evaluate.organs`).

Each function returns float32 ``(n_tokens, n_latents)`` scores of the selection and scored
token sets; higher means "this latent fires here".
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from medsae.encode.tokens import TokenStore, resample_part
from medsae.errors import ArtifactError, InputError

FIT_BATCH = 2048


def sae_scores(inputs: Any, ts: Any) -> np.ndarray:
    """The token SAE's stored per-token codes of the set's tokens (dense)."""
    from medsae.sae.token_data import load_token_codes

    folder = inputs.ws.codes(inputs.encoder, inputs.run)
    codes, rows = load_token_codes(folder)
    at = np.searchsorted(rows, ts.tokens)
    at = np.minimum(at, max(len(rows) - 1, 0))
    if len(rows) == 0 or not np.array_equal(rows[at], ts.tokens):
        raise ArtifactError(
            f"{folder}: the per-token codes do not cover the held-out tokens of this split; "
            "rerun `medsae codes --force`"
        )
    return np.asarray(codes[at].toarray(), dtype=np.float32)


def _l2(x: np.ndarray) -> np.ndarray:
    return np.asarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))


def baseline_scores(
    name: str,
    store: TokenStore,
    table: Any,
    sel_set: Any,
    test_set: Any,
    n_latents: int,
    config: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """PCA (each component with either sign a latent) or k-means (minus the squared
    distance to each centroid) fitted on a seeded sample of training tokens, L2-normalised
    as the token SAE's default input transform."""
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.decomposition import PCA

    from medsae.sae.token_data import split_tokens

    rows = split_tokens(store, table, "train", int(config.organ_fit_tokens), int(config.seed))
    if len(rows) < 2:
        raise InputError("train split", "organ rediscovery needs training tokens for PCA/k-means")
    x = _l2(store.read(rows))
    xs, xt = _l2(store.read(sel_set.tokens)), _l2(store.read(test_set.tokens))
    if name == "pca":
        n = max(1, min(n_latents // 2, x.shape[1], len(x)))
        pca = PCA(n_components=n, random_state=int(config.seed)).fit(x)
        ps, pt = pca.transform(xs), pca.transform(xt)
        return (
            np.hstack([ps, -ps]).astype(np.float32),
            np.hstack([pt, -pt]).astype(np.float32),
        )
    k = max(2, min(n_latents, len(x)))
    km = MiniBatchKMeans(
        n_clusters=k, init="random", random_state=int(config.seed), n_init=1, batch_size=FIT_BATCH
    ).fit(x)
    c = km.cluster_centers_

    def neg_dist(z: np.ndarray) -> np.ndarray:
        d = (z**2).sum(1)[:, None] - 2 * z @ c.T + (c**2).sum(1)[None, :]
        return np.asarray(-d, dtype=np.float32)

    return neg_dist(xs), neg_dist(xt)


def attribution_scores(
    inputs: Any, store: TokenStore, sel_set: Any, test_set: Any, config: Any
) -> str | tuple[str, tuple[np.ndarray, np.ndarray]]:
    """The image-level SAE's exact attribution maps on the token grid, or why there are none."""
    from medsae.data.table import open_images
    from medsae.encode.registry import encoder_from_store
    from medsae.encode.spatial import require_spatial
    from medsae.encode.store import EmbeddingStore
    from medsae.sae import load_sae
    from medsae.sae.attribution import latent_maps
    from medsae.sae.codes_io import load_codes
    from medsae.sae.io import trained_runs

    ws = inputs.ws
    source = str(store.info.get("source_store") or "")
    runs = trained_runs(ws, source) if source else []
    run = config.organ_attribution_run or (inputs.run if inputs.run in runs else None)
    if run is None and runs:
        run = runs[0]
    if run is None or run not in runs:
        return (
            f"no image-level SAE {run or ''} of encoder {source!r} to compare with; "
            f"run `medsae train --encoder {source}`"
        )
    try:
        sae = load_sae(ws.sae(source, run))
        enc = require_spatial(encoder_from_store(EmbeddingStore(ws.embeddings(source))))
        codes = load_codes(ws.codes(source, run))
    except (InputError, ArtifactError) as e:
        return str(e)
    rows = np.concatenate([sel_set.slices, test_set.slices])
    latents = np.flatnonzero(np.asarray((codes[rows] > 0).sum(axis=0)).ravel() > 0)
    if latents.size == 0:
        return f"image-level SAE {source}/{run} fires on none of the held-out slices"
    images = open_images(ws.slices)
    grid = store.grid

    def scores(ts: Any) -> np.ndarray:
        out = np.zeros((len(ts.tokens), len(latents)), dtype=np.float32)
        batch = 32
        for b0 in range(0, len(ts.slices), batch):
            rows_b = ts.slices[b0 : b0 + batch]
            feats = enc.spatial_features(np.asarray(images[rows_b]))
            on_grid = replace(feats, parts=[resample_part(p, grid) for p in feats.parts])
            lm = latent_maps(sae, on_grid, latents)  # (B, L, grid, grid), exact
            for k, row in enumerate(rows_b):
                sel = np.flatnonzero(ts.positions[:, 0] == row)
                g = lm.grid[k][:, ts.positions[sel, 1], ts.positions[sel, 2]]
                out[sel] = g.T
        return out

    return run, (scores(sel_set), scores(test_set))
