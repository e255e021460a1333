"""Adapter scripts for external encoders (run in the encoder's own environment).

Each adapter is a standalone script speaking the protocol of :mod:`medsae.encode.external`;
it imports only NumPy, torch and the encoder's own code, never medsae, so it can be copied
into another environment. :func:`adapter_path` gives the file to run.
"""

from __future__ import annotations

from pathlib import Path


def adapter_path(name: str) -> Path:
    """Path of a shipped adapter script, e.g. ``adapter_path("biomedparse")``."""
    path = Path(__file__).with_name(f"{name}_adapter.py")
    if not path.is_file():
        known = sorted(
            p.name.removesuffix("_adapter.py") for p in Path(__file__).parent.glob("*_adapter.py")
        )
        raise FileNotFoundError(f"no adapter named {name!r}; shipped adapters: {', '.join(known)}")
    return path
