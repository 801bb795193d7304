"""The slow loop: reasons about the newest observation and instruction in the background."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from halo_ros.engine.interface import Engine, Observation, Reasoning
from halo_ros.runtime.context import ContextStore
from halo_ros.runtime.observation import PolicyDropCounter, PolicyDropReason
from halo_ros.runtime.stats import RuntimeStats
from halo_ros.runtime.worker import Worker

log = logging.getLogger(__name__)

# reasoning, accepted (False: its instruction was superseded while it ran)
ReasoningSink = Callable[[Reasoning, bool], None]


class Reasoner(Worker):
    """Runs `engine.reason` at most every `period_s` (at once after an instruction change) on
    the newest observation the actor assembled. Never holds anything the actor waits on."""

    thread_name = 'halo-reasoner'
    stop_timeout_s = 30.0  # a reasoning cycle can take seconds on a CPU

    def __init__(
        self,
        engine: Engine,
        context: ContextStore,
        latest_observation: Callable[[], Observation | None],
        *,
        period_s: float = 1.0,
        subgoal: bool = True,
        max_tokens: int = 64,
        on_reasoning: ReasoningSink | None = None,
        stats: RuntimeStats | None = None,
        drops: PolicyDropCounter | None = None,
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ):
        super().__init__(clock_ns)
        if period_s <= 0:
            raise ValueError(f'reasoning period_s must be positive, got {period_s}')
        self._engine = engine
        self._context = context
        self._latest = latest_observation
        self.period_s = period_s
        self._subgoal = subgoal
        self._max_tokens = max_tokens
        self._on_reasoning = on_reasoning
        self.stats = stats or RuntimeStats()
        self.drops = drops or PolicyDropCounter()
        self.busy = threading.Event()  # set while a cycle runs (tests, diagnostics)

    def cycle(self) -> Reasoning | None:
        """One cycle now (None when there is no instruction or observation yet)."""
        observation = self._latest()
        if observation is None or not self._context.snapshot().instruction:
            return None
        epoch, version, instruction = self._context.begin_cycle()
        self.busy.set()
        try:
            reasoning = self._engine.reason(
                observation,
                instruction,
                version,
                subgoal=self._subgoal,
                max_tokens=self._max_tokens,
            )
        finally:
            self.busy.clear()
        accepted = self._context.offer(reasoning, epoch)
        if not accepted:
            self.drops.add(PolicyDropReason.EPOCH, f'reasoning v{version} for {instruction!r}')
        self.stats.reasoning_done()
        for stage, ms in reasoning.timings_ms.items():
            if stage != 'tokens':
                self.stats.stage(f'reason_{stage}', ms)
        if self._on_reasoning is not None:
            self._on_reasoning(reasoning, accepted)
        return reasoning

    def _iterate(self) -> float:
        try:
            done = self.cycle()
        except Exception:  # noqa: BLE001 (a failed cycle must not end the slow loop)
            self.drops.add(PolicyDropReason.ENGINE_ERROR, 'reasoning cycle')
            log.exception('reasoning cycle failed')
            done = True
        # No instruction / observation yet: look again soon instead of a full period later.
        return self.period_s if done is not None else 0.05
