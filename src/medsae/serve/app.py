"""The feature browser: a FastAPI app with a JSON API under ``/api`` and one static page.

Routes (documented by ``/openapi.json``):

* ``GET /api/info``                                workspace, SAE run, counts, capabilities
* ``GET /api/features``                            features, sortable and filterable
* ``GET /api/features/{latent}``                   one feature: top slices, histogram, profile...
* ``GET /api/slices/{slice_id}``                   one slice: metadata and fingerprint
* ``GET /api/slices/{slice_id}/image.png``         the slice image (PNG, cached)
* ``GET /api/slices/{slice_id}/similar``           slices with similar fingerprints
* ``GET /api/slices/{slice_id}/map?latent=J``      a feature's map on the slice (PNG overlay)
* ``GET /api/search?q=...``                        text search
* ``POST /api/search/image``                       search by an uploaded PNG/JPEG/DICOM/NIfTI

Ids are looked up in the slice table and the feature table, never joined into file paths.
Uploads are limited in size (413), recognised by content (415) and validated (400).
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import threading
from collections.abc import Callable
from importlib import resources
from typing import Any, Literal

import numpy as np
import pandas as pd
from fastapi import FastAPI, File, HTTPException, Path, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response

from medsae import __version__
from medsae.data.query_image import QueryImageError
from medsae.data.query_limits import QueryLimits
from medsae.errors import InputError, MedsaeError
from medsae.frontend.search import SearchBackend, SearchHits, SearchUnavailable, WorkspaceSearch
from medsae.frontend.view import WorkspaceView
from medsae.interpret.profiles import ProfileIndex, read_profiles
from medsae.serve import models as m
from medsae.serve.io import STATIC_PAGE
from medsae.serve.limits import HEAVY_WAIT_S, HEAVY_WORKERS, UPLOAD_LIMIT, BodySizeLimit, HeavyWork
from medsae.serve.maps import map_router

UPLOAD_PLANE = "axial"  # the plane of an uploaded volume shown and searched (its middle slice)
UPLOAD_STATUS = {"unreadable": 400, "unsupported": 415, "too_large": 413}
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
SortKey = Literal[
    "latent",
    "frequency",
    "mean_activation",
    "max_activation",
    "detection_balanced_accuracy",
    "concept_auroc",
    "seed_cosine",
    "seed_found",
    "organ_ap",
]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": m.ErrorOut}}


def _static(name: str) -> bytes:
    return resources.files("medsae.serve").joinpath("static", name).read_bytes()


def create_app(
    workspace: str | pathlib.Path | WorkspaceView,
    backend: SearchBackend | None = None,
    upload_limit: int = UPLOAD_LIMIT,
    load_text_model: bool = True,
    query_limits: QueryLimits | None = None,
    heavy_workers: int = HEAVY_WORKERS,
    heavy_wait_s: float = HEAVY_WAIT_S,
) -> FastAPI:
    """The browser app for a workspace (or an already opened :class:`WorkspaceView`).

    ``backend`` replaces the default :class:`WorkspaceSearch` over the view (tests plug in
    fakes). Uploaded images are prepared by :mod:`medsae.data.query_image`, as
    ``medsae search --image`` prepares them (a volume: the middle slice of ``UPLOAD_PLANE``),
    within ``query_limits`` (what a file may decode to; :class:`QueryLimits`' defaults).
    At most ``heavy_workers`` uploads and feature maps are computed at once; others wait
    up to ``heavy_wait_s`` seconds, then get 503 with ``Retry-After``.
    """
    view = workspace if isinstance(workspace, WorkspaceView) else WorkspaceView(workspace)
    search: SearchBackend = backend or WorkspaceSearch(view)
    limits = query_limits or QueryLimits()
    heavy = HeavyWork(heavy_workers, heavy_wait_s)
    # Nothing large is read before the app exists: the server listens at once. A
    # background thread opens the parts in the order the pages need them (the first page's
    # counts and feature table, which read a few columns and the codes' stored statistics;
    # then the slice table, the codes, the label totals of a feature page's enrichment, the
    # fingerprint index, the text retriever); a request that needs a part first waits for
    # it (each is built once, under its own lock), so answers never depend on the timing.
    _warm_up(view, search if load_text_model and isinstance(search, WorkspaceSearch) else None)
    pages = {STATIC_PAGE: _static(STATIC_PAGE)}
    assets = {name: _static(name) for name in STATIC_FILES}

    app = FastAPI(
        title="medsae feature browser",
        version=__version__,
        description="Browse the sparse-autoencoder features of a medsae workspace.",
        docs_url=None,  # the interactive docs pages load scripts from a CDN: schema only
        redoc_url=None,
    )
    app.add_middleware(BodySizeLimit, limit=upload_limit)
    app.state.heavy = heavy

    # the fields of a slice reference, read from the columns' arrays (a table row lookup
    # per result item would dominate the cost of a search answer; building every row's
    # reference at startup would cost seconds and a gigabyte at a million slices)
    ref_columns: list[tuple[Any, list[tuple[str, Any]]]] = []

    def ref(row: int, **extra: Any) -> m.SliceRef:
        if not ref_columns:  # the first answer with slices, once the table is open
            table = view.table
            cols = [c for c in ("modality", "plane", "subject_key", "split") if c in table]
            ref_columns.append((table["slice_id"].array, [(c, table[c].array) for c in cols]))
        ids, arrays = ref_columns[0]
        sid = str(ids[row])
        fields: dict[str, Any] = {c: _opt(arr[row]) for c, arr in arrays}
        url = f"/api/slices/{_quote(sid)}/image.png" if view.images is not None else None
        return m.SliceRef(slice_id=sid, image_url=url, **fields, **extra)

    def row_of(slice_id: str) -> int:
        row = view.row_of.get(slice_id)
        if row is None:
            raise HTTPException(404, f"slice {slice_id!r} not found in the slice table")
        return row

    profile_cache: list[ProfileIndex] = []

    def profiles() -> ProfileIndex:
        """The run's concept profiles, grouped by latent (read once; empty without them)."""
        if not profile_cache:
            found = None
            if view.encoder is not None and view.run is not None:
                with contextlib.suppress(MedsaeError):
                    found = read_profiles(view.ws.features(view.encoder, view.run))
            profile_cache.append(ProfileIndex(found))
        return profile_cache[0]

    def feature_out(latent: int) -> m.FeatureOut:
        return m.FeatureOut.model_validate(view.feature_row(latent))

    def hits_out(
        hits: SearchHits, query: str | None = None, kind: str | None = None
    ) -> m.SearchOut:
        items = [ref(r, score=float(s)) for r, s in zip(hits.rows, hits.scores, strict=False)]
        return m.SearchOut(
            query=query,
            method=hits.method,
            items=items,
            features=hits.features,
            upload_kind=kind,
            reading=getattr(hits, "reading", None),
        )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> Response:
        return Response(pages[STATIC_PAGE], media_type="text/html; charset=utf-8")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in assets:
            raise HTTPException(404, f"static file {name!r} not found")
        return Response(
            assets[name], media_type=STATIC_FILES[name], headers={"Cache-Control": "max-age=300"}
        )

    @app.get("/api/info", response_model=m.InfoOut)
    def info() -> m.InfoOut:
        features = view.feature_table
        concepts = sorted({str(c) for c in features.get("concept", []) if isinstance(c, str)})
        text_mode = search.text_mode() if isinstance(search, WorkspaceSearch) else "keyword"
        return m.InfoOut(
            workspace=str(view.ws.root),
            encoder=view.encoder,
            run=view.run,
            n_slices=view.n_slices,
            n_latents=view.n_latents,
            levels=view.levels,
            has_features=view.features_file is not None,
            text_search=text_mode,
            image_search=view.encoder is not None and not view.imported,
            counts=view.counts,
            concepts=concepts,
            upload_limit_bytes=upload_limit,
            organ_map=view.organ_latents is not None,
        )

    @app.get("/api/summary")
    def summary_side_by_side() -> dict[str, Any]:
        """The chosen SAE (mean ± sd over its seeds) beside the baseline dictionaries, from
        ``summary.json``; ``available`` false when the workspace has none."""
        from medsae.frontend.beside import read_summary, side_by_side

        found = read_summary(view.ws.root)
        return {"available": False} if found is None else {"available": True, **side_by_side(found)}

    @app.get("/api/features", response_model=m.FeatureListOut)
    def list_features(
        sort: SortKey = Query("frequency", description="Column to sort by."),
        order: Literal["asc", "desc"] = "desc",
        q: str | None = Query(
            None, max_length=200, description="Substring of the description or concept."
        ),
        concept: str | None = Query(None, max_length=200, description="Exact concept."),
        level: int | None = Query(None, description="Matryoshka level (prefix size)."),
        min_score: float | None = Query(None, description="Minimum detection balanced accuracy."),
        min_frequency: float | None = Query(None, ge=0, le=1),
        min_seed_cosine: float | None = Query(
            None, ge=0, le=1, description="Minimum best |cosine| in the other seeds (mean)."
        ),
        alive_only: bool = Query(True, description="Hide latents that never fire."),
        offset: int = Query(0, ge=0),
        limit: int = Query(100, ge=1, le=1000),
    ) -> m.FeatureListOut:
        # filters and the sort on the rows' positions and single columns: a page costs one
        # sort of one column, not copies of the whole table
        df = view.feature_table
        keep = np.ones(len(df), dtype=bool)
        if alive_only:
            keep &= df["frequency"].to_numpy() > 0
        if q:
            text = pd.Series("", index=df.index)
            for col in ("description", "concept"):
                if col in df.columns:
                    text = text + " " + df[col].fillna("").astype(str)
            keep &= text.str.contains(q, case=False, regex=False).to_numpy(dtype=bool)
        if concept and "concept" in df.columns:
            keep &= (df["concept"] == concept).fillna(False).to_numpy(dtype=bool)
        if level is not None:
            keep &= df["level"].to_numpy() == level
        if min_score is not None and "detection_balanced_accuracy" in df.columns:
            keep &= (df["detection_balanced_accuracy"] >= min_score).fillna(False).to_numpy(bool)
        if min_frequency is not None:
            keep &= df["frequency"].to_numpy() >= min_frequency
        if min_seed_cosine is not None:
            if "seed_cosine" in df:
                keep &= (df["seed_cosine"] >= min_seed_cosine).fillna(False).to_numpy(bool)
            else:
                keep[:] = False
        pos = np.flatnonzero(keep)
        if sort in df.columns:
            key = df[sort].iloc[pos].reset_index(drop=True)
            by = key.sort_values(ascending=order == "asc", kind="stable", na_position="last")
            pos = pos[by.index.to_numpy()]
        latents = df["latent"].to_numpy()[pos[offset : offset + limit]]
        items = [feature_out(int(j)) for j in latents]
        return m.FeatureListOut(total=len(pos), offset=offset, limit=limit, items=items)

    @app.get("/api/features/{latent}", response_model=m.FeatureDetailOut, responses=NOT_FOUND)
    def feature_detail(
        latent_id: str = Path(..., alias="latent"), top: int = Query(12, ge=1, le=64)
    ) -> m.FeatureDetailOut:
        latent = int(latent_id) if latent_id.isdigit() and len(latent_id) < 10 else -1
        if not 0 <= latent < view.n_latents:
            raise HTTPException(
                404, f"feature {latent_id!r} not found (this SAE has {view.n_latents} latents)"
            )
        rows, vals = view.activations(latent)
        act = dict(zip(rows.tolist(), vals.tolist(), strict=True))
        return m.FeatureDetailOut(
            feature=feature_out(latent),
            top=[ref(r, activation=act.get(r)) for r in view.top_rows(latent, top)],
            histogram=m.Histogram(**view.histogram(latent)),
            quantiles=[
                m.Quantile(
                    quantile=qd["quantile"],
                    activation=qd["activation"],
                    slice=ref(qd["row"], activation=qd["activation"]),
                )
                for qd in view.quantile_rows(latent)
            ],
            enrichment=[m.Enrichment(**e) for e in view.enrichment(latent)],
            profile=[m.ProfileRow(**p) for p in profiles().rows(latent)],
        )

    @app.get("/api/slices/{slice_id}", response_model=m.SliceDetailOut, responses=NOT_FOUND)
    def slice_detail(slice_id: str) -> m.SliceDetailOut:
        row = row_of(slice_id)
        return m.SliceDetailOut(
            slice=ref(row),
            metadata=view.slice_meta(row),
            fingerprint=[m.FingerprintItem(**f) for f in view.fingerprint(row)],
        )

    @app.get(
        "/api/slices/{slice_id}/image.png",
        responses={200: {"content": {"image/png": {}}}, **NOT_FOUND},
        response_class=Response,
    )
    def slice_image(slice_id: str, size: int | None = Query(None, ge=16, le=1024)) -> Response:
        row = row_of(slice_id)
        if view.images is None:
            raise HTTPException(404, "this workspace has no images.npy")
        return Response(
            view.slice_png(row, size),
            media_type="image/png",
            headers={"Cache-Control": "max-age=3600"},
        )

    @app.get("/api/slices/{slice_id}/similar", response_model=m.SearchOut, responses=NOT_FOUND)
    def slice_similar(slice_id: str, k: int = Query(12, ge=1, le=100)) -> m.SearchOut:
        row = row_of(slice_id)
        try:
            return hits_out(search.similar(row, k), query=slice_id)
        except SearchUnavailable as e:
            raise HTTPException(503, str(e)) from e

    @app.get("/api/search", response_model=m.SearchOut)
    def text_search(
        q: str = Query(..., min_length=1, max_length=300, description="A text query."),
        k: int = Query(12, ge=1, le=100),
    ) -> m.SearchOut:
        try:
            return hits_out(search.text(q, k), query=q)
        except SearchUnavailable as e:
            raise HTTPException(503, str(e)) from e

    @app.post(
        "/api/search/image",
        response_model=m.SearchOut,
        responses={
            400: {"model": m.ErrorOut},
            413: {"model": m.ErrorOut},
            415: {"model": m.ErrorOut},
        },
    )
    def image_search(
        file: UploadFile = File(..., description="A PNG, JPEG, DICOM or NIfTI file."),
        k: int = Query(12, ge=1, le=100),
    ) -> m.SearchOut:
        name = file.filename or "upload"
        data = file.file.read(upload_limit + 1)
        if len(data) > upload_limit:
            problem = f"upload larger than the limit upload_bytes = {upload_limit:,}"
            limit = ("upload_bytes", len(data), upload_limit)
            raise UploadRefused(QueryImageError(name, problem, "too_large", limit))
        with heavy:  # decoding and encoding: a bounded number at once
            query_format = dataclasses.replace(view.query_format, limits=limits)
            try:
                query = query_format.prepare(data, plane=UPLOAD_PLANE, name=name)
            except QueryImageError as e:
                raise UploadRefused(e) from e
            try:
                hits = search.image(query.image, k)
            except SearchUnavailable as e:
                raise HTTPException(503, str(e)) from e
        return hits_out(hits, query=file.filename, kind=query.kind)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(UploadRefused)
    async def upload_refused(request: Request, exc: UploadRefused) -> JSONResponse:
        err = exc.error
        body: dict[str, Any] = {"detail": str(err)}
        if err.limit is not None:  # the limit passed, its value and what it allows
            body.update(zip(("limit", "value", "allowed"), err.limit, strict=True))
        return JSONResponse(body, status_code=UPLOAD_STATUS[err.reason])

    @app.exception_handler(MedsaeError)
    async def artifact_error(request: Request, exc: MedsaeError) -> JSONResponse:
        # a part opened after start (the codes, the index, ...) that is damaged: the message
        # names the file and the fix, as the command line says it
        status = 400 if isinstance(exc, InputError) else 500
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        # anything else is still a JSON answer (the server logs the traceback)
        return JSONResponse(
            {"detail": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500
        )

    app.include_router(map_router(view))  # GET /api/slices/{id}/map?latent= (medsae.serve.maps)
    return app


class UploadRefused(Exception):
    """An upload that cannot be used (answered 400, 413 or 415 by its reason)."""

    def __init__(self, error: QueryImageError) -> None:
        super().__init__(str(error))
        self.error = error


def _warm_up(view: WorkspaceView, search: WorkspaceSearch | None) -> threading.Thread:
    """Open the parts of ``view`` (and ``search``'s index and text retriever) in a daemon
    thread, in the order the pages ask for them."""
    parts: list[Callable[[], object]] = [
        lambda: view.counts,  # the first page: /api/info and /api/features
        lambda: view.feature_table,
        lambda: view.row_of,  # slice pages, every answer with slices
        lambda: view.codes_csc,  # feature pages
        lambda: view._label_totals,  # a feature page's enrichment
    ]
    if search is not None:
        parts += [search.index, search.text_ready]  # similar slices, text search

    def run() -> None:
        for part in parts:
            # a part that fails to open is left unopened: the request that needs it raises
            with contextlib.suppress(Exception):
                part()

    thread = threading.Thread(target=run, name="medsae-serve-warm-up", daemon=True)
    thread.start()
    return thread


def _opt(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and v != v):
        return None
    return str(v)


def _quote(slice_id: str) -> str:
    from urllib.parse import quote

    return quote(slice_id, safe=":")
