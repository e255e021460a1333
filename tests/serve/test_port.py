"""A second ``medsae serve`` on a port already taken: one line naming the port, exit status 2."""

from __future__ import annotations

import socket
import sys

import pytest

from medsae.cli import main
from medsae.workspace import Workspace
from tests.support.synthetic import SyntheticTruth


def test_a_taken_port_is_one_clear_line(
    bare_workspace: tuple[Workspace, SyntheticTruth],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ws, _ = bare_workspace
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as first:  # the first server
        first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        first.bind(("127.0.0.1", 0))
        first.listen()
        port = first.getsockname()[1]
        monkeypatch.setattr(sys, "argv", ["medsae", "serve", str(ws.root), "--port", str(port)])
        with pytest.raises(SystemExit) as exit_:
            main()
    assert exit_.value.code == 2
    err = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert "Traceback" not in err and f"127.0.0.1:{port} is already in use" in err
    assert f"--port {port}" in err
