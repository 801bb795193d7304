"""The episode writer's queue: FIFO bounded by count and bytes, so `put` on the hot path never
blocks and a slow disk costs counted drops instead of unbounded memory."""

import threading
from collections import deque


class BoundedQueue:
    """FIFO bounded by message count and total bytes; `put` never blocks."""

    def __init__(self, max_messages: int, max_bytes: int):
        self._items: deque = deque()
        self._bytes = 0
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._cond = threading.Condition()

    def put(self, item, nbytes: int, *, force: bool = False) -> bool:
        with self._cond:
            if not force and (
                len(self._items) >= self._max_messages or self._bytes + nbytes > self._max_bytes
            ):
                return False
            self._items.append((item, nbytes))
            self._bytes += nbytes
            self._cond.notify()
            return True

    def get(self, timeout_s: float):
        """The next item, or None after `timeout_s`."""
        with self._cond:
            if not self._items and not self._cond.wait_for(lambda: self._items, timeout_s):
                return None
            item, nbytes = self._items.popleft()
            self._bytes -= nbytes
            return item

    def drain(self) -> list:
        with self._cond:
            items = [item for item, _ in self._items]
            self._items.clear()
            self._bytes = 0
            return items
