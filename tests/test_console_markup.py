"""Console output never reads text from data or paths as markup or emoji codes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from medsae.workspace import StageResult, run_stage


@pytest.fixture()
def captured(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    from medsae import progress

    buf = io.StringIO()
    console = progress.console
    # the private fields, so that teardown restores "follow sys.stderr" (None) rather than
    # pinning the console to the stream that was current while this test ran
    monkeypatch.setattr(console, "_file", buf)
    monkeypatch.setattr(console, "_width", 10_000)  # long temporary paths on one line
    return buf


def test_stage_messages_print_paths_as_they_are(tmp_path: Path, captured: io.StringIO) -> None:
    """A workspace ``ws[/]x`` made every stage exit 1 after building; ``[b c]`` vanished."""
    out = tmp_path / "ws[/]x" / "[b c]" / ":zero:"
    for _ in range(2):  # built, then up to date
        run_stage(out, "prepare", {}, {}, lambda p: StageResult())
    printed = " ".join(captured.getvalue().split())  # lines wrapped at the console width
    assert printed.count("ws[/]x/[b c]/:zero:") == 2, printed
    assert "\u20e3" not in printed and "0\ufe0f" not in printed


def test_an_error_message_with_brackets_prints(
    monkeypatch: pytest.MonkeyPatch, captured: io.StringIO
) -> None:
    from medsae import cli
    from medsae.errors import InputError

    def fail() -> None:
        raise InputError("subject [/bold] zero", "bad volume [red]:zero:")

    monkeypatch.setattr(cli, "app", fail)
    with pytest.raises(SystemExit) as ended:
        cli.main()
    assert ended.value.code == 2
    printed = " ".join(captured.getvalue().split())
    assert "error: subject [/bold] zero: bad volume [red]:zero:" in printed


def test_progress_descriptions_are_text(captured: io.StringIO) -> None:
    from medsae.progress import plain_column

    column = plain_column("{task.description}", "bold")
    task = type("T", (), {"description": "subject [/x] :zero:", "fields": {}})()
    text = column.render(task)  # type: ignore[arg-type]
    assert text.plain == "subject [/x] :zero:"
    Console(file=io.StringIO()).print(text)
