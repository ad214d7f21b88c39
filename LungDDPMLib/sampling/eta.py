"""Time-left estimates for progress reports that stay honest after a slow first step.

The naive estimate, elapsed / done * remaining, charges every remaining step with the first step's cost. That
first step is often much slower than the rest: it includes setup (noise, conditioning, AAS tables), allocator and
kernel warm-up, and with ``compile`` the whole compilation (a minute on a small CPU). After step 3 of 20 with a
30 s first step and 1 s steps, the naive estimate says 181 s where 17 s remain. Here the rate is the median of the
most recent step durations, leaving out the first ``warmup_steps`` once later steps exist: robust to the warm-up and
to an occasional slow step (a garbage collection, another process), and quick to follow a real change of pace.
"""

from __future__ import annotations

import statistics
from typing import List


class EtaEstimator:
    """Seconds left from the times at which steps finished.

    Args:
        total: the number of steps of the whole run.
        start: the clock reading when the run started (any monotonic clock, e.g. ``time.perf_counter()``).
        window: how many recent step durations the median uses.
        warmup_steps: leading steps left out of the rate once there are later ones.
    Example:
        >>> est = EtaEstimator(total=20, start=0.0)
        >>> [round(est.update(k, now), 1) for k, now in [(1, 30.0), (2, 31.0), (3, 32.0)]]
        [570.0, 18.0, 17.0]
    """

    def __init__(self, total: int, start: float, *, window: int = 10, warmup_steps: int = 1) -> None:
        if total < 0 or window < 1 or warmup_steps < 0:
            raise ValueError(f"bad estimator settings: total={total}, window={window}, warmup_steps={warmup_steps}")
        self.total = total
        self.start = start
        self.window = window
        self.warmup_steps = warmup_steps
        self.durations: List[float] = []
        self._last_time = start
        self._last_done = 0

    def update(self, done: int, now: float) -> float:
        """Record that ``done`` steps have finished at time ``now``; return the estimated seconds left (>= 0)."""
        if done > self._last_done:
            share = (now - self._last_time) / (done - self._last_done)  # a jump of several steps shares the time
            self.durations.extend([share] * (done - self._last_done))
            self._last_time, self._last_done = now, done
        left = self.total - done
        if left <= 0 or done <= 0:
            return 0.0
        steady = self.durations[self.warmup_steps :] if len(self.durations) > self.warmup_steps else self.durations
        rate = statistics.median(steady[-self.window :])
        return max(0.0, rate * left)
