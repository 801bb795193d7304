"""Which servo drives which shaft on the two ALOHA arm models: motor maps as data.

These are facts of the arm models, the same on every robot built from them (Interbotix
`interbotix_xsarm_control/config/aloha_{vx300s,wx250s}.yaml`, Trossen servo tables); per-robot
numbers (offsets, limits, gripper range, ports) live in calibration/*.yaml instead.

Shoulder and elbow carry a second, mirrored *shadow* motor whose Secondary ID is the primary's ID:
it executes every packet sent to the primary and never answers, so the host drives seven shafts
with seven IDs while nine servos share the load.
"""

import enum
from dataclasses import dataclass

import numpy as np

from halo_ros.drivers.dynamixel.tables import SECONDARY_ID_OFF, SERVO_SPECS, ServoModel

_XM540 = ServoModel.XM540_W270
_XM430 = ServoModel.XM430_W350
_XL430 = ServoModel.XL430_W250


class ArmModel(enum.Enum):
    VX300S = 'vx300s'  # ViperX 300 S: ALOHA follower ("puppet")
    WX250S = 'wx250s'  # WidowX 250 S: ALOHA leader ("master")


@dataclass(frozen=True)
class Motor:
    id: int
    model: ServoModel
    reverse: bool  # Drive Mode bit 0
    secondary_id: int = SECONDARY_ID_OFF

    @property
    def drive_mode(self) -> int:
        return int(self.reverse)


@dataclass(frozen=True)
class ShaftMotors:
    shaft: str
    primary: Motor
    shadows: tuple[Motor, ...] = ()

    @property
    def motors(self) -> tuple[Motor, ...]:
        return (self.primary, *self.shadows)


_VX300S = (
    ShaftMotors('waist', Motor(1, _XM540, False)),
    ShaftMotors('shoulder', Motor(2, _XM540, True), (Motor(3, _XM540, False, secondary_id=2),)),
    ShaftMotors('elbow', Motor(4, _XM540, True), (Motor(5, _XM540, False, secondary_id=4),)),
    ShaftMotors('forearm_roll', Motor(6, _XM540, False)),
    ShaftMotors('wrist_angle', Motor(7, _XM540, True)),
    ShaftMotors('wrist_rotate', Motor(8, _XM430, False)),
    ShaftMotors('gripper', Motor(9, _XM430, False)),
)
_WX250S = (
    ShaftMotors('waist', Motor(1, _XM430, False)),
    ShaftMotors('shoulder', Motor(2, _XM430, False), (Motor(3, _XM430, True, secondary_id=2),)),
    ShaftMotors('elbow', Motor(4, _XM430, False), (Motor(5, _XM430, True, secondary_id=4),)),
    ShaftMotors('forearm_roll', Motor(6, _XM430, False)),
    ShaftMotors('wrist_angle', Motor(7, _XM430, True)),
    ShaftMotors('wrist_rotate', Motor(8, _XL430, False)),
    ShaftMotors('gripper', Motor(9, _XL430, False)),
)

MOTOR_MAPS: dict[ArmModel, tuple[ShaftMotors, ...]] = {
    ArmModel.VX300S: _VX300S,
    ArmModel.WX250S: _WX250S,
}


def all_motors(model: ArmModel) -> tuple[Motor, ...]:
    """Every servo of the arm in ID order (1..9)."""
    return tuple(sorted((m for s in MOTOR_MAPS[model] for m in s.motors), key=lambda m: m.id))


def primary_ids(model: ArmModel) -> tuple[int, ...]:
    """The IDs the host commands, in shaft order (waist..gripper)."""
    return tuple(s.primary.id for s in MOTOR_MAPS[model])


def shaft_limits(model: ArmModel) -> tuple[np.ndarray, np.ndarray]:
    """(no-load speed rad/s, stall torque N m) of each of the 7 shafts at 12 V: the speed of its
    primary servo, the torque of all its servos together (a shadow doubles shoulder and elbow)."""
    shafts = MOTOR_MAPS[model]
    speed = np.array([SERVO_SPECS[s.primary.model].no_load_speed_rad_s for s in shafts])
    torque = np.array([sum(SERVO_SPECS[m.model].stall_torque_nm for m in s.motors) for s in shafts])
    return speed, torque
