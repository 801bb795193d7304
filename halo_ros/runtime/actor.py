"""The fast loop: newest observation + newest reasoning context -> one stamped chunk, repeatedly.

It never waits for reasoning: it reads whatever context is newest when it starts a chunk. Before
sampling it plans the seam against what the robot will execute (`ExecutionFeedback.planned`)
with the current delay estimate; afterwards it feeds the measured latency (observation stamp to
publication) back into the estimate.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from halo_ros.engine.interface import Engine, Observation
from halo_ros.runtime.chunk import ChunkTag, PolicyChunk
from halo_ros.runtime.context import ContextStore
from halo_ros.runtime.delay import DelayEstimator
from halo_ros.runtime.feedback import ExecutionFeedback
from halo_ros.runtime.observation import PolicyDropCounter, PolicyDropReason
from halo_ros.runtime.seam import DEFAULT_MAX_GUIDANCE, SeamMode, WeightSchedule, plan_seam
from halo_ros.runtime.stats import RuntimeStats
from halo_ros.runtime.worker import Worker

log = logging.getLogger(__name__)

# observe(now_ns, after_ns) -> the newest observation stamped after after_ns, or None
ObservationSource = Callable[[int, int], Observation | None]
ChunkSink = Callable[[PolicyChunk, int], None]  # (chunk, publish time ns)


@dataclass(frozen=True)
class ActorConfig:
    # Minimum time between chunk starts (back to back when slower): each chunk plays this long
    # before the next replaces it. halo-tiny-transfer-cube does best at 0.2 s (10 ticks):
    # replanning every 3 ticks or every 15 breaks its hand-over (BENCHMARKS.md).
    chunk_period_s: float = 0.2
    control_dt_s: float = 0.02  # the controller's period: chunk points are this far apart
    seam: SeamMode = SeamMode.RTC
    max_guidance: float = DEFAULT_MAX_GUIDANCE  # RTC beta (guidance clip), ~ the flow steps
    # LINEAR (LeRobot's default) joined chunks better than the paper's EXP in `seam_eval`.
    weight_schedule: WeightSchedule = WeightSchedule.LINEAR
    delay_percentile: float = 95.0  # a high percentile: a late chunk costs a seam, not a stall
    delay_window: int = 50  # latency samples in the sliding window
    delay_warmup: int = 3  # first chunks (cold caches) never enter the window
    poll_s: float = 0.005  # how often to look for a new observation when none is there
    seed: int = 0  # the noise generator (the caller owns the randomness, see Engine.act)
    # The flow's starting noise is drawn at this standard deviation: 1 samples the learnt
    # distribution (HALO, pi0); below 1 leans to its likelier chunks (an inference-time knob).
    noise_scale: float = 1.0
    # Seam prefix: the longest executed prefix the checkpoint was trained to continue; a longer
    # delay conditions on this many steps (the controller drops the rest by stamp anyway).
    max_prefix_steps: int | None = None

    def __post_init__(self):
        if self.chunk_period_s <= 0 or self.control_dt_s <= 0 or self.poll_s <= 0:
            raise ValueError(
                f'chunk_period_s, control_dt_s and poll_s must be positive, got '
                f'{self.chunk_period_s}, {self.control_dt_s}, {self.poll_s}'
            )
        if not 0 <= self.noise_scale <= 1:
            raise ValueError(f'noise_scale must be in [0, 1], got {self.noise_scale}')
        if self.max_guidance <= 0:
            raise ValueError(f'max_guidance must be positive, got {self.max_guidance}')


class Actor(Worker):
    thread_name = 'halo-actor'

    def __init__(
        self,
        engine: Engine,
        context: ContextStore,
        observe: ObservationSource,
        feedback: ExecutionFeedback,
        *,
        config: ActorConfig = ActorConfig(),
        clock_ns: Callable[[], int] = time.time_ns,
        on_chunk: ChunkSink | None = None,
        stats: RuntimeStats | None = None,
        drops: PolicyDropCounter | None = None,
    ):
        super().__init__(clock_ns)
        info = engine.info
        if config.seam is SeamMode.RTC and not info.supports_guidance_gradients:
            raise ValueError(
                f'seam mode rtc needs guidance gradients, which the {info.backend} backend '
                'does not provide: use seam mode hard or none'
            )
        self.config = config
        self._engine = engine
        self._context = context
        self._observe = observe
        self._feedback = feedback
        self._clock_ns = clock_ns
        self._on_chunk = on_chunk
        self.stats = stats or RuntimeStats()
        self.drops = drops or PolicyDropCounter()
        self.delay = DelayEstimator(
            config.control_dt_s,
            window=config.delay_window,
            percentile=config.delay_percentile,
            warmup=config.delay_warmup,
        )
        self.dt_ns = round(config.control_dt_s * 1e9)
        self._rng = np.random.default_rng(config.seed)
        self._seq = 0
        self._last_stamp_ns = -1
        self._starts_s: deque[float] = deque(maxlen=20)
        self.latest_observation: Observation | None = None

    # -- one chunk -------------------------------------------------------------------------------

    def execution_steps(self, delay_steps: int) -> int:
        """s: control steps one inference cycle lasts (median start-to-start), at least d."""
        if len(self._starts_s) < 2:
            return max(delay_steps, 1)
        interval = float(np.median(np.diff(np.fromiter(self._starts_s, float))))
        return max(delay_steps, 1, round(interval / self.config.control_dt_s))

    def step(self) -> PolicyChunk | None:
        """Try to produce one chunk now; None if no new observation or the chunk was dropped."""
        info = self._engine.info
        start = time.perf_counter()
        now_ns = self._clock_ns()
        observation = self._observe(now_ns, self._last_stamp_ns)
        if observation is None:
            return None
        self._last_stamp_ns = observation.stamp_ns
        self.latest_observation = observation
        self._starts_s.append(now_ns / 1e9)  # the injected clock: the harness simulates time
        snapshot = self._context.snapshot()

        delay_steps = self.delay.steps()
        tail = self._feedback.planned(observation.stamp_ns, info.chunk_length)
        if self.config.seam is SeamMode.PREFIX:
            delay_steps, tail = self._prefix(delay_steps, tail, observation)
        plan = plan_seam(
            self.config.seam,
            tail,
            info.chunk_length,
            delay_steps,
            self.execution_steps(delay_steps),
            self.config.weight_schedule,
            self.config.max_guidance,
        )
        noise = self._rng.standard_normal((info.chunk_length, info.action_dim), dtype=np.float32)
        noise *= self.config.noise_scale
        planned_ms = (time.perf_counter() - start) * 1e3
        try:
            result = self._engine.act(observation, snapshot.reasoning, noise, plan)
        except Exception:  # noqa: BLE001 (one bad chunk must not end the fast loop)
            self.drops.add(
                PolicyDropReason.ENGINE_ERROR, f'act on observation {observation.stamp_ns}'
            )
            first = (
                self.drops[PolicyDropReason.ENGINE_ERROR] == 1
            )  # the rest are counted, not logged
            (log.error if first else log.debug)('engine.act failed', exc_info=True)
            return None
        actions = result.actions
        if actions.shape != (info.chunk_length, info.action_dim) or not np.isfinite(actions).all():
            self.drops.add(PolicyDropReason.BAD_ACTIONS, f'actions {actions.shape}')
            return None
        if self._context.snapshot().epoch != snapshot.epoch:
            self.drops.add(PolicyDropReason.EPOCH, f'chunk for epoch {snapshot.epoch}')
            return None

        publish_ns = self._clock_ns()
        latency_ms = (publish_ns - observation.stamp_ns) / 1e6
        self.delay.add(max(latency_ms, 0.0) / 1e3)
        tag = ChunkTag(
            epoch=snapshot.epoch,
            seq=self._seq,
            context_version=snapshot.version,
            delay_steps=plan.delay_steps if plan is not None else delay_steps,
        )
        self._seq += 1
        timings = dict(result.timings_ms)
        timings['observation_age'] = (now_ns - observation.stamp_ns) / 1e6
        timings['seam_plan'] = planned_ms
        timings['stamp_to_publish'] = latency_ms
        chunk = PolicyChunk(
            actions.astype(np.float32, copy=False), observation.stamp_ns, self.dt_ns, tag, timings
        )
        for stage, ms in timings.items():
            self.stats.stage(stage, ms)
        self.stats.chunk_published(time.monotonic())
        if self._on_chunk is not None:
            self._on_chunk(chunk, publish_ns)
        return chunk

    def _prefix(self, delay_steps: int, tail: np.ndarray, observation: Observation):
        """(d, tail) for the prefix seam. At least the action executing at the observation's
        time is given (d >= 1, even when chunks land at once): it is what the new chunk starts
        from. With nothing executing yet (the first chunk, after a hold) the robot holds where
        it stands, so that pose is the executed action. Capped at the longest prefix the
        checkpoint was trained to continue."""
        if tail.shape[0] == 0:
            state = np.asarray(observation.state, dtype=np.float32)
            if state.shape != (self._engine.info.action_dim,) or not np.isfinite(state).all():
                return 0, tail  # no pose to start from: sample freely
            tail = state[None]
        longest = self.config.max_prefix_steps
        delay_steps = max(delay_steps, 1)
        return (delay_steps if longest is None else min(delay_steps, longest)), tail

    # -- the loop --------------------------------------------------------------------------------

    def _iterate(self) -> float:
        try:
            chunk = self.step()
        except Exception:  # noqa: BLE001 (a failed step must not end the fast loop)
            log.exception('actor step failed')
            chunk = None
        return self.config.chunk_period_s if chunk is not None else self.config.poll_s
