"""Mode switches as the control loop performs them, at the start of a tick (ros2_control's
`perform_command_mode_switch`: inside the loop, fast; `modes.prepare` already accepted them).

`ModeSwitch` owns the queue of accepted requests and every change of mode and torque; what the
next ticks aim for it hands to `Targets` (`begin_*`), re-syncs to the `Supervisor`.
"""

import logging
import queue
import threading

from halo_ros.control.arms import FOLLOWERS, LEADERS
from halo_ros.control.config import EstopTorque, FailureAction
from halo_ros.control.modes import Mode, Pending, Phase, Request, prepare
from halo_ros.control.parts import LoopPart, LoopParts
from halo_ros.control.supervision import Supervisor
from halo_ros.control.targets import Targets

log = logging.getLogger(__name__)


class ModeSwitch(LoopPart):
    def __init__(
        self,
        parts: LoopParts,
        targets: Targets,
        supervisor: Supervisor,
    ):
        super().__init__(parts)
        self.targets = targets
        self.supervisor = supervisor
        self.requests: queue.SimpleQueue[Pending] = queue.SimpleQueue()
        self.sleep_done = threading.Event()  # set by the loop once the way to sleep ended

    def perform_requests(self, now_ns: int) -> None:
        while not self.requests.empty():
            pending = self.requests.get()
            reason = prepare(pending.request, self.state.snapshot())  # the state moved on?
            if reason:
                pending.finish(False, reason)
                continue
            try:
                message = self._perform(pending.request, now_ns)
            except Exception as error:
                log.exception('%s failed', pending.request.value)
                pending.finish(False, f'{pending.request.value} failed: {error}')
                continue
            log.info('%s: %s', pending.request.value, message)
            pending.finish(True, message)

    def cancel_requests(self, reason: str) -> None:
        while not self.requests.empty():
            self.requests.get().finish(False, reason)

    def _perform(self, request: Request, now_ns: int) -> str:
        if request is Request.ESTOP:
            self.estop()
            return f'ESTOP (torque {self.config.estop_torque.value})'
        if request is Request.HOLD:
            self.enter_hold(Phase.HOLDING)
            return 'HOLD'
        if request is Request.TELEOP:
            return self._engage_teleop(now_ns)
        if request is Request.POLICY:
            return self._engage_policy(now_ns)
        if request in (Request.TORQUE_ON, Request.TORQUE_OFF):
            return self._set_follower_torque(request is Request.TORQUE_ON)
        if request is Request.SLEEP:
            return self._go_to_sleep(now_ns)
        return self._reboot()

    # -- also on faults -----------------------------------------------------------------------

    def fail(self, action: FailureAction) -> None:
        if action is FailureAction.ESTOP:
            self.estop()
        elif self.state.mode is not Mode.ESTOP:
            self.enter_hold(Phase.FAULT)

    def estop(self) -> None:
        # Freeze: the command stops changing on this very tick (velocity zeroed).
        last = self.follower_filter.last_command
        self.follower_filter.reset(last)
        self.targets.begin_hold(last)
        self.buffer.stop()
        self.state.set(Mode.ESTOP, Phase.ESTOPPED)
        if self.config.estop_torque is EstopTorque.OFF and self.state.follower_torque:
            self.arms.set_torque(FOLLOWERS, False)
            self.state.set_follower_torque(False)
            self.state.phase = Phase.TORQUE_OFF

    def enter_hold(self, phase: Phase) -> None:
        if self.state.mode is Mode.ESTOP:
            self.targets.begin_hold(self.follower_filter.last_command)
        else:
            self.targets.begin_hold(self.follower_filter.stopping_point())
        self.buffer.stop()
        if self.config.leaders_hold_outside_teleop and not self.state.leader_torque:
            self.set_leader_torque(True)
        if not self.state.follower_torque:
            phase = Phase.TORQUE_OFF
        self.state.set(Mode.HOLD, phase)

    def set_leader_torque(self, enabled: bool) -> None:
        self.arms.set_torque(LEADERS, enabled)
        self.state.leader_torque = enabled

    # -- requests -------------------------------------------------------------------------------

    def _engage_teleop(self, now_ns: int) -> str:
        if self.state.mode is Mode.TELEOP:
            return 'already in TELEOP'
        took_over = self.state.mode is Mode.POLICY
        self.state.intervention = self.state.intervention or took_over
        self.targets.begin_aligning(now_ns)
        self.buffer.stop()
        if not self.state.leader_torque:
            self.set_leader_torque(True)
        if self.poses.leaders is not None:
            self.leader_filter.reset(self.poses.leaders)
        self.state.set(Mode.TELEOP, Phase.ALIGNING_LEADERS)
        return 'TELEOP: aligning the leaders' + (' (intervention)' if took_over else '')

    def _engage_policy(self, now_ns: int) -> str:
        """The chunk parked while not in POLICY is offered by the loop later in this tick."""
        if self.state.mode is Mode.POLICY:
            return 'already in POLICY'
        self.targets.begin_policy(now_ns)
        self.state.intervention = False
        if self.config.leaders_hold_outside_teleop and not self.state.leader_torque:
            self.set_leader_torque(True)
        self.state.set(Mode.POLICY, Phase.WAITING_FOR_CHUNK)
        return 'POLICY'

    def _set_follower_torque(self, enabled: bool) -> str:
        self.arms.set_torque(FOLLOWERS, enabled)
        self.state.set_follower_torque(enabled)
        if enabled:
            self.state.phase = Phase.ESTOPPED if self.state.mode is Mode.ESTOP else Phase.HOLDING
            self.supervisor.resync_followers()
        else:
            self.state.phase = Phase.TORQUE_OFF
        return f'follower torque {"on" if enabled else "off"}'

    def _go_to_sleep(self, now_ns: int) -> str:
        """Every arm to its sleep pose at sleep_velocity_rad_s (`Targets._sleep`); the leaders
        are held (torque on) for it."""
        self.buffer.stop()
        if not self.state.leader_torque:
            self.set_leader_torque(True)
        if self.poses.leaders is not None:
            self.leader_filter.reset(self.poses.leaders)
        self.targets.begin_sleep(now_ns)
        self.sleep_done.clear()
        self.state.set(Mode.HOLD, Phase.MOVING_TO_SLEEP)
        return 'moving to the sleep pose'

    def _reboot(self) -> str:
        faults = dict(self.state.faults)
        for arm, errors in faults.items():
            self.arms.reboot(arm, errors)
        remaining = self.arms.hardware_errors(faults)
        self.state.set_faults(remaining)
        if remaining:
            raise RuntimeError(f'errors remain after the reboot: {remaining}')
        self.stats.clear_hardware_errors()
        self.stats.count('events', 'reboot')
        self.state.phase = Phase.ESTOPPED if self.state.mode is Mode.ESTOP else Phase.HOLDING
        self.supervisor.resync_followers()
        rebooted = {a.value: sorted(e) for a, e in faults.items()}
        return f'rebooted {rebooted}; errors cleared, holding the measured pose'
