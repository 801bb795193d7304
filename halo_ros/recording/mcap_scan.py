"""Stream the messages out of an unfinished MCAP file, chunk by chunk, up to the first damage.

A killed recorder leaves the data section without summary and footer; a power loss can also
leave garbage where the last chunks were (pages the kernel had not written). The chunk is the
unit of salvage: one is used only if it is wholly on disk and every record in it parses, with a
known channel and a log time inside the chunk's time range. The first chunk that is cut off or
damaged ends the scan, so what comes back is a gap-free prefix of the episode, and only one chunk
is in memory at a time. Damage is found where it breaks that structure; garbage inside a message's
payload is not, unless the chunk carries a CRC (checked when present; rosbags writes none).

~100 lines of record parsing rather than a reader dependency: the rosbags reader insists on a
footer, and the `mcap` package is a test-only dependency here. Format: https://mcap.dev/spec
"""

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAGIC = b'\x89MCAP0\r\n'
OP_HEADER, OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE = 0x01, 0x02, 0x03, 0x04, 0x05
OP_CHUNK, OP_MESSAGE_INDEX, OP_ATTACHMENT, OP_METADATA, OP_DATA_END = 0x06, 0x07, 0x09, 0x0C, 0x0F
_SKIPPED = (OP_HEADER, OP_MESSAGE_INDEX, OP_ATTACHMENT, OP_METADATA)  # nothing to salvage in them
_END = (OP_DATA_END, OP_FOOTER)  # the summary follows: the data section is whole
_COMPRESSIONS = ('', 'zstd', 'lz4')
_RECORD_HEAD = struct.Struct('<BQ')  # opcode, body length
_CHUNK_HEAD = struct.Struct('<QQQII')  # start, end time; uncompressed size, crc; compression len
_EMPTY_CHUNK_TIMES = (2**63 - 1, 0)  # rosbags' times of a chunk without messages


@dataclass(frozen=True)
class SalvagedMessage:
    topic: str
    msgtype: str
    log_time_ns: int
    data: bytes


class _Damaged(Exception):
    """A record that cannot be what the writer wrote; the message says what is wrong."""


class _Body:
    """Bounds-checked little-endian reads from one record body."""

    def __init__(self, data: memoryview):
        self.data = data
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise _Damaged(f'a field runs {self.pos + n - len(self.data)} bytes past its record')
        view = self.data[self.pos : self.pos + n]
        self.pos += n
        return view

    def u16(self) -> int:
        return int.from_bytes(self.take(2), 'little')

    def u32(self) -> int:
        return int.from_bytes(self.take(4), 'little')

    def u64(self) -> int:
        return int.from_bytes(self.take(8), 'little')

    def string(self) -> str:
        try:
            return bytes(self.take(self.u32())).decode()
        except UnicodeDecodeError as err:
            raise _Damaged(f'a string is not UTF-8 ({err.reason})') from None


def _records(data: memoryview) -> Iterator[tuple[int, memoryview]]:
    """(opcode, body) of each record of a chunk, which must end exactly at the chunk's end."""
    pos = 0
    while pos < len(data):
        if pos + _RECORD_HEAD.size > len(data):
            raise _Damaged(f'a record header is cut at byte {pos} of the chunk')
        op, length = _RECORD_HEAD.unpack_from(data, pos)
        end = pos + _RECORD_HEAD.size + length
        if end > len(data):
            raise _Damaged(f'record 0x{op:02x} at byte {pos} runs past the chunk')
        yield op, data[pos + _RECORD_HEAD.size : end]
        pos = end


class McapScan:
    """Iterate for the salvaged messages; afterwards the fields say how far the scan got."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.chunks = 0  # chunks salvaged whole
        self.messages = 0
        self.end_offset = 0  # the salvaged data ends here
        self.file_size = 0
        self.stopped = ''  # why the scan ended before the end of the file; '' if it did not
        self._schemas: dict[int, str] = {}
        self._channels: dict[int, tuple[str, str]] = {}  # id -> topic, message type

    @property
    def dropped_bytes(self) -> int:
        return self.file_size - self.end_offset

    def __iter__(self) -> Iterator[SalvagedMessage]:
        with open(self.path, 'rb') as f:
            self.file_size = os.fstat(f.fileno()).st_size
            if f.read(len(MAGIC)) != MAGIC:
                raise ValueError(f'{self.path} is not an MCAP file (bad magic)')
            self.end_offset = len(MAGIC)
            try:
                yield from self._data_section(f)
            except _Damaged as err:
                self.stopped = f'damaged record at byte {self.end_offset}: {err}'

    def _data_section(self, f) -> Iterator[SalvagedMessage]:
        while True:
            pos = self.end_offset
            head = f.read(_RECORD_HEAD.size)
            if len(head) < _RECORD_HEAD.size:
                if head:
                    self.stopped = f'a record header is cut off at byte {pos}'
                return
            op, length = _RECORD_HEAD.unpack(head)
            end = pos + _RECORD_HEAD.size + length
            if end > self.file_size:
                self.stopped = f'record 0x{op:02x} at byte {pos} is cut off by the end of the file'
                return
            if op in _END:
                return
            if op in _SKIPPED:
                f.seek(length, os.SEEK_CUR)
                messages = []
            elif op == OP_CHUNK:
                messages = self._chunk(f, length)
                self.chunks += 1
            elif op in (OP_SCHEMA, OP_CHANNEL, OP_MESSAGE):  # MCAP allows them outside chunks
                messages = self._parse(head + f.read(length), 0, 2**64 - 1)
            else:
                raise _Damaged(f'opcode 0x{op:02x} has no place in the data section')
            self.end_offset = end
            self.messages += len(messages)
            yield from messages

    def _chunk(self, f, length: int) -> list[SalvagedMessage]:
        from rosbags.rosbag2.storage_mcap import decompress

        # The fixed fields first: a garbage length is caught before anything is allocated for it.
        head = _Body(memoryview(f.read(min(length, _CHUNK_HEAD.size))))
        start_ns, end_ns, size, crc = head.u64(), head.u64(), head.u64(), head.u32()
        compression_len = head.u32()
        if compression_len > max(map(len, _COMPRESSIONS)):
            raise _Damaged(f'chunk compression name of {compression_len} bytes')
        rest = _Body(memoryview(f.read(compression_len + 8)))
        compression = bytes(rest.take(compression_len)).decode(errors='replace')
        payload_len = rest.u64()
        if compression not in _COMPRESSIONS:
            raise _Damaged(f'unknown chunk compression {compression!r}')
        if length != _CHUNK_HEAD.size + compression_len + 8 + payload_len:
            raise _Damaged(f'chunk of {length} bytes holds {payload_len} bytes of records')
        if not compression and payload_len != size:
            raise _Damaged(f'uncompressed chunk of {payload_len} bytes says {size}')
        if start_ns > end_ns and (start_ns, end_ns) != _EMPTY_CHUNK_TIMES:
            raise _Damaged(f'chunk time range {start_ns}..{end_ns} is reversed')
        try:  # checks the size, and the CRC where the writer wrote one
            raw = decompress(f.read(payload_len), compression, size, crc)
        except Exception as err:  # zstd, lz4 and rosbags each raise their own kind
            raise _Damaged(f'chunk does not decompress or check ({err})') from None
        return self._parse(raw, start_ns, end_ns)

    def _parse(self, raw: bytes, start_ns: int, end_ns: int) -> list[SalvagedMessage]:
        """The messages of one chunk's records; schemas and channels count only if it is whole."""
        schemas, channels = dict(self._schemas), dict(self._channels)
        messages: list[SalvagedMessage] = []
        for op, rec in _records(memoryview(raw)):
            b = _Body(rec)
            if op == OP_SCHEMA:
                sid = b.u16()
                schemas[sid] = b.string()
            elif op == OP_CHANNEL:
                cid, sid = b.u16(), b.u16()
                if sid not in schemas:
                    raise _Damaged(f'channel {cid} names unknown schema {sid}')
                channels[cid] = (b.string(), schemas[sid])
            elif op == OP_MESSAGE:
                cid, _, log_time, _ = b.u16(), b.u32(), b.u64(), b.u64()
                if cid not in channels:
                    raise _Damaged(f'message on unknown channel {cid}')
                if not start_ns <= log_time <= end_ns:
                    raise _Damaged(f'message time {log_time} outside its chunk')
                messages.append(SalvagedMessage(*channels[cid], log_time, bytes(rec[b.pos :])))
            else:  # a chunk holds schemas, channels and messages only
                raise _Damaged(f'opcode 0x{op:02x} has no place in a chunk')
        self._schemas, self._channels = schemas, channels
        return messages
