"""One console and progress bars shared by every stage (rich), quiet when not a terminal.

The console never reads markup or emoji codes in what it prints: messages carry subject
ids, file names and paths, where ``[/x]`` or ``:zero:`` are text. A message is coloured
with ``style=`` (``console.print(msg, style="yellow")``) or built as a ``rich.text.Text``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

console = Console(stderr=True, highlight=False, markup=False, emoji=False)


def plain_column(template: str, style: str = "") -> TextColumn:
    """A progress column whose text (a task's description or fields) is never markup."""
    return TextColumn(template, style=style, markup=False)


def progress_enabled() -> bool:
    """Progress bars are shown unless MEDSAE_PROGRESS=0."""
    return os.environ.get("MEDSAE_PROGRESS", "1") != "0"


def make_progress(*extra_columns: TextColumn) -> Progress:
    """A progress bar with a count, elapsed and remaining time, plus extra text columns.

    Use ``progress.update(task, advance=n, rate="1,234 slices/s")`` with a column such as
    ``TextColumn("{task.fields[rate]}")`` for throughput.
    """
    return Progress(
        plain_column("{task.description}", "bold"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not progress_enabled(),
        transient=False,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar."""
    with make_progress() as progress:
        task = progress.add_task(description, total=total if total is not None else _len(items))
        for item in items:
            yield item
            progress.advance(task)


def _len(items: Iterable[object]) -> int | None:
    try:
        return len(items)  # type: ignore[arg-type]
    except TypeError:
        return None
