"""halo-ros view: the live graph over the Foxglove WebSocket protocol, loopback unless told."""

import json
import os
import re
import struct
import subprocess
import sys
import textwrap
import time

import pytest

from halo_ros.viz.foxglove_bridge import FoxgloveBridge, check_bind

# A graph to look at: three of the demo's topics, published at 10 Hz until killed.
_PUBLISHER = textwrap.dedent("""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.node import Node
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    rclpy.init()
    node = Node('graph')
    reasoning = node.create_publisher(String, 'halo/reasoning', 10)
    joints = node.create_publisher(JointState, 'follower_left/joint_states', 10)
    camera = node.create_publisher(Image, 'cam_high/image_raw', 10)
    def tick():
        reasoning.publish(String(data='{"subtask": "reach for the cube"}'))
        joints.publish(JointState(name=['left_waist'], position=[0.25]))
        camera.publish(Image(height=2, width=2, encoding='rgb8', step=6, data=bytes(12)))
    node.create_timer(0.1, tick)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # terminated by the test
""")
TOPICS = {
    '/halo/reasoning': 'std_msgs/msg/String',
    '/follower_left/joint_states': 'sensor_msgs/msg/JointState',
    '/cam_high/image_raw': 'sensor_msgs/msg/Image',
}


@pytest.mark.parametrize(
    'host, loopback',
    [
        ('127.0.0.1', True),
        ('127.0.0.53', True),
        ('::1', True),
        ('localhost', True),
        ('0.0.0.0', False),
        ('::', False),
        ('192.168.1.20', False),
        ('robot.local', False),  # a name may resolve anywhere
    ],
)
def test_only_loopback_binds_without_being_told(host, loopback):
    if loopback:
        check_bind(host, allow_remote=False)
    else:
        with pytest.raises(ValueError, match=f"--host '{re.escape(host)}' is not a loopback"):
            check_bind(host, allow_remote=False)
    check_bind(host, allow_remote=True)  # told: allowed


def test_the_bridge_refuses_before_it_binds():
    with pytest.raises(ValueError, match='--allow-remote'):
        FoxgloveBridge(host='0.0.0.0', port=0)


def test_view_refuses_a_non_loopback_bind_without_allow_remote():
    result = subprocess.run(
        [sys.executable, '-m', 'halo_ros.cli', 'view', '--host', '0.0.0.0', '--port', '0'],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--host '0.0.0.0' is not a loopback address" in result.stderr
    assert 'Foxglove WebSocket' not in result.stdout  # it never served


@pytest.mark.ros
def test_live_bridge_advertises_the_graph_topics_on_loopback():
    from rosbags.typesys import Stores, get_typestore
    from websockets.sync.client import connect

    graph = subprocess.Popen([sys.executable, '-c', _PUBLISHER], env=dict(os.environ))
    view = subprocess.Popen(
        [sys.executable, '-m', 'halo_ros.cli', 'view', '--port', '0'],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = view.stdout.readline()
        match = re.search(r'Foxglove WebSocket: (ws://127\.0\.0\.1:\d+)', line)
        assert match, (line, view.stderr.read() if view.poll() is not None else '')
        with connect(match.group(1), subprotocols=['foxglove.sdk.v1'], open_timeout=30) as ws:
            channels = _advertised(ws, set(TOPICS), timeout_s=60)
            for topic, msgtype in TOPICS.items():
                assert channels[topic]['schemaName'] == msgtype
                assert channels[topic]['encoding'] == 'cdr'
                assert channels[topic]['schemaEncoding'] == 'ros2msg'
            assert 'float64[] position' in channels['/follower_left/joint_states']['schema']
            # Subscribe to the reasoning and decode what arrives: the CDR went through untouched.
            subscribe = json.dumps(
                {
                    'op': 'subscribe',
                    'subscriptions': [{'id': 7, 'channelId': channels['/halo/reasoning']['id']}],
                }
            )
            ws.send(subscribe)
            payload = _first_message(ws, subscription=7, timeout_s=30, resend=subscribe)
        ts = get_typestore(Stores.ROS2_JAZZY)
        msg = ts.deserialize_cdr(payload, 'std_msgs/msg/String')
        assert json.loads(msg.data) == {'subtask': 'reach for the cube'}
    finally:
        for process in (view, graph):
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert view.returncode == 0, view.stderr.read()[-2000:]  # SIGTERM: a clean exit


def _frames(ws, timeout_s: float, waiting_for: str):
    """The frames the server sends, until `timeout_s` passes (AssertionError naming the wait)."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        try:
            yield ws.recv(timeout=left)
        except TimeoutError:
            continue
    raise AssertionError(f'timed out after {timeout_s} s waiting for {waiting_for}')


def _advertised(ws, topics: set[str], timeout_s: float) -> dict[str, dict]:
    """Channels by topic once all `topics` are advertised (discovery adds them one by one)."""
    channels: dict[str, dict] = {}
    for frame in _frames(ws, timeout_s, f'advertisements of {sorted(topics)}'):
        if isinstance(frame, str) and (op := json.loads(frame)).get('op') == 'advertise':
            channels |= {c['topic']: c for c in op['channels']}
            if topics <= set(channels):
                return channels
    raise AssertionError('unreachable')


def _first_message(ws, subscription: int, timeout_s: float, resend: str) -> bytes:
    """The payload of the first MessageData frame (opcode 1) for `subscription`.

    foxglove-sdk 0.30 can send a channel's advertisement to a client a moment before it accepts
    subscriptions to it ('Unknown channel ID' status); a client then subscribes again.
    """
    for frame in _frames(ws, timeout_s, f'a message on subscription {subscription}'):
        if isinstance(frame, str) and 'Unknown channel ID' in frame:
            ws.send(resend)
        elif isinstance(frame, bytes) and frame[0] == 1:
            sub_id, _log_time = struct.unpack_from('<IQ', frame, 1)
            if sub_id == subscription:
                return frame[13:]
    raise AssertionError('unreachable')
