"""The policy runtime: observation assembly, context, actor and reasoner around one engine."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from halo_ros.engine.interface import Engine, Reasoning
from halo_ros.runtime.actor import Actor, ActorConfig
from halo_ros.runtime.chunk import PolicyChunk
from halo_ros.runtime.context import ContextStore
from halo_ros.runtime.feedback import ChunkSchedule
from halo_ros.runtime.observation import AssemblyConfig, ObservationAssembler, PolicyDropCounter
from halo_ros.runtime.reasoner import Reasoner
from halo_ros.runtime.stats import RuntimeStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PolicyConfig:
    assembly: AssemblyConfig = field(default_factory=AssemblyConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    reasoning: bool = True  # off: chunks condition on the instruction only
    reasoning_period_s: float = 1.0  # at most one cycle per period (HALO: ~1 Hz or less)
    subgoal: bool = True  # sample (and decode for display) the subgoal image each cycle
    max_tokens: int = 64  # reasoning text budget per cycle
    instruction: str = ''


class PolicyRuntime:
    def __init__(
        self,
        engine: Engine,
        config: PolicyConfig = PolicyConfig(),
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        on_chunk: Callable[[PolicyChunk], None] | None = None,
        on_reasoning: Callable[[Reasoning, bool], None] | None = None,
    ):
        self.config = config
        self.engine = engine
        self.drops = PolicyDropCounter()
        self.stats = RuntimeStats()
        self._clock_ns = clock_ns
        self._episode_start_ns = 0  # reasoning sees no frame older than this
        self._following = True  # the controller executes the chunks (until it says otherwise)
        self._last_chunk: PolicyChunk | None = None
        self._on_chunk = on_chunk
        self.assembler = ObservationAssembler(config.assembly, self.drops)
        self.context = ContextStore(config.instruction)
        self.schedule = ChunkSchedule(round(config.actor.control_dt_s * 1e9))
        self.actor = Actor(
            engine,
            self.context,
            lambda now_ns, after_ns: self.assembler.assemble(now_ns, after_ns=after_ns),
            self.schedule,
            config=config.actor,
            clock_ns=clock_ns,
            on_chunk=self._chunk_out,
            stats=self.stats,
            drops=self.drops,
        )
        self.reasoner = None
        if config.reasoning:
            self.reasoner = Reasoner(
                engine,
                self.context,
                self._fresh_observation,
                period_s=config.reasoning_period_s,
                subgoal=config.subgoal,
                max_tokens=config.max_tokens,
                on_reasoning=on_reasoning,
                stats=self.stats,
                drops=self.drops,
                clock_ns=clock_ns,
            )

    def _fresh_observation(self):
        """The actor's newest observation, unless it went stale (cameras stopped): the reasoner
        must not keep describing a scene that is no longer there."""
        observation = self.actor.latest_observation
        max_age_ns = self.config.assembly.max_age_ms * 1e6
        if observation is None or self._clock_ns() - observation.stamp_ns > max_age_ns:
            return None
        if observation.stamp_ns < self._episode_start_ns:
            return None  # the scene before the episode began (a reset moves the objects)
        return observation

    def _chunk_out(self, chunk: PolicyChunk, publish_ns: int) -> None:
        self._last_chunk = chunk
        if self._following:
            self.schedule.record(chunk, publish_ns)  # as the controller will execute it
        if self._on_chunk is not None:
            start = time.perf_counter()
            self._on_chunk(chunk)
            self.stats.stage('publish', (time.perf_counter() - start) * 1e3)

    def controller_mode(self, mode: str) -> None:
        """What the controller does (`halo/mode`). Only in POLICY does it execute chunks; in
        HOLD or TELEOP the arms go where no chunk says, so nothing counts as executed and the
        next chunk starts from the measured pose, not from a plan nobody followed (chained
        over a second of holding, such plans drift anywhere). On engagement the controller
        takes up the newest chunk, so that one executes from now."""
        following = mode == 'POLICY'
        if following == self._following:
            return
        self._following = following
        if not following:
            self.schedule.clear()
        elif self._last_chunk is not None:
            self.schedule.record(self._last_chunk, self._clock_ns())

    def set_instruction(self, instruction: str) -> bool:
        """New instruction: new epoch, the next chunk follows it, reasoning restarts at once."""
        changed = self.context.set_instruction(instruction)
        if changed:
            log.info('instruction -> %r (epoch %d)', instruction, self.context.snapshot().epoch)
            self.actor.wake()
            if self.reasoner is not None:
                self.reasoner.wake()
        return changed

    def new_episode(self) -> int:
        """Start reasoning afresh (openpi's policy reset between episodes); returns the epoch
        whose chunks and reasoning belong to the new episode."""
        # The first thought of an episode says where the objects are (grounded checkpoints);
        # made from a frame of the last episode, it would send the arms there for a whole cycle.
        self._episode_start_ns = self._clock_ns()
        self.schedule.clear()  # a reset moved the arms: nothing executing carries over
        epoch = self.context.restart()
        log.info('new episode: epoch %d', epoch)
        self.actor.wake()
        if self.reasoner is not None:
            self.reasoner.wake()
        return epoch

    def start(self) -> PolicyRuntime:
        self.actor.start()
        if self.reasoner is not None:
            self.reasoner.start()
        return self

    def stop(self, timeout_s: float | None = None) -> bool:
        """Stop both loops; False if one is still inside the engine after `timeout_s` each."""
        stopped = self.actor.stop(timeout_s)
        if self.reasoner is not None:
            stopped = self.reasoner.stop(timeout_s) and stopped
        return stopped

    def diagnostics(self) -> dict:
        """What the node reports on `diagnostics` (values JSON-able)."""
        now_s = time.monotonic()
        snapshot = self.context.snapshot()
        accepted = snapshot.accepted_at_s
        return {
            'chunk_rate_hz': round(self.stats.chunk_rate_hz(now_s), 2),
            'chunks': self.stats.chunks,
            'reasoning_cycles': self.stats.reasoning_cycles,
            'reasoning_age_s': None if accepted is None else round(now_s - accepted, 3),
            'epoch': snapshot.epoch,
            'context_version': snapshot.version,
            'delay_steps': self.actor.delay.steps(),
            'latency_ms': self.stats.latencies(),
            'drops': self.drops.counts(),
        }
