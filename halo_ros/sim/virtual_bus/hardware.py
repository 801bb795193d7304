"""Hardware truth of a virtual arm: how each servo's encoder sits on its shaft.

A servo reports Present Position = drive_sign * (encoder - 2048 + Homing Offset) + 2048, where
drive_sign is -1 when Drive Mode bit 0 (reverse) is set. The offset acting before the reversal is
inferred from Interbotix's shadow calibration (interbotix_xs_sdk xs_sdk_obj.cpp: with Homing
Offset 0, a normal-mode shadow gets master - shadow, a reverse-mode one shadow - master); the
e-Manual text was not checked. How the encoder sits on the shaft (mount sign and zero) is fixed by
the build. For the virtual robot the mount is chosen so that, with the factory Drive Mode of the
motor map and Homing Offset 0, the robot reads exactly as its calibration file says (plus an
optional per-servo assembly error); a driver that rewrites Drive Mode or Homing Offset sees the
servo respond as hardware would.
"""

from collections.abc import Mapping
from dataclasses import dataclass

from halo_ros.drivers.aloha_calibration import ArmCalibration
from halo_ros.drivers.aloha_motors import MOTOR_MAPS, Motor
from halo_ros.drivers.dynamixel.tables import (
    CENTER_TICKS,
    MA_PER_CURRENT_UNIT,
    RAD_PER_TICK,
    RAD_S_PER_VELOCITY_UNIT,
    ServoModel,
)

_XL430_STALL_MA = 1400.0  # XL430-W250 stall current at 12 V, to express current as Present Load


@dataclass(frozen=True)
class ServoMount:
    motor: Motor
    shaft: int  # 0..6 in arm_io.SHAFT_NAMES order
    primary: bool  # the servo the host addresses for this shaft
    mount_sign: int  # encoder ticks per shaft tick, +1 or -1
    mount_zero_ticks: float  # encoder - 2048 at shaft angle 0

    def present_ticks(self, shaft_rad: float, *, reverse: bool, homing_offset: int) -> int:
        encoder = self.mount_zero_ticks + self.mount_sign * shaft_rad / RAD_PER_TICK + homing_offset
        return int(round((-encoder if reverse else encoder) + CENTER_TICKS))

    def shaft_rad(self, goal_ticks: int, *, reverse: bool, homing_offset: int) -> float:
        encoder = goal_ticks - CENTER_TICKS
        encoder = (-encoder if reverse else encoder) - homing_offset
        return (encoder - self.mount_zero_ticks) * RAD_PER_TICK * self.mount_sign

    def velocity_units(self, shaft_rad_s: float, *, reverse: bool) -> int:
        sign = -self.mount_sign if reverse else self.mount_sign
        return int(round(sign * shaft_rad_s / RAD_S_PER_VELOCITY_UNIT))

    def current_units(self, shaft_ma: float, *, reverse: bool) -> int:
        sign = -self.mount_sign if reverse else self.mount_sign
        if self.motor.model is ServoModel.XL430_W250:
            return int(round(sign * 1000.0 * shaft_ma / _XL430_STALL_MA))  # Present Load, 0.1 %
        return int(round(sign * shaft_ma / MA_PER_CURRENT_UNIT))


def mounts(
    calibration: ArmCalibration, assembly_error_ticks: Mapping[int, float] | None = None
) -> tuple[ServoMount, ...]:
    """Every servo of the arm, in ID order, mounted so that it reads as `calibration` says.

    `assembly_error_ticks` shifts a servo's encoder on its shaft (by ID), e.g. a shadow motor
    mounted a few teeth off, which the driver's shadow calibration must absorb."""
    assembly_error_ticks = assembly_error_ticks or {}
    result = []
    for shaft, shaft_motors in enumerate(MOTOR_MAPS[calibration.model]):
        joint = calibration.joints[shaft] if shaft < 6 else calibration.gripper
        for motor in shaft_motors.motors:
            drive_sign = -1 if motor.reverse else 1
            result.append(
                ServoMount(
                    motor=motor,
                    shaft=shaft,
                    primary=motor is shaft_motors.primary,
                    mount_sign=drive_sign * joint.direction,
                    mount_zero_ticks=drive_sign * (joint.offset_ticks - CENTER_TICKS)
                    + assembly_error_ticks.get(motor.id, 0.0),
                )
            )
    return tuple(sorted(result, key=lambda m: m.motor.id))
