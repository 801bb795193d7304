"""One emulated X-series servo: its control table and the rules a real one enforces on it.

Rules modelled (e-Manual, X-series): EEPROM items (addresses < 64) are writable only while Torque
Enable is 0; read-only items refuse writes; Operating Mode must be one the model supports; in
Position Mode a Goal Position outside Min/Max Position Limit is refused with a data-limit error
(the limits are ignored in extended and current-based position modes); a latched hardware error
clears Torque Enable, keeps it off, and is cleared only by REBOOT, which also resets RAM items.
"""

from dataclasses import dataclass

from halo_ros.drivers.dynamixel.tables import (
    EEPROM_END,
    SECONDARY_ID_OFF,
    SUPPORTED_MODES,
    TABLE_SIZE,
    Access,
    HardwareError,
    OperatingMode,
    Register,
    ServoModel,
    StatusError,
    StatusReturnLevel,
)

FIRMWARE_VERSION = 46
_EXTENDED_RANGE = 1_048_575  # Goal Position range in extended / current-based position modes
_CURRENT_LIMIT_MAX = {ServoModel.XM430_W350: 1193, ServoModel.XM540_W270: 2047}
_BY_ADDRESS = {r.address: r for r in Register}


@dataclass(frozen=True)
class ServoSettings:
    """What a servo holds in EEPROM when it leaves the factory / the robot builder's bench."""

    id: int
    model: ServoModel
    drive_mode: int = 0
    operating_mode: OperatingMode = OperatingMode.POSITION
    secondary_id: int = SECONDARY_ID_OFF
    current_limit: int = 1193
    min_position_ticks: int = 0
    max_position_ticks: int = 4095


class VirtualServo:
    """Control-table memory plus the write rules. Not thread-safe: the bus serialises access."""

    def __init__(self, settings: ServoSettings) -> None:
        self.settings = settings
        self.model = settings.model
        self.memory = bytearray(TABLE_SIZE)
        self._set(Register.MODEL_NUMBER, int(settings.model))
        self._set(Register.FIRMWARE_VERSION, FIRMWARE_VERSION)
        self._set(Register.ID, settings.id)
        self._set(Register.BAUD_RATE, 3)  # 1 Mbps, as on ALOHA
        self._set(Register.DRIVE_MODE, settings.drive_mode)
        self._set(Register.OPERATING_MODE, int(settings.operating_mode))
        self._set(Register.SECONDARY_ID, settings.secondary_id)
        self._set(Register.TEMPERATURE_LIMIT, 80)
        if settings.model.has_current_control:
            self._set(Register.CURRENT_LIMIT, settings.current_limit)
        self._set(Register.MAX_POSITION_LIMIT, settings.max_position_ticks)
        self._set(Register.MIN_POSITION_LIMIT, settings.min_position_ticks)
        self._set(Register.SHUTDOWN, 0x34)
        self.reset_ram()

    # -- plain access for the bus -------------------------------------------------------------

    def get(self, register: Register) -> int:
        raw = int.from_bytes(
            self.memory[register.address : register.address + register.size], 'little'
        )
        return register.decode(raw)

    def _set(self, register: Register, value: int) -> None:
        self.memory[register.address : register.address + register.size] = register.encode(value)

    def set_present(self, *, position_ticks: int, velocity_units: int, current_units: int) -> None:
        self._set(Register.PRESENT_POSITION, position_ticks)
        self._set(Register.PRESENT_VELOCITY, velocity_units)
        self._set(Register.PRESENT_CURRENT, current_units)
        self._set(Register.MOVING, int(velocity_units != 0))

    @property
    def id(self) -> int:
        return self.get(Register.ID)

    @property
    def secondary_id(self) -> int:
        return self.get(Register.SECONDARY_ID)

    @property
    def torque_enabled(self) -> bool:
        return bool(self.get(Register.TORQUE_ENABLE))

    @property
    def hardware_error(self) -> HardwareError:
        return HardwareError(self.get(Register.HARDWARE_ERROR_STATUS))

    @property
    def status_return_level(self) -> StatusReturnLevel:
        return StatusReturnLevel(min(self.get(Register.STATUS_RETURN_LEVEL), 2))

    @property
    def operating_mode(self) -> OperatingMode:
        return OperatingMode(self.get(Register.OPERATING_MODE))

    # -- faults and reboot --------------------------------------------------------------------

    def latch(self, error: HardwareError) -> None:
        """A hardware error: torque off, and the alert bit on every reply until REBOOT."""
        self._set(Register.HARDWARE_ERROR_STATUS, int(self.hardware_error | error))
        self._set(Register.TORQUE_ENABLE, 0)

    def reset_ram(self) -> None:
        """What REBOOT (and power-on) does to RAM: defaults, goal = present, error cleared."""
        for address in range(EEPROM_END, TABLE_SIZE):
            register = _BY_ADDRESS.get(address)
            if register is not None and register.access is Access.RAM:
                self._set(register, 0)
        self._set(Register.STATUS_RETURN_LEVEL, int(StatusReturnLevel.ALL))
        self._set(Register.HARDWARE_ERROR_STATUS, 0)
        self._set(Register.POSITION_P_GAIN, 800)
        self._set(Register.GOAL_POSITION, self.get(Register.PRESENT_POSITION))

    # -- instruction-level access -------------------------------------------------------------

    def read(self, address: int, length: int) -> bytes | StatusError:
        if length < 1 or address + length > TABLE_SIZE:
            return StatusError.DATA_RANGE
        return bytes(self.memory[address : address + length])

    def write(self, address: int, data: bytes) -> StatusError:
        """Apply a WRITE all-or-nothing; returns the status error (NONE when applied)."""
        if not data or address + len(data) > TABLE_SIZE:
            return StatusError.DATA_RANGE
        touched = [
            r for r in Register if r.address < address + len(data) and address < r.address + r.size
        ]
        for register in touched:
            if register.address < address or register.address + register.size > address + len(data):
                return StatusError.DATA_LENGTH  # partial register writes are refused
            if register.access is Access.READ_ONLY:
                return StatusError.ACCESS
            if (
                register in (Register.CURRENT_LIMIT, Register.GOAL_CURRENT)
                and not self.model.has_current_control
            ):
                return StatusError.ACCESS
        if address < EEPROM_END and self.torque_enabled:
            return StatusError.ACCESS  # EEPROM is locked while torque is on
        staged = bytearray(self.memory)
        staged[address : address + len(data)] = data
        for register in touched:
            error = self._check(
                register,
                register.decode(
                    int.from_bytes(
                        staged[register.address : register.address + register.size], 'little'
                    )
                ),
                staged,
            )
            if error is not StatusError.NONE:
                return error
        if Register.TORQUE_ENABLE in touched and staged[Register.TORQUE_ENABLE.address]:
            if self.hardware_error:
                return StatusError.RESULT_FAIL  # shut down until REBOOT
            if not self.torque_enabled:
                # Torque on holds the present position rather than jumping to an old goal.
                staged[116:120] = self.memory[132:136]
        self.memory[:] = staged
        return StatusError.NONE

    def _check(self, register: Register, value: int, staged: bytearray) -> StatusError:
        if register is Register.OPERATING_MODE:
            if value not in {int(m) for m in SUPPORTED_MODES[self.model]}:
                return StatusError.DATA_RANGE
        elif register is Register.TORQUE_ENABLE and value not in (0, 1):
            return StatusError.DATA_RANGE
        elif register is Register.SECONDARY_ID and not (
            0 <= value <= 252 or value == SECONDARY_ID_OFF
        ):
            return StatusError.DATA_RANGE
        elif register is Register.CURRENT_LIMIT and value > _CURRENT_LIMIT_MAX.get(self.model, 0):
            return StatusError.DATA_RANGE
        elif register is Register.GOAL_POSITION:
            mode = staged[Register.OPERATING_MODE.address]
            if mode == OperatingMode.POSITION:
                low = int.from_bytes(staged[52:56], 'little', signed=True)
                high = int.from_bytes(staged[48:52], 'little', signed=True)
                if not low <= value <= high:
                    return StatusError.DATA_LIMIT
            elif abs(value) > _EXTENDED_RANGE:
                return StatusError.DATA_LIMIT
        return StatusError.NONE
