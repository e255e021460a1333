"""Maps of single slices on demand (the browser's map route and the report's overlays).

:class:`MapMaker` uses the run's SAE and the encoder rebuilt from its embedding store (loaded
once per process, :mod:`medsae.sae.run_models`) and keeps the feature maps of the last few
slices, so that switching latents on one slice costs only the attribution (a few
milliseconds), not another forward pass.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from medsae.encode.spatial import SpatialEncoder, SpatialFeatures
from medsae.errors import InputError
from medsae.evaluate.io import resolve_run
from medsae.maps.attribution import check_latents, latent_maps, sae_name, to_pixels
from medsae.sae.run_models import RunModels, run_models
from medsae.workspace import Workspace


@dataclass(frozen=True)
class SliceMap:
    """One latent's pixel map on one slice, with what every display of it states."""

    row: int
    latent: int
    values: np.ndarray  # float32 (S, S): contribution per pixel (density)
    activation: float
    pre_activation: float
    residual: float  # pre-activation minus (sum of the grid + bias); 0 when exact
    exact: bool
    method: str

    @property
    def label(self) -> str:
        """``exact`` or ``approximate``."""
        return "exact" if self.exact else "approximate"

    @property
    def fires(self) -> bool:
        """Whether the latent fires on the slice (its code is above 0: the pre-activation
        passed the latent's threshold). A map of a latent that does not fire shows what would
        push it up, not where it fires; every display says so."""
        return self.activation > 0

    @property
    def vmax(self) -> float:
        """``max |values|``: the value at the ends of the colour bar."""
        return float(np.max(np.abs(self.values))) if self.values.size else 0.0

    def headers(self) -> dict[str, str]:
        """What an HTTP response carrying the map's PNG says about it."""
        return {
            "X-Map-Exact": "true" if self.exact else "false",
            "X-Map-Label": self.label,
            "X-Map-Method": self.method,
            "X-Map-Vmax": f"{self.vmax:.6g}",
            "X-Map-Activation": f"{self.activation:.6g}",
            "X-Map-Fires": "true" if self.fires else "false",
        }


class MapMaker:
    """Per-slice feature maps of one SAE of a workspace.

    Parameters
    ----------
    workspace, encoder, run:
        The SAE to explain (``medsae.evaluate.io.resolve_run`` when ``encoder`` or ``run`` is None).
    device:
        Device of the rebuilt encoder (see :mod:`medsae.device`); the SAE stays on the CPU.
    cache_slices:
        How many slices' feature maps to keep.
    spatial_encoder:
        An encoder to use instead of rebuilding it from the store.
    """

    def __init__(
        self,
        workspace: str | Workspace,
        encoder: str | None = None,
        run: str | None = None,
        device: str = "auto",
        cache_slices: int = 16,
        spatial_encoder: SpatialEncoder | None = None,
    ) -> None:
        self.ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
        self.encoder, self.run = resolve_run(self.ws, encoder, run)
        self.device = device
        self.cache_slices = cache_slices
        self._enc = spatial_encoder
        self._models: RunModels | None = None
        self._images: np.ndarray | None = None
        self._cache: OrderedDict[int, SpatialFeatures] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def models(self) -> RunModels:
        """The run's encoder and SAE, loaded once per process (:mod:`medsae.sae.run_models`:
        the browser's image search and the report share them)."""
        if self._models is None:
            self._models = run_models(self.ws, self.encoder, self.run, self.device)
        return self._models

    @property
    def sae(self) -> Any:
        return self.models.sae

    @property
    def spatial_encoder(self) -> SpatialEncoder:
        """The encoder (rebuilt from the store on first use); InputError when it has no maps."""
        if self._enc is None:
            from medsae.encode.spatial import require_spatial

            self._enc = require_spatial(self.models.encoder)
        return self._enc

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            from medsae.data.table import open_images

            self._images = open_images(self.ws.slices)
        return self._images

    @property
    def token_store(self) -> Any:
        """The run's token store when its SAE was trained on tokens, else None."""
        if not hasattr(self, "_tokens"):
            from medsae.encode.tokens import TokenStore, is_token_store

            folder = self.ws.embeddings(self.encoder)
            self._tokens = TokenStore(folder) if is_token_store(folder) else None
        return self._tokens

    def n_latents(self) -> int:
        return int(self.sae.cfg.n_latents)

    def features_of(self, row: int) -> SpatialFeatures:
        """Feature maps of slice ``row`` (cached)."""
        n = len(self.images)
        if not 0 <= int(row) < n:
            raise InputError("slice", f"row {row} is outside 0..{n - 1} of {self.ws.slices}")
        with self._lock:
            hit = self._cache.get(int(row))
            if hit is not None:
                self._cache.move_to_end(int(row))
                return hit
        feats = self.spatial_encoder.spatial_features(
            np.asarray(self.images[int(row) : int(row) + 1])
        )
        with self._lock:
            self._cache[int(row)] = feats
            while len(self._cache) > self.cache_slices:
                self._cache.popitem(last=False)
        return feats

    def slice_map(self, row: int, latent: int) -> SliceMap:
        """The pixel map of ``latent`` on slice ``row`` at the stored image size.

        Raises InputError for a latent out of range (naming the SAE) or an encoder without
        feature maps (naming it and the pooling that would work).
        """
        check_latents([latent], self.n_latents(), sae_name(self.sae))
        if self.token_store is not None:  # a token SAE: its own codes, no attribution
            from medsae.maps.token_map import native_token_map

            n = self.token_store.n_slices
            if not 0 <= int(row) < n:
                raise InputError("slice", f"row {row} is outside 0..{n - 1} of {self.ws.slices}")
            return native_token_map(
                self.token_store, self.sae, row, latent, int(self.images.shape[1])
            )
        feats = self.features_of(row)
        lm = latent_maps(self.sae, feats, [int(latent)])
        size = int(self.images.shape[1])
        return SliceMap(
            row=int(row),
            latent=int(latent),
            values=to_pixels(lm.grid[0, 0], size),
            activation=float(lm.activation[0, 0]),
            pre_activation=float(lm.pre_activation[0, 0]),
            residual=float(lm.residual[0, 0]),
            exact=lm.exact,
            method=lm.method,
        )
