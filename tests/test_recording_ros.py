"""recorder_node in a real graph: a publisher process, the recorder process, services from here."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from halo_ros.recording import topics as T
from halo_ros.recording.episode_meta import EpisodeStatus, Outcome, read_sidecar
from halo_ros.recording.recover import is_complete, mcap_file, recover_episode

pytestmark = pytest.mark.ros
REPO = Path(__file__).resolve().parent.parent


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO))


@pytest.fixture
def ros_node():
    rclpy = pytest.importorskip('rclpy')
    from rclpy.node import Node

    rclpy.init()
    node = Node('recording_test_client')
    try:
        yield node
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def _call(node, client, request, timeout_s=30.0):
    import rclpy

    assert client.wait_for_service(timeout_sec=timeout_s), f'{client.srv_name} never appeared'
    future = client.call_async(request)
    rclpy.spin_until_future_complete(node, future, timeout_sec=timeout_s)
    assert future.done(), f'{client.srv_name} did not answer in {timeout_s} s'
    return future.result()


def test_recorder_node_records_a_publisher_process_through_its_services(ros_node, tmp_path):
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from std_srvs.srv import SetBool, Trigger

    out = tmp_path / 'episodes'
    recorder = subprocess.Popen(
        [
            sys.executable,
            '-m',
            'halo_ros.nodes.recorder_node',
            '--ros-args',
            '-p',
            f'output_dir:={out}',
            '-p',
            'flush_period_s:=0.2',
            '-p',
            'instruction:=stack the cups',
            '-p',
            'robot:=test-rig',
        ],
        env=_env(),
    )
    publisher = None
    try:
        start = ros_node.create_client(Trigger, '/recorder_node/start')
        stop = ros_node.create_client(Trigger, '/recorder_node/stop')
        mark = ros_node.create_client(SetBool, '/recorder_node/mark_success')
        answer = _call(ros_node, start, Trigger.Request())
        assert answer.success, answer.message

        report = tmp_path / 'sent.json'
        publisher = subprocess.Popen(
            [
                sys.executable,
                '-m',
                'halo_ros.nodes.load_publisher',
                '--height',
                '120',
                '--width',
                '160',
                '--duration-s',
                '2',
                '--report',
                str(report),
            ],
            env=_env(),
        )
        assert publisher.wait(90) == 0
        sent = json.loads(report.read_text())['sent']
        assert sum(sent.values()) > 200

        # Wait (on diagnostics, not a sleep) until the recorder has taken every message.
        written: dict[str, int] = {}

        def on_diag(msg):
            for status in msg.status:
                if status.name.startswith('recorder_node'):
                    written.update(
                        {
                            kv.key[len('written/') :]: int(kv.value)
                            for kv in status.values
                            if kv.key.startswith('written/')
                        }
                    )

        ros_node.create_subscription(DiagnosticArray, 'diagnostics', on_diag, 10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(written.get(t, 0) < n for t, n in sent.items()):
            rclpy.spin_once(ros_node, timeout_sec=0.2)

        assert _call(ros_node, mark, SetBool.Request(data=True)).success
        answer = _call(ros_node, stop, Trigger.Request())
        assert answer.success, answer.message
    finally:
        for proc in (publisher, recorder):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()

    (bag,) = [p for p in out.iterdir() if p.is_dir()]
    meta = read_sidecar(bag)
    assert meta.status is EpisodeStatus.COMPLETE
    assert (meta.outcome, meta.instruction, meta.robot) == (
        Outcome.SUCCESS,
        'stack the cups',
        'test-rig',
    )
    assert meta.drops == {}

    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    got: dict[str, list] = {}
    with open(mcap_file(bag), 'rb') as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for _, channel, message, decoded in reader.iter_decoded_messages():
            got.setdefault(channel.topic, []).append((message.log_time, decoded))
    for topic, n in sent.items():
        msgs = got[topic]
        assert len(msgs) == n, topic
        if topic.endswith('image_raw'):
            seqs = [int.from_bytes(bytes(m.data[:8]), 'little') for _, m in msgs]
        else:
            seqs = [int(m.position[0]) for _, m in msgs]
        assert seqs == list(range(n)), topic
        stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in msgs]
        assert stamps == sorted(stamps)
        assert all(log >= stamp for (log, _), stamp in zip(msgs, stamps, strict=True))
    assert '/' + T.EPISODE_META_TOPIC in got
    info = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    offered = {
        t['topic_metadata']['name']: t['topic_metadata']['offered_qos_profiles']
        for t in info['topics_with_message_count']
    }
    assert [q['reliability'] for q in offered['/cam_high/image_raw']] == ['reliable']


def test_recorder_node_killed_mid_episode_leaves_a_recoverable_bag(tmp_path):
    out = tmp_path / 'episodes'
    recorder = subprocess.Popen(
        [
            sys.executable,
            '-m',
            'halo_ros.nodes.recorder_node',
            '--ros-args',
            '-p',
            f'output_dir:={out}',
            '-p',
            'auto_start:=true',
            '-p',
            'flush_period_s:=0.2',
        ],
        env=_env(),
    )
    publisher = None
    try:
        publisher = subprocess.Popen(
            [
                sys.executable,
                '-m',
                'halo_ros.nodes.load_publisher',
                '--height',
                '120',
                '--width',
                '160',
                '--duration-s',
                '30',
            ],
            env=_env(),
        )
        # Kill once the bag has grown past a few flushed chunks (polling the file, no sleeps
        # standing in for a condition).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            bags = list(out.glob('*/*.mcap')) if out.exists() else []
            if bags and bags[0].stat().st_size > 3 * 2**20:
                break
            time.sleep(0.05)
        else:
            pytest.fail('the recorder never wrote 3 MiB')
        recorder.send_signal(signal.SIGKILL)
        recorder.wait(10)
    finally:
        for proc in (publisher, recorder):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
    (bag,) = [p for p in out.iterdir() if p.is_dir()]
    assert not is_complete(mcap_file(bag))
    report = recover_episode(bag)
    assert report.needed and report.messages > 0
    from rosbags.rosbag2 import Reader

    with Reader(bag) as reader:  # a complete rosbag2 again, metadata.yaml included
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts['/cam_high/image_raw'] > 0 and counts['/follower_left/joint_states'] > 0
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with open(mcap_file(bag), 'rb') as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        seqs = [
            int.from_bytes(bytes(m.data[:8]), 'little')
            for _, _, _, m in reader.iter_decoded_messages(topics=['/cam_high/image_raw'])
        ]
    assert seqs == list(range(len(seqs)))  # everything up to the last flushed chunk, no gaps
    meta = read_sidecar(bag)
    assert meta.status is EpisodeStatus.RECOVERED
