"""The controller's settings: one frozen dataclass, read from config/controller.yaml.

Every field has a reason comment here and in the YAML. Joint position limits are not here: they
come from the robot's calibration file (the same numbers the driver refuses commands beyond).
"""

import logging
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path

import numpy as np
import yaml

from halo_ros.control.safety import JointLimits
from halo_ros.drivers.aloha_calibration import ArmName, RobotCalibration
from halo_ros.paths import config_file

log = logging.getLogger(__name__)


class FailureAction(Enum):
    HOLD = 'hold'  # decelerate to a stop, torque stays on
    ESTOP = 'estop'  # e-stop: see estop_torque


class EstopTorque(Enum):
    HOLD = 'hold'  # freeze the command, torque on: arms stay up (ALOHA arms fall when limp)
    OFF = 'off'  # torque off on the followers: they go limp (and fall)


@dataclass(frozen=True)
class ControllerConfig:
    # ALOHA's control period (DT = 0.02 s); the policy's chunks are made for the same rate.
    rate_hz: float = 50.0
    # Calibration file (under calibration/ or a path): ports, joint ranges = position limits.
    calibration: str = 'sim_aloha.yaml'
    # Per joint (waist..wrist_rotate) of each follower; ~ the servos' Velocity Limit 131 (pi
    # rad/s, Interbotix ALOHA configs) minus a margin: fast enough for teleop, bounded per tick.
    max_velocity_rad_s: tuple[float, ...] = (2.5, 2.5, 2.5, 3.0, 3.0, 3.0)
    # Gripper, normalised units/s (0 closed .. 1 open): a full close in ~0.25 s.
    gripper_max_velocity_per_s: float = 4.0
    # Joint acceleration: 0 -> 2.5 rad/s in ~0.1 s; bounds the torque step a jump would cause.
    max_acceleration_rad_s2: tuple[float, ...] = (25.0, 25.0, 25.0, 30.0, 30.0, 30.0)
    gripper_max_acceleration_per_s2: float = 60.0
    # Stop closing a gripper whose current exceeds this (below its 807 mA Current Limit): a
    # stalled gripper latches Overload after a few seconds (interbotix_ros_arms#26).
    gripper_current_limit_ma: float = 600.0
    # Policy mode: no valid chunk for this long -> stop the chunk and decelerate to hold.
    # A chunk covers 1 s (50 x 20 ms) and arrives every ~0.1-0.2 s; 0.3 s is two missed chunks.
    watchdog_timeout_s: float = 0.3
    # A chunk whose observation is older than this is refused (it acts on a world that moved).
    max_chunk_age_s: float = 1.0
    # Tolerated clock skew for chunks stamped ahead of our clock (both on one host's clock).
    max_chunk_future_s: float = 0.05
    # Teleop/hold -> policy: blend from the held pose into the chunk stream over this time.
    policy_ramp_s: float = 1.0
    # Policy/hold -> teleop: the leaders are driven (torque on) to the followers' pose at this
    # speed, released when every joint is within the tolerance, or the switch fails after timeout.
    leader_align_velocity_rad_s: float = 1.0
    leader_align_tolerance_rad: float = 0.03
    leader_align_timeout_s: float = 6.0
    # Leaders hold (torque on) outside teleop, as ALOHA does between episodes, so a handover
    # starts from where they were left.
    leaders_hold_outside_teleop: bool = True
    # Reads that are not fresh: the tick reuses the last target; this many in a row -> action.
    max_consecutive_read_failures: int = 5
    read_failure_action: FailureAction = FailureAction.HOLD
    # A latched Dynamixel hardware error (alert bit) on any arm -> action; ~/reboot recovers.
    hardware_error_action: FailureAction = FailureAction.HOLD
    estop_torque: EstopTorque = EstopTorque.HOLD
    # Chunks longer than this are refused before they are converted: HALO's H is 50, 10x that
    # leaves room for other policies while a hostile message cannot take the node's memory.
    max_chunk_points: int = 500
    # Chunks waiting for the next tick (5-40 arrive per second, every tick takes them all): more
    # means the loop stalled; the oldest are dropped and counted.
    max_queued_chunks: int = 8
    # ROS time (the wall clock on a robot) is mapped once per tick onto the control clock
    # (monotonic); an offset that moves by more than this is a clock step (chrony), counted.
    # Slewing (at most 83 ms/s, chrony's maxslewrate) stays below it per tick.
    clock_step_tolerance_s: float = 0.05
    # Following error (ros2_control's path tolerance): a joint measured further than this from
    # the command sent the tick before, for following_error_ticks ticks in a row -> hold at the
    # measured pose. Per joint waist..wrist_rotate: a servo tracking at full speed lags ~0.1-0.2
    # rad (one tick plus its P-loop). Grippers are exempt: one closed on an object stops short of
    # its command by design (the current limit looks after it).
    path_tolerance_rad: tuple[float, ...] = (0.3, 0.3, 0.3, 0.4, 0.4, 0.4)
    following_error_ticks: int = 5
    # Every exit except from ESTOP (Ctrl-C, the bring-up ending) first drives all four arms to a
    # sleep pose at a safe speed, then torque goes off: ALOHA arms fall when limp. Followers:
    # ALOHA's sleep.py pose; leaders: Interbotix's wx250s sleep pose. Grippers stay as they are.
    sleep_on_exit: bool = True
    follower_sleep_pose_rad: tuple[float, ...] = (0.0, -1.7, 1.55, 0.12, 0.65, 0.0)
    leader_sleep_pose_rad: tuple[float, ...] = (0.0, -1.88, 1.6, 0.0, -1.6, 0.0)
    # ALOHA's sleep.py takes 2 s for ~1.5 rad; give up (torque off anyway) after the timeout.
    sleep_velocity_rad_s: float = 0.8
    sleep_tolerance_rad: float = 0.05
    sleep_timeout_s: float = 8.0
    # Real-time measures (halo_ros.control.realtime; BENCHMARKS.md has each one on and off).
    # SCHED_FIFO priority for the loop thread and its bus workers (needs root, CAP_SYS_NICE or
    # rtprio; refused -> one warning, normal priority); 0 = normal threads.
    realtime_priority: int = 40
    # mlockall: no page of the controller process is paged out (or faulted in) mid-tick.
    lock_memory: bool = True
    # The garbage collector off the hot path: objects of the start-up frozen, automatic
    # collection off, the loop collects in the slack after each tick's write.
    gc_in_slack: bool = True
    # Python's GIL hand-over interval (default 5 ms): how long the loop may wait for another
    # thread of its process (the ROS executor) to let go. 0 keeps Python's default.
    switch_interval_ms: float = 0.5

    def __post_init__(self):
        if not 1 <= self.rate_hz <= 1000:
            raise ValueError(f'rate_hz must be in [1, 1000], got {self.rate_hz}')
        for name in ('max_velocity_rad_s', 'max_acceleration_rad_s2', 'path_tolerance_rad'):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 6 or min(value) <= 0:
                raise ValueError(f'{name} needs 6 positive values, got {value}')
            object.__setattr__(self, name, value)
        for name in ('follower_sleep_pose_rad', 'leader_sleep_pose_rad'):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 6 or not np.isfinite(value).all():
                raise ValueError(f'{name} needs 6 finite joint angles, got {value}')
            object.__setattr__(self, name, value)
        for name in ('max_chunk_points', 'max_queued_chunks', 'following_error_ticks'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
        if not 0 <= self.realtime_priority <= 99:
            raise ValueError(f'realtime_priority must be in [0, 99], got {self.realtime_priority}')
        if self.switch_interval_ms < 0:
            raise ValueError(f'switch_interval_ms must be >= 0, got {self.switch_interval_ms}')
        for name in (
            'gripper_max_velocity_per_s',
            'gripper_max_acceleration_per_s2',
            'gripper_current_limit_ma',
            'watchdog_timeout_s',
            'max_chunk_age_s',
            'leader_align_velocity_rad_s',
            'leader_align_tolerance_rad',
            'leader_align_timeout_s',
            'clock_step_tolerance_s',
            'sleep_velocity_rad_s',
            'sleep_tolerance_rad',
            'sleep_timeout_s',
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f'{name} must be > 0, got {getattr(self, name)}')
        if self.policy_ramp_s < 0 or self.max_chunk_future_s < 0:
            raise ValueError('policy_ramp_s and max_chunk_future_s must be >= 0')
        if self.max_consecutive_read_failures < 1:
            raise ValueError(
                f'max_consecutive_read_failures must be >= 1, got '
                f'{self.max_consecutive_read_failures}'
            )
        for name, kind in (
            ('read_failure_action', FailureAction),
            ('hardware_error_action', FailureAction),
            ('estop_torque', EstopTorque),
        ):
            object.__setattr__(self, name, kind(getattr(self, name)))

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz

    @property
    def period_ns(self) -> int:
        return int(round(1e9 / self.rate_hz))

    @property
    def path_tolerance(self) -> np.ndarray:
        """(14,) per joint of the followers; inf on the grippers (exempt)."""
        return np.array((list(self.path_tolerance_rad) + [np.inf]) * 2)

    def sleep_pose(self, role: str) -> np.ndarray:
        """(14,) sleep pose of the followers or leaders; NaN on the grippers (they stay)."""
        pose = self.follower_sleep_pose_rad if role == 'follower' else self.leader_sleep_pose_rad
        return np.array((list(pose) + [np.nan]) * 2)

    def follower_limits(self, calibration: RobotCalibration) -> JointLimits:
        return self._limits(calibration, 'follower')

    def leader_limits(self, calibration: RobotCalibration) -> JointLimits:
        """Leaders are only driven to align them: at leader_align_velocity_rad_s."""
        return self._limits(calibration, 'leader', self.leader_align_velocity_rad_s)

    def _limits(self, calibration, role: str, velocity: float | None = None) -> JointLimits:
        lower, upper = [], []
        for side in ('left', 'right'):
            arm = calibration.arm(ArmName(f'{role}_{side}'))
            lower += [j.min_rad for j in arm.joints] + [0.0]
            upper += [j.max_rad for j in arm.joints] + [1.0]
        arm_v = list(self.max_velocity_rad_s) + [self.gripper_max_velocity_per_s]
        arm_a = list(self.max_acceleration_rad_s2) + [self.gripper_max_acceleration_per_s2]
        max_v = np.array(arm_v * 2)
        if velocity is not None:
            max_v = np.minimum(max_v, velocity)
        return JointLimits(
            lower=np.array(lower),
            upper=np.array(upper),
            max_velocity=max_v,
            max_acceleration=np.array(arm_a * 2),
            gripper_current_limit_ma=self.gripper_current_limit_ma,
        )


def load_config(path: str | Path | None = None, **overrides) -> ControllerConfig:
    """config/controller.yaml (or `path`), then `overrides`; unknown keys are errors."""
    path = config_file('controller.yaml') if path is None else Path(path)
    with open(path, encoding='utf-8') as f:
        document = yaml.safe_load(f) or {}
    if not isinstance(document, dict):
        raise ValueError(f'{path}: expected a mapping, got {type(document).__name__}')
    values = {**document, **overrides}
    known = {f.name for f in fields(ControllerConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f'{path}: unknown controller settings {unknown}; known: {sorted(known)}')
    for key in (
        'max_velocity_rad_s',
        'max_acceleration_rad_s2',
        'path_tolerance_rad',
        'follower_sleep_pose_rad',
        'leader_sleep_pose_rad',
    ):
        if key in values:
            values[key] = tuple(values[key])
    try:
        return ControllerConfig(**values)
    except ValueError as error:
        raise ValueError(f'{path}: {error}') from None
