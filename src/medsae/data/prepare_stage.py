"""The ``prepare`` stage: dataset folder(s) -> ``WS/slices`` (see docs/ARTIFACTS.md).

Volumes are streamed one at a time per worker process (or per Ray task with
``backend="ray"``, :mod:`medsae.data.ray_backend`); each finished volume leaves a piece
(``pieces/NNNNN/``) in the partial artifact folder, so an interrupted run resumes at the
volume level, with either backend. At the end the pieces are concatenated into the artifact,
written front to back with ordinary writes (a memory map of a new file would crash the
process with SIGBUS on a full disk; a write raises ``OSError`` naming the file). Inputs that
fail are listed in ``failures.json`` (and printed); unless failures are allowed, the stage
then raises ``StageFailures`` and the previous artifact stays. A full disk is not an input's
fault: it stops the stage (see :func:`medsae.workspace.run_stage`).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.text import Text

from medsae.atomic import DiskFull
from medsae.data.cases import Case
from medsae.data.config import PrepareConfig
from medsae.data.io import (
    FAILURES_FILE,
    LABEL_MAPS_FILE,
    PIECE_AREA,
    PIECE_IMAGES,
    PIECE_PRESENCE,
    PIECE_ROWS,
)
from medsae.data.slicer import piece_done, process_case
from medsae.data.sources import discover
from medsae.data.structures import ALL_STRUCTURES
from medsae.data.table import (
    AREA_FILE,
    IMAGES_FILE,
    PRESENCE_FILE,
    SLICE_COLUMNS,
    SLICES_FILE,
    STRUCTURES_FILE,
)
from medsae.errors import InputError, MedsaeError, StageFailures
from medsae.npy import NpyWriter
from medsae.workspace import (
    SUMMARY,
    StageOutcome,
    StageResult,
    Workspace,
    fingerprint_tree,
    is_disk_full,
    run_stage,
)

PIECES = "pieces"
FLOAT_COLUMNS = (
    "position_mm",
    "rel_position",
    "age",
    "kvp",
    "field_strength",
    "window_center",
    "window_width",
    "intensity_low",
    "intensity_high",
    "pixel_spacing_mm",
)
INT_COLUMNS = ("index", "n_slices")


def _run_one(case: Case, config: PrepareConfig, piece: str) -> dict[str, Any]:
    """Worker entry: process a case; errors come back as a failure record, never raised,
    except a write that finds no room (a full disk fails every volume alike: it stops the
    stage, and the pieces written so far are kept for the rerun)."""
    try:
        return {"ok": True, **process_case(case, config, Path(piece))}
    except DiskFull:
        raise
    except OSError as e:
        if is_disk_full(e):
            raise
        return {
            "ok": False,
            "subject_key": case.key,
            "file": case.image,
            "error": f"{case.key}: unexpected {type(e).__name__} while processing {case.image}: {e}",
        }
    except MedsaeError as e:
        return {"ok": False, "subject_key": case.key, "file": case.image, "error": str(e)}
    except MemoryError:
        return {
            "ok": False,
            "subject_key": case.key,
            "file": case.image,
            "error": f"{case.key}: out of memory while reading {case.image}",
        }
    except Exception as e:  # an unexpected error still names the input, and others go on
        return {
            "ok": False,
            "subject_key": case.key,
            "file": case.image,
            "error": f"{case.key}: unexpected {type(e).__name__} while processing {case.image}: {e}",
        }


def prepare(
    workspace: str | Path | Workspace,
    config: PrepareConfig,
    force: bool = False,
    allow_failures: bool = False,
) -> StageOutcome:
    """Cut the volumes of ``config.source`` into the ``slices`` artifact of a workspace.

    Skipped when the config and the source files are unchanged (the source's fingerprint is
    the input key). Raises StageFailures (after writing ``failures.json``) when some inputs
    failed and ``allow_failures`` is False.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    ws.ensure()
    if not config.source:
        raise InputError("prepare.source", "no dataset folder given (medsae prepare ROOT)")
    root = Path(config.source).expanduser().resolve()
    if not root.exists():
        raise InputError(root, "dataset folder not found")
    inputs = {"source": fingerprint_tree(root)}

    def build(partial: Path) -> StageResult:
        return _build(partial, root, config, allow_failures)

    return run_stage(ws.slices, "prepare", config.content(), inputs, build, force=force)


def _build(partial: Path, root: Path, config: PrepareConfig, allow_failures: bool) -> StageResult:

    from medsae.progress import console, make_progress, plain_column

    cases, dataset_warnings = discover(root, config)
    if not cases:
        raise InputError(root, "no volumes found")
    pieces = partial / PIECES
    pieces.mkdir(exist_ok=True)
    todo = [(i, c) for i, c in enumerate(cases) if not piece_done(pieces / f"{i:05d}")]
    if len(todo) < len(cases):
        console.print(
            f"prepare: resuming, {len(cases) - len(todo)} of {len(cases)} volume(s) already done"
        )
    failures: list[dict[str, Any]] = []
    with make_progress(plain_column("{task.fields[rate]}")) as progress:
        task = progress.add_task("prepare: volumes", total=len(cases), rate="")
        progress.update(task, advance=len(cases) - len(todo))
        n_slices = 0

        def record(res: dict[str, Any]) -> None:
            nonlocal n_slices
            if res["ok"]:
                n_slices += int(res["n_slices"])
            else:
                failures.append({k: res[k] for k in ("subject_key", "file", "error")})
            elapsed = progress.tasks[0].elapsed or 1e-9
            progress.update(task, advance=1, rate=f"{n_slices / elapsed:,.0f} slices/s")

        if config.backend == "ray":
            from medsae.data.ray_backend import prepare_with_ray

            prepare_with_ray(todo, config, pieces, _run_one, record)
        elif config.workers <= 1 or len(todo) <= 1:
            for i, case in todo:
                record(_run_one(case, config, str(pieces / f"{i:05d}")))
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")
            with ProcessPoolExecutor(
                max_workers=min(config.workers, len(todo)), mp_context=ctx
            ) as pool:
                futures = [
                    pool.submit(_run_one, c, config, str(pieces / f"{i:05d}")) for i, c in todo
                ]
                for fut in as_completed(futures):
                    record(fut.result())

    summaries = [
        json.loads((pieces / f"{i:05d}" / SUMMARY).read_text())
        for i in range(len(cases))
        if piece_done(pieces / f"{i:05d}")
    ]
    warnings = dataset_warnings + [w for s in summaries for w in s["warnings"]]
    unknown = Counter(str(s["study_type"]) for s in summaries if s["unknown_study_type"])
    report = {
        "failures": sorted(failures, key=lambda f: f["subject_key"]),
        "warnings": warnings,
        "unknown_study_types": dict(unknown),
    }
    report_path = partial / FAILURES_FILE
    report_path.write_text(json.dumps(report, indent=2))
    for w in warnings[:20]:
        console.print(Text.assemble(("warning:", "yellow"), f" {w}"))
    if len(warnings) > 20:
        console.print(f"... {len(warnings) - 20} more warnings in {FAILURES_FILE}", style="yellow")
    for f in report["failures"]:
        console.print(Text.assemble(("failed:", "red"), f" {f['error']}"))
    if failures and not allow_failures:
        raise StageFailures("prepare", [f["subject_key"] for f in report["failures"]], report_path)
    done = [i for i in range(len(cases)) if piece_done(pieces / f"{i:05d}")]
    if not done:
        raise InputError(root, "every volume failed; nothing to write")
    n_rows = _concatenate(partial, [pieces / f"{i:05d}" for i in done], config)
    shutil.rmtree(pieces)
    counts = {
        "slices": n_rows,
        "volumes": len(done),
        "subjects": len({s["subject_key"] for s in summaries}),
        "failed": len(failures),
        "warnings": len(warnings),
        "unknown_study_type_volumes": int(sum(unknown.values())),
    }
    return StageResult(counts=counts, extra={"unknown_study_types": dict(unknown)})


def coerce_table(df: pd.DataFrame) -> pd.DataFrame:
    """Give the slice table stable column types (floats, ints, strings with nulls)."""
    df = df.reindex(columns=list(SLICE_COLUMNS))
    for c in df.columns:
        if c in FLOAT_COLUMNS:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
        elif c in INT_COLUMNS:
            df[c] = df[c].astype("int64")
        else:
            df[c] = df[c].astype("object").where(df[c].notna(), None)
    return df.reset_index(drop=True)


def _concatenate(partial: Path, pieces: list[Path], config: PrepareConfig) -> int:
    tables = [pd.read_parquet(p / PIECE_ROWS) for p in pieces]
    sizes = [len(t) for t in tables]
    n = int(sum(sizes))
    table = (
        coerce_table(pd.concat([t for t in tables if len(t)], ignore_index=True))
        if n
        else (coerce_table(pd.DataFrame(columns=list(SLICE_COLUMNS))))
    )
    first = np.load(pieces[0] / PIECE_IMAGES, mmap_mode="r")
    img_shape = (n, *first.shape[1:])
    n_s = len(ALL_STRUCTURES)
    outputs = {
        PIECE_IMAGES: NpyWriter(partial / IMAGES_FILE, np.uint8, img_shape),
        PIECE_PRESENCE: NpyWriter(partial / PRESENCE_FILE, np.int8, (n, n_s)),
        PIECE_AREA: NpyWriter(partial / AREA_FILE, np.float32, (n, n_s)),
    }
    if config.label_maps:
        outputs[LABEL_MAPS_FILE] = NpyWriter(partial / LABEL_MAPS_FILE, np.uint8, img_shape[:3])
    try:
        for p, size in zip(pieces, sizes, strict=True):
            if size:
                for name, writer in outputs.items():
                    writer.write(np.load(p / name, mmap_mode="r"))
            if config.thumbnails and (p / "thumbnails").is_dir():
                tdir = partial / "thumbnails"
                tdir.mkdir(exist_ok=True)
                for f in (p / "thumbnails").iterdir():
                    f.replace(tdir / f.name)
        for writer in outputs.values():
            writer.close()
    finally:
        for writer in outputs.values():
            writer.file.close()
    table.to_parquet(partial / SLICES_FILE, index=False)
    (partial / STRUCTURES_FILE).write_text(json.dumps(list(ALL_STRUCTURES)))
    return n
