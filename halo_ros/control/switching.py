"""Mode switches as the control loop performs them, at the start of a tick (ros2_control's
`perform_command_mode_switch`: inside the loop, fast; `modes.prepare` already accepted them).

A mixin of `ControlLoop`: it uses the loop's arms, filters, buffer and mode state.
"""

import logging

from halo_ros.control.arms import FOLLOWERS, LEADERS
from halo_ros.control.config import EstopTorque
from halo_ros.control.modes import Mode, Phase, Request, prepare

log = logging.getLogger(__name__)


class ModeSwitching:
    def _perform_requests(self, now_ns: int) -> None:
        while not self._requests.empty():
            pending = self._requests.get()
            reason = prepare(pending.request, self.snapshot())  # the state may have moved on
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

    def _perform(self, request: Request, now_ns: int) -> str:
        if request is Request.ESTOP:
            self._estop()
            return f'ESTOP (torque {self.config.estop_torque.value})'
        if request is Request.HOLD:
            self._enter_hold(Phase.HOLDING)
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

    def _set_mode(self, mode: Mode, phase: Phase) -> None:
        with self._lock:
            self.mode, self.phase = mode, phase

    def _estop(self) -> None:
        # Freeze: the command stops changing on this very tick (velocity zeroed).
        last = self.follower_filter.last_command
        self.follower_filter.reset(last)
        self._hold = last
        self.buffer.stop()
        self._set_mode(Mode.ESTOP, Phase.ESTOPPED)
        if self.config.estop_torque is EstopTorque.OFF and self.follower_torque:
            self.arms.set_torque(FOLLOWERS, False)
            with self._lock:
                self.follower_torque = False
            self.phase = Phase.TORQUE_OFF

    def _enter_hold(self, phase: Phase) -> None:
        if self.mode is Mode.ESTOP:
            self._hold = self.follower_filter.last_command
        else:
            self._hold = self.follower_filter.stopping_point()
        self.buffer.stop()
        self._ramp_from = None
        if self.config.leaders_hold_outside_teleop and not self.leader_torque:
            self._set_leader_torque(True)
        if not self.follower_torque:
            phase = Phase.TORQUE_OFF
        self._set_mode(Mode.HOLD, phase)

    def _engage_teleop(self, now_ns: int) -> str:
        if self.mode is Mode.TELEOP:
            return 'already in TELEOP'
        took_over = self.mode is Mode.POLICY
        self.intervention = self.intervention or took_over
        self._hold = self.follower_filter.stopping_point()
        self.buffer.stop()
        if not self.leader_torque:
            self._set_leader_torque(True)
        if self._leaders is not None:
            self.leader_filter.reset(self._leaders)
        self._align_deadline_ns = now_ns + int(self.config.leader_align_timeout_s * 1e9)
        self._set_mode(Mode.TELEOP, Phase.ALIGNING_LEADERS)
        return 'TELEOP: aligning the leaders' + (' (intervention)' if took_over else '')

    def _engage_policy(self, now_ns: int) -> str:
        if self.mode is Mode.POLICY:
            return 'already in POLICY'
        self._hold = self.follower_filter.stopping_point()
        self.intervention = False
        if self.config.leaders_hold_outside_teleop and not self.leader_torque:
            self._set_leader_torque(True)
        self._last_chunk_ns = now_ns  # the watchdog counts from the engagement
        self._set_mode(Mode.POLICY, Phase.WAITING_FOR_CHUNK)
        if self._parked is not None:
            self._offer(self._parked, now_ns)
            self._parked = None
        return 'POLICY'

    def _set_leader_torque(self, enabled: bool) -> None:
        self.arms.set_torque(LEADERS, enabled)
        self.leader_torque = enabled

    def _set_follower_torque(self, enabled: bool) -> str:
        self.arms.set_torque(FOLLOWERS, enabled)
        with self._lock:
            self.follower_torque = enabled
        if enabled:
            self.phase = Phase.ESTOPPED if self.mode is Mode.ESTOP else Phase.HOLDING
            self._resync_followers()
        else:
            self.phase = Phase.TORQUE_OFF
        return f'follower torque {"on" if enabled else "off"}'

    def _go_to_sleep(self, now_ns: int) -> str:
        """Every arm to its sleep pose at sleep_velocity_rad_s (`targets._sleep`); the leaders
        are held (torque on) for it."""
        self._hold = self.follower_filter.stopping_point()
        self.buffer.stop()
        self._ramp_from = None
        if not self.leader_torque:
            self._set_leader_torque(True)
        if self._leaders is not None:
            self.leader_filter.reset(self._leaders)
        self._leader_hold = self.leader_filter.last_command
        self._sleep_deadline_ns = now_ns + int(self.config.sleep_timeout_s * 1e9)
        self._sleep_done.clear()
        self._set_mode(Mode.HOLD, Phase.MOVING_TO_SLEEP)
        return 'moving to the sleep pose'

    def _reboot(self) -> str:
        with self._lock:
            faults = dict(self.faults)
        for arm, errors in faults.items():
            self.arms.reboot(arm, errors)
        remaining = self.arms.hardware_errors(faults)
        with self._lock:
            self.faults = dict(remaining)
        if remaining:
            raise RuntimeError(f'errors remain after the reboot: {remaining}')
        self.stats.clear_hardware_errors()
        self.stats.count('events', 'reboot')
        self._set_mode(self.mode, Phase.ESTOPPED if self.mode is Mode.ESTOP else Phase.HOLDING)
        self._resync_followers()
        rebooted = {a.value: sorted(e) for a, e in faults.items()}
        return f'rebooted {rebooted}; errors cleared, holding the measured pose'
