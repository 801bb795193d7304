"""Salvage episode bags whose recorder died before closing them.

A killed writer leaves `<bag>/<bag>.mcap` without the MCAP summary and footer, and no
metadata.yaml. Every chunk the writer closed before it died is complete on disk (that is what
the flush timer is for); the chunk it was filling is lost. `recover_episode` streams the whole
chunks in file order (`mcap_scan`: one chunk in memory, up to the first cut or damaged one) into a
new, finished bag in the same place (the old file is removed only after the new one is closed),
with the sidecar's status set to `recovered`.

A bag still being written is never touched: recovery takes the folder's `episode_lock` first and
refuses the folder (`LiveEpisodeError`) while its recorder holds it.
"""

import logging
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from halo_ros.recording.episode_lock import EpisodeLock, LiveEpisodeError
from halo_ros.recording.episode_meta import (
    EpisodeMeta,
    EpisodeStatus,
    read_sidecar,
    write_sidecar,
)
from halo_ros.recording.mcap_scan import MAGIC, OP_FOOTER, McapScan

logger = logging.getLogger(__name__)

_FOOTER_BYTES = 9 + 20  # opcode, length, summary start, summary offset start, crc


@dataclass(frozen=True)
class RecoveryReport:
    bag_dir: Path
    needed: bool  # False: the bag was complete already
    chunks: int
    messages: int
    trailing_bytes_dropped: int  # from the end of the last whole chunk to the end of the file
    stopped: str = ''  # why salvage ended before the end of the file (cut or damaged record)


def mcap_file(bag_dir: Path) -> Path:
    files = sorted(Path(bag_dir).glob('*.mcap'))
    if len(files) != 1:
        raise FileNotFoundError(f'expected one .mcap file in {bag_dir}, found {len(files)}')
    return files[0]


def is_complete(path: Path) -> bool:
    """True if the MCAP file ends with a footer and the closing magic."""
    tail_len = _FOOTER_BYTES + len(MAGIC)
    if path.stat().st_size < len(MAGIC) + tail_len:
        return False
    with open(path, 'rb') as f:
        f.seek(-tail_len, os.SEEK_END)
        tail = f.read(tail_len)
    return tail[0] == OP_FOOTER and tail[-len(MAGIC) :] == MAGIC


def recover_episode(bag_dir: Path) -> RecoveryReport:
    """Rewrite an unfinished episode bag into a complete one, in place.

    Raises `LiveEpisodeError` (and changes nothing) while a recorder is writing the bag.
    """
    bag_dir = Path(bag_dir)
    if is_complete(mcap_file(bag_dir)):
        return RecoveryReport(bag_dir, False, 0, 0, 0)
    with EpisodeLock(bag_dir, owner='recovery'):
        path = mcap_file(bag_dir)
        if is_complete(path):  # its recorder closed it between the check and the lock
            return RecoveryReport(bag_dir, False, 0, 0, 0)
        return _rewrite(bag_dir, McapScan(path))


def _rewrite(bag_dir: Path, scan: McapScan) -> RecoveryReport:
    work = bag_dir.with_name(bag_dir.name + '.recovering')
    shutil.rmtree(work, ignore_errors=True)
    # The writer names the file after its folder; write into work/<name>, then move it up.
    new_bag = work / bag_dir.name
    try:
        _write_bag(new_bag, scan, _sidecar_or_new(bag_dir))
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)  # the original is untouched
        raise
    old = bag_dir.with_name(bag_dir.name + '.partial')
    os.replace(bag_dir, old)
    os.replace(new_bag, bag_dir)
    shutil.rmtree(old)
    work.rmdir()
    log = logger.warning if scan.stopped else logger.info
    log(
        'recovered %s: %d messages from %d chunks (%d trailing bytes dropped%s)',
        bag_dir,
        scan.messages,
        scan.chunks,
        scan.dropped_bytes,
        f': {scan.stopped}' if scan.stopped else '',
    )
    return RecoveryReport(
        bag_dir, True, scan.chunks, scan.messages, scan.dropped_bytes, scan.stopped
    )


def _sidecar_or_new(bag_dir: Path) -> EpisodeMeta:
    try:
        return read_sidecar(bag_dir)
    except FileNotFoundError:
        return EpisodeMeta(episode_id=bag_dir.name)


def _write_bag(new_bag: Path, scan: McapScan, meta: EpisodeMeta) -> None:
    """Stream the salvaged messages into a new bag with its sidecar."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    bag = Writer(new_bag, version=9, storage_plugin=StoragePlugin.MCAP)
    bag.open()
    conns = {}
    counts: Counter[str] = Counter()
    end_ns = 0
    for m in scan:
        key = (m.topic, m.msgtype)
        if key not in conns:
            conns[key] = bag.add_connection(m.topic, m.msgtype, typestore=ts)
        bag.write(conns[key], m.log_time_ns, m.data)
        counts[m.topic] += 1
        end_ns = max(end_ns, m.log_time_ns)
    error = meta.error or 'recorder stopped without closing the bag'
    if scan.stopped:
        error += f'; salvage stopped, {scan.dropped_bytes} bytes dropped: {scan.stopped}'
    meta = meta.with_(
        status=EpisodeStatus.RECOVERED,
        message_counts=dict(counts),
        error=error,
        end_time_ns=end_ns,
    )
    for k, v in meta.custom_data().items():
        bag.set_custom_data(k, v)
    bag.close()
    write_sidecar(new_bag, meta)


def add_arguments(parser) -> None:
    parser.add_argument('episodes', nargs='+', help='episode bag folders, or folders of them')


def run(args) -> int:
    from halo_ros.recording.export_dataset import find_episodes

    bags = find_episodes(args.episodes)
    recovered, live = 0, []
    for bag in bags:
        try:
            report = recover_episode(bag)
        except LiveEpisodeError as err:
            logger.error('%s', err)
            live.append(bag)
            continue
        if report.needed:
            recovered += 1
            logger.info('%s: %d messages recovered', bag, report.messages)
    logger.info('%d of %d bags needed recovery', recovered, len(bags))
    if live:
        logger.error('%d bags are still being written and were left alone', len(live))
        return 1
    return 0
