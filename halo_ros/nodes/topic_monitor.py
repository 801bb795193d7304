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
