"""The 50 Hz control loop: read, choose the command by mode, filter, write, publish.

It runs on its own thread against a monotonic deadline (not an executor timer, which a busy
callback would delay), or, in a simulation with sim time, against the simulated clock
(`pace_clock_ns`): then it ticks at 50 Hz of simulated time, whatever the real-time factor.
Everything the loop decides by time (ramp weights, watchdog, chunk age and alignment, timeouts) is
on that pacing clock -- the control clock; stamps (ROS time: the wall clock on a robot, which can
step) are mapped onto it once per chunk (`clock_map`). Every tick: perform an accepted mode
switch, one sync read per bus, check freshness, hardware alerts, following error and stalls
(`supervision`), take newly arrived chunks, choose this tick's target by mode, limit it with the
SafetyFilter, one sync write per bus, hand a `TickRecord` to the node.

Policy mode, when the chunk stream stops (the policy process died): the chunk in use plays on
until it runs out (then the arms hold its last action) or until the watchdog fires
(`watchdog_timeout_s` without a valid chunk; then the chunk is dropped and the arms decelerate to
the nearest stop within the acceleration limit), whichever comes first; the watchdog also forgets
the stream's epoch and order, so a restarted policy is taken at once. A new valid chunk resumes
execution, ramped from the held pose.

A read that is not fresh changes nothing the tick needs: the policy's target needs no reading,
teleop reuses the last leader pose; `max_consecutive_read_failures` in a row -> hold (or e-stop).
A write that fails reaches only that arm: it gets no command until a fresh reading re-syncs it.

The loop orchestrates three collaborators that own their state and share one `ModeState` (mode,
phase, torque, faults): `targets.Targets` chooses the target, `switching.ModeSwitch` performs
mode switches, `supervision.Supervisor` runs the checks.
"""

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from halo_ros.control.arms import FOLLOWERS, LEADERS, Poses, RobotArms, arm_joints, split
from halo_ros.control.chunks import ChunkBuffer, ChunkError, ControllerChunk, Rejection
from halo_ros.control.clock_map import StampMap
from halo_ros.control.config import ControllerConfig
from halo_ros.control.modes import (
    Mode,
    ModeState,
    Pending,
    Phase,
    Request,
    Snapshot,
    prepare,
    refused,
)
from halo_ros.control.parts import LoopParts
from halo_ros.control.realtime import SlackCollector
from halo_ros.control.safety import SafetyFilter
from halo_ros.control.stats import ControlStats
from halo_ros.control.supervision import Resync, Supervisor
from halo_ros.control.switching import ModeSwitch
from halo_ros.control.targets import Targets
from halo_ros.drivers.aloha_arm import ArmState
from halo_ros.drivers.aloha_calibration import ArmName, RobotCalibration
from halo_ros.joints import DOF
from halo_ros.sched import make_fifo

log = logging.getLogger(__name__)

_BRACKET_NS = 1_000_000  # a clock pair read further apart than this measures no offset


@dataclass(frozen=True)
class TickRecord:
    """One tick, as published (control_state, command, joint states)."""

    tick: int
    stamp_ns: int  # the tick's start on the stamps' clock (ROS time in the node)
    mode: Mode
    phase: Phase
    intervention: bool  # the operator took over from the policy; cleared by engage_policy
    chunk: tuple[int, int, float] | None  # (epoch, seq, point index) in use
    limits: frozenset  # Limit members that changed this tick's command
    command: np.ndarray | None  # (14,) followers' goal as sent; None when none was written
    states: Mapping[ArmName, ArmState]
    read_stamps_ns: Mapping[ArmName, int]  # each reading's time on the stamps' clock
    period_error_ms: float
    tick_ms: float  # from the start of the tick to the write done (what eats the period)


class ControlLoop:
    def __init__(
        self,
        arms: RobotArms,
        config: ControllerConfig,
        calibration: RobotCalibration,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        on_tick: Callable[[TickRecord], None] | None = None,
        pace_clock_ns: Callable[[], int] | None = None,
    ):
        """`clock_ns`: the stamps' clock (ROS time); `pace_clock_ns`: the control clock the
        thread ticks on (default monotonic; the simulated clock with sim time)."""
        self.arms = arms
        self.config = config
        self.clock_ns = clock_ns
        self._pacer = _WallPacer() if pace_clock_ns is None else _ClockPacer(pace_clock_ns)
        self.on_tick = on_tick
        self.stats = ControlStats()
        self.limits = config.follower_limits(calibration)
        self.follower_filter = SafetyFilter(self.limits, config.period_s)
        self.leader_filter = SafetyFilter(config.leader_limits(calibration), config.period_s)
        self.buffer = ChunkBuffer(
            config.period_ns,
            max_age_ns=int(config.max_chunk_age_s * 1e9),
            max_future_ns=int(config.max_chunk_future_s * 1e9),
        )
        self.state = ModeState()
        self.poses = Poses()  # last fresh reading of each pair
        parts = LoopParts(
            arms,
            config,
            self.state,
            self.follower_filter,
            self.leader_filter,
            self.buffer,
            self.stats,
            self.poses,
        )
        # Collaborators, each owning its state; a late fault or an alignment reaches the switch.
        self.targets = Targets(
            parts,
            release_leaders=lambda: self.switch.set_leader_torque(False),
            fault=lambda: self.switch.enter_hold(Phase.FAULT),
        )
        self.supervisor = Supervisor(parts, self.targets, fail=lambda a: self.switch.fail(a))
        self.switch = ModeSwitch(parts, self.targets, self.supervisor)
        self._stamps = StampMap(int(config.clock_step_tolerance_s * 1e9))
        self._inbox: deque[ControllerChunk] = deque()  # appended by the node's thread
        self._inbox_lock = threading.Lock()
        self._parked: ControllerChunk | None = None  # newest chunk while not in POLICY
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tick = 0
        self._last_tick_ns: int | None = None  # control time of the previous tick
        self._collector = SlackCollector() if config.gc_in_slack else None
        self.fifo_priority = 0  # SCHED_FIFO priority the loop thread got (0: normal)

    # The loop's state as the node and the tests read it (ModeState has the lock).
    mode = property(lambda self: self.state.mode)
    phase = property(lambda self: self.state.phase)
    intervention = property(lambda self: self.state.intervention)
    follower_torque = property(lambda self: self.state.follower_torque)
    faults = property(lambda self: self.state.faults)

    # -- thread -----------------------------------------------------------------------------

    def start(self) -> None:
        self.prime()
        self._thread = threading.Thread(target=self._run, name='control-loop', daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.switch.cancel_requests('the controller is shutting down')

    def shutdown(self, *, sleep: bool = True) -> str:
        """Stop, first driving every arm to its sleep pose (`sleep` and `sleep_on_exit`) so that
        the torque off that follows does not drop them; not from ESTOP or with the followers
        limp. Returns what happened, for the node's log."""
        outcome = 'stopped'
        try:
            if sleep and self.config.sleep_on_exit and self.running:
                ok, message = self.request(Request.SLEEP).wait(2.0)
                if not ok:
                    outcome = f'stopped where the arms are ({message})'
                elif self.switch.sleep_done.wait(self.config.sleep_timeout_s + 1.0):
                    outcome = f'stopped {self.phase.value}'
                else:
                    outcome = 'stopped before the arms reached the sleep pose (timeout)'
        finally:
            self.stop()
        return outcome

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        if self.config.realtime_priority > 0:
            # The bus workers too: their replies gate every tick (a normal-priority worker
            # would invert the priority).
            workers = [t for t in threading.enumerate() if t.name.startswith('bus-')]
            if make_fifo(self.config.realtime_priority, [threading.current_thread(), *workers]):
                self.fifo_priority = self.config.realtime_priority
        period = self.config.period_ns
        pacer = self._pacer
        pacer.wait_started(self._stop)
        deadline = pacer.now_ns()
        while not self._stop.is_set():
            pacer.sleep_until(deadline, self._stop)
            now = pacer.now_ns()
            stamp = self.clock_ns()
            if pacer.now_ns() - now > _BRACKET_NS:
                stamp = None  # preempted between the reads: keep the last mapping
            error = now - deadline
            if error < -10 * period:  # the clock went back (a restarted simulation): follow it
                deadline = now
                error = 0
            missed = error // period if error >= period else 0
            deadline += missed * period  # skip the deadlines already lost
            self.stats.tick(error / 1e6, missed)
            try:
                self.tick(now, error / 1e6, stamp_ns=stamp)
            except Exception:  # the loop must outlive any one bad tick
                self.stats.count('events', 'tick_error')
                log.exception('control tick %d failed', self._tick)
            deadline += period
            if self._collector is not None:
                self._collector.collect(deadline - pacer.now_ns())

    # -- requests (any thread) ----------------------------------------------------------------

    def submit_chunk(self, chunk: ControllerChunk) -> bool:
        """A validated chunk (make_chunk) from the node; taken at the next tick. False when
        refused (too long); a full queue drops its oldest. Both are counted."""
        if len(chunk.positions) > self.config.max_chunk_points:
            self.count_rejection(Rejection.TOO_LONG)
            return False
        with self._inbox_lock:
            if len(self._inbox) >= self.config.max_queued_chunks:
                self._inbox.popleft()
                self.count_rejection(Rejection.QUEUE_FULL)
            self._inbox.append(chunk)
        return True

    def count_rejection(self, reason) -> None:
        self.stats.count('rejections', reason.value)

    def snapshot(self) -> Snapshot:
        return self.state.snapshot()

    def request(self, request: Request) -> Pending:
        """Prepare (may refuse at once) and queue for the loop; `.wait()` for the outcome."""
        reason = prepare(request, self.snapshot())
        if reason:
            return refused(request, reason)
        pending = Pending(request)
        self.switch.requests.put(pending)
        return pending

    # -- the tick ---------------------------------------------------------------------------

    def prime(self) -> None:
        """First reading: filters start from the measured pose (call before the first tick)."""
        for _ in range(3):
            states = self.arms.read()
            if all(s.fresh for s in states.values()):
                break
        else:
            bad = {n.value: s.error for n, s in states.items() if not s.fresh}
            raise RuntimeError(f'controller start: arms not readable: {bad}')
        self.poses.remember(states)
        self.follower_filter.reset(self.poses.followers)
        self.leader_filter.reset(self.poses.leaders)
        self.targets.begin_hold(self.follower_filter.last_command)
        self.supervisor.sent[:] = np.nan
        if not self.config.leaders_hold_outside_teleop:
            self.switch.set_leader_torque(False)
        self.supervisor.check_alerts(states, force=True)

    def tick(
        self, now_ns: int, period_error_ms: float = 0.0, *, stamp_ns: int | None = None
    ) -> TickRecord:
        """One tick at `now_ns` on the control clock. `stamp_ns` is the same instant on the
        stamps' clock when that is another clock (the loop's thread passes ROS time); None keeps
        the last mapping (callers ticking on one clock: tests, the lockstep evaluation)."""
        mono_ns = time.monotonic_ns()  # pairs the tick with the readings' monotonic stamps
        stamp_ns = self._map_stamps(now_ns, stamp_ns)
        self.switch.perform_requests(now_ns)
        stalled_ns = 0 if self._last_tick_ns is None else now_ns - self._last_tick_ns
        self._last_tick_ns = now_ns
        states = self.arms.read()
        supervisor = self.supervisor
        supervisor.check_reads(states)
        self.poses.remember(states)
        supervisor.check_alerts(states)
        if stalled_ns >= 2 * self.config.period_ns:
            self._stalled(stalled_ns)
        supervisor.sync(states)
        supervisor.check_following(states)
        self._take_chunks(now_ns)
        target, leader_target, chunk = self.targets.choose(now_ns)
        if self.phase is not Phase.MOVING_TO_SLEEP:
            self.switch.sleep_done.set()  # arrived, or the way there ended (a fault, ~/hold)
        command, limits = None, frozenset()
        commands = {}
        if self.state.follower_torque:
            effort = np.array([states[a].effort_ma[6] for a in FOLLOWERS])
            grippers = np.array([states[a].gripper_position for a in FOLLOWERS])
            fresh = np.isfinite(effort).all() and np.isfinite(grippers).all()
            result = self.follower_filter.filter(
                target, effort if fresh else None, grippers if fresh else None
            )
            command, limits = result.command, frozenset(result.limited)
            commands.update(split(command, FOLLOWERS))
            for limit in limits:
                self.stats.count('limits', limit.value)
        elif self.poses.followers is not None:
            self.follower_filter.reset(self.poses.followers)  # limp: resume from where it is
        if leader_target is not None:
            commands.update(split(self.leader_filter.filter(leader_target).command, LEADERS))
        self._write(commands)
        record = TickRecord(
            tick=self._tick,
            stamp_ns=stamp_ns,
            mode=self.state.mode,
            phase=self.state.phase,
            intervention=self.state.intervention,
            chunk=chunk,
            limits=limits,
            command=command,
            states=states,
            read_stamps_ns={n: stamp_ns + (s.stamp_ns - mono_ns) for n, s in states.items()},
            period_error_ms=period_error_ms,
            tick_ms=(time.monotonic_ns() - mono_ns) / 1e6,
        )
        self._tick += 1
        if self.on_tick is not None:
            try:
                self.on_tick(record)
            except Exception:
                self.stats.count('events', 'publish_error')
                log.exception('publishing tick %d failed', record.tick)
        return record

    def _map_stamps(self, now_ns: int, stamp_ns: int | None) -> int:
        """This tick on the stamps' clock, measuring the offset when a reading came with it."""
        if stamp_ns is None:
            return self._stamps.to_stamp(now_ns)
        step = self._stamps.update(now_ns, stamp_ns)
        if step:
            self.stats.count('events', 'clock_step')
            log.warning(
                'clock step: ROS time moved %+.3f s against the control clock; stamps are '
                'mapped with the new offset from now on',
                step / 1e9,
            )
        return stamp_ns

    def _stalled(self, gap_ns: int) -> None:
        """The loop did not run for whole periods (GC, starvation): the goal stood still all
        that time and the servos (profile 0: they reach a goal within a tick or two) stand at
        it -- the measured motion is rest at the last goal. The filter continues from there,
        not from its own velocity (which would step the goal at full speed from rest: ~5x the
        acceleration limit). The goal stays continuous: nothing jumps to a noisy reading."""
        self.stats.count('events', 'stall')
        stalls = self.stats.events['stall']
        if stalls == 1 or stalls % 100 == 0:
            log.warning(
                'control loop stalled %.0f ms (stall %d): continuing from the measured motion',
                gap_ns / 1e6,
                stalls,
            )
        self.follower_filter.resync(None, np.zeros(DOF))
        self.leader_filter.resync(None, np.zeros(DOF))

    def _write(self, commands: dict[ArmName, np.ndarray]) -> None:
        """Sync writes for the arms that are in sync; an arm whose write fails is re-synced
        from its next fresh reading (its servos kept the last goal that reached them)."""
        supervisor = self.supervisor
        commands = {n: c for n, c in commands.items() if supervisor.in_sync(n)}
        supervisor.sent[:] = np.nan
        if not commands:
            return
        try:
            failed = self.arms.write(commands) or {}
        except Exception as error:  # an implementation that fails as a whole
            failed = dict.fromkeys(commands, error)
        for name, command in commands.items():
            if name in failed:
                continue
            if name in FOLLOWERS:
                supervisor.sent[arm_joints(name)] = command
        for name, error in failed.items():
            self.stats.count('write_failures', name.value)
            supervisor.need_resync([name], Resync.MOTION)
            if self.stats.write_failures[name.value] in (1, 10, 100, 1000):
                log.warning('%s: write failed: %s', name.value, error)

    def _take_chunks(self, now_ns: int) -> None:
        if self.state.mode is Mode.POLICY and self._parked is not None:
            self._offer(self._parked, now_ns)  # the newest chunk from before the engagement
            self._parked = None
        while True:
            with self._inbox_lock:
                if not self._inbox:
                    return
                chunk = self._inbox.popleft()
            chunk = replace(chunk, stamp_ns=self._stamps.to_control(chunk.stamp_ns))
            if self.state.mode is not Mode.POLICY:
                self._parked = chunk  # offered (and checked) when the policy is engaged
                continue
            self._offer(chunk, now_ns)

    def _offer(self, chunk: ControllerChunk, now_ns: int) -> None:
        try:
            self.buffer.offer(chunk, now_ns)
        except ChunkError as error:
            self.count_rejection(error.reason)
            log.debug('chunk seq %d refused: %s', chunk.seq, error)
            return
        self.stats.count('events', 'chunks_used')
        self.targets.chunk_taken(now_ns)
        if self.state.phase is Phase.WATCHDOG:
            log.info('chunks again (seq %d): resuming', chunk.seq)


class _WallPacer:
    """Ticks on the monotonic clock (a robot)."""

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def wait_started(self, stop: threading.Event) -> None:
        pass

    def sleep_until(self, deadline_ns: int, stop: threading.Event) -> None:
        delay = (deadline_ns - time.monotonic_ns()) / 1e9
        if delay > 0:
            time.sleep(delay)


class _ClockPacer:
    """Ticks on a simulated clock (ROS time from /clock): polls it every millisecond of wall
    time, which at any real-time factor <= 1 is finer than a 20 ms simulated period."""

    POLL_S = 0.001

    def __init__(self, clock_ns: Callable[[], int]):
        self._clock_ns = clock_ns

    def now_ns(self) -> int:
        return self._clock_ns()

    def wait_started(self, stop: threading.Event) -> None:
        while self._clock_ns() <= 0 and not stop.is_set():  # no /clock message yet
            stop.wait(0.01)

    def sleep_until(self, deadline_ns: int, stop: threading.Event) -> None:
        while self._clock_ns() < deadline_ns and not stop.is_set():
            time.sleep(self.POLL_S)
