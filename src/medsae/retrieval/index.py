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
from medsae.evaluate.io import resolve_run
from medsae.interpret.io import FEATURES
from medsae.interpret.probes import Probe
from medsae.llm.embed import TextEmbedder, shared_embedder
from medsae.retrieval.config import AskConfig, IndexConfig
from medsae.retrieval.fingerprint import FingerprintIndex
from medsae.retrieval.io import DESCRIPTIONS, FINGERPRINT_EVAL, TEXT_RETRIEVAL
from medsae.retrieval.language import FeatureChoice, Selector, TextRetriever, load_descriptions
from medsae.retrieval.understand import Reading
from medsae.workspace import (
    StageOutcome,
    StageResult,
    Workspace,
    artifact_key,
    read_manifest,
    run_stage,
)


def _ws(workspace: str | Path | Workspace) -> Workspace:
    return workspace if isinstance(workspace, Workspace) else Workspace(workspace)


def index_config(workspace: str | Path | Workspace, encoder: str, run: str) -> IndexConfig:
    """The config the run's index was built with (its manifest), else the defaults.

    The front ends search with it, so that the browser and the report use the fingerprint
    size and the text mode that the index stage evaluated.
    """
    manifest = read_manifest(_ws(workspace).index(encoder, run)) or {}
    try:
        return IndexConfig.model_validate(manifest.get("config") or {})
    except ValueError:  # a manifest of an older layout: the defaults
        return IndexConfig()


def _load_features(ws: Workspace, encoder: str, run: str) -> pd.DataFrame | None:
    p = ws.features(encoder, run) / FEATURES
    return pd.read_parquet(p) if p.is_file() else None


def load_probes(ws: Workspace, encoder: str, run: str) -> dict[str, Probe] | None:
    """The run's modality and plane probes (:mod:`medsae.interpret.probes`), None without."""
    from medsae.interpret.probes import read_probes

    return read_probes(ws.features(encoder, run))


def load_profiles(ws: Workspace, encoder: str, run: str) -> pd.DataFrame | None:
    """The run's concept profiles (:mod:`medsae.interpret.profiles`), None without them."""
    from medsae.interpret.profiles import read_profiles

    return read_profiles(ws.features(encoder, run))


def _index_inputs(
    ws: Workspace, encoder: str, run: str, cfg: IndexConfig, embedder: TextEmbedder | None
) -> tuple[dict[str, str], TextEmbedder | None]:
    """Input keys of the index stage, and the text embedder when the features are evaluated."""
    inputs = {
        "slices": artifact_key(ws.slices),
        "split": artifact_key(ws.split),
        "codes": artifact_key(ws.codes(encoder, run)),
        "embeddings": artifact_key(ws.embeddings(encoder)),
    }
    features_dir = ws.features(encoder, run)
    if not (cfg.text_eval and (features_dir / FEATURES).is_file()):
        return inputs, None
    inputs["features"] = (
        artifact_key(features_dir)
        if read_manifest(features_dir)
        else _file_stamp(features_dir / FEATURES)
    )
    embedder = embedder or shared_embedder()
    inputs["text_embedder"] = embedder.name
    return inputs, embedder


def _evaluate_fingerprints(
    ws: Workspace, encoder: str, index: FingerprintIndex, table: pd.DataFrame, cfg: IndexConfig
) -> dict[str, Any]:
    """The fingerprint evaluation of the index (:mod:`medsae.retrieval.fingerprint_eval`)."""
    from medsae.data.table import read_anatomy
    from medsae.encode.store import EmbeddingStore
    from medsae.progress import make_progress
    from medsae.retrieval.fingerprint_eval import evaluate_fingerprints

    anatomy = read_anatomy(ws.slices)
    emb = EmbeddingStore(ws.embeddings(encoder)).read()
    with make_progress() as progress:
        task = progress.add_task("fingerprint evaluation", total=None)
        return evaluate_fingerprints(
            index,
            table,
            np.asarray(anatomy.presence),
            emb,
            cfg.search,
            progress=lambda i: progress.update(task, completed=i),
        )


def _evaluate_text(
    ws: Workspace,
    tmp: Path,
    retriever: TextRetriever,
    table: pd.DataFrame,
    cfg: IndexConfig,
) -> dict[str, Any]:
    """Write the description embeddings and the query-suite evaluation; the evaluation."""
    from medsae.data.table import read_anatomy
    from medsae.retrieval.queries import load_queries
    from medsae.retrieval.text_eval import evaluate_text_retrieval

    np.savez(
        tmp / DESCRIPTIONS,
        latents=retriever.features["latent"].to_numpy(dtype=np.int64),
        embeddings=retriever.desc_emb,
        embedder=np.array(retriever.embedder.name),
    )
    anatomy = read_anatomy(ws.slices)
    gallery = table["split"].isin(cfg.ask.gallery_splits).to_numpy()
    result = evaluate_text_retrieval(
        retriever,
        load_queries(),
        table,
        np.asarray(anatomy.presence),
        anatomy.structures,
        gallery,
        cfg.ask.n,
    )
    (tmp / TEXT_RETRIEVAL).write_text(json.dumps(result, indent=2, sort_keys=True))
    return result


def _text_stage_part(
    ws: Workspace,
    encoder: str,
    run: str,
    tmp: Path,
    index: FingerprintIndex,
    table: pd.DataFrame,
    cfg: IndexConfig,
    embedder: TextEmbedder | None,
) -> dict[str, Any]:
    """The text part of the index stage: its entries of the manifest's ``extra``."""
    from medsae.progress import console

    where = ws.features(encoder, run) / FEATURES
    features = _load_features(ws, encoder, run) if embedder is not None else None
    if features is None:
        console.print(f"index: no {where}; query suite not evaluated", style="dim")
        return {}
    if not _has_descriptions(features):
        console.print(
            f"index: {where} has no descriptions; query suite not evaluated", style="yellow"
        )
        return {"text_retrieval": "skipped: no feature descriptions"}
    profiles = load_profiles(ws, encoder, run)
    probes = load_probes(ws, encoder, run)
    retriever = TextRetriever(index, features, embedder, cfg.ask, profiles=profiles, probes=probes)
    result = _evaluate_text(ws, tmp, retriever, table, cfg)
    return {
        key: result.get(key) for key in ("text_precision_at_10", "text_precision_at_10_achievable")
    }


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
    from medsae.data.table import slices_with_split
    from medsae.sae.codes_io import load_codes

    ws = _ws(workspace)
    encoder, run = resolve_run(ws, encoder, run)
    cfg = config or IndexConfig()
    inputs, text_embedder = _index_inputs(ws, encoder, run, cfg, embedder)

    def build(tmp: Path) -> StageResult:
        table = slices_with_split(ws.slices, ws.split)
        codes = load_codes(ws.codes(encoder, run))
        if codes.shape[0] != len(table):
            raise ArtifactError(
                f"{ws.codes(encoder, run)}: {codes.shape[0]} code rows but the slice table has "
                f"{len(table)}; rerun `medsae codes`"
            )
        index = FingerprintIndex.build(codes, table)
        index.save(tmp)
        fp = _evaluate_fingerprints(ws, encoder, index, table, cfg)
        (tmp / FINGERPRINT_EVAL).write_text(json.dumps(fp, indent=2, sort_keys=True))
        extra: dict[str, Any] = {
            "encoder": encoder,
            "run": run,
            "fingerprint_agreement": fp["fingerprint_agreement"],
        }
        extra.update(_text_stage_part(ws, encoder, run, tmp, index, table, cfg, text_embedder))
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
    from medsae.data.table import SPLIT_FILE, read_slices, slices_with_split
    from medsae.sae.codes_io import load_codes

    ws = _ws(workspace)
    folder = ws.index(encoder, run)
    if read_manifest(folder) is not None:
        return FingerprintIndex.load(folder)
    has_split = (ws.split / SPLIT_FILE).is_file()
    table = slices_with_split(ws.slices, ws.split) if has_split else read_slices(ws.slices)
    return FingerprintIndex.build(load_codes(ws.codes(encoder, run)), table)


def search_similar(
    workspace: str | Path | Workspace,
    encoder: str | None = None,
    run: str | None = None,
    slice_id: str | None = None,
    image: str | Path | bytes | np.ndarray | None = None,
    *,
    plane: str | None = None,
    index: int | None = None,
    embedding: np.ndarray | None = None,
    k: int | None = None,
    n: int = 10,
    filters: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Slices similar to a slice of the workspace or to a new image, one per subject.

    Give exactly one of ``slice_id`` (its own subject is excluded), ``image`` (array, or a
    PNG, JPEG, DICOM or NIfTI file or its bytes; a volume needs ``plane``, ``index`` defaults
    to its middle slice; prepared by :mod:`medsae.data.query_image`, then encoded and coded
    like the workspace) or ``embedding`` (a dense embedding of the workspace's encoder).
    ``k`` is the fingerprint size (default: the index stage's ``SearchConfig.k``).
    ``filters`` restricts results by metadata, e.g. ``{"modality": "CT", "split": ["train",
    "val"]}``. Returns rank, row, score, subject_key and metadata columns.
    """
    ws = _ws(workspace)
    given = [x is not None for x in (slice_id, image, embedding)]
    if sum(given) != 1:
        raise InputError("query", "give exactly one of a slice id, an image or an embedding")
    encoder, run = resolve_run(ws, encoder, run)
    k = k or index_config(ws, encoder, run).search.k
    idx = load_index(ws, encoder, run)
    if slice_id is not None:
        return idx.search(str(slice_id), k=k, n=n, filters=filters)
    from medsae.data.query_image import QueryFormat
    from medsae.sae.run_models import run_models

    models = run_models(ws, encoder, run)  # loaded once per process, not once per call
    if embedding is None:
        assert image is not None
        prepared = QueryFormat.of_slices(ws.slices).prepare(image, plane=plane, index=index)
        embedding = models.embed(prepared.image)
    codes_n = models.code(embedding)
    return idx.search(codes_n, k=k, n=n, filters=filters, exclude_own_subject=False)


@dataclass(frozen=True)
class AskResult:
    """The features a text query was composed of and the slices it found."""

    query: str
    features: list[FeatureChoice]
    results: pd.DataFrame
    reading: Reading | None = None


def cached_description_embeddings(
    folder: Path, features: pd.DataFrame, embedder: TextEmbedder
) -> np.ndarray | None:
    """The description embeddings the index stage stored in ``folder``, when they were made
    by ``embedder`` for the same described latents; else None."""
    cache = Path(folder) / DESCRIPTIONS
    if not cache.is_file():
        return None
    with np.load(cache) as z:
        if str(z["embedder"]) != embedder.name:
            return None
        kept = load_descriptions(features)
        if not np.array_equal(z["latents"], kept["latent"].to_numpy(dtype=np.int64)):
            return None
        return np.asarray(z["embeddings"])


def text_retriever(
    workspace: str | Path | Workspace,
    encoder: str | None = None,
    run: str | None = None,
    config: AskConfig | None = None,
    embedder: TextEmbedder | None = None,
    selector: Selector | None = None,
    *,
    index: FingerprintIndex | None = None,
    features: pd.DataFrame | None = None,
) -> TextRetriever:
    """A :class:`TextRetriever` over a run's index and feature descriptions (reusable).

    ``config`` defaults to the index stage's (:func:`index_config`); ``index`` and
    ``features`` that are already open are used instead of reading them again.
    """
    ws = _ws(workspace)
    encoder, run = resolve_run(ws, encoder, run)
    if features is None:
        features = _load_features(ws, encoder, run)
    if features is None:
        raise ArtifactError(
            f"{ws.features(encoder, run) / FEATURES}: no feature descriptions; "
            "run `medsae interpret` first"
        )
    config = config or index_config(ws, encoder, run).ask
    embedder = embedder or shared_embedder()
    cached = cached_description_embeddings(ws.index(encoder, run), features, embedder)
    if index is None:
        index = load_index(ws, encoder, run)
    profiles = load_profiles(ws, encoder, run)
    probes = load_probes(ws, encoder, run)
    return TextRetriever(index, features, embedder, config, cached, selector, profiles, probes)


def ask(
    workspace: str | Path | Workspace,
    encoder: str | None = None,
    run: str | None = None,
    query: str = "",
    n: int | None = None,
    features: int | None = None,
    mode: str | None = None,
    filters: Mapping[str, Any] | None = None,
    embedder: TextEmbedder | None = None,
    selector: Selector | None = None,
    metadata_filter: bool | None = None,
) -> AskResult:
    """Slices matching a text query, found through feature descriptions (one per subject).

    See :mod:`medsae.retrieval.language` for how features are chosen, weighted and combined.
    ``n``, ``features`` and ``mode`` default to the index stage's :class:`AskConfig` (the
    settings its query-suite evaluation used; ``AskConfig``'s defaults, mode ``coverage``,
    unless the stage was configured otherwise). ``filters`` optionally restricts the
    results by metadata (never used to answer the query). The result's ``reading`` is how
    the query was read (concepts, words not understood).
    """
    if not query or not query.strip():
        raise InputError("query", "empty query; describe the images you are looking for")
    ws = _ws(workspace)
    encoder, run = resolve_run(ws, encoder, run)
    cfg = index_config(ws, encoder, run).ask.model_copy()
    if features is not None:
        cfg.features = features
    if n is not None:
        cfg.n = n
    if mode:
        cfg.mode = mode  # type: ignore[assignment]  # validated on assignment
    if metadata_filter is not None:
        cfg.metadata_filter = metadata_filter
    retriever = text_retriever(ws, encoder, run, cfg, embedder, selector)
    found = retriever.answer(query, cfg.n, retriever.index.filter_mask(filters))
    return AskResult(
        query, found.features, retriever.index.describe_hits(found.hits), found.reading
    )
