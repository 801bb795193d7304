"""One Dynamixel Protocol 2.0 bus (one U2D2 adapter) through dynamixel-sdk.

Every transaction is retried a bounded number of times: each failed attempt is logged at debug
level and the last one is raised as `DynamixelCommError` naming the register, the IDs and the
number of tries. Deterministic refusals by a servo (access, data range/limit, instruction errors)
are not retried. Values are decoded as the register's signed or unsigned type. A failed read never
returns values: it raises, so nothing from an earlier tick can pass for fresh data.

Not thread-safe: each bus belongs to the one thread that runs its ticks.
"""

import logging
import termios
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from dynamixel_sdk import COMM_SUCCESS, GroupSyncRead, GroupSyncWrite, PacketHandler, PortHandler

from halo_ros.drivers.dynamixel.port import QuietPortHandler
from halo_ros.drivers.dynamixel.tables import (
    ALERT_BIT,
    STATE_BLOCK_ADDRESS,
    STATE_BLOCK_SIZE,
    HardwareError,
    Register,
    StatusError,
)

log = logging.getLogger(__name__)

# Refusals that a retry cannot change.
_FINAL_ERRORS = frozenset(
    {
        StatusError.INSTRUCTION,
        StatusError.DATA_RANGE,
        StatusError.DATA_LENGTH,
        StatusError.DATA_LIMIT,
        StatusError.ACCESS,
    }
)
_CURRENT_OFFSET = Register.PRESENT_CURRENT.address - STATE_BLOCK_ADDRESS
_VELOCITY_OFFSET = Register.PRESENT_VELOCITY.address - STATE_BLOCK_ADDRESS
_POSITION_OFFSET = Register.PRESENT_POSITION.address - STATE_BLOCK_ADDRESS


# What the serial port itself raises when the adaptor is gone (pyserial's SerialException is an
# OSError; a flush on a hung-up tty raises termios.error, which is not).
_PORT_ERRORS = (OSError, termios.error)


class DynamixelCommError(RuntimeError):
    """A transaction failed on every allowed attempt (or a servo refused it)."""


class DynamixelPortError(DynamixelCommError):
    """The serial port itself failed (an unplugged adaptor, a USB error): not retried; the port
    must be reopened (`DynamixelBus.reopen`) once the device is back."""


class DynamixelStatusError(DynamixelCommError):
    """A servo answered with an error in its status packet."""

    def __init__(self, message: str, error: StatusError) -> None:
        super().__init__(message)
        self.error = error


@dataclass(frozen=True)
class StateReading:
    """One sync read of Present Current..Present Position, in the servos' raw units."""

    ids: tuple[int, ...]
    position_ticks: np.ndarray  # (n,) int64, Present Position
    velocity_units: np.ndarray  # (n,) int64, Present Velocity, 0.229 rpm per unit
    current_units: np.ndarray  # (n,) int64, Present Current, 2.69 mA per unit (load on XL430)
    alert: np.ndarray  # (n,) bool, alert bit: a hardware error is latched
    stamp_ns: int  # time.monotonic_ns() when the reply was complete
    attempts: int  # 1 when the first try succeeded
    duration_ms: float  # all attempts together


class _SyncRead(GroupSyncRead):
    """GroupSyncRead that keeps each reply's error byte (the SDK discards it)."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.errors: dict[int, int] = {}

    def rxPacket(self):  # noqa: N802 (SDK override)
        self.last_result = False
        self.errors.clear()
        result = COMM_SUCCESS
        for dxl_id in self.data_dict:
            self.data_dict[dxl_id], result, error = self.ph.readRx(
                self.port, dxl_id, self.data_length
            )
            if result != COMM_SUCCESS:
                return result
            self.errors[dxl_id] = error
        self.last_result = True
        return result


class DynamixelBus:
    """One serial port with Protocol 2.0 servos on it."""

    def __init__(
        self,
        port: str,
        *,
        baud_rate: int = 1_000_000,
        latency_timer_ms: float = 16.0,
        max_attempts: int = 3,
        port_handler: PortHandler | None = None,
    ) -> None:
        """`port_handler` replaces the default QuietPortHandler (benchmarks compare the SDK's)."""
        if max_attempts < 1:
            raise ValueError(f'max_attempts must be >= 1, got {max_attempts}')
        self.port_name = port
        self.baud_rate = baud_rate
        self.max_attempts = max_attempts
        self._port = port_handler or QuietPortHandler(port, latency_timer_ms=latency_timer_ms)
        self._packet = PacketHandler(2.0)
        self._state_reader: _SyncRead | None = None
        self._state_ids: tuple[int, ...] = ()
        self._writers: dict[Register, GroupSyncWrite] = {}
        self.failed_attempts = 0  # every failed attempt since open, for diagnostics

    # -- port -------------------------------------------------------------------------------

    def open(self) -> None:
        try:
            opened = self._port.openPort()
        except _PORT_ERRORS as error:  # SerialException (an OSError) on a missing device
            raise DynamixelCommError(
                f'cannot open Dynamixel port {self.port_name}: {error}'
            ) from error
        if not opened or not self._port.setBaudRate(self.baud_rate):
            raise DynamixelCommError(
                f'cannot open Dynamixel port {self.port_name} at {self.baud_rate} baud'
            )
        log.debug('opened %s at %d baud', self.port_name, self.baud_rate)

    def close(self) -> None:
        if self._port.is_open:
            try:
                self._port.closePort()
            except _PORT_ERRORS as error:  # the device went away under the open port
                log.debug('closing %s: %s', self.port_name, error)
                self._port.is_open = False
        self._port.is_using = False

    def reopen(self) -> None:
        """Close and open the port again after a DynamixelPortError; DynamixelCommError while
        the device is still absent."""
        self.close()
        self.open()

    @property
    def is_open(self) -> bool:
        return bool(self._port.is_open)

    def __enter__(self) -> 'DynamixelBus':
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- single servo -----------------------------------------------------------------------

    def ping(self, dxl_id: int) -> int:
        """The servo's Model Number."""
        return self._transact(
            f'PING of ID {dxl_id}', (dxl_id,), lambda: self._packet.ping(self._port, dxl_id)
        )

    def read(self, dxl_id: int, register: Register) -> int:
        reader = {
            1: self._packet.read1ByteTxRx,
            2: self._packet.read2ByteTxRx,
            4: self._packet.read4ByteTxRx,
        }[register.size]
        raw = self._transact(
            f'READ of {register.label} (address {register.address})',
            (dxl_id,),
            lambda: reader(self._port, dxl_id, register.address),
        )
        return register.decode(raw)

    def write(self, dxl_id: int, register: Register, value: int) -> None:
        data = list(register.encode(int(value)))

        def attempt():
            result, error = self._packet.writeTxRx(
                self._port, dxl_id, register.address, register.size, data
            )
            return None, result, error

        # Configuration writes are off the hot path and must not fail on one slow reply: a few
        # more tries, spaced out, where a sync read would rather report stale data and move on.
        self._transact(
            f'WRITE of {register.label} (address {register.address}) = {value}',
            (dxl_id,),
            attempt,
            attempts=self.max_attempts + 4,
            backoff_s=0.01,
        )

    def write_each(self, ids: Iterable[int], register: Register, value: int) -> None:
        """The same value to several servos, one acknowledged WRITE each."""
        for dxl_id in ids:
            self.write(dxl_id, register, value)

    def reboot(self, dxl_id: int) -> None:
        """REBOOT: clears a latched hardware error; RAM registers return to their defaults."""

        def attempt():
            result, error = self._packet.reboot(self._port, dxl_id)
            return None, result, error & ~ALERT_BIT  # the ack may still carry the old alert

        self._transact(f'REBOOT of ID {dxl_id}', (dxl_id,), attempt)

    def hardware_error(self, dxl_id: int) -> HardwareError:
        return HardwareError(self.read(dxl_id, Register.HARDWARE_ERROR_STATUS))

    # -- group ------------------------------------------------------------------------------

    def read_state(self, ids: tuple[int, ...]) -> StateReading:
        """One SYNC_READ of Present Current..Present Position (10 bytes) from `ids`."""
        if self._state_reader is None or self._state_ids != ids:
            self._state_reader = _SyncRead(
                self._port, self._packet, STATE_BLOCK_ADDRESS, STATE_BLOCK_SIZE
            )
            for dxl_id in ids:
                self._state_reader.addParam(dxl_id)
            self._state_ids = ids
        reader = self._state_reader
        start = time.perf_counter()

        def attempt():
            result = reader.txRxPacket()
            # The first refusing servo's error; alert bits are reported per servo below.
            error = next((e & ~ALERT_BIT for e in reader.errors.values() if e & ~ALERT_BIT), 0)
            return None, result, error

        attempts = self._transact(
            f'SYNC_READ of Present Current..Present Position (address {STATE_BLOCK_ADDRESS}, '
            f'{STATE_BLOCK_SIZE} bytes)',
            ids,
            attempt,
            count_attempts=True,
        )
        stamp_ns = time.monotonic_ns()
        n = len(ids)
        position = np.empty(n, np.int64)
        velocity = np.empty(n, np.int64)
        current = np.empty(n, np.int64)
        alert = np.empty(n, bool)
        for i, dxl_id in enumerate(ids):
            block = bytes(reader.data_dict[dxl_id])
            current[i] = int.from_bytes(
                block[_CURRENT_OFFSET : _CURRENT_OFFSET + 2], 'little', signed=True
            )
            velocity[i] = int.from_bytes(
                block[_VELOCITY_OFFSET : _VELOCITY_OFFSET + 4], 'little', signed=True
            )
            position[i] = int.from_bytes(
                block[_POSITION_OFFSET : _POSITION_OFFSET + 4], 'little', signed=True
            )
            alert[i] = bool(reader.errors.get(dxl_id, 0) & ALERT_BIT)
        return StateReading(
            ids=ids,
            position_ticks=position,
            velocity_units=velocity,
            current_units=current,
            alert=alert,
            stamp_ns=stamp_ns,
            attempts=attempts,
            duration_ms=(time.perf_counter() - start) * 1e3,
        )

    def sync_write(self, register: Register, values: Mapping[int, int]) -> None:
        """One SYNC_WRITE of `register` (no replies: servos never answer a broadcast)."""
        writer = self._writers.get(register)
        if writer is None:
            writer = self._writers[register] = GroupSyncWrite(
                self._port, self._packet, register.address, register.size
            )
        writer.clearParam()
        for dxl_id, value in values.items():
            writer.addParam(dxl_id, list(register.encode(int(value))))

        def attempt():
            return None, writer.txPacket(), 0

        self._transact(
            f'SYNC_WRITE of {register.label} (address {register.address})',
            tuple(values),
            attempt,
        )

    # -- retries ----------------------------------------------------------------------------

    def _transact(
        self,
        what: str,
        ids: tuple[int, ...],
        attempt: Callable[[], tuple],
        *,
        count_attempts: bool = False,
        attempts: int | None = None,
        backoff_s: float = 0.0,
    ):
        attempts = attempts or self.max_attempts
        message = ''
        for tries in range(1, attempts + 1):
            if tries > 1 and backoff_s:
                time.sleep(backoff_s * (tries - 1))
            try:
                value, result, error = attempt()
            except _PORT_ERRORS as port_error:
                # The SDK marks the port in use until a reply is parsed: left set, every later
                # transaction would answer "Port is in use!" even after the device came back.
                self._port.is_using = False
                self.failed_attempts += 1
                raise DynamixelPortError(
                    f'{what} of IDs {list(ids)} on {self.port_name}: the port failed '
                    f'({type(port_error).__name__}: {port_error})'
                ) from port_error
            code = error & ~ALERT_BIT
            if result == COMM_SUCCESS and not code:
                if error & ALERT_BIT:
                    log.debug(
                        '%s on %s: alert bit set (a hardware error is latched)',
                        what,
                        self.port_name,
                    )
                return tries if count_attempts else value
            self.failed_attempts += 1
            if result != COMM_SUCCESS:
                message = self._packet.getTxRxResult(result)
            else:
                message = self._packet.getRxPacketError(error)
            log.debug(
                '%s of IDs %s on %s failed (try %d of %d): %s',
                what,
                list(ids),
                self.port_name,
                tries,
                attempts,
                message,
            )
            if result == COMM_SUCCESS and code in _FINAL_ERRORS:
                raise DynamixelStatusError(
                    f'{what} of IDs {list(ids)} on {self.port_name} refused by the servo: '
                    f'{message}',
                    StatusError(code),
                )
        raise DynamixelCommError(
            f'{what} of IDs {list(ids)} on {self.port_name} failed after {attempts} '
            f'tries: {message}'
        )
