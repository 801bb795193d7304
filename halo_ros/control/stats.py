"""What the control loop counts for diagnostics (thread-safe: the loop writes, the node reads).

Period error (DESIGN.md): tick start minus its scheduled deadline on the monotonic clock; a tick
is missed when it would start a full period late (the loop then skips that deadline).
"""

import threading
from collections import Counter, deque

import numpy as np


class ControlStats:
    def __init__(self, window: int = 3000):
        self._lock = threading.Lock()
        self._errors_ms: deque[float] = deque(maxlen=window)  # last minute at 50 Hz
        self.ticks = 0
        self.missed = 0
        self.max_error_ms = 0.0
        self.rejections: Counter = Counter()  # Rejection.value -> count
        self.limits: Counter = Counter()  # Limit.value -> ticks it changed the command
        self.read_failures: Counter = Counter()  # arm -> reads that were not fresh
        self.write_failures: Counter = Counter()
        self.events: Counter = Counter()  # watchdog, chunks_used, align_timeout, ...
        self.hardware_errors: dict[str, dict[int, str]] = {}  # arm -> id -> error names
        self.following_errors: Counter = Counter()  # joint -> holds it caused
        self.last_following_error = ''  # 'left_shoulder 0.512 rad', the latest

    def tick(self, error_ms: float, missed: int) -> None:
        with self._lock:
            self.ticks += 1
            self.missed += missed
            self.max_error_ms = max(self.max_error_ms, error_ms)
            self._errors_ms.append(error_ms)

    def count(self, counter: str, key: str, n: int = 1) -> None:
        with self._lock:
            getattr(self, counter)[key] += n

    def following_error(self, joint: str, error_rad: float) -> None:
        with self._lock:
            self.following_errors[joint] += 1
            self.events['following_error'] += 1
            self.last_following_error = f'{joint} {error_rad:.3f} rad'

    def set_hardware_errors(self, arm: str, errors: dict[int, str]) -> None:
        with self._lock:
            self.hardware_errors[arm] = errors
            self.events['hardware_error'] += 1

    def clear_hardware_errors(self) -> None:
        with self._lock:
            self.hardware_errors.clear()

    def snapshot(self) -> dict:
        with self._lock:
            errors = np.fromiter(self._errors_ms, float)
            p50, p99 = np.percentile(errors, [50, 99]) if len(errors) else (0.0, 0.0)
            return {
                'ticks': self.ticks,
                'missed_ticks': self.missed,
                'period_error_p50_ms': round(float(p50), 3),
                'period_error_p99_ms': round(float(p99), 3),
                'period_error_max_ms': round(self.max_error_ms, 3),
                'rejections': dict(self.rejections),
                'limits_hit': dict(self.limits),
                'read_failures': dict(self.read_failures),
                'write_failures': dict(self.write_failures),
                'events': dict(self.events),
                'hardware_errors': {a: dict(e) for a, e in self.hardware_errors.items()},
                'following_errors': dict(self.following_errors),
                'last_following_error': self.last_following_error,
            }
