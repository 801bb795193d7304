"""A Protocol 2.0 servo bus on a pseudo-terminal, in front of one SimulatedArm.

The driver opens the pty's slave side (or a symlink to it at the calibrated port path, as socat's
`link=` would make) with the real dynamixel-sdk; this thread answers on the master side as the
arm's nine servos would. Instructions: PING (also broadcast), READ, WRITE, SYNC_READ, SYNC_WRITE,
BULK_READ, REBOOT; others are answered with an instruction error. Status packets carry the error
byte with the alert bit while a hardware error is latched. Status Return Level is honoured.
Servos whose Secondary ID matches a packet's ID execute it and stay silent (the shoulder and elbow
shadows). Fault injection drops or corrupts replies at a given rate, and latches hardware errors.

Present Position/Velocity/Current come from `arm.read()` before every read instruction; Goal
Position and Torque Enable go to `arm.set_goal()` / `arm.set_torque()` after every write.
"""

import logging
import os
import pty
import random
import select
import threading
import time
import tty
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from halo_ros.drivers.aloha_calibration import ArmCalibration, ArmName, RobotCalibration
from halo_ros.drivers.aloha_motors import ArmModel
from halo_ros.drivers.dynamixel import protocol
from halo_ros.drivers.dynamixel.tables import (
    ALERT_BIT,
    BROADCAST_ID,
    HardwareError,
    Instruction,
    OperatingMode,
    Register,
    StatusError,
    StatusReturnLevel,
)
from halo_ros.sched import make_fifo
from halo_ros.sim.arm_io import SHAFTS, SimulatedArm
from halo_ros.sim.virtual_bus.hardware import ServoMount, mounts
from halo_ros.sim.virtual_bus.servo import ServoSettings, VirtualServo

log = logging.getLogger(__name__)

OVERLOAD_LATCH_S = 2.0  # |current| at Current Limit this long latches Overload [assumption]
_POLL_S = 0.1  # how often the serving thread checks for stop()


@dataclass(frozen=True)
class FaultInjection:
    """Per status packet: drop it, or send it with a broken CRC."""

    drop_probability: float = 0.0
    corrupt_probability: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ('drop_probability', 'corrupt_probability'):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f'{name} must be in [0, 1], got {getattr(self, name)}')


def servo_settings(calibration: ArmCalibration, mount: ServoMount) -> ServoSettings:
    """EEPROM of a servo as the robot's builder left it: IDs, drive modes, shadows, limits."""
    motor = mount.motor
    if mount.shaft < 6:
        joint = calibration.joints[mount.shaft]
        ends = [
            mount.present_ticks(joint.min_rad, reverse=motor.reverse, homing_offset=0),
            mount.present_ticks(joint.max_rad, reverse=motor.reverse, homing_offset=0),
        ]
        low, high = min(ends), max(ends)
    else:
        low, high = 0, 4095
    mode = OperatingMode.POSITION
    current_limit = 1193
    if mount.shaft == 6 and calibration.gripper.current_limit_ma is not None:
        mode = OperatingMode.CURRENT_BASED_POSITION
        current_limit = calibration.gripper.current_limit_units
    return ServoSettings(
        id=motor.id,
        model=motor.model,
        drive_mode=motor.drive_mode,
        operating_mode=mode,
        secondary_id=motor.secondary_id,
        current_limit=current_limit,
        min_position_ticks=low,
        max_position_ticks=high,
    )


class VirtualBus:
    """Nine emulated servos of one ALOHA arm on a pty. start() returns the port path."""

    def __init__(
        self,
        arm: SimulatedArm,
        calibration: ArmCalibration,
        *,
        link: str | Path | None = None,
        faults: FaultInjection = FaultInjection(),
        reply_latency_ms: float = 0.0,
        assembly_error_ticks: Mapping[int, float] | None = None,
        reply_priority: int = 0,
    ) -> None:
        """`reply_latency_ms` delays every burst of replies, standing in for wire time and the
        USB adapter's latency timer (a pty has neither), e.g. for benchmarks.
        `assembly_error_ticks` mounts servos (by ID) off by that many encoder ticks.
        `reply_priority` > 0 serves on a SCHED_FIFO thread: a USB adaptor and its servos answer
        whatever the CPU is doing, an emulator thread at normal priority waits its turn."""
        if reply_latency_ms < 0:
            raise ValueError(f'reply_latency_ms must be >= 0, got {reply_latency_ms}')
        if not 0 <= reply_priority <= 99:
            raise ValueError(f'reply_priority must be in [0, 99], got {reply_priority}')
        self.reply_priority = reply_priority
        self.reply_latency_s = reply_latency_ms / 1e3
        self.arm = arm
        self.calibration = calibration
        self.link = Path(link) if link is not None else None
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self._mounts = mounts(calibration, assembly_error_ticks)
        self.servos = {
            m.motor.id: VirtualServo(servo_settings(calibration, m)) for m in self._mounts
        }
        self._mount_of = {m.motor.id: m for m in self._mounts}
        self._primary = [
            next(m for m in self._mounts if m.primary and m.shaft == s) for s in range(SHAFTS)
        ]
        self._lock = threading.Lock()
        self._parser = protocol.StreamParser()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._master = self._slave = -1
        self.pty_path = ''
        self._overload_since: dict[int, float] = {}
        self.replies_dropped = 0
        self.replies_corrupted = 0
        with self._lock:
            self._refresh()
            for servo in self.servos.values():
                servo.reset_ram()
            self._push()

    @property
    def model(self) -> ArmModel:
        return self.calibration.model

    @property
    def port_path(self) -> str:
        return str(self.link) if self.link is not None else self.pty_path

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> str:
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)  # no echo, no line discipline: bytes pass as they are
        os.set_blocking(self._master, False)
        self.pty_path = os.ttyname(self._slave)
        if self.link is not None:
            self.link.parent.mkdir(parents=True, exist_ok=True)
            if self.link.is_symlink():
                log.warning(
                    'replacing the existing link %s -> %s', self.link, os.readlink(self.link)
                )
                self.link.unlink()
            elif self.link.exists():
                raise FileExistsError(f'{self.link} exists and is not a symlink; not replacing it')
            self.link.symlink_to(self.pty_path)
        self._thread = threading.Thread(
            target=self._serve, name=f'virtual-bus-{self.arm.name}', daemon=True
        )
        self._thread.start()
        log.info('virtual bus for %s on %s', self.arm.name, self.port_path)
        return self.port_path

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if (
            self.link is not None
            and self.link.is_symlink()
            and os.readlink(self.link) == self.pty_path
        ):
            self.link.unlink()
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1

    @property
    def plugged(self) -> bool:
        return self._master >= 0

    def unplug(self) -> None:
        """The USB adaptor goes away: the pty closes under the driver (its next I/O fails) and
        the port path disappears. The servos stay powered: their state is kept."""
        self.stop()

    def replug(self) -> str:
        """The adaptor comes back: a new pty at the same port path."""
        self._stop.clear()
        self._parser = protocol.StreamParser()
        return self.start()

    def __enter__(self) -> 'VirtualBus':
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- fault injection --------------------------------------------------------------------

    def latch_error(self, dxl_id: int, error: HardwareError = HardwareError.OVERLOAD) -> None:
        """Latch a hardware error on a servo, as an overload would."""
        with self._lock:
            self.servos[dxl_id].latch(error)
            self._push()

    def set_faults(self, faults: FaultInjection) -> None:
        with self._lock:
            self.faults = faults
            self._rng = random.Random(faults.seed)

    # -- serving ----------------------------------------------------------------------------

    def _serve(self) -> None:
        if self.reply_priority:
            make_fifo(self.reply_priority, [threading.current_thread()])
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], _POLL_S)
            if not ready:
                continue
            try:
                data = os.read(self._master, 4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as error:  # EIO: every slave fd closed
                log.debug('pty read failed: %s', error)
                time.sleep(_POLL_S)
                continue
            out = bytearray()
            with self._lock:
                for packet in self._parser.feed(data):
                    for reply in self.handle(packet):
                        out += self._inject(reply)
            if out:
                if self.reply_latency_s:
                    time.sleep(self.reply_latency_s)
                try:
                    os.write(self._master, out)
                except BlockingIOError:
                    log.debug('pty full: nobody is reading; %d reply bytes dropped', len(out))

    def _inject(self, reply: bytes) -> bytes:
        draw = self._rng.random()
        if draw < self.faults.drop_probability:
            self.replies_dropped += 1
            return b''
        if draw < self.faults.drop_probability + self.faults.corrupt_probability:
            self.replies_corrupted += 1
            return reply[:-1] + bytes([reply[-1] ^ 0xFF])
        return reply

    def handle(self, packet: protocol.Packet) -> list[bytes]:
        """The status packets a bus would send for one instruction (caller holds the lock)."""
        if packet.is_status:
            return []
        handler = {
            Instruction.PING: self._ping,
            Instruction.READ: self._read,
            Instruction.WRITE: self._write,
            Instruction.SYNC_READ: self._sync_read,
            Instruction.SYNC_WRITE: self._sync_write,
            Instruction.BULK_READ: self._bulk_read,
            Instruction.REBOOT: self._reboot,
        }.get(packet.instruction)
        if handler is None:
            servo = self.servos.get(packet.id)
            return [self._status(servo, StatusError.INSTRUCTION)] if servo is not None else []
        return handler(packet)

    def _status(self, servo: VirtualServo, error: StatusError, params: bytes = b'') -> bytes:
        alert = ALERT_BIT if servo.hardware_error else 0
        return protocol.encode_status(servo.id, int(error) | alert, params)

    def _targets(self, dxl_id: int) -> tuple[VirtualServo | None, list[VirtualServo]]:
        """(the servo that answers, the servos that execute) for a packet addressed to dxl_id."""
        if dxl_id == BROADCAST_ID:
            return None, list(self.servos.values())
        answering = self.servos.get(dxl_id)
        silent = [
            s for s in self.servos.values() if s.secondary_id == dxl_id and s is not answering
        ]
        return answering, ([answering] if answering else []) + silent

    def _ping(self, packet):
        answering = (
            list(self.servos.values())
            if packet.id == BROADCAST_ID
            else [self.servos.get(packet.id)]
        )
        return [
            self._status(s, StatusError.NONE, _ping_params(s)) for s in answering if s is not None
        ]

    def _read_reply(self, servo: VirtualServo | None, address: int, length: int) -> list[bytes]:
        if servo is None or servo.status_return_level < StatusReturnLevel.PING_READ:
            return []
        data = servo.read(address, length)
        if isinstance(data, StatusError):
            return [self._status(servo, data)]
        return [self._status(servo, StatusError.NONE, data)]

    def _read(self, packet):
        if packet.id == BROADCAST_ID:
            return []
        answering, _ = self._targets(packet.id)
        if answering is None:
            return []
        if len(packet.params) != 4:
            return [self._status(answering, StatusError.DATA_LENGTH)]
        self._refresh()
        address, length = _u16(packet.params, 0), _u16(packet.params, 2)
        return self._read_reply(answering, address, length)

    def _write(self, packet):
        answering, executing = self._targets(packet.id)
        if len(packet.params) < 3:
            return [self._status(answering, StatusError.DATA_LENGTH)] if answering else []
        address, data = _u16(packet.params, 0), packet.params[2:]
        error = StatusError.NONE
        for servo in executing:
            result = servo.write(address, data)
            if servo is answering:
                error = result
        self._push()
        if answering is None or answering.status_return_level < StatusReturnLevel.ALL:
            return []
        return [self._status(answering, error)]

    def _sync_read(self, packet):
        if len(packet.params) < 5:
            return []
        address, length = _u16(packet.params, 0), _u16(packet.params, 2)
        self._refresh()
        replies = []
        for dxl_id in packet.params[4:]:
            replies += self._read_reply(self.servos.get(dxl_id), address, length)
        return replies

    def _sync_write(self, packet):
        if len(packet.params) < 4:
            return []
        address, length = _u16(packet.params, 0), _u16(packet.params, 2)
        body = packet.params[4:]
        if length == 0 or len(body) % (length + 1):
            return []
        for start in range(0, len(body), length + 1):
            _, executing = self._targets(body[start])
            for servo in executing:
                servo.write(address, body[start + 1 : start + 1 + length])
        self._push()
        return []

    def _bulk_read(self, packet):
        if len(packet.params) % 5:
            return []
        self._refresh()
        replies = []
        for start in range(0, len(packet.params), 5):
            dxl_id = packet.params[start]
            address, length = _u16(packet.params, start + 1), _u16(packet.params, start + 3)
            replies += self._read_reply(self.servos.get(dxl_id), address, length)
        return replies

    def _reboot(self, packet):
        answering, executing = self._targets(packet.id)
        replies = []
        if answering is not None and answering.status_return_level == StatusReturnLevel.ALL:
            replies.append(self._status(answering, StatusError.NONE))  # sent before rebooting
        self._refresh()
        for servo in executing:
            servo.reset_ram()
            self._overload_since.pop(servo.id, None)
        self._push()
        return replies

    # -- the arm ----------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Present Position/Velocity/Current of every servo from the arm's shafts."""
        state = self.arm.read()
        now = time.monotonic()
        for dxl_id, servo in self.servos.items():
            mount = self._mount_of[dxl_id]
            reverse = bool(servo.get(Register.DRIVE_MODE) & 1)
            homing = servo.get(Register.HOMING_OFFSET)
            current = mount.current_units(float(state.effort_ma[mount.shaft]), reverse=reverse)
            servo.set_present(
                position_ticks=mount.present_ticks(
                    float(state.position_rad[mount.shaft]), reverse=reverse, homing_offset=homing
                ),
                velocity_units=mount.velocity_units(
                    float(state.velocity_rad_s[mount.shaft]), reverse=reverse
                ),
                current_units=current,
            )
            self._check_overload(servo, current, now)

    def _check_overload(self, servo: VirtualServo, current_units: int, now: float) -> None:
        if not (servo.model.has_current_control and servo.torque_enabled):
            self._overload_since.pop(servo.id, None)
            return
        if abs(current_units) < servo.get(Register.CURRENT_LIMIT):
            self._overload_since.pop(servo.id, None)
            return
        since = self._overload_since.setdefault(servo.id, now)
        if now - since >= OVERLOAD_LATCH_S:
            log.info('%s ID %d: overload latched', self.arm.name, servo.id)
            servo.latch(HardwareError.OVERLOAD)
            self._push()

    def _push(self) -> None:
        """Goal Position and Torque Enable of each shaft's primary servo to the arm."""
        goal = np.empty(SHAFTS)
        torque = np.zeros(SHAFTS, bool)
        for shaft, mount in enumerate(self._primary):
            servo = self.servos[mount.motor.id]
            goal[shaft] = mount.shaft_rad(
                servo.get(Register.GOAL_POSITION),
                reverse=bool(servo.get(Register.DRIVE_MODE) & 1),
                homing_offset=servo.get(Register.HOMING_OFFSET),
            )
            torque[shaft] = servo.torque_enabled
        self.arm.set_goal(goal)
        self.arm.set_torque(torque)


def _ping_params(servo: VirtualServo) -> bytes:
    return int(servo.model).to_bytes(2, 'little') + bytes([servo.get(Register.FIRMWARE_VERSION)])


def _u16(data: bytes, offset: int) -> int:
    return data[offset] | data[offset + 1] << 8


def start_virtual_buses(
    arms: Mapping[str, SimulatedArm], calibration: RobotCalibration, **options
) -> dict[ArmName, VirtualBus]:
    """Start one VirtualBus per simulated arm at its calibrated port path; stop() each when done.

    `arms` maps arm names ('follower_left', ...) to SimulatedArms; `options` go to VirtualBus."""
    buses: dict[ArmName, VirtualBus] = {}
    try:
        for name, arm in arms.items():
            arm_calibration = calibration.arm(name)
            bus = VirtualBus(arm, arm_calibration, link=arm_calibration.port, **options)
            bus.start()
            buses[arm_calibration.name] = bus
    except Exception:
        for bus in buses.values():
            bus.stop()
        raise
    return buses
