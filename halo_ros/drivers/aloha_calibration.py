"""Per-robot ALOHA arm calibration: the schema of calibration/*.yaml, loading and validation.

Everything robot-specific lives in one YAML file per robot; the sim and a real robot differ only
in their port paths. Schema (version 1), every field required unless a default is given:

    version: 1
    bus:                                   # shared by all four buses
      baud_rate: 1000000                   # must match the servos' Baud Rate (3 = 1 Mbps)
      latency_timer_ms: 4.0                # reply timeout margin: the SDK waits bytes x 10 us +
                                           # 2 x this + 2 ms (the adapter's timer is 1 ms on ALOHA)
      max_attempts: 3                      # tries per transaction before an error is raised
    arms:                                  # any of follower_left, follower_right, leader_left,
      follower_left:                       # leader_right
        model: vx300s                      # vx300s (ViperX 300 S) | wx250s (WidowX 250 S)
        port: /dev/ttyDXL_follower_left    # ${VAR} and ${VAR:-default} are expanded at load
        profile_velocity: 0                # Profile Velocity (0.229 rpm units), 0 = none
        profile_acceleration: 0            # Profile Acceleration (214.577 rev/min^2), 0 = none
        joints:                            # all six, in any order
          waist: {offset_ticks: 2048, direction: 1, min_rad: -3.14, max_rad: 3.14}
          ...                              # shoulder, elbow, forearm_roll, wrist_angle,
                                           # wrist_rotate
        gripper:
          offset_ticks: 2048               # motor angle 0 rad
          direction: 1
          open_ticks: 3020                 # Present Position when fully open  (normalised 1)
          closed_ticks: 1643               # Present Position when fully closed (normalised 0)
          current_limit_ma: 807            # Current Limit of the gripper servo; required on
                                           # current-capable servos (XM), forbidden on XL430

A joint angle is `direction * (ticks - offset_ticks) * 2 pi / 4096` rad, where ticks is the
servo's Present Position (its Drive Mode already applied). The gripper's normalised position is
`(ticks - closed_ticks) / (open_ticks - closed_ticks)`: 0 = closed, 1 = open.
"""

import enum
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from halo_ros.drivers.aloha_motors import MOTOR_MAPS, ArmModel
from halo_ros.drivers.dynamixel.tables import BAUD_RATE_CODES, MA_PER_CURRENT_UNIT, RAD_PER_TICK
from halo_ros.sim.arm_io import SHAFT_NAMES

SCHEMA_VERSION = 1
JOINT_NAMES = SHAFT_NAMES[:6]
_MAX_TICKS = 1_048_575  # the extended position range
_POSITION_MODE_MAX_TICKS = 4095  # joints run in position mode: one turn, 0..4095
_ENV_REFERENCE = re.compile(r'\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}')


class ArmName(enum.Enum):
    FOLLOWER_LEFT = 'follower_left'
    FOLLOWER_RIGHT = 'follower_right'
    LEADER_LEFT = 'leader_left'
    LEADER_RIGHT = 'leader_right'

    @property
    def is_follower(self) -> bool:
        return self.value.startswith('follower')


class CalibrationError(ValueError):
    """A calibration file is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class JointCalibration:
    offset_ticks: int  # Present Position at 0 rad
    direction: int  # +1 or -1: the sign from ticks to the joint's positive direction
    min_rad: float  # commands below are refused (the safety filter limits first)
    max_rad: float

    def __post_init__(self) -> None:
        if self.direction not in (1, -1):
            raise ValueError(f'direction must be 1 or -1, got {self.direction!r}')
        if not abs(self.offset_ticks) <= _MAX_TICKS:
            raise ValueError(f'offset_ticks out of range: {self.offset_ticks}')
        if not (math.isfinite(self.min_rad) and math.isfinite(self.max_rad)):
            raise ValueError(f'min_rad/max_rad must be finite, got {self.min_rad}, {self.max_rad}')
        if not self.min_rad < self.max_rad:
            raise ValueError(f'min_rad {self.min_rad} must be below max_rad {self.max_rad}')
        for name, rad in (('min_rad', self.min_rad), ('max_rad', self.max_rad)):
            ticks = self.to_ticks(rad)
            if not 0 <= ticks <= _POSITION_MODE_MAX_TICKS:
                raise ValueError(
                    f'{name} {rad} maps to {ticks} ticks, outside the 0..4095 that a servo in '
                    'position mode can reach (check offset_ticks and direction)'
                )

    def to_rad(self, ticks: float) -> float:
        return self.direction * (ticks - self.offset_ticks) * RAD_PER_TICK

    def to_ticks(self, rad: float) -> int:
        return int(round(self.offset_ticks + self.direction * rad / RAD_PER_TICK))


@dataclass(frozen=True)
class GripperCalibration:
    offset_ticks: int  # Present Position at motor angle 0 rad
    direction: int
    open_ticks: int  # normalised 1
    closed_ticks: int  # normalised 0
    current_limit_ma: float | None  # Current Limit; None on servos without current control

    def __post_init__(self) -> None:
        if self.direction not in (1, -1):
            raise ValueError(f'direction must be 1 or -1, got {self.direction!r}')
        if self.open_ticks == self.closed_ticks:
            raise ValueError(f'open_ticks and closed_ticks are both {self.open_ticks}')
        if (
            self.current_limit_ma is not None
            and not 0 < self.current_limit_ma <= 2047 * MA_PER_CURRENT_UNIT
        ):
            raise ValueError(f'current_limit_ma out of range: {self.current_limit_ma}')

    @property
    def current_limit_units(self) -> int:
        return int(round(self.current_limit_ma / MA_PER_CURRENT_UNIT))

    def to_motor_rad(self, ticks: float) -> float:
        return self.direction * (ticks - self.offset_ticks) * RAD_PER_TICK

    def to_normalised(self, ticks: float) -> float:
        return (ticks - self.closed_ticks) / (self.open_ticks - self.closed_ticks)

    def to_ticks(self, normalised: float) -> int:
        return int(round(self.closed_ticks + normalised * (self.open_ticks - self.closed_ticks)))

    def motor_rad_from_normalised(self, normalised: float) -> float:
        return self.to_motor_rad(
            self.closed_ticks + normalised * (self.open_ticks - self.closed_ticks)
        )


@dataclass(frozen=True)
class ArmCalibration:
    name: ArmName
    model: ArmModel
    port: str  # after ${VAR} expansion
    joints: tuple[JointCalibration, ...]  # 6, in JOINT_NAMES order
    gripper: GripperCalibration
    baud_rate: int
    latency_timer_ms: float
    max_attempts: int
    profile_velocity: int = 0
    profile_acceleration: int = 0

    def __post_init__(self) -> None:
        if len(self.joints) != len(JOINT_NAMES):
            raise ValueError(
                f'{self.name.value}: need {len(JOINT_NAMES)} joints, got {len(self.joints)}'
            )
        if self.baud_rate not in BAUD_RATE_CODES:
            raise ValueError(f'baud_rate {self.baud_rate} is not one of {sorted(BAUD_RATE_CODES)}')
        if not 0 < self.latency_timer_ms <= 255:
            raise ValueError(f'latency_timer_ms must be in (0, 255], got {self.latency_timer_ms}')
        if not 1 <= self.max_attempts <= 10:
            raise ValueError(f'max_attempts must be 1..10, got {self.max_attempts}')
        gripper_servo = MOTOR_MAPS[self.model][6].primary.model
        if gripper_servo.has_current_control and self.gripper.current_limit_ma is None:
            raise ValueError(
                f'gripper.current_limit_ma is required: the {self.model.value} gripper '
                f'({gripper_servo.name}) runs in current-based position mode'
            )
        if not gripper_servo.has_current_control and self.gripper.current_limit_ma is not None:
            raise ValueError(
                f'gripper.current_limit_ma must be omitted: the {self.model.value} gripper '
                f'({gripper_servo.name}) has no current control'
            )


@dataclass(frozen=True)
class RobotCalibration:
    arms: dict[ArmName, ArmCalibration]
    path: Path | None = None

    def arm(self, name: ArmName | str) -> ArmCalibration:
        name = ArmName(name)
        if name not in self.arms:
            raise KeyError(
                f'{self.path}: no arm {name.value!r}; has {[a.value for a in self.arms]}'
            )
        return self.arms[name]


def expand_env(text: str, *, field: str, environ: dict[str, str] | None = None) -> str:
    """Expand ${VAR} and ${VAR:-default}; an unset ${VAR} without a default is an error."""
    environ = os.environ if environ is None else environ

    def replace(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if value:
            return value
        if default is not None:
            return default
        raise CalibrationError(
            f'{field}: environment variable {name} is not set and has no default'
        )

    return _ENV_REFERENCE.sub(replace, text)


def load(path: str | Path, *, environ: dict[str, str] | None = None) -> RobotCalibration:
    """Read and validate a calibration file; errors name the file and the field."""
    path = Path(path)
    with open(path, encoding='utf-8') as f:
        document = yaml.safe_load(f)
    try:
        return parse(document, environ=environ, path=path)
    except CalibrationError as error:
        raise CalibrationError(f'{path}: {error}') from None


def parse(document: Any, *, environ=None, path: Path | None = None) -> RobotCalibration:
    root = _Section(document, '')
    version = root.get('version', int)
    if version != SCHEMA_VERSION:
        raise CalibrationError(f'version: expected {SCHEMA_VERSION}, got {version}')
    bus = root.section('bus')
    common = {
        'baud_rate': bus.get('baud_rate', int),
        'latency_timer_ms': bus.get('latency_timer_ms', float),
        'max_attempts': bus.get('max_attempts', int, default=3),
    }
    bus.done()
    arms_section = root.section('arms')
    arms = {}
    for key in list(arms_section.data):
        try:
            name = ArmName(key)
        except ValueError:
            raise CalibrationError(
                f'arms.{key}: unknown arm; expected one of {[a.value for a in ArmName]}'
            ) from None
        arms[name] = _parse_arm(arms_section.section(key), name, common, environ)
    arms_section.done()
    root.done()
    if not arms:
        raise CalibrationError('arms: no arm is configured')
    return RobotCalibration(arms=arms, path=path)


def _parse_arm(section: '_Section', name: ArmName, common: dict, environ) -> ArmCalibration:
    model_text = section.get('model', str)
    try:
        model = ArmModel(model_text)
    except ValueError:
        raise CalibrationError(
            f'{section.path}.model: {model_text!r} is not one of {[m.value for m in ArmModel]}'
        ) from None
    port = expand_env(section.get('port', str), field=f'{section.path}.port', environ=environ)
    joints_section = section.section('joints')
    joints = []
    for joint in JOINT_NAMES:
        js = joints_section.section(joint)
        joints.append(
            js.build(
                JointCalibration,
                offset_ticks=js.get('offset_ticks', int),
                direction=js.get('direction', int),
                min_rad=js.get('min_rad', float),
                max_rad=js.get('max_rad', float),
            )
        )
    joints_section.done()
    gs = section.section('gripper')
    gripper = gs.build(
        GripperCalibration,
        offset_ticks=gs.get('offset_ticks', int),
        direction=gs.get('direction', int),
        open_ticks=gs.get('open_ticks', int),
        closed_ticks=gs.get('closed_ticks', int),
        current_limit_ma=gs.get('current_limit_ma', float, default=None),
    )
    return section.build(
        ArmCalibration,
        name=name,
        model=model,
        port=port,
        joints=tuple(joints),
        gripper=gripper,
        profile_velocity=section.get('profile_velocity', int, default=0),
        profile_acceleration=section.get('profile_acceleration', int, default=0),
        **common,
    )


_MISSING = object()


class _Section:
    """A mapping in the YAML document that knows its dotted path, for error messages."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise CalibrationError(
                f'{path or "document"}: expected a mapping, got {type(data).__name__}'
            )
        self.data = data
        self.path = path
        self._used: set[str] = set()

    def _field(self, key: str) -> str:
        return f'{self.path}.{key}' if self.path else key

    def get(self, key: str, kind: type, default: Any = _MISSING) -> Any:
        self._used.add(key)
        if key not in self.data or self.data[key] is None:
            if default is _MISSING:
                raise CalibrationError(f'{self._field(key)}: missing')
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CalibrationError(f'{self._field(key)}: expected {kind.__name__}, got {value!r}')
        return value

    def section(self, key: str) -> '_Section':
        self._used.add(key)
        if key not in self.data:
            raise CalibrationError(f'{self._field(key)}: missing')
        return _Section(self.data[key], self._field(key))

    def build(self, cls: type, **fields):
        """cls(**fields), with a dataclass's ValueError prefixed by this section's path."""
        self.done()
        try:
            return cls(**fields)
        except ValueError as error:
            raise CalibrationError(f'{self.path}: {error}') from None

    def done(self) -> None:
        unknown = sorted(set(self.data) - self._used)
        if unknown:
            raise CalibrationError(f'{self._field(unknown[0])}: unknown field')
