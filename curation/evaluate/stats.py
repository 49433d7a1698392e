"""Summaries over seeds, and the paired difference between arms with a t-interval.

Arms trained with the same seed share their initial weights and their data-order seed, so the
seed is the pairing unit: d_s = loss(arm, s) - loss(baseline, s), and the interval is
mean(d) ± t_{0.975, n-1} · sd(d) / sqrt(n) (Student's t, two-sided 95%). With one seed there
is no interval (null).
"""

from __future__ import annotations

import math
from typing import Any

# Two-sided 95% Student t quantiles t_{0.975, df}, df = 1..30; above 30 the normal 1.96 is close.
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042]


def t_critical(df: int) -> float:
    return T975[df - 1] if 1 <= df <= len(T975) else 1.96


def mean_sd(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, sd


def summarise(values: list[float]) -> dict[str, Any]:
    mean, sd = mean_sd(values)
    return {"mean": mean, "sd": sd, "min": min(values), "max": max(values), "n": len(values),
            "perplexity": math.exp(mean), "values": values}


def paired_difference(arm: list[float], baseline: list[float]) -> dict[str, Any]:
    """Mean paired difference (arm - baseline) with its 95% t-interval over seeds."""
    diffs = [a - b for a, b in zip(arm, baseline, strict=True)]
    mean, sd = mean_sd(diffs)
    n = len(diffs)
    out: dict[str, Any] = {"mean": mean, "sd": sd, "n": n, "values": diffs,
                           "method": "paired over seeds, Student t two-sided 95%",
                           "ci95": None, "relative": mean / (sum(baseline) / n)}
    if n > 1:
        half = t_critical(n - 1) * sd / math.sqrt(n)
        out["ci95"] = [mean - half, mean + half]
        out["t"] = mean / (sd / math.sqrt(n)) if sd > 0 else None  # identical differences: no t
    out["wins"] = sum(d < 0 for d in diffs)
    return out
