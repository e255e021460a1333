"""medsae.frontend: what the report, the browser and the library's queries share over a
finished workspace.

* :class:`WorkspaceView` (:mod:`.view`, with the feature questions of :mod:`.features`):
  lazy, read-only access to one SAE run's artifacts;
* :class:`WorkspaceSearch` (:mod:`.search`): text, similar-slice and image search over an
  open view;
* :func:`run_models`: the run's encoder and SAE, loaded once per process
  (:mod:`medsae.sae.run_models`, below every stage that uses them), shared by the image
  search, the feature maps and the library's ``search_similar``.

The front end reads what the stages wrote through their ``io`` modules and analyses it with
the stages' own functions; the stages never import it (``tests/test_import_graph.py``).
Names resolve on first use: importing the package imports no model code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medsae._lazy import lazy_exports

if TYPE_CHECKING:
    from medsae.frontend.search import SearchBackend, SearchHits, SearchUnavailable, WorkspaceSearch
    from medsae.frontend.view import WorkspaceView
    from medsae.sae.run_models import RunModels, run_models

_EXPORTS = {
    "WorkspaceView": "medsae.frontend.view",
    "WorkspaceSearch": "medsae.frontend.search",
    "SearchBackend": "medsae.frontend.search",
    "SearchHits": "medsae.frontend.search",
    "SearchUnavailable": "medsae.frontend.search",
    "RunModels": "medsae.sae.run_models",
    "run_models": "medsae.sae.run_models",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "RunModels",
    "SearchBackend",
    "SearchHits",
    "SearchUnavailable",
    "WorkspaceSearch",
    "WorkspaceView",
    "run_models",
]
