"""Localisation scores: does a feature's map point at the structure it is said to detect?

For a feature ``j`` whose concept or description names a structure (or a group of
structures), the target mask ``M`` of a slice is the set of pixels of the slice's label map
(``prepare --label-maps``) holding one of those structures. On held-out slices where ``j``
fires (code > 0) and ``M`` is not empty, with ``m`` the feature's pixel map
(:func:`medsae.maps.attribution.to_pixels`):

* pointing game (Zhang et al. 2016): ``hit = [dist(argmax_x m(x), M) <= tol]``, the peak (the
  first maximum in row-major order) within ``tol`` pixels of the mask; ``tol`` is Zhang et
  al.'s 15 pixels at 224 pixels scaled to the slice (``POINTING_TOLERANCE`` x its side: 8.6
  pixels at 128); a flat map (no single peak) is a miss;
* energy inside the mask: ``E = sum_{x in M} m+(x) / sum_x m+(x)`` with ``m+ = max(m, 0)``
  (NaN when the map has no positive part). ``m`` carries the ``- W_enc[j] . b_dec`` term,
  which belongs to no position, spread evenly over the slice: a uniform shift of every
  pixel, so ``E`` depends on it (a negative term removes a uniform pedestal, a positive one
  adds mass everywhere and pulls ``E`` toward the mask's share of the slice). ``E_image``, the
  same share of the image's own contributions (the map without that term), is reported
  beside it.

Baseline, the same measures for a centred Gaussian blob of the same size:
``g(x) = exp(-((r - r0)^2 / (2 s_r^2) + (c - c0)^2 / (2 s_c^2)))`` centred on the image
(``r0 = c0 = (S - 1) / 2``), with ``s_r``, ``s_c`` the standard deviations of the row and
column coordinates under the weights ``m+`` (at least half a pixel). A map that only says
"somewhere in the middle of the body" scores like its blob.

A feature's ``pointing`` and ``energy_in_mask`` are means over its scored slices (the
``max_slices`` highest activations among those where it fires and the target is present);
the summary gives their means over the features with a target (the standard pointing-game
figure), beside the baseline's, and the medians beside them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from medsae.data.io import LABEL_MAPS_FLAG, has_label_maps, label_ids, open_label_maps
from medsae.data.structures import ALL_STRUCTURES, GROUPS, pretty
from medsae.encode.spatial import SpatialEncoder
from medsae.errors import ArtifactError, InputError
from medsae.evaluate.io import CONCEPTS
from medsae.maps.attribution import check_latents, latent_maps, sae_name, to_pixels
from medsae.maps.io import SCORE_COLUMNS
from medsae.maps.pointing import (  # noqa: F401  (re-exported)
    POINTING_TOLERANCE,
    SliceScore,
    energy_share,
    gaussian_blob,
    pointing_hit,
    score_map,
    spread,
)
from medsae.workspace import Workspace

NOT_COMPUTED = "not computed"
_LITERAL = re.compile(r"^(structure|group)=(.+)$")
_PRETTY = sorted(
    [(pretty(s), s) for s in ALL_STRUCTURES] + [(g.replace("_", " "), g) for g in GROUPS],
    key=lambda t: -len(t[0]),
)


def target_structures(concept: Any = None, rule: Any = None, description: Any = None) -> list[str]:
    """The structures or groups a feature is said to detect (empty when none is named).

    In order: the concept when it is ``structure=...`` or ``group=...``; else the positive
    ``structure=`` / ``group=`` literals of the offline describer's rule; else structure
    and group names (readable forms, e.g. "left kidney") in the description before any
    "not in view" clause.
    """
    if isinstance(concept, str):
        m = _LITERAL.match(concept.strip())
        if m and (m.group(2) in ALL_STRUCTURES or m.group(2) in GROUPS):
            return [m.group(2)]
    literals = [] if rule is None else [str(x) for x in list(rule)]
    named = [
        m.group(2)
        for lit in literals
        if (m := _LITERAL.match(lit.strip()))
        and (m.group(2) in ALL_STRUCTURES or m.group(2) in GROUPS)
    ]
    if named:
        return named
    if isinstance(description, str) and description.strip():
        text = " " + description.lower().split("not in view")[0] + " "
        found: list[str] = []
        for phrase, name in _PRETTY:
            pattern = r"(?<![a-z])" + re.escape(phrase.lower()) + r"(?![a-z])"
            if re.search(pattern, text):
                found.append(name)
                text = re.sub(pattern, " ", text)
        return found
    return []


@dataclass
class LocalisationResult:
    """Per-feature localisation scores and their summary (``computed`` False: see ``reason``).

    ``features``: one row per requested latent with ``latent`` and :data:`SCORE_COLUMNS`
    (NaN where a feature has no target or no scored slice). ``summary``: ``status``,
    ``pointing_game`` / ``energy_in_mask`` (means over the features scored; ``*_median``
    beside them) beside
    ``pointing_game_baseline`` / ``energy_in_mask_baseline``, counts, ``exact`` and ``method``
    of the maps, ``reason`` when not computed.
    """

    computed: bool
    features: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None

    def merge_into(self, table: pd.DataFrame) -> pd.DataFrame:
        """``table`` (with a ``latent`` column) with :data:`SCORE_COLUMNS` added or replaced."""
        base = table.drop(columns=[c for c in SCORE_COLUMNS if c in table.columns])
        return base.merge(self.features[["latent", *SCORE_COLUMNS]], on="latent", how="left")


def _empty_scores(latents: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({"latent": latents.astype(np.int64)})
    for c in SCORE_COLUMNS:
        frame[c] = np.nan
    frame["localisation_slices"] = 0
    frame["localisation_target"] = ""
    return frame


def not_computed(latents: np.ndarray, reason: str) -> LocalisationResult:
    """A result saying why the scores could not be computed."""
    return LocalisationResult(
        computed=False,
        features=_empty_scores(latents),
        summary={
            "status": NOT_COMPUTED,
            "reason": reason,
            "pointing_game": None,
            "energy_in_mask": None,
        },
        reason=reason,
    )


def _targets_table(
    ws: Workspace, encoder: str, run: str, features: pd.DataFrame | Sequence[int]
) -> pd.DataFrame:
    """``latent`` and ``target`` (list of names) from a feature table or a latent list.

    A latent list takes concepts from ``WS/eval/<encoder>/<run>/concepts.parquet`` when it
    exists.
    """
    if isinstance(features, pd.DataFrame):
        if "latent" not in features.columns:
            raise InputError("features", "the feature table has no 'latent' column")
        frame = features
    else:
        frame = pd.DataFrame({"latent": np.asarray(list(features), dtype=np.int64)})
        concepts = ws.eval(encoder, run) / CONCEPTS
        if concepts.is_file():
            cmap = pd.read_parquet(concepts)[["latent", "concept"]]
            frame = frame.merge(cmap, on="latent", how="left")

    def col(name: str) -> list[Any]:
        return list(frame[name]) if name in frame.columns else [None] * len(frame)

    targets = [
        target_structures(c, r, d)
        for c, r, d in zip(col("concept"), col("rule"), col("description"), strict=True)
    ]
    return pd.DataFrame({"latent": frame["latent"].to_numpy(np.int64), "target": targets})


def localisation_scores(
    workspace: str | Workspace,
    encoder: str,
    run: str,
    features: pd.DataFrame | Sequence[int],
    rows: Sequence[int] | np.ndarray,
    *,
    max_slices: int = 8,
    batch_size: int = 32,
    device: str = "auto",
    spatial_encoder: SpatialEncoder | None = None,
    pointing_tolerance: float = POINTING_TOLERANCE,
) -> LocalisationResult:
    """Pointing game and energy inside the mask of every feature, on held-out ``rows``.

    Parameters
    ----------
    workspace, encoder, run:
        The workspace and the SAE (``WS/saes/<encoder>/<run>``, codes in
        ``WS/codes/<encoder>/<run>``).
    features:
        The feature table (``latent`` and any of ``concept``, ``rule``, ``description``) or a
        list of latent ids (concepts then come from the evaluation's ``concepts.parquet``).
    rows:
        Slice-table rows to score on (the held-out split).
    max_slices:
        Slices per feature: the highest activations where it fires and its target is present.
    spatial_encoder:
        The encoder to use (default: rebuilt from the embedding store).
    pointing_tolerance:
        Pointing-game tolerance as a fraction of the slice side (0: the peak must be inside
        the mask).

    Returns a :class:`LocalisationResult`; ``computed`` is False, with the reason, when the
    workspace has no label maps (the flag that writes them is named) or the encoder offers
    no feature maps (the pooling that would is named). A latent out of range raises.
    """
    from medsae.encode.registry import encoder_from_store
    from medsae.encode.spatial import require_spatial
    from medsae.encode.store import EmbeddingStore
    from medsae.sae import load_sae
    from medsae.sae.codes_io import load_codes

    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    targets = _targets_table(ws, encoder, run, features)
    latents = targets["latent"].to_numpy(np.int64)
    if not has_label_maps(ws.slices):
        return not_computed(
            latents,
            f"{ws.slices}: no pixel label maps; prepare the workspace with `{LABEL_MAPS_FLAG}` "
            "(label_maps = true in [prepare])",
        )
    try:
        sae = load_sae(ws.sae(encoder, run))
    except ArtifactError as e:  # codes without their checkpoint: no weights to map with
        return not_computed(latents, str(e))
    check_latents(latents, int(sae.cfg.n_latents), sae_name(sae))
    if spatial_encoder is None:
        try:
            spatial_encoder = require_spatial(
                encoder_from_store(EmbeddingStore(ws.embeddings(encoder)), device=device)
            )
        except InputError as e:
            return not_computed(latents, str(e))
    from medsae.data.table import open_images

    codes = load_codes(ws.codes(encoder, run))
    if codes.shape[1] != sae.cfg.n_latents:
        raise ArtifactError(
            f"{ws.codes(encoder, run)}: {codes.shape[1]} latents, the SAE has {sae.cfg.n_latents}"
        )
    labels = open_label_maps(ws.slices)
    images = open_images(ws.slices)
    rows_arr = np.unique(np.asarray(rows, dtype=np.int64))
    held = codes[rows_arr].tocsc()

    # Which slices each feature is scored on.
    plan: dict[int, list[tuple[int, np.ndarray]]] = {}  # row -> [(feature index, target ids)]
    for f, (j, names) in enumerate(zip(latents, targets["target"], strict=True)):
        ids = label_ids(names)
        if ids.size == 0:
            continue
        lo, hi = held.indptr[j], held.indptr[j + 1]
        local, vals = held.indices[lo:hi], held.data[lo:hi]
        order = np.argsort(-vals, kind="stable")
        taken = 0
        for i in order:
            if not vals[i] > 0:
                break
            row = int(rows_arr[local[i]])
            if not np.isin(labels[row], ids).any():
                continue
            plan.setdefault(row, []).append((f, ids))
            taken += 1
            if taken >= max_slices:
                break

    sums = np.zeros((len(latents), 4))
    image_sums = np.zeros(len(latents))
    image_counts = np.zeros(len(latents), dtype=np.int64)
    counts = np.zeros(len(latents), dtype=np.int64)
    residual = 0.0
    exact, method = True, ""
    plan_rows = sorted(plan)
    for b0 in range(0, len(plan_rows), batch_size):
        batch = plan_rows[b0 : b0 + batch_size]
        feats = spatial_encoder.spatial_features(np.asarray(images[batch]))
        exact, method = bool(feats.exact), feats.method
        for k, row in enumerate(batch):
            wanted = plan[row]
            lm = latent_maps(sae, feats.select(k), [int(latents[f]) for f, _ in wanted])
            residual = max(residual, float(np.abs(lm.residual).max()))
            label_map = np.asarray(labels[row])
            size = label_map.shape[0]
            pixels = to_pixels(lm.grid[0], size)
            image_part = to_pixels(lm.image_grid[0], size)
            for t, (f, ids) in enumerate(wanted):
                s = score_map(
                    pixels[t], np.isin(label_map, ids), pointing_tolerance * size, image_part[t]
                )
                sums[f] += (s.pointing, s.energy, s.pointing_baseline, s.energy_baseline)
                counts[f] += 1
                if np.isfinite(s.energy_image):
                    image_sums[f] += s.energy_image
                    image_counts[f] += 1

    frame = _empty_scores(latents)
    scored = counts > 0
    means = np.where(scored[:, None], sums / np.maximum(counts, 1)[:, None], np.nan)
    for i, c in enumerate(SCORE_COLUMNS[:4]):
        frame[c] = means[:, i]
    frame["localisation_slices"] = counts
    frame["localisation_target"] = [",".join(t) for t in targets["target"]]

    def over_features(col: str, fn: Any = np.mean) -> float | None:
        v = frame.loc[scored, col].to_numpy(np.float64)
        v = v[np.isfinite(v)]
        return round(float(fn(v)), 4) if v.size else None

    summary = {
        "status": "computed",
        "pointing_game": over_features("pointing"),
        "energy_in_mask": over_features("energy_in_mask"),
        "pointing_game_baseline": over_features("pointing_baseline"),
        "energy_in_mask_baseline": over_features("energy_in_mask_baseline"),
        "pointing_game_median": over_features("pointing", np.median),
        "energy_in_mask_median": over_features("energy_in_mask", np.median),
        "pointing_tolerance_px": round(pointing_tolerance * int(labels.shape[1]), 2),
        "energy_in_mask_image": (
            round(float(np.mean(image_sums[image_counts > 0] / image_counts[image_counts > 0])), 4)
            if (image_counts > 0).any()
            else None
        ),
        "n_features": len(latents),
        "n_features_with_target": int(sum(bool(t) for t in targets["target"])),
        "n_features_scored": int(scored.sum()),
        "n_slice_maps": int(counts.sum()),
        "max_slices_per_feature": int(max_slices),
        "exact": exact,
        "max_abs_residual": round(residual, 8),
        "method": method or None,
        "baseline": "centred Gaussian blob with the map's row/column spread",
    }
    return LocalisationResult(computed=True, features=frame, summary=summary)
