"""The simulator node in its own process: camera streams, camera info, status, reset service."""

import json

import pytest
import rclpy
from ros_helpers import spin_until, wait_for_publishers
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from halo_ros.nodes.topic_monitor import TopicMonitor
from halo_ros.supervisor import NodeProcess

pytestmark = pytest.mark.ros

CAMERAS = ('cam_high', 'cam_left_wrist', 'cam_right_wrist')


@pytest.fixture(scope='module')
def sim_process(tmp_path_factory):
    log = tmp_path_factory.mktemp('sim') / 'sim_node.log'
    params = {'camera_width': 160, 'camera_height': 120, 'camera_rate_hz': 10.0, 'seed': 5}
    process = NodeProcess('halo_ros.nodes.sim_node', params, log_path=str(log)).start()
    yield process
    assert process.stop() == 0, log.read_text()[-3000:]


@pytest.fixture(scope='module')
def monitor():
    rclpy.init()
    topics = {f'{c}/image_raw': Image for c in CAMERAS}
    topics |= {f'{c}/camera_info': CameraInfo for c in CAMERAS}
    topics |= {'sim/joint_states': JointState, 'sim/status': String}
    node = TopicMonitor(topics, 'test_sim_monitor')
    yield node
    node.destroy_node()
    rclpy.try_shutdown()


def test_sim_node_publishes_every_camera_and_they_decode(sim_process, monitor):
    wait_for_publishers(monitor, [f'{c}/image_raw' for c in CAMERAS])
    stats = monitor.stats
    spin_until(
        monitor,
        lambda: all(stats[f'{c}/image_raw'].count >= 10 for c in CAMERAS),
        60,
        '10 frames from every camera',
    )
    for camera in CAMERAS:
        images, infos = stats[f'{camera}/image_raw'], stats[f'{camera}/camera_info']
        assert images.shapes == {(120, 160, 3)}, camera
        assert images.errors == 0, f'{camera}: undecodable or constant frames'
        assert images.last.header.frame_id == f'{camera}_optical_frame'
        info = infos.last
        assert (info.width, info.height) == (160, 120)
        assert info.k[2] == pytest.approx(80.0) and info.k[5] == pytest.approx(60.0)
        assert info.k[0] > 0


def test_sim_node_reports_status_and_resets_with_the_next_seed(sim_process, monitor):
    spin_until(monitor, lambda: monitor.stats['sim/status'].count > 0, 30, 'a sim/status message')
    assert json.loads(monitor.stats['sim/status'].last.data)['seed'] == 5
    client = monitor.create_client(Trigger, '/sim/reset')
    assert client.wait_for_service(timeout_sec=30)
    future = client.call_async(Trigger.Request())
    spin_until(monitor, future.done, 30, 'the reset reply')
    assert future.result().success and 'seed 6' in future.result().message

    def reset_seen():
        return json.loads(monitor.stats['sim/status'].last.data)['seed'] == 6

    spin_until(monitor, reset_seen, 10, 'a status with the new seed')
    assert len(monitor.stats['sim/joint_states'].last.name) == 14
