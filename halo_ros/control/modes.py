"""Modes, what the loop is doing inside a mode, and which switches are allowed.

Switches are split as in ros2_control: `prepare` runs outside the loop on a snapshot of its state
and may refuse with a reason; the loop performs an accepted switch at the start of its next tick.
"""

import threading
from dataclasses import dataclass
from enum import Enum

from halo_ros.drivers.aloha_calibration import ArmName


class Mode(Enum):
    HOLD = 'HOLD'  # keep pose (after decelerating)
    TELEOP = 'TELEOP'  # followers track the leaders
    POLICY = 'POLICY'  # followers track the chunk stream
    ESTOP = 'ESTOP'  # command frozen at once (torque per config)


class Phase(Enum):
    """What the loop does this tick within its mode (published with every tick)."""

    HOLDING = 'holding'
    ALIGNING_LEADERS = 'aligning_leaders'  # -> teleop: leaders driven to the followers' pose
    TRACKING_LEADERS = 'tracking_leaders'
    WAITING_FOR_CHUNK = 'waiting_for_chunk'  # policy engaged, no chunk in use yet
    RAMPING = 'ramping'  # blending from the held pose into the chunk stream
    FOLLOWING_CHUNK = 'following_chunk'
    CHUNK_DONE = 'chunk_done'  # the chunk ran out: holding its last action
    WATCHDOG = 'watchdog'  # no valid chunk within the timeout: decelerating to hold
    ESTOPPED = 'estopped'
    TORQUE_OFF = 'torque_off'  # followers limp (estop_torque off or ~/torque false)
    FAULT = 'fault'  # a latched hardware error, too many failed reads, a following error
    MOVING_TO_SLEEP = 'moving_to_sleep'  # all arms on their way to the sleep pose (exit)
    ASLEEP = 'asleep'  # holding the sleep pose: torque may go off without the arms falling


class Request(Enum):
    HOLD = 'hold'
    TELEOP = 'engage_teleop'
    POLICY = 'engage_policy'
    ESTOP = 'estop'
    TORQUE_ON = 'torque_on'
    TORQUE_OFF = 'torque_off'
    REBOOT = 'reboot'
    SLEEP = 'sleep'


@dataclass(frozen=True)
class Snapshot:
    """What `prepare` may look at (copied under the loop's lock)."""

    mode: Mode
    follower_torque: bool
    faults: str  # '' when no hardware error is latched, else which arm/servo/error


class ModeState:
    """What the loop is in: the one record its collaborators (switching, targets, supervision)
    read and change, and the only part other threads see (`snapshot`, under the lock)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.mode = Mode.HOLD
        self.phase = Phase.HOLDING
        self.intervention = False  # the operator took over from the policy
        self.follower_torque = True
        self.leader_torque = True
        self.faults: dict[ArmName, dict] = {}  # arm -> {servo id: HardwareError}

    def set(self, mode: Mode, phase: Phase) -> None:
        with self.lock:
            self.mode, self.phase = mode, phase

    def set_follower_torque(self, enabled: bool) -> None:
        with self.lock:
            self.follower_torque = enabled

    def set_faults(self, faults: dict) -> None:
        with self.lock:
            self.faults = dict(faults)

    def snapshot(self) -> Snapshot:
        with self.lock:
            faults = '; '.join(
                f'{arm.value} ID {i} {error!r}'
                for arm, errors in self.faults.items()
                for i, error in errors.items()
            )
            return Snapshot(self.mode, self.follower_torque, faults)


def prepare(request: Request, state: Snapshot) -> str:
    """'' when `request` may be performed from `state`, else the reason it is refused."""
    moving = state.mode in (Mode.TELEOP, Mode.POLICY)
    if request in (Request.TELEOP, Request.POLICY):
        if state.mode is Mode.ESTOP:
            return 'in ESTOP: call ~/hold first (the operator confirms the arms are clear)'
        if not state.follower_torque:
            return 'follower torque is off: call ~/torque true first'
        if state.faults:
            return f'hardware error latched ({state.faults}): call ~/reboot in HOLD first'
    if request is Request.SLEEP:
        if state.mode is Mode.ESTOP:
            return 'in ESTOP: the arms are not moved (torque goes off where they are)'
        if not state.follower_torque:
            return 'follower torque is off: nothing to move'
    if request in (Request.TORQUE_OFF, Request.REBOOT) and moving:
        return f'not while in {state.mode.value}: call ~/hold first'
    if request is Request.HOLD and state.mode is Mode.ESTOP and not state.follower_torque:
        return 'follower torque is off: call ~/torque true first'
    if request is Request.REBOOT and not state.faults:
        return 'no hardware error is latched'
    return ''


class Pending:
    """An accepted request on its way through the loop; `wait` returns (performed, message)."""

    def __init__(self, request: Request):
        self.request = request
        self._done = threading.Event()
        self.ok = False
        self.message = ''

    def finish(self, ok: bool, message: str) -> None:
        self.ok, self.message = ok, message
        self._done.set()

    def wait(self, timeout_s: float) -> tuple[bool, str]:
        if not self._done.wait(timeout_s):
            return False, f'{self.request.value}: the control loop did not act within {timeout_s} s'
        return self.ok, self.message


def refused(request: Request, reason: str) -> Pending:
    pending = Pending(request)
    pending.finish(False, reason)
    return pending
