"""Time budgets of long runs (synthesis shards, training epochs): stop before a unit of work that would end
past the budget, so that what is finished is written and a later run can resume."""

from __future__ import annotations

import time

__all__ = ["TimeBudget"]


class TimeBudget:
    """A wall-clock budget that starts when constructed.

    Args:
        seconds: the budget [s]; None never runs out.
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.perf_counter() - self._start

    def next_unit_overruns(self, done: int) -> bool:
        """Whether one more unit would end past the budget, a unit taking the mean time of the ``done`` so far
        (never before the first unit is done)."""
        return self.seconds is not None and done > 0 and self.elapsed * (done + 1) / done > self.seconds
