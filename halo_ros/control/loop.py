"""The 50 Hz control loop: read, choose the command by mode, filter, write, publish.

It runs on its own thread against a monotonic deadline (not an executor timer, which a busy
callback would delay), or, in a simulation with sim time, against the simulated clock
(`pace_clock_ns`): then it ticks at 50 Hz of simulated time, whatever the real-time factor.
Every tick: perform an accepted mode switch, one sync read per bus, check freshness and hardware
alerts, take newly arrived chunks, choose this tick's target by mode, limit it with the
SafetyFilter, one sync write per bus, hand a `TickRecord` to the node.

Policy mode, when the chunk stream stops (the policy process died): the chunk in use plays on
until it runs out (then the arms hold its last action) or until the watchdog fires
(`watchdog_timeout_s` without a valid chunk; then the chunk is dropped and the arms decelerate to
the nearest stop within the acceleration limit), whichever comes first; the watchdog also forgets
the stream's epoch and order, so a restarted policy is taken at once. A new valid chunk resumes
execution, ramped from the held pose.

A read that is not fresh changes nothing the tick needs: the policy's target needs no reading,
teleop reuses the last leader pose; `max_consecutive_read_failures` in a row -> hold (or e-stop).

Choosing the target lives in `targets.TargetSelection`, performing mode switches in
`switching.ModeSwitching` (mixins sharing this loop's state).
"""

import functools
import logging
import operator
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from halo_ros.control.arms import FOLLOWERS, LEADERS, RobotArms, join, split
from halo_ros.control.chunks import Chunk, ChunkBuffer, ChunkError
from halo_ros.control.config import ControllerConfig, FailureAction
from halo_ros.control.modes import Mode, Pending, Phase, Request, Snapshot, prepare, refused
from halo_ros.control.safety import SafetyFilter
from halo_ros.control.stats import ControlStats
from halo_ros.control.switching import ModeSwitching
from halo_ros.control.targets import TargetSelection
from halo_ros.drivers.aloha_arm import ArmState
from halo_ros.drivers.aloha_calibration import ArmName, RobotCalibration
from halo_ros.drivers.dynamixel.bus import DynamixelCommError
from halo_ros.drivers.dynamixel.tables import HardwareError

log = logging.getLogger(__name__)

_KNOWN_ERRORS = functools.reduce(operator.or_, (int(e) for e in HardwareError))


@dataclass(frozen=True)
class TickRecord:
    """One tick, as published (control_state, command, joint states)."""

    tick: int
    stamp_ns: int  # clock_ns() at the tick's start (ROS time in the node)
    mode: Mode
    phase: Phase
    intervention: bool  # the operator took over from the policy; cleared by engage_policy
    chunk: tuple[int, int, float] | None  # (epoch, seq, point index) in use
    limits: frozenset  # Limit members that changed this tick's command
    command: np.ndarray | None  # (14,) followers' goal as sent; None when none was written
    states: Mapping[ArmName, ArmState]
    read_stamps_ns: Mapping[ArmName, int]  # each reading's time on the clock_ns() clock
    period_error_ms: float
    tick_ms: float  # from the start of the tick to the write done (what eats the period)


class ControlLoop(ModeSwitching, TargetSelection):
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
        self._inbox: deque[Chunk] = deque(maxlen=16)  # appended by the node's thread
        self._requests: queue.SimpleQueue[Pending] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.mode = Mode.HOLD
        self.phase = Phase.HOLDING
        self.intervention = False
        self.faults: dict[ArmName, dict] = {}  # arm -> {id: HardwareError}
        self.follower_torque = True
        self.leader_torque = True
        self._tick = 0
        self._hold: np.ndarray | None = None  # target while holding
        self._leaders: np.ndarray | None = None  # last fresh leader pose (14,)
        self._followers: np.ndarray | None = None  # last fresh follower pose (14,)
        self._target: np.ndarray | None = None
        self._failures = {name: 0 for name in FOLLOWERS + LEADERS}
        self._parked: Chunk | None = None  # newest chunk while not in POLICY
        self._last_chunk_ns = 0
        self._ramp_from: np.ndarray | None = None
        self._ramp_start_ns = 0
        self._align_deadline_ns = 0

    # -- thread -----------------------------------------------------------------------------

    def start(self) -> None:
        self.prime()
        self._thread = threading.Thread(target=self._run, name='control-loop', daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        while not self._requests.empty():
            self._requests.get().finish(False, 'the controller is shutting down')

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        if self.config.realtime_priority > 0:
            self._make_realtime(self.config.realtime_priority)
        period = self.config.period_ns
        pacer = self._pacer
        pacer.wait_started(self._stop)
        deadline = pacer.now_ns()
        while not self._stop.is_set():
            pacer.sleep_until(deadline, self._stop)
            error = pacer.now_ns() - deadline
            if error < -10 * period:  # the clock went back (a restarted simulation): follow it
                deadline = pacer.now_ns()
                error = 0
            missed = error // period if error >= period else 0
            deadline += missed * period  # skip the deadlines already lost
            self.stats.tick(error / 1e6, missed)
            try:
                self.tick(self.clock_ns(), error / 1e6)
            except Exception:  # the loop must outlive any one bad tick
                self.stats.count('events', 'tick_error')
                log.exception('control tick %d failed', self._tick)
            deadline += period

    @staticmethod
    def _make_realtime(priority: int) -> None:
        """SCHED_FIFO for this thread and the bus workers it waits on (their replies gate every
        tick; a normal-priority worker would invert the priority)."""
        threads = [threading.current_thread()] + [
            t for t in threading.enumerate() if t.name.startswith('bus-')
        ]
        for thread in threads:
            try:
                os.sched_setscheduler(thread.native_id, os.SCHED_FIFO, os.sched_param(priority))
            except OSError as error:
                log.warning(
                    'SCHED_FIFO %d for %s refused (%s): normal priority',
                    priority,
                    thread.name,
                    error,
                )
                return
        log.info('SCHED_FIFO %d for %s', priority, [t.name for t in threads])

    # -- requests (any thread) ----------------------------------------------------------------

    def submit_chunk(self, chunk: Chunk) -> None:
        """A validated chunk (make_chunk) from the node; taken at the next tick."""
        self._inbox.append(chunk)

    def count_rejection(self, reason) -> None:
        self.stats.count('rejections', reason.value)

    def snapshot(self) -> Snapshot:
        with self._lock:
            faults = '; '.join(
                f'{arm.value} ID {i} {error!r}'
                for arm, errors in self.faults.items()
                for i, error in errors.items()
            )
            return Snapshot(self.mode, self.follower_torque, faults)

    def request(self, request: Request) -> Pending:
        """Prepare (may refuse at once) and queue for the loop; `.wait()` for the outcome."""
        reason = prepare(request, self.snapshot())
        if reason:
            return refused(request, reason)
        pending = Pending(request)
        self._requests.put(pending)
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
        self._remember(states)
        self.follower_filter.reset(self._followers)
        self.leader_filter.reset(self._leaders)
        self._hold = self.follower_filter.last_command
        self._target = self._hold.copy()
        if not self.config.leaders_hold_outside_teleop:
            self._set_leader_torque(False)
        self._check_alerts(states, force=True)

    def tick(self, now_ns: int, period_error_ms: float = 0.0) -> TickRecord:
        mono_ns = time.monotonic_ns()  # pairs now_ns with the readings' monotonic stamps
        self._perform_requests(now_ns)
        states = self.arms.read()
        self._check_reads(states)
        self._remember(states)
        self._check_alerts(states)
        self._take_chunks(now_ns)
        target, leader_target, chunk = self._choose(now_ns)
        command, limits = None, frozenset()
        commands = {}
        if self.follower_torque:
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
        elif self._followers is not None:
            self.follower_filter.reset(self._followers)  # limp: resume from where it is
        if leader_target is not None:
            commands.update(split(self.leader_filter.filter(leader_target).command, LEADERS))
        if commands:
            try:
                self.arms.write(commands)
            except Exception as error:  # a write that fails must not stop the loop
                self.stats.count('write_failures', type(error).__name__)
                log.warning('write failed: %s', error)
        self._target = target
        record = TickRecord(
            tick=self._tick,
            stamp_ns=now_ns,
            mode=self.mode,
            phase=self.phase,
            intervention=self.intervention,
            chunk=chunk,
            limits=limits,
            command=command,
            states=states,
            read_stamps_ns={n: now_ns + (s.stamp_ns - mono_ns) for n, s in states.items()},
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

    def _remember(self, states: Mapping[ArmName, ArmState]) -> None:
        if all(states[a].fresh for a in FOLLOWERS):
            self._followers = join({a: states[a].position() for a in FOLLOWERS}, FOLLOWERS)
        if all(states[a].fresh for a in LEADERS):
            self._leaders = join({a: states[a].position() for a in LEADERS}, LEADERS)

    def _check_reads(self, states: Mapping[ArmName, ArmState]) -> None:
        needed = FOLLOWERS + (LEADERS if self.mode is Mode.TELEOP else ())
        for name, state in states.items():
            if state.fresh:
                self._failures[name] = 0
                continue
            self.stats.count('read_failures', name.value)
            self._failures[name] += 1
            limit = self.config.max_consecutive_read_failures
            if name in needed and self._failures[name] == limit:
                log.error('%s: %d reads in a row failed (%s)', name.value, limit, state.error)
                self._fail(self.config.read_failure_action)

    def _check_alerts(self, states: Mapping[ArmName, ArmState], force: bool = False) -> None:
        alerting = [n for n, s in states.items() if s.alert_ids and n not in self.faults]
        if force:
            alerting = list(states)
        if not alerting:
            return
        found = self._confirmed_errors(alerting)
        if not found:
            return
        with self._lock:
            self.faults.update(found)
        for arm, errors in found.items():
            described = {i: repr(e) for i, e in errors.items()}
            self.stats.set_hardware_errors(arm.value, described)
            log.error(
                '%s: latched hardware error %s; holding, ~/reboot recovers', arm.value, described
            )
        self._fail(self.config.hardware_error_action)

    def _confirmed_errors(self, names) -> dict:
        """Hardware errors read twice alike and made of defined bits only: a reply garbled on
        the wire (or a late reply taken for this one) must not stop the robot. A read that gets
        no answer confirms nothing: the servo's alert bit asks again on a later tick."""
        try:
            first = self.arms.hardware_errors(names)
            if not first:
                return {}
            second = self.arms.hardware_errors(list(first))
        except DynamixelCommError as error:
            self.stats.count('events', 'hardware_error_read_failed')
            log.warning('hardware error status not readable: %s', error)
            return {}
        confirmed = {
            arm: errors
            for arm, errors in first.items()
            if second.get(arm) == errors
            and all(int(e) & ~_KNOWN_ERRORS == 0 for e in errors.values())
        }
        if confirmed != first:
            self.stats.count('events', 'unconfirmed_hardware_error')
            log.warning('hardware error readings not confirmed: %s then %s', first, second)
        return confirmed

    def _fail(self, action: FailureAction) -> None:
        if action is FailureAction.ESTOP:
            self._estop()
        elif self.mode is not Mode.ESTOP:
            self._enter_hold(Phase.FAULT)

    def _take_chunks(self, now_ns: int) -> None:
        while self._inbox:
            chunk = self._inbox.popleft()
            if self.mode is not Mode.POLICY:
                self._parked = chunk  # offered (and checked) when the policy is engaged
                continue
            self._offer(chunk, now_ns)

    def _offer(self, chunk: Chunk, now_ns: int) -> None:
        try:
            self.buffer.offer(chunk, now_ns)
        except ChunkError as error:
            self.count_rejection(error.reason)
            log.debug('chunk seq %d refused: %s', chunk.seq, error)
            return
        self.stats.count('events', 'chunks_used')
        self._last_chunk_ns = now_ns
        if self.phase is Phase.WATCHDOG:
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
