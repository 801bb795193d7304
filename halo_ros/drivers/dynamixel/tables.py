"""Dynamixel X-series control tables (Protocol 2.0) as data.

Addresses are identical on XM430-W350 and XM540-W270; XL430-W250 lacks Current Limit and Goal
Current and has Present Load where the XM has Present Current. Sources (ROBOTIS e-Manual):

- XM430-W350: https://emanual.robotis.com/docs/en/dxl/x/xm430-w350/#control-table
- XM540-W270: https://emanual.robotis.com/docs/en/dxl/x/xm540-w270/#control-table
- XL430-W250: https://emanual.robotis.com/docs/en/dxl/x/xl430-w250/#control-table
- Protocol 2.0: https://emanual.robotis.com/docs/en/dxl/protocol2/
"""

import enum
import math
from dataclasses import dataclass


class Access(enum.Enum):
    EEPROM = 'eeprom'  # writable only while Torque Enable is 0; kept across power cycles
    RAM = 'ram'  # writable at any time; reset by reboot
    READ_ONLY = 'read_only'


class Register(enum.Enum):
    """(address, size in bytes, access, signed) of each item the driver or the emulator uses."""

    MODEL_NUMBER = (0, 2, Access.READ_ONLY, False)
    FIRMWARE_VERSION = (6, 1, Access.READ_ONLY, False)
    ID = (7, 1, Access.EEPROM, False)
    BAUD_RATE = (8, 1, Access.EEPROM, False)
    RETURN_DELAY_TIME = (9, 1, Access.EEPROM, False)  # 2 us units
    DRIVE_MODE = (10, 1, Access.EEPROM, False)  # bit 0 reverse, bit 2 time-based profile
    OPERATING_MODE = (11, 1, Access.EEPROM, False)
    SECONDARY_ID = (12, 1, Access.EEPROM, False)  # 255 = off
    HOMING_OFFSET = (20, 4, Access.EEPROM, True)
    TEMPERATURE_LIMIT = (31, 1, Access.EEPROM, False)
    CURRENT_LIMIT = (38, 2, Access.EEPROM, False)  # 2.69 mA/unit; not on XL430
    VELOCITY_LIMIT = (44, 4, Access.EEPROM, False)
    MAX_POSITION_LIMIT = (48, 4, Access.EEPROM, False)
    MIN_POSITION_LIMIT = (52, 4, Access.EEPROM, False)
    SHUTDOWN = (63, 1, Access.EEPROM, False)
    TORQUE_ENABLE = (64, 1, Access.RAM, False)
    STATUS_RETURN_LEVEL = (68, 1, Access.RAM, False)
    HARDWARE_ERROR_STATUS = (70, 1, Access.READ_ONLY, False)
    POSITION_P_GAIN = (84, 2, Access.RAM, False)
    GOAL_CURRENT = (102, 2, Access.RAM, True)  # not on XL430
    PROFILE_ACCELERATION = (108, 4, Access.RAM, False)
    PROFILE_VELOCITY = (112, 4, Access.RAM, False)
    GOAL_POSITION = (116, 4, Access.RAM, True)
    REALTIME_TICK = (120, 2, Access.READ_ONLY, False)
    MOVING = (122, 1, Access.READ_ONLY, False)
    PRESENT_CURRENT = (126, 2, Access.READ_ONLY, True)  # Present Load (0.1 %) on XL430
    PRESENT_VELOCITY = (128, 4, Access.READ_ONLY, True)
    PRESENT_POSITION = (132, 4, Access.READ_ONLY, True)
    PRESENT_INPUT_VOLTAGE = (144, 2, Access.READ_ONLY, False)
    PRESENT_TEMPERATURE = (146, 1, Access.READ_ONLY, False)

    @property
    def address(self) -> int:
        return self.value[0]

    @property
    def size(self) -> int:
        return self.value[1]

    @property
    def access(self) -> Access:
        return self.value[2]

    @property
    def signed(self) -> bool:
        return self.value[3]

    @property
    def label(self) -> str:
        """The e-Manual's name, for error messages ('Goal Position')."""
        return self.name.replace('_', ' ').title()

    def decode(self, raw: int) -> int:
        """Unsigned bytes as the SDK returns them -> the register's value (two's complement)."""
        if self.signed and raw >= 1 << (8 * self.size - 1):
            return raw - (1 << (8 * self.size))
        return raw

    def encode(self, value: int) -> bytes:
        """A value -> little-endian bytes; raises ValueError if it does not fit the register."""
        bits = 8 * self.size
        low, high = (
            (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if self.signed else (0, (1 << bits) - 1)
        )
        if not low <= value <= high:
            raise ValueError(f'{self.label} value {value} does not fit {self.size} byte(s)')
        return int(value).to_bytes(self.size, 'little', signed=self.signed)


# The state block read once per tick: Present Current (126) .. Present Position (132 + 4).
STATE_BLOCK_ADDRESS = Register.PRESENT_CURRENT.address
STATE_BLOCK_SIZE = Register.PRESENT_POSITION.address + 4 - STATE_BLOCK_ADDRESS  # 10 bytes

TABLE_SIZE = 147  # bytes 0..146 (through Present Temperature)
EEPROM_END = 64  # addresses below this are EEPROM


class ServoModel(enum.IntEnum):
    """Model Number (address 0) of the servos on ALOHA arms."""

    XM430_W350 = 1020
    XM540_W270 = 1120
    XL430_W250 = 1060

    @property
    def has_current_control(self) -> bool:
        # XL430: no Current Limit, no Goal Current, no current-based position mode.
        return self is not ServoModel.XL430_W250


@dataclass(frozen=True)
class ServoSpec:
    """Datasheet performance at 12.0 V (ROBOTIS e-Manual, "Specifications" of each model)."""

    stall_torque_nm: float
    stall_current_a: float
    no_load_speed_rpm: float

    @property
    def no_load_speed_rad_s(self) -> float:
        return self.no_load_speed_rpm * 2.0 * math.pi / 60.0


SERVO_SPECS = {
    ServoModel.XM540_W270: ServoSpec(10.6, 4.4, 30.0),  # emanual .../xm540-w270/#specifications
    ServoModel.XM430_W350: ServoSpec(4.1, 2.3, 46.0),  # emanual .../xm430-w350/#specifications
    ServoModel.XL430_W250: ServoSpec(1.5, 1.4, 61.0),  # emanual .../xl430-w250/#specifications
}


class OperatingMode(enum.IntEnum):
    """Operating Mode (address 11) values."""

    CURRENT = 0
    VELOCITY = 1
    POSITION = 3
    EXTENDED_POSITION = 4
    CURRENT_BASED_POSITION = 5
    PWM = 16


SUPPORTED_MODES = {
    ServoModel.XM430_W350: frozenset(OperatingMode),
    ServoModel.XM540_W270: frozenset(OperatingMode),
    ServoModel.XL430_W250: frozenset(
        {
            OperatingMode.VELOCITY,
            OperatingMode.POSITION,
            OperatingMode.EXTENDED_POSITION,
            OperatingMode.PWM,
        }
    ),
}


class HardwareError(enum.IntFlag):
    """Hardware Error Status (address 70) bits; any of them latches until REBOOT."""

    INPUT_VOLTAGE = 1 << 0
    HALL_SENSOR = 1 << 1
    OVERHEATING = 1 << 2
    MOTOR_ENCODER = 1 << 3
    ELECTRICAL_SHOCK = 1 << 4
    OVERLOAD = 1 << 5


class Instruction(enum.IntEnum):
    PING = 0x01
    READ = 0x02
    WRITE = 0x03
    REG_WRITE = 0x04
    ACTION = 0x05
    FACTORY_RESET = 0x06
    REBOOT = 0x08
    CLEAR = 0x10
    STATUS = 0x55
    SYNC_READ = 0x82
    SYNC_WRITE = 0x83
    FAST_SYNC_READ = 0x8A
    BULK_READ = 0x92
    BULK_WRITE = 0x93


class StatusError(enum.IntEnum):
    """Low 7 bits of a status packet's error byte."""

    NONE = 0
    RESULT_FAIL = 1
    INSTRUCTION = 2
    CRC = 3
    DATA_RANGE = 4
    DATA_LENGTH = 5
    DATA_LIMIT = 6
    ACCESS = 7


ALERT_BIT = 0x80  # error byte bit 7: a hardware error is latched, read Hardware Error Status
BROADCAST_ID = 0xFE
MAX_ID = 0xFC
SECONDARY_ID_OFF = 255


class StatusReturnLevel(enum.IntEnum):
    PING_ONLY = 0
    PING_READ = 1
    ALL = 2


# Units (e-Manual, X-series).
TICKS_PER_REV = 4096
RAD_PER_TICK = 2.0 * math.pi / TICKS_PER_REV
CENTER_TICKS = 2048  # 0 rad at the factory zero
RAD_S_PER_VELOCITY_UNIT = 0.229 * 2.0 * math.pi / 60.0  # 0.229 rpm per unit
MA_PER_CURRENT_UNIT = 2.69
BAUD_RATE_CODES = {9600: 0, 57600: 1, 115200: 2, 1_000_000: 3, 2_000_000: 4, 3_000_000: 5}
