"""Configuration of a language-model endpoint (used by ``interpret`` and the text embedder)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from medsae.config import StageConfig


class LLMConfig(StageConfig):
    """An OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp server, LM Studio, hosted APIs).

    Unset ``base_url``, ``model`` and ``api_key`` come from ``MEDSAE_LLM_BASE_URL``,
    ``MEDSAE_LLM_MODEL`` and ``MEDSAE_LLM_API_KEY`` (or ``OPENAI_API_KEY``). The key is never
    written to manifests.
    """

    base_url: str | None = Field(
        default=None, description="API root with version, e.g. http://127.0.0.1:8000/v1."
    )
    model: str | None = Field(default=None, description="Chat model name (a VLM to send images).")
    api_key: SecretStr | None = Field(
        default=None, exclude=True, description="Bearer key (not saved)."
    )
    embedding_model: str | None = Field(
        default=None, description="Model for /embeddings (default: model)."
    )
    send_images: bool = Field(
        default=True, description="Send slices as PNG images (False: text only)."
    )
    image_size: int | None = Field(
        default=256, ge=16, description="Longer side of sent images in pixels."
    )
    concurrency: int = Field(default=4, ge=1, description="Requests in flight at most.")
    timeout_s: float = Field(default=120.0, gt=0, description="Timeout of one HTTP request.")
    max_retries: int = Field(default=4, ge=0, description="Retries on timeouts, 429 and 5xx.")
    backoff_s: float = Field(
        default=1.0, ge=0, description="First retry delay; doubles each retry."
    )
    max_backoff_s: float = Field(default=30.0, ge=0, description="Cap of the retry delay.")
    invalid_retries: int = Field(
        default=2, ge=0, description="Retries on refusals or invalid JSON."
    )
    temperature: float = Field(default=0.0, ge=0, description="Sampling temperature.")
    max_tokens: int = Field(default=512, ge=16, description="Answer length limit in tokens.")
    cache: bool = Field(
        default=True, description="Cache answers under WS/cache/llm/ (reruns cost nothing)."
    )
