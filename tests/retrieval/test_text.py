"""Text embeddings: the bundled MiniLM (loaded once for this module) and endpoint embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from medsae.llm.embed import TextEmbedder, l2_rows, shared_embedder


@pytest.fixture(scope="module")
def minilm() -> TextEmbedder:
    embedder = shared_embedder()
    embedder.embed(["warm up"])  # loads the bundled model once (offline)
    return embedder


def test_minilm_embeddings_are_unit_norm_and_semantic(minilm: TextEmbedder) -> None:
    vectors = minilm.embed(["axial CT of the liver", "coronal MRI of the brain"])
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = minilm.similarity(["hepatic tissue"], ["liver", "femur", "urinary bladder"])[0]
    assert int(np.argmax(sims)) == 0
    assert shared_embedder() is minilm  # one model per process


def test_minilm_picks_the_planted_feature_a_description_names(
    minilm: TextEmbedder, tmp_path
) -> None:
    from medsae.retrieval.index import load_index
    from medsae.retrieval.language import TextRetriever
    from tests.retrieval.test_ask import _features, write_features
    from tests.support.synthetic import make_synthetic_workspace

    ws, truth = make_synthetic_workspace(tmp_path, n_subjects=9, slices_per_plane=4)
    write_features(ws, truth)
    retriever = TextRetriever(
        load_index(ws, truth.encoder, truth.run), _features(ws, truth), minilm
    )
    for query, expected in [
        ("axial CT of the liver", ["modality=CT", "plane=axial", "structure=liver"]),
        ("sagittal MRI of the brain", ["modality=MR", "plane=sagittal", "structure=brain"]),
        (
            "coronal CT of the urinary bladder, female patient",
            ["modality=CT", "plane=coronal", "sex=F", "structure=urinary_bladder"],
        ),
    ]:
        assert [truth.concepts[c.latent] for c in retriever.choose(query)] == expected
    sim = retriever.choose("the spleen", m=1, mode="similarity")
    assert truth.concepts[sim[0].latent] == "structure=spleen"


def test_custom_and_endpoint_embedders() -> None:
    from medsae.llm.client import LLMClient
    from medsae.llm.fake_server import serve

    custom = TextEmbedder(lambda texts: np.ones((len(texts), 3)) * 2, name="twos")
    np.testing.assert_allclose(custom.embed(["a", "b"]), np.full((2, 3), 1 / np.sqrt(3)), rtol=1e-6)
    assert custom.embed([]).shape[0] == 0
    with serve() as url, LLMClient(url, "fake") as client:
        endpoint = TextEmbedder.from_client(client)
        vectors = endpoint.embed(["axial CT liver", "axial CT liver", "sagittal MRI brain"])
    assert endpoint.name == "endpoint:fake"
    np.testing.assert_allclose(vectors[0], vectors[1])
    assert vectors[0] @ vectors[2] < 0.99
    with pytest.raises(ValueError, match="2-D"):
        l2_rows(np.ones(3))
