"""The policy node in its own process against the simulator node: every output topic, the chunk
message format the controller parses, and an instruction change arriving over ROS."""

import json

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from ros_helpers import spin_until, wait_for_publishers
from sensor_msgs.msg import Image
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from halo_ros.joints import BIMANUAL_JOINTS
from halo_ros.nodes.conversions import ns_from_stamp
from halo_ros.nodes.topic_monitor import TopicMonitor
from halo_ros.runtime.chunk import ChunkTag
from halo_ros.supervisor import NodeProcess

pytestmark = pytest.mark.ros

OUTPUTS = {
    'halo/action_chunk': JointTrajectory,
    'halo/reasoning': String,
    'halo/subgoal/image_raw': Image,
    'diagnostics': DiagnosticArray,
}


@pytest.fixture(scope='module')
def graph(tmp_path_factory):
    logs = tmp_path_factory.mktemp('policy')
    sim = NodeProcess(
        'halo_ros.nodes.sim_node',
        {'camera_width': 160, 'camera_height': 120, 'camera_rate_hz': 10.0},
        log_path=str(logs / 'sim_node.log'),
    ).start()
    policy = NodeProcess(
        'halo_ros.nodes.policy_node',
        {
            'image_width': 160,
            'image_height': 120,
            'state_topic': 'sim/joint_states',
            'instruction': 'transfer the cube',
            'chunk_rate_hz': 4.0,
            'reasoning_period_s': 1.0,
            'max_tokens': 12,
            'threads': 1,
        },
        log_path=str(logs / 'policy_node.log'),
    ).start()
    rclpy.init()
    monitor = TopicMonitor(OUTPUTS, 'test_policy_monitor')
    yield monitor, policy, logs
    monitor.destroy_node()
    rclpy.try_shutdown()
    policy_rc, sim_rc = policy.stop(), sim.stop()
    assert policy_rc == 0, (logs / 'policy_node.log').read_text()[-3000:]
    assert sim_rc == 0


def test_policy_node_publishes_every_topic(graph):
    monitor, policy, logs = graph
    stats = monitor.stats
    wait_for_publishers(monitor, OUTPUTS, timeout_s=60)

    def all_arrived():
        assert policy.running, (logs / 'policy_node.log').read_text()[-3000:]
        return stats['halo/action_chunk'].count >= 3 and all(stats[t].count for t in OUTPUTS)

    spin_until(monitor, all_arrived, 90, 'chunks, reasoning, a subgoal image and diagnostics')

    chunk = stats['halo/action_chunk'].last
    assert tuple(chunk.joint_names) == BIMANUAL_JOINTS
    assert len(chunk.points) == 50
    for k in (0, 1, 49):
        point = chunk.points[k]
        assert len(point.positions) == 14
        assert point.time_from_start.sec * 10**9 + point.time_from_start.nanosec == k * 20_000_000
    tag = ChunkTag.parse(chunk.header.frame_id)
    assert tag.epoch == 1 and tag.seq >= 2
    assert ns_from_stamp(chunk.header.stamp) > 0

    reasoning = json.loads(stats['halo/reasoning'].last.data)
    assert {'plan', 'subtask', 'movement', 'text', 'latency_ms', 'context_version'} <= set(
        reasoning
    )
    assert reasoning['instruction'] == 'transfer the cube'
    assert stats['halo/subgoal/image_raw'].last.encoding == 'rgb8'

    status = stats['diagnostics'].last.status[0]
    values = {kv.key: json.loads(kv.value) for kv in status.values}
    assert values['chunks'] >= 1
    assert 'latency_stamp_to_publish_p99_ms' in values and 'latency_flow_p50_ms' in values
    assert 'reasoning_age_s' in values


def test_instruction_over_ros_starts_a_new_epoch(graph):
    monitor, policy, logs = graph
    stats = monitor.stats
    publisher = monitor.create_publisher(String, 'halo/instruction', 10)
    spin_until(monitor, lambda: publisher.get_subscription_count() > 0, 30, 'the policy node')
    publisher.publish(String(data='put the cube back'))

    def new_epoch():
        chunk = stats['halo/action_chunk'].last
        return chunk is not None and ChunkTag.parse(chunk.header.frame_id).epoch == 2

    spin_until(monitor, new_epoch, 60, 'a chunk of epoch 2')

    def new_reasoning():
        last = stats['halo/reasoning'].last
        return json.loads(last.data)['instruction'] == 'put the cube back'

    spin_until(monitor, new_reasoning, 60, 'reasoning about the new instruction')
