"""Guided arm calibration: joint offsets and directions, gripper open/closed ticks -> YAML.

Per arm, with torque off (the operator moves it by hand), four poses are read from the servos'
Present Position (median of several sync reads of the seven primaries):

1. zero pose      -> offset_ticks of the six joints (0 rad there)
2. positive pose  -> direction: the sign of each joint's change when moved positive
3. gripper open   -> gripper.open_ticks
4. gripper closed -> gripper.closed_ticks

Everything else (ports, models, joint limits, gripper current limit) comes from a template
calibration file; the result is validated by aloha_calibration before it is written, so a joint
whose limits no longer fit the servo's range is refused with the field named. Drive Mode is set
to the motor map's first (as AlohaArm.activate would), so the ticks read here are the ticks the
driver will read.
"""

import copy
import enum
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from halo_ros.drivers import aloha_calibration
from halo_ros.drivers.aloha_arm import check_servo_models
from halo_ros.drivers.aloha_calibration import (
    JOINT_NAMES,
    ArmCalibration,
    ArmName,
    CalibrationError,
)
from halo_ros.drivers.aloha_motors import all_motors, primary_ids
from halo_ros.drivers.dynamixel import DynamixelBus
from halo_ros.drivers.dynamixel.tables import Register

log = logging.getLogger(__name__)

# A joint must move at least this far for its direction to count (~18 deg: clearly on purpose).
MIN_MOVE_TICKS = 200
# Open and closed must differ by this much (~9 deg of gripper motor travel).
MIN_GRIPPER_SPAN_TICKS = 100
# Readings of one pose may spread this much (encoder noise is 1-2 ticks; more = it moved).
MAX_SPREAD_TICKS = 15


class Step(enum.Enum):
    ZERO = 'zero pose'
    POSITIVE = 'positive pose'
    GRIPPER_OPEN = 'gripper open'
    GRIPPER_CLOSED = 'gripper closed'


INSTRUCTIONS = {
    Step.ZERO: (
        'Put the arm in its zero pose: waist facing straight ahead, upper arm vertical, forearm '
        'horizontal pointing forward, wrist straight in line with the forearm, gripper level '
        '(the Interbotix "home" pose). Hold it still.'
    ),
    Step.POSITIVE: (
        'Move every joint at least 20 degrees in its positive direction and hold: waist turned '
        'left (counter-clockwise seen from above), upper arm leaned forward, forearm lowered, '
        'forearm roll and wrist rotate turned clockwise seen from behind the arm, gripper tilted '
        'down.'
    ),
    Step.GRIPPER_OPEN: 'Open the gripper fully (leader: release the handle) and hold it there.',
    Step.GRIPPER_CLOSED: 'Close the gripper fully (leader: squeeze the handle) and hold it there.',
}

# ask(arm, step, instruction) returns once the arm is in place (the CLI waits for Enter).
Ask = Callable[[ArmName, Step, str], None]


@dataclass(frozen=True)
class ArmReadings:
    """Present Position of the seven primaries (six joints, gripper) at each step."""

    ticks: dict[Step, np.ndarray]


class ArmReader:
    """The servos of one arm, torque off, for reading poses by hand."""

    def __init__(self, calibration: ArmCalibration, *, samples: int = 10) -> None:
        if samples < 1:
            raise ValueError(f'samples must be >= 1, got {samples}')
        self.calibration = calibration
        self.samples = samples
        self._ids = tuple(m.id for m in all_motors(calibration.model))
        self._primaries = primary_ids(calibration.model)
        self.bus = DynamixelBus(
            calibration.port,
            baud_rate=calibration.baud_rate,
            latency_timer_ms=calibration.latency_timer_ms,
            max_attempts=calibration.max_attempts,
        )

    def __enter__(self) -> 'ArmReader':
        self.bus.open()
        try:
            check_servo_models(self.bus, self.calibration)
            self.bus.write_each(self._ids, Register.TORQUE_ENABLE, 0)
            for motor in all_motors(self.calibration.model):
                if self.bus.read(motor.id, Register.DRIVE_MODE) != motor.drive_mode:
                    log.info('ID %d: Drive Mode -> %d (the motor map)', motor.id, motor.drive_mode)
                    self.bus.write(motor.id, Register.DRIVE_MODE, motor.drive_mode)
        except Exception:
            self.bus.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.bus.close()

    def pose_ticks(self) -> np.ndarray:
        """(7,) median Present Position of the primaries over `samples` reads."""
        readings = np.array(
            [self.bus.read_state(self._primaries).position_ticks for _ in range(self.samples)]
        )
        spread = readings.max(axis=0) - readings.min(axis=0)
        if spread.max() > MAX_SPREAD_TICKS:
            shaft = [*JOINT_NAMES, 'gripper'][int(spread.argmax())]
            raise CalibrationError(
                f'{self.calibration.name.value}.{shaft} moved by {int(spread.max())} ticks while '
                'being read; hold the arm still'
            )
        return np.median(readings, axis=0)


def read_arm(calibration: ArmCalibration, ask: Ask, *, samples: int = 10) -> ArmReadings:
    ticks = {}
    with ArmReader(calibration, samples=samples) as reader:
        for step in Step:
            ask(calibration.name, step, INSTRUCTIONS[step])
            ticks[step] = reader.pose_ticks()
            log.info('%s %s: %s', calibration.name.value, step.value, ticks[step].astype(int))
    return ArmReadings(ticks)


def solve(section: dict, readings: ArmReadings, arm: str) -> dict:
    """The arm's YAML section with offsets, directions and gripper ticks from the readings."""
    section = copy.deepcopy(section)
    zero, positive = readings.ticks[Step.ZERO], readings.ticks[Step.POSITIVE]
    for i, joint in enumerate(JOINT_NAMES):
        moved = positive[i] - zero[i]
        if abs(moved) < MIN_MOVE_TICKS:
            raise CalibrationError(
                f'arms.{arm}.joints.{joint}: moved {moved:+.0f} ticks between the zero and the '
                f'positive pose; move it at least {MIN_MOVE_TICKS} ticks (~18 deg)'
            )
        section['joints'][joint]['offset_ticks'] = int(round(zero[i]))
        section['joints'][joint]['direction'] = 1 if moved > 0 else -1
    opened, closed = readings.ticks[Step.GRIPPER_OPEN][6], readings.ticks[Step.GRIPPER_CLOSED][6]
    if abs(opened - closed) < MIN_GRIPPER_SPAN_TICKS:
        raise CalibrationError(
            f'arms.{arm}.gripper: open ({opened:.0f}) and closed ({closed:.0f}) ticks are less '
            f'than {MIN_GRIPPER_SPAN_TICKS} apart; open and close it fully'
        )
    section['gripper']['open_ticks'] = int(round(opened))
    section['gripper']['closed_ticks'] = int(round(closed))
    return section


def calibrate_arms(
    template: str | Path,
    output: str | Path,
    ask: Ask,
    *,
    arms: Iterable[ArmName | str] | None = None,
    samples: int = 10,
    environ: dict[str, str] | None = None,
) -> aloha_calibration.RobotCalibration:
    """Calibrate `arms` (default all in the template) and write the whole file to `output`."""
    template = Path(template)
    document = yaml.safe_load(template.read_text(encoding='utf-8'))
    robot = aloha_calibration.load(template, environ=environ)  # ports expanded, template valid
    names = [ArmName(a) for a in arms] if arms else list(robot.arms)
    result = copy.deepcopy(document)
    for name in names:
        readings = read_arm(robot.arm(name), ask, samples=samples)
        result['arms'][name.value] = solve(document['arms'][name.value], readings, name.value)
    # Validate before writing: a limit that no longer fits 0..4095 is named with its field.
    calibration = aloha_calibration.parse(result, environ=environ, path=Path(output))
    header = (
        f'# Written by `halo-ros calibrate arms` from {template.name}; calibrated: '
        f'{", ".join(n.value for n in names)}.\n'
        '# Schema: halo_ros/drivers/aloha_calibration.py (module docstring).\n'
    )
    Path(output).write_text(header + yaml.safe_dump(result, sort_keys=False), encoding='utf-8')
    return calibration
