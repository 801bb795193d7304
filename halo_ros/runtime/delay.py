"""Inference delay in control steps, from a sliding high percentile of measured latency.

Bookkeeping rules learned from LeRobot's RTC fixes (`anchors-openpi-rtc.md` §d3): warm-up
latencies (first calls, allocator and kernel caches) never enter the window, so a cold-start
spike cannot inflate the delay forever; and the actions dropped at a seam never exceed the
actions actually executed since the observation (`actions_to_drop`).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np


class DelayEstimator:
    def __init__(self, dt_s: float, *, window: int = 50, percentile: float = 95.0, warmup: int = 3):
        if dt_s <= 0:
            raise ValueError(f'dt_s must be positive, got {dt_s}')
        if not 0 < percentile <= 100:
            raise ValueError(f'percentile must be in (0, 100], got {percentile}')
        if window < 1 or warmup < 0:
            raise ValueError(f'window must be >= 1 and warmup >= 0, got {window}, {warmup}')
        self.dt_s = dt_s
        self.percentile = percentile
        self._warmup = warmup
        self._seen = 0
        self._last_s: float | None = None
        self._window: deque[float] = deque(maxlen=window)

    def add(self, latency_s: float) -> None:
        if not math.isfinite(latency_s) or latency_s < 0:
            raise ValueError(f'latency must be finite and >= 0, got {latency_s}')
        self._seen += 1
        self._last_s = latency_s
        if self._seen > self._warmup:
            self._window.append(latency_s)

    @property
    def warmed_up(self) -> bool:
        return len(self._window) > 0

    def latency_s(self) -> float | None:
        """The window's percentile; during warm-up the latest sample (not the cold maximum)."""
        if self._window:
            return float(np.percentile(np.fromiter(self._window, float), self.percentile))
        return self._last_s

    def steps(self) -> int:
        latency = self.latency_s()
        if latency is None:
            return 0
        # The epsilon keeps an exact multiple of dt (2 * 20 ms) from rounding up to 3 steps.
        return max(0, math.ceil(latency / self.dt_s - 1e-6))


def actions_to_drop(estimated_steps: int, consumed_steps: int) -> int:
    """How many leading actions of a new chunk to skip at a seam: the estimate, but never more
    than the robot actually executed since the chunk's observation (0 for a robot at rest)."""
    return max(0, min(int(estimated_steps), int(consumed_steps)))
