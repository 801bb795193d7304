"""Closed-loop episodes of a policy on the simulator, with the node's own runtime and controller.

Everything between the camera and the servo is the code the ROS graph runs: `PolicyRuntime`
(observation assembly, reasoner, actor with its seam planning and delay estimate) around the
engine, and the controller's `ControlLoop` (policy ramp, chunk alignment by stamp, watchdog,
safety filter) on the simulated followers (`sim.direct_arms`). Only ROS and the Dynamixel buses
are left out. Two clocks:

- lockstep: the simulation waits for the policy. A chunk is started every `execution_steps`
  ticks and lands `delay_steps` ticks after its observation (0: at once; 2: what a GPU's ~40 ms
  would cost at 50 Hz); a reasoning cycle runs every `reasoning_period_s` of simulated time and
  is ready before the next chunk. The figure measures the model and its data, not the CPU.
- realtime: physics, rendering, the controller and the policy's two loops run on their own
  threads against the wall clock, as in the demo; whatever the CPU cannot keep up with shows.

Each episode starts like the demo's: the arms hold, the policy reasons about the new scene, and
once a chunk conditioned on that reasoning exists the controller is engaged.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from halo_ros.control.chunks import make_chunk
from halo_ros.control.config import ControllerConfig, load_config
from halo_ros.control.loop import ControlLoop
from halo_ros.control.modes import Request
from halo_ros.drivers.aloha_calibration import load as load_calibration
from halo_ros.engine.interface import Engine
from halo_ros.joints import BIMANUAL_JOINTS
from halo_ros.paths import calibration_file
from halo_ros.runtime.chunk import PolicyChunk
from halo_ros.runtime.policy import PolicyConfig, PolicyRuntime
from halo_ros.sim.cameras import CameraRig
from halo_ros.sim.direct_arms import DirectArms
from halo_ros.sim.runner import ground_truth_joints
from halo_ros.sim.world import AlohaSim

log = logging.getLogger(__name__)

CLOCKS = ('lockstep', 'realtime')
# gym-aloha's staged reward -> where an episode that never reached 4 stopped
STAGES = {0: 'reach', 1: 'grasp', 2: 'lift', 3: 'hand-over'}


@dataclass(frozen=True)
class EvalConfig:
    clock: str = 'lockstep'
    episode_seconds: float = 12.0
    execution_steps: int = 10  # lockstep: a new chunk every s ticks (5 chunks/s at 50 Hz)
    delay_steps: int = 0  # lockstep: ticks between a chunk's observation and its arrival
    calibration: str = 'sim_aloha.yaml'
    controller: str | None = None  # controller YAML; None = config/controller.yaml
    camera_rate_hz: float = 15.0  # realtime: the simulator's camera rate (as config/sim.yaml)
    settle_s: float = 0.5  # after success, keep going this long (a cube that drops is a failure)
    keep_frames: bool = True  # top camera, subgoal and reasoning per chunk (for contact sheets)

    def __post_init__(self):
        if self.clock not in CLOCKS:
            raise ValueError(f'clock {self.clock!r} is not one of {CLOCKS}')
        if self.episode_seconds <= 0:
            raise ValueError(f'episode_seconds must be positive, got {self.episode_seconds}')
        if self.execution_steps < 1 or self.delay_steps < 0:
            raise ValueError(
                f'execution_steps must be >= 1 and delay_steps >= 0, got '
                f'{self.execution_steps}, {self.delay_steps}'
            )
        if self.delay_steps >= self.execution_steps + 50:
            raise ValueError('delay_steps is longer than a chunk: every chunk would be stale')


@dataclass
class Moment:
    """What the policy saw and thought when it started one chunk (for a person to look at)."""

    time_s: float
    frame: np.ndarray  # the first camera's frame (H, W, 3) uint8
    subgoal: np.ndarray | None  # the subgoal image the chunk was conditioned on
    subtask: str
    reward: int
    object: str = ''  # where the reasoning said the object is ('cube at 41,63'), if it says


@dataclass
class EpisodeResult:
    seed: int
    success: bool
    max_reward: int
    final_reward: int
    seconds: float  # simulated (lockstep) or wall-clock (realtime) episode length
    seconds_to_success: float | None
    chunks: int  # chunks the policy produced
    chunks_executed: int  # chunks the controller played
    reasoning_cycles: int
    subtasks: list[str]
    chunk_latency_ms: list[float]  # observation stamp -> published, per chunk
    flow_ms: list[float]  # the engine's act() alone, per chunk
    step_at_switch_rad: list[float]  # largest arm-joint command step at chunk switches
    step_within_rad: list[float]  # ... at every other policy tick
    drops: dict[str, int]
    controller: dict  # the controller's counters (limits, rejections, events)
    moments: list[Moment] = field(default_factory=list, repr=False)

    @property
    def stage(self) -> str:
        return 'success' if self.success else STAGES.get(self.max_reward, 'hand-over')

    def to_dict(self) -> dict:
        out = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ('moments', 'step_at_switch_rad', 'step_within_rad')
        }
        out['stage'] = self.stage
        out['chunk_latency_ms'] = [round(v, 1) for v in self.chunk_latency_ms]
        out['flow_ms'] = [round(v, 1) for v in self.flow_ms]
        out['largest_step_at_switch_rad'] = round(max(self.step_at_switch_rad, default=0.0), 4)
        out['largest_step_within_chunk_rad'] = round(max(self.step_within_rad, default=0.0), 4)
        return out


class _SimClock:
    def __init__(self, start_ns: int):
        self.ns = start_ns

    def now(self) -> int:
        return self.ns


class _Delayed(Engine):
    """The engine with an emulated latency: `act` moves the simulated clock on by `delay_ns`,
    so the chunk is published (and lands) that much after its observation."""

    def __init__(self, engine: Engine, clock: _SimClock, delay_ns: int):
        self._engine, self._clock, self._delay_ns = engine, clock, delay_ns

    @property
    def info(self):
        return self._engine.info

    def act(self, observation, reasoning, noise, seam=None):
        result = self._engine.act(observation, reasoning, noise, seam)
        self._clock.ns += self._delay_ns
        return result

    def reason(self, observation, instruction, version, **kwargs):
        return self._engine.reason(observation, instruction, version, **kwargs)


def controller_config(config: EvalConfig, policy: PolicyConfig) -> ControllerConfig:
    """The controller's settings for this evaluation: the YAML's, with a watchdog and chunk age
    that fit the chunk cadence (lockstep: s ticks apart; realtime on a CPU: up to seconds, as
    the demo stretches them)."""
    base = load_config(config.controller)
    period = 1.0 / base.rate_hz
    if config.clock == 'lockstep':
        cadence = (config.execution_steps + config.delay_steps) * period
        return dataclasses.replace(
            base,
            watchdog_timeout_s=max(base.watchdog_timeout_s, 2 * cadence),
            max_chunk_age_s=max(base.max_chunk_age_s, 2 * cadence),
        )
    return dataclasses.replace(
        base,
        watchdog_timeout_s=max(base.watchdog_timeout_s, 1.5),
        max_chunk_age_s=max(base.max_chunk_age_s, 2.5),
    )


class EpisodeRunner:
    """Runs seeded episodes of one engine on one simulator (create once, call `run(seed)`)."""

    def __init__(
        self,
        engine: Engine,
        policy: PolicyConfig,
        config: EvalConfig = EvalConfig(),
        *,
        on_tick: Callable[[AlohaSim, int], None] | None = None,
    ):
        self.engine, self.policy, self.config = engine, policy, config
        self.sim = AlohaSim()
        self.calibration = load_calibration(calibration_file(config.calibration))
        self.controller = controller_config(config, policy)
        if abs(self.controller.period_s - self.sim.control_period_s) > 1e-9:
            raise ValueError(
                f'the controller runs at {self.controller.rate_hz} Hz, the simulator at '
                f'{1 / self.sim.control_period_s:g} Hz'
            )
        self._on_tick = on_tick
        self._rig: CameraRig | None = None  # lockstep renders on the calling thread

    def close(self) -> None:
        if self._rig is not None:
            self._rig.close()
            self._rig = None

    def run(self, seed: int) -> EpisodeResult:
        if self.config.clock == 'lockstep':
            return self._lockstep(seed)
        return self._realtime(seed)

    # -- shared pieces ---------------------------------------------------------------------------

    def _make_rig(self) -> CameraRig:
        h, w = self.policy.assembly.image_hw
        return CameraRig(self.sim.model, self.policy.assembly.cameras, width=w, height=h)

    def _feed(self, runtime: PolicyRuntime, frames: dict, stamp_ns: int) -> None:
        for camera, frame in frames.items():
            runtime.assembler.add_image(camera, frame, stamp_ns)
        positions, _ = ground_truth_joints(self.sim)
        runtime.assembler.add_joints(BIMANUAL_JOINTS, positions, stamp_ns)

    @staticmethod
    def _submit(loop: ControlLoop, chunk: PolicyChunk) -> None:
        loop.submit_chunk(
            make_chunk(
                BIMANUAL_JOINTS,
                chunk.actions,
                stamp_ns=chunk.stamp_ns,
                dt_ns=chunk.dt_ns,
                epoch=chunk.tag.epoch,
                seq=chunk.tag.seq,
                context_version=chunk.tag.context_version,
            )
        )

    def _remember(self, track: _Track, runtime: PolicyRuntime, frames: dict, time_s: float):
        """Keep what the policy saw and thought as it started a chunk (contact sheets)."""
        if not self.config.keep_frames:
            return
        reasoning = runtime.context.snapshot().reasoning
        track.moments.append(
            Moment(
                time_s,
                frames[self.policy.assembly.cameras[0]],
                None if reasoning is None else reasoning.subgoal_image,
                '' if reasoning is None else reasoning.subtask,
                track.reward,
                '' if reasoning is None else reasoning.object,
            )
        )

    # -- lockstep --------------------------------------------------------------------------------

    def _lockstep(self, seed: int) -> EpisodeResult:
        cfg, sim = self.config, self.sim
        if self._rig is None:
            self._rig = self._make_rig()
        dt_ns = round(sim.control_period_s * 1e9)
        clock = _SimClock(1_000_000_000)  # sim time; > 0 so no stamp is mistaken for "none"
        sim.reset(seed)
        arms = DirectArms(sim, clock.now)
        loop = ControlLoop(arms, self.controller, self.calibration, clock_ns=clock.now)
        loop.prime()
        produced: list[PolicyChunk] = []
        first = _FirstReasoning()
        runtime = PolicyRuntime(
            _Delayed(self.engine, clock, cfg.delay_steps * dt_ns),
            self.policy,
            clock_ns=clock.now,
            on_chunk=produced.append,
            on_reasoning=first,
        )
        runtime.controller_mode('HOLD')  # as the node hears on halo/mode
        track = _Track()
        pending: list[tuple[int, PolicyChunk]] = []  # (arrival ns, chunk)
        ticks = round(cfg.episode_seconds / sim.control_period_s)
        period_ticks = max(1, round(self.policy.reasoning_period_s / sim.control_period_s))
        engaged_at = None
        last_reasoning_tick = None
        tick = 0
        while tick < ticks + (engaged_at or 0):
            now = clock.ns = 1_000_000_000 + tick * dt_ns
            if engaged_at is None or (tick - engaged_at) % cfg.execution_steps == 0:
                frames = self._rig.render(sim.snapshot())
                self._feed(runtime, frames, now)
                due = last_reasoning_tick is None or tick - last_reasoning_tick >= period_ticks
                if runtime.reasoner is not None and due and runtime.actor.latest_observation:
                    runtime.reasoner.cycle()
                    last_reasoning_tick = tick
                before = len(produced)
                runtime.actor.step()
                clock.ns = now  # the emulated latency is carried by the chunk's arrival time
                for chunk in produced[before:]:
                    if engaged_at is None and first.conditions(chunk, runtime):
                        engaged_at = tick
                        loop.request(Request.POLICY)
                    if engaged_at is not None:
                        pending.append((chunk.stamp_ns + cfg.delay_steps * dt_ns, chunk))
                        track.chunk(chunk)
                        elapsed = (tick - engaged_at) * sim.control_period_s
                        self._remember(track, runtime, frames, elapsed)
            for arrival, chunk in [p for p in pending if p[0] <= now]:
                self._submit(loop, chunk)
                runtime.controller_mode('POLICY')  # engaged once the first chunk is there
                pending.remove((arrival, chunk))
            record = loop.tick(now)
            sim.step()
            if self._on_tick is not None:
                self._on_tick(sim, tick)
            if engaged_at is not None:
                track.tick(record, sim, (tick - engaged_at) * sim.control_period_s)
                if track.settled(cfg.settle_s):
                    break
            tick += 1
            if engaged_at is None and tick > 5 * period_ticks:
                raise RuntimeError(
                    'the policy produced no chunk conditioned on a reasoning cycle within '
                    f'{5 * self.policy.reasoning_period_s:g} s of simulated time: '
                    f'drops {runtime.drops.counts()}'
                )
        seconds = (tick - (engaged_at or 0)) * sim.control_period_s
        return track.result(seed, seconds, runtime, loop)

    # -- realtime --------------------------------------------------------------------------------

    def _realtime(self, seed: int) -> EpisodeResult:
        cfg, sim = self.config, self.sim
        sim.reset(seed)
        arms = DirectArms(sim, time.monotonic_ns)
        loop = ControlLoop(arms, self.controller, self.calibration, clock_ns=time.time_ns)
        produced: list[PolicyChunk] = []
        engaged = threading.Event()
        lock = threading.Lock()

        def on_chunk(chunk: PolicyChunk) -> None:
            with lock:
                produced.append(chunk)
            if first.conditions(chunk, runtime):
                if not engaged.is_set():
                    loop.request(Request.POLICY)
                    runtime.controller_mode('POLICY')
                    engaged.set()
            if engaged.is_set():
                self._submit(loop, chunk)

        first = _FirstReasoning()
        runtime = PolicyRuntime(
            self.engine, self.policy, clock_ns=time.time_ns, on_chunk=on_chunk, on_reasoning=first
        )
        runtime.controller_mode('HOLD')
        track = _Track()
        stop = threading.Event()
        frames_box: dict = {}

        def physics() -> None:
            period = sim.control_period_s
            deadline = time.monotonic()
            started = None
            while not stop.is_set():
                delay = deadline - time.monotonic()
                if delay > 0:
                    stop.wait(delay)
                record = loop.tick(time.time_ns())
                with sim.lock:
                    sim.step()
                # Timed from the engagement, as in lockstep, whatever the mode: a loop that
                # leaves POLICY (a fault hold) ends the episode at its time, not never.
                if engaged.is_set():
                    started = started or time.monotonic()
                    track.tick(record, sim, time.monotonic() - started)
                    timeout = time.monotonic() - started > cfg.episode_seconds
                    if track.settled(cfg.settle_s) or timeout:
                        stop.set()
                deadline += period
                if time.monotonic() - deadline > period:
                    track.late_ticks += 1
                    deadline = time.monotonic()

        def render() -> None:
            rig = self._make_rig()
            try:
                period = 1.0 / cfg.camera_rate_hz
                deadline = time.monotonic()
                while not stop.is_set():
                    stamp = time.time_ns()
                    frames = rig.render(sim.snapshot())
                    self._feed(runtime, frames, stamp)
                    frames_box['last'] = frames
                    deadline += period
                    wait = deadline - time.monotonic()
                    if wait > 0:
                        stop.wait(wait)
                    else:
                        deadline = time.monotonic()
            finally:
                rig.close()

        loop.prime()
        threads = [
            threading.Thread(target=render, name='eval-render', daemon=True),
            threading.Thread(target=physics, name='eval-physics', daemon=True),
        ]
        for thread in threads:
            thread.start()
        runtime.start()
        start = time.monotonic()
        seen = 0
        try:
            while not stop.wait(0.05):
                if not engaged.is_set() and time.monotonic() - start > 60:
                    raise RuntimeError(
                        f'no chunk conditioned on a reasoning cycle within 60 s: drops '
                        f'{runtime.drops.counts()}'
                    )
                with lock:
                    fresh = produced[seen:]
                    seen = len(produced)
                for chunk in fresh:
                    if engaged.is_set():
                        track.chunk(chunk)
                        frames = frames_box.get('last')
                        if frames is not None:
                            self._remember(track, runtime, frames, time.monotonic() - start)
        finally:
            stop.set()
            runtime.stop(timeout_s=30.0)
            for thread in threads:
                thread.join(timeout=5.0)
        seconds = track.elapsed_s
        return track.result(seed, seconds, runtime, loop)


class _FirstReasoning:
    """Notes the first accepted reasoning of an episode: the policy is engaged with the first
    chunk conditioned on it (or on the instruction alone when reasoning is off)."""

    def __init__(self):
        self.version: int | None = None

    def __call__(self, reasoning, accepted: bool) -> None:
        if accepted and self.version is None:
            self.version = reasoning.version

    def conditions(self, chunk: PolicyChunk, runtime: PolicyRuntime) -> bool:
        if runtime.reasoner is None:
            return True
        return self.version is not None and chunk.tag.context_version >= self.version


class _Track:
    """What an episode did, tick by tick and chunk by chunk."""

    def __init__(self):
        self.rewards: list[int] = []
        self.reward = 0
        self.success_s: float | None = None
        self.elapsed_s = 0.0
        self.latency_ms: list[float] = []
        self.flow_ms: list[float] = []
        self.executed: set[tuple[int, int]] = set()
        self.at_switch: list[float] = []
        self.within: list[float] = []
        self.moments: list[Moment] = []
        self.late_ticks = 0
        self._last_command: np.ndarray | None = None
        self._last_chunk: tuple[int, int] | None = None
        self._chunks = 0

    def chunk(self, chunk: PolicyChunk) -> None:
        self._chunks += 1
        self.latency_ms.append(chunk.timings_ms.get('stamp_to_publish', float('nan')))
        self.flow_ms.append(chunk.timings_ms.get('total', float('nan')))

    def tick(self, record, sim: AlohaSim, elapsed_s: float) -> None:
        self.elapsed_s = elapsed_s
        if len(self.rewards) % 5 == 0:  # contacts at 10 Hz, as the simulator node scores
            self.reward = sim.reward()
        self.rewards.append(self.reward)
        if self.reward == sim.max_reward and self.success_s is None:
            self.success_s = elapsed_s
        if self.reward != sim.max_reward and self.success_s is not None:
            self.success_s = None  # it dropped the cube again: not done
        if record.chunk is not None and record.command is not None:
            key = record.chunk[:2]
            self.executed.add(key)
            if self._last_command is not None and self._last_chunk is not None:
                arms = [i for i in range(14) if i not in (6, 13)]
                step = float(np.abs(record.command[arms] - self._last_command[arms]).max())
                (self.at_switch if key != self._last_chunk else self.within).append(step)
            self._last_chunk = key
        self._last_command = None if record.command is None else record.command.copy()

    def settled(self, settle_s: float) -> bool:
        return self.success_s is not None and self.elapsed_s - self.success_s >= settle_s

    def result(self, seed: int, seconds: float, runtime: PolicyRuntime, loop) -> EpisodeResult:
        subtasks: list[str] = []
        for moment in self.moments:
            if moment.subtask and (not subtasks or subtasks[-1] != moment.subtask):
                subtasks.append(moment.subtask)
        stats = loop.stats.snapshot()
        return EpisodeResult(
            seed=seed,
            success=self.success_s is not None,
            max_reward=max(self.rewards, default=0),
            final_reward=self.rewards[-1] if self.rewards else 0,
            seconds=round(seconds, 2),
            seconds_to_success=None if self.success_s is None else round(self.success_s, 2),
            chunks=self._chunks,
            chunks_executed=len(self.executed),
            reasoning_cycles=runtime.stats.reasoning_cycles,
            subtasks=subtasks,
            chunk_latency_ms=self.latency_ms,
            flow_ms=self.flow_ms,
            step_at_switch_rad=self.at_switch,
            step_within_rad=self.within,
            drops={k: int(v) for k, v in runtime.drops.counts().items()},
            controller=stats,
            moments=self.moments,
        )
