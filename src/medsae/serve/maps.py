"""The browser's feature-map route: ``GET /api/slices/{slice_id}/map?latent=J`` -> PNG.

The PNG is a transparent RGBA overlay at the stored image size (colours and alpha in
:mod:`medsae.maps.render`); the page lays it over the slice image with an opacity slider and
a colour bar. Response headers say whether the map is exact (``X-Map-Exact``,
``X-Map-Label``: ``exact`` / ``approximate``), how it was made (``X-Map-Method``), the value
at the ends of the colour bar (``X-Map-Vmax``), the latent's activation and whether it fires
on the slice (``X-Map-Fires``: ``false`` when its code is 0, below its threshold; the browser
then labels the map "does not fire").

Errors: 404 for an unknown slice id, 422 for a latent out of range or an encoder without
feature maps (the message names the encoder and the pooling that would work).
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response

from medsae.errors import MedsaeError
from medsae.maps.render import colour_bar_css, overlay_png

if TYPE_CHECKING:
    from medsae.frontend.view import WorkspaceView
    from medsae.maps.service import MapMaker

MAP_HEADERS = (
    "X-Map-Exact",
    "X-Map-Label",
    "X-Map-Method",
    "X-Map-Vmax",
    "X-Map-Activation",
    "X-Map-Fires",
)


def map_router(view: WorkspaceView) -> APIRouter:
    """Routes serving feature maps of the view's SAE (a :class:`MapMaker` made on first use and
    kept in ``app.state.map_maker``; set it beforehand to use another encoder)."""
    router = APIRouter()
    lock = threading.Lock()

    def maker(request: Request) -> MapMaker:
        state: Any = request.app.state
        with lock:
            if getattr(state, "map_maker", None) is None:
                from medsae.maps.service import MapMaker  # torch: on the first map only

                state.map_maker = MapMaker(view.ws, view.encoder, view.run, device=view.device)
            made: MapMaker = state.map_maker
        return made

    @router.get(
        "/api/slices/{slice_id}/map",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, 404: {}, 422: {}},
    )
    def slice_map(
        request: Request,
        slice_id: str,
        latent: int = Query(..., description="The SAE latent (feature id) to map."),
    ) -> Response:
        """The feature map of ``latent`` on a slice, as a transparent PNG overlay."""
        row = view.row_of.get(slice_id)
        if row is None:
            raise HTTPException(404, f"slice {slice_id!r} not found in the slice table")
        if not 0 <= latent < view.n_latents:  # before any array sees it (no overflow)
            raise HTTPException(
                422, f"latent {latent} is outside 0..{view.n_latents - 1} (this SAE's latents)"
            )
        heavy = getattr(request.app.state, "heavy", None)
        try:
            with heavy or contextlib.nullcontext():  # a bounded number of maps at once
                smap = maker(request).slice_map(int(row), int(latent))
        except MedsaeError as e:
            raise HTTPException(422, str(e)) from e
        headers = {**smap.headers(), "Access-Control-Expose-Headers": ", ".join(MAP_HEADERS)}
        headers["Cache-Control"] = "max-age=3600"
        return Response(overlay_png(smap.values), media_type="image/png", headers=headers)

    @router.get("/api/maps/colour-bar", include_in_schema=False)
    def colour_bar() -> dict[str, str]:
        """The CSS gradient of the overlay's colour map."""
        return {"css": colour_bar_css()}

    return router
