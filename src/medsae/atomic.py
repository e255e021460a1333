"""Atomic file writes: a temporary file beside the target, renamed into place when whole.

:func:`atomic_path` gives every atomic write of medsae the same behaviour:

* the temporary file is ``.<name>.tmp-<pid>`` in the target's folder (the rename is atomic
  on one file system);
* a write that fails removes its temporary file, so failed retries never pile up;
* temporary files of processes that no longer run (killed mid-write) are removed by the
  next write into the same folder (:func:`remove_stale_temporaries`), and
  :func:`medsae.workspace.run_stage` removes every one left in a build before it becomes
  the finished artifact;
* a write that finds no room (a full disk, a quota, a file size limit; some writers, such
  as ``torch.save``, report it as another error, recognised by the free space left) raises
  :class:`DiskFull`, naming the file and the space it needs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from medsae.errors import ArtifactError

TEMPORARY = re.compile(r"^\..+\.tmp-(\d+)$")
"""Names of temporary files: ``.<name>.tmp-<pid>``."""
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})
"""``OSError`` numbers of a write that found no room: a full disk, a file size limit, a quota."""


class DiskFull(ArtifactError):
    """A write that found no room; names the file, the space it needs and what is free."""

    def __init__(self, path: Path, needed: int, free: int | None) -> None:
        self.path = Path(path)
        self.needed = needed
        self.free = free
        left = "" if free is None else f", {_mb(free)} free"
        super().__init__(
            f"{path}: no space left to write it (needs about {_mb(needed)}{left}; the new "
            "file is written beside the old one before it replaces it). Free space on that "
            "file system (or raise the file size limit) and run again: nothing already "
            "written was lost"
        )


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs (or cannot be signalled: taken as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def temporary_of(path: Path) -> Path:
    """The temporary file of this process for ``path``."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def remove_stale_temporaries(folder: Path, all_of_them: bool = False) -> list[Path]:
    """Remove the temporary files of processes that no longer run from ``folder`` (every
    temporary file, with ``all_of_them``, recursively); the removed paths."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob(".*.tmp-*") if all_of_them else folder.glob(".*.tmp-*")
    removed = []
    for p in found:
        match = TEMPORARY.match(p.name)
        if match is None or not p.is_file():
            continue
        if all_of_them or not pid_alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def is_disk_full(error: BaseException, path: Path | None = None, needed: int = 0) -> bool:
    """Whether ``error`` is a write that found no room: an ``OSError`` of
    :data:`DISK_FULL_ERRNOS`, or (for writers that hide the errno) any error while the file
    system of ``path`` has less than ``needed`` bytes (at least 1 MB) free."""
    if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
        return True
    if path is None or isinstance(error, KeyboardInterrupt | SystemExit):
        return False
    free = _free(path)
    return free is not None and free < max(needed, 1_000_000)


def _free(path: Path) -> int | None:
    try:
        return shutil.disk_usage(Path(path).parent).free
    except OSError:
        return None


@contextlib.contextmanager
def atomic_path(path: Path | str, needed: int = 0) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; renamed into place when the block
    ends, removed when it fails (:class:`DiskFull` for no room; ``needed``: the expected
    size in bytes, for the message and for writers that hide the errno)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    tmp = temporary_of(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        written = tmp.stat().st_size if tmp.is_file() else 0
        with contextlib.suppress(OSError):
            tmp.unlink()
        if is_disk_full(e, path, needed):
            raise DiskFull(path, max(needed, written), _free(path)) from e
        raise
