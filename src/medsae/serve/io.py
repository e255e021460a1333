"""File names of the feature browser's own files (its static page), defined once."""

from __future__ import annotations

STATIC_PAGE = "browser.html"
"""The browser's single page, shipped in ``medsae/serve/static/``."""
