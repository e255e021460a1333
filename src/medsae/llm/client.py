"""A small client for OpenAI-compatible chat and embedding endpoints.

It talks to any server that implements ``POST {base_url}/chat/completions`` and
``POST {base_url}/embeddings`` the way the OpenAI API does: vLLM, Ollama, llama.cpp server,
LM Studio and hosted APIs. ``base_url`` ends with the API version, e.g.
``http://127.0.0.1:8000/v1``.

What it does for every request:

* structured output: ``response_format = {"type": "json_schema", "json_schema": {...}}``;
  the answer is parsed and validated against the schema (a pydantic model or a JSON schema
  dict); a refusal, non-JSON or schema-invalid answer is retried ``invalid_retries`` times,
  then :class:`LLMResponseError` is raised;
* transient failures (timeouts, connection errors, HTTP 429 and 5xx) are retried with
  exponential backoff ``backoff_s * 2**attempt`` (capped by ``max_backoff_s``; a
  ``Retry-After`` header is honoured up to that cap), ``max_retries`` times; other HTTP errors
  (400, 401, 404...) raise :class:`LLMHTTPError` at once;
* at most ``concurrency`` requests are in flight at once, whatever the number of threads
  calling the client (:meth:`LLMClient.map` runs a function over items with that many threads);
* an on-disk cache keyed by the SHA-256 of (endpoint, request body) (the model is part of the
  body): a rerun with the same requests sends nothing;
* token usage (``prompt_tokens``, ``completion_tokens``, ``total_tokens``) is summed over the
  requests actually sent, with counts of requests, cache hits, retries and failures.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
from pydantic import BaseModel

from medsae.errors import InputError, MedsaeError
from medsae.llm.messages import (
    check_json_schema,
    parse_answer,
    png_data_url,
    strict_schema,
    with_images,
)

__all__ = [
    "LLMClient",
    "LLMError",
    "LLMHTTPError",
    "LLMResponseError",
    "LLMTimeoutError",
    "Usage",
    "check_json_schema",
    "png_data_url",
    "strict_schema",
]

T = TypeVar("T")
R = TypeVar("R")

ENV_BASE_URL = "MEDSAE_LLM_BASE_URL"
ENV_MODEL = "MEDSAE_LLM_MODEL"
ENV_API_KEY = "MEDSAE_LLM_API_KEY"
ENV_EMBEDDING_MODEL = "MEDSAE_LLM_EMBEDDING_MODEL"


class LLMError(MedsaeError):
    """A request to the language-model endpoint failed for good."""


class LLMHTTPError(LLMError):
    """The endpoint answered with an HTTP error that retrying cannot fix (or retries ran out)."""

    def __init__(self, url: str, status: int, body: str) -> None:
        self.status = status
        super().__init__(f"{url}: HTTP {status}: {body[:300]}")


class LLMTimeoutError(LLMError):
    """Every attempt timed out or could not connect."""


class LLMResponseError(LLMError):
    """The model refused, or its answer was not valid JSON for the requested schema."""


@dataclass
class Usage:
    """Token and request accounting of one client (summed over the requests sent)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    invalid_answers: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class LLMClient:
    """Client of one OpenAI-compatible endpoint and model (thread-safe).

    Parameters
    ----------
    base_url:
        The API root including the version, e.g. ``http://127.0.0.1:8000/v1``.
    model:
        Model name for chat requests.
    api_key:
        Sent as ``Authorization: Bearer <key>`` when given (local servers usually need none).
    embedding_model:
        Model name for ``/embeddings`` (defaults to ``model``).
    timeout_s, max_retries, backoff_s, max_backoff_s, invalid_retries, concurrency:
        See the module docstring.
    cache_dir:
        Folder of the response cache; ``None`` disables caching.
    temperature, max_tokens:
        Sampling settings sent with every chat request (temperature 0 for reproducibility).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        embedding_model: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        invalid_retries: int = 2,
        concurrency: int = 4,
        cache_dir: str | Path | None = None,
        temperature: float = 0.0,
        max_tokens: int = 512,
    ) -> None:
        if not base_url:
            raise InputError("base_url", f"no LLM endpoint given; pass one or set {ENV_BASE_URL}")
        if not model:
            raise InputError("model", f"no LLM model given; pass one or set {ENV_MODEL}")
        if concurrency < 1:
            raise InputError("concurrency", f"must be >= 1, got {concurrency}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.embedding_model = embedding_model or model
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.invalid_retries = int(invalid_retries)
        self.concurrency = int(concurrency)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(headers=headers, timeout=self.timeout_s)
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._lock = threading.Lock()
        self.usage = Usage()

    @classmethod
    def from_env(
        cls,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        **kwargs: Any,
    ) -> LLMClient:
        """A client whose unset endpoint, model and key come from the environment.

        ``MEDSAE_LLM_BASE_URL``, ``MEDSAE_LLM_MODEL``, ``MEDSAE_LLM_API_KEY`` (falling back to
        ``OPENAI_API_KEY``) and ``MEDSAE_LLM_EMBEDDING_MODEL``.
        """
        kwargs.setdefault("embedding_model", os.environ.get(ENV_EMBEDDING_MODEL) or None)
        return cls(
            base_url or os.environ.get(ENV_BASE_URL, ""),
            model or os.environ.get(ENV_MODEL, ""),
            api_key or os.environ.get(ENV_API_KEY) or os.environ.get("OPENAI_API_KEY"),
            **kwargs,
        )

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LLMClient({self.base_url!r}, model={self.model!r})"

    # ------------------------------------------------------------------ public calls
    def chat_json(
        self,
        messages: Sequence[dict[str, Any]],
        schema: dict[str, Any] | type[BaseModel],
        images: Sequence[np.ndarray | str] | None = None,
        *,
        schema_name: str = "answer",
        image_size: int | None = None,
    ) -> dict[str, Any]:
        """Ask for a JSON answer that follows ``schema``; return it as a dict.

        ``messages``: OpenAI chat messages (``role`` and ``content``). ``images``: uint8
        arrays or ready data URLs, appended as ``image_url`` parts to the last user message.
        ``schema``: a pydantic model class (validated with it) or a JSON schema dict (validated
        by :func:`check_json_schema`). Raises :class:`LLMResponseError` when every attempt was
        refused or invalid, :class:`LLMHTTPError` / :class:`LLMTimeoutError` on transport
        failures after retries.
        """
        model_cls = schema if isinstance(schema, type) and issubclass(schema, BaseModel) else None
        raw = model_cls.model_json_schema() if model_cls is not None else dict(schema)  # type: ignore[arg-type]
        json_schema = strict_schema(raw)
        payload = {
            "model": self.model,
            "messages": with_images(list(messages), images or [], image_size),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": schema_name, "schema": json_schema, "strict": True},
            },
        }
        key = self._cache_key("chat/completions", payload)
        cached = self._cache_get(key)
        if cached is not None:
            return dict(cached["answer"])
        problem = ""
        for _ in range(self.invalid_retries + 1):
            body = self._post("chat/completions", payload)
            try:
                answer = parse_answer(body, json_schema, model_cls)
            except ValueError as e:
                problem = str(e)
                with self._lock:
                    self.usage.invalid_answers += 1
                continue
            self._cache_put(key, {"answer": answer, "model": self.model})
            return answer
        raise LLMResponseError(
            f"{self.base_url} ({self.model}): no valid answer after "
            f"{self.invalid_retries + 1} attempt(s): {problem}"
        )

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embeddings of ``texts`` from ``/embeddings``: float32 ``(len(texts), dim)``."""
        texts = [str(t) for t in texts]
        out: list[np.ndarray] = []
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            payload = {"model": self.embedding_model, "input": batch}
            key = self._cache_key("embeddings", payload)
            cached = self._cache_get(key)
            if cached is not None:
                out.append(np.asarray(cached["vectors"], dtype=np.float32))
                continue
            body = self._post("embeddings", payload)
            try:
                rows = sorted(body["data"], key=lambda d: d.get("index", 0))
                vectors = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
            except (KeyError, TypeError, ValueError) as e:
                raise LLMResponseError(f"{self.base_url}/embeddings: malformed answer ({e})") from e
            if vectors.shape[0] != len(batch):
                raise LLMResponseError(
                    f"{self.base_url}/embeddings: {vectors.shape[0]} vectors for {len(batch)} texts"
                )
            self._cache_put(key, {"vectors": vectors.tolist()})
            out.append(vectors)
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(out, axis=0)

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``[fn(x) for x in items]`` run on ``concurrency`` threads, in order.

        Exceptions raised by ``fn`` propagate; wrap ``fn`` to record failures instead.
        """
        items = list(items)
        if self.concurrency == 1 or len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(fn, items))

    # ------------------------------------------------------------------ transport
    def _post(self, endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.base_url}/{endpoint}"
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                with self._lock:
                    self.usage.retries += 1
            wait = 0.0
            try:
                with self._slots:
                    with self._lock:
                        self.usage.requests += 1
                    response = self._http.post(url, json=payload)
            except (httpx.TimeoutException, httpx.TransportError) as e:
                last = f"{type(e).__name__}: {e}"
                if attempt == self.max_retries:
                    raise LLMTimeoutError(
                        f"{url}: {last} after {attempt + 1} attempt(s) (timeout {self.timeout_s} s)"
                    ) from e
            else:
                if response.status_code == 200:
                    try:
                        body: dict[str, Any] = response.json()
                    except json.JSONDecodeError as e:
                        raise LLMResponseError(
                            f"{url}: answer is not JSON: {response.text[:200]}"
                        ) from e
                    self._add_usage(body.get("usage"))
                    return body
                transient = response.status_code == 429 or response.status_code >= 500
                if not transient or attempt == self.max_retries:
                    raise LLMHTTPError(url, response.status_code, response.text)
                last = f"HTTP {response.status_code}"
                wait = _retry_after(response.headers.get("retry-after"))
            delay = min(self.max_backoff_s, max(wait, self.backoff_s * 2**attempt))
            time.sleep(delay)
        raise LLMTimeoutError(f"{url}: {last}")  # not reached

    def _add_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        with self._lock:
            for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
                value = usage.get(name)
                if isinstance(value, int | float):
                    setattr(self.usage, name, getattr(self.usage, name) + int(value))

    # ------------------------------------------------------------------ cache
    def _cache_key(self, endpoint: str, payload: dict[str, Any]) -> str:
        text = json.dumps(
            {"endpoint": endpoint, "payload": payload}, sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def _cache_path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / key[:2] / f"{key}.json"

    def _cache_get(self, key: str) -> dict[str, Any] | None:
        path = self._cache_path(key)
        if path is None or not path.is_file():
            return None
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        with self._lock:
            self.usage.cache_hits += 1
        return data

    def _cache_put(self, key: str, value: dict[str, Any]) -> None:
        path = self._cache_path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(value))
        os.replace(tmp, path)


def _retry_after(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        return 0.0
