"""Protocol 2.0 framing in pure Python: CRC-16, byte stuffing, packet encode and decode.

The driver itself talks through dynamixel-sdk; this module is what the virtual bus speaks and what
the golden-packet tests check both against. Frame layout (e-Manual, Protocol 2.0):

    instruction: FF FF FD 00 | ID | LEN_L LEN_H | INST | params.. | CRC_L CRC_H
    status:      FF FF FD 00 | ID | LEN_L LEN_H | 55 | ERR | params.. | CRC_L CRC_H

LEN counts the bytes after itself after stuffing; the CRC covers header..last param after stuffing.
https://emanual.robotis.com/docs/en/dxl/protocol2/
"""

import logging
from dataclasses import dataclass

from halo_ros.drivers.dynamixel.tables import Instruction

log = logging.getLogger(__name__)

HEADER = b'\xff\xff\xfd\x00'
_PREFIX = b'\xff\xff\xfd'
_MIN_PACKET = 10  # header(4) id(1) len(2) inst(1) crc(2)
MAX_PACKET = 1024


def _crc_table() -> list[int]:
    # CRC-16/BUYPASS: polynomial 0x8005, init 0, not reflected (the SDK's updateCRC table).
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) ^ _CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]) & 0xFFFF
    return crc


def stuff(body: bytes) -> bytes:
    """Insert FD after every FF FF FD in the instruction and parameters."""
    out = bytearray()
    for byte in body:
        out.append(byte)
        if byte == 0xFD and out[-3:] == _PREFIX:
            out.append(0xFD)
    return bytes(out)


def unstuff(body: bytes) -> bytes:
    """Drop the FD that follows every FF FF FD."""
    out = bytearray()
    index = 0
    while index < len(body):
        out.append(body[index])
        if out[-3:] == _PREFIX and index + 1 < len(body) and body[index + 1] == 0xFD:
            index += 1  # the stuffing byte
        index += 1
    return bytes(out)


def _frame(packet_id: int, body: bytes) -> bytes:
    stuffed = stuff(body)
    length = len(stuffed) + 2  # + CRC
    head = HEADER + bytes([packet_id, length & 0xFF, length >> 8])
    crc = crc16(head + stuffed)
    return head + stuffed + bytes([crc & 0xFF, crc >> 8])


def encode_instruction(packet_id: int, instruction: int, params: bytes = b'') -> bytes:
    return _frame(packet_id, bytes([instruction]) + bytes(params))


def encode_status(packet_id: int, error: int, params: bytes = b'') -> bytes:
    return _frame(packet_id, bytes([Instruction.STATUS, error]) + bytes(params))


@dataclass(frozen=True)
class Packet:
    """One decoded packet. For a status packet `error` is the error byte and `params` follow it."""

    id: int
    instruction: int
    params: bytes
    error: int | None = None

    @property
    def is_status(self) -> bool:
        return self.instruction == Instruction.STATUS


def decode(raw: bytes) -> Packet:
    """One complete packet -> Packet; raises ValueError on a bad header, length or CRC."""
    if len(raw) < _MIN_PACKET or raw[:4] != HEADER:
        raise ValueError(f'not a Protocol 2.0 packet: {raw.hex(" ")}')
    length = raw[5] | raw[6] << 8
    if len(raw) != 7 + length:
        raise ValueError(f'packet length field {length} does not match {len(raw) - 7} bytes')
    crc = raw[-2] | raw[-1] << 8
    if crc16(raw[:-2]) != crc:
        raise ValueError(f'CRC mismatch: got 0x{crc:04X}, computed 0x{crc16(raw[:-2]):04X}')
    body = unstuff(raw[7:-2])
    if body[0] == Instruction.STATUS:
        if len(body) < 2:
            raise ValueError('status packet without an error byte')
        return Packet(raw[4], body[0], body[2:], body[1])
    return Packet(raw[4], body[0], body[1:])


class StreamParser:
    """Splits a byte stream into packets; skips noise and drops packets with a bad CRC."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.corrupt_count = 0

    def feed(self, data: bytes) -> list[Packet]:
        self._buffer += data
        packets = []
        while True:
            start = self._find_header()
            if start < 0:
                return packets
            del self._buffer[:start]
            if len(self._buffer) < 7:
                return packets
            length = self._buffer[5] | self._buffer[6] << 8
            if length < 3 or length + 7 > MAX_PACKET:
                del self._buffer[:1]  # a false header; resynchronise on the next byte
                continue
            if len(self._buffer) < 7 + length:
                return packets
            raw = bytes(self._buffer[: 7 + length])
            try:
                packets.append(decode(raw))
                del self._buffer[: 7 + length]
            except ValueError as error:
                self.corrupt_count += 1
                log.debug('dropping a packet: %s', error)
                del self._buffer[:1]

    def _find_header(self) -> int:
        start = 0
        while True:
            index = self._buffer.find(_PREFIX, start)
            if index < 0:
                # Keep a possible partial header at the end of the buffer.
                keep = (
                    2
                    if self._buffer.endswith(b'\xff\xff')
                    else 1
                    if self._buffer[-1:] == b'\xff'
                    else 0
                )
                del self._buffer[: len(self._buffer) - keep]
                return -1
            if index + 3 < len(self._buffer) and self._buffer[index + 3] == 0xFD:
                start = index + 1  # FF FF FD FD is stuffed data, not a header
                continue
            return index
