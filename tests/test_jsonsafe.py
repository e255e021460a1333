"""The one JSON cleaner: numpy and pandas values become plain JSON values."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from medsae.jsonsafe import json_safe


def test_numpy_and_missing_values_become_plain_json() -> None:
    value = {
        1: np.float32(0.5),
        "n": np.int64(3),
        "flag": np.bool_(True),
        "nan": float("nan"),
        "inf": np.float64(np.inf),
        "na": pd.NA,
        "nat": pd.NaT,
        "array": np.array([1.0, np.nan]),
        "nested": [(np.int32(1), {"x": np.float16(2)})],
        "text": "kept",
    }
    clean = json_safe(value)
    assert clean == {
        "1": 0.5,
        "n": 3,
        "flag": True,
        "nan": None,
        "inf": None,
        "na": None,
        "nat": None,
        "array": [1.0, None],
        "nested": [[1, {"x": 2.0}]],
        "text": "kept",
    }
    assert type(clean["n"]) is int and type(clean["flag"]) is bool
    # strict JSON: no NaN literal a browser's JSON.parse would reject
    text = json.dumps(clean, allow_nan=False)
    assert not any(math.isnan(v) for v in json.loads(text)["array"] if v is not None)


def test_one_cleaner_in_the_package() -> None:
    """No second cleaner: the stages and the front end import this one."""
    from medsae.evaluate import stage
    from medsae.interpret import io

    assert not hasattr(stage, "clean") and not hasattr(io, "json_default")
