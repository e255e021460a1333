"""The one JSON cleaner: what a stage writes to JSON and what a front end answers in JSON.

:func:`json_safe` turns the values that come out of numpy and pandas into plain JSON values:
numpy scalars become Python numbers (and booleans), arrays and tuples become lists, mapping
keys become strings, and every missing value (NaN, the infinities, ``None``, ``pd.NA``,
``pd.NaT``) becomes ``None`` (``null``), which every JSON reader accepts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd


def json_safe(obj: Any) -> Any:
    """A JSON-safe copy of ``obj`` (see the module docstring); other values are kept as they
    are (a writer's ``default=`` decides how to spell them)."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return [json_safe(v) for v in obj.tolist()]
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if obj is None or obj is pd.NA or obj is pd.NaT:
        return None
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
