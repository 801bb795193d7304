"""Recovery: never touches a live episode, streams in bounded memory, keeps what precedes damage."""

import logging
import os
import random
import signal
import tracemalloc
from pathlib import Path

import pytest
from recording_helpers import (
    start_writer_process,
    streamed_messages,
    string_cdr,
    wait_for_puts,
)

from halo_ros.cli import main as cli_main
from halo_ros.recording import topics as T
from halo_ros.recording.episode_lock import LOCK_NAME, EpisodeLock, LiveEpisodeError, lock_holder
from halo_ros.recording.episode_meta import EpisodeMeta, EpisodeStatus, read_sidecar
from halo_ros.recording.episode_writer import Compression, EpisodeWriter, WriterConfig
from halo_ros.recording.mcap_sink import McapSink
from halo_ros.recording.recover import is_complete, mcap_file, recover_episode


def _folder_state(bag: Path) -> dict[str, bytes]:
    """Every file of the folder with its content, except the growing .mcap (by name only)."""
    return {
        p.name: b'' if p.suffix == '.mcap' else p.read_bytes()
        for p in sorted(bag.iterdir())
        if p.name != LOCK_NAME
    }


def test_a_live_episode_is_refused_and_recovered_once_its_writer_is_killed(tmp_path, caplog):
    root = tmp_path / 'episodes'
    bag = root / 'live'
    child = start_writer_process(bag)
    try:
        wait_for_puts(child, 50)
        assert not is_complete(mcap_file(bag))
        before = _folder_state(bag)
        size_before = mcap_file(bag).stat().st_size

        with pytest.raises(LiveEpisodeError, match=f'in use by recorder process {child.pid}'):
            recover_episode(bag)
        with caplog.at_level(logging.INFO):
            assert cli_main(['recover-episodes', str(root)]) == 1
            assert cli_main(['export-dataset', str(root), '--out', str(tmp_path / 'ds'),
                             '--recover', '--no-progress']) == 1  # fmt: skip
        refusals = [r.getMessage() for r in caplog.records if 'in use by recorder' in r.message]
        assert len(refusals) == 2 and all(str(bag) in m for m in refusals)

        # Nothing was renamed, rewritten or added, and the writer is still writing.
        assert sorted(p.name for p in root.iterdir()) == ['live']
        assert _folder_state(bag) == before and not (bag / 'metadata.yaml').exists()
        wait_for_puts(child, 100)
        assert mcap_file(bag).stat().st_size > size_before
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)

    assert lock_holder(bag) is None  # the kernel dropped the dead writer's lock
    report = recover_episode(bag)
    assert report.needed and report.messages > 0
    assert read_sidecar(bag).status is EpisodeStatus.RECOVERED


def test_the_writer_holds_its_lock_while_recording_and_leaves_none_behind(tmp_path):
    writer = EpisodeWriter(tmp_path / 'ep', EpisodeMeta('ep'))
    writer.start()
    assert lock_holder(tmp_path / 'ep') == f'recorder process {os.getpid()}'
    with pytest.raises(LiveEpisodeError):  # flock: even this process's own second open is kept out
        recover_episode(tmp_path / 'ep')
    writer.stop()
    assert lock_holder(tmp_path / 'ep') is None and not (tmp_path / 'ep' / LOCK_NAME).exists()
    assert not recover_episode(tmp_path / 'ep').needed


@pytest.mark.parametrize('recovery', ['holds the lock', 'has finished'])
def test_a_recovery_that_finds_a_starting_episode_first_keeps_it(tmp_path, monkeypatch, recovery):
    """The window between the bag's creation and the writer's lock, opened deterministically."""
    bag = tmp_path / 'ep'
    real_open = McapSink.open
    held = []

    def open_then_recover(sink):
        real_open(sink)
        if recovery == 'holds the lock':
            held.append(EpisodeLock(bag, owner='recovery'))
            held[0].acquire()
        else:
            assert recover_episode(bag).needed  # an empty bag: it has only the MCAP header

    monkeypatch.setattr(McapSink, 'open', open_then_recover)
    writer = EpisodeWriter(bag, EpisodeMeta('ep', instruction='mine'))
    with pytest.raises(LiveEpisodeError, match='recovery'):
        writer.start()
    assert not writer.is_recording
    # The folder stays the recovery's: not removed, and nothing of the writer's added to it.
    names = sorted(p.name for p in bag.iterdir())
    if recovery == 'holds the lock':
        assert names == [LOCK_NAME, 'ep.mcap']
        held[0].release()
    else:
        assert names == ['ep.mcap', 'episode.yaml', 'metadata.yaml']
        assert is_complete(mcap_file(bag))
        meta = read_sidecar(bag)
        assert meta.status is EpisodeStatus.RECOVERED and meta.instruction == ''


# ---- damage ------------------------------------------------------------------------------------


def _unfinished_bag(bag: Path, *, messages: int, size: int, compression=Compression.NONE):
    """A real bag of distinct random String messages (rosbags chunks them at 1 MiB), cut where a
    killed recorder's file ends: after the last chunk, before the summary. Returns the chunks'
    start offsets."""
    from mcap.reader import make_reader

    writer = EpisodeWriter(
        bag, EpisodeMeta(bag.name), config=WriterConfig(compression=compression, flush_period_s=60)
    )
    writer.start()
    rng = random.Random(7)
    for k in range(messages):
        assert writer.put('blob', T.STRING, 10**9 + k, string_cdr(rng.randbytes(size // 2).hex()))
    assert writer.stop().dropped_messages == 0
    path = mcap_file(bag)
    with open(path, 'rb') as f:
        chunks = sorted(
            make_reader(f).get_summary().chunk_indexes, key=lambda c: c.chunk_start_offset
        )
    last = chunks[-1]
    with open(path, 'r+b') as f:
        f.truncate(last.chunk_start_offset + last.chunk_length + last.message_index_length)
    (bag / 'metadata.yaml').unlink()
    return [c.chunk_start_offset for c in chunks]


def _recovered(bag: Path) -> list[tuple[str, int, bytes]]:
    from mcap.reader import make_reader

    with open(mcap_file(bag), 'rb') as f:
        reader = make_reader(f)
        return [
            (ch.topic, m.log_time, m.data)
            for _, ch, m in reader.iter_messages(log_time_order=False)  # file order
        ]


def _zeros_to_the_end(data: bytearray, at: int, rng) -> None:
    data[at + 200 :] = bytes(len(data) - at - 200)  # pages a power loss never wrote


def _garbage_over_records(data: bytearray, at: int, rng) -> None:
    # 30 pages: spans a record boundary (without CRCs, garbage inside one payload is invisible)
    data[at + 1000 : at + 1000 + 30 * 4096] = rng.randbytes(30 * 4096)


def _garbage_header(data: bytearray, at: int, rng) -> None:
    data[at : at + 40] = rng.randbytes(40)


@pytest.mark.parametrize(
    'compression, damage',
    [
        (Compression.NONE, _zeros_to_the_end),
        (Compression.NONE, _garbage_over_records),
        (Compression.NONE, _garbage_header),
        (Compression.ZSTD, _zeros_to_the_end),
        (Compression.ZSTD, _garbage_over_records),
    ],
    ids=['zeros', 'garbage records', 'garbage chunk header', 'zstd zeros', 'zstd garbage'],
)
def test_recovery_keeps_every_chunk_before_a_damaged_one(tmp_path, compression, damage):
    bag = tmp_path / 'ep'
    starts = _unfinished_bag(bag, messages=60, size=100_000, compression=compression)
    assert len(starts) >= 5
    damaged = starts[len(starts) // 2]
    path = mcap_file(bag)
    data = bytearray(path.read_bytes())
    # What an independent reader finds before the damaged chunk: exactly what must come back.
    path.write_bytes(data[:damaged])
    expected = [(m.log_time, m.data) for m in streamed_messages(path)]
    damage(data, damaged, random.Random(damaged))
    path.write_bytes(data)

    report = recover_episode(bag)
    assert report.needed
    got = _recovered(bag)
    assert len(expected) > 10 and [(lt, d) for _, lt, d in got] == expected
    assert {t for t, _, _ in got} == {'blob', T.EPISODE_META_TOPIC}
    assert f'byte {damaged}' in report.stopped
    assert report.trailing_bytes_dropped == len(data) - damaged
    meta = read_sidecar(bag)
    assert meta.status is EpisodeStatus.RECOVERED and f'byte {damaged}' in meta.error
    assert meta.message_counts['blob'] == len(expected) - 1  # all but the start's metadata


def test_recovery_streams_the_bag_in_bounded_memory(tmp_path):
    bag = tmp_path / 'ep'
    _unfinished_bag(bag, messages=400, size=100_000)
    size = mcap_file(bag).stat().st_size
    assert size > 32 * 2**20
    tracemalloc.start()
    try:
        report = recover_episode(bag)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One chunk (~1 MiB) read and one being written at a time, whatever the size of the bag.
    assert peak < 8 * 2**20, (
        f'recovering a {size / 2**20:.0f} MiB bag peaked at {peak / 2**20:.1f} MiB'
    )
    assert report.needed and report.messages == 402 and not report.stopped
