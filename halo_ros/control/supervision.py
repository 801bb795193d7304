"""What the control loop watches on every tick besides the command: reads that fail, latched
hardware errors, following error, stalls, and arms whose filter must start again from a reading.

`Supervisor` owns what the checks carry from tick to tick (failed reads in a row, ticks beyond
the path tolerance, the command sent last, the arms waiting for a re-sync); what a failure does
(hold or e-stop) is the loop's `fail` callback.

- Read failures: `max_consecutive_read_failures` in a row on an arm the mode needs -> action.
- Hardware errors: an alert bit is confirmed by two alike readings of defined bits -> action.
- Following error (ros2_control's path tolerance): measured vs the command sent the tick before,
  beyond `path_tolerance_rad` for `following_error_ticks` ticks -> hold at the measured pose.
- Re-sync (`Resync`): after torque on, a reboot or a write that did not reach an arm, the
  filter of that arm continues from its measured motion -- from a *fresh* reading only; until
  one comes nothing is written to that arm (its servos hold their last goal).
"""

import enum
import functools
import logging
import operator
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from halo_ros.control.arms import FOLLOWERS, LEADERS, arm_joints
from halo_ros.control.config import FailureAction
from halo_ros.control.modes import Mode
from halo_ros.control.parts import LoopPart, LoopParts
from halo_ros.control.targets import Targets
from halo_ros.drivers.aloha_arm import ArmState
from halo_ros.drivers.aloha_calibration import ArmName
from halo_ros.drivers.dynamixel.bus import DynamixelCommError
from halo_ros.drivers.dynamixel.tables import HardwareError
from halo_ros.joints import BIMANUAL_JOINTS

log = logging.getLogger(__name__)

_KNOWN_ERRORS = functools.reduce(operator.or_, (int(e) for e in HardwareError))


class Resync(enum.IntEnum):
    """How much of an arm's filter state a fresh reading replaces (a larger value includes the
    smaller ones)."""

    MOTION = 1  # the servo's goal may differ from the filter's (a lost write, a following error)
    POSE = 2  # the arm was limp (torque on, reboot): also hold where it is


class Supervisor(LoopPart):
    def __init__(
        self,
        parts: LoopParts,
        targets: Targets,
        *,
        fail: Callable[[FailureAction], None],
    ):
        super().__init__(parts)
        self.targets = targets
        self._fail = fail
        self._failures = {name: 0 for name in FOLLOWERS + LEADERS}  # failed reads in a row
        self._lagging = np.zeros(14, int)  # ticks in a row beyond the path tolerance
        self._path_tolerance = parts.config.path_tolerance
        self.sent = np.full(14, np.nan)  # follower command written last tick (NaN: none)
        # Arms whose filter restarts from their next fresh reading, and how much of it.
        self._unsynced: dict[ArmName, Resync] = {}

    def in_sync(self, name: ArmName) -> bool:
        return name not in self._unsynced

    # -- reads and hardware errors ------------------------------------------------------------

    def check_reads(self, states: Mapping[ArmName, ArmState]) -> None:
        needed = FOLLOWERS + (LEADERS if self.state.mode is Mode.TELEOP else ())
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

    def check_alerts(self, states: Mapping[ArmName, ArmState], force: bool = False) -> None:
        alerting = [n for n, s in states.items() if s.alert_ids and n not in self.state.faults]
        if force:
            alerting = list(states)
        if not alerting:
            return
        found = self._confirmed_errors(alerting)
        if not found:
            return
        self.state.set_faults({**self.state.faults, **found})
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

    # -- following error ------------------------------------------------------------------------

    def check_following(self, states: Mapping[ArmName, ArmState]) -> None:
        """Measured vs the command of the tick before, per follower joint (grippers exempt)."""
        sent = self.sent
        if self.state.mode is Mode.ESTOP or not self.state.follower_torque:
            self._lagging[:] = 0
            return
        measured = np.full(14, np.nan)
        for name in FOLLOWERS:
            if states[name].fresh:
                measured[arm_joints(name)] = states[name].position()
        error = np.abs(self.follower_filter.difference(measured, sent))
        over = error > self._path_tolerance  # False where NaN: not read or not sent
        self._lagging = np.where(over, self._lagging + 1, 0)
        worst = int(np.argmax(np.where(over, self._lagging, -1)))
        if self._lagging[worst] < self.config.following_error_ticks:
            return
        joint = BIMANUAL_JOINTS[worst]
        self.stats.following_error(joint, float(error[worst]))
        log.error(
            'following error: %s %.3f rad from its command for %d ticks (tolerance %.2f): '
            'holding at the measured pose',
            joint,
            error[worst],
            self._lagging[worst],
            self._path_tolerance[worst],
        )
        self._lagging[:] = 0
        self.need_resync(FOLLOWERS, Resync.MOTION)
        self.sync(states)
        self._fail(FailureAction.HOLD)

    # -- re-sync from a fresh reading -----------------------------------------------------------

    def need_resync(self, names: Iterable[ArmName], kind: Resync) -> None:
        for name in names:
            self._unsynced[name] = max(kind, self._unsynced.get(name, kind))

    def sync(self, states: Mapping[ArmName, ArmState]) -> None:
        """Every arm waiting for a re-sync that has a fresh reading continues from it."""
        for name in [n for n in self._unsynced if states[n].fresh]:
            kind = self._unsynced.pop(name)
            state, joints = states[name], arm_joints(name)
            position, velocity = np.zeros(14), np.zeros(14)
            position[joints], velocity[joints] = state.position(), state.velocity()
            mask = np.zeros(14, bool)
            mask[joints] = True
            if name in LEADERS:
                self.leader_filter.resync(position, velocity, mask)
                continue
            self.follower_filter.resync(position, velocity, mask)
            self.sent[mask] = np.nan  # nothing was sent from here yet
            if kind is Resync.POSE:  # the arm was limp: where it is now is what to hold
                self.targets.hold_measured(mask)

    def resync_followers(self, attempts: int = 3) -> None:
        """After torque on or a reboot: the filter starts again from the measured pose, read
        fresh (a stale reading would start it where the arm was before it fell)."""
        self.need_resync(FOLLOWERS, Resync.POSE)
        for _ in range(attempts):
            states = self.arms.read()
            self.poses.remember(states)
            self.sync(states)
            if not set(FOLLOWERS) & set(self._unsynced):
                return
        waiting = {n.value: states[n].error for n in FOLLOWERS if n in self._unsynced}
        raise RuntimeError(
            f'no fresh reading of {sorted(waiting)} in {attempts} tries ({waiting}): nothing is '
            'sent to them until one comes (their servos hold the present pose)'
        )
