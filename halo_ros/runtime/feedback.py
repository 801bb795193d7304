"""What the robot executed: the actor needs it to plan a seam and to clamp the dropped prefix.

`ExecutionFeedback` is the interface; `ChunkSchedule` derives it from the chunk stream and time
alone, by the controller's own rule (`halo_ros.runtime.alignment`, shared with
`control.chunks.ChunkBuffer`):

- A chunk is received at `received_ns` and executes from then on, replacing the previous one,
  unless the alignment rule refuses it (older epoch, out of order, nothing left to execute).
- One action per control tick from its first executed index; after its last action the robot
  holds.

A controller that reports what it executed (a topic with chunk seq + index) can implement the
same interface exactly; inside the policy node the derived schedule is what we have.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from halo_ros.runtime.alignment import AlignmentError, StreamPosition, align
from halo_ros.runtime.chunk import ChunkTag, PolicyChunk


@dataclass(frozen=True)
class Executing:
    tag: ChunkTag
    index: int  # action index within that chunk


class ExecutionFeedback(ABC):
    @abstractmethod
    def executing(self, now_ns: int) -> Executing | None:
        """The chunk and action index commanded now; None while the robot holds."""

    @abstractmethod
    def consumed_since(self, stamp_ns: int, now_ns: int) -> int:
        """Control ticks that executed chunk actions between `stamp_ns` and `now_ns`."""

    @abstractmethod
    def planned(self, stamp_ns: int, count: int) -> np.ndarray:
        """The commands for `stamp_ns + k * dt`, k = 0.., as far as the chunks received so far
        define them: (n <= count, action_dim) in model space; n = 0 when nothing is known."""


def _position(chunk: PolicyChunk) -> StreamPosition:
    return StreamPosition(chunk.tag.epoch, chunk.tag.seq, chunk.stamp_ns)


@dataclass(frozen=True)
class _Entry:
    chunk: PolicyChunk
    start_ns: int  # when it began executing (received)
    start_index: int  # its first executed action

    def end_ns(self) -> int:
        return self.start_ns + (self.chunk.length - self.start_index) * self.chunk.dt_ns

    def index_at(self, t_ns: int) -> int:
        return self.start_index + (t_ns - self.start_ns) // self.chunk.dt_ns


class ChunkSchedule(ExecutionFeedback):
    def __init__(self, dt_ns: int, *, keep: int = 8):
        if dt_ns <= 0:
            raise ValueError(f'dt_ns must be positive, got {dt_ns}')
        self.dt_ns = dt_ns
        self._keep = keep
        self._entries: list[_Entry] = []
        self._epoch = -1
        self._lock = threading.Lock()

    def record(self, chunk: PolicyChunk, received_ns: int) -> bool:
        """Take a chunk as the controller would; False if the controller would discard it."""
        if chunk.dt_ns != self.dt_ns:
            raise ValueError(f'chunk dt {chunk.dt_ns} ns differs from the schedule {self.dt_ns} ns')
        with self._lock:
            newest = self._entries[-1].chunk if self._entries else None
            try:
                start = align(
                    _position(chunk),
                    newest and _position(newest),
                    self._epoch,
                    now_ns=received_ns,
                    period_ns=self.dt_ns,
                    consumed=self._consumed(chunk.stamp_ns, received_ns),
                    span_ns=(chunk.length - 1) * self.dt_ns,
                )
            except AlignmentError:
                return False
            self._epoch = chunk.tag.epoch
            self._entries.append(_Entry(chunk, received_ns, start))
            del self._entries[: -self._keep]
            return True

    def clear(self) -> None:
        """Nothing executes any more (the controller holds, or the scene was reset)."""
        with self._lock:
            self._entries.clear()

    def start_index(self, seq: int) -> int | None:
        """The first executed index of the recorded chunk with this seq (for diagnostics)."""
        with self._lock:
            return next((e.start_index for e in self._entries if e.chunk.tag.seq == seq), None)

    def _active(self, t_ns: int) -> _Entry | None:
        entry = next((e for e in reversed(self._entries) if e.start_ns <= t_ns), None)
        if entry is None or t_ns >= entry.end_ns():
            return None
        return entry

    def executing(self, now_ns: int) -> Executing | None:
        with self._lock:
            entry = self._active(now_ns)
            return None if entry is None else Executing(entry.chunk.tag, entry.index_at(now_ns))

    def command(self, now_ns: int) -> tuple[ChunkTag, np.ndarray] | None:
        """The action commanded at `now_ns` and the chunk it comes from (None: holding)."""
        with self._lock:
            entry = self._active(now_ns)
            if entry is None:
                return None
            return entry.chunk.tag, entry.chunk.actions[entry.index_at(now_ns)]

    def _consumed(self, stamp_ns: int, now_ns: int) -> int:
        total = 0
        for i, entry in enumerate(self._entries):
            stop = entry.end_ns()
            if i + 1 < len(self._entries):
                stop = min(stop, self._entries[i + 1].start_ns)
            total += max(0, min(stop, now_ns) - max(entry.start_ns, stamp_ns))
        return total // self.dt_ns

    def consumed_since(self, stamp_ns: int, now_ns: int) -> int:
        with self._lock:
            return self._consumed(stamp_ns, now_ns)

    def planned(self, stamp_ns: int, count: int) -> np.ndarray:
        with self._lock:
            if not self._entries:
                return np.zeros((0, 0), np.float32)
            first = self._entries[0]
            rows = []
            for k in range(count):
                t_ns = stamp_ns + k * self.dt_ns
                if t_ns < first.start_ns:  # before the run began the robot held about here
                    rows.append(first.chunk.actions[first.start_index])
                    continue
                entry = self._active(t_ns)
                if entry is None:
                    break
                rows.append(entry.chunk.actions[entry.index_at(t_ns)])
            if not rows:
                return np.zeros((0, first.chunk.actions.shape[1]), np.float32)
            return np.stack(rows).astype(np.float32)
