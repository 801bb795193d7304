"""Checking a recorded command stream against the limits, as the servos would have received it.

Used by the tests, the soak (`halo-ros soak-controller`) and anyone auditing a bag: commands
(followers' goals, one per tick) with the tick stamps. Per tick: inside the position limits, at
most max_velocity x period from the tick before, the velocity changed by at most
max_acceleration x period. One exception, which no controller can avoid: at a stall (a tick 1.5
periods or more after the one before) the goal stood still for the whole gap -- a halt from the
velocity before, which is not judged; the steps after it are (the loop continues from rest).
The other, by design: a hold on a following error re-syncs the command to the measured pose (as
ros2_control's trajectory controller holds where the arm is). The goal steps to where the joint
already stands -- no motion -- so a step that lands on the joint's measurement (`landed_on`) is
not judged, nor is the halt of that step on the tick after.
"""

from dataclasses import dataclass

import numpy as np

from halo_ros.control.safety import JointLimits
from halo_ros.joints import BIMANUAL_JOINTS


@dataclass(frozen=True)
class Violation:
    tick: int  # index into the stream
    joint: str
    kind: str  # position | velocity | acceleration
    value: float
    limit: float

    def __str__(self) -> str:
        return f'tick {self.tick} {self.joint}: {self.kind} {self.value:.4g} over {self.limit:.4g}'


def violations(
    commands: np.ndarray,
    stamps_ns: np.ndarray,
    limits: JointLimits,
    period_ns: int,
    *,
    velocity_tolerance: float = 1e-6,
    acceleration_tolerance: float = 1e-3,
    resynced: np.ndarray | None = None,
) -> list[Violation]:
    """Every limit a stream of (T, 14) commands at `stamps_ns` (T,) breaks (empty: none).

    `resynced` (T, 14) bool: joints whose command at that tick was re-synced to their measured
    pose (see `landed_on`); their step into that tick and its halt on the next are not judged."""
    commands, stamps = np.asarray(commands, np.float64), np.asarray(stamps_ns, np.int64)
    if commands.ndim != 2 or commands.shape[1] != len(BIMANUAL_JOINTS):
        raise ValueError(f'commands must have shape (T, 14), got {commands.shape}')
    if stamps.shape != (len(commands),):
        raise ValueError(f'stamps_ns must have shape ({len(commands)},), got {stamps.shape}')
    period = period_ns / 1e9
    found = []

    def report(kind, offset, excess, value, limit):
        limit = np.broadcast_to(limit, value.shape)
        for row, joint in zip(*np.nonzero(excess), strict=True):
            found.append(
                Violation(
                    int(row) + offset,  # rows of differences start `offset` ticks in
                    BIMANUAL_JOINTS[joint],
                    kind,
                    float(value[row, joint]),
                    float(limit[row, joint]),
                )
            )

    outside = (commands < limits.lower - 1e-9) | (commands > limits.upper + 1e-9)
    bound = np.where(commands < limits.lower, limits.lower, limits.upper)
    report('position', 0, outside, commands, bound)
    # Tick k+1 came after a stall: a deadline was skipped (stamps jitter: 39.97 ms is 2 periods).
    stalled = np.diff(stamps) >= 1.5 * period_ns
    velocity = np.diff(commands, axis=0) / period  # steps into ticks 1..T-1
    speed = np.abs(velocity)
    too_fast = speed > limits.max_velocity + velocity_tolerance
    acceleration = np.abs(np.diff(velocity, axis=0)) / period  # into ticks 2..T-1
    acceleration[stalled[1:]] = 0.0  # the halt at a stall: the loop was not running
    excess = acceleration > limits.max_acceleration + acceleration_tolerance
    if resynced is not None:
        resynced = np.asarray(resynced, bool)
        if resynced.shape != commands.shape:
            raise ValueError(f'resynced must have shape {commands.shape}, got {resynced.shape}')
        too_fast &= ~resynced[1:]  # the step onto the measurement
        excess &= ~(resynced[2:] | resynced[1:-1])  # ... and its halt on the tick after
    report('velocity', 1, too_fast, speed, limits.max_velocity)
    report('acceleration', 2, excess, acceleration, limits.max_acceleration)
    return found


def landed_on(
    commands: np.ndarray, measured: np.ndarray, limits: JointLimits, period_ns: int
) -> np.ndarray:
    """(T, 14) bool: joints whose command is within one tick's travel at the velocity limit of
    their measurement (NaN: not measured, False) -- where a re-sync to the measured pose puts
    it. For `violations(resynced=...)`, together with the ticks at which the loop re-synced."""
    commands, measured = np.asarray(commands, np.float64), np.asarray(measured, np.float64)
    if measured.shape != commands.shape:
        raise ValueError(f'measured must have shape {commands.shape}, got {measured.shape}')
    reach = limits.max_velocity * period_ns / 1e9 + 1e-6
    with np.errstate(invalid='ignore'):
        return np.abs(commands - measured) <= reach
