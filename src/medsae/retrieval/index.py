"""The ``index`` stage and the workspace-level search API.

``WS/index/<encoder>/<run>/``
    ``fingerprint_index.npz``       CSC posting lists of the codes (see :mod:`.fingerprint`)
    ``fingerprint_rows.parquet``    per row: slice id, subject key and filterable metadata
    ``fingerprint_index.json``      sizes and memory of the index
    ``fingerprint_eval.json``       sparse vs dense top-K vs full dense retrieval
    ``descriptions.npz``            text embeddings of the feature descriptions (if any)
    ``text_retrieval.json``         precision@10 of the query suite (if descriptions exist)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsae.errors import ArtifactError, InputError
from medsae.llm.embed import TextEmbedder, shared_embedder
from medsae.retrieval.config import AskConfig, IndexConfig
from medsae.retrieval.fingerprint import FingerprintIndex
from medsae.retrieval.language import FeatureChoice, Selector, TextRetriever, load_descriptions
from medsae.workspace import (
    StageOutcome,
    StageResult,
    Workspace,
    artifact_key,
    read_manifest,
    run_stage,
)

FEATURES_FILE = "features.parquet"
DESCRIPTIONS_FILE = "descriptions.npz"
FINGERPRINT_EVAL = "fingerprint_eval.json"
TEXT_RETRIEVAL = "text_retrieval.json"


def _ws(workspace: str | Path | Workspace) -> Workspace:
    return workspace if isinstance(workspace, Workspace) else Workspace(workspace)


def resolve_run(
    workspace: str | Path | Workspace, encoder: str | None = None, run: str | None = None
) -> tuple[str, str]:
    """The (encoder, run) to use: as given, else the best of ``WS/ranking/ranking.json``, else
    the only one with codes."""
    ws = _ws(workspace)
    if encoder and run:
        return encoder, run
    ranking = ws.ranking / "ranking.json"
    if ranking.is_file():
        best = (json.loads(ranking.read_text()) or {}).get("best") or {}
        if best.get("encoder") and best.get("run") and (encoder in (None, best["encoder"])):
            return str(best["encoder"]), str(best["run"])
    base = ws.root / "codes"
    found = sorted(
        (e.name, r.name)
        for e in (base.iterdir() if base.is_dir() else [])
        if e.is_dir() and (encoder is None or e.name == encoder)
        for r in e.iterdir()
        if read_manifest(r) is not None and (run is None or r.name == run)
    )
    if len(found) == 1:
        return found[0]
    if not found:
        raise ArtifactError(f"{base}: no sparse codes found; run `medsae codes` first")
    raise InputError(
        "--encoder/--run",
        "several runs have codes (" + ", ".join(f"{e}/{r}" for e, r in found[:6]) + "); choose one",
    )


def _load_features(ws: Workspace, encoder: str, run: str) -> pd.DataFrame | None:
    p = ws.features(encoder, run) / FEATURES_FILE
    return pd.read_parquet(p) if p.is_file() else None


def build_index(
    workspace: str | Path | Workspace,
    encoder: str | None = None,
    run: str | None = None,
    config: IndexConfig | None = None,
    force: bool = False,
    embedder: TextEmbedder | None = None,
) -> StageOutcome:
    """The ``index`` stage: fingerprint index, fingerprint evaluation, query-suite evaluation.

    Inputs: the slices, split, codes and embeddings artifacts, and the features artifact
    when it exists (then the query suite is evaluated with ``embedder``, MiniLM by default).
    """
    from medsae.data.table import read_anatomy, slices_with_split
    from medsae.encode.store import EmbeddingStore
    from medsae.progress import console, make_progress
    from medsae.retrieval.fingerprint_eval import evaluate_fingerprints
    from medsae.retrieval.queries import load_queries
    from medsae.retrieval.text_eval import evaluate_text_retrieval
    from medsae.sae.codes_io import load_codes

    ws = _ws(workspace)
    encoder, run = resolve_run(ws, encoder, run)
    cfg = config or IndexConfig()
    inputs = {
        "slices": artifact_key(ws.slices),
        "split": artifact_key(ws.split),
        "codes": artifact_key(ws.codes(encoder, run)),
        "embeddings": artifact_key(ws.embeddings(encoder)),
    }
    features_dir = ws.features(encoder, run)
    has_features = cfg.text_eval and (features_dir / FEATURES_FILE).is_file()
    if has_features:
        inputs["features"] = (
            artifact_key(features_dir)
            if read_manifest(features_dir)
            else _file_stamp(features_dir / FEATURES_FILE)
        )
        embedder = embedder or shared_embedder()
        inputs["text_embedder"] = embedder.name

    def build(tmp: Path) -> StageResult:
        table = slices_with_split(ws.slices, ws.split)
        codes = load_codes(ws.codes(encoder, run))
        if codes.shape[0] != len(table):
            raise ArtifactError(
                f"{ws.codes(encoder, run)}: {codes.shape[0]} code rows but the slice table has {len(table)}; "
                "rerun `medsae codes`"
            )
        index = FingerprintIndex.build(codes, table)
        index.save(tmp)
        anatomy = read_anatomy(ws.slices)
        store = EmbeddingStore(ws.embeddings(encoder))
        emb = store.read()
        with make_progress() as progress:
            task = progress.add_task("fingerprint evaluation", total=None)
            fp = evaluate_fingerprints(
                index,
                table,
                np.asarray(anatomy.presence),
                emb,
                cfg.search,
                progress=lambda i: progress.update(task, completed=i),
            )
        (tmp / FINGERPRINT_EVAL).write_text(json.dumps(fp, indent=2, sort_keys=True))
        extra: dict[str, Any] = {
            "encoder": encoder,
            "run": run,
            "fingerprint_agreement": fp["fingerprint_agreement"],
        }
        features = _load_features(ws, encoder, run) if has_features else None
        described = features is not None and _has_descriptions(features)
        if features is not None and not described:
            console.print(
                f"[yellow]index: {features_dir / FEATURES_FILE} has no descriptions; "
                "query suite not evaluated[/yellow]"
            )
            extra["text_retrieval"] = "skipped: no feature descriptions"
        if features is not None and described:
            assert embedder is not None
            retriever = TextRetriever(index, features, embedder, cfg.ask)
            np.savez(
                tmp / DESCRIPTIONS_FILE,
                latents=retriever.features["latent"].to_numpy(dtype=np.int64),
                embeddings=retriever.desc_emb,
                embedder=np.array(embedder.name),
            )
            gallery = table["split"].isin(cfg.ask.gallery_splits).to_numpy()
            queries = load_queries()
            tr = evaluate_text_retrieval(
                retriever,
                queries,
                table,
                np.asarray(anatomy.presence),
                anatomy.structures,
                gallery,
                cfg.ask.n,
            )
            (tmp / TEXT_RETRIEVAL).write_text(json.dumps(tr, indent=2, sort_keys=True))
            extra["text_precision_at_10"] = tr.get("text_precision_at_10")
        elif features is None:
            console.print(
                f"[dim]index: no {features_dir / FEATURES_FILE}; query suite not evaluated[/dim]"
            )
        counts = {
            "rows": index.n_rows,
            "latents": index.n_latents,
            "nnz": len(index.rows),
            "subjects": len(index.subject_keys),
            "index_mb": round(index.memory_bytes() / 2**20, 3),
        }
        return StageResult(counts=counts, extra=extra)

    return run_stage(ws.index(encoder, run), "index", cfg, inputs, build, force=force)


def _has_descriptions(features: pd.DataFrame) -> bool:
    if "description" not in features.columns:
        return False
    desc = features["description"]
    return bool((desc.notna() & (desc.astype(str).str.strip() != "")).any())


def _file_stamp(path: Path) -> str:
    from medsae.workspace import fingerprint_files

    return fingerprint_files([path], path.parent)


def load_index(workspace: str | Path | Workspace, encoder: str, run: str) -> FingerprintIndex:
    """The built index of a run, or one built in memory from the codes when there is none."""
    from medsae.data.table import slices_with_split
    from medsae.sae.codes_io import load_codes

    ws = _ws(workspace)
    folder = ws.index(encoder, run)
    if read_manifest(folder) is not None:
        return FingerprintIndex.load(folder)
    table = (
        slices_with_split(ws.slices, ws.split) if (ws.split / "split.parquet").is_file() else None
    )
    if table is None:
        from medsae.data.table import read_slices

        table = read_slices(ws.slices)
    return FingerprintIndex.build(load_codes(ws.codes(encoder, run)), table)


def search_similar(
    workspace: str | Path | Workspace,
    encoder: str | None = None,
    run: str | None = None,
    slice_id: str | None = None,
    image: str | Path | np.ndarray | None = None,
    *,
    plane: str | None = None,
    index: int | None = None,
    embedding: np.ndarray | None = None,
    k: int = 5,
    n: int = 10,
    filters: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Slices similar to a slice of the workspace or to a new image, one per subject.

    Give exactly one of ``slice_id`` (its own subject is excluded), ``image`` (array, PNG,
    DICOM, or NIfTI volume with ``plane`` and ``index``; encoded and coded like the
    workspace) or ``embedding`` (a dense embedding of the workspace's encoder). ``filters``
    restricts results by metadata, e.g. ``{"modality": "CT", "split": ["train", "val"]}``.
    Returns rank, row, score, subject_key and metadata columns.
    """
    ws = _ws(workspace)
    given = [x is not None for x in (slice_id, image, embedding)]
    if sum(given) != 1:
        raise InputError("query", "give exactly one of a slice id, an image or an embedding")
    encoder, run = resolve_run(ws, encoder, run)
    idx = load_index(ws, encoder, run)
    if slice_id is not None:
        return idx.search(str(slice_id), k=k, n=n, filters=filters)
    from medsae.retrieval import query_image as qi

    if embedding is None:
        from medsae.data.table import open_images

        stored = open_images(ws.slices)
        img = qi.load_query_image(image, plane, index)  # type: ignore[arg-type]
        prepared = qi.fit_to_workspace(
            img, stored.shape[1], stored.shape[3] if stored.ndim == 4 else None
        )
        embedding = qi.encode_image(prepared, ws.embeddings(encoder))
    codes_n = qi.code_embedding(embedding, ws.sae(encoder, run))
    return idx.search(codes_n, k=k, n=n, filters=filters, exclude_own_subject=False)


@dataclass(frozen=True)
class AskResult:
    """The features a text query was composed of and the slices it found."""

    query: str
    features: list[FeatureChoice]
    results: pd.DataFrame


def text_retriever(
    workspace: str | Path | Workspace,
    encoder: str | None = None,
    run: str | None = None,
    config: AskConfig | None = None,
    embedder: TextEmbedder | None = None,
    selector: Selector | None = None,
) -> TextRetriever:
    """A :class:`TextRetriever` over a run's index and feature descriptions (reusable)."""
    ws = _ws(workspace)
    encoder, run = resolve_run(ws, encoder, run)
    features = _load_features(ws, encoder, run)
    if features is None:
        raise ArtifactError(
            f"{ws.features(encoder, run) / FEATURES_FILE}: no feature descriptions; run `medsae interpret` first"
        )
    embedder = embedder or shared_embedder()
    cached = None
    cache = ws.index(encoder, run) / DESCRIPTIONS_FILE
    if cache.is_file():
        with np.load(cache) as z:
            if str(z["embedder"]) == embedder.name:
                kept = load_descriptions(features)
                if np.array_equal(z["latents"], kept["latent"].to_numpy(dtype=np.int64)):
                    cached = z["embeddings"]
    return TextRetriever(load_index(ws, encoder, run), features, embedder, config, cached, selector)


def ask(
    workspace: str | Path | Workspace,
    encoder: str | None = None,
    run: str | None = None,
    query: str = "",
    n: int = 10,
    features: int = 3,
    mode: str | None = None,
    filters: Mapping[str, Any] | None = None,
    embedder: TextEmbedder | None = None,
    selector: Selector | None = None,
) -> AskResult:
    """Slices matching a text query, found through feature descriptions (one per subject).

    See :mod:`medsae.retrieval.language` for how features are chosen, weighted and combined.
    ``filters`` optionally restricts the results by metadata (never used to answer the query).
    """
    if not query or not query.strip():
        raise InputError("query", "empty query; describe the images you are looking for")
    cfg = AskConfig(features=features, n=n)
    if mode:
        cfg.mode = mode  # type: ignore[assignment]  # validated on assignment
    retriever = text_retriever(workspace, encoder, run, cfg, embedder, selector)
    choices, results = retriever.search(query, n, retriever.index.filter_mask(filters))
    return AskResult(query, choices, results)
