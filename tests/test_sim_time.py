"""Sim time through the graph: the simulator publishes /clock at a real-time factor below 1 and
the controller, started with use_sim_time, ticks at 50 Hz of simulated time and performs requests
while it does."""

import json
import time

import numpy as np
import pytest
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile
from ros_helpers import spin_until
from rosgraph_msgs.msg import Clock
from std_msgs.msg import String
from std_srvs.srv import Trigger

from halo_ros.nodes.conversions import ns_from_stamp
from halo_ros.supervisor import NodeProcess

pytestmark = [pytest.mark.ros, pytest.mark.slow]

FACTOR = 0.25


class Watcher(Node):
    def __init__(self):
        super().__init__('sim_time_watcher')
        self.clock: list[tuple[int, float]] = []  # (sim ns, wall s)
        self.ticks: list[dict] = []
        self.create_subscription(Clock, '/clock', self._on_clock, QoSProfile(depth=100))
        self.create_subscription(String, 'halo/control_state', self._on_tick, QoSProfile(depth=500))

    def _on_clock(self, msg):
        self.clock.append((ns_from_stamp(msg.clock), time.monotonic()))

    def _on_tick(self, msg):
        self.ticks.append(json.loads(msg.data))


def test_controller_ticks_follow_the_simulated_clock(tmp_path):
    sim = NodeProcess(
        'halo_ros.nodes.sim_node',
        {
            'camera_width': 32,
            'camera_height': 24,
            'camera_rate_hz': 2.0,
            'sim_time': True,
            'real_time_factor': FACTOR,
        },
        log_path=str(tmp_path / 'sim_node.log'),
    ).start()
    controller = NodeProcess(
        'halo_ros.nodes.controller_node',
        {'use_sim_time': True},
        log_path=str(tmp_path / 'controller_node.log'),
    ).start()
    rclpy.init()
    watcher = Watcher()
    try:
        spin_until(watcher, lambda: len(watcher.ticks) > 20, 90, 'control ticks')
        first = watcher.ticks[-1]['stamp_ns']
        window_ns = 2_000_000_000  # two simulated seconds
        spin_until(
            watcher,
            lambda: watcher.ticks[-1]['stamp_ns'] >= first + window_ns,
            60,
            'two simulated seconds of control ticks',
        )
        # A request waits for the loop, which ticks on /clock: the node must keep taking /clock
        # meanwhile (it deadlocked until the request timed out: 'did not act within 5 s').
        hold = watcher.create_client(Trigger, '/controller/hold')
        assert hold.wait_for_service(timeout_sec=30)
        future = hold.call_async(Trigger.Request())
        spin_until(watcher, future.done, 30, 'the ~/hold reply')
        held = future.result()
    finally:
        watcher.destroy_node()
        rclpy.try_shutdown()
        controller_rc, sim_rc = controller.stop(), sim.stop()
    assert controller_rc == 0, (tmp_path / 'controller_node.log').read_text()[-3000:]
    assert sim_rc == 0
    assert held.success, held.message

    inside = [t for t in watcher.ticks if first <= t['stamp_ns'] < first + window_ns]
    # 50 ticks per simulated second, stamped on the simulated clock 20 ms apart.
    assert 95 <= len(inside) <= 101, len(inside)
    steps = np.diff([t['stamp_ns'] for t in inside]) / 1e6
    assert np.median(steps) == pytest.approx(20.0, abs=0.5), steps
    # ... while the simulated clock ran at a quarter of the wall clock.
    clock = np.array([(ns, wall) for ns, wall in watcher.clock if ns >= first])
    sim_s = (clock[-1, 0] - clock[0, 0]) / 1e9
    wall_s = clock[-1, 1] - clock[0, 1]
    assert sim_s / wall_s == pytest.approx(FACTOR, rel=0.25), (sim_s, wall_s)
