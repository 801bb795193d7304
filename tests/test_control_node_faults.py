"""A latched Dynamixel overload through the controller node: reported in diagnostics, the arm held,
policy refused until `~/reboot` clears it (the documented recovery), then allowed again. And
stopping the node: the arms go to their sleep pose before torque goes off (ALOHA arms fall).

The four arms are kinematic arms behind virtual buses served from this test process (no physics
needed), at the ports the node finds through HALO_ROS_RUN_DIR.
"""

import json
import os

import numpy as np
import pytest
import rclpy
from control_helpers import START
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from ros_helpers import spin_until
from std_msgs.msg import String
from std_srvs.srv import Trigger

from halo_ros.control.config import load_config
from halo_ros.drivers.aloha_calibration import ArmName, load
from halo_ros.drivers.dynamixel.tables import HardwareError
from halo_ros.joints import ARMS
from halo_ros.paths import calibration_file
from halo_ros.sim.virtual_bus import KinematicArm, start_virtual_buses
from halo_ros.supervisor import NodeProcess

pytestmark = pytest.mark.ros


def _controller_on_virtual_buses(tmp_path):
    """Four kinematic arms on virtual buses and a controller node process driving them."""
    environ = {'HALO_ROS_RUN_DIR': str(tmp_path)}
    calibration = load(calibration_file('sim_aloha.yaml'), environ=environ)
    arms = {name: KinematicArm(name, initial_position_rad=START) for name in ARMS}
    buses = start_virtual_buses(arms, calibration)
    controller = NodeProcess(
        'halo_ros.nodes.controller_node',
        {},
        env={**os.environ, **environ},
        log_path=str(tmp_path / 'controller_node.log'),
    ).start()
    return arms, buses, controller


def test_overload_is_reported_held_and_cleared_through_the_reboot_service(tmp_path):
    arms, buses, controller = _controller_on_virtual_buses(tmp_path)
    rclpy.init()
    node = rclpy.create_node('fault_observer')
    seen = {'state': None, 'diagnostics': None}

    def on_diagnostics(msg):
        for status in msg.status:
            if status.name == 'halo_ros: controller':
                seen['diagnostics'] = status

    node.create_subscription(
        String, 'halo/control_state', lambda m: seen.__setitem__('state', json.loads(m.data)), 50
    )
    node.create_subscription(DiagnosticArray, 'diagnostics', on_diagnostics, 10)

    def call(service):
        client = node.create_client(Trigger, f'/controller/{service}')
        assert client.wait_for_service(timeout_sec=30)
        future = client.call_async(Trigger.Request())
        spin_until(node, future.done, 15, f'{service} reply')
        return future.result()

    def values():
        return {kv.key: kv.value for kv in seen['diagnostics'].values}

    try:
        spin_until(node, lambda: seen['state'] is not None, 60, 'controller ticks')
        buses[ArmName.FOLLOWER_LEFT].latch_error(9, HardwareError.OVERLOAD)
        spin_until(node, lambda: seen['state']['phase'] == 'fault', 10, 'the fault hold')
        assert seen['state']['mode'] == 'HOLD'
        spin_until(
            node,
            lambda: (
                seen['diagnostics'] is not None
                and seen['diagnostics'].level == DiagnosticStatus.ERROR
            ),
            5,
            'an ERROR',
        )
        assert 'follower_left ID 9' in seen['diagnostics'].message
        assert json.loads(values()['hardware_errors'])['follower_left'] == {
            '9': repr(HardwareError.OVERLOAD)
        }
        refused = call('engage_policy')
        assert not refused.success and 'reboot' in refused.message
        reply = call('reboot')
        assert reply.success, reply.message
        spin_until(
            node,
            lambda: (
                seen['diagnostics'].level != DiagnosticStatus.ERROR
                and values()['hardware_errors'] == '{}'
            ),
            5,
            'no error reported',
        )
        assert values()['events.reboot'] == '1'
        assert call('engage_policy').success
        assert call('hold').success
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        rc = controller.stop()
        for bus in buses.values():
            bus.stop()
    assert rc == 0, (tmp_path / 'controller_node.log').read_text()[-3000:]


def test_stopping_the_node_puts_the_arms_to_sleep_before_torque_off(tmp_path):
    arms, buses, controller = _controller_on_virtual_buses(tmp_path)
    rclpy.init()
    node = rclpy.create_node('sleep_observer')
    states = []
    node.create_subscription(String, 'halo/control_state', lambda m: states.append(m.data), 50)
    try:
        spin_until(node, lambda: len(states) > 10, 60, 'controller ticks')
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        rc = controller.stop()  # SIGINT, as Ctrl-C or the end of a bring-up
        for bus in buses.values():
            bus.stop()
    log = (tmp_path / 'controller_node.log').read_text()
    assert rc == 0, log[-3000:]
    config = load_config()
    for name, arm in arms.items():
        pose = (
            config.follower_sleep_pose_rad if 'follower' in name else config.leader_sleep_pose_rad
        )
        np.testing.assert_allclose(arm.read().position_rad[:6], pose, atol=0.06, err_msg=name)
        assert not arm._torque.any(), f'{name}: torque still on'
    assert 'stopped asleep' in log
