"""The Ray Data backend: the same encoder as an actor pool across a Ray cluster.

Each shard to encode is one row of a Ray dataset; ``map_batches`` sends shards to a pool of
encoder actors (one GPU each where the cluster has GPUs). An actor rebuilds the encoder from
its registry name and options, memory-maps ``images.npy`` (the workspace must be on a file
system every node sees), encodes the shard in batches and writes it atomically into the
store's partial folder, in exactly the format of the local backend. The driver checks each
shard as it is reported and writes ``store.json`` as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medsae.encode.config import EncodeConfig
from medsae.encode.store import Shard
from medsae.errors import ArtifactError, InputError


class _ShardEncoder:
    """Ray actor: encodes whole shards and writes them into ``out_dir``."""

    def __init__(
        self,
        registry_name: str,
        options: dict[str, Any],
        images_path: str,
        out_dir: str,
        batch_size: int,
        dtype: str,
    ) -> None:
        from medsae.encode.registry import get_encoder

        self.encoder = get_encoder(registry_name, **options)
        self.images = np.load(images_path, mmap_mode="r")
        self.out_dir = Path(out_dir)
        self.batch_size = batch_size
        self.dtype = dtype

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from medsae.encode.store import save_shard

        bad_rows = []
        for file, start, stop in zip(batch["file"], batch["start"], batch["stop"], strict=True):
            start, stop = int(start), int(stop)
            out_bd = np.concatenate(
                [
                    np.asarray(
                        self.encoder.encode(
                            np.ascontiguousarray(self.images[lo : min(lo + self.batch_size, stop)])
                        ),
                        dtype=np.float32,
                    )
                    for lo in range(start, stop, self.batch_size)
                ]
            )
            stored = out_bd.astype(self.dtype, copy=False)
            bad = np.flatnonzero(~np.isfinite(stored).all(axis=1)) + start
            if len(bad):
                bad_rows.append(",".join(str(int(r)) for r in bad))
                continue
            save_shard(self.out_dir, str(file), stored)
            bad_rows.append("")
        return {
            "file": batch["file"],
            "start": batch["start"],
            "stop": batch["stop"],
            "bad_rows": np.array(bad_rows, dtype=object),
        }


def encode_with_ray(
    encoder: Any,
    config: EncodeConfig,
    batch_size: int,
    images_path: Path,
    out_dir: Path,
    shards: Sequence[Shard],
    slice_ids: Sequence[str],
    on_shard: Callable[[Shard], None] | None = None,
) -> None:
    """Encode ``shards`` on a Ray cluster (joined, or started locally when none is running)."""
    try:
        import ray
    except ImportError as e:
        raise InputError("--backend ray", "Ray is not installed; pip install 'medsae[ray]'") from e
    meta = encoder.metadata()
    options = dict(meta["options"])
    if config.device != "auto":
        options.setdefault("device", config.device)
    started = False
    if not ray.is_initialized():
        ray.init(address=config.ray_address, include_dashboard=False, ignore_reinit_error=True)
        started = True
    try:
        gpus = float(ray.cluster_resources().get("GPU", 0))
        per_actor = (
            config.ray_gpus_per_actor
            if config.ray_gpus_per_actor is not None
            else (1.0 if gpus else 0.0)
        )
        actors = config.ray_actors or (max(1, int(gpus // per_actor)) if per_actor else 1)
        actors = max(1, min(actors, len(shards)))
        ray.data.DataContext.get_current().enable_progress_bars = False  # medsae shows its own
        items = [{"file": s.file, "start": s.start, "stop": s.stop} for s in shards]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        out = ds.map_batches(
            _ShardEncoder,
            fn_constructor_kwargs={
                "registry_name": meta["registry_name"],
                "options": options,
                "images_path": str(Path(images_path).resolve()),
                "out_dir": str(Path(out_dir).resolve()),
                "batch_size": batch_size,
                "dtype": config.dtype,
            },
            batch_size=1,
            concurrency=actors,
            num_gpus=per_actor,
            num_cpus=0 if per_actor else 1,
        )
        by_file = {s.file: s for s in shards}
        for row in out.iter_rows():
            shard = by_file[str(row["file"])]
            if row["bad_rows"]:
                rows = [int(r) for r in str(row["bad_rows"]).split(",")]
                ids = ", ".join(str(slice_ids[r]) for r in rows[:10])
                raise ArtifactError(
                    f"encoder {encoder.name} produced NaN/Inf embeddings for {len(rows)} slice(s): {ids}"
                )
            if on_shard is not None:
                on_shard(shard)
    finally:
        if started:
            ray.shutdown()
