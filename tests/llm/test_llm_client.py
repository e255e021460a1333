"""The OpenAI-compatible client against the fake server over real HTTP, faults included."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel

from medsae.errors import InputError
from medsae.llm.client import (
    LLMClient,
    LLMHTTPError,
    LLMResponseError,
    LLMTimeoutError,
    check_json_schema,
    png_data_url,
    strict_schema,
)
from medsae.llm.fake_server import FakeLLMServer, Faults


class Answer(BaseModel):
    description: str


MESSAGES = [
    {"role": "system", "content": "Describe."},
    {
        "role": "user",
        "content": "Slice 1: axial CT, female; structures: liver, spleen\n"
        "Slice 2: axial CT, male; structures: liver",
    },
]


@pytest.fixture()
def server():
    with FakeLLMServer() as srv:
        yield srv


def client_for(srv: FakeLLMServer, **kw) -> LLMClient:
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("max_retries", 3)
    return LLMClient(srv.base_url, "fake-vlm", **kw)


def test_chat_json_answers_from_the_request(server: FakeLLMServer) -> None:
    with client_for(server) as client:
        answer = client.chat_json(MESSAGES, Answer, images=[np.zeros((8, 8), np.uint8)] * 2)
    assert answer == {"description": "axial, ct, liver"}
    assert server.stats.images_seen == 2
    assert client.usage.requests == 1
    assert client.usage.prompt_tokens > 0 and client.usage.completion_tokens > 0
    assert client.usage.total_tokens == client.usage.prompt_tokens + client.usage.completion_tokens


def test_usage_is_summed_over_requests(server: FakeLLMServer) -> None:
    client = client_for(server)
    client.chat_json(MESSAGES, Answer)
    first = client.usage.total_tokens
    client.chat_json(
        [{"role": "user", "content": "Slice 1: coronal MRI; structures: brain"}], Answer
    )
    assert client.usage.requests == 2
    assert client.usage.total_tokens > first


def test_api_key_is_sent_and_wrong_key_is_not_retried() -> None:
    with FakeLLMServer(api_key="secret") as srv:
        assert client_for(srv, api_key="secret").chat_json(MESSAGES, Answer)["description"]
        assert srv.stats.auth_headers[-1] == "Bearer secret"
        wrong = client_for(srv, api_key="nope")
        with pytest.raises(LLMHTTPError) as err:
            wrong.chat_json(MESSAGES, Answer)
        assert err.value.status == 401
        assert wrong.usage.requests == 1


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_errors_are_retried(server: FakeLLMServer, status: int) -> None:
    server.set_faults(Faults(status=status, first_n=2))
    client = client_for(server)
    assert client.chat_json(MESSAGES, Answer)["description"]
    assert client.usage.requests == 3 and client.usage.retries == 2
    assert server.stats.faults_served == 2


def test_permanent_error_raises_after_retries(server: FakeLLMServer) -> None:
    server.set_faults(Faults(status=500))
    client = client_for(server, max_retries=2)
    with pytest.raises(LLMHTTPError, match="HTTP 500"):
        client.chat_json(MESSAGES, Answer)
    assert client.usage.requests == 3


def test_malformed_then_valid(server: FakeLLMServer) -> None:
    server.set_faults(Faults(malformed=True, first_n=1))
    client = client_for(server)
    assert client.chat_json(MESSAGES, Answer)["description"]
    assert client.usage.invalid_answers == 1 and client.usage.requests == 2


@pytest.mark.parametrize(
    "fault", [Faults(malformed=True), Faults(refusal=True), Faults(off_schema=True)]
)
def test_permanent_invalid_answers_raise(server: FakeLLMServer, fault: Faults) -> None:
    server.set_faults(fault)
    client = client_for(server, invalid_retries=1)
    with pytest.raises(LLMResponseError):
        client.chat_json(MESSAGES, Answer)
    assert client.usage.requests == 2


@pytest.mark.parametrize(
    "schema", [Answer, {"type": "object", "properties": {"n": {"type": "integer"}}}]
)
def test_answers_off_the_schema_are_invalid(server: FakeLLMServer, schema: object) -> None:
    server.set_faults(Faults(off_schema=True))
    client = client_for(server, invalid_retries=1)
    with pytest.raises(LLMResponseError, match=r"schema|unexpected|required"):
        client.chat_json(MESSAGES, schema)  # type: ignore[arg-type]
    assert client.usage.invalid_answers == 2
    server.set_faults(None)
    assert client.chat_json(MESSAGES, schema) is not None  # type: ignore[arg-type]


def test_timeouts_are_respected(server: FakeLLMServer) -> None:
    server.set_faults(Faults(delay_s=1.0))
    client = client_for(server, timeout_s=0.2, max_retries=1)
    with pytest.raises(LLMTimeoutError, match=r"timeout 0\.2"):
        client.chat_json(MESSAGES, Answer)
    assert client.usage.requests == 2 and client.usage.retries == 1


def test_slow_answer_within_timeout_succeeds(server: FakeLLMServer) -> None:
    server.set_faults(Faults(delay_s=0.2))
    assert client_for(server, timeout_s=5).chat_json(MESSAGES, Answer)["description"]


def test_cache_hit_on_rerun_sends_nothing(server: FakeLLMServer, tmp_path: Path) -> None:
    first = client_for(server, cache_dir=tmp_path)
    a = first.chat_json(MESSAGES, Answer)
    e = first.embed(["liver", "spleen"])
    sent = server.stats.requests
    second = client_for(server, cache_dir=tmp_path)
    assert second.chat_json(MESSAGES, Answer) == a
    assert np.array_equal(second.embed(["liver", "spleen"]), e)
    assert server.stats.requests == sent
    assert second.usage.requests == 0 and second.usage.cache_hits == 2
    # another model is another cache entry
    other = LLMClient(server.base_url, "other-model", cache_dir=tmp_path)
    other.chat_json(MESSAGES, Answer)
    assert server.stats.requests == sent + 1


def test_failed_answers_are_not_cached(server: FakeLLMServer, tmp_path: Path) -> None:
    server.set_faults(Faults(status=500))
    with pytest.raises(LLMHTTPError):
        client_for(server, cache_dir=tmp_path, max_retries=0).chat_json(MESSAGES, Answer)
    server.set_faults(None)
    assert client_for(server, cache_dir=tmp_path).chat_json(MESSAGES, Answer)["description"]
    assert server.stats.chat_requests == 1


def test_concurrency_limit_is_honoured(server: FakeLLMServer) -> None:
    server.set_faults(Faults(delay_s=0.15))
    client = client_for(server, concurrency=2)
    messages = [[{"role": "user", "content": f"Slice 1: axial CT {i}"}] for i in range(8)]
    threads = [threading.Thread(target=client.chat_json, args=(m, Answer)) for m in messages]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert server.stats.chat_requests == 8
    assert server.stats.max_in_flight == 2
    results = client.map(lambda m: client.chat_json(m, Answer), messages)
    assert len(results) == 8


def test_embeddings_are_deterministic(server: FakeLLMServer) -> None:
    client = client_for(server)
    a = client.embed(["axial CT liver", "coronal MRI brain", "axial CT liver"], batch_size=2)
    assert a.shape == (3, 64) and a.dtype == np.float32
    assert np.allclose(a[0], a[2]) and not np.allclose(a[0], a[1])
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert server.stats.embedding_requests == 2


def test_embedding_faults_are_retried(server: FakeLLMServer) -> None:
    server.set_faults(Faults(status=429, first_n=1, paths=("embeddings",)))
    client = client_for(server)
    assert client.embed(["liver"]).shape == (1, 64)
    assert client.usage.retries == 1


def test_from_env(monkeypatch: pytest.MonkeyPatch, server: FakeLLMServer) -> None:
    monkeypatch.setenv("MEDSAE_LLM_BASE_URL", server.base_url)
    monkeypatch.setenv("MEDSAE_LLM_MODEL", "env-model")
    monkeypatch.delenv("MEDSAE_LLM_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    client = LLMClient.from_env(backoff_s=0.01)
    assert client.model == "env-model" and client.base_url == server.base_url
    client.chat_json(MESSAGES, Answer)
    assert server.stats.auth_headers[-1] == "Bearer k"
    monkeypatch.delenv("MEDSAE_LLM_BASE_URL")
    with pytest.raises(InputError, match="MEDSAE_LLM_BASE_URL"):
        LLMClient.from_env()


def test_strict_schema_inlines_refs() -> None:
    class Inner(BaseModel):
        index: int

    class Outer(BaseModel):
        items: list[Inner]

    s = strict_schema(Outer.model_json_schema())
    assert "$defs" not in s and "$ref" not in str(s)
    assert s["additionalProperties"] is False
    assert s["properties"]["items"]["items"]["required"] == ["index"]


def test_check_json_schema() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "array", "items": {"type": "integer"}}},
        "required": ["a"],
        "additionalProperties": False,
    }
    check_json_schema({"a": [1, 2]}, schema)
    for bad in ({}, {"a": [1.5]}, {"a": [1], "b": 1}, {"a": [True]}):
        with pytest.raises(ValueError):
            check_json_schema(bad, schema)


def test_png_data_url_roundtrip() -> None:
    import base64
    import io

    from PIL import Image

    img = (np.arange(64, dtype=np.uint8).reshape(8, 8)) * 3
    url = png_data_url(img, size=16)
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.size == (16, 16)
    with pytest.raises(InputError):
        png_data_url(img.astype(np.float32))
