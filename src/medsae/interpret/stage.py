"""The ``interpret`` stage: statistics, descriptions and scores of an SAE's features.

Reads ``WS/slices``, ``WS/split``, ``WS/codes/<encoder>/<run>`` and, when present,
``WS/eval/<encoder>/<run>/concepts.parquet`` (:mod:`medsae.interpret.inputs`); writes
``WS/features/<encoder>/<run>/`` (file names and formats: :mod:`medsae.interpret.io`).

One run: load the inputs; compute the training statistics of the alive features; choose the
features to describe (:mod:`medsae.interpret.selection`, on ``selection_split`` only); build
the endpoint client when a component needs one; describe with the registered describer and
score with the registered scorer (:mod:`medsae.interpret.registry`) on the held-out splits;
write the three files and the described features' concept profiles
(:mod:`medsae.interpret.profiles`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsae.data.table import IMAGES_FILE, open_images
from medsae.device import describe_device, resolve_device
from medsae.evaluate.io import CONCEPTS
from medsae.interpret import io
from medsae.interpret.config import InterpretConfig
from medsae.interpret.describe import Description
from medsae.interpret.features import FeatureStats, feature_statistics
from medsae.interpret.inputs import InterpretInputs, load_inputs, reported_concepts
from medsae.interpret.probes import fit_probes, write_probes
from medsae.interpret.profiles import concept_profiles, write_profiles
from medsae.interpret.registry import (
    NEEDS_CLIENT,
    SCORER_METHODS,
    Components,
    build_describer,
    build_scorer,
    make_client,
)
from medsae.interpret.scorers import TextEmbedFn
from medsae.interpret.scoring import (
    RATE_KINDS,
    DetectionSample,
    DetectionScore,
    Scorer,
    detection_sample,
    pooled_sample,
    ranking_summary,
    score_detection,
    score_ranking,
)
from medsae.interpret.selection import select_features
from medsae.interpret.stability import seed_siblings, seed_stability
from medsae.llm.client import LLMClient
from medsae.progress import console, track
from medsae.workspace import (
    StageOutcome,
    StageResult,
    Workspace,
    artifact_key,
    read_manifest,
    run_stage,
)

Mapper = Callable[[Callable[[int], Any], Iterable[int]], list[Any]]


@dataclass
class Scored:
    """The scores of the described features: by the configured scorer, by the label scorer
    (a second opinion) and the ranking protocol's rank of each."""

    detection: dict[int, DetectionScore]
    by_labels: dict[int, DetectionScore]
    ranks: dict[int, float]


def training_statistics(inp: InterpretInputs, config: InterpretConfig) -> list[FeatureStats]:
    """Training-split statistics of every feature alive there (``min_active``)."""
    return feature_statistics(
        inp.codes,
        inp.table,
        inp.labels,
        inp.train,
        levels=inp.levels,
        min_active=config.min_active,
        n_top=config.n_top,
        n_display=config.n_display,
        n_quantiles=config.n_quantiles,
        n_enrichment=config.n_enrichment,
        seed=config.seed,
    )


def build_components(
    ws: Workspace,
    inp: InterpretInputs,
    config: InterpretConfig,
    client: LLMClient | None,
    embedder: TextEmbedFn | None,
) -> Components:
    """The client (built from ``config.llm`` when a configured component needs one and none is
    given) and the images it is sent, for the describer and scorer factories."""
    needs_llm = config.describer in NEEDS_CLIENT or config.scorer in NEEDS_CLIENT
    if needs_llm and client is None:
        client = make_client(config, ws.root / "cache" / "llm")
    images = None
    if needs_llm and config.llm.send_images:  # imported embeddings may come without images
        images = inp.images if inp.images is not None else _images_if_any(ws)
    return Components(inp, config, client, images, embedder)


def _images_if_any(ws: Workspace) -> np.ndarray | None:
    """The slice images, or None for a workspace of imported embeddings without them."""
    return open_images(ws.slices) if (ws.slices / IMAGES_FILE).is_file() else None


def score_features(
    scorer: Scorer,
    labels_scorer: Scorer,
    described: dict[int, str],
    inp: InterpretInputs,
    config: InterpretConfig,
    mapper: Mapper | None,
) -> Scored:
    """Detection (configured scorer and label scorer) and ranking of every described feature
    on the held-out rows; offline thresholds from pooled training draws (seeds ``seed + 1...``).
    Negatives are drawn from at most ``fit_slices`` rows of each split (``*_background``)."""
    latents = sorted(described)
    samples = {
        k: detection_sample(
            inp.space,
            k,
            inp.heldout,
            seed=config.seed,
            background=inp.heldout_background,
            **inp.draw,
        )
        for k in latents
    }
    calibration: dict[int, DetectionSample] = {}
    det_kw = {k: inp.draw[k] for k in ("n_positive", "n_hard", "n_random")}

    def detect(sc: Scorer, latent: int) -> DetectionScore:
        cal = None
        if sc.calibrated:
            if latent not in calibration:  # pooled draws: a steadier threshold
                seeds = range(config.seed + 1, config.seed + 1 + config.calibration_draws)
                calibration[latent] = pooled_sample(
                    inp.space,
                    latent,
                    inp.train,
                    seeds,
                    background=inp.train_background,
                    **inp.draw,
                )
            cal = calibration[latent]
        return score_detection(
            sc,
            described[latent],
            latent,
            inp.space,
            inp.heldout,
            sample=samples[latent],
            calibration_sample=cal,
            min_positive=config.min_positive,
            seed=config.seed,
            **det_kw,
        )

    rng = np.random.default_rng(config.seed)
    background = rng.choice(inp.heldout, size=min(200, len(inp.heldout)), replace=False)
    scorer.prepare(list(described.values()), background)
    if mapper is not None:
        det_list = mapper(lambda k: detect(scorer, k), latents)
    else:
        det_list = [detect(scorer, k) for k in track(latents, f"scoring ({scorer.name})")]
    detection = dict(zip(latents, det_list, strict=True))
    by_labels = {k: detect(labels_scorer, k) for k in latents}
    ranks = score_ranking(
        scorer,
        described,
        inp.space,
        inp.heldout,
        inp.subjects,
        n_slices=config.ranking_slices,
        n_distractors=config.ranking_distractors,
        seed=config.seed,
        mapper=mapper,
    )
    return Scored(detection, by_labels, ranks)


def _summary(values: Sequence[float | None]) -> dict[str, float | None]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if not len(v):
        return {"median": None, "mean": None, "n": 0}
    return {"median": float(np.median(v)), "mean": float(v.mean()), "n": len(v)}


def feature_rows(
    inp: InterpretInputs,
    chosen: list[FeatureStats],
    descriptions: list[Description],
    scored: Scored,
    concepts: tuple[dict[int, str | None], dict[int, float]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of :data:`~medsae.interpret.io.FEATURES`, records of
    :data:`~medsae.interpret.io.DESCRIPTIONS` and the failures, one per description."""
    ids = inp.table["slice_id"].to_numpy()
    stats_of = {s.latent: s for s in chosen}
    concept_of, concept_auroc = concepts
    rows, records, failures = [], [], []
    nan = float("nan")
    for d in descriptions:
        s = stats_of[d.latent]
        det = scored.detection.get(d.latent)
        labels_det = scored.by_labels.get(d.latent)
        top_ids = [str(ids[r]) for r in s.top_rows]
        rows.append(
            {
                "latent": s.latent,
                "level": s.level,
                "frequency": s.frequency,
                "mean_activation": s.mean_activation,
                "max_activation": s.max_activation,
                "top_slice_ids": top_ids,
                "description": d.text,
                "describer": d.describer,
                "rule": list(d.rule),
                "rule_min": d.rule_min,
                "detection_balanced_accuracy": det.balanced_accuracy if det else nan,
                "detection_f1": det.f1 if det else nan,
                "detection_auroc": det.auroc if det else nan,
                "ranking_rank": scored.ranks.get(d.latent, nan),
                "concept": concept_of.get(s.latent),
                "concept_auroc": concept_auroc.get(s.latent, nan),
            }
        )
        if d.error:
            failures.append({"latent": d.latent, "stage": "describe", "error": d.error})
        elif det is not None and det.error and "too few" not in det.error:
            failures.append({"latent": d.latent, "stage": "score", "error": det.error})
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
                "top_slice_ids": top_ids,
                "display_slice_ids": [str(ids[r]) for r in s.display_rows],
                "quantile_slice_ids": [str(ids[r]) for r in s.quantile_rows],
                "enrichment": s.summary()["enrichment"],
                "concept": concept_of.get(s.latent),
                "detection": det.__dict__ if det else None,
                "detection_labels": labels_det.__dict__ if labels_det else None,
            }
        )
    return rows, records, failures


def scores_summary(
    config: InterpretConfig,
    descriptions: list[Description],
    scored: Scored,
    counts: dict[str, int],
    failures: list[dict[str, Any]],
    client: LLMClient | None,
) -> dict[str, Any]:
    """The content of :data:`~medsae.interpret.io.SCORES`."""
    det = list(scored.detection.values())
    ba = [x.balanced_accuracy for x in det]
    by_labels = list(scored.by_labels.values())
    return {
        "describer": descriptions[0].describer if descriptions else config.describer,
        "scorer": config.scorer,
        "scorer_method": SCORER_METHODS[config.scorer],
        "splits": {
            "statistics": "train",
            "selection": config.selection_split if config.select == "top_n" else None,
            "scores": list(config.score_splits),
        },
        "detection_balanced_accuracy": _summary(ba)["median"],
        "detection": {
            "balanced_accuracy": _summary(ba),
            "f1": _summary([x.f1 for x in det]),
            "auroc": _summary([x.auroc for x in det]),
            "by_kind": {
                key: _summary([x.rates[key] for x in det if x.rates]) for key in RATE_KINDS
            },
        },
        "detection_by_scorer": {
            "labels": {
                "balanced_accuracy": _summary([x.balanced_accuracy for x in by_labels]),
                "auroc": _summary([x.auroc for x in by_labels]),
            }
        },
        "ranking": {
            **ranking_summary(list(scored.ranks.values()), config.ranking_distractors + 1),
            "scorer": config.scorer,
        },
        "counts": {**counts, "scored": int(np.isfinite(ba).sum()) if ba else 0},
        "failures": failures,
        "usage": client.usage.as_dict() if client is not None else None,
        "llm": {"base_url": client.base_url, "model": client.model} if client is not None else None,
    }


def localise(
    ws: Workspace,
    encoder: str,
    run: str,
    inp: InterpretInputs,
    rows: list[dict[str, Any]],
    config: InterpretConfig,
) -> dict[str, Any]:
    """Add the localisation columns to ``rows`` (in place) and return the ``localisation``
    block of :data:`~medsae.interpret.io.SCORES` (see :func:`medsae.maps.localisation_scores`);
    scored on the held-out ``score_splits`` rows, never on the slices that made the
    descriptions."""
    from medsae.maps import SCORE_COLUMNS, localisation_scores

    if not config.localisation or not rows:
        for r in rows:
            r.update(dict.fromkeys(SCORE_COLUMNS, float("nan")))
            r.update(localisation_slices=0, localisation_target="")
        reason = "off (localisation = false)" if not config.localisation else "no features"
        return {"status": "not computed", "reason": reason}
    held_out = np.concatenate([inp.rows_of(s) for s in config.score_splits])
    table = pd.DataFrame(rows)
    result = localisation_scores(
        ws,
        encoder,
        run,
        table,
        held_out,
        max_slices=config.localisation_slices,
        device=config.device,
    )
    merged = result.merge_into(table[["latent"]])
    for r, values in zip(rows, merged[list(SCORE_COLUMNS)].to_dict("records"), strict=True):
        r.update(values)
    return result.summary


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
    inp = load_inputs(ws, encoder, run, config)
    stats = training_statistics(inp, config)
    selection_rows = inp.rows_of(config.selection_split)
    chosen = select_features(stats, inp.space.csc, inp.labels, selection_rows, config)
    n_latents = int(inp.codes.shape[1])
    console.print(
        f"interpret: {len(stats)} alive features of {n_latents}; describing {len(chosen)}"
    )
    parts = build_components(ws, inp, config, client, embedder)
    descriptions = build_describer(config.describer, parts).describe_many(chosen)
    described = {d.latent: d.text for d in descriptions if d.text}
    scorer = build_scorer(config.scorer, parts)
    labels_scorer = scorer if config.scorer == "labels" else build_scorer("labels", parts)
    uses_client = config.scorer in NEEDS_CLIENT and parts.client is not None
    mapper = parts.client.map if uses_client and parts.client is not None else None
    scored = score_features(scorer, labels_scorer, described, inp, config, mapper)
    concepts = reported_concepts(ws, encoder, run, inp, chosen)
    rows, records, failures = feature_rows(inp, chosen, descriptions, scored, concepts)
    counts = {
        "n_latents": n_latents,
        "alive": len(stats),
        "selected": len(chosen),
        "described": len(described),
        "failed": sum(1 for d in descriptions if not d.text),
    }
    scores = scores_summary(config, descriptions, scored, counts, failures, parts.client)
    scores["localisation"] = localise(ws, encoder, run, inp, rows, config)
    stable, scores["seed_stability"] = seed_stability(
        ws, encoder, run, np.array([r["latent"] for r in rows], dtype=np.int64)
    )
    for i, r in enumerate(rows):
        r.update({key: values[i] for key, values in stable.items()})
    io.write_features(out, rows)
    io.write_descriptions(out, records)
    io.write_scores(out, scores)
    write_profiles(
        out, concept_profiles(inp.codes, inp.labels, inp.train, sorted(described), concepts[0])
    )
    write_probes(out, fit_probes(inp.codes, inp.labels, inp.train))
    return StageResult(
        counts=dict(scores["counts"]),
        extra={
            "detection_balanced_accuracy": scores["detection_balanced_accuracy"],
            "ranking_top2": scores["ranking"]["top2"],
            "describer": scores["describer"],
        },
    )


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
    device = resolve_device(config.device, "interpret.device")
    inputs = {
        "slices": artifact_key(ws.slices),
        "split": artifact_key(ws.split),
        "codes": artifact_key(ws.codes(encoder, run)),
    }
    if config.localisation:  # the feature maps come from the encoder the store records
        inputs["embeddings"] = artifact_key(ws.embeddings(encoder))
    if seed_siblings(ws, encoder, run):  # the stability columns read the other seeds' runs
        inputs["saes"] = artifact_key(ws.saes(encoder))
    concepts = ws.eval(encoder, run) / CONCEPTS
    if concepts.is_file() and read_manifest(ws.eval(encoder, run)) is not None:
        inputs["eval"] = artifact_key(ws.eval(encoder, run))
    cfg = config.key_config()
    if client is not None:
        cfg["llm"] = {**cfg["llm"], "base_url": client.base_url, "model": client.model}
    return run_stage(
        ws.features(encoder, run),
        "interpret",
        cfg,
        inputs,
        lambda out: build_features(ws, encoder, run, config, out, client=client, embedder=embedder),
        force=force,
        runtime={**config.runtime_values(), **describe_device(device)},
    )
