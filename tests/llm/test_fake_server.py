"""The fake OpenAI-compatible server: deterministic, schema-valid answers over HTTP."""

from __future__ import annotations

import httpx
import pytest

from medsae.llm.client import check_json_schema
from medsae.llm.fake_server import (
    FakeLLMServer,
    fill_schema,
    hashed_embedding,
    serve,
    terms,
)


def test_terms_prefer_longest_match() -> None:
    found = terms("Axial MR: left kidney, kidney cyst? liver and LIVER; female")
    assert found["left kidney"] == 1 and found["liver"] == 2
    assert found["mri"] == 1 and found["female"] == 1 and "male" not in found


def test_fill_schema_description_uses_shared_slice_terms() -> None:
    schema = {"type": "object", "properties": {"description": {"type": "string"}}}
    text = "Slice 1: axial CT; liver, spleen\nSlice 2: axial CT; liver\nSlice 3: coronal CT; liver"
    assert fill_schema(schema, text) == {"description": "ct, liver"}


def test_fill_schema_detection_and_ranking() -> None:
    det = {
        "type": "object",
        "properties": {
            "answers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer"},
                        "match": {"type": "boolean"},
                        "confidence": {"type": "number"},
                    },
                },
            }
        },
    }
    text = "Description: axial CT: liver\n[1] axial CT; liver\n[2] coronal MRI; brain\n[3] axial MRI; liver"
    answer = fill_schema(det, text)
    check_json_schema(answer, det)
    assert [a["match"] for a in answer["answers"]] == [True, False, True]
    assert answer["answers"][0]["confidence"] == 1.0
    rank = {
        "type": "object",
        "properties": {"ranking": {"type": "array", "items": {"type": "integer"}}},
    }
    text = (
        "Slice 1: coronal MRI; brain\n[1] axial CT liver\n[2] coronal MRI brain\n[3] sagittal heart"
    )
    assert fill_schema(rank, text) == {"ranking": [2, 1, 3]}


def test_hashed_embedding_is_deterministic() -> None:
    a, b = hashed_embedding("axial CT liver"), hashed_embedding("axial CT liver")
    assert a == b and len(a) == 64
    assert hashed_embedding("") == [0.0] * 64


def test_http_endpoints() -> None:
    with serve() as base_url:
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        models = httpx.get(f"{base_url}/models").json()
        assert models["data"][0]["id"]
        assert httpx.post(f"{base_url}/unknown", json={}).status_code == 404
        assert httpx.post(f"{base_url}/chat/completions", content=b"{nope").status_code == 400
        body = httpx.post(
            f"{base_url}/chat/completions",
            json={
                "model": "m",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "Slice 1: axial CT; liver"},
                            {
                                "type": "image_url",
                                "image_url": {"url": "data:image/png;base64,AAAA"},
                            },
                        ],
                    }
                ],
            },
        ).json()
        assert body["choices"][0]["message"]["content"]
        assert body["usage"]["prompt_tokens"] > 85  # an image counts


@pytest.mark.parametrize("status", [500, 429])
def test_status_faults_and_first_n(status: int) -> None:
    from medsae.llm.fake_server import Faults

    with FakeLLMServer(Faults(status=status, first_n=1)) as srv:
        first = httpx.post(f"{srv.base_url}/embeddings", json={"input": ["a"]})
        second = httpx.post(f"{srv.base_url}/embeddings", json={"input": ["a"]})
        assert first.status_code == status and second.status_code == 200
        assert (first.headers.get("retry-after") == "0") == (status == 429)
        assert srv.stats.faults_served == 1


def test_when_contains_limits_faults() -> None:
    from medsae.llm.fake_server import Faults

    with FakeLLMServer(Faults(status=500, when_contains="BROKEN")) as srv:
        ok = httpx.post(f"{srv.base_url}/embeddings", json={"input": ["fine"]})
        bad = httpx.post(f"{srv.base_url}/embeddings", json={"input": ["BROKEN"]})
        assert ok.status_code == 200 and bad.status_code == 500
