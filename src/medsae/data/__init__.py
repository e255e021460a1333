"""medsae.data: volumes -> slices (prepare), subject-level splits (split), the phantom dataset.

Library entry points::

    from medsae.data import make_phantom, prepare, split
    from medsae.data import PhantomConfig, PrepareConfig, SplitConfig
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from medsae.data.config import PhantomConfig, PrepareConfig, SplitConfig

if TYPE_CHECKING:
    from medsae.data.phantom import make_phantom
    from medsae.data.prepare_stage import prepare
    from medsae.data.split_stage import split

__all__ = ["PhantomConfig", "PrepareConfig", "SplitConfig", "make_phantom", "prepare", "split"]


def __getattr__(name: str) -> Any:
    # Lazy imports keep `import medsae.data` (and `medsae --help`) light.
    if name == "make_phantom":
        from medsae.data.phantom import make_phantom

        return make_phantom
    if name == "prepare":
        from medsae.data.prepare_stage import prepare

        return prepare
    if name == "split":
        from medsae.data.split_stage import split

        return split
    raise AttributeError(f"module 'medsae.data' has no attribute {name!r}")
