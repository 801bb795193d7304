"""One ALOHA arm (ViperX 300 S follower or WidowX 250 S leader) on its own Dynamixel bus.

Lifecycle as in ros2_control's hardware interfaces:

    UNCONFIGURED --configure()--> INACTIVE --activate()--> ACTIVE
         ^                          |  ^                      |
         +--------cleanup()---------+  +-----deactivate()-----+

- configure(): open the port, ping all nine servos, check their models and report EEPROM settings
  that differ from the motor map. Reads only: nothing on the arm changes.
- activate(): torque off, write operating modes (gripper: current-based position with the
  calibrated Current Limit where the servo supports it), drive modes, shadow Secondary IDs,
  position limits, profiles; set Goal Position to the present pose; torque on.
- hot path: read() (one SYNC_READ of all nine servos) and write(command) (one SYNC_WRITE of Goal
  Position to the seven primaries; the shadows follow by Secondary ID).

Units: joints in radians (calibrated zero and direction), gripper normalised 0 = closed ..
1 = open, current in mA. A read that fails after the bus's retries returns an ArmState with
fresh=False and NaN values: never the previous tick's numbers.

A port that fails (an unplugged or glitching USB adaptor: the serial device errors or vanishes)
is closed; reads report the arm stale and reopen it with backoff (0.1 s doubling to 2 s) until
the device is back, writes are refused meanwhile. The servos stay powered through it, so they
keep their settings and torque and hold the last goal that reached them.
"""

import enum
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from halo_ros.drivers.aloha_calibration import JOINT_NAMES, ArmCalibration, ArmName, load
from halo_ros.drivers.aloha_motors import MOTOR_MAPS, all_motors, primary_ids
from halo_ros.drivers.dynamixel import DynamixelBus, DynamixelCommError, DynamixelPortError
from halo_ros.drivers.dynamixel.tables import (
    MA_PER_CURRENT_UNIT,
    RAD_PER_TICK,
    RAD_S_PER_VELOCITY_UNIT,
    HardwareError,
    OperatingMode,
    Register,
    ServoModel,
)

log = logging.getLogger(__name__)

# A shadow reading within this of its primary is left alone (encoder noise, no EEPROM wear).
_SHADOW_TOLERANCE_TICKS = 2
# Reopening a lost port: first try after this, then doubling up to the cap. Opening a missing
# device costs a failed open() only, but a USB adaptor that re-enumerates takes ~0.5-1 s.
_REOPEN_FIRST_S = 0.1
_REOPEN_MAX_S = 2.0


class Lifecycle(enum.Enum):
    UNCONFIGURED = 'unconfigured'
    INACTIVE = 'inactive'
    ACTIVE = 'active'


@dataclass(frozen=True)
class ArmState:
    """One reading of an arm. When fresh is False every value is NaN and `error` says why."""

    joint_position_rad: np.ndarray  # (6,) waist..wrist_rotate
    joint_velocity_rad_s: np.ndarray  # (6,)
    gripper_position: float  # normalised, 0 = closed .. 1 = open (may overshoot slightly)
    gripper_velocity_per_s: float  # normalised units per second
    # (7,) Present Current of the primaries, signed like the joint; NaN where a servo has none
    # (XL430: wrist_rotate and gripper of the WidowX leader).
    effort_ma: np.ndarray
    stamp_ns: int  # time.monotonic_ns() when the reply was complete (or the read gave up)
    fresh: bool
    alert_ids: tuple[int, ...] = ()  # servos reporting a latched hardware error
    attempts: int = 0
    read_ms: float = 0.0
    error: str = ''

    def position(self) -> np.ndarray:
        """The ALOHA 7-vector: six joint angles (rad) and the normalised gripper."""
        return np.append(self.joint_position_rad, self.gripper_position)

    def velocity(self) -> np.ndarray:
        return np.append(self.joint_velocity_rad_s, self.gripper_velocity_per_s)

    @classmethod
    def stale(cls, error: str) -> 'ArmState':
        """A reading that did not come: NaN everywhere, stamped now, `error` says why."""
        nan6 = np.full(6, np.nan)
        return cls(
            joint_position_rad=nan6,
            joint_velocity_rad_s=nan6.copy(),
            gripper_position=float('nan'),
            gripper_velocity_per_s=float('nan'),
            effort_ma=np.full(7, np.nan),
            stamp_ns=time.monotonic_ns(),
            fresh=False,
            error=error,
        )


@dataclass(frozen=True)
class ArmCommand:
    joint_position_rad: np.ndarray  # (6,)
    gripper_position: float  # normalised, 0 = closed .. 1 = open

    @classmethod
    def from_vector(cls, position: np.ndarray) -> 'ArmCommand':
        """From the ALOHA 7-vector (six joints in rad, normalised gripper)."""
        position = np.asarray(position, np.float64)
        if position.shape != (7,):
            raise ValueError(f'an arm command has 7 values, got shape {position.shape}')
        return cls(position[:6].copy(), float(position[6]))


def check_servo_models(bus, calibration) -> None:
    """Ping every servo of the arm and refuse a bus whose servos are not the arm's models."""
    for motor in all_motors(calibration.model):
        model = bus.ping(motor.id)
        if model != motor.model:
            raise DynamixelCommError(
                f'{calibration.name.value}: ID {motor.id} is model {model}, expected '
                f'{motor.model.name} ({int(motor.model)}) for a {calibration.model.value}'
            )


class AlohaArm:
    """The driver of one arm; see the module docstring for the lifecycle and units."""

    def __init__(self, calibration: ArmCalibration) -> None:
        self.calibration = calibration
        self.name = calibration.name
        self._shafts = MOTOR_MAPS[calibration.model]
        self._all_ids = tuple(m.id for m in all_motors(calibration.model))
        self._primary_ids = primary_ids(calibration.model)
        self._primary_rows = np.array([self._all_ids.index(i) for i in self._primary_ids])
        has_current = [s.primary.model.has_current_control for s in self._shafts]
        self._current_scale = np.where(has_current, MA_PER_CURRENT_UNIT, np.nan)
        cal = calibration
        self._offset = np.array(
            [j.offset_ticks for j in cal.joints] + [cal.gripper.offset_ticks], float
        )
        self._direction = np.array(
            [j.direction for j in cal.joints] + [cal.gripper.direction], float
        )
        self._min_rad = np.array([j.min_rad for j in cal.joints])
        self._max_rad = np.array([j.max_rad for j in cal.joints])
        self.bus = DynamixelBus(
            cal.port,
            baud_rate=cal.baud_rate,
            latency_timer_ms=cal.latency_timer_ms,
            max_attempts=cal.max_attempts,
        )
        self.lifecycle = Lifecycle.UNCONFIGURED
        self.torque_enabled = False
        self.failed_reads = 0
        self.port_losses = 0  # the port failed (diagnostics)
        self.port_reopens = 0  # ... and came back
        self._reopen_at: float | None = None  # monotonic s of the next try while the port is lost
        self._reopen_backoff_s = _REOPEN_FIRST_S

    @classmethod
    def from_file(cls, path: str | Path, name: ArmName | str) -> 'AlohaArm':
        return cls(load(path).arm(name))

    # -- lifecycle --------------------------------------------------------------------------

    def configure(self) -> None:
        """Open the port and check the servos. Reads only."""
        self._expect(Lifecycle.UNCONFIGURED, 'configure')
        self.bus.open()
        try:
            check_servo_models(self.bus, self.calibration)
            for dxl_id, error in self.hardware_errors().items():
                log.warning(
                    '%s: ID %d has a latched hardware error: %r', self.name.value, dxl_id, error
                )
        except Exception:
            self.bus.close()
            raise
        self.lifecycle = Lifecycle.INACTIVE
        log.info('%s configured on %s', self.name.value, self.calibration.port)

    def activate(self) -> None:
        """Write modes and limits (torque off), hold the present pose, torque on."""
        self._expect(Lifecycle.INACTIVE, 'activate')
        self.bus.write_each(self._all_ids, Register.TORQUE_ENABLE, 0)
        self.torque_enabled = False
        self._write_eeprom()
        self._calibrate_shadows()
        for dxl_id in self._all_ids:
            self.bus.write(dxl_id, Register.PROFILE_VELOCITY, self.calibration.profile_velocity)
            self.bus.write(
                dxl_id, Register.PROFILE_ACCELERATION, self.calibration.profile_acceleration
            )
        self._hold_present_pose()
        self.bus.write_each(self._all_ids, Register.TORQUE_ENABLE, 1)
        self.torque_enabled = True
        self.lifecycle = Lifecycle.ACTIVE
        log.info('%s active (torque on)', self.name.value)

    def deactivate(self) -> None:
        """Torque off: the arm goes limp. Reading continues."""
        self._expect(Lifecycle.ACTIVE, 'deactivate')
        self.bus.write_each(self._all_ids, Register.TORQUE_ENABLE, 0)
        self.torque_enabled = False
        self.lifecycle = Lifecycle.INACTIVE

    def cleanup(self) -> None:
        """Torque off if active, then close the port (closed even if torque-off fails)."""
        try:
            if self.lifecycle is Lifecycle.ACTIVE:
                self.deactivate()
        finally:
            self.bus.close()
            self.lifecycle = Lifecycle.UNCONFIGURED

    def set_torque(self, enabled: bool) -> None:
        """Hold (True) or release (False) the arm while ACTIVE, e.g. a leader for the operator.

        Turning torque on first sets the goal to the present pose, so nothing jumps."""
        self._expect(Lifecycle.ACTIVE, 'set_torque')
        if enabled:
            self._hold_present_pose()
        self.bus.write_each(self._all_ids, Register.TORQUE_ENABLE, int(enabled))
        self.torque_enabled = enabled

    # -- hot path ---------------------------------------------------------------------------

    def read(self) -> ArmState:
        """One SYNC_READ of all nine servos. Allowed while INACTIVE or ACTIVE."""
        if self.lifecycle is Lifecycle.UNCONFIGURED:
            raise RuntimeError(f'{self.name.value}: read() before configure()')
        if self._reopen_at is not None and not self._reopen():
            self.failed_reads += 1
            return ArmState.stale(f'{self.name.value}: port {self.calibration.port} lost')
        try:
            reading = self.bus.read_state(self._all_ids)
        except DynamixelCommError as error:
            self.failed_reads += 1
            if isinstance(error, DynamixelPortError):
                self._port_lost(error)
            else:
                log.warning('%s: read failed: %s', self.name.value, error)
            return ArmState.stale(str(error))
        rows = self._primary_rows
        ticks = reading.position_ticks[rows].astype(np.float64)
        shaft_rad = self._direction * (ticks - self._offset) * RAD_PER_TICK
        shaft_rad_s = self._direction * reading.velocity_units[rows] * RAD_S_PER_VELOCITY_UNIT
        gripper = self.calibration.gripper
        span_rad = (gripper.open_ticks - gripper.closed_ticks) * RAD_PER_TICK * gripper.direction
        return ArmState(
            joint_position_rad=shaft_rad[:6],
            joint_velocity_rad_s=shaft_rad_s[:6],
            gripper_position=gripper.to_normalised(ticks[6]),
            gripper_velocity_per_s=float(shaft_rad_s[6] / span_rad),
            effort_ma=self._direction * reading.current_units[rows] * self._current_scale,
            stamp_ns=reading.stamp_ns,
            fresh=True,
            alert_ids=tuple(i for i, a in zip(self._all_ids, reading.alert, strict=True) if a),
            attempts=reading.attempts,
            read_ms=reading.duration_ms,
        )

    def write(self, command: ArmCommand) -> None:
        """One SYNC_WRITE of Goal Position. Commands outside the calibrated limits are refused."""
        if self.lifecycle is not Lifecycle.ACTIVE or not self.torque_enabled:
            raise RuntimeError(
                f'{self.name.value}: write() needs an active arm with torque on '
                f'(lifecycle {self.lifecycle.value}, torque '
                f'{"on" if self.torque_enabled else "off"})'
            )
        goals = dict(zip(self._primary_ids, self.goal_ticks(command), strict=True))
        if self._reopen_at is not None:
            raise DynamixelPortError(
                f'{self.name.value}: port {self.calibration.port} lost; not written'
            )
        try:
            self.bus.sync_write(Register.GOAL_POSITION, goals)
        except DynamixelPortError as error:
            self._port_lost(error)
            raise

    def goal_ticks(self, command: ArmCommand) -> list[int]:
        """The seven primaries' Goal Position for a command; raises ValueError if out of range."""
        joints = np.asarray(command.joint_position_rad, np.float64)
        if joints.shape != (6,):
            raise ValueError(
                f'{self.name.value}: joint_position_rad must have shape (6,), got {joints.shape}'
            )
        bad = ~np.isfinite(joints) | (joints < self._min_rad) | (joints > self._max_rad)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f'{self.name.value}: {JOINT_NAMES[i]} command {joints[i]} rad is outside the '
                f'calibrated range [{self._min_rad[i]}, {self._max_rad[i]}]'
            )
        gripper = float(command.gripper_position)
        if not 0.0 <= gripper <= 1.0:  # also false for NaN
            raise ValueError(f'{self.name.value}: gripper command {gripper} is outside [0, 1]')
        ticks = [j.to_ticks(q) for j, q in zip(self.calibration.joints, joints, strict=True)]
        return ticks + [self.calibration.gripper.to_ticks(gripper)]

    # -- faults -----------------------------------------------------------------------------

    def hardware_errors(self) -> dict[int, HardwareError]:
        """Latched hardware errors by ID (only servos that have one)."""
        errors = {}
        for dxl_id in self._all_ids:
            error = self.bus.hardware_error(dxl_id)
            if error:
                errors[dxl_id] = error
        return errors

    def reboot(self, ids: tuple[int, ...]) -> None:
        """REBOOT servos to clear latched errors, then restore what a reboot resets (RAM).

        ALOHA reboots the follower gripper (ID 9) on every reset for exactly this reason."""
        if self.lifecycle is Lifecycle.UNCONFIGURED:
            raise RuntimeError(f'{self.name.value}: reboot() before configure()')
        for dxl_id in ids:
            self.bus.reboot(dxl_id)
        for dxl_id in ids:
            self.bus.write(dxl_id, Register.PROFILE_VELOCITY, self.calibration.profile_velocity)
            self.bus.write(
                dxl_id, Register.PROFILE_ACCELERATION, self.calibration.profile_acceleration
            )
        if self.torque_enabled:
            self._hold_present_pose()
            self.bus.write_each(ids, Register.TORQUE_ENABLE, 1)

    # -- a lost port ------------------------------------------------------------------------

    def _port_lost(self, error: DynamixelPortError) -> None:
        self.port_losses += 1
        self.bus.close()
        self._reopen_backoff_s = _REOPEN_FIRST_S
        self._reopen_at = time.monotonic() + self._reopen_backoff_s
        log.error('%s: %s; closed, reopening until the device is back', self.name.value, error)

    def _reopen(self) -> bool:
        """One reopen try when its time has come; True once the port is back."""
        now = time.monotonic()
        if now < self._reopen_at:
            return False
        try:
            self.bus.reopen()
        except DynamixelCommError as error:
            self._reopen_backoff_s = min(2 * self._reopen_backoff_s, _REOPEN_MAX_S)
            self._reopen_at = now + self._reopen_backoff_s
            log.debug(
                '%s: reopen failed (%s), next try in %.1f s',
                self.name.value,
                error,
                self._reopen_backoff_s,
            )
            return False
        self._reopen_at = None
        self.port_reopens += 1
        log.warning('%s: port %s reopened', self.name.value, self.calibration.port)
        return True

    # -- internals --------------------------------------------------------------------------

    def _expect(self, state: Lifecycle, action: str) -> None:
        if self.lifecycle is not state:
            raise RuntimeError(
                f'{self.name.value}: {action}() needs lifecycle {state.value}, '
                f'is {self.lifecycle.value}'
            )

    def _hold_present_pose(self) -> None:
        reading = self.bus.read_state(self._all_ids)
        self.bus.sync_write(
            Register.GOAL_POSITION,
            {
                i: int(reading.position_ticks[row])
                for i, row in zip(self._primary_ids, self._primary_rows, strict=True)
            },
        )

    def _calibrate_shadows(self) -> None:
        """Rewrite a shadow's Homing Offset so it reads what its primary reads (torque off).

        A shadow mounted a tooth off would otherwise fight its primary for every goal. The offset
        acts before Drive Mode's reversal, hence the sign (the rule Interbotix's xs_sdk uses)."""
        for shaft in self._shafts:
            if not shaft.shadows:
                continue
            primary = self.bus.read(shaft.primary.id, Register.PRESENT_POSITION)
            for shadow in shaft.shadows:
                present = self.bus.read(shadow.id, Register.PRESENT_POSITION)
                error = primary - present
                if abs(error) < _SHADOW_TOLERANCE_TICKS:
                    continue
                homing = self.bus.read(shadow.id, Register.HOMING_OFFSET)
                drive = -1 if self.bus.read(shadow.id, Register.DRIVE_MODE) & 1 else 1
                log.info(
                    '%s: shadow ID %d reads %d ticks off primary ID %d; Homing Offset %d -> %d',
                    self.name.value,
                    shadow.id,
                    error,
                    shaft.primary.id,
                    homing,
                    homing + drive * error,
                )
                self.bus.write(shadow.id, Register.HOMING_OFFSET, homing + drive * error)

    def _write_eeprom(self) -> None:
        """Write the EEPROM items that differ from what this arm needs (torque must be off)."""
        gripper_current = self.calibration.gripper.current_limit_ma is not None
        for shaft, shaft_motors in enumerate(self._shafts):
            is_gripper = shaft == 6
            mode = (
                OperatingMode.CURRENT_BASED_POSITION
                if is_gripper and gripper_current
                else OperatingMode.POSITION
            )
            for motor in shaft_motors.motors:
                wanted = {
                    Register.OPERATING_MODE: int(mode),
                    Register.DRIVE_MODE: motor.drive_mode,
                    Register.SECONDARY_ID: motor.secondary_id,
                }
                if is_gripper and gripper_current and motor.model is not ServoModel.XL430_W250:
                    wanted[Register.CURRENT_LIMIT] = self.calibration.gripper.current_limit_units
                if not is_gripper:
                    joint = self.calibration.joints[shaft]
                    low, high = sorted(
                        (joint.to_ticks(joint.min_rad), joint.to_ticks(joint.max_rad))
                    )
                    wanted[Register.MIN_POSITION_LIMIT] = low
                    wanted[Register.MAX_POSITION_LIMIT] = high
                for register, value in wanted.items():
                    present = self.bus.read(motor.id, register)
                    if present != value:
                        log.info(
                            '%s: ID %d %s %d -> %d',
                            self.name.value,
                            motor.id,
                            register.label,
                            present,
                            value,
                        )
                        self.bus.write(motor.id, register, value)


def open_arms(path: str | Path, *, environ=None) -> dict[ArmName, AlohaArm]:
    """One (unconfigured) AlohaArm per arm in a calibration file (`environ` for ${VAR} ports)."""
    return {name: AlohaArm(cal) for name, cal in load(path, environ=environ).arms.items()}
