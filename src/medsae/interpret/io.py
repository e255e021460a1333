"""File names, columns, writers and readers of the interpret stage's artifact (the one place
for them): ``WS/features/<encoder>/<run>/``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from medsae.errors import ArtifactError
from medsae.jsonsafe import json_safe
from medsae.maps.io import SCORE_COLUMNS

FEATURES = "features.parquet"
"""One row per described feature, columns :data:`FEATURE_COLUMNS` (docs/ARTIFACTS.md "features")."""
DESCRIPTIONS = "descriptions.jsonl"
"""Per feature (one JSON object a line): description, describer, error, top / display / quantile
slice ids, label enrichment, rule and detection details."""
PROFILES = "profiles.parquet"
"""One row per described feature, label and stratum: the concept profiles
(:mod:`medsae.interpret.profiles`)."""
PROBES = "probes.npz"
"""Sparse linear probes of modality and plane over the SAE's features
(:mod:`medsae.interpret.probes`)."""
SCORES = "scores.json"
"""Headline ``detection_balanced_accuracy`` (median over scored features), medians and means of
every score, the describer and scorer, the splits that selected and scored, counts, failures,
token usage."""

LOCALISATION_COLUMNS = SCORE_COLUMNS
"""Columns of :data:`FEATURES` that :func:`medsae.maps.localisation_scores` fills."""

FEATURE_COLUMNS = [
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
    *LOCALISATION_COLUMNS,
]
"""Columns of :data:`FEATURES`, in order."""


def write_features(out: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write :data:`FEATURES` into the folder ``out``."""
    pd.DataFrame(list(rows), columns=FEATURE_COLUMNS).to_parquet(out / FEATURES, index=False)


def write_descriptions(out: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Write :data:`DESCRIPTIONS` into the folder ``out``."""
    with open(out / DESCRIPTIONS, "w") as fh:
        for rec in records:
            fh.write(json.dumps(json_safe(rec), default=str) + "\n")


def write_scores(out: Path, scores: Mapping[str, Any]) -> None:
    """Write :data:`SCORES` into the folder ``out``."""
    (out / SCORES).write_text(json.dumps(json_safe(scores), indent=2, default=str))


def read_features(folder: Path) -> pd.DataFrame:
    """:data:`FEATURES` of a features folder (ArtifactError naming the file when absent or
    missing columns)."""
    path = Path(folder) / FEATURES
    if not path.is_file():
        raise ArtifactError(f"{path}: not found; run `medsae interpret` first")
    frame = pd.read_parquet(path)
    missing = [c for c in FEATURE_COLUMNS if c not in frame.columns]
    if missing:
        raise ArtifactError(f"{path}: missing column(s) {missing}; rerun `medsae interpret`")
    return frame


def read_descriptions(folder: Path) -> list[dict[str, Any]]:
    """The records of :data:`DESCRIPTIONS` of a features folder (ArtifactError naming the
    file and line when absent or malformed)."""
    path = Path(folder) / DESCRIPTIONS
    if not path.is_file():
        raise ArtifactError(f"{path}: not found; run `medsae interpret` first")
    records = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ArtifactError(f"{path}:{i}: not JSON ({e.msg})") from None
    return records


def read_scores(folder: Path) -> dict[str, Any]:
    """:data:`SCORES` of a features folder as a dict; ``{}`` when absent (not computed);
    :class:`medsae.artifacts.DamagedArtifact` naming it when unreadable."""
    from medsae.artifacts import read_json_optional

    return read_json_optional(Path(folder) / SCORES) or {}
