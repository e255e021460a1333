"""The ``encode`` stage: every slice of a workspace -> ``WS/embeddings/<name>/``.

One job (``num_shards == 1``) builds the store through :func:`medsae.workspace.run_stage`:
shards already in the partial folder of an interrupted run are kept, shards finished by
job-array parts are linked in, and only the rest is encoded.

A job array (``num_shards = n > 1``, ``shard_index = i``) writes part ``i`` as its own
artifact, ``WS/embeddings/<name>.parts/part-0000i-of-0000n/`` (a contiguous block of shards),
resumable like the store. Running the same command once more without ``--num-shards``
(optionally ``--merge-only``) assembles the store from the parts (hard links, no copy) and
removes the parts folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsae.atomic import atomic_path
from medsae.data.io import IMAGES_FILE, SLICES_FILE
from medsae.device import DEVICE_ENV, configure_cuda, describe_device, resolve_device
from medsae.encode.config import EncodeConfig
from medsae.encode.io import PART_FILE, STORE_FILE
from medsae.encode.registry import get_encoder, takes_option
from medsae.encode.runner import (
    RateProgress,
    encode_local,
    existing_shard_ok,
    finish_external_shard,
    job_shards,
    plan_shards,
    torch_threads,
)
from medsae.encode.store import Shard, norms_summary, write_store_meta
from medsae.errors import ArtifactError, InputError
from medsae.progress import console
from medsae.workspace import (
    StageOutcome,
    StageResult,
    Workspace,
    artifact_key,
    compute_key,
    read_manifest,
    run_stage,
    stage_status,
    write_json_atomic,
)


def build_encoder(config: EncodeConfig, device: torch.device | None = None) -> Any:
    """The encoder a config asks for (the resolved ``device`` added when the encoder takes it
    and the config or ``$MEDSAE_DEVICE`` chose one)."""
    options = dict(config.options)
    chosen = config.device != "auto" or bool(os.environ.get(DEVICE_ENV, "").strip())
    if chosen and "device" not in options and takes_option(config.encoder, "device"):
        options["device"] = str(device) if device is not None else config.device
    return get_encoder(config.encoder, **options)


def parts_root(ws: Workspace, name: str) -> Path:
    """Folder holding the job-array parts of store ``name``."""
    return ws.embeddings(name).parent / f"{ws.embeddings(name).name}.parts"


def _refuse_foreign_store(
    out_dir: Path, name: str, meta: dict[str, Any], dim: int, force: bool
) -> None:
    store_json = out_dir / STORE_FILE
    if force or not store_json.is_file():
        return
    import json

    old = json.loads(store_json.read_text())
    old_reg = old.get("registry_name")
    if (old_reg and old_reg != meta.get("registry_name")) or int(old.get("dim", dim)) != dim:
        raise ArtifactError(
            f"{out_dir}: holds {old.get('dim')}-d embeddings of encoder '{old_reg or old.get('encoder')}'; "
            f"refusing to replace them with {dim}-d embeddings of '{meta.get('registry_name')}' under the "
            f"same name '{name}'. Choose another --name, or pass --force to replace them"
        )


def _link_or_copy(src: Path, dst: Path) -> None:
    with atomic_path(dst, needed=src.stat().st_size) as tmp:
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def _take_from_parts(
    root: Path,
    content: dict[str, Any],
    inputs: dict[str, str],
    todo: list[Shard],
    tmp: Path,
    dim: int,
    dtype: str,
    encoder: str,
) -> list[Shard]:
    """Link shards finished by compatible job parts into ``tmp``; returns the shards still missing."""
    if not root.is_dir() or not todo:
        return todo
    wanted = {s.file: s for s in todo}
    for part in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        manifest = read_manifest(part)
        if manifest is None:
            continue
        cfg = manifest.get("config") or {}
        if manifest.get("inputs") != inputs or {k: cfg.get(k) for k in content} != content:
            console.print(
                f"encode: ignoring {part} (made with another config or input)", style="yellow"
            )
            continue
        for file in list(wanted):
            if existing_shard_ok(part, wanted[file], dim, dtype, encoder):
                _link_or_copy(part / file, tmp / file)
                del wanted[file]
    return [s for s in todo if s.file in wanted]


def encode(
    workspace: Workspace | str | Path, config: EncodeConfig | None = None, force: bool = False
) -> StageOutcome:
    """Run the ``encode`` stage (see the module docstring); returns what :func:`run_stage` did.

    Raises :class:`InputError` for an unknown encoder, missing weights or an empty slice table,
    and :class:`ArtifactError` for missing slices, NaN/Inf embeddings (naming the slices), or
    an encoder/dimension mismatch with what is already stored.
    """
    from medsae.data.table import open_images, read_slices

    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    config = config or EncodeConfig()
    device = resolve_device(config.device, "encode.device")
    configure_cuda(device, tf32=config.tf32)
    batch_size = config.batch_size_on(device.type)
    runtime = {**config.runtime_values(), **describe_device(device)}
    slices_key = artifact_key(ws.slices)
    table = read_slices(ws.slices)
    if len(table) == 0:
        raise InputError(ws.slices / SLICES_FILE, "the slice table is empty; nothing to encode")
    images = open_images(ws.slices)
    if images.dtype != np.uint8 or not (
        images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)
    ):
        raise InputError(
            ws.slices / IMAGES_FILE,
            f"expected uint8 (N, S, S) or (N, S, S, 3), got {images.dtype} {images.shape}",
        )
    if len(images) != len(table):
        raise ArtifactError(
            f"{ws.slices}: images.npy has {len(images)} rows but the slice table has {len(table)}"
        )
    slice_ids = table["slice_id"].astype(str).tolist()

    enc = build_encoder(config, device)
    meta = enc.metadata()
    name = config.name or enc.name
    dim = int(enc.dim)
    inputs = {"slices": slices_key, "weights": str(meta.get("weights_fingerprint"))}
    content = config.content(name)
    store_key = compute_key("encode", content, inputs)
    out_dir = ws.embeddings(name)
    plan = plan_shards(len(table), config.shard_rows)
    extra_meta = {
        **meta,
        "encoder_name": enc.name,
        "store_key": store_key,
        "slices_key": slices_key,
        "shard_rows": config.shard_rows,
        "backend": config.backend,
    }

    def build(tmp: Path, shards: list[Shard], part: bool) -> StageResult:
        todo = [s for s in shards if not existing_shard_ok(tmp, s, dim, config.dtype, enc.name)]
        kept = len(shards) - len(todo)
        if not part:
            todo = _take_from_parts(
                parts_root(ws, name), content, inputs, todo, tmp, dim, config.dtype, enc.name
            )
            if config.merge_only and todo:
                rows = f"rows {todo[0].start}-{todo[-1].stop - 1}"
                raise ArtifactError(
                    f"{parts_root(ws, name)}: {len(todo)} shard(s) missing ({todo[0].file}..., {rows}); "
                    "run the jobs that produce them, or drop --merge-only to encode them here"
                )
        linked = len(shards) - kept - len(todo)
        if kept or linked:
            console.print(
                f"encode: {kept} shard(s) kept from an interrupted run, {linked} taken from job parts"
            )
        done_rows = sum(s.stop - s.start for s in shards) - sum(s.stop - s.start for s in todo)
        total = sum(s.stop - s.start for s in shards)
        with RateProgress(total, f"encode {name}", done_rows) as bar:
            _run_backend(enc, config, batch_size, ws, tmp, todo, slice_ids, bar, images)
        counts = {
            "rows": total,
            "dim": dim,
            "shards": len(shards),
            "encoded_shards": len(todo),
            "reused_shards": len(shards) - len(todo),
        }
        if part:
            write_json_atomic(
                tmp / PART_FILE,
                {"store_key": store_key, "shards": [s.__dict__ for s in shards], "dim": dim},
            )
            return StageResult(counts=counts, extra={"store_key": store_key})
        store = write_store_meta(tmp, name, plan, dim, config.dtype, extra_meta)
        write_store_meta(
            tmp, name, plan, dim, config.dtype, {**extra_meta, "norms": norms_summary(store)}
        )
        return StageResult(counts=counts, extra={"encoder": name, "dim": dim})

    with torch_threads(config.threads):
        if config.num_shards > 1:
            if stage_status(out_dir, "encode", content, inputs)[0] == "up-to-date" and not force:
                console.print(
                    f"encode: {out_dir} is already complete; nothing to do for this job",
                    style="dim",
                )
                return StageOutcome("encode", out_dir, "skipped", read_manifest(out_dir) or {})
            part_dir = (
                parts_root(ws, name) / f"part-{config.shard_index:05d}-of-{config.num_shards:05d}"
            )
            mine = job_shards(plan, config.shard_index, config.num_shards)
            if not mine:
                raise InputError(
                    "--shard-index",
                    f"job {config.shard_index} of {config.num_shards} has no shards ({len(plan)} in all)",
                )
            part_cfg = {
                **content,
                "shard_index": config.shard_index,
                "num_shards": config.num_shards,
            }
            return run_stage(
                part_dir,
                "encode-part",
                part_cfg,
                inputs,
                lambda tmp: build(tmp, mine, True),
                force=force,
                runtime=runtime,
            )
        _refuse_foreign_store(out_dir, name, meta, dim, force)
        outcome = run_stage(
            out_dir,
            "encode",
            content,
            inputs,
            lambda tmp: build(tmp, plan, False),
            force=force,
            runtime=runtime,
        )
    if not outcome.skipped and not config.keep_parts and parts_root(ws, name).is_dir():
        with contextlib.suppress(OSError):
            shutil.rmtree(parts_root(ws, name))
    if config.tokens:
        from medsae.encode.token_stage import encode_tokens

        encode_tokens(ws, config, enc, force=force)
    return outcome


def _run_backend(
    enc: Any,
    config: EncodeConfig,
    batch_size: int,
    ws: Workspace,
    tmp: Path,
    todo: list[Shard],
    slice_ids: list[str],
    bar: RateProgress,
    images: Any,
) -> None:
    if not todo:
        return
    images_path = ws.slices / IMAGES_FILE
    if config.backend == "ray":
        from medsae.encode.ray_backend import encode_with_ray

        encode_with_ray(
            enc,
            config,
            batch_size,
            images_path,
            tmp,
            todo,
            slice_ids,
            on_shard=lambda s: bar.advance(s.stop - s.start),
        )
    elif hasattr(enc, "encode_shards"):

        def on_shard(shard: Shard) -> None:
            finish_external_shard(tmp, shard, int(enc.dim), config.dtype, slice_ids, enc.name)
            bar.advance(shard.stop - shard.start)

        enc.encode_shards(images_path, tmp, todo, batch_size=batch_size, on_shard=on_shard)
    else:
        encode_local(
            enc,
            images,
            todo,
            tmp,
            dtype=config.dtype,
            batch_size=batch_size,
            workers=config.workers,
            prefetch=config.prefetch,
            slice_ids=slice_ids,
            progress=bar,
        )
