"""Success rates with 95% confidence intervals (Wilson score interval)."""

from __future__ import annotations

import math

__all__ = ["wilson_interval", "format_rate"]


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """95% (by default) Wilson score interval of a binomial proportion; (0, 1) for no trials."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def format_rate(successes: int, trials: int) -> str:
    low, high = wilson_interval(successes, trials)
    rate = successes / trials if trials else float("nan")
    return f"{100 * rate:.1f}% [{100 * low:.1f}, {100 * high:.1f}] ({successes}/{trials})"
