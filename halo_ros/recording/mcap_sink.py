"""One episode's MCAP bag, written through rosbags, and the only code that touches its internals.

rosbags' MCAP writer has no public way to do three things a recorder needs, so this class reaches
into its state, and checks that state once, when the bag opens:

- *Checked writes.* Its output file is swapped for `_CheckedFile`, which writes every byte or
  raises: the default buffered file can report a short write on a full disk as success.
- *Chunks by time.* rosbags closes a chunk only at 1 MiB; `flush_chunk` closes it on the flush
  timer, so a killed recorder loses at most one flush period.
- *Roll back.* After a failed write, `roll_back` forgets the half-built chunk, takes its messages
  out of the counts and cuts the file, so the bag can still be closed with a true summary.

A rosbags release that changes any of it fails `open` with one `RosbagsInternalsError` naming
what is missing, before anything is recorded, instead of failing at the next full disk.
"""

import contextlib
import dataclasses
import errno
import os
import shutil
import struct
from collections import defaultdict
from importlib.metadata import version
from io import BytesIO
from pathlib import Path

from halo_ros.recording.topics import OfferedQos

# What `McapSink` uses of rosbags beyond its public API, by the object that holds it.
_WRITER_INTERNALS = ('storage', 'connections', 'counts', 'max_timestamp')
_STORAGE_INTERNALS = ('path', 'bio', 'chunk', 'chunks', 'channel_stats', 'message_end_time')
_STORAGE_METHODS = ('close_chunk',)
_CHUNK_FIELDS = ('message_start_time', 'message_end_time', 'bio', 'msgs')
_EMPTY_START_NS = 2**63 - 1  # an empty chunk's start time, as rosbags initialises it


class RosbagsInternalsError(RuntimeError):
    """The installed rosbags lacks writer internals that halo_ros.recording relies on."""


class _CheckedFile:
    """An unbuffered file for rosbags' MCAP writer: writes all bytes or raises, can roll back."""

    def __init__(self, path: Path, offset: int):
        self._fd = os.open(path, os.O_WRONLY)
        os.lseek(self._fd, offset, os.SEEK_SET)
        self._pos = offset

    def write(self, data) -> int:
        view = memoryview(data).cast('B')
        done = 0
        while done < len(view):
            n = os.write(self._fd, view[done:])
            if n == 0:
                raise OSError(errno.ENOSPC, 'write returned 0 bytes')
            done += n
        self._pos += done
        return done

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._pos = os.lseek(self._fd, offset, whence)
        return self._pos

    def flush(self) -> None:
        pass  # nothing buffered here

    def fileno(self) -> int:
        return self._fd

    def fsync(self) -> None:
        os.fdatasync(self._fd)

    def truncate(self, offset: int) -> None:
        os.ftruncate(self._fd, offset)
        self.seek(offset)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _rosbags_qos(offered: OfferedQos):
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    infinite = QosTime(9223372036, 854775807)  # RMW_DURATION_INFINITE, as Jazzy writes it
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=offered.depth,
        reliability=QosReliability.RELIABLE if offered.reliable else QosReliability.BEST_EFFORT,
        durability=QosDurability.TRANSIENT_LOCAL
        if offered.transient_local
        else QosDurability.VOLATILE,
        deadline=infinite,
        lifespan=infinite,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=infinite,
        avoid_ros_namespace_conventions=False,
    )


def check_internals(bag) -> None:
    """Raise `RosbagsInternalsError` unless an open rosbags Writer has all that McapSink uses."""
    storage = getattr(bag, 'storage', None)
    chunk = getattr(storage, 'chunk', None)
    missing = [f'Writer.{n}' for n in _WRITER_INTERNALS if not hasattr(bag, n)]
    missing += [f'McapWriter.{n}' for n in _STORAGE_INTERNALS if not hasattr(storage, n)]
    missing += [
        f'McapWriter.{n}()' for n in _STORAGE_METHODS if not callable(getattr(storage, n, None))
    ]
    fields = {f.name for f in dataclasses.fields(chunk)} if dataclasses.is_dataclass(chunk) else ()
    missing += [f'PendingChunk.{n}' for n in _CHUNK_FIELDS if n not in fields]
    if missing:
        raise RosbagsInternalsError(
            f'rosbags {version("rosbags")} changed writer internals that halo_ros.recording '
            f'uses (tested with 0.10-0.11): no {", ".join(missing)}; pin rosbags or adapt '
            'halo_ros/recording/mcap_sink.py'
        )


class McapSink:
    """A rosbag2 (MCAP) bag in `bag_dir` (created by `open`; must not exist)."""

    def __init__(self, bag_dir: Path, *, typestore, zstd: bool = False):
        from rosbags.rosbag2 import StoragePlugin, Writer

        self._typestore = typestore
        self._bag = Writer(bag_dir, version=9, storage_plugin=StoragePlugin.MCAP)
        if zstd:
            from rosbags.rosbag2 import CompressionFormat, CompressionMode

            self._bag.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self._storage = None
        self._file: _CheckedFile | None = None

    def open(self) -> None:
        """Create the folder and its .mcap, and swap in the checked file. If that fails once the
        folder is made, the folder is removed again (one that existed before is left alone)."""
        from rosbags.rosbag2 import WriterError

        try:
            self._bag.open()
            check_internals(self._bag)
            storage = self._storage = self._bag.storage
            offset = storage.bio.tell()
            storage.bio.close()
            self._file = storage.bio = _CheckedFile(storage.path, offset)
        except WriterError:
            raise  # the folder exists already: not ours
        except BaseException:
            self.abandon()
            shutil.rmtree(self._bag.path, ignore_errors=True)
            raise

    def owns_path(self) -> bool:
        """True while the .mcap at the bag's path is the file this sink writes."""
        try:
            return os.path.samestat(os.fstat(self._file.fileno()), os.stat(self._storage.path))
        except FileNotFoundError:
            return False

    def add_connection(self, topic: str, msgtype: str, offered: tuple[OfferedQos, ...]):
        qos = [_rosbags_qos(q) for q in offered]
        return self._bag.add_connection(
            topic, msgtype, typestore=self._typestore, offered_qos_profiles=qos
        )

    def tell(self) -> int:
        """The file offset after the last byte handed to the kernel."""
        return self._file.tell()

    def write(self, connection, stamp_ns: int, data) -> None:
        self._bag.write(connection, stamp_ns, data)

    def flush_chunk(self) -> None:
        """Write the chunk being filled, if it holds anything."""
        if self._storage.chunk.bio.tell():
            self._storage.close_chunk()

    def fsync(self) -> None:
        self._file.fsync()

    def roll_back(self, offset: int) -> dict[str, int]:
        """Forget the chunk being filled and cut the file back to `offset` (the end of the last
        whole chunk). Returns the chunk's messages by topic, no longer counted by the bag."""
        storage, bag = self._storage, self._bag
        topic_by_id = {c.id: c.topic for c in bag.connections}
        lost: dict[str, int] = defaultdict(int)
        for cid, msgs in storage.chunk.msgs.items():
            storage.channel_stats[cid] -= len(msgs)
            bag.counts[cid] = storage.channel_stats[cid]
            lost[topic_by_id[cid]] += len(msgs)
        storage.chunk = dataclasses.replace(
            storage.chunk,
            message_start_time=_EMPTY_START_NS,
            message_end_time=0,
            bio=BytesIO(),
            msgs=defaultdict(list),
        )
        # Each ChunkIndex record starts with the chunk's message start and end time (u64 each).
        ends = [struct.unpack_from('<QQ', c.getbuffer())[1] for c in storage.chunks]
        storage.message_end_time = bag.max_timestamp = max(ends, default=0)
        self._file.truncate(offset)
        return dict(lost)

    def close(self, custom_data: dict[str, str]) -> None:
        """Write the summary, footer and metadata.yaml; on OSError the file stays as it is."""
        for key, value in custom_data.items():
            self._bag.set_custom_data(key, value)
        try:
            self._bag.close()
        except OSError:
            self._file.close()
            raise

    def abandon(self) -> None:
        """Close the file without a summary, leaving the folder as it is."""
        if self._file is not None:
            self._file.close()  # the swapped-in file is the only one open
        else:
            with contextlib.suppress(AttributeError):  # a rosbags that failed the check
                self._bag.abort()
