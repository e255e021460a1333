"""The ``interpret`` stage: statistics, descriptions and scores of an SAE's features.

Reads ``WS/slices``, ``WS/split``, ``WS/codes/<encoder>/<run>`` and, when present,
``WS/eval/<encoder>/<run>/concepts.parquet``; writes ``WS/features/<encoder>/<run>/``:

* ``features.parquet``: one row per described feature (docs/ARTIFACTS.md "features");
* ``descriptions.jsonl``: per feature the description, describer, error, top / display /
  quantile slice ids, label enrichment, rule and detection details;
* ``scores.json``: headline ``detection_balanced_accuracy`` (median over scored features),
  medians and means of every score, the describer and scorer, counts, failures, token usage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from medsae.data.table import IMAGES_FILE, open_images, read_anatomy, slices_with_split
from medsae.errors import ArtifactError
from medsae.interpret.config import InterpretConfig
from medsae.interpret.describe import Description, LLMDescriber, OfflineDescriber
from medsae.interpret.features import (
    FeatureStats,
    LabelTable,
    build_label_table,
    feature_statistics,
)
from medsae.interpret.scorers import EmbeddingScorer, LabelScorer, LLMScorer, TextEmbedFn
from medsae.interpret.scoring import (
    RATE_KINDS,
    CodeSpace,
    DetectionSample,
    DetectionScore,
    auroc,
    detection_sample,
    pooled_sample,
    ranking_summary,
    score_detection,
    score_ranking,
)
from medsae.llm.client import LLMClient
from medsae.progress import console, track
from medsae.sae.codes_io import load_codes, load_codes_meta
from medsae.workspace import (
    StageOutcome,
    StageResult,
    Workspace,
    artifact_key,
    read_manifest,
    run_stage,
)

FEATURES_FILE = "features.parquet"
SCORES_FILE = "scores.json"
DESCRIPTIONS_FILE = "descriptions.jsonl"
CONCEPTS_FILE = "concepts.parquet"

SCORER_METHODS = {
    "embedding": "offline text-embedding scorer (all-MiniLM-L6-v2): description vs the slices' "
    "label and metadata phrases; threshold chosen on the training split, scores on held-out splits",
    "labels": "label scorer: share of the labels named by the description that a held-out slice "
    "carries; threshold chosen on the training split",
    "llm": "LLM/VLM scorer: the endpoint judges held-out slices (images and metadata) against the description",
}


def make_client(config: InterpretConfig, cache_dir: Path | None) -> LLMClient:
    """The endpoint client from ``config.llm`` (unset fields from the environment)."""
    c = config.llm
    return LLMClient.from_env(
        c.base_url,
        c.model,
        c.api_key.get_secret_value() if c.api_key else None,
        embedding_model=c.embedding_model,
        timeout_s=c.timeout_s,
        max_retries=c.max_retries,
        backoff_s=c.backoff_s,
        max_backoff_s=c.max_backoff_s,
        invalid_retries=c.invalid_retries,
        concurrency=c.concurrency,
        cache_dir=cache_dir if c.cache else None,
        temperature=c.temperature,
        max_tokens=c.max_tokens,
    )


def _concept_map(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    frame = pd.read_parquet(path)
    missing = {"latent", "concept", "auroc"} - set(frame.columns)
    if missing:
        raise ArtifactError(f"{path}: missing column(s) {sorted(missing)}")
    return frame.drop_duplicates("latent").set_index("latent")


def _heldout_auroc(
    codes: sp.csc_matrix, latent: int, label: str, labels: LabelTable, rows: np.ndarray
) -> float:
    li = labels.index(label)
    rows = rows[labels.defined[rows, li]]
    col = codes[:, latent].toarray().ravel()
    return auroc(labels.values[rows, li], col[rows])


def _select(
    stats: list[FeatureStats], config: InterpretConfig, concept_auroc: dict[int, float]
) -> list[FeatureStats]:
    """All alive features, or the top N by ``rank_by`` (ties by latent index)."""
    if config.select == "all" or len(stats) <= config.top_n:
        return stats

    def key(s: FeatureStats) -> tuple[float, int]:
        if config.rank_by == "frequency":
            return (-s.frequency, s.latent)
        a = concept_auroc.get(s.latent, float("nan"))
        value = (a if np.isfinite(a) else 0.5) * np.sqrt(s.frequency)
        return (-value, s.latent)

    return sorted(sorted(stats, key=key)[: config.top_n], key=lambda s: s.latent)


def _summary(values: list[float]) -> dict[str, float | None]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if not len(v):
        return {"median": None, "mean": None, "n": 0}
    return {"median": float(np.median(v)), "mean": float(v.mean()), "n": len(v)}


def detection_draw(config: InterpretConfig, table: pd.DataFrame) -> dict[str, Any]:
    """Sizes of every detection sample and, for ``hard_negatives="other-series"``, the stack
    (subject and plane) of each slice (the ``series`` of :func:`detection_sample`)."""
    draw: dict[str, Any] = {
        "n_positive": config.n_positive,
        "n_hard": config.n_negative_hard,
        "n_random": config.n_negative_random,
    }
    if config.hard_negatives == "other-series":
        stacks = table["subject_key"].astype(str) + "/" + table["plane"].astype(str)
        draw["series"] = pd.factorize(stacks)[0]
    return draw


def near_miss_sample(
    space: CodeSpace,
    latent: int,
    train: np.ndarray,
    config: InterpretConfig,
    draw: dict[str, Any],
) -> DetectionSample:
    """The offline describer's near-miss draws of one feature from the training split (seeds
    ``seed + 100 ...``, apart from the calibration draws' ``seed + 1 ...``), pooled."""
    seeds = range(config.seed + 100, config.seed + 100 + config.contrast_draws)
    return pooled_sample(space, latent, train, seeds, **draw)


def build_features(
    ws: Workspace,
    encoder: str,
    run: str,
    config: InterpretConfig,
    out: Path,
    *,
    client: LLMClient | None = None,
    embedder: TextEmbedFn | None = None,
) -> StageResult:
    """Compute and write the features artifact into ``out`` (see the module docstring)."""
    table = slices_with_split(ws.slices, ws.split)
    anatomy = read_anatomy(ws.slices)
    codes_dir = ws.codes(encoder, run)
    codes = load_codes(codes_dir)
    meta = load_codes_meta(codes_dir)
    if codes.shape[0] != len(table):
        raise ArtifactError(
            f"{codes_dir}: {codes.shape[0]} code rows but {len(table)} slices; rerun `medsae codes`"
        )
    label_images = None
    if config.geometry_concepts and (ws.slices / IMAGES_FILE).is_file():
        label_images = open_images(ws.slices)
    labels = build_label_table(table, anatomy, label_images, geometry=config.geometry_concepts)
    split = table["split"].to_numpy()
    train = np.flatnonzero(split == "train")
    heldout = np.flatnonzero(np.isin(split, config.score_splits))
    subjects = pd.factorize(table["subject_key"])[0]

    stats = feature_statistics(
        codes,
        table,
        labels,
        train,
        levels=meta.get("levels"),
        min_active=config.min_active,
        n_top=config.n_top,
        n_display=config.n_display,
        n_quantiles=config.n_quantiles,
        n_enrichment=config.n_enrichment,
        seed=config.seed,
    )
    csc = sp.csc_matrix(codes)
    concepts = _concept_map(ws.eval(encoder, run) / CONCEPTS_FILE)
    concept_of: dict[int, str | None] = {}
    concept_auroc: dict[int, float] = {}
    for s in stats:
        if concepts is not None and s.latent in concepts.index:
            concept_of[s.latent] = str(concepts.at[s.latent, "concept"])
            concept_auroc[s.latent] = float(concepts.at[s.latent, "auroc"])
        else:
            concept_of[s.latent] = s.concept
            concept_auroc[s.latent] = (
                _heldout_auroc(csc, s.latent, s.concept, labels, heldout)
                if s.concept
                else float("nan")
            )
    chosen = _select(stats, config, concept_auroc)
    console.print(
        f"interpret: {len(stats)} alive features of {codes.shape[1]}; describing {len(chosen)}"
    )

    needs_llm = config.describer == "llm" or config.scorer == "llm"
    if needs_llm and client is None:
        client = make_client(config, ws.root / "cache" / "llm")
    images = None
    if needs_llm and config.llm.send_images:
        images = label_images if label_images is not None else open_images(ws.slices)

    space = CodeSpace(codes)
    draw = detection_draw(config, table)
    det_kw: dict[str, Any] = {
        **{k: draw[k] for k in ("n_positive", "n_hard", "n_random")},
        "min_positive": config.min_positive,
        "seed": config.seed,
    }

    descriptions: list[Description]
    if config.describer == "llm":
        assert client is not None
        describer = LLMDescriber(
            client,
            table,
            labels,
            images,
            n_train=len(train),
            send_images=config.llm.send_images,
            image_size=config.llm.image_size,
        )
        descriptions = describer.describe_many(chosen)
    else:
        contrast = None
        if config.contrast_draws > 0:

            def contrast(latent: int) -> tuple[np.ndarray, np.ndarray]:
                near = near_miss_sample(space, latent, train, config, draw)
                return near.rows[near.positive], near.rows[~near.positive]

        offline = OfflineDescriber(labels, codes, train, contrast=contrast)
        descriptions = [offline.describe(s) for s in track(chosen, "describing features")]
    described = {d.latent: d.text for d in descriptions if d.text}

    scorer: Any
    if config.scorer == "llm":
        assert client is not None
        scorer = LLMScorer(
            client,
            table,
            labels,
            images,
            batch=config.detection_batch,
            send_images=config.llm.send_images,
            image_size=config.llm.image_size,
            seed=config.seed,
        )
    elif config.scorer == "labels":
        scorer = LabelScorer(labels)
    else:
        scorer = EmbeddingScorer(labels, embedder)
        scorer.prepare(list(described.values()))
    latents = sorted(described)
    samples = {k: detection_sample(space, k, heldout, seed=config.seed, **draw) for k in latents}
    calibration: dict[int, DetectionSample] = {}

    def detect(sc: Any, latent: int) -> DetectionScore:
        cal = None
        if sc.calibrated:
            if latent not in calibration:  # pooled draws: a steadier threshold
                seeds = range(config.seed + 1, config.seed + 1 + config.calibration_draws)
                calibration[latent] = pooled_sample(space, latent, train, seeds, **draw)
            cal = calibration[latent]
        return score_detection(
            sc,
            described[latent],
            latent,
            space,
            heldout,
            sample=samples[latent],
            calibration_sample=cal,
            **det_kw,
        )

    if hasattr(scorer, "set_background"):
        rng = np.random.default_rng(config.seed)
        scorer.set_background(rng.choice(heldout, size=min(200, len(heldout)), replace=False))
    if config.scorer == "llm":
        assert client is not None
        det_list = client.map(lambda k: detect(scorer, k), latents)
    else:
        det_list = [detect(scorer, k) for k in track(latents, f"scoring ({scorer.name})")]
    detection = dict(zip(latents, det_list, strict=True))
    label_scorer = scorer if config.scorer == "labels" else LabelScorer(labels)
    by_labels = {k: detect(label_scorer, k) for k in latents}
    ranks = score_ranking(
        scorer,
        described,
        space,
        heldout,
        subjects,
        n_slices=config.ranking_slices,
        n_distractors=config.ranking_distractors,
        seed=config.seed,
        mapper=client.map if config.scorer == "llm" and client is not None else None,
    )

    ids = table["slice_id"].to_numpy()
    stats_of = {s.latent: s for s in chosen}
    rows, records, failures = [], [], []
    nan = float("nan")
    for d in descriptions:
        s = stats_of[d.latent]
        det = detection.get(d.latent)
        rows.append(
            {
                "latent": s.latent,
                "level": s.level,
                "frequency": s.frequency,
                "mean_activation": s.mean_activation,
                "max_activation": s.max_activation,
                "top_slice_ids": [str(ids[r]) for r in s.top_rows],
                "description": d.text,
                "describer": d.describer,
                "rule": list(d.rule),
                "rule_min": d.rule_min,
                "detection_balanced_accuracy": det.balanced_accuracy if det else nan,
                "detection_f1": det.f1 if det else nan,
                "detection_auroc": det.auroc if det else nan,
                "ranking_rank": ranks.get(d.latent, nan),
                "concept": concept_of.get(s.latent),
                "concept_auroc": concept_auroc.get(s.latent, nan),
            }
        )
        if d.error:
            failures.append({"latent": d.latent, "stage": "describe", "error": d.error})
        elif det is not None and det.error and "too few" not in det.error:
            failures.append({"latent": d.latent, "stage": "score", "error": det.error})
        summary = s.summary()
        records.append(
            {
                "latent": s.latent,
                "description": d.text,
                "describer": d.describer,
                "error": d.error,
                "rule": d.rule,
                "rule_min": d.rule_min,
                "n_active_train": s.n_active,
                "frequency": s.frequency,
                "top_slice_ids": [str(ids[r]) for r in s.top_rows],
                "display_slice_ids": [str(ids[r]) for r in s.display_rows],
                "quantile_slice_ids": [str(ids[r]) for r in s.quantile_rows],
                "enrichment": summary["enrichment"],
                "concept": concept_of.get(s.latent),
                "detection": det.__dict__ if det else None,
                "detection_labels": by_labels[d.latent].__dict__ if d.latent in by_labels else None,
            }
        )
    frame = pd.DataFrame(
        rows,
        columns=[
            "latent",
            "level",
            "frequency",
            "mean_activation",
            "max_activation",
            "top_slice_ids",
            "description",
            "describer",
            "rule",
            "rule_min",
            "detection_balanced_accuracy",
            "detection_f1",
            "detection_auroc",
            "ranking_rank",
            "concept",
            "concept_auroc",
        ],
    )
    frame.to_parquet(out / FEATURES_FILE, index=False)
    with open(out / DESCRIPTIONS_FILE, "w") as fh:
        for rec in records:
            fh.write(json.dumps(rec, default=_json_default) + "\n")

    ba = [x.balanced_accuracy for x in detection.values()]
    scores: dict[str, Any] = {
        "describer": descriptions[0].describer if descriptions else config.describer,
        "scorer": config.scorer,
        "scorer_method": SCORER_METHODS[config.scorer],
        "splits": {"statistics": "train", "scores": list(config.score_splits)},
        "detection_balanced_accuracy": _summary(ba)["median"],
        "detection": {
            "balanced_accuracy": _summary(ba),
            "f1": _summary([x.f1 for x in detection.values()]),
            "auroc": _summary([x.auroc for x in detection.values()]),
            "by_kind": {
                key: _summary([x.rates[key] for x in detection.values() if x.rates])
                for key in RATE_KINDS
            },
        },
        "detection_by_scorer": {
            "labels": {
                "balanced_accuracy": _summary([x.balanced_accuracy for x in by_labels.values()]),
                "auroc": _summary([x.auroc for x in by_labels.values()]),
            }
        },
        "ranking": {
            **ranking_summary(list(ranks.values()), config.ranking_distractors + 1),
            "scorer": config.scorer,
        },
        "counts": {
            "n_latents": int(codes.shape[1]),
            "alive": len(stats),
            "selected": len(chosen),
            "described": len(described),
            "failed": sum(1 for d in descriptions if not d.text),
            "scored": int(np.isfinite(ba).sum()) if ba else 0,
        },
        "failures": failures,
        "usage": client.usage.as_dict() if client is not None else None,
        "llm": {"base_url": client.base_url, "model": client.model} if client is not None else None,
    }
    (out / SCORES_FILE).write_text(json.dumps(scores, indent=2, default=_json_default))
    return StageResult(
        counts=dict(scores["counts"]),
        extra={
            "detection_balanced_accuracy": scores["detection_balanced_accuracy"],
            "ranking_top2": scores["ranking"]["top2"],
            "describer": scores["describer"],
        },
    )


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def interpret(
    workspace: str | Path | Workspace,
    encoder: str,
    run: str,
    config: InterpretConfig | None = None,
    force: bool = False,
    *,
    client: LLMClient | None = None,
    embedder: TextEmbedFn | None = None,
) -> StageOutcome:
    """Run the ``interpret`` stage for one SAE run (skipped when up to date).

    ``client`` and ``embedder`` replace the endpoint client built from ``config.llm`` and the
    bundled text embedder (for tests or custom setups).
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    config = config or InterpretConfig()
    inputs = {
        "slices": artifact_key(ws.slices),
        "split": artifact_key(ws.split),
        "codes": artifact_key(ws.codes(encoder, run)),
    }
    concepts = ws.eval(encoder, run) / CONCEPTS_FILE
    if concepts.is_file() and read_manifest(ws.eval(encoder, run)) is not None:
        inputs["eval"] = artifact_key(ws.eval(encoder, run))
    cfg = config.model_dump(mode="json")
    if client is not None:
        cfg["llm"] = {**cfg["llm"], "base_url": client.base_url, "model": client.model}
    return run_stage(
        ws.features(encoder, run),
        "interpret",
        cfg,
        inputs,
        lambda out: build_features(ws, encoder, run, config, out, client=client, embedder=embedder),
        force=force,
    )


def default_runs(ws: Workspace) -> list[tuple[str, str]]:
    """The best run from ``WS/ranking/ranking.json`` if present, else every run with codes."""
    ranking = ws.ranking / "ranking.json"
    if ranking.is_file():
        best = json.loads(ranking.read_text()).get("best") or {}
        if best.get("encoder") and best.get("run"):
            return [(str(best["encoder"]), str(best["run"]))]
    base = ws.root / "codes"
    found = []
    if base.is_dir():
        for enc in sorted(p for p in base.iterdir() if p.is_dir()):
            for run_dir in sorted(
                p for p in enc.iterdir() if p.is_dir() and not p.name.startswith(".")
            ):
                if read_manifest(run_dir) is not None:
                    found.append((enc.name, run_dir.name))
    return found
