"""The policy node with `backend:=remote` against `halo-ros serve` in another process and the
simulator: chunks flow; the server is killed: no chunk is published from then on and the failures
are counted in diagnostics; the server returns: chunks resume, computed from fresh observations."""

import json
import time

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from ros_helpers import spin_until, wait_for_publishers
from test_transport_failover import free_port, kill, serve
from trajectory_msgs.msg import JointTrajectory

from halo_ros.nodes.conversions import ns_from_stamp
from halo_ros.nodes.topic_monitor import TopicMonitor
from halo_ros.supervisor import NodeProcess

pytestmark = pytest.mark.ros

OUTPUTS = {'halo/action_chunk': JointTrajectory, 'diagnostics': DiagnosticArray}


def engine_errors(monitor) -> int:
    last = monitor.stats['diagnostics'].last
    if last is None:
        return 0
    values = {kv.key: json.loads(kv.value) for kv in last.status[0].values}
    return values.get('drops_engine_error', 0)


def test_policy_node_on_a_remote_engine_survives_the_server(tmp_path):
    endpoint = f'tcp://127.0.0.1:{free_port()}'
    server = serve(endpoint, tmp_path / 'serve.log')
    restarted = None
    sim = NodeProcess(
        'halo_ros.nodes.sim_node',
        {'camera_width': 160, 'camera_height': 120, 'camera_rate_hz': 10.0},
        log_path=str(tmp_path / 'sim_node.log'),
    ).start()
    policy = NodeProcess(
        'halo_ros.nodes.policy_node',
        {
            'backend': 'remote',
            'server': endpoint,
            'remote_timeout_s': 10.0,
            'image_width': 160,
            'image_height': 120,
            'state_topic': 'sim/joint_states',
            'chunk_rate_hz': 4.0,
            'reasoning': False,
            'seam_mode': 'none',
        },
        log_path=str(tmp_path / 'policy_node.log'),
    ).start()
    rclpy.init()
    monitor = TopicMonitor(OUTPUTS, 'test_remote_policy_monitor')
    chunks = monitor.stats['halo/action_chunk']
    try:
        wait_for_publishers(monitor, OUTPUTS, timeout_s=120)

        def chunks_at_least(n):
            def enough():
                assert policy.running, (tmp_path / 'policy_node.log').read_text()[-3000:]
                return chunks.count >= n

            return enough

        spin_until(monitor, chunks_at_least(2), 120, 'chunks computed by the server')
        kill(server)
        killed_ns = time.time_ns()
        at_kill = chunks.count
        errors = engine_errors(monitor)
        spin_until(monitor, lambda: engine_errors(monitor) >= errors + 2, 60, 'failed chunks')
        # At most the chunk whose reply was already on its way; none computed after the kill.
        assert chunks.count <= at_kill + 1
        assert ns_from_stamp(chunks.last.header.stamp) < killed_ns

        restarted = serve(endpoint, tmp_path / 'serve2.log')
        restarted_ns = time.time_ns()
        spin_until(monitor, chunks_at_least(chunks.count + 2), 120, 'chunks after the restart')
        assert ns_from_stamp(chunks.last.header.stamp) > restarted_ns  # fresh, not stale
        assert policy.running
    finally:
        monitor.destroy_node()
        rclpy.try_shutdown()
        policy_rc, sim_rc = policy.stop(), sim.stop()
        kill(server)
        if restarted is not None:
            kill(restarted)
    assert policy_rc == 0, (tmp_path / 'policy_node.log').read_text()[-3000:]
    assert sim_rc == 0
