"""Errors that name the input that caused them."""

from __future__ import annotations

from pathlib import Path


class MedsaeError(Exception):
    """Base class for every error medsae raises on purpose.

    The message always names the offending input (a file, a subject, a row, a config field)
    and what was expected, so a user can act on it without reading a traceback.
    """


class InputError(MedsaeError):
    """Bad user input: a file, a table row, a volume or a config value."""

    def __init__(self, what: str | Path, problem: str) -> None:
        self.what = str(what)
        self.problem = problem
        super().__init__(f"{self.what}: {problem}")


class ArtifactError(MedsaeError):
    """A workspace artifact is missing, incomplete or inconsistent with another."""


class StageFailures(MedsaeError):
    """A stage finished the inputs it could but some failed; a report was written."""

    def __init__(self, stage: str, failed: list[str], report: Path) -> None:
        self.stage = stage
        self.failed = failed
        self.report = report
        shown = ", ".join(failed[:10]) + (" ..." if len(failed) > 10 else "")
        super().__init__(
            f"{stage}: {len(failed)} input(s) failed: {shown}. Details in {report}. "
            "Pass --allow-failures to accept the partial result."
        )
