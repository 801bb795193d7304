"""A background loop that can be woken early and stopped: the shape of the actor and reasoner."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)


class Worker:
    """Subclasses implement `_loop`, which runs until `_stop` is set and waits on `_wake`."""

    thread_name = 'halo-worker'
    stop_timeout_s = 10.0  # how long stop() waits for an iteration in progress

    def __init__(self) -> None:
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
        next_start = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(max(0.0, next_start - time.monotonic()))
            if self._stop.is_set():
                break
            self._wake.clear()
            started = time.monotonic()
            next_start = started + self._iterate()
