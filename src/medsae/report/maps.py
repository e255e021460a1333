"""Feature maps and localisation scores in the report's feature cards.

Each card shows, for its first ``n_slices`` top-activating slices, the feature's pixel map
(:class:`medsae.maps.MapMaker`) blended over the slice (:func:`medsae.maps.render.composite`),
written as PNG files into the report's ``img/`` folder like the other slice images, with
"exact" or "approximate" beside every map; and a localisation line when ``features.parquet``
has the ``pointing`` / ``energy_in_mask`` columns of the interpret stage.

Where maps cannot be made (no SAE checkpoint, an encoder without spatial feature maps, an
encoder that cannot be rebuilt from its embedding store) or the localisation scores were not
computed (no pixel label maps, switched off, no named target), the card says so and why.
"""

from __future__ import annotations

import html
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from medsae.data.io import LABEL_MAPS_FLAG, has_label_maps
from medsae.errors import MedsaeError
from medsae.frontend.view import WorkspaceView
from medsae.maps.render import colour_bar_css, composite

MAP_SLICES = 3
"""Default number of top slices per feature card that get a map overlay."""

LOCALISATION_KEYS = ("pointing", "energy_in_mask")
"""``features.parquet`` columns that carry a feature's localisation scores."""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any, digits: int = 2) -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "–"
    return f"{x:.{digits}f}" if math.isfinite(x) else "–"


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _missing(text: str) -> str:
    return f'<p class="missing">{_esc(text)}</p>'


class CardMaps:
    """Map overlays and localisation lines of the feature cards of one report.

    Parameters
    ----------
    view:
        The workspace view the report shows (its encoder and run).
    out:
        The report folder being written (overlays go to ``out/img/``).
    thumb_size:
        Pixel size of the overlay images.
    n_slices:
        Top slices per card that get an overlay (0: none).
    maker:
        A :class:`medsae.maps.MapMaker` to use instead of one built for the view's SAE (its
        encoder rebuilt from the embedding store).
    """

    def __init__(
        self,
        view: WorkspaceView,
        out: Path,
        thumb_size: int = 128,
        n_slices: int = MAP_SLICES,
        maker: Any = None,
    ) -> None:
        self.view = view
        self.out = Path(out)
        self.thumb_size = int(thumb_size)
        self.n_slices = max(int(n_slices), 0)
        self._maker = maker
        self._checked = False
        self._reason: str | None = None
        self._made: dict[tuple[int, int], Any] = {}  # (latent, row) -> SliceMap
        self.labels: set[str] = set()  # "exact" / "approximate" of the maps shown
        self.methods: set[str] = set()
        self.written = 0

    # ------------------------------------------------------------------ maps
    def reason(self) -> str | None:
        """Why no map can be made for this report (None when maps can be made)."""
        if not self._checked:
            self._checked = True
            self._reason = self._find_reason()
        return self._reason

    def _find_reason(self) -> str | None:
        if self.n_slices == 0:
            return "switched off (map_slices = 0)"
        if self.view.encoder is None or self.view.run is None:
            return "no SAE run in this workspace"
        try:
            if self._maker is None:
                from medsae.maps.service import MapMaker

                self._maker = MapMaker(
                    self.view.ws, self.view.encoder, self.view.run, device=self.view.device
                )
            from medsae.encode.spatial import require_spatial

            _ = self._maker.sae
            require_spatial(self._maker.spatial_encoder)
        except MedsaeError as e:
            return str(e)
        except Exception as e:  # an encoder that cannot be rebuilt here: the report still builds
            return f"the encoder could not be rebuilt ({type(e).__name__}: {e})"
        return None

    def prepare(self, tops: dict[int, list[int]], batch_size: int = 32) -> None:
        """Make the maps of every card at once (``tops``: latent -> its top rows): one
        batched forward pass of the encoder per ``batch_size`` slices instead of one per
        slice. Maps that fail here are made (or their error reported) one by one later."""
        if self.reason() is not None:
            return
        from medsae.maps.attribution import latent_maps, to_pixels
        from medsae.maps.service import SliceMap

        wanted: dict[int, list[int]] = {}
        for latent, rows in tops.items():
            for row in rows[: self.n_slices]:
                wanted.setdefault(int(row), []).append(int(latent))
        order = sorted(wanted)
        images = self._maker.images
        size = int(images.shape[1])
        for b0 in range(0, len(order), batch_size):
            batch = order[b0 : b0 + batch_size]
            try:
                feats = self._maker.spatial_encoder.spatial_features(np.asarray(images[batch]))
            except MedsaeError:
                continue
            for k, row in enumerate(batch):
                try:
                    lm = latent_maps(self._maker.sae, feats.select(k), wanted[row])
                except MedsaeError:
                    continue
                for t, latent in enumerate(wanted[row]):
                    self._made[(latent, row)] = SliceMap(
                        row=row,
                        latent=latent,
                        values=to_pixels(lm.grid[0, t], size),
                        activation=float(lm.activation[0, t]),
                        pre_activation=float(lm.pre_activation[0, t]),
                        residual=float(lm.residual[0, t]),
                        exact=lm.exact,
                        method=lm.method,
                    )

    def _overlay(self, latent: int, row: int) -> tuple[str, Any]:
        """Write the overlay of ``latent`` on slice ``row``; (relative path, its SliceMap)."""
        from PIL import Image

        smap = self._made.pop((int(latent), int(row)), None)
        if smap is None:
            smap = self._maker.slice_map(int(row), int(latent))
        image = np.asarray(self._maker.images[int(row)])
        rgb = composite(image, smap.values)
        pic = Image.fromarray(rgb)
        if pic.size != (self.thumb_size, self.thumb_size):
            pic = pic.resize((self.thumb_size, self.thumb_size), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        pic.save(buf, format="PNG")
        name = f"img/map-{int(latent)}-{int(row)}.png"
        (self.out / "img").mkdir(parents=True, exist_ok=True)
        (self.out / name).write_bytes(buf.getvalue())
        self.written += 1
        return name, smap

    def overlays(self, latent: int, rows: list[int]) -> str:
        """The card's map strip for its top ``rows`` (the first ``n_slices`` of them), or a
        note saying why there is none."""
        reason = self.reason()
        if reason is not None:
            return _missing(f"Feature maps not available: {reason}.")
        tiles, labels, problems = [], set(), []
        for row in rows[: self.n_slices]:
            try:
                name, smap = self._overlay(latent, row)
            except MedsaeError as e:
                problems.append(str(e))
                continue
            labels.add(smap.label)
            self.labels.add(smap.label)
            self.methods.add(smap.method)
            sid = _esc(self.view.table.at[int(row), "slice_id"])
            tag = "APPROXIMATE" if not smap.exact else "exact"
            silent = "" if smap.fires else " · does not fire"
            tiles.append(
                f'<figure class="tile map" title="{sid}"><img src="{name}" '
                f'alt="feature map of #{int(latent)} on {sid} ({smap.label})">'
                f"<figcaption>{tag} · act {_num(smap.activation)}{silent}</figcaption></figure>"
            )
        if not tiles:
            why = problems[0] if problems else "the feature has no top slice"
            return _missing(f"Feature maps not available: {why}.")
        head = (
            "Feature maps (approximate) on the top slices"
            if "approximate" in labels
            else "Feature maps (exact) on the top slices"
        )
        return f'<p class="muted">{head}:</p><div class="strip maps">{"".join(tiles)}</div>'

    # ------------------------------------------------------------------ localisation
    def _block(self) -> dict[str, Any] | None:
        block = (self.view.scores or {}).get("localisation")
        return block if isinstance(block, dict) else None

    def _has_columns(self) -> bool:
        features = self.view.features_file
        return features is not None and all(c in features.columns for c in LOCALISATION_KEYS)

    def _workspace_reason(self) -> str | None:
        """Why no feature of this run has localisation scores (None when some may)."""
        block = self._block()
        if block is not None and block.get("status") not in (None, "computed"):
            return str(block.get("reason") or block.get("status"))
        if self._has_columns():
            return None
        if not has_label_maps(self.view.ws.slices):
            return f"no pixel label maps in this workspace; prepare it with `{LABEL_MAPS_FLAG}`"
        return "features.parquet has no localisation columns; run `medsae interpret`"

    def localisation(self, feature: dict[str, Any]) -> str:
        """The card's localisation line: pointing game and energy inside the mask beside the
        Gaussian-blob baseline, or why they are missing."""
        reason = self._workspace_reason()
        if reason is None:
            if _finite(feature.get("pointing")) or _finite(feature.get("energy_in_mask")):
                target = str(feature.get("localisation_target") or "").replace(",", ", ")
                n = feature.get("localisation_slices")
                where = f"target {_esc(target or '–')}"
                if n is not None and _finite(n):
                    where += f", {int(float(n))} held-out slices"
                return (
                    f'<p class="muted loc">localisation ({where}): pointing '
                    f"<b>{_num(feature.get('pointing'))}</b> "
                    f"(blob {_num(feature.get('pointing_baseline'))}) · energy in mask "
                    f"<b>{_num(feature.get('energy_in_mask'))}</b> "
                    f"(blob {_num(feature.get('energy_in_mask_baseline'))})</p>"
                )
            if not str(feature.get("localisation_target") or ""):
                reason = "its concept and description name no structure"
            else:
                target = str(feature.get("localisation_target")).replace(",", ", ")
                reason = f"no held-out slice where it fires with {target} in view"
        return f'<p class="missing loc">localisation: not computed ({_esc(reason)}).</p>'

    # ------------------------------------------------------------------ legend
    def legend(self) -> str:
        """The note above the cards: the colour bar, whether the maps are exact, and the
        localisation summary of ``scores.json`` beside its baseline (call it after the
        cards' overlays, which tell whether the maps are exact)."""
        parts = []
        if self.n_slices and self.reason() is None:
            kind = (
                "approximate (not an exact split)"
                if "approximate" in self.labels
                else "exact"
                if self.labels
                else ""
            )
            how = "; ".join(sorted(self.methods))
            parts.append(
                '<p class="muted">Feature maps: each latent\'s pre-activation split over the '
                "image (docs/maps.md), scaled to its own largest |value| "
                f'<span style="display:inline-block;width:120px;height:10px;'
                f'vertical-align:middle;background:{colour_bar_css()}"></span> '
                "blue negative, red to yellow positive"
                + (f"; {_esc(kind)}: {_esc(how)}" if kind else "")
                + ".</p>"
            )
        block = self._block()
        if block is not None and block.get("status") == "computed":
            parts.append(
                '<p class="muted">Localisation on held-out slices (medians over '
                f"{_esc(block.get('n_features_scored', '–'))} features scored): pointing game "
                f"<b>{_num(block.get('pointing_game'))}</b> against "
                f"{_num(block.get('pointing_game_baseline'))} for a centred Gaussian blob; "
                f"energy inside the mask <b>{_num(block.get('energy_in_mask'))}</b> against "
                f"{_num(block.get('energy_in_mask_baseline'))}.</p>"
            )
        else:
            reason = self._workspace_reason()
            if reason is not None:
                parts.append(_missing(f"Localisation scores not computed: {reason}."))
        return "".join(parts)
