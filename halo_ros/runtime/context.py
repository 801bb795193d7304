"""The reasoning context the actor conditions on, and the instruction epoch.

An instruction change bumps the epoch and at once installs an instruction-only context (new
instruction, no reasoning text yet) under a new version, so the very next chunk already follows
the new instruction and never the old plan; the reasoner is woken to reason about it. A reasoning
result computed for an older epoch is discarded. Versions only grow.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from halo_ros.engine.interface import Reasoning


@dataclass(frozen=True)
class ContextSnapshot:
    epoch: int
    instruction: str
    reasoning: Reasoning | None  # None before any instruction: the engine's default prompt
    accepted_at_s: float | None  # monotonic time the newest full reasoning was accepted

    @property
    def version(self) -> int:
        return -1 if self.reasoning is None else self.reasoning.version


class ContextStore:
    def __init__(self, instruction: str = ''):
        self._lock = threading.Lock()
        self._epoch = 0
        self._next_version = 0
        self._instruction = ''
        self._reasoning: Reasoning | None = None
        self._accepted_at_s: float | None = None
        if instruction.strip():
            self.set_instruction(instruction)

    def _allocate_version(self) -> int:
        version = self._next_version
        self._next_version += 1
        return version

    def set_instruction(self, instruction: str) -> bool:
        """Switch to a new instruction; False (nothing happens) if it is the current one."""
        instruction = instruction.strip()
        with self._lock:
            if instruction == self._instruction:
                return False
            self._epoch += 1
            self._instruction = instruction
            self._reasoning = Reasoning(
                version=self._allocate_version(), instruction=instruction, text=''
            )
            self._accepted_at_s = None
        return True

    def restart(self) -> int:
        """A new episode under the same instruction: forget the reasoning about the last one
        (new epoch, instruction-only context, results still in flight are dropped)."""
        with self._lock:
            self._epoch += 1
            self._reasoning = Reasoning(
                version=self._allocate_version(), instruction=self._instruction, text=''
            )
            self._accepted_at_s = None
            return self._epoch

    def snapshot(self) -> ContextSnapshot:
        with self._lock:
            return ContextSnapshot(
                self._epoch, self._instruction, self._reasoning, self._accepted_at_s
            )

    def begin_cycle(self) -> tuple[int, int, str]:
        """(epoch, version, instruction) for the reasoning cycle about to run."""
        with self._lock:
            return self._epoch, self._allocate_version(), self._instruction

    def offer(self, reasoning: Reasoning, epoch: int) -> bool:
        """Install a finished reasoning result unless its instruction was superseded meanwhile."""
        with self._lock:
            if epoch != self._epoch or reasoning.instruction != self._instruction:
                return False
            if self._reasoning is not None and reasoning.version < self._reasoning.version:
                return False
            self._reasoning = reasoning
            self._accepted_at_s = time.monotonic()
            return True
