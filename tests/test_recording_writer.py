"""Episode writer: independent read-back, drops, metadata, killed recorder, full disk."""

import json
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml
from recording_helpers import (
    start_writer_process,
    streamed_messages,
    string_cdr,
    wait_for_puts,
)

from halo_ros.recording import synthetic
from halo_ros.recording import topics as T
from halo_ros.recording.episode_meta import EpisodeMeta, EpisodeStatus, Outcome, read_sidecar
from halo_ros.recording.episode_writer import (
    Compression,
    EpisodeWriter,
    RecordingDropReason,
    WriterConfig,
)
from halo_ros.recording.recover import is_complete, mcap_file, recover_episode


def _decoded(bag_dir: Path):
    """(topic, log_time_ns, decoded msg) for every message, via the `mcap` packages only."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with open(mcap_file(bag_dir), 'rb') as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        return [(ch.topic, m.log_time, dm) for _, ch, m, dm in reader.iter_decoded_messages()]


def _stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


@pytest.mark.parametrize('compression', [Compression.NONE, Compression.ZSTD])
def test_bag_read_back_by_mcap_holds_every_message_with_its_stamp(tmp_path, compression):
    sent = list(synthetic.pick_place_messages(seed=1))
    clock = iter(range(10**18, 10**18 + 10**6))
    writer = EpisodeWriter(
        tmp_path / 'ep',
        EpisodeMeta('ep', instruction='pick'),
        config=WriterConfig(compression=compression),
        clock_ns=lambda: next(clock),
    )
    writer.start()
    for topic, msgtype, recv_ns, _, data in sent:
        assert writer.put(topic, msgtype, recv_ns, data)
    summary = writer.stop()
    assert summary.dropped_messages == 0
    assert summary.meta.status is EpisodeStatus.COMPLETE

    got = [m for m in _decoded(tmp_path / 'ep') if m[0] != T.EPISODE_META_TOPIC]
    assert len(got) == len(sent)
    for (topic, _, recv_ns, stamp_ns, _), (g_topic, g_log, g_msg) in zip(sent, got, strict=True):
        assert (g_topic, g_log) == (topic, recv_ns)
        if hasattr(g_msg, 'header'):
            assert _stamp_ns(g_msg) == stamp_ns
    images = [m for t, _, m in got if t == 'cam_left_wrist/image_raw']
    assert bytes(images[5].data) == synthetic.frame_pixels(1, 5, 48, 64).tobytes()

    # The real rosbag2 layout: metadata.yaml with the counts, type hashes and our metadata.
    info = yaml.safe_load((tmp_path / 'ep' / 'metadata.yaml').read_text())
    info = info['rosbag2_bagfile_information']
    assert info['storage_identifier'] == 'mcap'
    assert info['message_count'] == len(sent) + 2
    hashes = {
        t['topic_metadata']['type_description_hash'] for t in info['topics_with_message_count']
    }
    assert all(h.startswith('RIHS01_') for h in hashes)
    assert info['custom_data']['halo.instruction'] == 'pick'
    assert info['custom_data']['halo.status'] == 'complete'


def test_metadata_travels_in_the_bag_the_yaml_and_the_sidecar(tmp_path):
    writer = EpisodeWriter(
        tmp_path / 'ep', EpisodeMeta('ep', robot='aloha-sim', model_hash='abc123')
    )
    writer.start()
    started = read_sidecar(tmp_path / 'ep')
    assert started.status is EpisodeStatus.RECORDING and started.model_hash == 'abc123'
    writer.update_meta(
        instruction='fold the towel', outcome=Outcome.FAILURE, reward=1.5, operator_note='slipped'
    )
    writer.stop()
    metas = [
        EpisodeMeta.from_json(m.data)
        for t, _, m in _decoded(tmp_path / 'ep')
        if t == T.EPISODE_META_TOPIC
    ]
    assert len(metas) == 2  # at start (survives a crash) and at stop (final)
    assert metas[0].instruction == '' and metas[-1].instruction == 'fold the towel'
    final = read_sidecar(tmp_path / 'ep')
    # The sidecar's writer stats also count writing that last message; all else is identical.
    assert final.with_(writer_stats={}) == metas[-1].with_(writer_stats={})
    assert final.writer_stats['written_bytes'] > metas[-1].writer_stats['written_bytes']
    assert (final.outcome, final.reward, final.operator_note) == (Outcome.FAILURE, 1.5, 'slipped')
    assert final.status is EpisodeStatus.COMPLETE


def test_drops_are_counted_by_topic_and_reason(tmp_path):
    writer = EpisodeWriter(
        tmp_path / 'ep', EpisodeMeta('ep'), config=WriterConfig(queue_max_bytes=1000)
    )
    assert not writer.put('a', T.STRING, 1, b'x')  # before start: not part of the episode
    writer.start()
    assert not writer.put('cam/image_raw', T.IMAGE, 2, bytes(5000))  # bigger than the queue
    assert writer.put('custom', 'my_msgs/msg/Unknown', 3, b'\0\1\0\0')
    summary = writer.stop()
    assert not writer.put('late', T.STRING, 4, b'x')  # after stop: neither
    drops = writer.drops.snapshot()
    assert drops == {
        ('cam/image_raw', RecordingDropReason.QUEUE_FULL): 1,
        ('custom', RecordingDropReason.UNKNOWN_TYPE): 1,
    }
    assert summary.meta.drops == {
        'cam/image_raw|queue_full': 1,
        'custom|unknown_type': 1,
    }


def test_discard_removes_the_bag(tmp_path):
    writer = EpisodeWriter(tmp_path / 'ep', EpisodeMeta('ep'))
    writer.start()
    writer.put('x', T.STRING, 1, b'\0\1\0\0\1\0\0\0\0')
    writer.discard()
    assert not (tmp_path / 'ep').exists()


def test_killed_recorder_leaves_a_bag_readable_up_to_its_last_flushed_chunk(tmp_path):
    bag = tmp_path / 'killed'
    child = start_writer_process(bag)
    try:
        put_at = wait_for_puts(child, 150)
        killed_at = time.monotonic()
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(10)
    path = mcap_file(bag)
    assert not is_complete(path)

    # The independent reader sees the flushed messages of the unfinished file.
    streamed = len(streamed_messages(path))

    report = recover_episode(bag)
    assert report.needed and report.messages == streamed
    got = [(t, m) for t, _, m in _decoded(bag) if t == 'joint_states']
    seqs = [int(m.position[0]) for _, m in got]
    assert seqs == list(range(len(seqs)))  # a gap-free prefix, stamps intact
    assert [m.header.stamp.sec for _, m in got] == seqs
    # Everything put more than a flush period (+ margin for a loaded box) before the kill is in.
    safe = max((k for k, t in put_at if t < killed_at - 1.0), default=0)
    assert len(seqs) >= safe
    meta = read_sidecar(bag)
    assert meta.status is EpisodeStatus.RECOVERED and meta.instruction == 'survive'


@pytest.fixture
def small_tmpfs(tmp_path):
    mount_point = tmp_path / f'tmpfs-{uuid.uuid4().hex[:6]}'
    mount_point.mkdir()
    result = subprocess.run(
        ['mount', '-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', str(mount_point)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f'cannot mount a tmpfs for the full-disk test: {result.stderr.strip()}')
    try:
        yield mount_point
    finally:
        subprocess.run(['umount', '-l', str(mount_point)], check=False)


def test_full_disk_stops_the_episode_cleanly_and_keeps_what_was_written(small_tmpfs):
    bag = small_tmpfs / 'ep'
    writer = EpisodeWriter(
        bag,
        EpisodeMeta('ep', instruction='fill the disk'),
        config=WriterConfig(disk_reserve_bytes=256 * 1024, flush_period_s=0.05),
    )
    blobs_cdr = [string_cdr(chr(97 + i) * 50_000) for i in range(26)]
    writer.start()
    k = 0
    while writer.is_recording and k < 100_000:
        writer.put('blob', T.STRING, 10**9 + k, blobs_cdr[k % 26])
        k += 1
        if k % 20 == 0:
            time.sleep(0.01)
    assert not writer.is_recording, 'the disk never filled'
    assert not writer.put('blob', T.STRING, 0, blobs_cdr[0])  # lost to the failed episode
    summary = writer.stop()
    assert writer.error is not None and writer.error.errno == 28
    assert summary.meta.status is EpisodeStatus.DISK_FULL
    assert 'No space left on device' in summary.meta.error
    assert summary.meta.drops.get('blob|disk_full', 0) > 0
    assert summary.meta.drops['blob|write_error'] == 1

    assert is_complete(mcap_file(bag))  # properly closed, no recovery needed
    got = _decoded(bag)
    blobs = [m for t, _, m in got if t == 'blob']
    assert len(blobs) == summary.meta.message_counts['blob'] > 0
    assert [m.data[0] for m in blobs] == [chr(97 + i % 26) for i in range(len(blobs))]
    assert read_sidecar(bag).status is EpisodeStatus.DISK_FULL
    info = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['message_count'] == len(got)
    assert json.loads(info['custom_data']['halo.message_counts'])['blob'] == len(blobs)


def test_an_episode_that_cannot_start_leaves_nothing_behind(small_tmpfs):
    with pytest.raises(OSError, match='cannot start episode ep'):
        EpisodeWriter(
            small_tmpfs / 'ep',
            EpisodeMeta('ep'),
            config=WriterConfig(disk_reserve_bytes=64 * 2**20),
        ).start()
    assert not (small_tmpfs / 'ep').exists()
