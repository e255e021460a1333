"""medsae.serve: the local web feature browser (FastAPI app + one static page)."""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsae.errors import InputError
from medsae.serve.limits import ServeLimits

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["ServeLimits", "bind_port", "create_app", "serve"]


def create_app(workspace: Any, **kwargs: Any) -> FastAPI:
    """The browser app for a workspace (see :func:`medsae.serve.app.create_app`)."""
    from medsae.serve.app import create_app as _create

    return _create(workspace, **kwargs)


def serve(
    workspace: str | Path,
    host: str = "127.0.0.1",
    port: int = 8765,
    encoder: str | None = None,
    run: str | None = None,
    device: str = "auto",
    limits: ServeLimits | None = None,
) -> None:
    """Serve the browser for ``workspace`` until interrupted (bound to 127.0.0.1 by default).

    ``limits``: what an upload may be and decode to and how many heavy requests run at once
    (:class:`~medsae.serve.limits.ServeLimits`; its defaults when None).

    ``device`` places the query-image encoder and the feature maps' encoder (checked here,
    before the port is taken: CUDA without a GPU is a
    :class:`~medsae.device.DeviceUnavailable`).

    The port is taken before the workspace is read: a port in use (a second ``medsae serve``)
    is an :class:`~medsae.errors.InputError` naming it, at once.
    """
    import uvicorn

    from medsae.device import resolve_device
    from medsae.frontend.view import WorkspaceView
    from medsae.progress import console

    resolve_device(device, "--device")
    sock = bind_port(host, port)
    try:
        view = WorkspaceView(workspace, encoder=encoder, run=run, device=device)
        app = create_app(view, **(limits or ServeLimits()).app_options())
        console.print(
            f"medsae browser for {view.ws.root} ({view.encoder} / {view.run}) at "
            f"http://{host}:{port}/"
        )
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


def bind_port(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host:port`` (bound as uvicorn binds it), or an InputError
    naming the port when it is in use or cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # claimed now: another bind to this port fails from here on
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise InputError(
                f"--port {port}",
                f"{host}:{port} is already in use (another `medsae serve`?); stop it or pass "
                "another --port",
            ) from None
        raise InputError(
            f"--host {host} --port {port}", f"cannot listen there ({e.strerror or e})"
        ) from None
    sock.set_inheritable(True)
    return sock
