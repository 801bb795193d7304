"""A node that counts what arrives on a set of topics: rates, stamps, decode failures.

Used by the demo to print what the graph is doing and by the ROS tests to check it.
"""

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from halo_ros.nodes.conversions import image_array


@dataclass
class TopicStats:
    count: int = 0
    arrivals: list = field(default_factory=list)  # monotonic seconds
    last: object = None
    shapes: set = field(default_factory=set)
    errors: int = 0

    def rate_hz(self) -> float:
        if len(self.arrivals) < 2:
            return 0.0
        return (len(self.arrivals) - 1) / (self.arrivals[-1] - self.arrivals[0])


class TopicMonitor(Node):
    def __init__(self, topics: dict[str, type], name: str = 'topic_monitor'):
        super().__init__(name)
        self.stats: dict[str, TopicStats] = defaultdict(TopicStats)
        for topic, msg_type in topics.items():
            # Camera streams are best-effort (sensor data QoS); a reliable reader would get nothing.
            sensor = msg_type in (Image, CameraInfo)
            qos = qos_profile_sensor_data if sensor else QoSProfile(depth=50)
            self.create_subscription(msg_type, topic, self._callback(topic), qos)

    def _callback(self, topic: str):
        def on_message(msg):
            stats = self.stats[topic]
            stats.count += 1
            stats.arrivals.append(time.monotonic())
            stats.last = msg
            if isinstance(msg, Image):
                try:
                    frame = image_array(msg)
                    stats.shapes.add(frame.shape)
                    if np.ptp(frame) == 0:  # a constant image is a broken renderer
                        stats.errors += 1
                except ValueError:
                    stats.errors += 1

        return on_message


def watch(
    topics: dict[str, type], seconds: float, *, settle_s: float = 2.0, until=None
) -> dict[str, TopicStats]:
    """Init rclpy, count the topics for `seconds` (after `settle_s` of warm-up), shut down.

    `until(stats)` may end the watch early. For callers outside nodes/ (demo, benchmarks).
    """
    import rclpy

    rclpy.init()
    node = TopicMonitor(topics, 'halo_ros_watch')
    try:
        end = time.monotonic() + settle_s
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
        node.stats.clear()
        end = time.monotonic() + seconds
        while time.monotonic() < end and not (until and until(node.stats)):
            rclpy.spin_once(node, timeout_sec=0.05)
        return dict(node.stats)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
