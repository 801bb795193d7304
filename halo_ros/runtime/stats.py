"""Runtime accounting for diagnostics: per-stage latency percentiles, chunk rate, reasoning age."""

from __future__ import annotations

import threading
from collections import defaultdict, deque

import numpy as np

PERCENTILES = (50, 95, 99)


class LatencyWindow:
    """The last `size` samples of one stage, in ms."""

    def __init__(self, size: int = 200):
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, ms: float) -> None:
        self._samples.append(float(ms))

    def __len__(self) -> int:
        return len(self._samples)

    def percentiles(self) -> dict[str, float]:
        if not self._samples:
            return {}
        values = np.percentile(np.fromiter(self._samples, float), PERCENTILES)
        return {f'p{p}': round(float(v), 2) for p, v in zip(PERCENTILES, values, strict=True)}


class RuntimeStats:
    def __init__(self, window: int = 200):
        self._lock = threading.Lock()
        self._stages: dict[str, LatencyWindow] = defaultdict(lambda: LatencyWindow(window))
        self._chunk_times_s: deque[float] = deque(maxlen=window)
        self.chunks = 0
        self.reasoning_cycles = 0

    def stage(self, name: str, ms: float) -> None:
        with self._lock:
            self._stages[name].add(ms)

    def chunk_published(self, now_s: float) -> None:
        with self._lock:
            self.chunks += 1
            self._chunk_times_s.append(now_s)

    def reasoning_done(self) -> None:
        with self._lock:
            self.reasoning_cycles += 1

    def chunk_intervals_s(self) -> np.ndarray:
        with self._lock:
            return np.diff(np.fromiter(self._chunk_times_s, float))

    def chunk_rate_hz(self, now_s: float, horizon_s: float = 5.0) -> float:
        with self._lock:
            recent = [t for t in self._chunk_times_s if now_s - t <= horizon_s]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-9)

    def latencies(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {name: w.percentiles() for name, w in self._stages.items() if len(w)}
