"""Study and acquisition concepts: values, labels, phrases, describer and scorers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from medsae.interpret.describe import OfflineDescriber, compose_phrase
from medsae.interpret.features import build_label_table, feature_statistics
from medsae.interpret.scorers import PHRASE_WEIGHT, EmbeddingScorer, LabelScorer
from medsae.labels.concepts_study import study_codes, study_values
from medsae.labels.words import label_phrase, slice_text


def _table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "modality": ["CT", "MR", "CT", "MR", "CT"],
            "plane": ["axial"] * 5,
            "study_type": [
                "ct thorax-abdomen-pelvis",
                "MR thorax-abdomen-pelvis",
                "ct_head",
                None,
                "  ",
            ],
            "kvp": [80, None, 120.0, None, 0],
            "field_strength": [None, 3.0, None, 1.5, None],
            "pathology": ["liver lesion", "no pathology", "", None, "No_Pathology"],
        }
    )


def test_study_values_normalise_the_metadata() -> None:
    table = _table()
    assert study_values(table, "study").tolist() == [
        "thorax-abdomen-pelvis",
        "thorax-abdomen-pelvis",  # CT and MRI studies of one region share the value
        "head",
        None,
        None,  # blank
    ]
    assert study_values(table, "kvp").tolist() == ["80", None, "120", None, None]  # 0: unknown
    assert study_values(table, "field_strength").tolist() == [None, "3", None, "1.5", None]
    assert study_values(table, "pathology").tolist() == [
        "liver lesion",
        "none",
        "none",
        None,
        "none",
    ]
    assert study_values(table.drop(columns="kvp"), "kvp").isna().all()
    raw = pd.DataFrame(
        {"kvp": ["120 kV", "100", "", "n/a"], "field_strength": ["3T", "1.5 T", "x", None]}
    )
    assert study_values(raw, "kvp").tolist() == ["120", "100", None, None]
    assert study_values(raw, "field_strength").tolist() == ["3", "1.5", None, None]


def test_study_labels_and_their_defined_rows() -> None:
    table = _table()
    got = {
        f"{facet}={value}": ((codes == i).tolist(), (codes >= 0).tolist())
        for facet, (codes, values) in study_codes(table).items()
        for i, value in enumerate(values)
    }
    assert got["study=head"] == (
        [False, False, True, False, False],
        [True, True, True, False, False],
    )
    assert got["kvp=80"][0] == [True, False, False, False, False]
    assert got["kvp=80"][1] == [True, False, True, False, False]  # undefined for the MRI
    assert got["field_strength=3"] == (
        [False, True, False, False, False],
        [False, True, False, True, False],
    )
    assert got["pathology=liver lesion"][1] == [True, True, True, False, True]
    # a facet with a single value sets nothing apart and is left out
    one = pd.DataFrame({"kvp": [120, 120, None], "study_type": ["ct abdomen", "ct head", None]})
    assert {f: v for f, (_, v) in study_codes(one).items()} == {"study": ["abdomen", "head"]}
    labels = build_label_table(table, None, geometry=False)
    assert {"study=head", "kvp=120", "field_strength=1.5", "pathology=none"} <= set(labels.names)


def test_phrases_and_slice_text() -> None:
    assert label_phrase("kvp=80") == "80 kVp"
    assert (
        compose_phrase(["plane=axial", "modality=MR", "field_strength=3"])
        == "axial MRI; 3 T scanners"
    )
    assert compose_phrase(["study=head"]) == "slices from head studies"
    assert compose_phrase(["pathology=liver lesion"]) == "slices of patients with liver lesion"
    assert compose_phrase(["modality=CT", "kvp=80", "sex=F"]) == (
        "CT slices; 80 kVp; mostly female patients"
    )
    table = _table()
    text = slice_text(table.iloc[0], ["liver"])
    assert "80 kVp" in text and "thorax-abdomen-pelvis study" in text
    assert "finding: liver lesion" in text
    assert "finding" not in slice_text(table.iloc[1], []) and "3 T" in slice_text(table.iloc[1], [])


@pytest.fixture(scope="module")
def field_world():
    """40 MRI subjects x 3 planes x 8 slices; half the subjects scanned at 3 T. Latent 0 fires
    on 3 T slices of every plane (a scanner confounder); latent 1 on axial slices."""
    rows = []
    for subject in range(40):
        for plane in ("axial", "coronal", "sagittal"):
            for k in range(8):
                rows.append(
                    {
                        "subject_key": f"MR:{subject}",
                        "modality": "MR",
                        "plane": plane,
                        "field_strength": 3.0 if subject % 2 else 1.5,
                        "pathology": "liver lesion" if subject % 4 == 0 else "no pathology",
                        "index": k,
                    }
                )
    table = pd.DataFrame(rows)
    labels = build_label_table(table, None, geometry=False)
    three = labels.values[:, labels.index("field_strength=3")]
    axial = labels.values[:, labels.index("plane=axial")]
    codes = sp.csr_matrix(np.stack([three * 1.5, axial * 1.0], axis=1))
    return table, labels, codes


def test_offline_describer_names_a_scanner_field_strength_feature(field_world) -> None:
    table, labels, codes = field_world
    train = np.arange(len(table))
    stats = {s.latent: s for s in feature_statistics(codes, table, labels, train)}
    describer = OfflineDescriber(labels, codes, train)
    d = describer.describe(stats[0])
    assert d.rule == ["field_strength=3"], d.rule
    assert "3 T scanners" in d.text
    assert not any(n.startswith("field_strength") for n in describer.rule(1))


def test_scorers_match_study_facets_by_phrase(field_world) -> None:
    _, labels, _ = field_world
    axial = labels.values[:, labels.index("plane=axial")]
    three = labels.values[:, labels.index("field_strength=3")]
    lesion = labels.values[:, labels.index("pathology=liver lesion")]
    rows = np.concatenate([np.flatnonzero(axial & three)[:20], np.flatnonzero(axial & ~three)[:20]])
    description = "axial MRI; 3 T scanners"
    assert "field_strength=3" in LabelScorer(labels).named_labels(description)
    scorer = EmbeddingScorer(labels)
    s, _ = scorer.detect(description, rows)
    np.testing.assert_allclose(s[:20] - s[20:], PHRASE_WEIGHT)  # same plane; the field differs
    # a description stating no study facet (or both of its values) does not use it
    for other in ("axial MRI", "axial MRI; 1.5 T and 3 T scanners"):
        flat, _ = scorer.detect(other, rows)
        assert np.ptp(flat) == pytest.approx(0.0), other
    # "liver" is not "patients with liver lesion", for either scorer
    rows = np.concatenate(
        [np.flatnonzero(axial & lesion)[:20], np.flatnonzero(axial & ~lesion)[:20]]
    )
    for text in ("axial MRI through the abdomen: liver", "axial MRI; liver"):
        flat, _ = scorer.detect(text, rows)
        assert np.ptp(flat) == pytest.approx(0.0), text
        assert "pathology=liver lesion" not in LabelScorer(labels).named_labels(text)
    s, _ = scorer.detect("axial MRI; patients with liver lesion", rows)
    assert s[:20].min() > s[20:].max()
