"""Round-robin over clients, at most one queued and one running request per client.

A robot that floods the server replaces its own queued request (the newest observation is the one
worth computing) instead of growing a queue or starving the other robots: whoever waited longest
goes next. Across clients the queue is bounded too, in jobs and in bytes: identities are cheap
(one per connection), so a host opening many sockets must not grow the server's memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

Job = TypeVar('Job')


class QueueFull(Exception):
    """The queue already holds its limit of jobs or bytes from other clients."""


class FairQueue(Generic[Job]):
    def __init__(self, max_jobs: int = 64, max_bytes: int = 1 << 30):
        if max_jobs < 1 or max_bytes < 1:
            raise ValueError(f'max_jobs {max_jobs} and max_bytes {max_bytes} must be positive')
        self.max_jobs, self.max_bytes = max_jobs, max_bytes
        self._pending: OrderedDict[bytes, Job] = OrderedDict()
        self._sizes: dict[bytes, int] = {}
        self._running: set[bytes] = set()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, client: bytes, job: Job, nbytes: int = 0) -> Job | None:
        """Queue `job` (holding `nbytes` of decoded input); returns the client's previously
        queued job it replaced, if any. QueueFull when it would exceed the limits."""
        with self._cond:
            others = len(self._pending) - (client in self._pending)
            held = sum(self._sizes.values()) - self._sizes.get(client, 0)
            if others + 1 > self.max_jobs or held + nbytes > self.max_bytes:
                raise QueueFull(
                    f'{others} requests ({held} bytes) are queued already, the limit is '
                    f'{self.max_jobs} ({self.max_bytes} bytes)'
                )
            old = self._pending.pop(client, None)
            self._pending[client] = job  # to the back of the ring
            self._sizes[client] = nbytes
            self._cond.notify()
            return old

    def get(self, timeout_s: float) -> tuple[bytes, Job] | None:
        """The next job of the longest-waiting client with nothing running, or None."""
        with self._cond:
            if not self._cond.wait_for(
                lambda: self._closed or self._ready() is not None, timeout_s
            ):
                return None
            client = self._ready()
            if client is None:  # closed
                return None
            self._running.add(client)
            self._sizes.pop(client, None)
            return client, self._pending.pop(client)

    def done(self, client: bytes) -> None:
        with self._cond:
            self._running.discard(client)
            self._cond.notify()

    def _ready(self) -> bytes | None:
        return next((c for c in self._pending if c not in self._running), None)

    def running(self) -> int:
        with self._cond:
            return len(self._running)

    def __len__(self) -> int:
        with self._cond:
            return len(self._pending)

    def drain(self) -> list[tuple[bytes, Job]]:
        """Close the queue and hand back what never ran (to answer it)."""
        with self._cond:
            self._closed = True
            jobs = list(self._pending.items())
            self._pending.clear()
            self._sizes.clear()
            self._cond.notify_all()
            return jobs
