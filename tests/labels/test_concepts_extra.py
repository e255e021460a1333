"""Slice-position and body-coverage concepts: bins, labels, phrases, describer and scorers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from medsae.errors import ArtifactError
from medsae.interpret import InterpretConfig, interpret
from medsae.interpret.describe import OfflineDescriber, compose_phrase
from medsae.interpret.features import build_label_table, feature_statistics
from medsae.interpret.scorers import EmbeddingScorer, LabelScorer, clauses
from medsae.labels.concepts_extra import (
    FOREGROUND_LEVEL,
    extra_labels,
    foreground_fraction,
)
from medsae.labels.words import GEOMETRY_PHRASES as PHRASES
from medsae.labels.words import slice_text
from tests.support.synthetic import make_synthetic_workspace


def _images(fractions: list[float], size: int = 20) -> np.ndarray:
    """uint8 images whose first ``round(f * size * size)`` pixels are bright."""
    out = np.zeros((len(fractions), size, size), dtype=np.uint8)
    flat = out.reshape(len(fractions), -1)
    for i, f in enumerate(fractions):
        flat[i, : round(f * size * size)] = 200
    return out


def test_foreground_fraction_counts_pixels_above_the_level() -> None:
    images = _images([0.0, 0.1, 0.5, 1.0])
    images[0, 0, :5] = FOREGROUND_LEVEL  # at the level: background
    np.testing.assert_allclose(foreground_fraction(images), [0.0, 0.1, 0.5, 1.0])
    np.testing.assert_allclose(foreground_fraction(images, chunk=3), [0.0, 0.1, 0.5, 1.0])
    colour = np.repeat(images[..., None], 3, axis=-1)
    np.testing.assert_allclose(foreground_fraction(colour), [0.0, 0.1, 0.5, 1.0])
    with pytest.raises(ArtifactError, match="shape"):
        foreground_fraction(np.zeros((3, 4), dtype=np.uint8))


def test_position_and_coverage_bins() -> None:
    rel = [0.0, 0.149, 0.15, 0.5, 0.85, 0.851, np.nan]
    table = pd.DataFrame({"rel_position": rel})
    images = _images([0.05, 0.1475, 0.15, 0.2975, 0.30, 0.9, 0.0])
    names, values, defined = extra_labels(table, images)
    got = {n: (v, d) for n, v, d in zip(names, values, defined, strict=True)}
    edge, known = got["position=edge"]
    assert edge.tolist() == [True, True, False, False, False, True, False]
    assert got["position=central"][0].tolist() == [False, False, True, True, True, False, False]
    assert known.tolist() == [True] * 6 + [False]
    assert got["coverage=sliver"][0].tolist() == [True, True, False, False, False, False, True]
    assert got["coverage=partial"][0].tolist() == [False, False, True, True, False, False, False]
    assert got["coverage=full"][0].tolist() == [False, False, False, False, True, True, False]
    # without images (or without rel_position) the facet is left out
    assert [n for n in extra_labels(table, None)[0]] == ["position=edge", "position=central"]
    assert extra_labels(pd.DataFrame({"x": [1]}), None)[0] == []
    with pytest.raises(ArtifactError, match="3 rows but the slice table has 7"):
        extra_labels(table, images[:3])


def test_compose_phrase_names_position_and_coverage() -> None:
    text = compose_phrase(["plane=coronal", "modality=MR", "position=edge", "coverage=sliver"])
    assert text == (f"coronal MRI; {PHRASES['position=edge']}, {PHRASES['coverage=sliver']}")
    assert compose_phrase(["coverage=full"]) == PHRASES["coverage=full"]
    assert compose_phrase(["position=central", "sex=F"]).endswith("; mostly female patients")
    row = pd.Series({"plane": "axial", "modality": "CT", "rel_position": 0.95})
    assert "edge slice" in slice_text(row, [])
    row["rel_position"] = 0.5
    assert "central slice" in slice_text(row, [])


def test_clauses() -> None:
    assert clauses("axial CT: liver and spleen; mostly female") == [
        "axial CT",
        "liver",
        "spleen",
        "mostly female",
    ]
    assert clauses("axial CT") == []


@pytest.fixture(scope="module")
def edge_world():
    """Three planes x 40 subjects x 10 slices; latent 0 fires on edge slices only."""
    rows = []
    for subject in range(40):
        for plane in ("axial", "coronal", "sagittal"):
            for k in range(10):
                rows.append(
                    {
                        "subject_key": f"CT:{subject}",
                        "plane": plane,
                        "modality": "CT",
                        "rel_position": k / 9,
                    }
                )
    table = pd.DataFrame(rows)
    rel = table["rel_position"].to_numpy()
    fractions = np.where((rel < 0.15) | (rel > 0.85), 0.05, 0.4)
    labels = build_label_table(table, None, _images(list(fractions)))
    edge = labels.values[:, labels.index("position=edge")]
    rng = np.random.default_rng(0)
    other = rng.random(len(table)) < 0.3
    codes = sp.csr_matrix(np.stack([edge * 2.0, other * 1.0], axis=1))
    return table, labels, codes


def test_offline_describer_names_an_edge_feature(edge_world) -> None:
    table, labels, codes = edge_world
    train = np.arange(len(table))
    stats = {s.latent: s for s in feature_statistics(codes, table, labels, train)}
    d = OfflineDescriber(labels, codes, train).describe(stats[0])
    # edge slices are exactly the sliver slices here: either concept is right, named in words
    assert d.rule and d.rule[0] in ("position=edge", "coverage=sliver"), d.rule
    assert PHRASES[d.rule[0]] in d.text
    assert not any(
        n.startswith(("position", "coverage"))
        for n in OfflineDescriber(labels, codes, train).rule(1)
    )


def test_scorers_check_position_from_metadata(edge_world) -> None:
    _, labels, _ = edge_world
    axial = labels.values[:, labels.index("plane=axial")]
    edge = np.flatnonzero(axial & labels.values[:, labels.index("position=edge")])[:20]
    central = np.flatnonzero(axial & labels.values[:, labels.index("position=central")])[:20]
    rows = np.concatenate([edge, central])
    description = f"axial CT; {PHRASES['position=edge']}"
    label_scorer = LabelScorer(labels)
    assert "position=edge" in label_scorer.named_labels(description)
    s_labels, _ = label_scorer.detect(description, rows)
    assert s_labels[:20].min() > s_labels[20:].max()
    scorer = EmbeddingScorer(labels)
    s_emb, _ = scorer.detect(description, rows)
    assert s_emb[:20].min() > s_emb[20:].max()
    for other in ("axial CT", "axial CT through the abdomen: liver"):  # names no position
        flat, _ = scorer.detect(other, rows)
        assert np.ptp(flat) == pytest.approx(0.0), other


def test_stage_geometry_concepts_switch(tmp_path) -> None:
    ws, truth = make_synthetic_workspace(tmp_path / "ws")

    def labels_used(config: InterpretConfig) -> set[str]:
        out = interpret(ws, truth.encoder, truth.run, config, force=True)
        used: set[str] = set()
        for line in (out.path / "descriptions.jsonl").read_text().splitlines():
            rec = json.loads(line)
            used |= {e["label"].split("=", 1)[0] for e in rec["enrichment"]}
            used |= {n.split("=", 1)[0] for n in rec["rule"]}
        return used

    assert not labels_used(InterpretConfig(geometry_concepts=False)) & {"position", "coverage"}
    assert labels_used(InterpretConfig()) & {"position", "coverage"}
