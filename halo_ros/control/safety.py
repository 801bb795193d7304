"""The last word before a command reaches the servos: position, velocity and acceleration limits.

ALOHA's followers run with profile velocity and acceleration 0, so the servos jump to whatever
they are told: every limit must be enforced here, per 20 ms tick. The filter reports what it
changed (never clamps silently) and the command it returns is the one sent and recorded.
"""

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from halo_ros.joints import DOF, GRIPPER_INDICES


class Limit(Enum):
    POSITION = 'position'
    VELOCITY = 'velocity'
    ACCELERATION = 'acceleration'
    GRIPPER_CURRENT = 'gripper_current'
    NON_FINITE = 'non_finite'


@dataclass(frozen=True)
class JointLimits:
    """Per joint of the 14-vector. Joints in rad, rad/s, rad/s^2; grippers in normalised units/s."""

    lower: np.ndarray
    upper: np.ndarray
    max_velocity: np.ndarray
    max_acceleration: np.ndarray
    gripper_current_limit_ma: float = 300.0  # hold the gripper rather than squeeze past this

    def __post_init__(self):
        for name in ('lower', 'upper', 'max_velocity', 'max_acceleration'):
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.shape != (DOF,) or not np.isfinite(value).all():
                raise ValueError(f'limits.{name}: expected 14 finite values, got {value}')
            object.__setattr__(self, name, value)
        if (self.lower >= self.upper).any():
            raise ValueError(
                f'limits: lower must be below upper at {np.flatnonzero(self.lower >= self.upper)}'
            )
        if (self.max_velocity <= 0).any() or (self.max_acceleration <= 0).any():
            raise ValueError('limits: max_velocity and max_acceleration must be positive')


@dataclass
class FilterResult:
    command: np.ndarray  # (14,) what is sent
    limited: set = field(default_factory=set)  # Limit members that changed the command


FULL_TURN_RAD = 2 * np.pi - 0.02  # a range this wide holds both ends of one turn (e.g. +-3.14)


class SafetyFilter:
    def __init__(self, limits: JointLimits, period_s: float):
        self.limits = limits
        self.period_s = period_s
        # Joints whose range spans a whole turn (waist, forearm roll, wrist rotate: +-3.14): +pi
        # and -pi are one shaft angle, so a target is taken as the equivalent angle nearest the
        # present command (ros2_control's angle_wraparound, kept inside the limits). A policy
        # that sees only images cannot tell +pi from -pi; without this, picking the other one
        # would command a full turn of the arm.
        self._full_turn = (limits.upper - limits.lower) >= FULL_TURN_RAD
        self._full_turn[list(GRIPPER_INDICES)] = False
        self._command = None  # last command sent
        self._velocity = np.zeros(DOF)

    @property
    def last_command(self) -> np.ndarray | None:
        return None if self._command is None else self._command.copy()

    @property
    def velocity(self) -> np.ndarray:
        return self._velocity.copy()

    @property
    def full_turn(self) -> np.ndarray:
        """(14,) bool: joints whose range spans a whole turn (+pi and -pi are one angle)."""
        return self._full_turn.copy()

    def difference(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """a - b, on full-turn joints the shortest equivalent angle (in [-pi, pi)): the way an
        arm at b really has to go to reach a. Blends and tolerances must use this, never the raw
        difference (-3.1 to +3.1 is 0.08 rad, not 6.2)."""
        delta = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
        wrapped = (delta + np.pi) % (2 * np.pi) - np.pi
        return np.where(self._full_turn, wrapped, delta)

    def stopping_point(self) -> np.ndarray:
        """Where the last command comes to rest when braking at the acceleration limit from its
        present velocity (the target of a smooth hold), inside the position limits."""
        if self._command is None:
            raise RuntimeError('SafetyFilter.stopping_point before reset(): no starting pose')
        v = self._velocity
        travel = v * np.abs(v) / (2 * self.limits.max_acceleration)
        return np.clip(self._command + travel, self.limits.lower, self.limits.upper)

    def reset(self, position: np.ndarray) -> None:
        """Start from a measured pose at rest (on activation, after an e-stop)."""
        self._command = np.clip(
            np.asarray(position, dtype=np.float64), self.limits.lower, self.limits.upper
        )
        self._velocity = np.zeros(DOF)

    def resync(
        self,
        position: np.ndarray | None,
        velocity: np.ndarray,
        joints: np.ndarray | None = None,
    ) -> None:
        """Continue from a measured motion state (after a stall, a lost port): the next command
        starts from where the arm is (None: from the last command) and how fast it moves, within
        the limits. `joints` (14,) bool picks the joints to resync (default all)."""
        if self._command is None:
            raise RuntimeError('SafetyFilter.resync before reset(): no starting pose')
        joints = np.ones(DOF, bool) if joints is None else np.asarray(joints, bool)
        lim = self.limits
        position = self._command if position is None else position
        position = np.clip(np.asarray(position, dtype=np.float64), lim.lower, lim.upper)
        velocity = np.clip(
            np.asarray(velocity, dtype=np.float64), -lim.max_velocity, lim.max_velocity
        )
        self._command = np.where(joints, position, self._command)
        self._velocity = np.where(joints, velocity, self._velocity)

    def filter(
        self,
        target: np.ndarray,
        gripper_effort_ma: np.ndarray | None = None,
        gripper_position: np.ndarray | None = None,
    ) -> FilterResult:
        """The command for this tick that moves towards `target` within every limit."""
        if self._command is None:
            raise RuntimeError('SafetyFilter.filter before reset(): no starting pose')
        lim, dt = self.limits, self.period_s
        limited = set()
        target = np.asarray(target, dtype=np.float64)
        if target.shape != (DOF,) or not np.isfinite(target).all():
            limited.add(Limit.NON_FINITE)
            target = self._command  # hold: never pass a NaN on
        if self._full_turn.any():
            target = self._nearest_turn(target)
        clipped = np.clip(target, lim.lower, lim.upper)
        if not np.array_equal(clipped, target):
            limited.add(Limit.POSITION)
        target = clipped
        if gripper_effort_ma is not None and gripper_position is not None:
            target = self._gripper_current(target, gripper_effort_ma, gripper_position, limited)

        # Velocity towards the target, capped so the arm can still stop exactly on it braking
        # at most `a` per tick (the discrete time-optimal profile, `_braking_speed`), then changed
        # by at most a * dt from the last tick. The acceleration limit always holds: when the
        # target jumps back towards a moving arm, it overshoots and returns rather than stopping
        # dead. Within the position limits either way: the speed towards a limit is capped so the
        # arm can stop before it (the target is inside them, so this never fights the target).
        distance = target - self._command
        a = lim.max_acceleration
        wanted = distance / dt
        if np.any(np.abs(wanted) > lim.max_velocity):
            limited.add(Limit.VELOCITY)
        cap = np.minimum(lim.max_velocity, _braking_speed(np.abs(distance), a, dt))
        velocity = np.clip(wanted, -cap, cap)
        dv = np.clip(velocity - self._velocity, -a * dt, a * dt)
        if not np.allclose(dv, velocity - self._velocity):
            limited.add(Limit.ACCELERATION)
        velocity = self._velocity + dv
        # The last step of a stop lands on the target exactly (when that is a feasible step).
        past = np.sign(distance) * velocity * dt > np.abs(distance)
        landing = past & (np.abs(wanted - self._velocity) <= a * dt + 1e-12)
        velocity = np.where(landing, wanted, velocity)
        up = _braking_speed(np.maximum(lim.upper - self._command, 0.0), a, dt)
        down = _braking_speed(np.maximum(self._command - lim.lower, 0.0), a, dt)
        bounded = np.clip(velocity, -down, up)
        if not np.array_equal(bounded, velocity):
            limited.add(Limit.POSITION)
        self._velocity = bounded
        command = np.clip(self._command + self._velocity * dt, lim.lower, lim.upper)
        self._command = command
        return FilterResult(command.copy(), limited)

    def _nearest_turn(self, target: np.ndarray) -> np.ndarray:
        """On full-turn joints, of target and target +-2 pi those inside the limits (give or take
        a few hundredths, clipped after) the one nearest the present command."""
        lim = self.limits
        candidates = target + np.array([[0.0], [-2 * np.pi], [2 * np.pi]])  # (3, DOF)
        inside = (candidates >= lim.lower - 0.05) & (candidates <= lim.upper + 0.05)
        distance = np.where(inside, np.abs(candidates - self._command), np.inf)
        best = candidates[np.argmin(distance, axis=0), np.arange(DOF)]
        return np.where(self._full_turn & inside.any(axis=0), best, target)

    def _gripper_current(self, target, effort_ma, gripper_position, limited):
        # A gripper pressing on an object beyond its current limit latches an overload after a few
        # seconds (Interbotix/interbotix_ros_arms#26): whenever the current is over the limit --
        # while closing, and also while holding a squeeze (target = command) -- the command may
        # not push further into whatever blocks the gripper than where the gripper is. Moving
        # away from the obstacle stays allowed.
        target = target.copy()
        for i, (index, effort) in enumerate(zip(GRIPPER_INDICES, effort_ma, strict=True)):
            if abs(effort) <= self.limits.gripper_current_limit_ma:
                continue
            measured = gripper_position[i]
            if self._command[index] <= measured:  # pushing closed (on an object)
                relieved = max(target[index], measured)
            else:  # pushing open (against something)
                relieved = min(target[index], measured)
            if relieved != target[index]:
                target[index] = relieved
                limited.add(Limit.GRIPPER_CURRENT)
        return target


def _braking_speed(distance: np.ndarray, a: np.ndarray, dt: float) -> np.ndarray:
    """The highest speed from which a stop exactly `distance` away is reachable when the speed
    falls by at most a * dt per tick: m whole braking steps of a*dt plus one partial step."""
    step = a * dt * dt
    m = np.floor((np.sqrt(1 + 8 * distance / step) - 1) / 2)
    return np.maximum(a * dt * m + (distance - step * m * (m + 1) / 2) / ((m + 1) * dt), 0.0)
