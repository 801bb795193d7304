"""One rosbag2 (MCAP) bag per episode, written by a thread behind a bounded queue.

The hot path (`put`) only appends raw CDR bytes to a queue: no deserialisation, no disk I/O, no
blocking. A full queue drops the message and counts it by topic and reason, so a slow disk shows
up in diagnostics instead of stalling the executor.

Data safety:
- *Killed recorder.* MCAP chunks are closed at least every `flush_period_s` (and at 1 MiB, by
  rosbags) and handed to the kernel, so a SIGKILL loses at most the last period. The file then
  lacks its summary and footer; `recover.recover_episode` rewrites it into a complete bag.
- *Full disk.* A small reserve file is allocated at start. On ENOSPC/EDQUOT the writer truncates
  the half-written chunk away, frees the reserve and closes the bag properly (summary, footer,
  metadata.yaml, sidecar with status `disk_full` and the error), so everything written before
  the error stays readable. The messages of the lost chunk are counted as dropped (`disk_full`).

The bag goes through `mcap_sink.McapSink`, the one place that touches rosbags' internals (checked
writes, chunks closed by time, roll back after a failed write). The folder's `episode_lock` is
held from the moment the bag exists until it is closed, so recovery never touches a live episode.
"""

import enum
import errno
import logging
import os
import shutil
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from halo_ros.recording.episode_lock import EpisodeLock, LiveEpisodeError
from halo_ros.recording.episode_meta import EpisodeMeta, EpisodeStatus, write_sidecar
from halo_ros.recording.mcap_sink import McapSink
from halo_ros.recording.topics import EPISODE_META_TOPIC, STRING, OfferedQos
from halo_ros.recording.write_queue import BoundedQueue

logger = logging.getLogger(__name__)

_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_RESERVE_NAME = '.disk_reserve'


class Compression(enum.Enum):
    NONE = 'none'
    ZSTD = 'zstd'  # MCAP chunk compression: every MCAP reader handles it, nothing to configure


class RecordingDropReason(enum.Enum):
    QUEUE_FULL = 'queue_full'  # the writer thread fell behind
    UNKNOWN_TYPE = 'unknown_type'  # the type is not in the typestore, so no schema to write
    DISK_FULL = 'disk_full'  # was in the chunk that could not be written
    WRITE_ERROR = 'write_error'  # another I/O error, or queued when the writer failed


@dataclass(frozen=True)
class WriterConfig:
    # 4 s of 3 x VGA rgb8 at 30 Hz (83 MB/s): rides out a slow fsync without unbounded memory.
    queue_max_bytes: int = 384 * 2**20
    # Joint states and strings are small; this bounds the count when the bytes bound cannot.
    queue_max_messages: int = 20_000
    # A killed recorder loses at most this much (plus what the kernel had not written).
    flush_period_s: float = 0.5
    # fsync protects against power loss, not SIGKILL; it costs I/O, so it is rarer than flush.
    fsync_period_s: float = 5.0
    compression: Compression = Compression.NONE
    # Room for the summary, metadata.yaml and sidecar after ENOSPC (~100 B per MiB chunk).
    disk_reserve_bytes: int = 4 * 2**20

    def __post_init__(self):
        for name in ('queue_max_bytes', 'queue_max_messages'):
            if getattr(self, name) < 1:
                raise ValueError(f'WriterConfig.{name} must be >= 1, got {getattr(self, name)}')
        if not self.flush_period_s > 0:
            raise ValueError(f'WriterConfig.flush_period_s must be > 0, got {self.flush_period_s}')
        if self.fsync_period_s < 0 or self.disk_reserve_bytes < 0:
            raise ValueError('WriterConfig.fsync_period_s and disk_reserve_bytes must be >= 0')


class RecordingDropCounter:
    """Thread-safe counts of dropped messages by (topic, reason)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, RecordingDropReason], int] = defaultdict(int)

    def add(self, topic: str, reason: RecordingDropReason, n: int = 1) -> None:
        if n:
            with self._lock:
                self._counts[(topic, reason)] += n

    def snapshot(self) -> dict[tuple[str, RecordingDropReason], int]:
        with self._lock:
            return dict(self._counts)

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def as_strings(self) -> dict[str, int]:
        return {
            f'{t}|{r.value}': n
            for (t, r), n in sorted(
                self.snapshot().items(), key=lambda kv: (kv[0][0], kv[0][1].value)
            )
        }


@dataclass(frozen=True)
class EpisodeSummary:
    bag_dir: Path
    meta: EpisodeMeta
    written_messages: int
    written_bytes: int  # payload bytes handed to the bag
    dropped_messages: int
    writer_cpu_s: float  # CPU time of the writer thread
    duration_s: float  # wall time from start to stop


_STOP = object()


class EpisodeWriter:
    """Writes one episode into `bag_dir` (created; must not exist).

    `put` is thread-safe and non-blocking. `stop` finishes the bag; `discard` deletes it.
    """

    def __init__(
        self,
        bag_dir: Path,
        meta: EpisodeMeta,
        *,
        config: WriterConfig = WriterConfig(),
        clock_ns=time.time_ns,
        meta_topic: str = EPISODE_META_TOPIC,
    ):
        from rosbags.typesys import Stores, get_typestore

        self.bag_dir = Path(bag_dir)
        self.config = config
        self.drops = RecordingDropCounter()
        self.meta_topic = meta_topic  # the node passes the resolved (namespaced) name
        self._clock_ns = clock_ns
        self._typestore = get_typestore(Stores.ROS2_JAZZY)
        self._meta = meta
        self._meta_lock = threading.Lock()
        self._queue = BoundedQueue(config.queue_max_messages, config.queue_max_bytes)
        self._accepting = False
        self._error: OSError | None = None
        self._sink: McapSink | None = None
        self._lock = EpisodeLock(self.bag_dir, owner='recorder')
        self._connections: dict[tuple[str, str], object] = {}
        self._unknown_types: set[str] = set()
        self._offered_qos: dict[str, tuple[OfferedQos, ...]] = {}
        self._written: dict[str, int] = defaultdict(int)
        self._written_bytes = 0
        self._writer_cpu_s = 0.0
        self._cpu0 = 0.0
        self._started_monotonic = 0.0
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self.bag_dir.exists():
            raise FileExistsError(f'episode bag {self.bag_dir} exists already; not overwriting')
        self.bag_dir.parent.mkdir(parents=True, exist_ok=True)
        sink = McapSink(
            self.bag_dir,
            typestore=self._typestore,
            zstd=self.config.compression is Compression.ZSTD,
        )
        try:
            sink.open()  # creates the folder and its .mcap; removes what it made on failure
            try:
                self._claim(sink)  # LiveEpisodeError: the folder is a recovery's, left alone
                self._reserve_space()
                write_sidecar(self.bag_dir, self._meta)
            except OSError:
                # Nothing was recorded yet: leave no half-made bag behind.
                sink.abandon()
                self._lock.release()
                shutil.rmtree(self.bag_dir, ignore_errors=True)
                raise
        except OSError as err:
            raise OSError(
                err.errno,
                f'cannot start episode {self._meta.episode_id} in {self.bag_dir}: '
                f'{os.strerror(err.errno or errno.EIO)} (it needs '
                f'{self.config.disk_reserve_bytes} bytes of reserve to close cleanly)',
            ) from err
        self._sink = sink
        now = self._clock_ns()
        with self._meta_lock:
            self._meta = self._meta.with_(start_time_ns=now, status=EpisodeStatus.RECORDING)
            meta = self._meta
        write_sidecar(self.bag_dir, meta)
        self._started_monotonic = time.monotonic()
        self._accepting = True
        self._queue.put((self.meta_topic, STRING, now, self._meta_cdr(meta)), 0, force=True)
        self._thread = threading.Thread(
            target=self._run, name=f'episode-writer-{meta.episode_id}', daemon=True
        )
        self._thread.start()
        logger.info('recording episode %s into %s', meta.episode_id, self.bag_dir)

    def put(self, topic: str, msgtype: str, stamp_ns: int, data: bytes | memoryview) -> bool:
        """Queue one serialized message; False (and a drop counted) if it cannot be taken."""
        if not self._accepting:
            # Before start or after stop a message is simply not part of the episode; after a
            # write error it is one the episode lost.
            if self._error is not None:
                self.drops.add(topic, RecordingDropReason.WRITE_ERROR)
            return False
        if not self._queue.put((topic, msgtype, stamp_ns, data), len(data)):
            self.drops.add(topic, RecordingDropReason.QUEUE_FULL)
            return False
        return True

    def set_offered_qos(self, topic: str, profiles: tuple[OfferedQos, ...]) -> None:
        """The publishers' QoS of a topic, for metadata.yaml; takes effect if set before the
        topic's first message."""
        self._offered_qos[topic] = tuple(profiles)

    def update_meta(self, **changes) -> EpisodeMeta:
        """Change metadata fields (instruction, outcome, reward, operator_note...)."""
        with self._meta_lock:
            self._meta = self._meta.with_(**changes)
            return self._meta

    @property
    def meta(self) -> EpisodeMeta:
        with self._meta_lock:
            return self._meta

    @property
    def error(self) -> OSError | None:
        """The write error that stopped the episode, if any."""
        return self._error

    @property
    def is_recording(self) -> bool:
        return self._accepting

    def written_counts(self) -> dict[str, int]:
        return dict(self._written)

    def stop(self, *, timeout_s: float = 60.0) -> EpisodeSummary:
        """Write what is queued, the final metadata, and close the bag."""
        if self._thread is None:
            raise RuntimeError(f'episode {self._meta.episode_id} was never started')
        self._accepting = False
        self._queue.put(_STOP, 0, force=True)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(
                f'episode writer {self._meta.episode_id} did not finish within {timeout_s} s'
            )
        return self._summary()

    def discard(self, *, timeout_s: float = 60.0) -> None:
        """Stop and delete the bag."""
        self._accepting = False
        if self._thread is not None:
            self._queue.drain()
            self._queue.put(_STOP, 0, force=True)
            self._thread.join(timeout_s)
        shutil.rmtree(self.bag_dir, ignore_errors=True)
        self._lock.release()
        logger.info('discarded episode %s', self._meta.episode_id)

    # ---- writer thread -----------------------------------------------------------------------

    def _run(self) -> None:
        cpu0 = self._cpu0 = time.thread_time()
        next_flush = time.monotonic() + self.config.flush_period_s
        next_fsync = time.monotonic() + self.config.fsync_period_s
        try:
            while True:
                item = self._queue.get(max(0.0, next_flush - time.monotonic()))
                if item is _STOP:
                    break
                if item is not None and self._error is None:
                    self._write(*item)
                now = time.monotonic()
                if now >= next_flush and self._error is None:
                    next_flush = now + self.config.flush_period_s
                    self._flush(fsync=self.config.fsync_period_s > 0 and now >= next_fsync)
                    if now >= next_fsync:
                        next_fsync = now + self.config.fsync_period_s
            self._finish()
        except Exception as err:  # never die silently: the episode must end in a known state
            logger.exception('episode writer %s crashed', self._meta.episode_id)
            self._fail(err if isinstance(err, OSError) else OSError(errno.EIO, repr(err)))
        finally:
            self._writer_cpu_s = time.thread_time() - cpu0

    def _reserve_space(self) -> None:
        if self.config.disk_reserve_bytes:
            fd = os.open(self.bag_dir / _RESERVE_NAME, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.posix_fallocate(fd, 0, self.config.disk_reserve_bytes)
            finally:
                os.close(fd)

    def _claim(self, sink: McapSink) -> None:
        """Lock the new folder. A recovery run over the output folder may have found it first,
        between its creation and this lock; then the folder is the recovery's."""
        try:
            self._lock.acquire()
        except LiveEpisodeError:
            sink.abandon()
            raise
        if not sink.owns_path():
            self._lock.release(unlink=True)
            sink.abandon()
            raise LiveEpisodeError(
                f'episode {self.bag_dir} was rewritten by a recovery while it started; '
                'not recording into it'
            )

    def _connection(self, topic: str, msgtype: str):
        key = (topic, msgtype)
        conn = self._connections.get(key)
        if conn is None and msgtype not in self._unknown_types:
            if msgtype not in self._typestore.fielddefs:
                self._unknown_types.add(msgtype)
                logger.error(
                    'topic %s: type %s is not in the Jazzy typestore; not recorded', topic, msgtype
                )
                return None
            conn = self._sink.add_connection(topic, msgtype, self._offered_qos.get(topic, ()))
            self._connections[key] = conn
        return conn

    def _write(self, topic: str, msgtype: str, stamp_ns: int, data) -> None:
        conn = self._connection(topic, msgtype)
        if conn is None:
            self.drops.add(topic, RecordingDropReason.UNKNOWN_TYPE)
            return
        safe_offset = self._sink.tell()
        try:
            self._sink.write(conn, stamp_ns, data)
        except OSError as err:
            self._on_write_error(err, safe_offset, topic)
            return
        self._written[topic] += 1
        self._written_bytes += len(data)

    def _flush(self, *, fsync: bool) -> None:
        safe_offset = self._sink.tell()
        try:
            self._sink.flush_chunk()
        except OSError as err:
            self._on_write_error(err, safe_offset)
            return
        if fsync:
            try:
                self._sink.fsync()
            except OSError as err:  # the chunk is written and indexed: keep it
                self._on_write_error(err, self._sink.tell())

    def _on_write_error(self, err: OSError, safe_offset: int, current_topic: str = '') -> None:
        """Cut the failed chunk off the file and account for the messages it held."""
        self._accepting = False
        self._error = err
        reason = (
            RecordingDropReason.DISK_FULL
            if err.errno in _DISK_FULL_ERRNOS
            else RecordingDropReason.WRITE_ERROR
        )
        self._release_reserve()
        for topic, lost in self._sink.roll_back(safe_offset).items():
            # The message being written when the error hit was never counted as written.
            self._written[topic] -= lost - (topic == current_topic)
            self.drops.add(topic, reason, lost)
        logger.error(
            'episode %s: %s writing %s; stopping the episode and keeping what was written',
            self._meta.episode_id,
            os.strerror(err.errno or errno.EIO),
            self.bag_dir,
        )

    def _release_reserve(self) -> None:
        try:
            (self.bag_dir / _RESERVE_NAME).unlink()
        except FileNotFoundError:
            pass

    def _final_meta(self, end_time_ns: int | None = None) -> EpisodeMeta:
        status = EpisodeStatus.COMPLETE
        error = ''
        if self._error is not None:
            status = (
                EpisodeStatus.DISK_FULL
                if self._error.errno in _DISK_FULL_ERRNOS
                else EpisodeStatus.FAILED
            )
            error = f'{os.strerror(self._error.errno or errno.EIO)}: {self._error}'
        for item in self._queue.drain():
            if item is not _STOP:
                self.drops.add(item[0], RecordingDropReason.WRITE_ERROR)
        with self._meta_lock:
            self._meta = self._meta.with_(
                status=status,
                error=error,
                end_time_ns=self._clock_ns() if end_time_ns is None else end_time_ns,
                # Data topics only, so the copy inside the bag can carry its own final counts.
                message_counts={t: n for t, n in self._written.items() if t != self.meta_topic},
                drops=self.drops.as_strings(),
                writer_stats={
                    'written_bytes': self._written_bytes,
                    'writer_cpu_s': round(time.thread_time() - self._cpu0, 4),
                    'duration_s': round(time.monotonic() - self._started_monotonic, 4),
                },
            )
            return self._meta

    def _finish(self) -> None:
        meta = self._final_meta()
        if self._error is None:
            self._write(self.meta_topic, STRING, meta.end_time_ns, self._meta_cdr(meta))
            meta = self._final_meta(meta.end_time_ns)  # the write may have failed too
        self._close_bag(meta)

    def _fail(self, err: OSError) -> None:
        self._accepting = False
        if self._error is None:
            self._error = err
        self._release_reserve()
        self._close_bag(self._final_meta())

    def _close_bag(self, meta: EpisodeMeta) -> None:
        try:
            self._sink.close(meta.custom_data())
        except OSError as err:
            # Even the summary did not fit: the file stays as it is; `recover` can salvage it.
            logger.error(
                'episode %s: could not finalise %s (%s); run recovery on it',
                meta.episode_id,
                self.bag_dir,
                err,
            )
            meta = meta.with_(error=f'{meta.error}; finalising failed: {err}'.lstrip('; '))
        self._release_reserve()
        try:
            write_sidecar(self.bag_dir, meta)
        except OSError as err:
            logger.error('episode %s: could not write the sidecar: %s', meta.episode_id, err)
        self._lock.release(unlink=True)  # the folder is final: recovery may have it now
        if meta.status is EpisodeStatus.COMPLETE:
            logger.info(
                'episode %s closed: %d messages, %d dropped',
                meta.episode_id,
                sum(meta.message_counts.values()),
                sum(meta.drops.values()),
            )

    def _meta_cdr(self, meta: EpisodeMeta) -> bytes:
        msg = self._typestore.types[STRING](data=meta.to_json())
        return bytes(self._typestore.serialize_cdr(msg, STRING))

    def _summary(self) -> EpisodeSummary:
        meta = self.meta
        return EpisodeSummary(
            bag_dir=self.bag_dir,
            meta=meta,
            written_messages=sum(self._written.values()),
            written_bytes=self._written_bytes,
            dropped_messages=self.drops.total(),
            writer_cpu_s=self._writer_cpu_s,
            duration_s=time.monotonic() - self._started_monotonic,
        )
