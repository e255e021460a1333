"""The Ray backend of ``prepare``: one Ray task per volume, across a Ray cluster.

Each volume to cut is one task running the same function as a local worker process (it
writes the volume's piece, ``pieces/NNNNN/``, into the partial artifact folder, with
``summary.json`` last). A task asks Ray for one CPU and for the memory that the volume
needs (:func:`task_memory`, from the voxel count in its header), so Ray never packs more
large volumes on a node than fit. The driver bounds the tasks in flight, records each
result as it arrives (failures per subject, exactly as the local backend does) and leaves
the concatenation to the stage. Interrupting or killing the driver ends its tasks; what
finished stays as pieces and a rerun resumes from them (with either backend).

The workspace must be on a file system that every node sees at the same path: tasks write
pieces there and the driver reads them back (a piece the driver cannot see is an error).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medsae.data.cases import Case
from medsae.data.config import PrepareConfig
from medsae.data.slicer import piece_done
from medsae.errors import ArtifactError, InputError

BASE_MEMORY = 384 << 20
"""Bytes a task needs besides its volume: the interpreter with NumPy, pandas and nibabel."""
BYTES_PER_VOXEL = 14
"""Peak bytes per voxel of a volume being cut: the float32 image, the temporaries of the
intensity scaling and the uint8 volume (measured on 256 x 256 x 200 phantoms: about 6 for CT,
13 for MRI, whose percentiles take more; label maps add about 3.5)."""
LABEL_MAP_BYTES_PER_VOXEL = 4
"""Extra bytes per voxel with ``label_maps``: the native and the reoriented label volume."""
MULTI_WINDOW_BYTES_PER_VOXEL = 6
"""Extra bytes per voxel with ``multi_window``: three uint8 channels and their temporaries."""
FALLBACK_MEMORY = 2 << 30
"""The memory asked for a volume whose header cannot be read (the task then reports why)."""

RunOne = Callable[[Case, PrepareConfig, str], dict[str, Any]]


def voxel_count(case: Case) -> int | None:
    """Voxels of a case's image from its header(s) only; None when they cannot be read."""
    try:
        if case.source_kind == "dicom":
            if not case.dicom_files:
                return None
            import pydicom

            ds = pydicom.dcmread(case.dicom_files[0], stop_before_pixels=True, force=True)
            return int(ds.Rows) * int(ds.Columns) * len(case.dicom_files)
        import nibabel as nib

        shape = nib.load(case.image).header.get_data_shape()  # type: ignore[attr-defined]
        return int(math.prod(int(s) for s in shape[:3]))
    except Exception:  # a bad file fails in its task, with the local backend's message
        return None


def task_memory(case: Case, config: PrepareConfig) -> int:
    """Bytes of memory to request for cutting ``case``: a bound on the worker's peak.

    ``BASE_MEMORY`` plus ``BYTES_PER_VOXEL`` (more with label maps or RGB windows) per voxel,
    plus twice the output slices (about three volume sides of ``size**2`` pixels).
    """
    voxels = voxel_count(case)
    if voxels is None:
        return FALLBACK_MEMORY
    per_voxel = (
        BYTES_PER_VOXEL
        + (LABEL_MAP_BYTES_PER_VOXEL if config.label_maps else 0)
        + (MULTI_WINDOW_BYTES_PER_VOXEL if config.multi_window else 0)
    )
    side = round(voxels ** (1 / 3))
    out_pixels = 3 * side * config.size * config.size
    out_bytes = out_pixels * ((3 if config.multi_window else 1) + (1 if config.label_maps else 0))
    return int(BASE_MEMORY + voxels * per_voxel + 2 * out_bytes)


def _largest_node_memory(ray: Any) -> float:
    """The largest ``memory`` resource of a live node (0 when Ray reports none)."""
    sizes = [float(n.get("Resources", {}).get("memory", 0)) for n in ray.nodes() if n.get("Alive")]
    return max(sizes, default=0.0)


def _crash_record(case: Case, error: BaseException) -> dict[str, Any]:
    """The failure record of a task that died instead of returning one."""
    import ray.exceptions as rex

    if isinstance(error, rex.OutOfMemoryError):
        message = f"{case.key}: out of memory while reading {case.image}"
    else:
        first = (str(error).strip().splitlines() or [""])[0]
        message = (
            f"{case.key}: the Ray task for {case.image} failed "
            f"({type(error).__name__}: {first[:300]})"
        )
    return {"ok": False, "subject_key": case.key, "file": case.image, "error": message}


def prepare_with_ray(
    todo: Sequence[tuple[int, Case]],
    config: PrepareConfig,
    pieces: Path,
    run_one: RunOne,
    record: Callable[[dict[str, Any]], None],
) -> None:
    """Cut the volumes of ``todo`` (index, case) into ``pieces/NNNNN`` as Ray tasks.

    ``run_one(case, config, piece)`` is the local backend's worker function (it returns a
    result record and never raises for a bad input); ``record`` receives every result as it
    arrives. Joins the cluster at ``config.ray_address`` (or an existing ``ray.init`` in this
    process, or starts a local instance) and leaves it as found.
    """
    if not todo:
        return
    try:
        import ray
    except ImportError as e:
        raise InputError("--backend ray", "Ray is not installed; pip install 'medsae[ray]'") from e
    pieces = Path(pieces).resolve()
    started = False
    if not ray.is_initialized():
        ray.init(address=config.ray_address, include_dashboard=False, ignore_reinit_error=True)
        started = True
    pending: dict[Any, tuple[int, Case]] = {}
    try:
        largest = _largest_node_memory(ray)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        in_flight = max(2, 2 * cpus)
        remote = ray.remote(run_one)
        config_ref = ray.put(config)
        queue = list(todo)
        queue.reverse()
        while queue or pending:
            while queue and len(pending) < in_flight:
                i, case = queue.pop()
                memory = float(task_memory(case, config))
                if largest > 0:
                    memory = min(memory, largest)  # never infeasible: alone on the largest node
                ref = remote.options(num_cpus=1, memory=memory, max_retries=2).remote(
                    case, config_ref, str(pieces / f"{i:05d}")
                )
                pending[ref] = (i, case)
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i, case = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as e:
                    result = _crash_record(case, e)
                if result["ok"] and not piece_done(pieces / f"{i:05d}"):
                    raise ArtifactError(
                        f"{pieces / f'{i:05d}'}: a Ray worker finished {case.key} but its piece "
                        "is not visible here; the workspace must be on a file system that every "
                        "node sees at the same path"
                    )
                record(result)
    finally:
        for ref in pending:  # interrupted: end this run's tasks (their pieces are redone)
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
