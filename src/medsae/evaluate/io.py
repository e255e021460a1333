"""File names and readers of the evaluate and rank stages' artifacts (the one place for them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RANKING = "ranking.json"
"""``WS/ranking/ranking.json``: ``best`` ({encoder, run}), the order and the rule used."""


def read_ranking(ranking_dir: Path) -> dict[str, Any]:
    """``ranking.json`` of a ranking folder as a dict; ``{}`` when absent or unreadable."""
    try:
        data = json.loads((Path(ranking_dir) / RANKING).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
