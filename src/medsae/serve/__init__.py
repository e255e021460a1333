"""medsae.serve: the local web feature browser (FastAPI app + one static page)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["create_app", "serve"]


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
) -> None:
    """Serve the browser for ``workspace`` until interrupted (bound to 127.0.0.1 by default)."""
    import uvicorn

    from medsae.progress import console
    from medsae.view import WorkspaceView

    view = WorkspaceView(workspace, encoder=encoder, run=run)
    app = create_app(view)
    console.print(
        f"medsae browser for {view.ws.root} ({view.encoder} / {view.run}) at http://{host}:{port}/"
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
