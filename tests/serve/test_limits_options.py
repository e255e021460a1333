"""``medsae serve``'s limit options reach the app; a limit that is not positive is named."""

from __future__ import annotations

import sys
from typing import Any

import pytest

import medsae.serve as serve_pkg
from medsae.cli import main
from medsae.data.query_limits import MiB, QueryLimits
from medsae.serve.limits import HEAVY_WORKERS, UPLOAD_LIMIT, ServeLimits


def test_options_map_to_the_limits_and_none_keeps_each_default() -> None:
    assert ServeLimits.from_options() == ServeLimits()
    limits = ServeLimits.from_options(upload_mib=2, max_pixels=1000, heavy_workers=1)
    assert limits.upload_limit == 2 * MiB
    assert limits.query_limits.max_pixels == 1000
    assert limits.query_limits.max_voxels == QueryLimits().max_voxels
    assert limits.heavy_workers == 1 and limits.heavy_wait_s == ServeLimits().heavy_wait_s
    assert (
        ServeLimits().upload_limit == UPLOAD_LIMIT and ServeLimits().heavy_workers == HEAVY_WORKERS
    )


def test_the_command_line_passes_its_limits_to_the_app(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, Any] = {}

    def fake_serve(workspace: Any, **kwargs: Any) -> None:
        seen.update(kwargs)

    monkeypatch.setattr(serve_pkg, "serve", fake_serve)
    argv = ["medsae", "serve", str(tmp_path), "--upload-mib", "3", "--max-voxels", "5000"]
    monkeypatch.setattr(sys, "argv", [*argv, "--heavy-workers", "2", "--heavy-wait-s", "1.5"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 0
    limits = seen["limits"]
    assert limits.upload_limit == 3 * MiB and limits.query_limits.max_voxels == 5000
    assert limits.heavy_workers == 2 and limits.heavy_wait_s == 1.5


def test_a_limit_that_is_not_positive_is_named(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["medsae", "serve", str(tmp_path), "--heavy-workers", "0"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--heavy-workers 0" in err and "positive" in err and "Traceback" not in err
