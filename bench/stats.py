"""Order statistics for the report (nearest-rank percentiles: no interpolation, so p99 of 100 samples is the 99th
smallest, and p99 of fewer than 100 samples is the maximum)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def summary(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "median": None, "p99": None, "min": None, "max": None, "mean": None}
    return {"n": len(values), "median": percentile(values, 50), "p99": percentile(values, 99),
            "min": float(min(values)), "max": float(max(values)), "mean": float(sum(values) / len(values))}
