"""A small, deterministic OpenAI-compatible server on 127.0.0.1, for tests and trials.

It is a real HTTP peer (stdlib ``http.server`` in a thread) implementing

* ``POST /v1/chat/completions``: messages with text and ``image_url`` parts and
  ``response_format: {type: json_schema}``. The answer is built from the schema and from the
  medical terms (modality, plane, structure names, sex) found in the request text:

  - every ``string`` field gets a phrase of the terms found in at least 80% of the lines
    starting with ``Slice k:`` (else the most frequent terms of the text): a "description";
  - lines starting with ``[k]`` are candidates; their score is the fraction of the reference
    terms they contain, the reference being the line starting with ``Description:`` if any,
    else every other line of the text;
  - an array of objects with an ``index`` field gets one object per candidate (``match`` =
    score >= 0.5, ``confidence`` = score); an array of integers gets the candidate indices
    sorted by decreasing score (a ranking).

* ``POST /v1/embeddings``: deterministic hashed bag-of-words vectors (L2-normalised).
* ``GET /v1/models``: the one model name it answers to (any name is accepted).

Faults (:class:`Faults`) simulate slow answers, HTTP errors (500, 429 with ``Retry-After``),
malformed JSON, answers off the schema and refusals, for every request or only the first ``n`` / those whose text
contains a marker. Counters (:class:`ServerStats`) record what was received.

    with serve() as base_url:
        client = LLMClient(base_url, "fake")
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from medsae.data.structures import ALL_STRUCTURES, pretty

EMBEDDING_DIM = 64


@dataclass
class Faults:
    """Which requests get a fault, and which one (all deterministic).

    ``delay_s`` delays every matching answer. ``status`` answers with that HTTP status (429
    adds ``Retry-After: 0``); ``malformed`` answers content that is not JSON; ``off_schema``
    answers valid JSON that ignores the schema; ``refusal`` sets the message's ``refusal`` field. ``first_n`` limits the faults to the first ``n`` matching
    requests (``None``: all of them); ``when_contains`` limits them to requests whose body
    contains that text; ``paths`` to those endpoints (``chat/completions``, ``embeddings``).
    """

    delay_s: float = 0.0
    status: int | None = None
    malformed: bool = False
    off_schema: bool = False
    refusal: bool = False
    first_n: int | None = None
    when_contains: str | None = None
    paths: tuple[str, ...] = ("chat/completions", "embeddings")


@dataclass
class ServerStats:
    """What the server received."""

    requests: int = 0
    chat_requests: int = 0
    embedding_requests: int = 0
    faults_served: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    images_seen: int = 0
    auth_headers: list[str] = field(default_factory=list)


def _vocabulary() -> list[tuple[str, re.Pattern[str]]]:
    words = {pretty(s) for s in ALL_STRUCTURES}
    words |= {"ct", "mri", "axial", "coronal", "sagittal", "female", "male"}
    ordered = sorted(words, key=lambda w: (-len(w), w))
    return [(w, re.compile(r"(?<![a-z0-9])" + re.escape(w) + r"(?![a-z0-9])")) for w in ordered]


_VOCAB = _vocabulary()


def terms(text: str) -> Counter[str]:
    """Counts of the known medical terms in ``text`` (longest match first, case-insensitive)."""
    t = re.sub(r"(?<![a-z0-9])mr(?![a-z0-9])", "mri", text.lower())
    found: Counter[str] = Counter()
    for word, pattern in _VOCAB:
        hits = pattern.findall(t)
        if hits:
            found[word] += len(hits)
            t = pattern.sub(" ", t)
    return found


def hashed_embedding(text: str, dim: int = EMBEDDING_DIM) -> list[float]:
    """A deterministic bag-of-words vector: each word adds +-1 at a hashed position."""
    vec = np.zeros(dim, dtype=np.float64)
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        h = int.from_bytes(hashlib.sha1(word.encode()).digest()[:8], "little")
        vec[h % dim] += 1.0 if (h >> 32) & 1 else -1.0
    norm = np.linalg.norm(vec)
    return (vec / norm if norm > 0 else vec).tolist()


def _request_text(messages: list[dict[str, Any]]) -> tuple[str, int]:
    texts, images = [], 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for part in content:
                if part.get("type") == "text":
                    texts.append(str(part.get("text", "")))
                elif part.get("type") == "image_url":
                    images += 1
    return "\n".join(texts), images


def _user_text(messages: list[dict[str, Any]]) -> str:
    return _request_text([m for m in messages if m.get("role") == "user"])[0]


def _scores(text: str) -> tuple[list[int], list[float], Counter[str]]:
    """Candidate indices, their scores against the reference terms, and those terms."""
    candidates: list[tuple[int, str]] = []
    reference_lines: list[str] = []
    description: str | None = None
    for line in text.splitlines():
        s = line.strip()
        m = re.match(r"\[(\d+)\]\s*(.*)", s)
        if m:
            candidates.append((int(m.group(1)), m.group(2)))
        elif s.lower().startswith("description:"):
            description = s.split(":", 1)[1]
        else:
            reference_lines.append(s)
    reference = terms(description if description is not None else "\n".join(reference_lines))
    out_scores = []
    for _, cand in candidates:
        cand_terms = terms(cand)
        if description is not None:
            score = len(set(reference) & set(cand_terms)) / max(len(reference), 1)
        else:  # rank candidate texts by how much of them the reference supports
            score = len(set(reference) & set(cand_terms)) / max(len(cand_terms), 1)
        out_scores.append(round(score, 4))
    return [k for k, _ in candidates], out_scores, reference


def _describe(text: str, n: int = 4) -> str:
    """Terms found in at least 80% of the ``Slice k:`` lines (else the most frequent terms)."""
    lines = [ln for ln in text.splitlines() if re.match(r"\s*slice \d+:", ln.lower())]
    if lines:
        per_line = [set(terms(ln)) for ln in lines]
        counts = Counter(t for s in per_line for t in s)
        shared = Counter({t: c for t, c in counts.items() if c >= 0.8 * len(lines)})
        if shared:
            return _phrase(shared, n)
    return _phrase(terms(text), n)


def _phrase(found: Counter[str], n: int = 4) -> str:
    top = [w for w, _ in sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]
    return ", ".join(top) if top else "unspecified image content"


def fill_schema(schema: dict[str, Any], text: str) -> Any:
    """A schema-valid value derived from the request text (see the module docstring)."""
    indices, scores, reference = _scores(text)
    return _fill(schema, indices, scores, reference, text)


def _fill(
    schema: dict[str, Any], idx: list[int], scores: list[float], ref: Counter[str], text: str
) -> Any:
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) else kind
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        obj = {}
        for name, sub in props.items():
            if name == "index" and idx:
                obj[name] = idx[0]
            else:
                obj[name] = _fill(sub, idx, scores, ref, text)
        return obj
    if kind == "array":
        items = schema.get("items", {})
        item_props = items.get("properties", {})
        if "index" in item_props:
            rows = []
            for k, s in zip(idx, scores, strict=True):
                row: dict[str, Any] = {}
                for name, sub in item_props.items():
                    sub_kind = sub.get("type")
                    if name == "index":
                        row[name] = k
                    elif sub_kind == "boolean":
                        row[name] = s >= 0.5
                    elif sub_kind in ("number", "integer"):
                        row[name] = s if sub_kind == "number" else round(s)
                    else:
                        row[name] = _fill(sub, idx, scores, ref, text)
                rows.append(row)
            return rows
        if items.get("type") == "integer":
            order = sorted(range(len(idx)), key=lambda i: (-scores[i], idx[i]))
            return [idx[i] for i in order]
        if items.get("type") == "boolean":
            return [s >= 0.5 for s in scores]
        if items.get("type") == "number":
            return list(scores)
        return [_fill(items, idx, scores, ref, text)] * max(1, int(schema.get("minItems", 1)))
    if kind == "string":
        return _describe(text)
    if kind == "boolean":
        return bool(ref)
    if kind in ("number", "integer"):
        return schema.get("minimum", 0)
    return None


class FakeLLMServer:
    """The server; use as a context manager or with :meth:`start` / :meth:`stop`."""

    def __init__(
        self,
        faults: Faults | None = None,
        port: int = 0,
        api_key: str | None = None,
        model: str = "fake-vlm",
    ) -> None:
        self.faults = faults or Faults()
        self.api_key = api_key
        self.model = model
        self.stats = ServerStats()
        self._lock = threading.Lock()
        self._matched = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> FakeLLMServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="fake-llm", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_faults(self, faults: Faults | None) -> None:
        """Replace the faults (and restart the ``first_n`` count)."""
        with self._lock:
            self.faults = faults or Faults()
            self._matched = 0

    def _fault_for(self, path: str, raw: bytes) -> Faults | None:
        f = self.faults
        if path not in f.paths or not (
            f.delay_s or f.status is not None or f.malformed or f.off_schema or f.refusal
        ):
            return None
        if f.when_contains is not None and f.when_contains.encode() not in raw:
            return None
        with self._lock:
            self._matched += 1
            if f.first_n is not None and self._matched > f.first_n:
                return None
            self.stats.faults_served += 1
        return f

    def answer(
        self, path: str, raw: bytes, auth: str
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        """Status, headers and JSON body for one request."""
        with self._lock:
            self.stats.requests += 1
            self.stats.auth_headers.append(auth)
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            return 401, {}, {"error": {"message": "invalid api key", "type": "auth"}}
        try:
            request = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return 400, {}, {"error": {"message": "request body is not JSON"}}
        fault = self._fault_for(path, raw)
        if fault is not None and fault.delay_s:
            time.sleep(fault.delay_s)
        if fault is not None and fault.status is not None:
            headers = {"Retry-After": "0"} if fault.status == 429 else {}
            return fault.status, headers, {"error": {"message": f"simulated HTTP {fault.status}"}}
        if path == "embeddings":
            with self._lock:
                self.stats.embedding_requests += 1
            inputs = request.get("input", [])
            inputs = [inputs] if isinstance(inputs, str) else list(inputs)
            data = [
                {"object": "embedding", "index": i, "embedding": hashed_embedding(str(t))}
                for i, t in enumerate(inputs)
            ]
            n_tokens = sum(len(str(t).split()) for t in inputs)
            return (
                200,
                {},
                {
                    "object": "list",
                    "data": data,
                    "model": request.get("model", self.model),
                    "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
                },
            )
        if path != "chat/completions":
            return 404, {}, {"error": {"message": f"unknown endpoint /v1/{path}"}}
        with self._lock:
            self.stats.chat_requests += 1
        messages = request.get("messages", [])
        text, n_images = _request_text(messages)
        with self._lock:
            self.stats.images_seen += n_images
        fmt = request.get("response_format") or {}
        schema = (fmt.get("json_schema") or {}).get("schema") or {
            "type": "object",
            "properties": {"answer": {"type": "string"}},
        }
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        if fault is not None and fault.refusal:
            message["refusal"] = "I can't help with that request."
        elif fault is not None and fault.malformed:
            message["content"] = "Sure! Here is the answer: {not json"
        elif fault is not None and fault.off_schema:
            message["content"] = json.dumps({"off_schema": True})
        else:
            message["content"] = json.dumps(fill_schema(schema, _user_text(messages)))
        prompt_tokens = len(text.split()) + 85 * n_images
        completion_tokens = len(str(message["content"] or message["refusal"]).split())
        return (
            200,
            {},
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "model": request.get("model", self.model),
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
        )


def _make_handler(server: FakeLLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, headers: dict[str, str], body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._send(
                    200, {}, {"object": "list", "data": [{"id": server.model, "object": "model"}]}
                )
            else:
                self._send(404, {}, {"error": {"message": f"unknown endpoint {self.path}"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0].removeprefix("/v1/").strip("/")
            with server._lock:
                server.stats.in_flight += 1
                server.stats.max_in_flight = max(server.stats.max_in_flight, server.stats.in_flight)
            try:
                status, headers, body = server.answer(
                    path, raw, self.headers.get("Authorization", "")
                )
            finally:
                with server._lock:
                    server.stats.in_flight -= 1
            self._send(status, headers, body)

    return Handler


@contextlib.contextmanager
def serve(faults: Faults | None = None, port: int = 0, api_key: str | None = None) -> Iterator[str]:
    """Run a :class:`FakeLLMServer` for the ``with`` block; yields its base URL (``.../v1``)."""
    with FakeLLMServer(faults=faults, port=port, api_key=api_key) as server:
        yield server.base_url
