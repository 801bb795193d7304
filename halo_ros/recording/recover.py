"""Salvage episode bags whose recorder died before closing them.

A killed writer leaves `<bag>/<bag>.mcap` without the MCAP summary and footer, and no
metadata.yaml. Every chunk the writer closed before it died is complete on disk (that is what
the flush timer is for); the chunk it was filling is lost, and a partly written record at the end
is ignored. `recover_episode` reads the complete chunks in file order and writes a new, finished
bag in the same place (the old file is removed only after the new one is closed), with the
sidecar's status set to `recovered`.

The scan is ~100 lines of MCAP record parsing rather than a reader dependency: the rosbags
reader insists on a footer, and the `mcap` package is a test-only dependency here.
"""

import logging
import os
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from halo_ros.recording.episode_meta import (
    EpisodeMeta,
    EpisodeStatus,
    read_sidecar,
    write_sidecar,
)

logger = logging.getLogger(__name__)

MAGIC = b'\x89MCAP0\r\n'
_OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK, _OP_FOOTER = 0x03, 0x04, 0x05, 0x06, 0x02


@dataclass(frozen=True)
class SalvagedMessage:
    topic: str
    msgtype: str
    log_time_ns: int
    data: bytes


@dataclass(frozen=True)
class RecoveryReport:
    bag_dir: Path
    needed: bool  # False: the bag was complete already
    chunks: int
    messages: int
    trailing_bytes_dropped: int  # the partial record after the last complete one


def mcap_file(bag_dir: Path) -> Path:
    files = sorted(Path(bag_dir).glob('*.mcap'))
    if len(files) != 1:
        raise FileNotFoundError(f'expected one .mcap file in {bag_dir}, found {len(files)}')
    return files[0]


def is_complete(path: Path) -> bool:
    """True if the MCAP file ends with a footer and the closing magic."""
    size = path.stat().st_size
    if size < 8 + 37:
        return False
    with open(path, 'rb') as f:
        f.seek(-37, os.SEEK_END)
        tail = f.read(37)
    return tail[0] == _OP_FOOTER and tail[-8:] == MAGIC


class _Buf:
    def __init__(self, data: memoryview):
        self.data = data
        self.pos = 0

    def u16(self) -> int:
        (v,) = struct.unpack_from('<H', self.data, self.pos)
        self.pos += 2
        return v

    def u32(self) -> int:
        (v,) = struct.unpack_from('<I', self.data, self.pos)
        self.pos += 4
        return v

    def u64(self) -> int:
        (v,) = struct.unpack_from('<Q', self.data, self.pos)
        self.pos += 8
        return v

    def bytes_(self, n: int) -> memoryview:
        v = self.data[self.pos : self.pos + n]
        if len(v) != n:
            raise EOFError
        self.pos += n
        return v

    def string(self) -> str:
        return bytes(self.bytes_(self.u32())).decode()


def _records(data: memoryview) -> Iterator[tuple[int, memoryview, int]]:
    """(opcode, body, end offset) of each complete record; stops at a truncated one."""
    pos = 0
    while pos + 9 <= len(data):
        op = data[pos]
        (length,) = struct.unpack_from('<Q', data, pos + 1)
        end = pos + 9 + length
        if end > len(data):
            return
        yield op, data[pos + 9 : end], end
        pos = end


def scan(path: Path) -> tuple[list[SalvagedMessage], int, int]:
    """Messages of every complete chunk, the number of chunks and the trailing garbage bytes."""
    from rosbags.rosbag2.storage_mcap import decompress

    with open(path, 'rb') as f:
        raw = f.read()
    if not raw.startswith(MAGIC):
        raise ValueError(f'{path} is not an MCAP file (bad magic)')
    data = memoryview(raw)[len(MAGIC) :]
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}
    messages: list[SalvagedMessage] = []
    chunks = 0
    last_end = 0

    def inner(body: memoryview) -> None:
        for op, rec, _ in _records(body):
            b = _Buf(rec)
            if op == _OP_SCHEMA:
                sid = b.u16()
                schemas[sid] = b.string()
            elif op == _OP_CHANNEL:
                cid, sid = b.u16(), b.u16()
                channels[cid] = (b.string(), schemas.get(sid, ''))
            elif op == _OP_MESSAGE:
                cid = b.u16()
                b.u32()
                log_time = b.u64()
                b.u64()
                topic, msgtype = channels[cid]
                messages.append(SalvagedMessage(topic, msgtype, log_time, bytes(rec[b.pos :])))

    for op, body, end in _records(data):
        last_end = end
        if op in (_OP_SCHEMA, _OP_CHANNEL):
            inner(memoryview(bytes([op]) + struct.pack('<Q', len(body)) + bytes(body)))
        elif op == _OP_CHUNK:
            b = _Buf(body)
            b.u64(), b.u64()
            size, crc = b.u64(), b.u32()
            compression = b.string()
            payload = b.bytes_(b.u64())
            inner(memoryview(decompress(bytes(payload), compression, size, crc)))
            chunks += 1
        elif op == _OP_FOOTER:
            break
    return messages, chunks, len(data) - last_end


def recover_episode(bag_dir: Path) -> RecoveryReport:
    """Rewrite an unfinished episode bag into a complete one, in place."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    bag_dir = Path(bag_dir)
    path = mcap_file(bag_dir)
    if is_complete(path):
        return RecoveryReport(bag_dir, False, 0, 0, 0)
    messages, chunks, trailing = scan(path)
    try:
        meta = read_sidecar(bag_dir)
    except FileNotFoundError:
        meta = EpisodeMeta(episode_id=bag_dir.name)
    counts: dict[str, int] = {}
    for m in messages:
        counts[m.topic] = counts.get(m.topic, 0) + 1
    meta = meta.with_(
        status=EpisodeStatus.RECOVERED,
        message_counts=counts,
        error=meta.error or 'recorder stopped without closing the bag',
        end_time_ns=max((m.log_time_ns for m in messages), default=0),
    )

    ts = get_typestore(Stores.ROS2_JAZZY)
    work = bag_dir.with_name(bag_dir.name + '.recovering')
    shutil.rmtree(work, ignore_errors=True)
    # The writer names the file after its folder; write into work/<name>, then move it up.
    new_bag = work / bag_dir.name
    bag = Writer(new_bag, version=9, storage_plugin=StoragePlugin.MCAP)
    bag.open()
    conns = {}
    for m in messages:
        key = (m.topic, m.msgtype)
        if key not in conns:
            conns[key] = bag.add_connection(m.topic, m.msgtype, typestore=ts)
        bag.write(conns[key], m.log_time_ns, m.data)
    for k, v in meta.custom_data().items():
        bag.set_custom_data(k, v)
    bag.close()
    write_sidecar(new_bag, meta)
    old = bag_dir.with_name(bag_dir.name + '.partial')
    os.replace(bag_dir, old)
    os.replace(new_bag, bag_dir)
    shutil.rmtree(old)
    work.rmdir()
    logger.info(
        'recovered %s: %d messages from %d chunks (%d trailing bytes dropped)',
        bag_dir,
        len(messages),
        chunks,
        trailing,
    )
    return RecoveryReport(bag_dir, True, chunks, len(messages), trailing)


def add_arguments(parser) -> None:
    parser.add_argument('episodes', nargs='+', help='episode bag folders, or folders of them')


def run(args) -> int:
    from halo_ros.recording.export_dataset import find_episodes

    bags = find_episodes(args.episodes)
    recovered = 0
    for bag in bags:
        report = recover_episode(bag)
        if report.needed:
            recovered += 1
            logger.info('%s: %d messages recovered', bag, report.messages)
    logger.info('%d of %d bags needed recovery', recovered, len(bags))
    return 0
