"""One rule for reading a workspace artifact: missing is "not computed", damaged is an error.

* A missing file is *not computed*: :class:`MissingArtifact` (or ``None`` from
  :func:`read_optional`), with the command that makes it.
* A file that exists but cannot be read (unreadable, truncated, of the wrong schema or row
  count, undecodable bytes) is *damaged*: :class:`DamagedArtifact` names the file and says
  how to rebuild it (its stage with ``--force``), never "not computed".

The stage that makes a file is found from the workspace folder it lies in (``slices`` is
``prepare``, ``eval`` is ``evaluate``, ...). :func:`damage_in` checks the files of a finished
artifact folder without reading them whole (a Parquet footer, a ``.npy`` header against the
file size, a zip directory, a JSON parse): a stage whose output is damaged is not up to
date (:func:`medsae.workspace.run_stage` rebuilds it).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from medsae.errors import ArtifactError

T = TypeVar("T")

STAGE_OF_FOLDER = {
    "slices": "prepare",
    "split": "split",
    "embeddings": "encode",
    "saes": "train",
    "codes": "codes",
    "eval": "evaluate",
    "ranking": "rank",
    "features": "interpret",
    "index": "index",
    "report": "report",
}
"""The top-level workspace folder of an artifact -> the stage (and command) that makes it."""

JSON_CHECK_LIMIT = 64 * 1024 * 1024
"""JSON files up to this size are parsed by :func:`damage_in`; larger ones are not read."""


def _damage_errors() -> tuple[type[BaseException], ...]:
    """What readers raise on a damaged file (a missing one is checked before reading)."""
    errors: list[type[BaseException]] = [
        OSError,
        ValueError,  # JSONDecodeError, UnicodeDecodeError, a bad .npy header, ArrowInvalid
        EOFError,
        KeyError,
        IndexError,
        TypeError,
        zipfile.BadZipFile,
        RuntimeError,  # torch.load of a damaged checkpoint
    ]
    try:
        import pyarrow as pa

        errors.append(pa.ArrowException)
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        pass
    return tuple(errors)


DAMAGE_ERRORS = _damage_errors()


def stage_of(path: Path) -> str | None:
    """The stage that writes ``path`` (from the nearest workspace folder above it), or None."""
    for folder in Path(path).parents:
        if folder.name in STAGE_OF_FOLDER:
            return STAGE_OF_FOLDER[folder.name]
    return None


def rebuild_hint(path: Path, stage: str | None = None) -> str:
    """How to rebuild the artifact that holds ``path`` (``stage`` when given, else the stage
    of the workspace folder it lies in)."""
    stage = stage or stage_of(path)
    if stage is None:
        return "rebuild it with the stage that wrote it and --force"
    return f"rebuild it with `medsae {stage} --force`"


def make_hint(path: Path, stage: str | None = None) -> str:
    """The command that makes a missing artifact (``stage`` as in :func:`rebuild_hint`)."""
    stage = stage or stage_of(path)
    return f"run `medsae {stage}` first" if stage else "run the stage that writes it first"


class DamagedArtifact(ArtifactError):
    """An artifact file that exists but cannot be read; names it and how to rebuild it."""

    def __init__(self, path: Path | str, problem: str, stage: str | None = None) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: damaged ({problem}); {rebuild_hint(self.path, stage)}")


class MissingArtifact(ArtifactError):
    """An artifact file that was not computed; names it and the command that makes it."""

    def __init__(
        self, path: Path | str, what: str = "not computed", stage: str | None = None
    ) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: {what}; {make_hint(self.path, stage)}")


def describe(error: BaseException) -> str:
    """A short account of a reader's error (its type when the message is empty)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:300] if text else type(error).__name__


def read_artifact(
    path: Path | str,
    read: Callable[[Path], T],
    what: str = "not computed",
    stage: str | None = None,
) -> T:
    """``read(path)``; :class:`MissingArtifact` when the file is absent, :class:`DamagedArtifact`
    when reading it fails (``stage``: the stage that writes it, else found from the path)."""
    p = Path(path)
    if not p.exists():
        raise MissingArtifact(p, what, stage)
    try:
        return read(p)
    except DamagedArtifact:
        raise
    except DAMAGE_ERRORS as e:
        raise DamagedArtifact(p, describe(e), stage) from e


def read_optional(path: Path | str, read: Callable[[Path], T]) -> T | None:
    """``read(path)``, None when the file is absent, :class:`DamagedArtifact` when damaged."""
    p = Path(path)
    if not p.exists():
        return None
    return read_artifact(p, read)


def load_json(path: Path) -> Any:
    """The JSON content of a file (strict UTF-8)."""
    return json.loads(Path(path).read_bytes().decode("utf-8"))


def load_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object."""
    data = load_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, found {type(data).__name__}")
    return data


def read_json_optional(path: Path | str) -> dict[str, Any] | None:
    """A JSON object file; None when absent; :class:`DamagedArtifact` when unreadable."""
    return read_optional(path, load_json_object)


def check_rows(path: Path, rows: int, expected: int, of: str) -> None:
    """:class:`DamagedArtifact` unless ``path`` holds ``expected`` rows (those of ``of``)."""
    if rows != expected:
        raise DamagedArtifact(path, f"{rows} rows where {of} has {expected}")


def damage_in(folder: Path) -> DamagedArtifact | None:
    """The first damaged file of a finished artifact folder, or None (see the module doc)."""
    folder = Path(folder)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        try:
            _check_file(path)
        except DAMAGE_ERRORS as e:
            return DamagedArtifact(path, describe(e))
    return None


def _check_file(path: Path) -> None:
    suffix = path.suffix
    if suffix == ".json" and path.stat().st_size <= JSON_CHECK_LIMIT:
        load_json(path)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.read_metadata(path)
    elif suffix == ".npy":
        _check_npy(path)
    elif suffix in (".npz", ".pt"):
        with zipfile.ZipFile(path) as archive:
            archive.namelist()


def _check_npy(path: Path) -> None:
    """A ``.npy`` file's header read, and its size checked against what it declares."""
    import numpy as np

    fmt = np.lib.format
    with open(path, "rb") as f:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, _fortran, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _fortran, dtype = fmt.read_array_header_2_0(f)
        else:  # a newer header version: its size is not checked here
            return
        start = f.tell()
    n = 1
    for d in shape:
        n *= int(d)
    need = start + n * dtype.itemsize
    size = path.stat().st_size
    if not dtype.hasobject and size < need:
        raise ValueError(f"truncated: {size:,} bytes where the header declares {need:,}")
