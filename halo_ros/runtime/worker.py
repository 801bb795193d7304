"""A background loop that can be woken early and stopped: the shape of the actor and reasoner."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Worker:
    """Subclasses implement `_loop`, which runs until `_stop` is set and waits on `_wake`."""

    thread_name = 'halo-worker'
    stop_timeout_s = 10.0  # how long stop() waits for an iteration in progress

    def __init__(self, clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        # The clock that paces the loop: the node's, so that under sim time (the simulator
        # slower than the wall) the periods are periods of simulated time, as on a faster
        # computer, not of the wall.
        self._now_ns = clock_ns
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self):
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float | None = None) -> bool:
        """Ask the loop to end and wait up to `timeout_s`; False if an iteration is still running
        (the thread is a daemon, so it cannot keep the process alive)."""
        timeout_s = self.stop_timeout_s if timeout_s is None else timeout_s
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning('%s still busy after %.0f s', self.thread_name, timeout_s)
                return False
        return True

    def wake(self) -> None:
        """Run the next iteration now instead of waiting out the pacing."""
        self._wake.set()

    def _iterate(self) -> float:
        """One iteration; returns how long after its start the next one begins (seconds)."""
        raise NotImplementedError

    def _loop(self) -> None:
        started = next_start = self._now_ns()
        while not self._stop.is_set():
            self._wait_until(next_start, started)
            if self._stop.is_set():
                break
            self._wake.clear()
            started = self._now_ns()
            next_start = started + round(self._iterate() * 1e9)

    def _wait_until(self, due_ns: int, started_ns: int) -> None:
        """Sleep until the pacing clock reads `due_ns`, a wake-up or a stop. A simulated clock
        runs no faster than the wall, so waiting what is left on it never oversleeps; waiting
        again covers the rest. A clock that went back (a restarted simulator) ends the wait."""
        while not self._wake.is_set():
            now = self._now_ns()
            if now >= due_ns or now < started_ns:
                return
            self._wake.wait((due_ns - now) / 1e9)
