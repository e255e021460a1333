"""Configuration of the ``encode`` stage."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from medsae.config import StageConfig
from medsae.device import device_field
from medsae.encode.registry import RUNTIME_OPTIONS

# Fields that decide what is stored; the others only change how the work runs.
CONTENT_FIELDS = ("encoder", "options", "name", "dtype", "shard_rows")
BATCH_SIZE_CPU = 32
"""Default images per forward pass on the CPU (larger batches gain nothing there)."""
BATCH_SIZE_CUDA = 128
"""Default images per forward pass on a GPU: enough to keep an H100 busy with the built-in
encoders at 224 pixels while a ViT-L at 1,024 pixels still fits in bf16."""


class EncodeConfig(StageConfig):
    """How to encode every slice of a workspace into ``WS/embeddings/<name>/``.

    Only ``encoder``, ``options`` (less runtime ones such as ``device``), ``name``, ``dtype``
    and ``shard_rows`` enter the stage key: changing the batch size, the backend or the
    number of jobs never invalidates finished embeddings.
    """

    encoder: str = Field(
        default="efficientnet-lite0", description="Registry name (see `medsae encoders`)."
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Encoder options, e.g. {'model': '/models/dinov3-vitl16', 'pooling': 'cls', 'input_size': 1024}.",
    )
    name: str | None = Field(
        default=None,
        description="Store folder under WS/embeddings/ (default: the encoder's own name, e.g. "
        "'efficientnet-lite0', 'dinov3', 'random-dinov3-vits16', or the adapter's name).",
    )
    dtype: Literal["float32", "float16"] = Field(
        default="float32",
        description="Storage type of the embeddings (reading always gives float32).",
    )
    shard_rows: int = Field(
        default=4096,
        ge=1,
        description="Rows per shard file (the unit of resume and of job splits).",
    )
    batch_size: int | None = Field(
        default=None,
        ge=1,
        description=f"Images per forward pass (default: {BATCH_SIZE_CPU} on the CPU, "
        f"{BATCH_SIZE_CUDA} on a GPU).",
    )
    workers: int = Field(
        default=1, ge=0, description="Background loader threads (0: load in the main thread)."
    )
    prefetch: int = Field(default=4, ge=1, description="Batches prepared ahead per loader thread.")
    threads: int | None = Field(
        default=None, ge=1, description="torch CPU threads (default: all cores)."
    )
    device: str = device_field()
    tf32: bool = Field(
        default=False,
        description="On a GPU, let fp32 matrix products and convolutions use TF32 (faster; "
        "about 1e-3 relative error). Encoders that run in bf16 on a GPU are not affected.",
        json_schema_extra={"runtime": True},
    )
    backend: Literal["local", "ray"] = Field(
        default="local", description="local process, or a Ray Data actor pool."
    )
    shard_index: int = Field(
        default=0, ge=0, description="This job's index among --num-shards jobs."
    )
    num_shards: int = Field(
        default=1, ge=1, description="Number of jobs sharing the work (job array)."
    )
    merge_only: bool = Field(
        default=False,
        description="Assemble the store from finished job parts; refuse to encode missing shards.",
    )
    keep_parts: bool = Field(default=False, description="Keep the job-part folders after a merge.")
    tokens: bool = Field(
        default=False,
        description="Also store the encoder's spatial feature vectors (tokens) of every slice "
        "in WS/embeddings/<name>-tokens/ (see docs/ARTIFACTS.md).",
    )
    token_grid: int = Field(
        default=8, ge=1, description="Tokens per side: every feature map is resampled to this grid."
    )
    token_parts: list[int] | None = Field(
        default=None,
        description="Feature-map parts kept in a token, by index (EfficientNet multiscale: 0-6 "
        "the stages, 7 the head); default all, which makes a slice's token mean its embedding.",
    )
    token_cap: int | None = Field(
        default=None,
        ge=1,
        description="Most tokens kept per slice (default all); fewer are drawn uniformly without "
        "replacement, seeded by [token_seed, slice row].",
    )
    token_seed: int = Field(default=0, description="Seed of the per-slice token sampling.")
    token_dtype: Literal["float32", "float16"] = Field(
        default="float16", description="Storage type of the tokens (reading gives float32)."
    )
    ray_address: str | None = Field(
        default=None, description="Ray cluster address (default: start or join a local one)."
    )
    ray_actors: int | None = Field(
        default=None, ge=1, description="Encoder actors (default: one per GPU, else 1)."
    )
    ray_gpus_per_actor: float | None = Field(
        default=None,
        ge=0,
        description="GPUs per actor (default: 1 when the cluster has GPUs, else 0).",
    )

    @model_validator(mode="after")
    def _check_shards(self) -> EncodeConfig:
        if self.shard_index >= self.num_shards:
            raise ValueError(
                f"shard_index {self.shard_index} must be < num_shards {self.num_shards}"
            )
        if self.merge_only and self.num_shards > 1:
            raise ValueError(
                "merge_only assembles the parts of all jobs; do not combine it with num_shards > 1"
            )
        return self

    def batch_size_on(self, device_type: str) -> int:
        """``batch_size``, or the default of the device type (``cpu``, ``cuda``)."""
        if self.batch_size is not None:
            return self.batch_size
        return BATCH_SIZE_CUDA if device_type == "cuda" else BATCH_SIZE_CPU

    def content(self, store_name: str) -> dict[str, Any]:
        """The part of the config hashed into the stage key (what decides the stored values)."""
        return {
            "encoder": self.encoder,
            "options": {k: v for k, v in sorted(self.options.items()) if k not in RUNTIME_OPTIONS},
            "name": store_name,
            "dtype": self.dtype,
            "shard_rows": self.shard_rows,
        }
