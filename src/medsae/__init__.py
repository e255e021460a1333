"""medsae: sparse autoencoders that make medical-imaging foundation models interpretable."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("medsae")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
