"""The peak resident memory of this process while a block runs (sampled every few ms)."""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Resident memory of this process now (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakGrowth:
    """``bytes``: the highest resident memory seen during the block, less the start's."""

    bytes = 0


@contextmanager
def peak_rss_growth(every_s: float = 0.002) -> Iterator[PeakGrowth]:
    gc.collect()
    start = rss_bytes()
    seen = PeakGrowth()
    peak = [start]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            done.wait(every_s)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join()
        seen.bytes = max(peak[0], rss_bytes()) - start
